import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/** The store's socket, with a count of the writes it is asked for (one `_writev` is one write of several chunks). */
function countWrites(store: RedisStore) {
  type Chunked = { _write: (...args: unknown[]) => void; _writev: (...args: unknown[]) => void };
  const stream = (store.client as Redis).stream as unknown as Chunked & { writableCorked: number };
  const calls = { write: 0, writev: 0 };
  const write = stream._write.bind(stream);
  const writev = stream._writev.bind(stream);
  stream._write = (...args) => {
    calls.write++;
    write(...args);
  };
  stream._writev = (...args) => {
    calls.writev++;
    writev(...args);
  };
  return { stream, calls };
}

/**
 * src/store/redis.ts `coalesceWrites`: the engine's commands of one event-loop iteration leave in
 * one socket write, in the order they were issued, and each still gets its own answer.
 */
describe('Redis store: the engine writes of one event-loop iteration go out together', () => {
  const silent = pino({ level: 'silent' });
  const prefix = uniquePrefix('coalesce');
  let url: string;

  beforeAll(async () => {
    url = await getTestRedisUrl();
  });
  afterAll(async () => {
    await cleanupPrefix(url, prefix);
  });

  it('sends five guarded batches issued in one tick as one write, applied in call order', async () => {
    const store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    try {
      const { stream, calls } = countWrites(store);

      // Each batch expects what the one before it writes: they hold only if Redis runs them in
      // the order they were issued.
      const results = ['a', 'b', 'c', 'd', 'e'].map((value, index, all) =>
        store
          .batch()
          .expect('chain', index === 0 ? null : all[index - 1]!)
          .set('chain', value)
          .exec(),
      );
      expect(stream.writableCorked).toBe(1); // held until the end of this iteration
      expect(await Promise.all(results)).toEqual([true, true, true, true, true]);
      expect(await store.get('chain')).toBe('e');
      expect(calls).toEqual({ write: 1, writev: 1 }); // the five batches, then the get
      expect(stream.writableCorked).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("sends the appends of one tick (the deferred intake's RPUSH) as one write, in call order", async () => {
    // With intake.ackAfterAppend the append is a webhook's only store call: each was a socket
    // write of its own (~9 KB for a chat_finished), however many requests one iteration answered.
    const store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    try {
      const { stream, calls } = countWrites(store);
      const items = ['a', 'b', 'c', 'd', 'e'].map((value) => Buffer.from(`{"v":2}\n${value}`, 'utf8'));
      const lengths = items.map((item) => store.rpush('appended', item));
      expect(stream.writableCorked).toBe(1); // held until the end of this iteration
      expect(await Promise.all(lengths)).toEqual([1, 2, 3, 4, 5]);
      expect(calls).toEqual({ write: 0, writev: 1 });
      expect(await store.lrangeBuffer('appended', 0, -1)).toEqual(items);
    } finally {
      await store.close();
    }
  });

  it('a batch whose expectation fails still answers false while others in its write hold', async () => {
    const store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    try {
      await store.set('taken', 'x');
      const [stale, fresh] = await Promise.all([
        store.batch().expect('taken', null).set('taken', 'y').exec(),
        store.batch().expect('free', null).set('free', 'z').exec(),
      ]);
      expect([stale, fresh]).toEqual([false, true]);
      expect(await store.get('taken')).toBe('x');
      expect(await store.get('free')).toBe('z');
    } finally {
      await store.close();
    }
  });

  it('sends a plain batch as one command, and a read issued after it in the same write, answered after it', async () => {
    // The delivery worker marks a record (record, lane, index entries) and reads its lane's next
    // head in one tick; before, the batch was MULTI, a command per write and EXEC, and the read
    // went in a socket write of its own.
    const store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    try {
      const client = store.client as Redis;
      const { calls } = countWrites(store);
      const sent: string[] = [];
      const send = client.sendCommand.bind(client);
      client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        sent.push(command.name);
        return (send as (...args: unknown[]) => unknown)(command, ...rest);
      }) as typeof client.sendCommand;

      await store.zadd('lane', 1, 'd1');
      await store.zadd('lane', 2, 'd2');
      sent.length = 0;
      calls.write = 0;
      calls.writev = 0;
      const [applied, head] = await Promise.all([
        store
          .batch()
          .set('rec:d1', '{"state":"delivered"}', 60_000)
          .zrem('lane', 'd1')
          .zadd('idx', 5, 'd1')
          .exec(),
        store.zrangeByScore('lane', Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, 1),
      ]);
      expect(applied).toBe(true);
      expect(head).toEqual(['d2']); // the read ran after the batch
      expect(sent).toEqual(['evalsha', 'zrangebyscore']);
      expect(calls).toEqual({ write: 0, writev: 1 });
      expect(await store.get('rec:d1')).toBe('{"state":"delivered"}');
      expect(await store.zscore('idx', 'd1')).toBe(5);
    } finally {
      await store.close();
    }
  });
});
