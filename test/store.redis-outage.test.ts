import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../src/errors.js';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { capturingLogger } from './support/logs.js';
import { freePort, type PrivateRedis, startPrivateRedis, uniquePrefix } from './support/redis.js';

/**
 * Redis going away must cost vendors a retry (503), never a crash, a hang or a lost request;
 * and the bridge must recover without a restart when Redis comes back.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Every Store method, as calls that must all fail the same way during an outage. */
function everyMethod(store: Store): Array<[string, () => Promise<unknown>]> {
  return [
    ['get', () => store.get('k')],
    ['mget', () => store.mget(['k', 'l'])],
    ['set', () => store.set('k', 'v')],
    ['set nx ttl', () => store.set('k', 'v', { nx: true, ttlMs: 1000 })],
    ['del', () => store.del('k')],
    ['incr', () => store.incr('n')],
    ['pttl', () => store.pttl('k')],
    ['countInWindow', () => store.countInWindow('n', 1000)],
    ['hget', () => store.hget('h', 'f')],
    ['hgetall', () => store.hgetall('h')],
    ['hset', () => store.hset('h', 'f', 'v')],
    ['hdel', () => store.hdel('h', 'f')],
    ['sadd', () => store.sadd('s', 'm')],
    ['srem', () => store.srem('s', 'm')],
    ['smembers', () => store.smembers('s')],
    ['zadd', () => store.zadd('z', 1, 'm')],
    ['zrem', () => store.zrem('z', 'm')],
    ['zcard', () => store.zcard('z')],
    ['zscore', () => store.zscore('z', 'm')],
    ['zrangeByScore', () => store.zrangeByScore('z', 0, 10, 5)],
    ['zrangeByScoreWithScores', () => store.zrangeByScoreWithScores('z', 0, 10, 5)],
    ['zrevrangeByLex', () => store.zrevrangeByLex('z', { below: 'x', limit: 5 })],
    ['rpush', () => store.rpush('l', 'v')],
    ['lrange', () => store.lrange('l', 0, -1)],
    ['llen', () => store.llen('l')],
    ['batch', () => store.batch().set('k', 'v').rpush('l', 'v').ltrim('l', -5, -1).exec()],
    ['lock', () => store.lock(['job'], { ttlMs: 1000, waitMs: 5000 })],
    ['ping', () => store.ping()],
  ];
}

/**
 * The call must fail with StoreUnavailableError while Redis is still down or hung: nothing in
 * these tests brings Redis back before the call settles, so a call that waited for Redis instead
 * (ioredis's offline queue, a retry loop) never settles and the test fails on its timeout.
 */
async function expectUnavailable(name: string, call: () => Promise<unknown>): Promise<void> {
  const outcome = await call().then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  expect('error' in outcome ? outcome.error : outcome, name).toBeInstanceOf(StoreUnavailableError);
}

describe('redis store: outage and recovery', () => {
  let redis: PrivateRedis;
  let store: RedisStore;
  const { logger, lines } = capturingLogger();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    redis = await startPrivateRedis();
    store = await createRedisStore({
      url: redis.url,
      keyPrefix: uniquePrefix('outage'),
      logger,
      commandTimeoutMs: 300,
    });
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await store?.close();
    await redis?.stop();
  });

  it('fails fast with StoreUnavailableError while Redis is down, then recovers by itself', async () => {
    await store.set('k', 'before');
    const held = await store.lock(['held'], { ttlMs: 10_000, waitMs: 0 });

    await redis.stop();
    for (const [name, call] of everyMethod(store)) await expectUnavailable(name, call);
    // Releasing during the outage never throws (the lock expires by itself).
    await held.release();

    await redis.start();
    const deadline = performance.now() + 10_000;
    for (;;) {
      const ok = await store.ping().then(
        () => true,
        () => false,
      );
      if (ok) break;
      expect(performance.now(), 'the store did not reconnect within 10 s').toBeLessThan(deadline);
      await sleep(50);
    }
    // The private Redis keeps nothing on disk: the data is gone, the connection is back.
    expect(await store.get('k')).toBeNull();
    await store.set('k', 'after');
    expect(await store.get('k')).toBe('after');
    const again = await store.lock(['held'], { ttlMs: 1000, waitMs: 0 });
    await again.release();

    // One line when it went down, one when it came back: not one per reconnect attempt.
    const messages = lines.filter((line) => line.level >= 30).map((line) => line.msg);
    expect(messages.filter((msg) => /connection lost/.test(msg))).toHaveLength(1);
    expect(messages.filter((msg) => /back up/.test(msg))).toHaveLength(1);
    expect(unhandled).toEqual([]);
  });

  it('a hung Redis (no answer at all) fails within the command timeout', async () => {
    await store.ping();
    redis.pause();
    try {
      await expectUnavailable('get while hung', () => store.get('k'));
    } finally {
      redis.resume();
    }
    // A command that timed out leaves the connection usable once Redis answers again.
    const deadline = performance.now() + 5000;
    while (
      !(await store.ping().then(
        () => true,
        () => false,
      ))
    ) {
      expect(performance.now()).toBeLessThan(deadline);
      await sleep(50);
    }
    expect(unhandled).toEqual([]);
  });

  it('creation waits for a Redis that starts a little later, and close() works while Redis is down', async () => {
    await redis.stop();
    const creating = createRedisStore({
      url: redis.url,
      keyPrefix: uniquePrefix('late'),
      logger,
      connectTimeoutMs: 5000,
    });
    await sleep(200);
    await redis.start();
    const late = await creating;
    await late.set('k', 'v');
    expect(await late.get('k')).toBe('v');

    await redis.stop();
    // Closes while Redis is down (settles: the test would time out otherwise), and twice is harmless.
    await late.close();
    await late.close();
    await redis.start();
    // The shared store of this suite reconnects too (the last test uses it).
    const deadline = performance.now() + 5000;
    while (
      !(await store.ping().then(
        () => true,
        () => false,
      ))
    ) {
      expect(performance.now()).toBeLessThan(deadline);
      await sleep(50);
    }
    expect(unhandled).toEqual([]);
  });

  it('creation rejects within connectTimeoutMs, naming the URL but not the password', async () => {
    const port = await freePort();
    const error = await createRedisStore({
      url: `redis://:s3cret-password@127.0.0.1:${port}/0`,
      keyPrefix: 'never',
      logger,
      connectTimeoutMs: 300,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain(`127.0.0.1:${port}`);
    expect(message).toContain('300 ms');
    expect(message).not.toContain('s3cret');
    expect(JSON.stringify(lines)).not.toContain('s3cret');
    // Nothing keeps reconnecting in the background after the refusal.
    await sleep(200);
    expect(unhandled).toEqual([]);
  });

  it('a client that ioredis ends by itself is connected again; one closed on purpose stays closed', async () => {
    // ioredis can end a client for good in the middle of a Sentinel failover (see
    // keepConnecting in src/store/connection.ts); ending it here from outside is the same state.
    const own = await createRedisStore({ url: redis.url, keyPrefix: uniquePrefix('ended'), logger });
    await own.set('k', 'v');
    const ended = once(own.client, 'end');
    own.client.disconnect();
    await ended;
    // Bounded by tries, not the clock: a loaded machine only makes it take more of them.
    for (let tries = 0; ; tries++) {
      const back = await own.get('k').then(
        (value) => value === 'v',
        () => false,
      );
      if (back) break;
      expect(tries, 'the ended client did not come back').toBeLessThan(400);
      await sleep(50);
    }
    expect(lines.some((line) => line.level === 40 && /gave up reconnecting/.test(line.msg))).toBe(true);

    await own.close();
    await sleep(500);
    expect(own.client.status).toBe('end');
    await expect(own.get('k')).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(unhandled).toEqual([]);
  });
});
