import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreBusyError, StoreUnavailableError } from '../src/errors.js';
import { createMemoryStore, LOCK_KEY_PREFIX } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Lock, Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * One behaviour, two implementations: every assertion here runs against the in-memory store and
 * against a real Redis, so code tested on the memory store behaves the same in production.
 */

const silent = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface StoreUnderTest {
  store: Store;
  /** A fresh store instance sharing the same data (for close() tests). */
  another(): Promise<Store>;
  cleanup(): Promise<void>;
}

function describeStoreConformance(name: string, factory: () => Promise<StoreUnderTest>): void {
  describe(`store conformance: ${name}`, () => {
    let subject: StoreUnderTest;
    let store: Store;
    let counter = 0;
    /** A key no other test uses, so tests can share one store (and one Redis prefix). */
    const key = (label: string) => `${label}:${++counter}`;

    beforeAll(async () => {
      subject = await factory();
      store = subject.store;
    });
    afterAll(async () => {
      await subject?.cleanup();
    });

    describe('strings', () => {
      it('gets what was set, null for missing keys, and overwrites', async () => {
        const k = key('str');
        expect(await store.get(k)).toBeNull();
        expect(await store.set(k, 'one')).toBe(true);
        expect(await store.get(k)).toBe('one');
        expect(await store.set(k, 'two')).toBe(true);
        expect(await store.get(k)).toBe('two');
        expect(await store.set(k, '')).toBe(true);
        expect(await store.get(k)).toBe('');
      });

      it('keeps unicode values intact', async () => {
        const k = key('str');
        await store.set(k, 'Привет 😀 \u0000 end');
        expect(await store.get(k)).toBe('Привет 😀 \u0000 end');
      });

      it('set nx: only when missing, reports false and keeps the old value otherwise', async () => {
        const k = key('nx');
        expect(await store.set(k, 'first', { nx: true })).toBe(true);
        expect(await store.set(k, 'second', { nx: true })).toBe(false);
        expect(await store.get(k)).toBe('first');
        expect(await store.set(k, 'third', { nx: true, ttlMs: 10_000 })).toBe(false);
        expect(await store.pttl(k)).toBe(-1);
      });

      it('mget answers in order, null for missing keys and for keys of another type', async () => {
        const [a, b, missing, hash] = [key('m'), key('m'), key('m'), key('m')];
        await store.set(a, 'A');
        await store.set(b, 'B');
        await store.hset(hash, 'f', 'v');
        expect(await store.mget([a, missing, b, hash, a])).toEqual(['A', null, 'B', null, 'A']);
        expect(await store.mget([])).toEqual([]);
      });

      it('del counts the keys that existed, of any type', async () => {
        const [a, b, list, missing] = [key('d'), key('d'), key('d'), key('d')];
        await store.set(a, '1');
        await store.set(b, '2');
        await store.rpush(list, 'x');
        expect(await store.del(a, missing, b, list, a)).toBe(3);
        expect(await store.mget([a, b])).toEqual([null, null]);
        expect(await store.llen(list)).toBe(0);
        expect(await store.del()).toBe(0);
      });

      it('incr counts from zero, and refuses non-integers with a reply error', async () => {
        const k = key('incr');
        expect(await store.incr(k)).toBe(1);
        expect(await store.incr(k)).toBe(2);
        expect(await store.get(k)).toBe('2');
        const text = key('incr');
        await store.set(text, 'abc');
        const error = await store.incr(text).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(Error);
        expect(error).not.toBeInstanceOf(StoreUnavailableError);
        expect((error as Error).message).toMatch(/not an integer/);
      });

      it('reading a key of another type fails like WRONGTYPE (not as an outage)', async () => {
        const hash = key('wt');
        await store.hset(hash, 'f', 'v');
        const error = await store.get(hash).catch((e: unknown) => e);
        expect((error as Error).message).toMatch(/^WRONGTYPE/);
        expect(error).not.toBeInstanceOf(StoreUnavailableError);
        await expect(store.rpush(hash, 'x')).rejects.toThrow(/WRONGTYPE/);
        await expect(store.smembers(hash)).rejects.toThrow(/WRONGTYPE/);
        await expect(store.zcard(hash)).rejects.toThrow(/WRONGTYPE/);
        const str = key('wt');
        await store.set(str, 'v');
        await expect(store.hget(str, 'f')).rejects.toThrow(/WRONGTYPE/);
        await expect(store.lrange(str, 0, -1)).rejects.toThrow(/WRONGTYPE/);
      });
    });

    describe('expiry', () => {
      it('pttl: -2 for missing keys, -1 without expiry, the remaining ms otherwise', async () => {
        const k = key('ttl');
        expect(await store.pttl(k)).toBe(-2);
        await store.set(k, 'v');
        expect(await store.pttl(k)).toBe(-1);
        await store.set(k, 'v', { ttlMs: 10_000 });
        const left = await store.pttl(k);
        expect(left).toBeGreaterThan(9_000);
        expect(left).toBeLessThanOrEqual(10_000);
      });

      it('a plain set removes the expiry, incr keeps it', async () => {
        const plain = key('ttl');
        await store.set(plain, 'v', { ttlMs: 10_000 });
        await store.set(plain, 'w');
        expect(await store.pttl(plain)).toBe(-1);
        const counter = key('ttl');
        await store.set(counter, '5', { ttlMs: 10_000 });
        expect(await store.incr(counter)).toBe(6);
        expect(await store.pttl(counter)).toBeGreaterThan(9_000);
      });

      it('refuses a non-positive or fractional ttl with a reply error', async () => {
        await expect(store.set(key('ttl'), 'v', { ttlMs: 0 })).rejects.toThrow(/invalid expire time/);
        await expect(store.set(key('ttl'), 'v', { ttlMs: 1.5 })).rejects.toThrow(/not an integer/);
      });

      it('keys disappear after their ttl, for every way of setting one (real waiting)', async () => {
        const [plain, nx, batched, expired, kept] = [key('x'), key('x'), key('x'), key('x'), key('x')];
        // 1.5 s, not a few ms: on a loaded machine the check that the keys are there can come
        // tens of milliseconds after they were set. Then wait (up to 20 s) for them to go.
        const ttl = 1500;
        await store.set(plain, 'v', { ttlMs: ttl });
        expect(await store.set(nx, 'v', { nx: true, ttlMs: ttl })).toBe(true);
        await store.hset(expired, 'f', 'v');
        await store.set(kept, 'v');
        await store.batch().set(batched, 'v', ttl).expire(expired, ttl).exec();
        expect(await store.mget([plain, nx, batched])).toEqual(['v', 'v', 'v']);
        expect(await store.pttl(expired)).toBeGreaterThan(0);
        const gone = async () =>
          (await Promise.all([plain, nx, batched, expired].map((k) => store.pttl(k)))).every(
            (ms) => ms === -2,
          );
        for (let tries = 0; tries < 200 && !(await gone()); tries++) await sleep(100);
        expect(await store.mget([plain, nx, batched, kept])).toEqual([null, null, null, 'v']);
        expect(await store.hgetall(expired)).toEqual({});
        expect(await store.pttl(plain)).toBe(-2);
        // An expired key is missing for nx too.
        expect(await store.set(nx, 'again', { nx: true })).toBe(true);
        expect(await store.incr(plain)).toBe(1);
      }, 40_000);

      it('countInWindow counts, and the window ends where its first event put it', async () => {
        const k = key('window');
        expect(await store.countInWindow(k, 10_000)).toEqual({ count: 1, ttlMs: expect.any(Number) });
        const second = await store.countInWindow(k, 60_000);
        // A later hit (even one asking for a longer window) does not move the window's end.
        expect(second.count).toBe(2);
        expect(second.ttlMs).toBeGreaterThan(8_000);
        expect(second.ttlMs).toBeLessThanOrEqual(10_000);
        expect(await store.pttl(k)).toBeLessThanOrEqual(10_000);
        expect(await store.get(k)).toBe('2');
        // A counter some writer left without expiry gets the window on its next hit.
        const persistent = key('window');
        await store.set(persistent, '7');
        expect(await store.countInWindow(persistent, 5_000)).toEqual({ count: 8, ttlMs: 5_000 });
        expect(await store.pttl(persistent)).toBeGreaterThan(4_000);
      });

      it('countInWindow starts again once the window is over (real waiting); bad arguments refused', async () => {
        const k = key('window');
        expect((await store.countInWindow(k, 300)).count).toBe(1);
        expect((await store.countInWindow(k, 300)).count).toBe(2);
        for (let tries = 0; tries < 200 && (await store.pttl(k)) !== -2; tries++) await sleep(50);
        expect(await store.countInWindow(k, 300)).toEqual({ count: 1, ttlMs: expect.any(Number) });
        await expect(store.countInWindow(key('window'), 0)).rejects.toThrow(/windowMs/);
        await expect(store.countInWindow(key('window'), 1.5)).rejects.toThrow(/windowMs/);
        const text = key('window');
        await store.set(text, 'not a number');
        await expect(store.countInWindow(text, 1000)).rejects.toThrow(/not an integer/);
        expect(await store.pttl(text)).toBe(-1);
      }, 20_000);

      it('expire on a missing key does nothing; a non-positive expire deletes the key', async () => {
        const [missing, k] = [key('exp'), key('exp')];
        await store.set(k, 'v');
        await store.batch().expire(missing, 1000).expire(k, 0).exec();
        expect(await store.pttl(missing)).toBe(-2);
        expect(await store.get(k)).toBeNull();
      });
    });

    describe('hashes', () => {
      it('hset/hget/hgetall/hdel, and the key goes with its last field', async () => {
        const k = key('hash');
        expect(await store.hgetall(k)).toEqual({});
        expect(await store.hget(k, 'a')).toBeNull();
        await store.hset(k, 'a', '1');
        await store.hset(k, 'b', '2');
        await store.hset(k, 'a', '3');
        expect(await store.hget(k, 'a')).toBe('3');
        expect(await store.hget(k, 'missing')).toBeNull();
        expect(await store.hgetall(k)).toEqual({ a: '3', b: '2' });
        expect(await store.hdel(k, 'a')).toBe(1);
        expect(await store.hdel(k, 'a')).toBe(0);
        expect(await store.hdel(k, 'b')).toBe(1);
        expect(await store.pttl(k)).toBe(-2);
        expect(await store.hdel(key('hash'), 'x')).toBe(0);
      });

      it('hmget answers each field in order (null: none); a missing key is empty, another type refused', async () => {
        const [k, missing, set] = [key('hash'), key('hash'), key('hash')];
        await store.hset(k, 'a', '1');
        await store.hset(k, 'c_9', '3');
        expect(await store.hmget(k, ['c_9', 'b', 'a', 'a'])).toEqual(['3', null, '1', '1']);
        expect(await store.hmget(missing, ['a'])).toEqual([null]);
        expect(await store.hmget(k, [])).toEqual([]);
        await store.sadd(set, 'f');
        await expect(store.hmget(set, ['f'])).rejects.toThrow(/WRONGTYPE/);
        await expect(store.hmget(set, [])).rejects.toThrow(/WRONGTYPE/);
      });
    });

    describe('sets', () => {
      it('sadd/srem count real changes; the key goes with its last member', async () => {
        const k = key('set');
        expect(await store.smembers(k)).toEqual([]);
        expect(await store.sadd(k, 'a', 'b', 'a')).toBe(2);
        expect(await store.sadd(k, 'b', 'c')).toBe(1);
        expect((await store.smembers(k)).sort()).toEqual(['a', 'b', 'c']);
        expect(await store.srem(k, 'a', 'zzz')).toBe(1);
        expect(await store.sadd(k)).toBe(0);
        expect(await store.srem(k)).toBe(0);
        expect(await store.srem(k, 'b', 'c')).toBe(2);
        expect(await store.pttl(k)).toBe(-2);
        expect(await store.srem(k, 'b')).toBe(0);
      });

      it('smismember answers each member in order; a missing key is an empty set, another type refused', async () => {
        const [k, missing, hash] = [key('set'), key('set'), key('set')];
        await store.sadd(k, 'a', '7', 'c_9');
        expect(await store.smismember(k, ['7', 'b', 'a', 'a', 'c_9'])).toEqual([
          true,
          false,
          true,
          true,
          true,
        ]);
        expect(await store.smismember(missing, ['a'])).toEqual([false]);
        expect(await store.smismember(k, [])).toEqual([]);
        await store.hset(hash, 'f', 'v');
        await expect(store.smismember(hash, ['f'])).rejects.toThrow(/WRONGTYPE/);
        await expect(store.smismember(hash, [])).rejects.toThrow(/WRONGTYPE/);
      });

      /** Every page of a sinterScan iteration, and how many members each call answered. */
      async function sinterAll(keys: string[], count: number, scan: number) {
        const found: string[] = [];
        const pages: number[] = [];
        let cursor = '0';
        do {
          const page = await store.sinterScan(keys, cursor, { count, scan });
          cursor = page.cursor;
          found.push(...page.members);
          pages.push(page.members.length);
          expect(pages.length).toBeLessThan(1000);
        } while (cursor !== '0');
        return { found, pages };
      }

      it('sinterScan answers the intersection a bounded page at a time, walking the smallest set', async () => {
        // Large enough that Redis keeps them as hash tables (SSCAN honours COUNT there), numbers
        // and text mixed, as the name index holds stored ids of both forms.
        const [big, mid, small] = [key('si'), key('si'), key('si')];
        const bigMembers = Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? `c_${i}` : String(i + 1)));
        await store.sadd(big, ...bigMembers);
        await store.sadd(mid, ...bigMembers.filter((_, i) => i % 2 === 0), 'only-mid');
        await store.sadd(small, ...bigMembers.filter((_, i) => i % 10 === 0), 'only-small');
        const expected = bigMembers.filter((_, i) => i % 10 === 0).sort();

        const all = await sinterAll([big, mid, small], 20, 100);
        expect([...new Set(all.found)].sort()).toEqual(expected);
        // Bounded: no call answers much more than `count` (SSCAN's COUNT is a hint on Redis).
        expect(Math.max(...all.pages)).toBeLessThanOrEqual(60);
        expect(all.pages.length).toBeGreaterThan(3);

        // One set: a page of it at a time.
        const one = await store.sinterScan([big], '0', { count: 50, scan: 50 });
        expect(one.cursor).not.toBe('0');
        expect(one.members.length).toBeGreaterThan(0);
        expect(one.members.length).toBeLessThanOrEqual(100);
        const whole = await sinterAll([big], 500, 500);
        expect([...new Set(whole.found)].sort()).toEqual([...bigMembers].sort());
      });

      it('sinterScan: small, missing, empty and disjoint sets; bad arguments refused', async () => {
        const [a, b, missing, hash] = [key('si'), key('si'), key('si'), key('si')];
        await store.sadd(a, 'x', 'y', 'z', '7');
        await store.sadd(b, 'y', '7', 'w');
        expect((await sinterAll([a, b], 10, 10)).found.sort()).toEqual(['7', 'y']);
        expect((await sinterAll([b, a, b], 1, 1)).found.sort()).toEqual(['7', 'y']);
        expect(await store.sinterScan([a, missing], '0', { count: 10, scan: 10 })).toEqual({
          cursor: '0',
          members: [],
        });
        expect(await store.sinterScan([], '0', { count: 10, scan: 10 })).toEqual({
          cursor: '0',
          members: [],
        });
        await store.sadd(missing, 'q');
        expect((await sinterAll([a, missing], 10, 10)).found).toEqual([]);
        await store.hset(hash, 'f', 'v');
        await expect(store.sinterScan([a, hash], '0', { count: 10, scan: 10 })).rejects.toThrow(/WRONGTYPE/);
        await expect(store.sinterScan([a], '0', { count: 0, scan: 10 })).rejects.toThrow(/count/);
        await expect(store.sinterScan([a], '0', { count: 10, scan: 5 })).rejects.toThrow(/scan/);
        await expect(store.sinterScan([a], 'nonsense', { count: 10, scan: 10 })).rejects.toThrow(/cursor/);
      });
    });

    describe('scanKeys', () => {
      /** Every key a scanKeys iteration answers (once each), and how many calls it took. */
      async function scanAll(prefix: string, count: number) {
        const found = new Set<string>();
        let cursor = '0';
        let calls = 0;
        do {
          const page = await store.scanKeys(prefix, cursor, count);
          cursor = page.cursor;
          for (const each of page.keys) found.add(each);
          calls += 1;
          // The Redis of the tests is shared: SCAN walks every key of it, so a bound, not a count.
          expect(calls).toBeLessThan(100_000);
        } while (cursor !== '0');
        return { found: [...found].sort(), calls };
      }

      it('answers every key with the prefix, of any type, without the store prefix; no other key', async () => {
        const prefix = `${key('scan')}:rec:`;
        const expected: string[] = [];
        for (let i = 0; i < 25; i++) {
          const each = `${prefix}${i}`;
          expected.push(each);
          if (i % 3 === 0) await store.set(each, 'v');
          else if (i % 3 === 1) await store.sadd(each, 'm');
          else await store.zadd(each, 0, 'm');
        }
        await store.set(`${prefix.slice(0, -1)}X`, 'not under the prefix');
        await store.set(`x${prefix}1`, 'not at the start');
        const all = await scanAll(prefix, 1000);
        expect(all.found).toEqual(expected.sort());
        // A page at a time: with a small count the same keys come over several calls.
        const memory = store.kind === 'memory';
        const paged = await scanAll(prefix, memory ? 4 : 1000);
        expect(paged.found).toEqual(expected.sort());
        if (memory) expect(paged.calls).toBeGreaterThan(5);
        // A key deleted meanwhile is not answered once it is gone; the others still are.
        await store.del(`${prefix}0`);
        expect((await scanAll(prefix, 1000)).found).toEqual(expected.filter((each) => each !== `${prefix}0`));
      });

      it('reads glob characters in the prefix as themselves; bad arguments refused', async () => {
        const prefix = `${key('scan')}:a*[b]?\\:`;
        await store.set(`${prefix}1`, 'v');
        await store.set(`${key('scan')}:aX[b]?\\:2`, 'not this prefix');
        await store.set(`${key('scan')}:a*b?\\:3`, 'nor this one');
        expect((await scanAll(prefix, 1000)).found).toEqual([`${prefix}1`]);
        expect((await scanAll(`${key('scan')}:nothing:`, 1000)).found).toEqual([]);
        await expect(store.scanKeys(prefix, '0', 0)).rejects.toThrow(/count/);
        await expect(store.scanKeys(prefix, '0', 1001)).rejects.toThrow(/count/);
        await expect(store.scanKeys(prefix, 'nonsense', 10)).rejects.toThrow(/cursor/);
      });
    });

    describe('hscanFields', () => {
      /** Every field a walk answers (once each), and how many calls it took. */
      async function walk(hash: string, count: number) {
        const found = new Set<string>();
        let cursor = '0';
        let calls = 0;
        do {
          const page = await store.hscanFields(hash, cursor, count);
          cursor = page.cursor;
          for (const field of page.fields) found.add(field);
          calls += 1;
          expect(calls).toBeLessThan(10_000);
        } while (cursor !== '0');
        return { found: [...found].sort(), calls };
      }

      it('answers every field of the hash, without values, a page at a time; bad arguments refused', async () => {
        const hash = key('hscan');
        const expected: string[] = [];
        // Enough to make Redis keep a hash table (not a listpack answered whole), values large.
        for (let start = 0; start < 600; start += 200) {
          const batch = store.batch();
          for (let index = start; index < start + 200; index++) {
            expected.push(`f${index}`);
            batch.hset(hash, `f${index}`, 'v'.repeat(100));
          }
          await batch.exec();
        }
        const paged = await walk(hash, 50);
        expect(paged.found).toEqual(expected.sort());
        expect(paged.calls).toBeGreaterThan(2);
        const page = await store.hscanFields(hash, '0', 10);
        for (const field of page.fields) expect(field).toMatch(/^f\d+$/);
        expect(page.fields.length).toBeLessThan(600);
        await store.hdel(hash, 'f0');
        expect((await walk(hash, 1000)).found).toEqual(expected.filter((field) => field !== 'f0'));
        expect(await walk(key('hscan-none'), 10)).toEqual({ found: [], calls: 1 });
        await expect(store.hscanFields(hash, '0', 0)).rejects.toThrow(/count/);
        await expect(store.hscanFields(hash, '0', 1001)).rejects.toThrow(/count/);
        await expect(store.hscanFields(hash, 'nonsense', 10)).rejects.toThrow(/cursor/);
        const text = key('hscan-string');
        await store.set(text, 'v');
        await expect(store.hscanFields(text, '0', 10)).rejects.toThrow(/WRONGTYPE/);
      });
    });

    describe('sorted sets', () => {
      it('orders by score, then by member bytes (UTF-8, not UTF-16)', async () => {
        const k = key('z');
        await store.zadd(k, 2, 'two');
        await store.zadd(k, 1, 'one');
        await store.zadd(k, -5, 'negative');
        // Equal scores: byte order. 'B' (0x42) < 'a' (0x61) < 'é' (C3 A9) < U+FF21 (EF BC A1)
        // < '😀' (F0 9F 98 80); UTF-16 order would put the emoji (a surrogate, 0xD83D) first.
        for (const member of ['😀', '\uFF21', 'é', 'a', 'B']) await store.zadd(k, 10, member);
        expect(await store.zrangeByScore(k, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY)).toEqual([
          'negative',
          'one',
          'two',
          'B',
          'a',
          'é',
          '\uFF21',
          '😀',
        ]);
        expect(await store.zcard(k)).toBe(8);
      });

      it('zadd updates the score; zscore, zrem and zcard', async () => {
        const k = key('z');
        expect(await store.zscore(k, 'm')).toBeNull();
        expect(await store.zcard(k)).toBe(0);
        await store.zadd(k, 1.5, 'm');
        await store.zadd(k, 3, 'n');
        expect(await store.zscore(k, 'm')).toBe(1.5);
        await store.zadd(k, 4, 'm');
        expect(await store.zscore(k, 'm')).toBe(4);
        expect(await store.zrangeByScore(k, 0, 10)).toEqual(['n', 'm']);
        await store.zadd(k, Number.POSITIVE_INFINITY, 'inf');
        expect(await store.zscore(k, 'inf')).toBe(Number.POSITIVE_INFINITY);
        expect(await store.zrem(k, 'm')).toBe(1);
        expect(await store.zrem(k, 'm')).toBe(0);
        expect(await store.zcard(k)).toBe(2);
        await store.zrem(k, 'n');
        await store.zrem(k, 'inf');
        expect(await store.pttl(k)).toBe(-2);
      });

      it('zrangeByScore: inclusive bounds, ascending, with a limit', async () => {
        const k = key('z');
        for (let i = 1; i <= 6; i++) await store.zadd(k, i * 10, `m${i}`);
        expect(await store.zrangeByScore(k, 20, 40)).toEqual(['m2', 'm3', 'm4']);
        expect(await store.zrangeByScore(k, 20, 40, 2)).toEqual(['m2', 'm3']);
        expect(await store.zrangeByScore(k, 0, 100, 0)).toEqual([]);
        expect(await store.zrangeByScore(k, Number.NEGATIVE_INFINITY, 15)).toEqual(['m1']);
        expect(await store.zrangeByScore(k, 45, 49)).toEqual([]);
        expect(await store.zrangeByScore(k, 50, 20)).toEqual([]);
        expect(await store.zrangeByScore(key('z'), 0, 100)).toEqual([]);
      });

      it('zrangeByScoreWithScores: as zrangeByScore, each member with its score; ties by member', async () => {
        const k = key('zs');
        await store.zadd(k, 20, 'b');
        await store.zadd(k, 10, 'z');
        await store.zadd(k, 20, 'a');
        await store.zadd(k, 1.5, 'f');
        expect(await store.zrangeByScoreWithScores(k, 10, 20)).toEqual([
          { member: 'z', score: 10 },
          { member: 'a', score: 20 },
          { member: 'b', score: 20 },
        ]);
        expect(await store.zrangeByScoreWithScores(k, Number.NEGATIVE_INFINITY, 20, 2)).toEqual([
          { member: 'f', score: 1.5 },
          { member: 'z', score: 10 },
        ]);
        expect(await store.zrangeByScoreWithScores(key('zs-none'), 0, 100)).toEqual([]);
      });

      it('zrevrangeByLex: descending, exclusive bounds, limit (equal scores)', async () => {
        const k = key('lex');
        for (const member of ['c', 'a', 'e', 'b', 'd']) await store.zadd(k, 0, member);
        expect(await store.zrevrangeByLex(k, { limit: 10 })).toEqual(['e', 'd', 'c', 'b', 'a']);
        expect(await store.zrevrangeByLex(k, { below: 'd', limit: 2 })).toEqual(['c', 'b']);
        expect(await store.zrevrangeByLex(k, { above: 'b', limit: 10 })).toEqual(['e', 'd', 'c']);
        expect(await store.zrevrangeByLex(k, { below: 'e', above: 'a', limit: 10 })).toEqual(['d', 'c', 'b']);
        // Bounds need not be members.
        expect(await store.zrevrangeByLex(k, { below: 'cc', limit: 10 })).toEqual(['c', 'b', 'a']);
        expect(await store.zrevrangeByLex(k, { below: 'a', limit: 10 })).toEqual([]);
        expect(await store.zrevrangeByLex(k, { below: 'c', above: 'b', limit: 10 })).toEqual([]);
        expect(await store.zrevrangeByLex(k, { limit: 0 })).toEqual([]);
        expect(await store.zrevrangeByLex(key('lex'), { limit: 10 })).toEqual([]);
      });

      it('zrevrangeByLexBuffer: the same members as their UTF-8 bytes, bounds as text or bytes', async () => {
        const k = key('lexbuf');
        const members = [
          '2024-01-01T10:00|a',
          '2024-01-02T09:00|ж\u2028',
          '2024-01-03T00:00|\ud83d\ude00',
          '2024-01-03T00:00|\ue000',
        ];
        for (const member of members) await store.zadd(k, 0, member);
        const bytes = (list: string[]) => list.map((member) => Buffer.from(member, 'utf8'));
        expect(await store.zrevrangeByLexBuffer(k, { limit: 10 })).toEqual(
          bytes(await store.zrevrangeByLex(k, { limit: 10 })),
        );
        const top = (await store.zrevrangeByLexBuffer(k, { limit: 1 }))[0]!;
        expect(top).toEqual(Buffer.from('2024-01-03T00:00|\ud83d\ude00', 'utf8'));
        expect(await store.zrevrangeByLexBuffer(k, { below: top, limit: 10 })).toEqual(
          bytes(await store.zrevrangeByLex(k, { below: top.toString('utf8'), limit: 10 })),
        );
        expect(await store.zrevrangeByLexBuffer(k, { below: '2024-01-02T09:00|ж\u2028', limit: 1 })).toEqual(
          bytes(['2024-01-01T10:00|a']),
        );
        expect(await store.zrevrangeByLexBuffer(key('lexbuf-none'), { limit: 10 })).toEqual([]);
      });

      it('zrevrangeByLex pages through a timeline with a cursor, in byte order', async () => {
        const k = key('lex');
        // Timeline-like members: sortable time prefix + id; one with a multi-byte character.
        const members = [
          '2024-01-01T10:00|a',
          '2024-01-01T10:00|b',
          '2024-01-02T09:00|ж',
          '2024-01-03T00:00|c',
        ];
        for (const member of members) await store.zadd(k, 0, member);
        const seen: string[] = [];
        let below: string | undefined;
        for (;;) {
          const page = await store.zrevrangeByLex(
            k,
            below === undefined ? { limit: 3 } : { below, limit: 3 },
          );
          seen.push(...page);
          if (page.length < 3) break;
          below = page.at(-1);
        }
        expect(seen).toEqual([...members].reverse());
      });
    });

    describe('lists', () => {
      it('rpush appends and counts; lrange takes negative indexes like LRANGE', async () => {
        const k = key('list');
        expect(await store.lrange(k, 0, -1)).toEqual([]);
        expect(await store.rpush(k, 'a', 'b')).toBe(2);
        expect(await store.rpush(k, 'c', 'd', 'e')).toBe(5);
        expect(await store.rpush(k)).toBe(5);
        expect(await store.llen(k)).toBe(5);
        expect(await store.lrange(k, 0, -1)).toEqual(['a', 'b', 'c', 'd', 'e']);
        expect(await store.lrange(k, -2, -1)).toEqual(['d', 'e']);
        expect(await store.lrange(k, 1, 2)).toEqual(['b', 'c']);
        expect(await store.lrange(k, -100, 1)).toEqual(['a', 'b']);
        expect(await store.lrange(k, 3, 100)).toEqual(['d', 'e']);
        expect(await store.lrange(k, 3, 1)).toEqual([]);
        expect(await store.lrange(k, 5, 10)).toEqual([]);
        expect(await store.lrange(k, -1, -2)).toEqual([]);
      });

      it('ltrim keeps start..stop like LTRIM; an empty result removes the key', async () => {
        const k = key('list');
        await store.rpush(k, '1', '2', '3', '4', '5', '6');
        await store.batch().ltrim(k, 0, -1).exec();
        expect(await store.llen(k)).toBe(6);
        await store.batch().ltrim(k, -4, -1).exec();
        expect(await store.lrange(k, 0, -1)).toEqual(['3', '4', '5', '6']);
        await store.batch().ltrim(k, 1, 100).exec();
        expect(await store.lrange(k, 0, -1)).toEqual(['4', '5', '6']);
        await store.batch().ltrim(k, 5, 10).exec();
        expect(await store.llen(k)).toBe(0);
        expect(await store.pttl(k)).toBe(-2);
      });

      it('Buffers are stored as their bytes: lrangeBuffer gives them back exactly, lrange as UTF-8', async () => {
        const k = key('list');
        // Not valid UTF-8 (a lone continuation byte, 0xff): a text round trip would change it.
        const bytes = Buffer.from([0x7b, 0x22, 0xd0, 0x9e, 0x80, 0xff, 0x0a, 0x00, 0x7d]);
        const text = 'Очередь 😀';
        expect(await store.rpush(k, bytes, text)).toBe(2);
        bytes.fill(0); // the store keeps what was pushed, not the caller's memory
        const [first, second] = await store.lrangeBuffer(k, 0, -1);
        expect(first!.equals(Buffer.from([0x7b, 0x22, 0xd0, 0x9e, 0x80, 0xff, 0x0a, 0x00, 0x7d]))).toBe(true);
        expect(second!.toString('utf8')).toBe(text);
        expect(await store.lrange(k, 1, 1)).toEqual([text]);
        expect((await store.lrange(k, 0, 0))[0]).toBe(first!.toString('utf8'));
        expect(await store.lrangeBuffer(key('list'), 0, -1)).toEqual([]);
        // expectListHead compares bytes, whichever way the elements were pushed or read
        const read = await store.lrangeBuffer(k, 0, -1);
        const changed = Buffer.from(read[0]!);
        changed[5] = 0xfe;
        expect(await store.batch().expectListHead(k, [changed]).ltrim(k, 1, -1).exec()).toBe(false);
        expect(await store.batch().expectListHead(k, [read[0]!, text]).ltrim(k, 1, -1).exec()).toBe(true);
        expect(await store.lrange(k, 0, -1)).toEqual([text]);
      });

      it('a batch pushes Buffers as their bytes too, with or without expectations', async () => {
        const [plain, guarded] = [key('list'), key('list')];
        const bytes = Buffer.from([0x7b, 0x80, 0xff, 0x00, 0x7d]);
        const long = Buffer.alloc(3000, 0xfe); // beyond the hot scripts' short-argument framing
        await store.batch().rpush(plain, bytes, 'text', long).exec();
        expect(await store.batch().expect(key('list'), null).rpush(guarded, bytes, 'text', long).exec()).toBe(
          true,
        );
        bytes.fill(0);
        for (const list of [plain, guarded]) {
          const [first, second, third] = await store.lrangeBuffer(list, 0, -1);
          expect(first!.equals(Buffer.from([0x7b, 0x80, 0xff, 0x00, 0x7d]))).toBe(true);
          expect(second!.toString('utf8')).toBe('text');
          expect(third!.equals(Buffer.alloc(3000, 0xfe))).toBe(true);
        }
      });

      it('a plain batch takes a write with tens of thousands of values (more than a Lua unpack takes)', async () => {
        const [list, set] = [key('list'), key('set')];
        const values = Array.from({ length: 20_000 }, (_, i) => `v${i}`);
        await store
          .batch()
          .rpush(list, ...values)
          .sadd(set, ...values)
          .set(key('s'), 'x')
          .exec();
        expect(await store.llen(list)).toBe(20_000);
        expect(await store.lrange(list, 19_998, -1)).toEqual(['v19998', 'v19999']);
        expect((await store.smembers(set)).length).toBe(20_000);
      });

      it('a capped list: rpush + ltrim in one batch', async () => {
        const k = key('list');
        for (let i = 1; i <= 5; i++) await store.batch().rpush(k, String(i)).ltrim(k, -3, -1).exec();
        expect(await store.lrange(k, 0, -1)).toEqual(['3', '4', '5']);
      });
    });

    describe('readGroups', () => {
      /** A group layout of its own for each test: `<base>:root:<id>`, `<base>:members:<id>`, `<base>:rec:<id>`. */
      const layoutFor = (base: string) => ({
        root: `${base}:root:`,
        members: `${base}:members:`,
        record: `${base}:rec:`,
      });

      it('reads the keys, the roots of the records they name, the roots’ members and the group records', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        const [dedupe, byEmail, byPhone, missing, wrongType] = [
          `${base}:dedupe`,
          `${base}:idx:email`,
          `${base}:idx:phone`,
          `${base}:idx:none`,
          `${base}:idx:set`,
        ];
        // Group r1 = {r1, m1, m2}; m1 points at r1. Group r2 = {r2} (no members). m2's record is gone.
        await store
          .batch()
          .set(byEmail, 'm1')
          .set(byPhone, 'r2')
          .set(`${layout.root}m1`, 'r1')
          .set(`${layout.root}m2`, 'r1')
          .sadd(`${layout.members}r1`, 'm1', 'm2')
          .set(`${layout.record}r1`, 'R1')
          .set(`${layout.record}m1`, 'M1')
          .set(`${layout.record}r2`, 'R2')
          .sadd(wrongType, 'x')
          .exec();
        const read = await store.readGroups({
          keys: [dedupe, byEmail, byPhone, missing, wrongType],
          layout,
          maxRecords: 10,
        });
        expect(read.claimed).toBe(true);
        expect(read.values).toEqual([null, 'm1', 'r2', null, null]);
        expect([...read.roots]).toEqual([
          ['m1', 'r1'],
          ['r2', 'r2'],
        ]);
        expect([...read.members.keys()]).toEqual(['r1', 'r2']);
        expect(read.members.get('r1')?.sort()).toEqual(['m1', 'm2']);
        expect(read.members.get('r2')).toEqual([]);
        expect(Object.fromEntries(read.records)).toEqual({ r1: 'R1', m1: 'M1', m2: null, r2: 'R2' });
        expect([...read.records.keys()][0]).toBe('r1'); // a root before its members
        expect(read.complete).toBe(true);
      });

      it('a value named twice is one holder; no keys, no holders: nothing else is read', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        await store
          .batch()
          .set(`${base}:a`, 'r1')
          .set(`${base}:b`, 'r1')
          .set(`${layout.record}r1`, 'R1')
          .exec();
        const read = await store.readGroups({ keys: [`${base}:a`, `${base}:b`], layout, maxRecords: 10 });
        expect([...read.roots]).toEqual([['r1', 'r1']]);
        expect(Object.fromEntries(read.records)).toEqual({ r1: 'R1' });
        const none = await store.readGroups({ keys: [`${base}:c`], layout, maxRecords: 10 });
        expect(none.values).toEqual([null]);
        expect(none.roots.size + none.members.size + none.records.size).toBe(0);
        expect(none.complete).toBe(true);
        const empty = await store.readGroups({ keys: [], layout, maxRecords: 10 });
        expect(empty.values).toEqual([]);
      });

      it('reads at most maxRecords records and says when a group was left incomplete', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        const members = ['m1', 'm2', 'm3', 'm4'];
        const batch = store
          .batch()
          .set(`${base}:idx`, 'r1')
          .sadd(`${layout.members}r1`, ...members);
        for (const id of ['r1', ...members]) batch.set(`${layout.record}${id}`, id.toUpperCase());
        await batch.exec();
        const partial = await store.readGroups({ keys: [`${base}:idx`], layout, maxRecords: 3 });
        expect(partial.complete).toBe(false);
        expect(partial.records.size).toBe(3);
        expect(partial.records.get('r1')).toBe('R1');
        expect(partial.members.get('r1')?.sort()).toEqual(members);
        const whole = await store.readGroups({ keys: [`${base}:idx`], layout, maxRecords: 5 });
        expect(whole.complete).toBe(true);
        expect(whole.records.size).toBe(5);
      });

      it('reads thousands of keys in order (past the first thousand too), a key of another type as null', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        const keys = Array.from({ length: 2500 }, (_, index) => `${base}:k${index}`);
        await store
          .batch()
          .set(keys[5]!, 'r1')
          .set(keys[1999]!, 'r2')
          .sadd(keys[2001]!, 'x')
          .set(keys[2499]!, 'r1')
          .set(`${layout.record}r1`, 'R1')
          .set(`${layout.record}r2`, 'R2')
          .exec();
        const read = await store.readGroups({ keys, layout, maxRecords: 10 });
        const expected: (string | null)[] = keys.map(() => null);
        expected[5] = 'r1';
        expected[1999] = 'r2';
        expected[2499] = 'r1';
        expect(read.values).toEqual(expected);
        expect([...read.roots]).toEqual([
          ['r1', 'r1'],
          ['r2', 'r2'],
        ]);
        expect(Object.fromEntries(read.records)).toEqual({ r1: 'R1', r2: 'R2' });
      });

      it('a miss with a decoy reads the decoy group as a hit would (and a hit never reads it)', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        await store.batch().set(`${base}:hit`, 'r1').set(`${layout.record}r1`, 'R1').exec();
        const miss = await store.readGroups({
          keys: [`${base}:miss`],
          layout,
          maxRecords: 10,
          decoy: 'decoy',
        });
        expect([...miss.roots]).toEqual([['decoy', 'decoy']]);
        expect([...miss.members]).toEqual([['decoy', []]]);
        expect([...miss.records]).toEqual([['decoy', null]]);
        const hit = await store.readGroups({ keys: [`${base}:hit`], layout, maxRecords: 10, decoy: 'decoy' });
        expect([...hit.roots]).toEqual([['r1', 'r1']]);
        expect([...hit.records]).toEqual([['r1', 'R1']]);
      });

      it('ids: records named directly are holders after the keys’ values, each once, groups read alike', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        // Group r1 = {r1, m1}; r2 alone; gone has no record; the decoy is not read when ids name records.
        await store
          .batch()
          .set(`${base}:idx`, 'r2')
          .set(`${layout.root}m1`, 'r1')
          .sadd(`${layout.members}r1`, 'm1')
          .set(`${layout.record}r1`, 'R1')
          .set(`${layout.record}m1`, 'M1')
          .set(`${layout.record}r2`, 'R2')
          .exec();
        const read = await store.readGroups({
          keys: [`${base}:idx`],
          ids: ['m1', 'r2', 'gone', 'r1', 'm1'],
          layout,
          maxRecords: 10,
          decoy: 'decoy',
        });
        expect(read.values).toEqual(['r2']);
        expect([...read.roots]).toEqual([
          ['r2', 'r2'],
          ['m1', 'r1'],
          ['gone', 'gone'],
          ['r1', 'r1'],
        ]);
        expect([...read.members]).toEqual([
          ['r2', []],
          ['r1', ['m1']],
          ['gone', []],
        ]);
        expect([...read.records]).toEqual([
          ['r2', 'R2'],
          ['r1', 'R1'],
          ['m1', 'M1'],
          ['gone', null],
        ]);
        expect(read.complete).toBe(true);
        // Ids alone, with a budget: the groups are read in the ids' order until it runs out.
        const partial = await store.readGroups({ keys: [], ids: ['r2', 'm1'], layout, maxRecords: 2 });
        expect([...partial.roots]).toEqual([
          ['r2', 'r2'],
          ['m1', 'r1'],
        ]);
        expect([...partial.records]).toEqual([
          ['r2', 'R2'],
          ['r1', 'R1'],
        ]);
        expect(partial.complete).toBe(false);
      });

      it('with a claim: the first caller claims (with a ttl) and reads, a later one reads nothing', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        const claim = { key: `${base}:jti`, ttlMs: 60_000 };
        await store.batch().set(`${base}:idx`, 'r1').set(`${layout.record}r1`, 'R1').exec();
        const first = await store.readGroups({ keys: [`${base}:idx`], layout, maxRecords: 10, claim });
        expect(first.claimed).toBe(true);
        expect(first.values).toEqual(['r1']);
        expect(first.records.get('r1')).toBe('R1');
        expect(await store.get(claim.key)).toBe('1');
        expect(await store.pttl(claim.key)).toBeGreaterThan(50_000);
        const again = await store.readGroups({ keys: [`${base}:idx`], layout, maxRecords: 10, claim });
        expect(again).toMatchObject({ claimed: false, values: [] });
        expect(again.records.size).toBe(0);
        // Concurrent claims of one key: exactly one wins.
        const racing = { key: `${base}:jti2`, ttlMs: 60_000 };
        const results = await Promise.all(
          [1, 2, 3].map(() => store.readGroups({ keys: [], layout, maxRecords: 10, claim: racing })),
        );
        expect(results.filter((result) => result.claimed)).toHaveLength(1);
      });

      it('with a claim onlyIf a hash field holds a value: claims and reads while it does, else says what it holds and spends nothing', async () => {
        const base = key('groups');
        const layout = layoutFor(base);
        const hash = `${base}:credentials`;
        const onlyIf = { hash, field: 'k1', value: 'record v1' };
        const claim = (jti: string) => ({ key: `${base}:${jti}`, ttlMs: 60_000, onlyIf });
        const read = (jti: string, options: { ids?: string[] } = {}) =>
          store.readGroups({ keys: [`${base}:idx`], layout, maxRecords: 10, claim: claim(jti), ...options });
        await store.batch().set(`${base}:idx`, 'r1').set(`${layout.record}r1`, 'R1').exec();

        // No such field: nothing claimed or read; `instead` is null.
        const missing = await read('jti-a');
        expect(missing).toMatchObject({ claimed: false, instead: null, values: [] });
        expect(missing.records.size).toBe(0);
        expect(await store.get(`${base}:jti-a`)).toBeNull();

        // The field holds the value: as a claim without the condition.
        await store.hset(hash, 'k1', 'record v1');
        const held = await read('jti-a', { ids: ['r1'] });
        expect(held.claimed).toBe(true);
        expect(held.instead).toBeUndefined();
        expect(held.values).toEqual(['r1']);
        expect(held.records.get('r1')).toBe('R1');
        expect(await store.get(`${base}:jti-a`)).toBe('1');
        // Claimed before, the condition holding: a replay (no `instead`).
        const replay = await read('jti-a');
        expect(replay).toMatchObject({ claimed: false, values: [] });
        expect(replay.instead).toBeUndefined();

        // The field changed (a credential revoked): what it holds now, and nothing spent.
        await store.hset(hash, 'k1', 'record v2 (revoked)');
        const changed = await read('jti-b');
        expect(changed).toMatchObject({ claimed: false, instead: 'record v2 (revoked)', values: [] });
        expect(changed.records.size).toBe(0);
        expect(await store.get(`${base}:jti-b`)).toBeNull();
        // Another field of the hash does not count.
        await store.hset(hash, 'k2', 'record v1');
        expect((await read('jti-b')).instead).toBe('record v2 (revoked)');
        // A replay whose condition no longer holds is told so first (nothing was spent anyway).
        expect((await read('jti-a')).instead).toBe('record v2 (revoked)');

        // Without keys (a claim alone, as a lookup of a search-only kind takes it).
        const alone = await store.readGroups({ keys: [], layout, maxRecords: 0, claim: claim('jti-c') });
        expect(alone).toMatchObject({ claimed: false, instead: 'record v2 (revoked)' });
        await store.hset(hash, 'k1', 'record v1');
        expect(
          (await store.readGroups({ keys: [], layout, maxRecords: 0, claim: claim('jti-c') })).claimed,
        ).toBe(true);
        expect(await store.get(`${base}:jti-c`)).toBe('1');
      });
    });

    describe('batch', () => {
      it('with expectations: writes everything only when every expected value holds', async () => {
        const [record, index, absent, set, list, ttl] = [
          key('guard'),
          key('guard'),
          key('guard'),
          key('guard'),
          key('guard'),
          key('guard'),
        ];
        await store.set(record, 'v1');
        const attempt = (expected: string) =>
          store
            .batch()
            .expect(record, expected)
            .expect(absent, null)
            .set(record, 'v2')
            .set(index, 'r', 60_000)
            .sadd(set, 'a', 'b')
            .zadd(`${set}z`, 0, 'm')
            .rpush(list, 'x', 'y')
            .ltrim(list, -1, -1)
            .set(ttl, 'short', 60_000)
            .exec();
        // A stale expectation: nothing is written.
        expect(await attempt('v0')).toBe(false);
        expect(await store.mget([record, index, ttl])).toEqual(['v1', null, null]);
        expect(await store.smembers(set)).toEqual([]);
        expect(await store.llen(list)).toBe(0);
        // The current value: everything is written, in one step.
        expect(await attempt('v1')).toBe(true);
        expect(await store.mget([record, index, ttl])).toEqual(['v2', 'r', 'short']);
        expect((await store.smembers(set)).sort()).toEqual(['a', 'b']);
        expect(await store.zcard(`${set}z`)).toBe(1);
        expect(await store.lrange(list, 0, -1)).toEqual(['y']);
        expect(await store.pttl(index)).toBeGreaterThan(0);
        // An expected-absent key that now exists fails the batch.
        await store.set(absent, 'here');
        expect(await store.batch().expect(absent, null).set(record, 'v3').exec()).toBe(false);
        expect(await store.get(record)).toBe('v2');
        expect(await store.batch().expect(absent, 'here').set(record, 'v3').exec()).toBe(true);
        expect(await store.get(record)).toBe('v3');
      });

      it('with expectations: long values (compared by digest on Redis) must match exactly', async () => {
        const k = key('guard');
        const long = `${'Запись '.repeat(40)}😀`;
        await store.set(k, long);
        expect(
          await store
            .batch()
            .expect(k, `${long.slice(0, -2)}x`)
            .set(k, 'no')
            .exec(),
        ).toBe(false);
        expect(await store.batch().expect(k, long.slice(0, -1)).set(k, 'no').exec()).toBe(false);
        expect(await store.get(k)).toBe(long);
        expect(await store.batch().expect(k, long).set(k, 'yes').exec()).toBe(true);
        expect(await store.get(k)).toBe('yes');
      });

      it('expectExists: writes only while the key exists, whatever its type', async () => {
        const [present, list, gone, target] = [key('exists'), key('exists'), key('exists'), key('exists')];
        await store.set(present, 'x');
        await store.rpush(list, 'a');
        expect(await store.batch().expectExists(present).expectExists(list).set(target, '1').exec()).toBe(
          true,
        );
        expect(await store.get(target)).toBe('1');
        expect(await store.batch().expectExists(present).expectExists(gone).set(target, '2').exec()).toBe(
          false,
        );
        expect(await store.get(target)).toBe('1');
      });

      it('expectListHead: trims only while the list still starts with what was read', async () => {
        const list = key('head');
        const long = `${'Очередь '.repeat(30)}😀`;
        await store.rpush(list, 'a', long, 'c', 'd');
        const read = await store.lrange(list, 0, 1);
        // Another element, more elements than the list has, another order, or bytes moved from
        // one element to the next: nothing is written.
        for (const wrong of [
          ['a', `${long}x`],
          ['a', long, 'c', 'd', 'e'],
          [long, 'a'],
          [`a${long.slice(0, 1)}`, long.slice(1)],
        ]) {
          expect(await store.batch().expectListHead(list, wrong).ltrim(list, 2, -1).exec()).toBe(false);
        }
        expect(await store.lrange(list, 0, -1)).toEqual(['a', long, 'c', 'd']);
        // A shorter head is a head too.
        expect(await store.batch().expectListHead(list, ['a']).exec()).toBe(true);
        expect(await store.batch().expectListHead(list, read).ltrim(list, read.length, -1).exec()).toBe(true);
        expect(await store.lrange(list, 0, -1)).toEqual(['c', 'd']);
        // The same read again (its elements are gone): nothing more is trimmed.
        expect(await store.batch().expectListHead(list, read).ltrim(list, read.length, -1).exec()).toBe(
          false,
        );
        expect(await store.lrange(list, 0, -1)).toEqual(['c', 'd']);
        // A missing list holds no head; an empty expectation always holds.
        expect(await store.batch().expectListHead(key('head'), ['a']).set(list, 'no').exec()).toBe(false);
        expect(await store.batch().expectListHead(key('head'), []).exec()).toBe(true);
      });

      it('expectListHead with identifying prefixes: compares the first bytes named, the whole element where none is', async () => {
        const list = key('head-ids');
        // Elements whose first bytes ("#1|") say which they are, and one without (the whole of it counts).
        const body = `${'Очередь '.repeat(30)}😀`;
        await store.rpush(list, `#1|${body}`, Buffer.from(`#2|${body}`, 'utf8'), 'plain', 'after');
        const read = await store.lrangeBuffer(list, 0, 2);
        const idOf = (value: string | Buffer) => (value.slice(0, 1).toString() === '#' ? 3 : 0);
        // Only the named bytes are compared: the same ids with other bodies hold.
        expect(
          await store
            .batch()
            .expectListHead(list, ['#1|other', Buffer.from('#2|x'), 'plain'], idOf)
            .exec(),
        ).toBe(true);
        // Another id, or another element without one, or more than the list holds: nothing is written.
        for (const wrong of [
          ['#1|', '#3|', 'plain'],
          ['#1|', '#2|', 'plain!'],
          ['#1|', '#2|', 'plai'],
          ['#1|', '#2|', 'plain', 'after', '#5|'],
        ]) {
          expect(await store.batch().expectListHead(list, wrong, idOf).ltrim(list, 3, -1).exec()).toBe(false);
        }
        expect(await store.llen(list)).toBe(4);
        // An element shorter than the prefix named for it: nothing is written.
        const plainer = (value: string | Buffer) => (value.toString() === 'plainer' ? 7 : idOf(value));
        expect(await store.batch().expectListHead(list, ['#1|', '#2|', 'plainer'], plainer).exec()).toBe(
          false,
        );
        expect(await store.batch().expectListHead(list, read, idOf).ltrim(list, read.length, -1).exec()).toBe(
          true,
        );
        expect(await store.lrange(list, 0, -1)).toEqual(['after']);
      });

      it('with expectations: of two writers that read the same value, exactly one commits', async () => {
        const k = key('guard');
        await store.set(k, '0');
        const results = await Promise.all(
          ['a', 'b', 'c'].map((writer) => store.batch().expect(k, '0').set(k, writer).exec()),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(['a', 'b', 'c']).toContain(await store.get(k));
      });

      it('applies every queued operation, and counts them', async () => {
        const [s, gone, counter, hash] = [key('batch'), key('batch'), key('batch'), key('batch')];
        const [set, zset, list, ttl] = [key('batch'), key('batch'), key('batch'), key('batch')];
        await store.set(gone, 'x');
        await store.hset(hash, 'old', 'x');
        await store.sadd(set, 'old');
        await store.zadd(zset, 1, 'old');
        const batch = store
          .batch()
          .set(s, 'v')
          .set(ttl, 'v', 10_000)
          .del(gone)
          .incrBy(counter, 5)
          .incrBy(counter, -2)
          .hset(hash, 'f', '1')
          .hdel(hash, 'old')
          .sadd(set, 'a', 'b')
          .srem(set, 'old')
          .zadd(zset, 2, 'new')
          .zrem(zset, 'old')
          .rpush(list, 'x', 'y');
        expect(batch.length).toBe(12);
        expect(await store.get(s)).toBeNull();
        await batch.exec();
        expect(await store.mget([s, gone, counter])).toEqual(['v', null, '3']);
        expect(await store.pttl(ttl)).toBeGreaterThan(9_000);
        expect(await store.hgetall(hash)).toEqual({ f: '1' });
        expect((await store.smembers(set)).sort()).toEqual(['a', 'b']);
        expect(await store.zrangeByScore(zset, 0, 10)).toEqual(['new']);
        expect(await store.lrange(list, 0, -1)).toEqual(['x', 'y']);
      });

      it('a read issued right after exec() (not awaited) is answered with the batch applied', async () => {
        // The engine's lanes start the next observation's read as soon as a write is handed over
        // (contacts/engine.ts, inLane); it must see that write, guarded or plain.
        const base = key('order');
        const layout = { root: `${base}:root:`, members: `${base}:members:`, record: `${base}:rec:` };
        for (let round = 0; round < 20; round++) {
          const index = `${base}:idx`;
          const guarded = store
            .batch()
            .expect(index, round === 0 ? null : String(round - 1))
            .set(index, String(round))
            .set(`${layout.record}${round}`, `record ${round}`)
            .exec();
          const read = store.readGroups({ keys: [index], layout, maxRecords: 10 });
          const plain = store.batch().set(`${base}:plain`, String(round)).exec();
          const after = store.get(`${base}:plain`);
          expect(await guarded).toBe(true);
          const groups = await read;
          expect(groups.values).toEqual([String(round)]);
          expect(groups.records.get(String(round))).toBe(`record ${round}`);
          await plain;
          expect(await after).toBe(String(round));
        }
      });

      it('an empty batch resolves', async () => {
        const batch = store.batch();
        expect(batch.length).toBe(0);
        await batch.exec();
      });

      it('counts in a data property: no accessor of its own on a batch', async () => {
        // A getter defined on each batch object made V8 keep every batch, and the record texts
        // it carries, through young-generation collections (StoreBatch.length; bench/getter.js).
        const batch = store.batch().set(key('count'), 'v').sadd(key('count'));
        expect(Object.getOwnPropertyDescriptor(batch, 'length')?.get).toBeUndefined();
        expect(batch.length).toBe(1);
        await batch.exec();
      });

      it('readers never see half a batch', async () => {
        const [a, b] = [key('atomic'), key('atomic')];
        const writes = Array.from({ length: 30 }, (_, i) =>
          store.batch().set(a, String(i)).set(b, String(i)).exec(),
        );
        const reads = Array.from({ length: 30 }, () => store.mget([a, b]));
        await Promise.all(writes);
        for (const [x, y] of await Promise.all(reads)) expect(x).toBe(y);
      });

      it('like Redis EXEC, a command failing at run time (WRONGTYPE) is reported but does not undo the others', async () => {
        // Documented behaviour, not a wish: Redis has no rollback. Callers must queue only
        // commands that cannot fail on type (our keys have one type each by construction).
        const [before, str, after] = [key('wrong'), key('wrong'), key('wrong')];
        await store.set(str, 'a string');
        const error = await store
          .batch()
          .set(before, '1')
          .hset(str, 'f', 'v')
          .rpush(after, 'x')
          .exec()
          .catch((e: unknown) => e);
        expect((error as Error).message).toMatch(/^WRONGTYPE/);
        expect(error).not.toBeInstanceOf(StoreUnavailableError);
        expect(await store.get(before)).toBe('1');
        expect(await store.get(str)).toBe('a string');
        expect(await store.lrange(after, 0, -1)).toEqual(['x']);
      });

      it('with expectations too, a command failing at run time (WRONGTYPE) is reported but does not undo the others', async () => {
        // The guarded form (a Lua script on Redis) must keep the same promise as the plain one.
        const [guard, before, str, after] = [key('wrong'), key('wrong'), key('wrong'), key('wrong')];
        await store.set(str, 'a string');
        const error = await store
          .batch()
          .expect(guard, null)
          .set(before, '1')
          .hset(str, 'f', 'v')
          .rpush(after, 'x')
          .exec()
          .catch((e: unknown) => e);
        expect(error).toBeInstanceOf(Error);
        expect((error as Error).message).toMatch(/^WRONGTYPE/);
        expect(error).not.toBeInstanceOf(StoreUnavailableError);
        expect(await store.get(before)).toBe('1');
        expect(await store.get(str)).toBe('a string');
        expect(await store.lrange(after, 0, -1)).toEqual(['x']);
      });

      it('checks thousands of expectations in one batch: each absent and each value, past the first thousand too', async () => {
        // Redis checks the keys expected absent with EXISTS and the others with MGET, at most a
        // thousand keys per command: a key that breaks its expectation in a later thousand counts.
        const absent = Array.from({ length: 1500 }, () => key('many'));
        const held = Array.from({ length: 1500 }, () => key('many'));
        const long = 'ж'.repeat(80); // compared by digest on Redis
        const heldValue = (index: number) => (index % 2 === 0 ? `v${index}` : `${long}${index}`);
        const setup = store.batch();
        for (const [index, k] of held.entries()) setup.set(k, heldValue(index));
        expect(await setup.exec()).toBe(true);
        const target = key('many');
        const attempt = (change?: (index: number) => string) => {
          const batch = store.batch();
          for (const k of absent) batch.expect(k, null);
          for (const [index, k] of held.entries()) batch.expect(k, change ? change(index) : heldValue(index));
          return batch.set(target, 'written').exec();
        };
        // One value off, late in the list (a short one and a long one): nothing is written.
        expect(await attempt((index) => (index === 1498 ? 'other' : heldValue(index)))).toBe(false);
        expect(await attempt((index) => (index === 1499 ? `${long}x` : heldValue(index)))).toBe(false);
        // One key expected absent exists, late in the list (as another type too): nothing is written.
        await store.set(absent[1400]!, 'here');
        expect(await attempt()).toBe(false);
        await store.del(absent[1400]!);
        await store.sadd(absent[1450]!, 'x');
        expect(await attempt()).toBe(false);
        expect(await store.get(target)).toBeNull();
        await store.del(absent[1450]!);
        expect(await attempt()).toBe(true);
        expect(await store.get(target)).toBe('written');
      });

      it('expect() on a key of another type does not hold (whatever value is expected), and writes nothing', async () => {
        const [hash, target] = [key('guard'), key('guard')];
        await store.hset(hash, 'f', 'v');
        const long = 'x'.repeat(100); // compared by digest on Redis
        for (const value of [null, 'v', long]) {
          expect(await store.batch().expect(hash, value).set(target, 'written').exec()).toBe(false);
        }
        expect(await store.get(target)).toBeNull();
        expect(await store.hgetall(hash)).toEqual({ f: 'v' });
      });
    });

    describe('locks', () => {
      it('two lockers on overlapping key sets are never inside at once; the second gets it after release', async () => {
        const [a, b, c] = [key('lk'), key('lk'), key('lk')];
        const order: string[] = [];
        const critical = async (who: string, keys: string[]) => {
          const lock = await store.lock(keys, { ttlMs: 5000, waitMs: 3000 });
          order.push(`${who} in`);
          await sleep(40);
          order.push(`${who} out`);
          await lock.release();
        };
        await Promise.all([critical('one', [a, b]), critical('two', [c, b])]);
        // Whoever won, the other entered only after the winner left.
        const first = order[0]?.startsWith('one') ? 'one' : 'two';
        const second = first === 'one' ? 'two' : 'one';
        expect(order).toEqual([`${first} in`, `${first} out`, `${second} in`, `${second} out`]);
      });

      it('many lockers on a mesh of overlapping key sets: no key ever has two holders', async () => {
        const keys = [key('lk'), key('lk'), key('lk'), key('lk')];
        const holders = new Map<string, number>();
        let violations = 0;
        let entered = 0;
        const critical = async (wanted: string[]) => {
          const lock = await store.lock(wanted, { ttlMs: 5000, waitMs: 3000 });
          for (const k of wanted) {
            const count = (holders.get(k) ?? 0) + 1;
            if (count > 1) violations++;
            holders.set(k, count);
          }
          entered++;
          await sleep(10);
          for (const k of wanted) holders.set(k, (holders.get(k) ?? 1) - 1);
          await lock.release();
        };
        const sets = keys.flatMap((k, i) => [
          [k, keys[(i + 1) % keys.length]!],
          [keys[(i + 2) % keys.length]!, k],
        ]);
        await Promise.all(sets.map(critical));
        expect(violations).toBe(0);
        expect(entered).toBe(sets.length);
      });

      it('lockers on disjoint key sets do not wait for each other', async () => {
        const first = await store.lock([key('lk'), key('lk')], { ttlMs: 5000, waitMs: 0 });
        const second = await store.lock([key('lk')], { ttlMs: 5000, waitMs: 0 });
        expect(first.keys).toHaveLength(2);
        await Promise.all([first.release(), second.release()]);
      });

      it('a waiter gets the lock soon after it is released', async () => {
        const k = key('lk');
        // Held for longer than the waiter waits: the waiter can only get it through the release.
        const held = await store.lock([k], { ttlMs: 20_000, waitMs: 0 });
        let settled = false;
        const waiting = store.lock([k], { ttlMs: 5000, waitMs: 10_000 }).finally(() => {
          settled = true;
        });
        await sleep(50);
        expect(settled, 'the waiter got a lock that was still held').toBe(false);
        await held.release();
        const next = await waiting;
        expect(next.keys).toHaveLength(1);
        await next.release();
      });

      it('gives up with StoreBusyError after waitMs', async () => {
        const k = key('lk');
        const held = await store.lock([k], { ttlMs: 5000, waitMs: 0 });
        const error = await store.lock([k], { ttlMs: 5000, waitMs: 80 }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(StoreBusyError);
        expect((error as StoreBusyError).message).toContain(k);
        await held.release();
      });

      it('takes all keys or none: a failed attempt leaves the free keys free', async () => {
        const [free, taken] = [key('lk'), key('lk')];
        const held = await store.lock([taken], { ttlMs: 5000, waitMs: 0 });
        await expect(store.lock([free, taken], { ttlMs: 5000, waitMs: 30 })).rejects.toBeInstanceOf(
          StoreBusyError,
        );
        const other = await store.lock([free], { ttlMs: 5000, waitMs: 0 });
        await Promise.all([held.release(), other.release()]);
      });

      it('an expired lock lets a new holder in, and the stale holder cannot release it', async () => {
        const [a, b] = [key('lk'), key('lk')];
        const stale = await store.lock([a, b], { ttlMs: 1000, waitMs: 0 });
        // Still held: a second holder gets in only once the first one's time is up.
        await expect(store.lock([b], { ttlMs: 5000, waitMs: 0 })).rejects.toBeInstanceOf(StoreBusyError);
        const fresh = await store.lock([b, a], { ttlMs: 5000, waitMs: 5000 });
        await stale.release();
        await expect(store.lock([a], { ttlMs: 5000, waitMs: 30 })).rejects.toBeInstanceOf(StoreBusyError);
        await fresh.release();
        const third: Lock = await store.lock([a], { ttlMs: 5000, waitMs: 0 });
        await third.release();
        // Releasing twice is harmless.
        await third.release();
      });

      it('renew extends a lock only while we hold it: never one another holder took after ours expired', async () => {
        const [a, b] = [key('lk'), key('lk')];
        const ttl = (k: string) => store.pttl(LOCK_KEY_PREFIX + k);
        // The holder renews: every key gets the new ttl (or the one it was taken with).
        const held = await store.lock([a, b], { ttlMs: 5000, waitMs: 0 });
        expect(await held.renew(60_000)).toBe(true);
        expect(await ttl(a)).toBeGreaterThan(50_000);
        expect(await ttl(b)).toBeGreaterThan(50_000);
        expect(await held.renew()).toBe(true);
        expect(await ttl(a)).toBeLessThanOrEqual(5000);
        await held.release();
        // Released: a renew brings nothing back.
        expect(await held.renew(60_000)).toBe(false);
        expect(await ttl(a)).toBe(-2);

        // Ours expires (a long pause), another instance takes one of its keys; our late renew
        // must leave that lock as it is (and not resurrect the key nobody holds).
        const stale = await store.lock([a, b], { ttlMs: 80, waitMs: 0 });
        const other = await store.lock([b], { ttlMs: 5000, waitMs: 2000 });
        expect(await stale.renew(60_000)).toBe(false);
        expect(await ttl(b)).toBeLessThanOrEqual(5000);
        expect(await ttl(a)).toBe(-2);
        await expect(store.lock([b], { ttlMs: 5000, waitMs: 0 })).rejects.toBeInstanceOf(StoreBusyError);
        expect(await other.renew(60_000)).toBe(true);
        expect(await ttl(b)).toBeGreaterThan(50_000);
        await other.release();
      });

      it('renew refuses a non-positive or fractional ttl', async () => {
        const lock = await store.lock([key('lk')], { ttlMs: 5000, waitMs: 0 });
        await expect(lock.renew(0)).rejects.toThrow(/invalid expire time/);
        await expect(lock.renew(1.5)).rejects.toThrow();
        expect(await lock.renew()).toBe(true);
        await lock.release();
      });

      it('repeated keys count once', async () => {
        const k = key('lk');
        const lock = await store.lock([k, k], { ttlMs: 5000, waitMs: 0 });
        await lock.release();
        const again = await store.lock([k], { ttlMs: 5000, waitMs: 0 });
        await again.release();
      });
    });

    describe('lifecycle', () => {
      it('ping resolves; after close every call rejects with StoreUnavailableError', async () => {
        const other = await subject.another();
        await other.ping();
        await other.close();
        await expect(other.ping()).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(other.get('x')).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(other.batch().set('x', 'y').exec()).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(other.lock(['x'], { ttlMs: 1000, waitMs: 0 })).rejects.toBeInstanceOf(
          StoreUnavailableError,
        );
        await other.close();
      });
    });
  });
}

describeStoreConformance('memory', async () => {
  const store = createMemoryStore();
  return { store, another: async () => createMemoryStore(), cleanup: () => store.close() };
});

describe('redis', () => {
  let url: string;
  const prefix = uniquePrefix('conformance');

  beforeAll(async () => {
    url = await getTestRedisUrl();
  });

  describeStoreConformance('redis', async () => {
    const open = () => createRedisStore({ url, keyPrefix: prefix, logger: silent });
    const store = await open();
    return {
      store,
      another: open,
      cleanup: async () => {
        await store.close();
        await cleanupPrefix(url, prefix);
      },
    };
  });

  describe('key prefix', () => {
    const own = uniquePrefix('prefix');
    let raw: Redis;

    beforeAll(async () => {
      raw = new Redis(url, { lazyConnect: true });
      await raw.connect();
    });
    afterAll(async () => {
      raw.disconnect();
      await cleanupPrefix(url, own);
    });

    it('every key, lock keys included, lives under `<keyPrefix>:`', async () => {
      const store = await createRedisStore({ url, keyPrefix: own, logger: silent });
      try {
        await store.set('plain', 'v');
        await store.batch().hset('hash', 'f', 'v').zadd('zset', 0, 'm').exec();
        const lock = await store.lock(['job'], { ttlMs: 5000, waitMs: 0 });
        // readGroups computes the group keys inside Lua: they must carry the prefix too.
        await raw.set(`${own}:root:v`, 'r');
        await raw.set(`${own}:rec:r`, 'R');
        const read = await store.readGroups({
          keys: ['plain'],
          layout: { root: 'root:', members: 'members:', record: 'rec:' },
          maxRecords: 2,
          claim: { key: 'claim', ttlMs: 60_000 },
        });
        expect([...read.roots]).toEqual([['v', 'r']]);
        expect([...read.records]).toEqual([['r', 'R']]);
        await raw.del(`${own}:root:v`, `${own}:rec:r`);
        expect((await raw.keys(`${own}:*`)).sort()).toEqual(
          [`${own}:claim`, `${own}:hash`, `${own}:lock:job`, `${own}:plain`, `${own}:zset`].sort(),
        );
        expect(await raw.get(`${own}:plain`)).toBe('v');
        expect(await raw.exists('plain')).toBe(0);
        expect(await raw.pttl(`${own}:lock:job`)).toBeGreaterThan(4000);
        await lock.release();
        expect(await raw.exists(`${own}:lock:job`)).toBe(0);
      } finally {
        await store.close();
      }
    });
  });
});

describe('memory store clock', () => {
  it('expires keys and locks on the injected clock', async () => {
    let now = 1_000_000;
    const store = createMemoryStore({ now: () => now });
    try {
      await store.set('k', 'v', { ttlMs: 1000 });
      const lock = await store.lock(['job'], { ttlMs: 1000, waitMs: 0 });
      expect(await store.pttl('k')).toBe(1000);
      now += 999;
      expect(await store.get('k')).toBe('v');
      await expect(store.lock(['job'], { ttlMs: 1000, waitMs: 0 })).rejects.toBeInstanceOf(StoreBusyError);
      now += 2;
      expect(await store.get('k')).toBeNull();
      const next = await store.lock(['job'], { ttlMs: 1000, waitMs: 0 });
      await lock.release();
      await expect(store.lock(['job'], { ttlMs: 1000, waitMs: 0 })).rejects.toBeInstanceOf(StoreBusyError);
      await next.release();
    } finally {
      await store.close();
    }
  });
});
