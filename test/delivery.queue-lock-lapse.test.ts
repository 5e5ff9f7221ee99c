import { Job } from 'bullmq';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobOutcome } from '../src/delivery/queue.js';
import { createBullQueue } from '../src/delivery/queue-bullmq.js';
import { bullWorld } from './support/bull-world.js';
import { capturingLogger } from './support/logs.js';

/**
 * A delivery job's run that outlives its lock because BullMQ could not renew it: while a
 * resharding splits the bridge's hash slot, BullMQ's renewal script runs where its one declared
 * key is and does not find the lock key, gone to the other node; the run goes on (its outcome is
 * written once the slot is whole again). When it ended, BullMQ could not move the job on
 * ("Missing lock for job … moveToFinished"): the job stayed active, holding one of the
 * destination's concurrency slots, until the stalled check took it back and ran it again
 * (test/slow/cluster.reshard.test.ts). Here the lock is taken away during the run, as a lapse
 * leaves it, on real BullMQ and Redis, with the stalled check far off.
 */
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a delivery job whose lock lapsed during its run', () => {
  it('is moved on when the run ends (taken again while still active), not left to the stalled check', async () => {
    const { url, prefix, redis, inspect } = await bullWorld('queue-lock-lapse', cleanups);
    const { logger, lines } = capturingLogger('debug');
    const queue = createBullQueue({
      redisUrl: url,
      prefix,
      destinations: [{ id: 'crm', concurrency: 1 }],
      logger,
      lockDurationMs: 400,
      // The stalled check runs once as the worker starts, then not within the test.
      stalledIntervalMs: 600_000,
    });
    let closed = false;
    cleanups.push(async () => {
      if (!closed) await queue.close();
    });
    const lockKey = `${inspect.toKey('d1.1')}:lock`;
    const runs: string[] = [];
    await queue.enqueue('crm', 'd1.1', { deliveryId: 'd1', cycle: 1 }, 0);
    await queue.start(async (): Promise<JobOutcome> => {
      runs.push('run');
      // The lock goes (as when renewals could not reach it), and BullMQ's renewals fail from
      // now on; the run goes on for longer than half the lock.
      await redis.del(lockKey);
      await sleep(600);
      return { kind: 'done' };
    });
    while (runs.length === 0) await sleep(20);
    // close() waits for the run and BullMQ's move of its job.
    await queue.close();
    closed = true;

    const messages = lines.map((line) => `${line.msg} ${(line.err as { message?: string })?.message ?? ''}`);
    // The renewals did fail meanwhile ...
    expect(messages.some((message) => message.includes('could not renew lock for job d1.1'))).toBe(true);
    // ... and yet the job completed (removeOnComplete: it is gone), run once, no lock missing.
    expect(messages.filter((message) => message.includes('Missing lock'))).toEqual([]);
    expect(await Job.fromId(inspect, 'd1.1')).toBeUndefined();
    expect(runs).toEqual(['run']);
  }, 30_000);
});
