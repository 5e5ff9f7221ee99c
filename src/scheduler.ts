import { randomUUID } from 'node:crypto';
import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import type { ScheduledJob } from './contracts/adapter.js';
import { ConflictError, JobBusyError } from './errors.js';
import type { Metrics } from './metrics.js';
import { combineSignals } from './net/signals.js';
import { renewWhileHeld } from './store/renewal.js';
import type { Lock, Store } from './store/types.js';

/**
 * Runs channels' scheduled jobs (node-cron) in the worker role, once per tick across any number
 * of instances sharing one store (DESIGN §12):
 *
 * - **A claim per scheduled time.** node-cron hands every instance the same scheduled time (the
 *   slot, not the moment its timer fired); the first instance to SET NX
 *   `job:<channel>:<job>:tick:<slot ms>` runs that tick. The claim is never released: it expires
 *   long after the tick (TICK_HOLD_MS, renewed while a long run works), so an instance whose timer
 *   fires late, or whose clock is behind, still finds it taken. Releasing it when the run ends
 *   is what let a late instance run the same tick again.
 * - **No overlapping runs.** The run also holds `job:<channel>:<job>` (renewed while it works,
 *   released when it ends), so a tick that comes while another instance is still running the
 *   previous one is skipped instead of running beside it.
 *
 * - **A run that loses its lock stops.** When the run lock cannot be renewed (it expired and may be
 *   another instance's now), the job's signal aborts: going on would run it beside the next one.
 *
 * Instances that skip count `skipped_locked`, and so does a run whose job finds its own work
 * already running elsewhere (JobBusyError, e.g. an operator's on-demand agent sync).
 */
export interface SchedulerJob {
  channelId: string;
  job: ScheduledJob;
}

export type JobOutcome = 'ok' | 'failed' | 'skipped_locked';

export interface Scheduler {
  start(): void;
  /**
   * Run one job now, under the run lock (used by tests and operators); no tick claim. Refused once
   * stop() was called.
   */
  runNow(channelId: string, name: string): Promise<JobOutcome>;
  /** Stop scheduling (at once) and wait for runs in progress (aborted after `graceMs`). */
  stop(graceMs: number): Promise<void>;
}

/** How long a tick stays claimed: far beyond any timer lateness or clock skew between instances. */
const TICK_HOLD_MS = 10 * 60_000;
/** The run lock's time to live; renewed every third of it while the job works. */
const RUN_LOCK_TTL_MS = 30_000;

export function createScheduler(options: {
  jobs: SchedulerJob[];
  store: Store;
  logger: Logger;
  metrics: Metrics;
  /** The run lock's time to live (default 30 s); renewed every third of it while a job works. */
  runLockTtlMs?: number;
}): Scheduler {
  const { store, logger, metrics } = options;
  const tasks: ScheduledTask[] = [];
  const running = new Set<Promise<unknown>>();
  const controller = new AbortController();
  const instance = randomUUID();
  const runLockTtlMs = options.runLockTtlMs ?? RUN_LOCK_TTL_MS;
  /** Set by stop(): a tick that fires after it (node-cron's timer was already due) starts nothing. */
  let stopping = false;

  /**
   * Push the expiry of what a run holds forward while it works (a TTL, so a crash frees them):
   * the run lock through its owner-checked renew, the tick claim only while it still names this
   * instance. After a pause longer than the lock's TTL (a stalled event loop, a frozen VM) the
   * lock may have expired and been taken by another instance: a blind PEXPIRE would then extend
   * (or cut short) that instance's lock. Ours is not renewed again once it is lost.
   */
  function keepAlive(
    lock: Lock,
    tickKey: string | undefined,
    labels: { channel: string; job: string },
    lost: AbortController,
  ): () => void {
    return renewWhileHeld({
      ttlMs: runLockTtlMs,
      async renew() {
        const [held] = await Promise.all([
          lock.renew(runLockTtlMs),
          tickKey === undefined
            ? true
            : store.batch().expect(tickKey, instance).expire(tickKey, TICK_HOLD_MS).exec(),
        ]);
        return held;
      },
      onLost: () => {
        logger.warn(
          labels,
          'scheduled job lost its run lock (it expired before it was renewed); stopping the run so that it does not go on beside another',
        );
        lost.abort(
          new ConflictError(
            'job_lock_lost',
            `scheduled job ${labels.job} of channel ${labels.channel} lost its run lock and stopped; the next run picks up`,
          ),
        );
      },
      onError: (error) => logger.warn({ ...labels, err: error }, 'could not renew a job lock'),
    });
  }

  async function run(entry: SchedulerJob, slot: Date | undefined): Promise<JobOutcome> {
    const labels = { channel: entry.channelId, job: entry.job.name };
    const base = `job:${entry.channelId}:${entry.job.name}`;
    const tickKey = slot === undefined ? undefined : `${base}:tick:${slot.getTime()}`;
    let lock: Lock;
    try {
      if (tickKey !== undefined) {
        const claimed = await store.set(tickKey, instance, { nx: true, ttlMs: TICK_HOLD_MS });
        if (!claimed) {
          metrics.jobRuns.inc({ ...labels, outcome: 'skipped_locked' });
          return 'skipped_locked';
        }
      }
      lock = await store.lock([base], { ttlMs: runLockTtlMs, waitMs: 0 });
    } catch (error) {
      const busy = (error as { code?: string }).code === 'store_busy';
      metrics.jobRuns.inc({ ...labels, outcome: busy ? 'skipped_locked' : 'failed' });
      if (!busy) logger.warn({ ...labels, err: error }, 'scheduled job could not take its lock');
      return busy ? 'skipped_locked' : 'failed';
    }
    const lost = new AbortController();
    const stopRenewing = keepAlive(lock, tickKey, labels, lost);
    const started = Date.now();
    const tick = slot?.toISOString();
    // Not AbortSignal.any: on Node 20 it leaks into the scheduler's own signal, which lives as long
    // as the process, a little at every run (src/net/signals.ts).
    const runSignal = combineSignals([controller.signal, lost.signal]);
    try {
      await entry.job.run(runSignal.signal);
      metrics.jobRuns.inc({ ...labels, outcome: 'ok' });
      logger.debug({ ...labels, tick, ms: Date.now() - started }, 'scheduled job ran');
      return 'ok';
    } catch (error) {
      if (error instanceof JobBusyError) {
        // Its work is running elsewhere: this tick has nothing to do, as when the run lock is held.
        metrics.jobRuns.inc({ ...labels, outcome: 'skipped_locked' });
        logger.info({ ...labels, tick, reason: error.message }, 'scheduled job skipped: already running');
        return 'skipped_locked';
      }
      metrics.jobRuns.inc({ ...labels, outcome: 'failed' });
      if (lost.signal.aborted) {
        logger.warn({ ...labels, tick, err: error }, 'scheduled job stopped: it lost its run lock');
      } else logger.error({ ...labels, tick, err: error }, 'scheduled job failed');
      return 'failed';
    } finally {
      runSignal.dispose();
      stopRenewing();
      // The run lock goes now; the tick claim stays until it expires (never released early).
      await lock.release();
    }
  }

  function track<T>(promise: Promise<T>): Promise<T> {
    running.add(promise);
    void promise.finally(() => running.delete(promise));
    return promise;
  }

  return {
    start() {
      for (const entry of options.jobs) {
        if (!entry.job.schedule) continue;
        // context.date is the scheduled slot, the same on every instance whatever its timer did.
        const task = cron.schedule(
          entry.job.schedule,
          (context) => {
            if (!stopping) void track(run(entry, context.date));
          },
          {
            name: `${entry.channelId}:${entry.job.name}`,
            noOverlap: true,
          },
        );
        tasks.push(task);
      }
    },
    runNow(channelId, name) {
      const entry = options.jobs.find((job) => job.channelId === channelId && job.job.name === name);
      if (!entry) return Promise.reject(new Error(`no job ${name} on channel ${channelId}`));
      if (stopping) return Promise.reject(new Error('the scheduler is stopping: no new runs'));
      return track(run(entry, undefined));
    },
    async stop(graceMs) {
      stopping = true;
      for (const task of tasks) await task.stop();
      const timer = setTimeout(() => controller.abort(new Error('shutting down')), graceMs);
      await Promise.allSettled([...running]);
      clearTimeout(timer);
      for (const task of tasks) await task.destroy();
    },
  };
}
