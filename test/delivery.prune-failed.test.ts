import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { createDelivery } from '../src/delivery/index.js';
import { createDeliveryRecords, type DeliveryRecords, deliveryKeys } from '../src/delivery/records.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { capturingLogger } from './support/logs.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Failed deliveries used to be kept for good, each with its full body: a destination that
 * refuses everything (a misconfigured receiver) grew the store without bound. With
 * `destinations[].failedRetention` the worker's prune pass deletes failed records older than
 * that, in bounded slices, and leaves alone one that a replay made pending again.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function storeOf(kind: 'memory' | 'redis'): Promise<Store> {
  if (kind === 'memory') return createMemoryStore();
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('delivery-prune-failed');
  const store = await createRedisStore({ url, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(url, keyPrefix);
  });
  return store;
}

const DAY = 86_400_000;
const error = (at: Date) => ({ status: 400, message: 'refused', at: at.toISOString() });

/** `count` deliveries to `destinationId`, failed at `failedAt` (ids `<prefix>0`, `<prefix>1`, ...). */
async function failed(
  records: DeliveryRecords,
  destinationId: string,
  prefix: string,
  count: number,
  failedAt: Date,
): Promise<string[]> {
  const plans = Array.from({ length: count }, (_, i) => ({
    id: `${prefix}${i}`,
    destinationId,
    eventId: `evt_${prefix}${i}`,
    eventType: 'message.received',
    orderingKey: `contact-${prefix}${i}`,
    contactId: null,
    stagedAt: failedAt.getTime() - 1000,
    body: JSON.stringify({ n: i, padding: 'x'.repeat(200) }),
  }));
  const pending = await records.ensure(plans, failedAt);
  for (let start = 0; start < pending.length; start += 200)
    await Promise.all(
      pending
        .slice(start, start + 200)
        .map((record) => records.markFailed(record, error(failedAt), failedAt, true)),
    );
  return plans.map((plan) => plan.id);
}

describe.each(['memory', 'redis'] as const)(
  'deleting failed deliveries past their retention (%s store)',
  (kind) => {
    it('deletes the old failed records of destinations with a retention, in one run, and keeps the rest', async () => {
      const store = await storeOf(kind);
      const records = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
      const now = new Date();
      const longAgo = new Date(now.getTime() - 31 * DAY);
      // More than two slices of 1000: the run goes on slice after slice, as the delivered prune.
      const old = await failed(records, 'refuses', 'old', 2_300, longAgo);
      const recent = await failed(records, 'refuses', 'new', 3, new Date(now.getTime() - DAY));
      const elsewhere = await failed(records, 'keeps', 'keep', 3, longAgo);
      // Failed long ago and replayed: pending again, it is not the prune's to delete.
      const [replayed] = await failed(records, 'refuses', 'replayed', 1, longAgo);
      await records.replay(replayed!, now);

      const dropped = await records.pruneFailed(now, new Map([['refuses', 30 * DAY]]));

      expect(Object.fromEntries(dropped)).toEqual({ refuses: old.length });
      expect(await records.count('failed', 'refuses')).toBe(recent.length);
      expect(await records.count('failed', 'keeps')).toBe(elsewhere.length);
      expect(await records.count('failed')).toBe(recent.length + elsewhere.length);
      const sample = [old[0]!, old[1_500]!, old.at(-1)!];
      expect(await store.mget(sample.map((id) => deliveryKeys.record(id)))).toEqual([null, null, null]);
      for (const id of [...recent, ...elsewhere]) expect((await records.get(id))?.state).toBe('failed');
      expect((await records.get(replayed!))?.state).toBe('pending');
      expect(await records.count('pending', 'refuses')).toBe(1);

      // Nothing left past the retention: a second run deletes nothing.
      expect((await records.pruneFailed(now, new Map([['refuses', 30 * DAY]]))).size).toBe(0);
    });

    it('without a retention (0) nothing is deleted, as before', async () => {
      const store = await storeOf(kind);
      const records = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
      const now = new Date();
      await failed(records, 'refuses', 'old', 5, new Date(now.getTime() - 365 * DAY));
      expect((await records.pruneFailed(now, new Map([['refuses', 0]]))).size).toBe(0);
      expect((await records.pruneFailed(now, new Map())).size).toBe(0);
      expect(await records.count('failed', 'refuses')).toBe(5);
    });

    it('leaves a record replayed between the read and the delete pending and whole, and deletes the others', async () => {
      const store = await storeOf(kind);
      const seeding = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
      const now = new Date();
      const ids = await failed(seeding, 'refuses', 'race', 4, new Date(now.getTime() - 10 * DAY));
      const target = ids[2]!;
      // The replay lands right after the prune has read the records (an operator's click).
      let struck = false;
      const racing: Store = Object.create(store, {
        mget: {
          value: async (keys: string[]) => {
            const raws = await store.mget(keys);
            if (!struck && keys.includes(deliveryKeys.record(target))) {
              struck = true;
              await seeding.replay(target, now);
            }
            return raws;
          },
        },
      });
      const records = createDeliveryRecords(racing, { deliveredRetentionMs: DAY });

      const dropped = await records.pruneFailed(now, new Map([['refuses', DAY]]));

      expect(struck).toBe(true);
      expect(dropped.get('refuses')).toBe(3);
      const kept = await seeding.get(target);
      expect(kept?.state).toBe('pending');
      expect(kept?.body).toContain('"n":2');
      expect(await seeding.count('pending', 'refuses')).toBe(1);
      expect(await seeding.count('failed', 'refuses')).toBe(0);
      expect(await seeding.laneHead('refuses', kept!.orderingKey)).toBe(target);
    });

    it('a replay of a record deleted meanwhile is a 404 (null), not a conflict', async () => {
      const store = await storeOf(kind);
      const records = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
      const now = new Date();
      const [id] = await failed(records, 'refuses', 'gone', 1, new Date(now.getTime() - 10 * DAY));
      // The prune deletes it after the replay read it, before the replay's write.
      let struck = false;
      const racing: Store = Object.create(store, {
        incr: {
          value: async (key: string) => {
            if (!struck) {
              struck = true;
              await records.pruneFailed(now, new Map([['refuses', DAY]]));
            }
            return store.incr(key);
          },
        },
      });
      const replaying = createDeliveryRecords(racing, { deliveredRetentionMs: DAY });
      expect(await replaying.replay(id!, now)).toBeNull();
      expect(struck).toBe(true);
    });
  },
);

describe('replaying every failed delivery of a destination while the prune deletes one', () => {
  it('replays the others, where the whole replay stopped at the deleted one (404)', async () => {
    const store = createMemoryStore();
    const secret = `whsec_${Buffer.from('prune-failed-secret-0123456789ab').toString('base64')}`;
    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
        destinations: [{ id: 'refuses', url: 'http://127.0.0.1:9/hook', secret, failedRetention: '7d' }],
      },
      defaultRegistry(),
      {},
    );
    const records = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
    const now = new Date();
    // Listed first (lane order): the old one, then two recent ones.
    const [old] = await failed(records, 'refuses', 'old', 1, new Date(now.getTime() - 8 * DAY));
    const recent = await failed(records, 'refuses', 'new', 2, new Date(now.getTime() - DAY));
    // Another worker's prune pass deletes the old one after the replay listed it.
    let struck = false;
    const racing: Store = Object.create(store, {
      get: {
        value: async (key: string) => {
          if (!struck && key === deliveryKeys.record(old!)) {
            struck = true;
            await records.pruneFailed(now, new Map([['refuses', 7 * DAY]]));
          }
          return store.get(key);
        },
      },
    });
    const delivery = createDelivery({
      config,
      store: racing,
      redisUrl: undefined,
      keyPrefix: 'test',
      events: createOutboxPublisher(racing),
      http: createHttpClient(),
      logger,
      metrics: new Metrics(),
      now: () => now,
    });
    cleanups.push(() => delivery.close());

    const { replayed } = await delivery.replayFailed('refuses');

    expect(struck).toBe(true);
    expect(replayed.sort()).toEqual([...recent].sort());
    expect(await records.get(old!)).toBeNull();
  });
});

describe('destinations[].failedRetention', () => {
  const base = {
    admin: { token: 'admin-token-0123456789' },
    channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
  };
  const secret = `whsec_${Buffer.from('prune-failed-secret-0123456789ab').toString('base64')}`;

  it('takes a duration on webhook and CRM destinations, and defaults to 0 (kept for good)', () => {
    const config = parseConfig(
      {
        ...base,
        destinations: [
          { id: 'hook', url: 'http://127.0.0.1:9/hook', secret, failedRetention: '30d' },
          { id: 'plain', url: 'http://127.0.0.1:9/plain', secret },
          {
            id: 'b24',
            kind: 'bitrix24',
            webhookUrl: 'https://portal.bitrix24.ru/rest/1/abcdef123/',
            failedRetention: '12h',
          },
        ],
      },
      defaultRegistry(),
      {},
    );
    expect(config.destinations.map((destination) => destination.failedRetention)).toEqual([
      30 * DAY,
      0,
      12 * 3_600_000,
    ]);
  });

  it("the worker's prune pass deletes the old failed deliveries, counts them and logs it once per run", async () => {
    const store = createMemoryStore();
    const config = parseConfig(
      {
        ...base,
        destinations: [
          { id: 'refuses', url: 'http://127.0.0.1:9/hook', secret, failedRetention: '7d' },
          { id: 'keeps', url: 'http://127.0.0.1:9/other', secret },
        ],
      },
      defaultRegistry(),
      {},
    );
    const records = createDeliveryRecords(store, { deliveredRetentionMs: DAY });
    const now = new Date();
    const longAgo = new Date(now.getTime() - 8 * DAY);
    const old = await failed(records, 'refuses', 'old', 3, longAgo);
    await failed(records, 'keeps', 'keep', 2, longAgo);
    const captured = capturingLogger('info');
    const metrics = new Metrics();
    const delivery = createDelivery({
      config,
      store,
      redisUrl: undefined,
      keyPrefix: 'test',
      events: createOutboxPublisher(store),
      http: createHttpClient(),
      logger: captured.logger,
      metrics,
      now: () => now,
      pollIntervalMs: 50,
      pruneIntervalMs: 20,
    });
    cleanups.push(() => delivery.close());
    await delivery.start();

    const deadline = Date.now() + 20_000;
    while ((await records.count('failed', 'refuses')) > 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await records.count('failed', 'refuses')).toBe(0);
    for (const id of old) expect(await records.get(id)).toBeNull();
    expect(await records.count('failed', 'keeps')).toBe(2);
    // A few more passes: nothing more to delete, nothing more said.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const said = captured.lines.filter((line) => line.msg.includes('failedRetention'));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ level: 30, destination: 'refuses', count: 3 });
    expect(await metrics.registry.metrics()).toContain(
      'chatbridge_delivery_failed_pruned_total{destination="refuses"} 3',
    );
  });
});
