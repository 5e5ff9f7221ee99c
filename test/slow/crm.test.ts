import { afterEach, describe, expect, it } from 'vitest';
import { amoWorld, bitrixWorld, type CrmWorld, jivoPayloads } from '../support/crm-worlds.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * DESIGN §10 under load and faults, on Redis with two bridge instances sharing one key space:
 * concurrent events of the same people sent to both instances at once, CRM faults (5xx, 429,
 * Bitrix24's 503 QUERY_LIMIT_EXCEEDED leaky bucket), then every delivery replayed. The CRM must
 * end with exactly one contact, one deal, one note and one task per person. Outcomes only.
 */

const JIVO_TOKEN = 'jivo-token-0123456789abcdef';
const PEOPLE = 4;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function twoBridges(world: CrmWorld, crm: Record<string, unknown>): Promise<[TestBridge, TestBridge]> {
  const keyPrefix = uniquePrefix('crm-slow');
  // Popped after both bridges have closed, so nothing writes under the prefix after it.
  cleanups.push(async () => cleanupPrefix(await getTestRedisUrl(), keyPrefix));
  const config = {
    agents: [{ email: 'dmitry@store.example', name: 'Dmitry Volkov' }],
    channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: JIVO_TOKEN }],
    destinations: [
      world.destination({
        retrySchedule: ['0s', '200ms', '500ms', '1s', '1s', '2s', '2s', '2s', '2s', '2s'],
        circuitBreaker: { failureThreshold: 100, cooldown: '1s' },
        crm: { ...(world.destination().crm as object), ...crm },
      }),
    ],
  };
  const first = await startTestBridge({ store: 'redis', keyPrefix, config });
  cleanups.push(() => first.close());
  const second = await startTestBridge({ store: 'redis', keyPrefix, config });
  cleanups.push(() => second.close());
  return [first, second];
}

async function settled(bridge: TestBridge, timeoutMs = 90_000): Promise<any[]> {
  const deadline = Date.now() + timeoutMs;
  // A 503 (the store slow to answer on a loaded machine) is asked again, as any API client
  // would; any other answer than 200 fails with what it was.
  const list = async (query: string): Promise<any[] | undefined> => {
    const answer = await bridge.admin('GET', `/api/v1/deliveries?${query}`);
    if (answer.status === 503) return undefined;
    if (answer.status !== 200)
      throw new Error(`GET /api/v1/deliveries answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    return answer.body.deliveries;
  };
  for (;;) {
    const pending = await list('state=pending&limit=500');
    if (pending?.length === 0) {
      const all = await list('limit=500');
      if (all) return all;
    }
    if (Date.now() > deadline)
      throw new Error(`${pending ? pending.length : 'unknown (503)'} deliveries still pending`);
    await sleep(100);
  }
}

async function sendEveryone([a, b]: [TestBridge, TestBridge]) {
  const sends: Promise<unknown>[] = [];
  for (let index = 0; index < PEOPLE; index++) {
    const { accepted, finished, offline } = jivoPayloads(
      {
        name: `Person ${index}`,
        email: `person${index}@example.org`,
        phone: `+7916555${String(index).padStart(4, '0')}`,
      },
      60_000 + index * 10,
    );
    // The chat to one instance, the finished chat and the offline message to the other, at once.
    sends.push(a.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, accepted));
    sends.push(b.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, offline));
    sends.push(sleep(50).then(() => b.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, finished)));
  }
  for (const response of (await Promise.all(sends)) as { status: number }[])
    expect(response.status).toBe(200);
}

function expectOneOfEach(world: CrmWorld) {
  const state = world.state();
  expect(state.contacts).toHaveLength(PEOPLE);
  for (let index = 0; index < PEOPLE; index++) {
    const contact = state.contacts.find((item) => item.emails.includes(`person${index}@example.org`));
    expect(contact, `person ${index}`).toBeDefined();
    const deals = state.deals.filter((deal) => deal.contacts.includes(contact!.id));
    expect(deals, `deals of person ${index}`).toHaveLength(1);
    expect(state.notes.filter((note) => note.on === `deal:${deals[0]!.id}`)).toHaveLength(1);
    expect(state.tasks.filter((task) => task.on === `deal:${deals[0]!.id}`)).toHaveLength(1);
  }
}

async function replayEverything(bridge: TestBridge, deliveries: any[]) {
  for (const item of deliveries) {
    const answer = await bridge.admin('POST', `/api/v1/deliveries/${item.id}/replay`);
    expect([202, 409]).toContain(answer.status);
  }
}

describe('CRM connectors under concurrency, faults and replays (Redis, two instances)', () => {
  it('Bitrix24: the shared 2/s limit keeps a 2/s leaky bucket from ever answering 503', async () => {
    const world = await bitrixWorld();
    cleanups.push(() => world.close());
    // Burst of 5, draining 2/s: what the published limit means at a smaller scale.
    world.fake.bucket = { size: 5, perSecond: 2 };
    const bridges = await twoBridges(world, { rateLimit: 2 });
    await sendEveryone(bridges);
    const deliveries = await settled(bridges[0]);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    expect(world.fake.limited).toBe(0);
    expectOneOfEach(world);
  });

  it('Bitrix24: without our limit, 503 QUERY_LIMIT_EXCEEDED answers are retried and nothing is duplicated', async () => {
    const world = await bitrixWorld();
    cleanups.push(() => world.close());
    world.fake.bucket = { size: 3, perSecond: 2 };
    const bridges = await twoBridges(world, { rateLimit: 50 });
    await sendEveryone(bridges);
    await settled(bridges[0]);
    expect(world.fake.limited).toBeGreaterThan(0);
    // Some deliveries may have used up their retry schedule against the bucket: the portal calms
    // down, the failed ones are replayed and resume where they stopped.
    world.fake.bucket = null;
    expect((await bridges[1].admin('POST', '/api/v1/deliveries/replay?destination=crm')).status).toBe(202);
    const deliveries = await settled(bridges[0]);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    expectOneOfEach(world);
    await replayEverything(bridges[1], deliveries);
    await settled(bridges[0]);
    expectOneOfEach(world);
  });

  it('amoCRM: 5xx and 429 on creates, then every delivery replayed: still one of each per person', async () => {
    const world = await amoWorld();
    cleanups.push(() => world.close());
    world.failCreate('contact', 2);
    world.failCreate('deal', 3);
    world.failCreate('note', 2);
    world.failCreate('task', 2);
    world.rateLimit(2);
    const bridges = await twoBridges(world, {});
    await sendEveryone(bridges);
    const deliveries = await settled(bridges[0]);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    expect(deliveries.some((item) => item.attempts > 1)).toBe(true);
    expectOneOfEach(world);
    await replayEverything(bridges[1], deliveries);
    const again = await settled(bridges[0]);
    expect(again.every((item) => item.state === 'delivered')).toBe(true);
    expectOneOfEach(world);
  });
});
