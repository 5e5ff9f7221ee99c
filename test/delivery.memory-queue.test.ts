import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryQueue, type DeliveryQueue } from '../src/delivery/queue.js';

const logger = pino({ level: 'silent' });
const queues: DeliveryQueue[] = [];
afterEach(async () => {
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
});
