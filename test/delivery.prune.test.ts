import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createDeliveryRecords, deliveryKeys } from '../src/delivery/records.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Delivered records expire by TTL; their ids in the `delivered` indexes (all, and per
 * destination) are forgotten by prune(), which a worker runs every 5 s. It must keep up with
 * what a bridge delivers: a bounded slice per call (1000 per key, 200/s) fell behind the 400
 * deliveries/s of the README's CPU bench, and the indexes grew without end.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function storeOf(kind: 'memory' | 'redis'): Promise<Store> {
  if (kind === 'memory') return createMemoryStore();
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('delivery-prune');
  const store = await createRedisStore({ url, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(url, keyPrefix);
  });
  return store;
}

describe.each(['memory', 'redis'] as const)('pruning delivered deliveries (%s store)', (kind) => {
  it('forgets every delivery past the retention in one run, and keeps the recent ones', async () => {
    const store = await storeOf(kind);
    const retention = 60_000;
    const records = createDeliveryRecords(store, { deliveredRetentionMs: retention });
    const now = Date.now();
    const old = 2_500;
    for (let start = 0; start < old; start += 500) {
      const batch = store.batch();
      for (let i = start; i < Math.min(old, start + 500); i++) {
        const at = now - retention - 1_000 - i;
        batch.zadd(deliveryKeys.index('delivered'), at, `dlv_old${i}`);
        batch.zadd(deliveryKeys.index('delivered', 'crm'), at, `dlv_old${i}`);
      }
      await batch.exec();
    }
    await store.zadd(deliveryKeys.index('delivered'), now - 10, 'dlv_recent');
    await store.zadd(deliveryKeys.index('delivered', 'crm'), now - 10, 'dlv_recent');

    expect(await records.prune(new Date(now), ['crm'])).toBe(2 * old);
    expect(await records.count('delivered')).toBe(1);
    expect(await records.count('delivered', 'crm')).toBe(1);
  });
});
