import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type { AdapterContext } from '../../src/contracts/adapter.js';
import { digest } from '../../src/digest.js';
import { ConflictError, JobBusyError } from '../../src/errors.js';
import { combineSignals } from '../../src/net/signals.js';
import { LOCK_KEY_PREFIX } from '../../src/store/memory.js';
import { renewWhileHeld } from '../../src/store/renewal.js';
import type { Store } from '../../src/store/types.js';
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
 * Runs never overlap: a run holds a **lease** on its channel (on-demand runs and scheduled ones,
 * across instances): a store key (syncLeaseKey) holding the run's mark, set only where absent and
 * given LEASE_MS to live by the store itself (SET NX PX on Redis), so its expiry is the store's
 * clock, never an instance's: instances whose clocks disagree cannot both hold it. The run renews
 * it (PEXPIRE, only while it still holds the run's mark) every third of LEASE_MS (a heartbeat, on
 * a timer of its own, so a sync held up by a slow or rate-limiting Chatvisor keeps it), with its
 * progress record, and every write of the record is checked against what the run last wrote and
 * against the lease (one atomic step), so a run whose record someone else replaced knows it lost
 * the lease and stops before its next write to Chatvisor. A run whose process died (kill -9, OOM,
 * a crashed instance) renews nothing: once its lease key has expired, readers show its `running`
 * record `interrupted` and a new run may take the record over at once (it used to read `running`,
 * and refuse every other run, for the 15 minutes of a lock's time to live). The run that takes a
 * lapsed lease over keeps the interrupted run's report, made of its last record and the results it
 * wrote with it (storedResultSchema), and counts it, in its takeover write. A run its own instance
 * stops (a graceful shutdown) records its interruption itself, in its last checked write: its
 * record then reads `interrupted` at once, and no later run takes it over (nor counts it again).
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
  /**
   * Set on the report of a run that never finished: where it stopped; `error` says it in a
   * sentence. Kept by the run itself when its instance stopped it (a graceful shutdown, `cause`),
   * its lists then what it had done; or, when its process died (kill -9, OOM, a crash), by the run
   * that took the channel over once the lease had lapsed, its lists then what the run had recorded
   * by its last step (see storedResultSchema): that process kept no report of its own.
   */
  interrupted?: AgentSyncInterruption;
}

export interface AgentSyncInterruption {
  /** The step it was at: listing Chatvisor's agents, or writing the planned changes. */
  step: 'listing' | 'writing';
  listed: number | null;
  planned: number | null;
  /** Planned changes done or failed: their agents are in the report's lists. */
  handled: number;
  /** The agent whose write was under way: it may or may not have been applied. */
  current?: string;
  /** When it last took a step. */
  lastStepAt: string;
  /**
   * `shutdown`: its own instance stopped it (a graceful shutdown) and kept this report. Absent:
   * its process died and the run that took over kept it (`leaseExpiredAt`, `takenOverBy`).
   */
  cause?: 'shutdown';
  /**
   * When its lease lapsed, as the run last wrote it (its last heartbeat plus the lease: the store
   * expires the lease itself, on its own clock): it had stopped by then. Absent on a shutdown.
   */
  leaseExpiredAt?: string;
  /** The run that took the channel over (and kept this report). Absent on a shutdown. */
  takenOverBy?: string;
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
  /**
   * `running` until the report is kept; then `finished`, or `failed` (see `error`), or
   * `interrupted` with `cause: 'shutdown'` when its own instance stopped it (a graceful shutdown).
   * A `running` record is read back as `interrupted` when the run's lease lapsed without it
   * finishing: the process running it stopped (kill -9, OOM, a crash) or lost the store for longer
   * than the lease.
   */
  state: 'running' | 'finished' | 'failed' | 'interrupted';
  /** Set with a stored `interrupted`: its own instance stopped the run (a graceful shutdown). */
  cause?: 'shutdown';
  /** What it does now: listing Chatvisor's agents, writing the planned changes, or done. */
  step: 'listing' | 'writing' | 'done';
  startedAt: string;
  /** When the run last took a step (the heartbeat does not move it). */
  updatedAt: string;
  /**
   * While `running`: until when the run holds its lease, on the clock of the instance running it
   * (for people: the lease itself expires in the store, see syncLeaseKey). Its heartbeat moves it
   * LEASE_MS ahead every third of that. Absent on a run that ended, and on the running record of a
   * version before the lease (see holdsLease).
   */
  leaseExpiresAt?: string;
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

/**
 * The progress record is kept this long after it was last written (its report is kept longer, in
 * the reports list): a finished run's counts, and an interrupted run's last step, for a day.
 */
const PROGRESS_TTL_MS = 24 * 3_600_000;

/**
 * How long a running sync's lease lasts without a heartbeat (renewed every third of it): how
 * long a run whose process died still reads `running` and keeps other runs out. Short beside a
 * sync (minutes), long beside a heartbeat's one store write; a heartbeat that the event loop holds
 * up (GC, a busy instance) has two more chances before the lease lapses.
 */
export const LEASE_MS = 60_000;

/**
 * The lease: a string key holding `lease:<run id>` while the run holds it, with the store's own
 * expiry (LEASE_MS, renewed by the heartbeat). It is the key of the store lock the versions before
 * the lease took (`store.lock` on storeKeys().syncLock), so during a rolling upgrade an older
 * instance and a newer one never sync at once: each finds the key set by the other.
 */
export const syncLeaseKey = (channelId: string) => LOCK_KEY_PREFIX + storeKeys(channelId).syncLock;
const leaseMark = (runId: string) => `lease:${runId}`;

/**
 * What a run did with each agent, as it writes it to storeKeys().syncResults (one hash field per
 * e-mail, `n` its order in the run), in the same checked write as its progress record: all an
 * interrupted run's report can be made of, since its process is gone with the report it was
 * building. Written only while the run holds its lease, dropped by its last write.
 */
const storedResultSchema = z.discriminatedUnion('r', [
  z.object({ n: z.number(), r: z.literal('created') }),
  z.object({ n: z.number(), r: z.literal('updated'), fields: z.array(z.string()) }),
  z.object({ n: z.number(), r: z.literal('removed'), action: z.enum(['deactivated', 'deleted']) }),
  z.object({ n: z.number(), r: z.literal('unchanged') }),
  z.object({ n: z.number(), r: z.literal('ignored') }),
  z.object({
    n: z.number(),
    r: z.literal('failed'),
    action: z.enum(['create', 'update', 'deactivate', 'delete']),
    reason: z.string(),
  }),
]);
type StoredResult = z.infer<typeof storedResultSchema>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type RunResult = DistributiveOmit<StoredResult, 'n'>;

/** Where a run stopped, in words: "after 2 of 5 changes (it was writing a@b.c)". */
export function stoppedWhere(progress: AgentSyncProgress): string {
  const { planned } = progress;
  if (progress.step !== 'writing' || planned === null) return "while listing Chatvisor's agents";
  if (progress.dryRun) return 'while planning';
  return `after ${progress.handled} of ${planned} change${planned === 1 ? '' : 's'}${progress.current ? ` (it was writing ${progress.current})` : ''}`;
}

/**
 * The report of a run whose lease lapsed before it finished, from its last progress record and
 * the results it had written (fields that do not parse are left out, as not recorded).
 */
function interruptedReport(
  progress: AgentSyncProgress,
  stored: Record<string, string>,
  onRemovedAgent: ChatvisorSettings['onRemovedAgent'],
  takenOverBy: string,
): AgentSyncReport {
  const results: Array<StoredResult & { email: string }> = [];
  for (const [email, raw] of Object.entries(stored)) {
    try {
      const parsed = storedResultSchema.safeParse(JSON.parse(raw));
      if (parsed.success) results.push({ ...parsed.data, email });
    } catch {
      // Unreadable: left out.
    }
  }
  results.sort((a, b) => a.n - b.n);
  const leaseExpiredAt = progress.leaseExpiresAt ?? progress.updatedAt;
  const report: AgentSyncReport = {
    id: progress.id,
    channelId: progress.channelId,
    dryRun: progress.dryRun,
    // The run's own setting is not recorded: the one in force now (it labels `ignored` only).
    onRemovedAgent,
    startedAt: progress.startedAt,
    // It stopped at some point before its lease lapsed; that is the latest it can have been.
    finishedAt: leaseExpiredAt,
    created: [],
    updated: [],
    removed: [],
    unchanged: [],
    ignored: [],
    failed: [],
    writes: 0,
    error: `interrupted ${stoppedWhere(progress)}${progress.current && !progress.dryRun ? ', which may or may not have been applied' : ''}: its lease lapsed at ${leaseExpiredAt} without a heartbeat (the process running it stopped: killed, out of memory or crashed); run ${takenOverBy} took over`,
    interrupted: {
      step: progress.step === 'writing' ? 'writing' : 'listing',
      listed: progress.listed,
      planned: progress.planned,
      handled: progress.handled,
      ...(progress.current ? { current: progress.current } : {}),
      lastStepAt: progress.updatedAt,
      leaseExpiredAt,
      takenOverBy,
    },
  };
  for (const result of results) {
    if (result.r === 'created') report.created.push(result.email);
    else if (result.r === 'updated') report.updated.push({ email: result.email, fields: result.fields });
    else if (result.r === 'removed') report.removed.push({ email: result.email, action: result.action });
    else if (result.r === 'unchanged') report.unchanged.push(result.email);
    else if (result.r === 'ignored') report.ignored.push(result.email);
    else report.failed.push({ email: result.email, action: result.action, reason: result.reason });
  }
  // The writes it is known to have made (the one under way, `current`, not counted).
  if (!progress.dryRun)
    report.writes =
      report.created.length + report.updated.length + report.removed.length + report.failed.length;
  return report;
}

/** A stored progress record, or null when absent or unreadable. */
function parseProgress(raw: string | null): AgentSyncProgress | null {
  if (raw === null) return null;
  try {
    const parsed = JSON.parse(raw) as AgentSyncProgress | null;
    return parsed && typeof parsed === 'object' && typeof parsed.id === 'string' ? parsed : null;
  } catch {
    return null;
  }
}

/**
 * Whether the record's run still holds the channel: `running`, and the lease key (read in the
 * same step) still holds its mark — the store expires the key, so no instance's clock decides. A
 * `running` record without `leaseExpiresAt` was written by a version before the lease, which held
 * its store lock (a token) on the same key while it ran: held while the key exists.
 */
function holdsLease(progress: AgentSyncProgress | null, lease: string | null): boolean {
  if (progress?.state !== 'running') return false;
  if (progress.leaseExpiresAt === undefined) return lease !== null;
  return lease === leaseMark(progress.id);
}

/** A report to keep in the run's last checked write (rpush + ltrim of the reports list). */
interface KeptReport {
  key: string;
  text: string;
  limit: number;
}

/**
 * The run's hold on the channel: its lease key and its progress record. Every write is expected
 * against the record text the run wrote last and against the lease key holding the run's mark
 * (Store batch `expect`), one at a time, and renews the lease (PEXPIRE) in the same atomic step: a
 * record replaced by another run (which took over a lapsed lease) is never overwritten, and
 * `write` answers false. A lease that lapsed (heartbeats held up for a whole LEASE_MS) while no
 * other run took the record over is taken again, as where absent. A write whose answer was lost
 * (the store timed out after applying it) is told apart by the record's id: only this run writes
 * its id.
 */
class Lease {
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * Until when the lease last written holds at the latest, on this instance's clock (ms): when
   * the store cannot be reached, the run goes on only while well before it (saveProgress).
   */
  heldUntil: number;
  /** Results noted since the last write that landed (field -> text): sent with the next one. */
  private readonly pending = new Map<string, string>();
  private noted = 0;

  constructor(
    private readonly store: Store,
    private readonly key: string,
    private readonly leaseKey: string,
    private readonly resultsKey: string,
    private readonly runId: string,
    private readonly leaseMs: number,
    private written: string,
    heldUntil: number,
  ) {
    this.heldUntil = heldUntil;
  }

  /** What the run did with an agent: written to the results hash with the next progress write. */
  note(email: string, result: RunResult): void {
    this.pending.set(email, JSON.stringify({ n: this.noted++, ...result }));
  }

  /**
   * Write the record (with `keep`, a run's last write: its report too); false when it is no
   * longer this run's. Rejects when the store does.
   */
  write(progress: AgentSyncProgress, keep?: KeptReport): Promise<boolean> {
    // In order, each from the record as it is when its turn comes: a heartbeat taken before a
    // step's write never lands after it with older counts.
    const next = this.queue.then(() => this.writeNow(progress, keep));
    this.queue = next.catch(() => {});
    return next;
  }

  private async writeNow(progress: AgentSyncProgress, keep: KeptReport | undefined): Promise<boolean> {
    const text = JSON.stringify(progress);
    const mark = leaseMark(this.runId);
    // Null once the run has ended: the record then holds nothing.
    const until =
      progress.state === 'running' && progress.leaseExpiresAt !== undefined
        ? Date.parse(progress.leaseExpiresAt)
        : null;
    if (await this.put(this.written, mark, text, until, keep)) return true;
    const [raw = null, lease = null] = await this.store.mget([this.key, this.leaseKey]);
    if (parseProgress(raw)?.id !== this.runId) return false;
    // Another holder (the lock of an older version, taken once this run's lease lapsed).
    if (lease !== null && lease !== mark) return false;
    return this.put(raw, lease, text, until, keep);
  }

  private async put(
    expected: string | null,
    lease: string | null,
    text: string,
    until: number | null,
    keep: KeptReport | undefined,
  ): Promise<boolean> {
    const batch = this.store
      .batch()
      .expect(this.key, expected)
      .expect(this.leaseKey, lease)
      .set(this.key, text, PROGRESS_TTL_MS);
    // While it runs, the results so far go with the record that counts them; once it has ended
    // its report is kept, and they are dropped.
    const results = until === null ? [] : [...this.pending];
    if (until !== null) {
      // Renewed while it holds the run's mark; taken again when it lapsed and nobody took over.
      if (lease === null) batch.set(this.leaseKey, leaseMark(this.runId), this.leaseMs);
      else batch.expire(this.leaseKey, this.leaseMs);
      for (const [email, result] of results) batch.hset(this.resultsKey, email, result);
      if (results.length > 0) batch.expire(this.resultsKey, PROGRESS_TTL_MS);
    } else {
      batch.del(this.resultsKey);
      // Released with the record that ends the run: no instance finds the one without the other.
      if (lease !== null) batch.del(this.leaseKey);
      if (keep) batch.rpush(keep.key, keep.text).ltrim(keep.key, -keep.limit, -1);
    }
    if (!(await batch.exec())) return false;
    this.written = text;
    if (until !== null) this.heldUntil = until;
    for (const [email, result] of results) if (this.pending.get(email) === result) this.pending.delete(email);
    return true;
  }

  /** Let other runs (and older versions) start again, if the run's last write did not. Never throws. */
  async release(): Promise<void> {
    await this.queue;
    await this.store
      .batch()
      .expect(this.leaseKey, leaseMark(this.runId))
      .del(this.leaseKey)
      .exec()
      .catch(() => {});
  }
}

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
  /** How long the lease lasts without a heartbeat: LEASE_MS (tests shorten it). */
  leaseMs?: number;
}

export interface RunOptions {
  dryRun?: boolean;
  signal?: AbortSignal | undefined;
  /** One line per step, for the CLI's stderr. */
  onProgress?: (line: string) => void;
}

/** A run that holds the lease and has recorded its start; `done` settles with its report. */
export interface StartedSync {
  progress: AgentSyncProgress;
  done: Promise<AgentSyncReport>;
}

export class AgentSync {
  private readonly runs;
  private readonly changes;
  private readonly interruptions;
  private readonly leaseMs: number;

  constructor(private readonly options: AgentSyncOptions) {
    const { metrics } = options.context;
    this.leaseMs = options.leaseMs ?? LEASE_MS;
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
    // Counted once per interrupted run, in one checked write either way: by the run itself when
    // its instance stops it (a graceful shutdown), or, when its process died (and counts nothing),
    // by the run that takes the channel over, whichever instance that is. A dead run nothing
    // follows within the progress record's day is not counted.
    this.interruptions = metrics.counter(
      'chatbridge_chatvisor_agent_sync_interrupted_total',
      'Chatvisor agent sync runs that never finished, by channel and dry_run: counted by their own instance when it was asked to stop them (its shutdown, or Ctrl-C or SIGTERM to chatbridge sync agents), or, when their process died and their lease lapsed, by the run that takes the channel over',
      ['channel', 'dry_run'] as const,
    );
  }

  /** Run a sync to its end (the lease taken first: JobBusyError when another run holds it). */
  async run(options: RunOptions = {}): Promise<AgentSyncReport> {
    return (await this.start(options)).done;
  }

  /**
   * Take the lease, record the run's start in its progress, and answer: the run goes on in
   * `done`. So a caller that must not wait for the whole sync (the console: a long sync would
   * outlast a proxy's read timeout) still learns at once whether it started or another run holds
   * the lease.
   */
  async start(options: RunOptions = {}): Promise<StartedSync> {
    const { channelId, logger } = this.options;
    const progress = this.newProgress(options.dryRun ?? false);
    const { lease, interrupted } = await this.takeLease(progress);
    if (interrupted) {
      options.onProgress?.(
        `the last ${interrupted.dryRun ? 'dry run' : 'agent sync'} (${interrupted.id}) was interrupted ${stoppedWhere(interrupted)}: its lease lapsed without a heartbeat; this run takes over, and the interrupted run's report is kept (GET /api/v1/channels/${channelId}/agent-sync)`,
      );
    }
    // Lost lease -> the run's signal aborts, so no write starts after it (as on shutdown).
    const lost = new AbortController();
    const onLost = () => {
      if (lost.signal.aborted) return;
      logger.warn(
        { channelId },
        'chatvisor agent sync lost its lease (its heartbeat could not renew it in time, and another run may have taken over); stopping the run',
      );
      lost.abort(
        new ConflictError(
          'agent_sync_lock_lost',
          `the agent sync of channel ${channelId} lost its lease (the store could not renew it in time) and stopped, so as not to run beside another sync; the next run finishes the job`,
        ),
      );
    };
    const stopHeartbeat = renewWhileHeld({
      ttlMs: this.leaseMs,
      renew: () => this.saveProgress(lease, progress, { touch: false, rejectOnError: true }),
      onLost,
      onError: (error) =>
        logger.warn({ channelId, err: error }, 'could not renew the agent sync lease (heartbeat)'),
    });
    // Not AbortSignal.any: on Node 20 it leaks into a long-lived caller signal (src/net/signals.ts).
    const combined = options.signal ? combineSignals([options.signal, lost.signal]) : undefined;
    const signal = combined?.signal ?? lost.signal;
    const stop = { caller: options.signal, lost: lost.signal };
    const done = this.runLocked({ ...options, signal }, stop, progress, lease, onLost).finally(async () => {
      combined?.dispose();
      stopHeartbeat();
      await lease.release();
    });
    // Whoever holds `done` sees its failure; this only keeps a run nobody awaits yet from being
    // reported as an unhandled rejection.
    done.catch(() => {});
    return { progress: { ...progress }, done };
  }

  /**
   * Take the lease and write the run's first record, unless another run holds the lease
   * (JobBusyError): the lease key is expected absent (SET NX) and the record unchanged since it
   * was read, in the same atomic write, so two runs starting at once cannot both take it. A run it
   * takes over (`running`, its lease gone) gets its report kept and is counted, in that same
   * write: exactly once.
   */
  private async takeLease(
    progress: AgentSyncProgress,
  ): Promise<{ lease: Lease; interrupted: AgentSyncProgress | null }> {
    const { context, channelId, settings } = this.options;
    const keys = storeKeys(channelId);
    const key = keys.syncProgress;
    const leaseKey = syncLeaseKey(channelId);
    const busy = () =>
      new JobBusyError('agent_sync_running', `an agent sync is already running for channel ${channelId}`);
    // A few tries: the record changes under a start while a run writes it (a step, a heartbeat),
    // and a run whose lease lapsed meanwhile is taken over on the next try.
    for (let attempt = 0; attempt < 3; attempt++) {
      const [raw = null, lease = null] = await context.store.mget([key, leaseKey]);
      const current = parseProgress(raw);
      // Held: by the record's run, by a run that started since, or by an older version's lock.
      if (lease !== null) throw busy();
      const now = context.now().getTime();
      progress.leaseExpiresAt = new Date(now + this.leaseMs).toISOString();
      const text = JSON.stringify(progress);
      // Still `running` without its lease: the lease lapsed, its process is gone.
      const interrupted = current?.state === 'running' ? current : null;
      const batch = context.store
        .batch()
        .expect(key, raw)
        .expect(leaseKey, null)
        .set(key, text, PROGRESS_TTL_MS)
        .set(leaseKey, leaseMark(progress.id), this.leaseMs)
        .del(keys.syncResults);
      if (interrupted) {
        // Its results are written only with its record (checked above): read now, they are the
        // ones that record counts. At most one field per agent of its plan.
        const report = interruptedReport(
          interrupted,
          await context.store.hgetall(keys.syncResults),
          settings.onRemovedAgent,
          progress.id,
        );
        batch
          .rpush(keys.syncReports, JSON.stringify(report))
          .ltrim(keys.syncReports, -settings.keepReports, -1);
      }
      if (await batch.exec()) {
        if (interrupted) {
          this.interruptions.inc({ channel: channelId, dry_run: String(interrupted.dryRun) });
          this.options.logger.warn(
            { channelId, interrupted: interrupted.id, leaseExpiresAt: interrupted.leaseExpiresAt },
            'chatvisor agent sync: the last run was interrupted (its lease lapsed without a heartbeat); its report is kept, and this run takes over',
          );
        }
        const lease = new Lease(
          context.store,
          key,
          leaseKey,
          keys.syncResults,
          progress.id,
          this.leaseMs,
          text,
          now + this.leaseMs,
        );
        return { lease, interrupted };
      }
    }
    throw busy();
  }

  /** The running (or last) run's progress; null when none was recorded (or it expired). */
  async progress(): Promise<AgentSyncProgress | null> {
    const { context, channelId } = this.options;
    const [raw = null, lease = null] = await context.store.mget([
      storeKeys(channelId).syncProgress,
      syncLeaseKey(channelId),
    ]);
    const progress = parseProgress(raw);
    // A running record whose lease lapsed: nobody renews it, its process is gone.
    if (progress?.state === 'running' && !holdsLease(progress, lease))
      return { ...progress, state: 'interrupted' };
    return progress;
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
   * Write the progress record (one checked SET per change written to Chatvisor: small beside the
   * call itself), renewing the lease while the run goes on. False when another run took the
   * record over (this run lost its lease). A store that cannot be reached does not stop the sync
   * while a third of the lease last written is left (no other run can start before it lapses:
   * progress is for watching); with less, the run cannot know it still holds it: false. That
   * margin is measured on this instance's clock alone, from before the write it renewed with.
   */
  private async saveProgress(
    lease: Lease,
    progress: AgentSyncProgress,
    options: { touch?: boolean; rejectOnError?: boolean; keep?: KeptReport } = {},
  ): Promise<boolean> {
    const { context, channelId, logger } = this.options;
    const now = context.now().getTime();
    if (options.touch ?? true) progress.updatedAt = new Date(now).toISOString();
    if (progress.state === 'running') progress.leaseExpiresAt = new Date(now + this.leaseMs).toISOString();
    else delete progress.leaseExpiresAt;
    try {
      return await lease.write(progress, options.keep);
    } catch (error) {
      if (options.rejectOnError) throw error;
      logger.debug({ err: error, channelId }, 'chatvisor agent sync: progress not recorded');
      return context.now().getTime() < lease.heldUntil - this.leaseMs / 3;
    }
  }

  /**
   * The last write of a run its instance stopped (a graceful shutdown): its report, marked
   * interrupted, kept in the checked write that stores its record as `interrupted`, and counted
   * only when that write lands. When it does not — another run took the record over (and counted
   * it), or the store cannot be reached — the run is left as a process that died: its `running`
   * record reads interrupted once the lease lapses, and the run that takes over keeps and counts
   * it. Either way once.
   */
  private async recordShutdown(
    report: AgentSyncReport,
    watched: AgentSyncProgress,
    lease: Lease,
    writing: string | undefined,
  ): Promise<void> {
    const { channelId, settings, logger } = this.options;
    this.tally(watched, report);
    if (writing === undefined) delete watched.current;
    else watched.current = writing;
    const where = stoppedWhere(watched);
    report.interrupted = {
      step: watched.step === 'writing' ? 'writing' : 'listing',
      listed: watched.listed,
      planned: watched.planned,
      handled: watched.handled,
      ...(watched.current ? { current: watched.current } : {}),
      lastStepAt: watched.updatedAt,
      cause: 'shutdown',
    };
    // Plain words: whoever reads this (the API, a CLI user who pressed Ctrl-C) need not know what
    // a "graceful shutdown" is, nor that `chatbridge sync agents` runs an instance of its own.
    report.error = `interrupted ${where}${watched.current ? ', which may or may not have been applied' : ''}: it was asked to stop (the bridge running it shut down, or the CLI command sync agents was stopped by Ctrl-C or SIGTERM); the next run lists Chatvisor afresh and finishes the job`;
    Object.assign(watched, {
      state: 'interrupted',
      cause: 'shutdown',
      finishedAt: report.finishedAt,
      error: report.error,
    });
    let recorded = false;
    try {
      recorded = await this.saveProgress(lease, watched, {
        rejectOnError: true,
        keep: {
          key: storeKeys(channelId).syncReports,
          text: JSON.stringify(report),
          limit: settings.keepReports,
        },
      });
    } catch (error) {
      logger.warn(
        { err: error, channelId },
        'chatvisor agent sync: could not record its interruption (the store did not answer); the next run takes it over once its lease lapses',
      );
    }
    if (!recorded) return;
    this.interruptions.inc({ channel: channelId, dry_run: String(report.dryRun) });
    this.countChanges(report);
    if (!report.dryRun) await this.publish(report);
    logger.warn(
      { channelId, run: report.id, dryRun: report.dryRun },
      `chatvisor agent sync stopped ${where} (its instance is shutting down): its report is kept as interrupted`,
    );
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

  private async runLocked(
    options: RunOptions,
    stop: { caller: AbortSignal | undefined; lost: AbortSignal },
    watched: AgentSyncProgress,
    lease: Lease,
    onLost: () => void,
  ): Promise<AgentSyncReport> {
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
    // The agent whose write to Chatvisor is under way (set before the call, cleared after it).
    let writing: string | undefined;
    try {
      const desired = new Map(
        context.config.agents.map((agent) => [agent.email.toLowerCase(), desiredAgent(agent)]),
      );
      progress(`listing Chatvisor agents (${desired.size} in the directory)`);
      const listed = await client.listAgentsCounted(settings.pageSize, { signal: options.signal });
      const actual = new Map(listed.items.map((agent) => [agent.email, agent]));
      const managed = new Set(await context.store.smembers(keys.managedAgents));
      const steps = this.plan(desired, actual, managed, report);
      for (const email of report.unchanged) lease.note(email, { r: 'unchanged' });
      for (const email of report.ignored) lease.note(email, { r: 'ignored' });
      Object.assign(watched, { step: 'writing', listed: listed.items.length, planned: steps.length });
      this.tally(watched, report);
      if (!(await this.saveProgress(lease, watched))) onLost();
      options.signal?.throwIfAborted();
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
          this.record(report, lease, step);
          continue;
        }
        watched.current = step.email;
        this.tally(watched, report);
        // Checked before each write: a run whose record another run took over writes no more.
        if (!(await this.saveProgress(lease, watched))) onLost();
        options.signal?.throwIfAborted();
        try {
          report.writes++;
          writing = step.email;
          if (step.action === 'create') await client.createAgent(step.agent, { signal: options.signal });
          else if (step.action === 'update' || step.action === 'deactivate') {
            await client.updateAgent(step.email, step.agent, { signal: options.signal });
          } else {
            await client.deleteAgent(step.email, { signal: options.signal });
            await context.store.srem(keys.managedAgents, step.email);
          }
          writing = undefined;
          this.record(report, lease, step);
          progress(`${step.action} ${step.email}: done`);
        } catch (error) {
          if (options.signal?.aborted) throw error;
          writing = undefined;
          const reason = (error as Error).message;
          report.failed.push({ email: step.email, action: step.action, reason });
          lease.note(step.email, { r: 'failed', action: step.action, reason });
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
    // Stopped by whoever ran it (its instance shutting down), not by a lost lease (its own, or a
    // scheduled run's lock: a ConflictError): the run says where it stopped itself, now, instead
    // of leaving it to a takeover a lease later.
    if (
      failure !== undefined &&
      stop.caller?.aborted &&
      !(stop.caller.reason instanceof ConflictError) &&
      !stop.lost.aborted
    ) {
      await this.recordShutdown(report, watched, lease, writing);
      throw failure;
    }
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
    // Not over the record of a run that took over from this one (false then: nothing written).
    await this.saveProgress(lease, watched);
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

  /** Into the report, and noted for the results hash (the next progress write sends it). */
  private record(report: AgentSyncReport, lease: Lease, step: Step): void {
    if (step.action === 'create') {
      report.created.push(step.email);
      lease.note(step.email, { r: 'created' });
    } else if (step.action === 'update') {
      report.updated.push({ email: step.email, fields: step.fields });
      lease.note(step.email, { r: 'updated', fields: step.fields });
    } else {
      const action = step.action === 'delete' ? 'deleted' : 'deactivated';
      report.removed.push({ email: step.email, action });
      lease.note(step.email, { r: 'removed', action });
    }
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
    this.countChanges(report);
  }

  /** The agents a run handled, by result (a dry run changes none). */
  private countChanges(report: AgentSyncReport): void {
    const channel = this.options.channelId;
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
