import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import { capturingLogger } from './support/logs.js';
import { type PrivateRedis, startPrivateRedis } from './support/redis.js';

/**
 * A lock released while Redis is down cannot be: it expires by itself. Every lock a webhook or
 * a delivery held when Redis went away failed its release with its own warn line, so the outage
 * log (test/outage.logs.test.ts) said it once per lock in flight: at most once a minute now, the
 * others at debug, as the outage's other repeating failures.
 */
describe('releasing locks while Redis is down', () => {
  let redis: PrivateRedis;
  let store: RedisStore;
  const { logger, lines } = capturingLogger('debug');

  beforeAll(async () => {
    redis = await startPrivateRedis();
    store = await createRedisStore({
      url: redis.url,
      keyPrefix: 'lock-outage:',
      logger,
      connectTimeoutMs: 500,
    });
  });
  afterAll(async () => {
    await store?.close().catch(() => undefined);
    await redis?.stop();
  });

  it('warns once for the failed releases of one outage, the rest at debug', async () => {
    const locks = await Promise.all(
      ['a', 'b', 'c'].map((name) => store.lock([`k:${name}`], { ttlMs: 10_000, waitMs: 1000 })),
    );
    await redis.stop();
    for (const lock of locks) await lock.release();
    const released = lines.filter(
      (line) => line.msg === 'could not release a lock; it will expire by itself',
    );
    expect(released.map((line) => line.level)).toEqual([40, 20, 20]);
  });
});
