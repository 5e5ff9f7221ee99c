import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { queueNameOf } from '../../src/delivery/queue-bullmq.js';
import { amoWorld, bitrixWorld, jivoPayloads } from '../support/crm-worlds.js';
import { startTestBridge } from '../support/harness.js';
import { startLateProxy } from '../support/late-proxy.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * Two bridge instances on one Redis, one CRM: the delivery job of an offline message is taken for
 * stalled (BullMQ's own stalled check, after its lock lapsed as when the worker's event loop or
 * Redis connection stalled past lockDuration) while its first run is still waiting for the CRM,
 * and another worker runs it again. The CRM must end with one contact, one deal and one task.
 * Outcomes only.
 */

const JIVO_TOKEN = 'jivo-token-0123456789abcdef';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await sleep(25);
  }
}

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('%s: a CRM delivery job taken for stalled while its first run goes on', (_name, makeWorld) => {
  it('makes the task once', async () => {
    const crm = await makeWorld();
    cleanups.push(() => crm.close());
    const proxy = await startLateProxy(crm.url);
    cleanups.push(() => proxy.close());
    const keyPrefix = uniquePrefix('crm-stalled');
    // Popped last: after both bridges have closed, so nothing writes under the prefix after it.
    cleanups.push(async () => cleanupPrefix(await getTestRedisUrl(), keyPrefix));
    const config = {
      channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: JIVO_TOKEN }],
      destinations: [
        crm.destination({
          ...crm.via(proxy.url),
          timeoutMs: 30_000,
          retrySchedule: ['0s', '200ms', '500ms', '1s', '1s'],
          // Only the offline message: its one delivery is the job that stalls.
          events: ['offline_message.received'],
        }),
      ],
    };
    const first = await startTestBridge({ store: 'redis', keyPrefix, config });
    cleanups.push(() => first.close());
    const second = await startTestBridge({ store: 'redis', keyPrefix, config });
    cleanups.push(() => second.close());
    const redis = new Redis(first.redisUrl!);
    cleanups.push(async () => void redis.disconnect());

    // The CRM makes the contact at once and answers late: the first run is held there.
    proxy.hold(crm.isCreate('contact'), 4000);
    const { offline } = jivoPayloads(
      { name: 'Pavel', email: 'pavel.n@example.com', phone: '+79260001122' },
      7100,
    );
    expect((await first.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, offline)).status).toBe(200);
    await until(() => crm.state().contacts.length === 1, 'the first run made the contact');

    // Its job's lock lapses and BullMQ's stalled check (two passes) puts the job back to wait.
    const bull = `${keyPrefix}:bull`;
    const name = queueNameOf('crm');
    const base = `${bull}:${name}`;
    const [jobId] = await redis.lrange(`${base}:active`, 0, -1);
    expect(jobId).toBeDefined();
    await redis.del(`${base}:${jobId}:lock`);
    const checker = new Worker(name, async () => {}, {
      connection: new Redis(first.redisUrl!, { maxRetriesPerRequest: null }),
      prefix: bull,
      autorun: false,
    });
    cleanups.push(() => checker.close());
    const moveStalled = (checker as unknown as { moveStalledJobsToWait(): Promise<void> })
      .moveStalledJobsToWait;
    for (let pass = 0; pass < 2; pass++) {
      await redis.del(`${base}:stalled-check`);
      await moveStalled.call(checker);
    }
    // Another worker takes it up (a new lock) while the first run still waits for the CRM.
    await until(async () => (await redis.exists(`${base}:${jobId}:lock`)) === 1, 'the job ran again');

    // Both runs over: no job left, nothing pending.
    await until(async () => {
      const [active, waiting, delayed] = await Promise.all([
        redis.llen(`${base}:active`),
        redis.llen(`${base}:wait`),
        redis.zcard(`${base}:delayed`),
      ]);
      const pending = await first.admin('GET', '/api/v1/deliveries?state=pending');
      return active + waiting + delayed === 0 && pending.body.deliveries?.length === 0;
    }, 'the delivery settled');
    const state = crm.state();
    expect(state.contacts).toHaveLength(1);
    expect(state.deals).toHaveLength(1);
    expect(state.tasks).toHaveLength(1);
    const all = await first.admin('GET', '/api/v1/deliveries');
    expect(all.body.deliveries.map((item: { state: string }) => item.state)).toEqual(['delivered']);
  });
});
