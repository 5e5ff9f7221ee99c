import { Job, QueueEvents } from 'bullmq';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobOutcome } from '../src/delivery/queue.js';
import { createBullQueue } from '../src/delivery/queue-bullmq.js';
import { bullWorld } from './support/bull-world.js';

/**
 * A BullMQ worker that learns of a destination pause sleeps it out, up to maximumRateLimitDelay
 * at a time, and starts no job meanwhile. Another of its slots that finishes a job during that
 * sleep takes the next job with it (BullMQ's fetch-next), as long as Redis no longer holds the
 * pause: when the pause was lost (a failover before the key reached the replica). That job is
 * then active, locked for lockDuration, and not renewed until the sleep ends: with
 * maximumRateLimitDelay as long as lockDuration (BullMQ's defaults, 30 s each) its lock lapsed,
 * the stalled check took it back (`stalled`, one more on its count) and it ran twice.
 *
 * Short lock here (3 s), the relation between the options as in production. Outcomes only: no
 * stalled job, and the paused job runs once more, to the end.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a worker sleeping out a pause', () => {
  it('does not hold a job it took meanwhile past its lock (no stalled job, run once)', async () => {
    const { url, prefix, name, redis, inspect } = await bullWorld('queue-pause-lock', cleanups);
    const events = new QueueEvents(name, { connection: { url }, prefix });
    cleanups.push(() => events.close());
    const stalled: string[] = [];
    events.on('stalled', ({ jobId }) => stalled.push(jobId));
    await events.waitUntilReady();

    const queue = createBullQueue({
      redisUrl: url,
      prefix,
      destinations: [{ id: 'crm', concurrency: 2 }],
      logger,
      lockDurationMs: 3_000,
      stalledIntervalMs: 200,
    });
    cleanups.push(() => queue.close());
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const runs: string[] = [];
    await queue.start(async (_destination, job): Promise<JobOutcome> => {
      runs.push(job.deliveryId);
      if (job.deliveryId === 'long') {
        await held;
        return { kind: 'done' };
      }
      // The first run finds the destination paused (breaker open): 10 s, well past the lock.
      if (runs.filter((id) => id === 'paused').length === 1) return { kind: 'pause', delayMs: 10_000 };
      return { kind: 'done' };
    });

    await queue.enqueue('crm', 'long.1', { deliveryId: 'long', cycle: 1 }, 0);
    while (!runs.includes('long')) await sleep(20);
    await queue.enqueue('crm', 'paused.1', { deliveryId: 'paused', cycle: 1 }, 0);
    // Its run paused the destination and put it back to wait: the worker sleeps out the pause.
    while (
      !(runs.includes('paused') && (await (await Job.fromId(inspect, 'paused.1'))?.getState()) === 'waiting')
    )
      await sleep(20);
    // The pause is lost in Redis (the worker still sleeps it out), and the long job ends: its
    // slot takes the paused job with it.
    await redis.del(inspect.keys.limiter!);
    release();

    while ((await Job.fromId(inspect, 'paused.1')) !== undefined) await sleep(50);
    // One more stalled check after the job completed, so a lapse would have been seen.
    await sleep(500);
    expect(stalled).toEqual([]);
    expect(runs).toEqual(['long', 'paused', 'paused']);
  }, 30_000);
});
