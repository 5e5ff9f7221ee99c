import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { isCrmDestination } from '../src/config/schema.js';
import { CircuitBreaker } from '../src/delivery/breaker.js';
import { deliveryMetrics } from '../src/delivery/metrics.js';
import { createProcessor } from '../src/delivery/processor.js';
import type { DeliveryQueue } from '../src/delivery/queue.js';
import { createDeliveryRecords, type DeliveryPlan, jobOf } from '../src/delivery/records.js';
import { secretKey } from '../src/delivery/signing.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Lane links (a merge, an unmerge): from its place on, a lane's deliveries wait for the pending
 * deliveries of the lane it follows that were recorded before the link, and the last of those,
 * leaving, wakes the lane. Deliveries of the lane from before the link are not held. The drain
 * writes a link once, with the records of its chunk: a drain repeated after a crash keeps the
 * first one's place, and a contact with nothing pending needs none. Outcomes only, both stores.
 */
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function receiver(): Promise<{ url: string; posts: string[] }> {
  const posts: string[] = [];
  const server: Server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      posts.push(String(request.headers['webhook-id']));
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, posts };
}

describe.each(['memory', 'redis'] as const)('lane links (%s store)', (kind) => {
  async function storeOf(): Promise<Store> {
    if (kind === 'memory') {
      const store = createMemoryStore();
      cleanups.push(() => store.close());
      return store;
    }
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('lane-links');
    const store = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    return store;
  }

  async function setup() {
    const target = await receiver();
    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        destinations: [
          { id: 'hook', url: target.url, secret: 'whsec_dGVzdC1zZWNyZXQtZm9yLWxhbmUtbGlua3MtMDEyMw==' },
        ],
      },
      defaultRegistry(),
      {},
    );
    const destination = config.destinations[0]!;
    if (isCrmDestination(destination)) throw new Error('not a webhook');
    const records = createDeliveryRecords(await storeOf(), { deliveredRetentionMs: 86_400_000 });
    const plan = (id: string, orderingKey: string): DeliveryPlan => ({
      id,
      destinationId: 'hook',
      eventId: `evt_${id}`,
      eventType: 'message.received',
      orderingKey,
      contactId: orderingKey,
      stagedAt: Date.now(),
      body: JSON.stringify({ id: `evt_${id}` }),
    });
    const woken: string[] = [];
    const queue: DeliveryQueue = {
      enqueue: async () => {},
      enqueueMany: async () => {},
      restore: async () => 0,
      wake: async (_destination, jobId) => {
        woken.push(jobId);
      },
      pause: async () => {},
      start: async () => {},
      counts: async () => ({ waiting: 0, delayed: 0, active: 0 }),
      close: async () => {},
    };
    const run = createProcessor({
      records,
      queue,
      destinations: new Map([
        [
          'hook',
          {
            config: destination,
            key: secretKey(destination.secret),
            secrets: [],
            breaker: new CircuitBreaker(5, 30_000),
          },
        ],
      ]),
      http: createHttpClient(),
      logger,
      metrics: deliveryMetrics(new Metrics()),
      now: () => new Date(),
      random: () => 0.5,
      signal: new AbortController().signal,
    });
    return { records, plan, run, woken, posts: target.posts };
  }

  it('holds the survivor’s deliveries from the merge on behind the absorbed contact’s, not its earlier ones', async () => {
    const { records, plan, run, woken, posts } = await setup();
    // Anna's own earlier message, then Boris's two, then the merge chunk: Anna absorbs Boris.
    const [annaBefore] = await records.ensure([plan('a0', 'c_anna')], new Date());
    const [boris1, boris2] = await records.ensure([plan('b1', 'c_boris'), plan('b2', 'c_boris')], new Date());
    const link = { destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 0 };
    const [merge, annaAfter] = await records.ensure([plan('m', 'c_anna'), plan('a1', 'c_anna')], new Date(), [
      link,
    ]);
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);
    // A drain of the same chunk repeated after a crash: the link keeps its place.
    await records.ensure([plan('m', 'c_anna'), plan('a1', 'c_anna')], new Date(), [link]);
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);

    // Anna's message from before the merge is not held by Boris's.
    expect(await run('hook', jobOf(annaBefore!))).toEqual({ kind: 'done' });
    expect(woken).toEqual(['m.0']);
    expect(await run('hook', jobOf(merge!))).toMatchObject({ kind: 'later', behind: true });
    expect(posts).toEqual(['evt_a0']);

    expect(await run('hook', jobOf(boris1!))).toEqual({ kind: 'done' });
    // Boris's next one is woken; the merge is not (Boris's b2 is still pending before it).
    expect(woken).toEqual(['m.0', 'b2.0']);
    expect(await run('hook', jobOf(boris2!))).toEqual({ kind: 'done' });
    // The last of Boris's: the survivor's lane is woken, and the link has done its work.
    expect(woken).toEqual(['m.0', 'b2.0', 'm.0']);
    expect(await records.follows('hook', 'c_anna')).toEqual([]);
    expect(await records.followers('hook', 'c_boris')).toEqual([]);

    expect(await run('hook', jobOf(merge!))).toEqual({ kind: 'done' });
    expect(await run('hook', jobOf(annaAfter!))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_a0', 'evt_b1', 'evt_b2', 'evt_m', 'evt_a1']);
  });

  it('follows the absorbed contact’s deliveries of the same chunk, before the merge, and none after it', async () => {
    const { records, plan, run, posts } = await setup();
    const [boris1, merge] = await records.ensure(
      [plan('b1', 'c_boris'), plan('m', 'c_anna'), plan('b9', 'c_boris')],
      new Date(),
      [{ destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 1 }],
    );
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);
    expect((await run('hook', jobOf(merge!))).kind).toBe('later');
    expect(await run('hook', jobOf(boris1!))).toEqual({ kind: 'done' });
    // b9 came after the merge (an unmerged Boris again): the merge does not wait for it.
    expect(await run('hook', jobOf(merge!))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_b1', 'evt_m']);
  });

  it('writes no link for a contact with nothing pending, and none to its own lane', async () => {
    const { records, plan } = await setup();
    await records.ensure([plan('m', 'c_anna')], new Date(), [
      { destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 0 },
      { destinationId: 'hook', lane: 'c_anna', follows: 'c_anna', at: 0 },
    ]);
    expect(await records.follows('hook', 'c_anna')).toEqual([]);
    expect(await records.followers('hook', 'c_boris')).toEqual([]);
  });
});
