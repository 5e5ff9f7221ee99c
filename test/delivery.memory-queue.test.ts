import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryQueue, type DeliveryQueue } from '../src/delivery/queue.js';

const logger = pino({ level: 'silent' });
const queues: DeliveryQueue[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (queues.length > 0) await queues.pop()!.close();
});

describe('the in-memory delivery queue', () => {
  it('keeps a job delayed longer than a Node timer holds (a 24d retry jittered up by 10%) until its time', async () => {
    const queue = createMemoryQueue({ destinations: [{ id: 'crm', concurrency: 1 }], logger });
    queues.push(queue);
    const ran: string[] = [];
    let resolveShort: () => void = () => {};
    const shortRan = new Promise<void>((resolve) => {
      resolveShort = resolve;
    });
    await queue.start(async (_destination, job) => {
      ran.push(job.deliveryId);
      if (job.deliveryId === 'short') resolveShort();
      return { kind: 'done' };
    });
    // 26.4 days: past 2^31-1 ms, which setTimeout turns into 1 ms.
    await queue.enqueue('crm', 'long.1', { deliveryId: 'long', cycle: 1 }, Math.round(24 * 86_400_000 * 1.1));
    await queue.enqueue('crm', 'short.1', { deliveryId: 'short', cycle: 1 }, 50);
    await shortRan;
    expect(ran).toEqual(['short']);
    expect(await queue.counts('crm')).toMatchObject({ delayed: 1 });
  });

  it('runs such a job at its time, not a day and a half in (the first timer step was the whole delay: Node fired it at 1 ms)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const queue = createMemoryQueue({ destinations: [{ id: 'crm', concurrency: 1 }], logger });
    queues.push(queue);
    const ran: string[] = [];
    await queue.start(async (_destination, job) => {
      ran.push(job.deliveryId);
      return { kind: 'done' };
    });
    const day = 86_400_000;
    await queue.enqueue('crm', 'long.1', { deliveryId: 'long', cycle: 1 }, Math.round(24 * day * 1.1));
    // Past what the old code waited (2^31-1 ms short of the delay: about 1.5 days).
    await vi.advanceTimersByTimeAsync(2 * day);
    expect(ran).toEqual([]);
    await vi.advanceTimersByTimeAsync(24.5 * day);
    expect(ran).toEqual(['long']);
  });
});
