import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../src/errors.js';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import { type PrivateRedis, startPrivateRedis } from './support/redis.js';

/**
 * A batch is applied whole or not at all when Redis refuses writes for its own state (DESIGN: a
 * store that cannot take a write writes nothing). With MULTI/EXEC, a Redis past maxmemory refuses
 * the transaction (EXECABORT, OOM). A Lua script is refused only write by write, and only until
 * its first write lands: a batch whose first write was refused (SET: OOM) and whose next one is
 * allowed past maxmemory (DEL, ZREM, SREM free memory) then ran every later write too — half a
 * batch, reported as "store unavailable, retry later". Plain batches go through the script since
 * the nineteenth round; batches with expectations always did. Fails on the code before this test.
 */

const logger = pino({ level: 'silent' });

describe('a batch on a Redis past maxmemory (OOM)', () => {
  let redis: PrivateRedis;
  let store: RedisStore;
  let admin: Redis;

  beforeAll(async () => {
    redis = await startPrivateRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    admin = new Redis(redis.url, { lazyConnect: true });
    await admin.connect();
    store = await createRedisStore({ url: redis.url, keyPrefix: 'oom', logger });
  }, 30_000);
  afterAll(async () => {
    await store?.close();
    admin?.disconnect();
    await redis?.stop();
  });

  it.each([
    ['plain', false],
    ['with an expectation', true],
  ])('writes nothing (%s)', async (_name, guarded) => {
    await store.set('record', 'old');
    await store.set('gone', 'still here');
    // Past maxmemory from here on: every write that may grow memory is refused with OOM.
    await admin.call('config', 'set', 'maxmemory', '1');
    try {
      const batch = store.batch();
      if (guarded) batch.expect('record', 'old');
      const error = await batch
        .set('record', 'new')
        .del('gone')
        .zadd('index', 1, 'record')
        .exec()
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
    } finally {
      await admin.call('config', 'set', 'maxmemory', '0');
    }
    expect(await store.get('record')).toBe('old');
    expect(await store.get('gone')).toBe('still here');
    expect(await store.zcard('index')).toBe(0);
  });
});
