import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type { AdapterContext } from '../../src/contracts/adapter.js';
import { digest } from '../../src/digest.js';
import { ConflictError, JobBusyError } from '../../src/errors.js';
import { combineSignals } from '../../src/net/signals.js';
import { renewWhileHeld } from '../../src/store/renewal.js';
import type { ChatvisorClient, Unreadable } from './client.js';
import { desiredAgent, VENDOR } from './mapper.js';
import type { Agent, AgentWrite, ChatvisorSettings } from './schemas.js';
import { keepReport, storeKeys } from './state.js';

/**
 * Agent sync: make Chatvisor's agents ("users") match the company's agent directory
 * (config.agents).
 *
 * Which agents the bridge may touch: every agent in the directory is *managed* — its e-mail is
 * added to a per-channel set in the store before any write for it (so even a create whose answer
 * was lost is known as ours next run). An agent found in Chatvisor that is not in the directory is
 * removed (per onRemovedAgent) only if it is in that set, i.e. the bridge once managed it; agents
 * created by hand in Chatvisor are never touched. An agent that already existed in Chatvisor with
 * a directory e-mail is adopted: updated to match, and managed from then on.
 *
 * Consistency: every agent's write is one independent, idempotent-in-effect call, planned from a
 * fresh listing. A failure midway is listed in the report and the run continues; the next run
 * lists again and finishes the job. A run that finds nothing to change makes no write call.
 * Runs never overlap: the run holds the store lock `chatvisor:<channel>:agent-sync` (on-demand
 * runs and scheduled ones, across instances), renewed while it works — a sync held up by a slow
 * or rate-limiting Chatvisor can outlast the lock's time to live. A run whose lock is lost anyway
 * (the store unreachable for longer than that) stops before its next write: another run may have
 * started beside it.
 */
export interface AgentSyncReport {
  id: string;
  channelId: string;
  dryRun: boolean;
  onRemovedAgent: ChatvisorSettings['onRemovedAgent'];
  startedAt: string;
  finishedAt: string;
  created: string[];
  updated: { email: string; fields: string[] }[];
  removed: { email: string; action: 'deactivated' | 'deleted' }[];
  unchanged: string[];
  /** Managed agents no longer in the directory, left as they are (onRemovedAgent: ignore). */
  ignored: string[];
  failed: { email: string; action: 'create' | 'update' | 'deactivate' | 'delete'; reason: string }[];
  /** Write calls made to Chatvisor. */
  writes: number;
  /** Set when the run could not complete at all (e.g. listing the agents failed). */
  error?: string;
}

/**
 * Where a sync stands, written to the store as it goes (any instance reads it: the console's
 * progress view, `GET …/agent-sync/progress`), whoever started it — the console, the API, the
 * CLI or the schedule. One record per channel: the running run, or the last one.
 */
export interface AgentSyncProgress {
  /** The run's id: its report has the same. */
  id: string;
  channelId: string;
  dryRun: boolean;
  /** `running` until the report is kept; then `finished`, or `failed` (see `error`). */
  state: 'running' | 'finished' | 'failed';
  /** What it does now: listing Chatvisor's agents, writing the planned changes, or done. */
  step: 'listing' | 'writing' | 'done';
  startedAt: string;
  /** When the record was last written: a `running` one that stops changing belongs to a run that died. */
  updatedAt: string;
  finishedAt?: string;
  /** Agents in the directory (config.agents). */
  directory: number;
  /** Agents Chatvisor listed; null until listed. */
  listed: number | null;
  /** Changes planned (creates, updates, removals); null until planned. */
  planned: number | null;
  /** Planned changes handled so far, done or failed. */
  handled: number;
  created: number;
  updated: number;
  removed: number;
  unchanged: number;
  ignored: number;
  failed: number;
  /** The agent whose change is being written now. */
  current?: string;
  /** Why the run stopped (a failed run). */
  error?: string;
}

/** A finished run's progress is kept this long (its report is kept longer, in the reports list). */
const FINISHED_PROGRESS_TTL_MS = 24 * 3_600_000;

type Step =
  | { action: 'create'; email: string; agent: AgentWrite }
  | { action: 'update'; email: string; agent: AgentWrite; fields: string[] }
  | { action: 'deactivate'; email: string; agent: AgentWrite }
  | { action: 'delete'; email: string };

export interface AgentSyncOptions {
  channelId: string;
  context: AdapterContext;
  client: ChatvisorClient;
  settings: ChatvisorSettings;
  logger: Logger;
}

export interface RunOptions {
  dryRun?: boolean;
  signal?: AbortSignal | undefined;
  /** One line per step, for the CLI's stderr. */
  onProgress?: (line: string) => void;
}

/** A run that holds the lock and has recorded its start; `done` settles with its report. */
export interface StartedSync {
  progress: AgentSyncProgress;
  done: Promise<AgentSyncReport>;
}

/** The sync lock's time to live; renewed every third of it while the run works (renewal.ts). */
const LOCK_TTL_MS = 15 * 60_000;

export class AgentSync {
  private readonly runs;
  private readonly changes;

  constructor(private readonly options: AgentSyncOptions) {
    const { metrics } = options.context;
    this.runs = metrics.counter(
      'chatbridge_chatvisor_agent_sync_runs_total',
      'Chatvisor agent sync runs, by channel, outcome (ok, partial, failed) and dry_run',
      ['channel', 'outcome', 'dry_run'] as const,
    );
    this.changes = metrics.counter(
      'chatbridge_chatvisor_agent_sync_agents_total',
      'Agents handled by Chatvisor agent sync runs, by channel and result (created, updated, removed, unchanged, ignored, failed)',
      ['channel', 'result'] as const,
    );
  }

  /** Run a sync to its end (the lock taken first: JobBusyError when another run holds it). */
  async run(options: RunOptions = {}): Promise<AgentSyncReport> {
    return (await this.start(options)).done;
  }

  /**
   * Take the lock, record the run's start in its progress, and answer: the run goes on in
   * `done`. So a caller that must not wait for the whole sync (the console: a long sync would
   * outlast a proxy's read timeout) still learns at once whether it started or another run holds
   * the lock.
   */
  async start(options: RunOptions = {}): Promise<StartedSync> {
    const { context, channelId } = this.options;
    const keys = storeKeys(channelId);
    let lock: Awaited<ReturnType<typeof context.store.lock>>;
    try {
      lock = await context.store.lock([keys.syncLock], { ttlMs: LOCK_TTL_MS, waitMs: 0 });
    } catch (error) {
      if ((error as { code?: string }).code === 'store_busy') {
        throw new JobBusyError(
          'agent_sync_running',
          `an agent sync is already running for channel ${channelId}`,
        );
      }
      throw error;
    }
    const progress = this.newProgress(options.dryRun ?? false);
    // Lost lock -> the run's signal aborts, so no write starts after it (as on shutdown).
    const lost = new AbortController();
    const stopRenewing = renewWhileHeld({
      ttlMs: LOCK_TTL_MS,
      renew: async () => {
        const held = await lock.renew(LOCK_TTL_MS);
        // A running record lives as long as the lock: a run that dies leaves no "running" for good.
        if (held) await this.saveProgress(progress, false);
        return held;
      },
      onLost: () => {
        this.options.logger.warn(
          { channelId },
          'chatvisor agent sync lost its lock (it expired before it was renewed); stopping the run',
        );
        lost.abort(
          new ConflictError(
            'agent_sync_lock_lost',
            `the agent sync of channel ${channelId} lost its lock (the store could not renew it in time) and stopped, so as not to run beside another sync; the next run finishes the job`,
          ),
        );
      },
      onError: (error) =>
        this.options.logger.warn({ channelId, err: error }, 'could not renew the agent sync lock'),
    });
    // Not AbortSignal.any: on Node 20 it leaks into a long-lived caller signal (src/net/signals.ts).
    const combined = options.signal ? combineSignals([options.signal, lost.signal]) : undefined;
    const signal = combined?.signal ?? lost.signal;
    const finish = async () => {
      combined?.dispose();
      stopRenewing();
      await lock.release();
    };
    let done: Promise<AgentSyncReport>;
    try {
      await this.saveProgress(progress, false);
      done = this.runLocked({ ...options, signal }, progress).finally(finish);
    } catch (error) {
      await finish();
      throw error;
    }
    // Whoever holds `done` sees its failure; this only keeps a run nobody awaits yet from being
    // reported as an unhandled rejection.
    done.catch(() => {});
    return { progress: { ...progress }, done };
  }

  /** The running (or last) run's progress; null when none was recorded (or it expired). */
  async progress(): Promise<AgentSyncProgress | null> {
    const raw = await this.options.context.store.get(storeKeys(this.options.channelId).syncProgress);
    if (raw === null) return null;
    try {
      return JSON.parse(raw) as AgentSyncProgress;
    } catch {
      return null;
    }
  }

  private newProgress(dryRun: boolean): AgentSyncProgress {
    const { context, channelId } = this.options;
    const at = context.now().toISOString();
    return {
      id: randomUUID(),
      channelId,
      dryRun,
      state: 'running',
      step: 'listing',
      startedAt: at,
      updatedAt: at,
      directory: new Set(context.config.agents.map((agent) => agent.email.toLowerCase())).size,
      listed: null,
      planned: null,
      handled: 0,
      created: 0,
      updated: 0,
      removed: 0,
      unchanged: 0,
      ignored: 0,
      failed: 0,
    };
  }

  /**
   * Write the progress record (one SET per change written to Chatvisor: small beside the call
   * itself). A record that cannot be written does not stop the sync: progress is for watching.
   */
  private async saveProgress(progress: AgentSyncProgress, touch = true): Promise<void> {
    const { context, channelId, logger } = this.options;
    if (touch) progress.updatedAt = context.now().toISOString();
    try {
      await context.store.set(storeKeys(channelId).syncProgress, JSON.stringify(progress), {
        ttlMs: progress.state === 'running' ? LOCK_TTL_MS : FINISHED_PROGRESS_TTL_MS,
      });
    } catch (error) {
      logger.debug({ err: error, channelId }, 'chatvisor agent sync: progress not recorded');
    }
  }

  /** The report's counts into the progress record. */
  private tally(progress: AgentSyncProgress, report: AgentSyncReport): void {
    progress.handled =
      report.created.length + report.updated.length + report.removed.length + report.failed.length;
    progress.created = report.created.length;
    progress.updated = report.updated.length;
    progress.removed = report.removed.length;
    progress.unchanged = report.unchanged.length;
    progress.ignored = report.ignored.length;
    progress.failed = report.failed.length;
  }

  /** The last reports, newest first. */
  async reports(limit: number): Promise<AgentSyncReport[]> {
    const raw = await this.options.context.store.lrange(
      storeKeys(this.options.channelId).syncReports,
      -limit,
      -1,
    );
    return raw.map((entry) => JSON.parse(entry) as AgentSyncReport).reverse();
  }

  private async runLocked(options: RunOptions, watched: AgentSyncProgress): Promise<AgentSyncReport> {
    const { context, channelId, client, settings, logger } = this.options;
    const dryRun = options.dryRun ?? false;
    const progress = options.onProgress ?? (() => {});
    const keys = storeKeys(channelId);
    const report: AgentSyncReport = {
      id: watched.id,
      channelId,
      dryRun,
      onRemovedAgent: settings.onRemovedAgent,
      startedAt: watched.startedAt,
      finishedAt: '',
      created: [],
      updated: [],
      removed: [],
      unchanged: [],
      ignored: [],
      failed: [],
      writes: 0,
    };

    let failure: unknown;
    try {
      const desired = new Map(
        context.config.agents.map((agent) => [agent.email.toLowerCase(), desiredAgent(agent)]),
      );
      progress(`listing Chatvisor agents (${desired.size} in the directory)`);
      const listed = await client.listAgentsCounted(settings.pageSize, { signal: options.signal });
      const actual = new Map(listed.items.map((agent) => [agent.email, agent]));
      const managed = new Set(await context.store.smembers(keys.managedAgents));
      const steps = this.plan(desired, actual, managed, report);
      Object.assign(watched, { step: 'writing', listed: listed.items.length, planned: steps.length });
      this.tally(watched, report);
      await this.saveProgress(watched);
      progress(
        `plan: ${steps.length} change${steps.length === 1 ? '' : 's'}${dryRun ? ' (dry run: nothing is written)' : ''}`,
      );

      if (!dryRun) {
        await this.journalUnreadable(listed.unreadable);
        // Everything in the directory is ours, recorded before any write for it (see above).
        if (desired.size > 0) await context.store.sadd(keys.managedAgents, ...desired.keys());
        // Forget agents that are gone from both sides: nothing is left to manage. Not when the
        // listing had agents we could not read or stopped before its end: one of them may be
        // ours, and forgetting it would leave it active in Chatvisor for good.
        const stale = [...managed].filter((email) => !desired.has(email) && !actual.has(email));
        if (stale.length > 0 && listed.skipped === 0 && listed.complete) {
          await context.store.srem(keys.managedAgents, ...stale);
        }
      }

      for (const step of steps) {
        options.signal?.throwIfAborted();
        if (dryRun) {
          progress(`would ${step.action} ${step.email}`);
          this.record(report, step);
          continue;
        }
        watched.current = step.email;
        this.tally(watched, report);
        await this.saveProgress(watched);
        try {
          report.writes++;
          if (step.action === 'create') await client.createAgent(step.agent, { signal: options.signal });
          else if (step.action === 'update' || step.action === 'deactivate') {
            await client.updateAgent(step.email, step.agent, { signal: options.signal });
          } else {
            await client.deleteAgent(step.email, { signal: options.signal });
            await context.store.srem(keys.managedAgents, step.email);
          }
          this.record(report, step);
          progress(`${step.action} ${step.email}: done`);
        } catch (error) {
          if (options.signal?.aborted) throw error;
          const reason = (error as Error).message;
          report.failed.push({ email: step.email, action: step.action, reason });
          progress(`${step.action} ${step.email}: FAILED (${reason})`);
          logger.warn(
            { email: step.email, action: step.action, err: error },
            'chatvisor agent sync step failed',
          );
        }
      }
    } catch (error) {
      failure = error;
      report.error = (error as Error).message;
      // No progress line for it: the error is thrown below, and whoever ran the sync says it
      // (the CLI printed it twice: "agent sync failed: …", then "chatbridge: …").
    }

    report.finishedAt = context.now().toISOString();
    await this.keep(report);
    // After the report is kept: a view that sees `finished` finds the report in the list.
    Object.assign(watched, {
      state: failure ? 'failed' : 'finished',
      step: 'done',
      finishedAt: report.finishedAt,
      ...(report.error ? { error: report.error } : {}),
    });
    delete watched.current;
    this.tally(watched, report);
    await this.saveProgress(watched);
    if (!failure || (failure as { code?: string }).code !== 'store_unavailable') this.count(report);
    if (!dryRun) await this.publish(report);
    logger.info(
      {
        dryRun,
        created: report.created.length,
        updated: report.updated.length,
        removed: report.removed.length,
        unchanged: report.unchanged.length,
        failed: report.failed.length,
        writes: report.writes,
      },
      'chatvisor agent sync finished',
    );
    if (failure) throw failure;
    return report;
  }

  private plan(
    desired: Map<string, AgentWrite>,
    actual: Map<string, Agent>,
    managed: Set<string>,
    report: AgentSyncReport,
  ): Step[] {
    const steps: Step[] = [];
    for (const [email, want] of desired) {
      const have = actual.get(email);
      if (!have) {
        steps.push({ action: 'create', email, agent: want });
        continue;
      }
      const fields: string[] = [];
      if (have.displayName !== want.displayName) fields.push('displayName');
      if (want.role !== undefined && have.role !== want.role) fields.push('role');
      if ([...have.teams].sort().join('\n') !== want.teams.join('\n')) fields.push('teams');
      if (!have.active) fields.push('active');
      if (fields.length > 0) steps.push({ action: 'update', email, agent: want, fields });
      else report.unchanged.push(email);
    }
    for (const [email, have] of actual) {
      if (desired.has(email) || !managed.has(email)) continue;
      const removal = this.options.settings.onRemovedAgent;
      if (removal === 'ignore') report.ignored.push(email);
      else if (removal === 'delete') steps.push({ action: 'delete', email });
      else if (!have.active) report.unchanged.push(email);
      else {
        steps.push({
          action: 'deactivate',
          email,
          agent: {
            email,
            displayName: have.displayName ?? email,
            role: have.role ?? undefined,
            teams: have.teams,
            active: false,
          },
        });
      }
    }
    return steps;
  }

  private record(report: AgentSyncReport, step: Step): void {
    if (step.action === 'create') report.created.push(step.email);
    else if (step.action === 'update') report.updated.push({ email: step.email, fields: step.fields });
    else
      report.removed.push({
        email: step.email,
        action: step.action === 'delete' ? 'deleted' : 'deactivated',
      });
  }

  /**
   * Keep listed agents that could not be read in the payload journal (rejected, under this
   * channel; the client hands back the first 20): they are left alone by the run, and the journal
   * shows what Chatvisor sent. The same unreadable agents listed again by the next runs are not
   * journalled again (a sync every few minutes would fill the journal's ring with one entry). A
   * journal that cannot be written does not fail the run.
   */
  private async journalUnreadable(unreadable: readonly Unreadable[]): Promise<void> {
    const { context, channelId, logger } = this.options;
    const key = storeKeys(channelId).syncUnreadable;
    const seen = unreadable.length === 0 ? '' : digest('sha256', JSON.stringify(unreadable), 'base64url');
    if (((await context.store.get(key)) ?? '') === seen) return;
    await context.store.set(key, seen);
    for (const { item, problem } of unreadable) {
      try {
        await context.journal.reject({
          reason:
            cleanDisplayText(
              `chatvisor agent sync: a listed agent could not be read (${problem}); it was left alone`,
            ) ?? 'chatvisor agent sync: a listed agent could not be read',
          rawBody: JSON.stringify(item) ?? String(item),
          contentType: 'application/json',
        });
      } catch (error) {
        logger.warn({ err: error, channelId }, 'chatvisor agent sync: could not journal an unreadable agent');
      }
    }
  }

  private async keep(report: AgentSyncReport): Promise<void> {
    const { context, channelId, settings, logger } = this.options;
    await keepReport(context.store, storeKeys(channelId).syncReports, settings.keepReports, report, (error) =>
      logger.warn({ err: error }, 'could not keep the agent sync report'),
    );
  }

  private count(report: AgentSyncReport): void {
    const channel = this.options.channelId;
    const outcome = report.error ? 'failed' : report.failed.length > 0 ? 'partial' : 'ok';
    this.runs.inc({ channel, outcome, dry_run: String(report.dryRun) });
    if (report.dryRun) return;
    const tally: Record<string, number> = {
      created: report.created.length,
      updated: report.updated.length,
      removed: report.removed.length,
      unchanged: report.unchanged.length,
      ignored: report.ignored.length,
      failed: report.failed.length,
    };
    for (const [result, count] of Object.entries(tally))
      if (count > 0) this.changes.inc({ channel, result }, count);
  }

  /** `agents.synced` (DESIGN §8) for every run that could write; a dry run changes nothing to announce. */
  private async publish(report: AgentSyncReport): Promise<void> {
    const { context, channelId, logger } = this.options;
    try {
      await context.events.publish([
        {
          event: {
            id: `evt_agents_synced_${report.id}`,
            type: 'agents.synced',
            occurredAt: report.finishedAt,
            channel: { id: channelId, vendor: VENDOR },
            contact: null,
            data: { ...report },
          },
          orderingKey: `agents:${channelId}`,
          stagedAt: context.now().getTime(),
        },
      ]);
    } catch (error) {
      logger.warn({ err: error }, 'could not publish agents.synced');
    }
  }
}
