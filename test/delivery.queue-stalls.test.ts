import { Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type JobOutcome, STALL_LIMIT } from '../src/delivery/queue.js';
import { createBullQueue, queueNameOf } from '../src/delivery/queue-bullmq.js';
import { bullWorld } from './support/bull-world.js';

/**
 * BullMQ counts a job's stalls (`stc` in its hash) for the job's whole life and never resets the
 * count; past maxStalledCount (10) it fails the job, "job stalled more than allowable limit",
 * without running it. A delivery's job lives for the delivery's whole retry schedule (days): each
 * retry, and each wait behind an earlier delivery of the contact, moves the same job to delayed.
 * So stalls of unrelated incidents (a worker restarted mid-attempt, a lock lost during a Redis
 * failover), each followed by a run that ended normally, added up, and the eleventh failed the
 * job. maxStalledCount is for a job whose runs keep dying: a run that ended starts the count again.
 *
 * Real BullMQ on real Redis: each incident is a worker that takes the job and dies with it (its
 * lock lapses, never renewed), then a worker started afresh (the bridge's queue, BullMQ's own
 * stalled check, maxStalledCount as in production) brings the job back and runs it to the end.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The bridge's queue for destination `crm` (one slot), as production builds it but for `options`. */
const crmQueue = (
  url: string,
  prefix: string,
  options: Pick<Parameters<typeof createBullQueue>[0], 'lockDurationMs' | 'stalledIntervalMs'> = {},
) =>
  createBullQueue({
    redisUrl: url,
    prefix,
    destinations: [{ id: 'crm', concurrency: 1 }],
    logger,
    ...options,
  });

/** A worker takes job d1.1 and dies holding it (no renewal: its lock lapses). */
async function dieHolding(redis: Redis, prefix: string, token: string): Promise<void> {
  const dead = new Worker(queueNameOf('crm'), null, {
    connection: redis,
    prefix,
    autorun: false,
    lockDuration: 100,
  });
  expect((await dead.getNextJob(token))?.id).toBe('d1.1');
  await dead.close(true);
}

describe('stalls of a delivery job in unrelated incidents', () => {
  it('do not add up to a failed job: each run that ends starts the count again', async () => {
    const { url, prefix, redis, inspect } = await bullWorld('queue-stalls', cleanups);
    const producer = crmQueue(url, prefix);
    cleanups.push(() => producer.close());
    await producer.enqueue('crm', 'd1.1', { deliveryId: 'd1', cycle: 1 }, 0);
    const jobKey = inspect.toKey('d1.1');

    /** What each incident came to: the stall count its run found, or BullMQ's failure. */
    const outcomes: Array<{ stalls: string | null } | { failed: string }> = [];
    for (let incident = 1; incident <= 11; incident++) {
      // A worker takes the job and dies holding it (no renewal: its lock lapses).
      await dieHolding(redis, prefix, `dead-${incident}`);

      // A worker started afresh: its stalled check brings the job back, and the run ends. Ten
      // times as a retry (the job moves to delayed, as between a delivery's attempts), the last
      // time delivered.
      const worker = crmQueue(url, prefix, { stalledIntervalMs: 100 });
      let ran: { stalls: string | null } | undefined;
      await worker.start(async (): Promise<JobOutcome> => {
        ran = { stalls: await redis.hget(jobKey, 'stc') };
        return incident < 11 ? { kind: 'later', delayMs: 600_000 } : { kind: 'done' };
      });
      let failed: string | undefined;
      while (ran === undefined && failed === undefined) {
        await sleep(20);
        const job = await Job.fromId(inspect, 'd1.1');
        if (job && (await job.getState()) === 'failed') failed = job.failedReason;
      }
      // The run's move (to delayed, or completed) is done before the worker closes.
      await worker.close();
      outcomes.push(ran ?? { failed: failed! });
      if (incident < 11) await (await Job.fromId(inspect, 'd1.1'))?.promote();
    }

    // Each run found the one stall of its own incident, none of those before it.
    expect(outcomes).toEqual(Array.from({ length: 11 }, () => ({ stalls: '1' })));
    // Delivered: the job completed (and went, removeOnComplete), it did not fail.
    expect(await Job.fromId(inspect, 'd1.1')).toBeUndefined();
  }, 60_000);

  it('still add up across runs that stood back without getting to the delivery (a lease held, a pause)', async () => {
    // A CRM delivery whose attempt kills the process comes back while the dead run's lease has yet
    // to expire: that run stands back (no attempt) and ends. Had it cleared the count, the count
    // would start again after every crash and never reach the limit: a crash loop for good.
    const { url, prefix, redis, inspect } = await bullWorld('queue-stalls', cleanups);
    const producer = crmQueue(url, prefix);
    cleanups.push(() => producer.close());
    await producer.enqueue('crm', 'd1.1', { deliveryId: 'd1', cycle: 1 }, 0);
    const jobKey = inspect.toKey('d1.1');

    /** Per incident, the stall count each of its runs found on the job, and was told (JobRun). */
    const found: number[][] = [];
    const told: Array<Array<number | undefined>> = [];
    for (let incident = 1; incident <= 4; incident++) {
      await dieHolding(redis, prefix, `dead-${incident}`);

      const worker = crmQueue(url, prefix, { stalledIntervalMs: 100 });
      const runs: number[] = [];
      const runsTold: Array<number | undefined> = [];
      found.push(runs);
      told.push(runsTold);
      await worker.start(async (_destination, _job, run): Promise<JobOutcome> => {
        runs.push(Number((await redis.hget(jobKey, 'stc')) ?? 0));
        runsTold.push(run?.stalls);
        // The first incidents' runs stand back: paused (the breaker open on this instance), then,
        // put back to wait, the delivery's lease found held. The last one gets to it: a retry.
        if (incident < 4 && runs.length === 1) return { kind: 'pause', delayMs: 1 };
        return { kind: 'later', delayMs: 600_000, ...(incident < 4 ? { stoodBack: true } : {}) };
      });
      while ((await (await Job.fromId(inspect, 'd1.1'))?.getState()) !== 'delayed') await sleep(20);
      await worker.close();
      if (incident < 4) await (await Job.fromId(inspect, 'd1.1'))?.promote();
    }

    // Each incident's runs found every stall so far; the run that got to its delivery (a retry)
    // cleared the count.
    expect(found).toEqual([[1, 1], [2, 2], [3, 3], [4]]);
    expect(told).toEqual(found);
    expect(await redis.hget(jobKey, 'stc')).toBeNull();
  }, 60_000);

  it('stay at the limit when the run that was to fail the delivery as stalled threw (the store down)', async () => {
    const { url, prefix, redis, inspect } = await bullWorld('queue-stalls', cleanups);
    const queue = crmQueue(url, prefix);
    cleanups.push(() => queue.close());
    await queue.enqueue('crm', 'd1.1', { deliveryId: 'd1', cycle: 1 }, 0);
    const jobKey = inspect.toKey('d1.1');
    // As BullMQ counts them after STALL_LIMIT runs in a row died.
    await redis.hset(jobKey, 'stc', STALL_LIMIT);
    const told: Array<number | undefined> = [];
    await queue.start(async (_destination, _job, run): Promise<JobOutcome> => {
      told.push(run?.stalls);
      throw new Error('the store is unavailable');
    });
    // BullMQ retries the run that threw after its backoff: the job waits, delayed.
    while ((await (await Job.fromId(inspect, 'd1.1'))?.getState()) !== 'delayed') await sleep(20);
    expect(told).toEqual([STALL_LIMIT]);
    // The next run is told the same, and fails the delivery then.
    expect(await redis.hget(jobKey, 'stc')).toBe(String(STALL_LIMIT));
  }, 30_000);

  it('still add up while the runs do not end in time: a run that lost its lock clears nothing', async () => {
    const { url, prefix, name, redis, inspect } = await bullWorld('queue-stalls', cleanups);
    const queue = crmQueue(url, prefix, { lockDurationMs: 300, stalledIntervalMs: 100 });
    cleanups.push(() => queue.close());
    await queue.enqueue('crm', 'd1.1', { deliveryId: 'd1', cycle: 1 }, 0);
    const jobKey = inspect.toKey('d1.1');
    // One incident first: the run below starts with a stall on the count.
    const dead = new Worker(name, null, { connection: redis, prefix, autorun: false, lockDuration: 100 });
    expect((await dead.getNextJob('dead'))?.id).toBe('d1.1');
    await dead.close(true);

    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const runs: Array<string | null> = [];
    await queue.start(async (): Promise<JobOutcome> => {
      runs.push(await redis.hget(jobKey, 'stc'));
      if (runs.length === 1) {
        await held;
        return { kind: 'later', delayMs: 600_000 };
      }
      return { kind: 'done' };
    });
    while (runs.length === 0) await sleep(20);
    // The first run goes on past its lock (as under an event loop blocked for longer than the
    // lock lasts): the stalled check takes the job back.
    await redis.del(`${jobKey}:lock`);
    while ((await redis.hget(jobKey, 'stc')) !== '2') await sleep(20);
    // Only then does that run end: it no longer holds the job, so the count stays.
    release();
    while (runs.length < 2) await sleep(20);
    expect(runs).toEqual(['1', '2']);
  }, 30_000);
});
