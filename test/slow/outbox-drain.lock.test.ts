import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { CircuitBreaker } from '../../src/delivery/breaker.js';
import { createDrainer, deliveryIdOf } from '../../src/delivery/drain.js';
import { createMemoryQueue, type DeliveryQueue } from '../../src/delivery/queue.js';
import { createDeliveryRecords } from '../../src/delivery/records.js';
import { secretKey } from '../../src/delivery/signing.js';
import { OUTBOX_KEY } from '../../src/events/outbox.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * The outbox drain lock (30 s) outlives a slow chunk: renewed while the chunk is drained. It was
 * not renewed, and a drain past half its lifetime left its chunk untrimmed: on a store slow
 * enough for every chunk to take that long, the outbox was never trimmed; past the lifetime a
 * second instance drained the same chunk beside the first. Two drainers (two Redis connections)
 * on a real Redis; the first one's queueing is held for over 40 s.
 */
const SECRET = `whsec_${Buffer.from('drain-lock-test-secret-0123456789').toString('base64')}`;
const logger = pino({ level: 'silent' });

describe('the outbox drain lock', () => {
  const prefix = uniquePrefix('outbox-drain-lock');
  const stores: RedisStore[] = [];
  afterAll(async () => {
    for (const store of stores) await store.close();
    await cleanupPrefix(await getTestRedisUrl(), prefix);
  });

  it('a chunk that outlasts the lock ttl is trimmed by its drainer, and no other drainer queues it meanwhile', async () => {
    const url = await getTestRedisUrl();
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: [{ id: 'crm', url: 'http://127.0.0.1:9/hook', secret: SECRET }],
    });
    const runtimes = config.destinations.map((destination) => ({
      config: destination,
      key: secretKey(SECRET),
      secrets: [],
      breaker: new CircuitBreaker(5, 30_000),
    }));
    /** Which drainer queued which delivery, in order. */
    const queued: Array<{ drainer: string; id: string }> = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const holding = new Promise<void>((resolve) => {
      started = resolve;
    });

    async function drainer(name: string, holds: boolean) {
      const store = await createRedisStore({ url, keyPrefix: prefix, logger });
      stores.push(store);
      const queue = createMemoryQueue({ destinations: [{ id: 'crm', concurrency: 1 }], logger });
      const slow: DeliveryQueue = {
        ...queue,
        async enqueueMany(_destinationId, items) {
          for (const item of items) queued.push({ drainer: name, id: item.job.deliveryId });
          if (holds) {
            started();
            await released;
          }
          // Not run: nothing here sends (the drain is what is tested), so the jobs are not kept.
        },
      };
      const drain = createDrainer({
        store,
        records: createDeliveryRecords(store, { deliveredRetentionMs: 60_000 }),
        queue: slow,
        destinations: runtimes,
        routing: { agents: [], channels: config.channels, vendorNames: new Map() },
        logger,
        now: () => new Date(),
        random: Math.random,
      });
      return { store, drain, close: () => queue.close() };
    }

    const first = await drainer('first', true);
    const second = await drainer('second', false);
    const entry = (n: number) =>
      JSON.stringify({
        event: {
          id: `evt_lock_${n}`,
          type: 'contact.updated',
          occurredAt: new Date().toISOString(),
          channel: { id: 'site', vendor: 'jivochat' },
          contact: null,
          data: { n },
        },
        orderingKey: 'lock',
        stagedAt: Date.now(),
      });
    await first.store.rpush(OUTBOX_KEY, entry(1), entry(2));
    const firstDrain = first.drain.drainChunk();
    await holding;
    // The second drainer tries once a second for over 40 s (past half the ttl and past the ttl).
    for (let round = 0; round < 42; round++) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(await second.drain.drainChunk()).toEqual({ kind: 'busy' });
    }
    release();
    expect(await firstDrain).toEqual({ kind: 'drained', entries: 2 });
    expect(await first.store.llen(OUTBOX_KEY)).toBe(0);
    expect(queued).toEqual([
      { drainer: 'first', id: deliveryIdOf('crm', 'evt_lock_1') },
      { drainer: 'first', id: deliveryIdOf('crm', 'evt_lock_2') },
    ]);
    await first.close();
    await second.close();
  }, 150_000);
});
