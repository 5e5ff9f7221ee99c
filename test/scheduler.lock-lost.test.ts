import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../src/metrics.js';
import { createScheduler } from '../src/scheduler.js';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A scheduled run whose run lock is lost while it works (it expired before a renewal got through,
 * and another instance may hold it now) stops: its signal aborts. Going on would run the job
 * beside the run that took the lock.
 */
const silent = pino({ level: 'silent' });

describe('a scheduled run that loses its run lock', () => {
  let url: string;
  let store: RedisStore;
  const prefix = uniquePrefix('sched-lost');

  beforeAll(async () => {
    url = await getTestRedisUrl();
    store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
  });
  afterAll(async () => {
    await store.close();
    await cleanupPrefix(url, prefix);
  });

  it('is aborted, and counted as failed', async () => {
    let working: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (working = resolve));
    let seen: AbortSignal | undefined;
    const metrics = new Metrics();
    const scheduler = createScheduler({
      jobs: [
        {
          channelId: 'site',
          job: {
            name: 'poll',
            schedule: '0 0 1 1 *',
            async run(signal) {
              seen = signal;
              working();
              // Works until stopped (or gives up long after a renewal would have noticed).
              await new Promise<void>((resolve) => {
                const fallback = setTimeout(resolve, 20_000);
                signal.addEventListener('abort', () => {
                  clearTimeout(fallback);
                  resolve();
                });
              });
              signal.throwIfAborted();
            },
          },
        },
      ],
      store,
      logger: silent,
      metrics,
      runLockTtlMs: 600,
    });
    const outcome = scheduler.runNow('site', 'poll');
    await started;
    // Another instance took the lock after ours lapsed.
    await store.set('lock:job:site:poll', 'another-instance', { ttlMs: 60_000 });

    expect(await outcome).toBe('failed');
    expect(seen?.aborted).toBe(true);
    expect((seen!.reason as { code?: string }).code).toBe('job_lock_lost');
    // Ours did not release the other instance's lock.
    expect(await store.get('lock:job:site:poll')).toBe('another-instance');
    expect(await metrics.registry.metrics()).toMatch(
      /chatbridge_job_runs_total\{channel="site",job="poll",outcome="failed"\} 1/,
    );
    await scheduler.stop(1000);
  }, 30_000);
});
