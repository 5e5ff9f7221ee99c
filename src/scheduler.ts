import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';
import type { ScheduledJob } from './spec/adapter.js';
import type { Store } from './store/types.js';

/**
 * Runs channels' scheduled jobs (node-cron) in the worker role. Each run takes a store lock
 * named after the channel and job, so with many instances on one Redis a run happens once; an
 * instance that finds the lock taken skips that tick (counted as skipped_locked).
 */
export interface SchedulerJob {
  channelId: string;
  job: ScheduledJob;
}

export interface Scheduler {
  start(): void;
  /** Run one job now, under the same lock (used by tests and operators). */
  runNow(channelId: string, name: string): Promise<'ok' | 'failed' | 'skipped_locked'>;
  /** Stop scheduling and wait for runs in progress (aborted after `graceMs`). */
  stop(graceMs: number): Promise<void>;
}

const LOCK_TTL_MS = 10 * 60_000;

export function createScheduler(options: {
  jobs: SchedulerJob[];
  store: Store;
  logger: Logger;
  metrics: Metrics;
}): Scheduler {
  const { store, logger, metrics } = options;
  const tasks: ScheduledTask[] = [];
  const running = new Set<Promise<unknown>>();
  const controller = new AbortController();

  async function run(entry: SchedulerJob): Promise<'ok' | 'failed' | 'skipped_locked'> {
    const labels = { channel: entry.channelId, job: entry.job.name };
    let lock: Awaited<ReturnType<Store['lock']>>;
    try {
      lock = await store.lock([`job:${entry.channelId}:${entry.job.name}`], {
        ttlMs: LOCK_TTL_MS,
        waitMs: 0,
      });
    } catch (error) {
      const busy = (error as { code?: string }).code === 'store_busy';
      metrics.jobRuns.inc({ ...labels, outcome: busy ? 'skipped_locked' : 'failed' });
      if (!busy) logger.warn({ ...labels, err: error }, 'scheduled job could not take its lock');
      return busy ? 'skipped_locked' : 'failed';
    }
    const started = Date.now();
    try {
      await entry.job.run(controller.signal);
      metrics.jobRuns.inc({ ...labels, outcome: 'ok' });
      logger.debug({ ...labels, ms: Date.now() - started }, 'scheduled job ran');
      return 'ok';
    } catch (error) {
      metrics.jobRuns.inc({ ...labels, outcome: 'failed' });
      logger.error({ ...labels, err: error }, 'scheduled job failed');
      return 'failed';
    } finally {
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
        const task = cron.schedule(entry.job.schedule, () => void track(run(entry)), {
          name: `${entry.channelId}:${entry.job.name}`,
          noOverlap: true,
        });
        tasks.push(task);
      }
    },
    runNow(channelId, name) {
      const entry = options.jobs.find((job) => job.channelId === channelId && job.job.name === name);
      if (!entry) return Promise.reject(new Error(`no job ${name} on channel ${channelId}`));
      return track(run(entry));
    },
    async stop(graceMs) {
      for (const task of tasks) await task.stop();
      const timer = setTimeout(() => controller.abort(new Error('shutting down')), graceMs);
      await Promise.allSettled([...running]);
      clearTimeout(timer);
      for (const task of tasks) await task.destroy();
    },
  };
}
