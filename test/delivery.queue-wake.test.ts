import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryQueue, type DeliveryQueue, type JobOutcome } from '../src/delivery/queue.js';
import { createBullQueue } from '../src/delivery/queue-bullmq.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * wake() reaches a job that is running at that moment. The next delivery of a lane runs, reads
 * that the earlier one is still pending and decides to wait behind it; the earlier one is
 * delivered meanwhile and wakes it — while it is still running, so there was no delayed job to
 * promote, and the wake did nothing: the job went on to sleep out its whole wait (the
 * destination's timeoutMs + 1 s, ten minutes here) before the event went out.
 *
 * Timing-free: the handler's first run is held until wake() has returned, then asks to wait ten
 * minutes behind an earlier delivery. The job must run again — the test's timeout (20 s) is far
 * below the wait, so passing says the wait was cut, whatever the machine's load.
 */
const logger = pino({ level: 'silent' });
const TEN_MINUTES = 600_000;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function queueOf(kind: 'memory' | 'bullmq'): Promise<DeliveryQueue> {
  const destinations = [{ id: 'crm', concurrency: 2 }];
  if (kind === 'memory') {
    const queue = createMemoryQueue({ destinations, logger });
    cleanups.push(() => queue.close());
    return queue;
  }
  const url = await getTestRedisUrl();
  const prefix = `${uniquePrefix('queue-wake')}:bull`;
  const queue = createBullQueue({ redisUrl: url, prefix, destinations, logger });
  cleanups.push(async () => {
    await queue.close();
    await cleanupPrefix(url, prefix);
  });
  return queue;
}

function deferred() {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

describe.each(['memory', 'bullmq'] as const)('wake() on the %s queue', (kind) => {
  it('cuts the wait of a job that was running when it was woken, and decides to wait behind an earlier delivery', async () => {
    const queue = await queueOf(kind);
    const running = deferred();
    const release = deferred();
    const second = deferred();
    let runs = 0;
    await queue.start(async (_destination, job): Promise<JobOutcome> => {
      if (job.deliveryId !== 'next') return { kind: 'done' };
      runs += 1;
      if (runs === 1) {
        running.resolve();
        await release.promise;
        return { kind: 'later', delayMs: TEN_MINUTES, behind: true };
      }
      second.resolve();
      return { kind: 'done' };
    });
    await queue.enqueue('crm', 'next.0', { deliveryId: 'next', cycle: 0, orderingKey: 'c1' }, 0);
    await running.promise;
    // The earlier delivery of the lane is delivered now and wakes this one, still running.
    await queue.wake('crm', 'next.0');
    release.resolve();
    await second.promise;
    expect(runs).toBe(2);
  });

  it('leaves a retry wait alone: a job woken while running that then waits for its retry time is not run early', async () => {
    const queue = await queueOf(kind);
    const running = deferred();
    const release = deferred();
    let runs = 0;
    await queue.start(async (): Promise<JobOutcome> => {
      runs += 1;
      running.resolve();
      await release.promise;
      // Attempted and failed: its retry is due in ten minutes (not a wait behind anything).
      return { kind: 'later', delayMs: TEN_MINUTES };
    });
    await queue.enqueue('crm', 'retried.0', { deliveryId: 'retried', cycle: 0, orderingKey: 'c1' }, 0);
    await running.promise;
    await queue.wake('crm', 'retried.0');
    release.resolve();
    for (;;) {
      const counts = await queue.counts('crm');
      if (counts.delayed === 1 && counts.active === 0 && counts.waiting === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(runs).toBe(1);
  });

  it('runs a delayed job at once when woken (it waited behind an earlier delivery)', async () => {
    const queue = await queueOf(kind);
    const ran = deferred();
    await queue.start(async (): Promise<JobOutcome> => {
      ran.resolve();
      return { kind: 'done' };
    });
    await queue.enqueue(
      'crm',
      'behind.0',
      { deliveryId: 'behind', cycle: 0, orderingKey: 'c1' },
      TEN_MINUTES,
    );
    await queue.wake('crm', 'behind.0');
    await ran.promise;
  });

  it('does nothing for a job it does not know, and leaves a waiting job to run once', async () => {
    const queue = await queueOf(kind);
    await queue.wake('crm', 'unknown.0');
    await queue.enqueue('crm', 'waiting.0', { deliveryId: 'waiting', cycle: 0, orderingKey: 'c1' }, 0);
    await queue.wake('crm', 'waiting.0');
    expect(await queue.counts('crm')).toEqual({ waiting: 1, delayed: 0, active: 0 });
    let runs = 0;
    const ran = deferred();
    await queue.start(async (): Promise<JobOutcome> => {
      runs += 1;
      ran.resolve();
      return { kind: 'done' };
    });
    await ran.promise;
    for (;;) {
      const counts = await queue.counts('crm');
      if (counts.delayed === 0 && counts.active === 0 && counts.waiting === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(runs).toBe(1);
  });
});
