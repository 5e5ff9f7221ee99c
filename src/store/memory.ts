import { randomUUID } from 'node:crypto';
import { StoreBusyError, StoreUnavailableError } from '../errors.js';
import type {
  CountingBatch,
  GroupRead,
  GroupReadResult,
  LexRangeBufferOptions,
  LexRangeOptions,
  Lock,
  LockOptions,
  SetOptions,
  SinterScanOptions,
  Store,
  StoreBatch,
} from './types.js';

/**
 * The in-memory store: the embedded default when no Redis is configured, and the fast store for
 * tests. It emulates what Redis does for each method, errors included (WRONGTYPE, integer
 * parsing, empty collections disappearing, MULTI applying the other commands when one fails),
 * because code that passes on it must behave the same in production. The conformance suite in
 * test/store.conformance.test.ts runs the same assertions against both implementations.
 */
export interface MemoryStoreOptions {
  /** Clock used for key expiry (TTLs, lock expiry). Lock *waiting* always uses real time. */
  now?: () => number;
}

type Value =
  | { type: 'string'; value: string }
  | { type: 'hash'; value: Map<string, string> }
  | { type: 'set'; value: Set<string> }
  | { type: 'zset'; value: Map<string, number> }
  | { type: 'list'; value: ListItem[] };
interface ValueTypes {
  string: string;
  hash: Map<string, string>;
  set: Set<string>;
  zset: Map<string, number>;
  list: ListItem[];
}
/** A list element: text, or bytes pushed as a Buffer (kept as bytes, as Redis keeps everything). */
type ListItem = string | Buffer;
const itemText = (item: ListItem): string => (typeof item === 'string' ? item : item.toString('utf8'));
const itemBytes = (item: ListItem): Buffer =>
  typeof item === 'string' ? Buffer.from(item, 'utf8') : Buffer.from(item);
const sameItem = (a: ListItem, b: ListItem): boolean =>
  typeof a === 'string' && typeof b === 'string' ? a === b : itemBytes(a).equals(itemBytes(b));
type ValueType = keyof ValueTypes;
type ValueOf<T extends ValueType> = ValueTypes[T];

interface Entry {
  data: Value;
  /** Absolute expiry on the `now` clock, or null for a persistent key. */
  expiresAt: number | null;
}

/** Store.sinterScan's arguments, refused alike by both stores (a cursor is only ever one it returned). */
export function checkSinterScan(cursor: string, count: number, scan: number): void {
  if (!(cursor === '0' || /^\d+:/.test(cursor)))
    throw new Error(`ERR invalid cursor ${JSON.stringify(cursor)}`);
  if (!(Number.isSafeInteger(count) && count >= 1 && count <= 1000))
    throw new Error('ERR sinterScan count must be 1 to 1000');
  if (!(Number.isSafeInteger(scan) && scan >= count))
    throw new Error('ERR sinterScan scan must be at least count');
}

/** Store.scanKeys's count, refused alike by both stores. */
export function checkScanKeys(count: number): void {
  if (!(Number.isSafeInteger(count) && count >= 1 && count <= 1000))
    throw new Error('ERR scanKeys count must be 1 to 1000');
}

/** Store.hscanFields's count, refused alike by both stores. */
export function checkHscanFields(count: number): void {
  if (!(Number.isSafeInteger(count) && count >= 1 && count <= 1000))
    throw new Error('ERR hscanFields count must be 1 to 1000');
}

/** Store.countInWindow's window, refused alike by both stores. */
export function checkWindow(windowMs: number): void {
  if (!(Number.isSafeInteger(windowMs) && windowMs > 0))
    throw new Error('ERR countInWindow windowMs must be a positive whole number of milliseconds');
}

/** Lock keys live in the same keyspace as Redis's (see redis.ts), so both stores agree on them. */
export const LOCK_KEY_PREFIX = 'lock:';

const WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value';
const NOT_INTEGER = 'ERR value is not an integer or out of range';
const NOT_FLOAT = 'ERR value is not a valid float';
/** Redis sweeps expired keys in the background; we do it this often so forgotten keys free memory. */
const SWEEP_INTERVAL_MS = 1000;
/** A lock waiter re-checks at least this often, to notice locks that expired rather than being released. */
const LOCK_POLL_MS = 25;

function replyError(message: string): Error {
  return new Error(message);
}

function assertInteger(value: number): void {
  if (!Number.isSafeInteger(value)) throw replyError(NOT_INTEGER);
}

/**
 * Redis compares members byte by byte (UTF-8), which is code point order. JS `<` compares UTF-16
 * code units, which puts astral characters (surrogates, 0xD800-0xDFFF) below U+E000-U+FFFF;
 * shifting the two ranges restores code point order without encoding every string.
 */
export function compareBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

/** LRANGE/LTRIM index normalisation: negative counts from the end; null when the range is empty. */
function listRange(length: number, start: number, stop: number): [number, number] | null {
  assertInteger(start);
  assertInteger(stop);
  let from = start < 0 ? length + start : start;
  let to = stop < 0 ? length + stop : stop;
  if (from < 0) from = 0;
  if (from > to || from >= length) return null;
  if (to >= length) to = length - 1;
  return [from, to];
}

/** Redis LIMIT: a negative count means "all the rest". */
function applyLimit<T>(items: T[], limit: number | undefined): T[] {
  if (limit === undefined || limit < 0) return items;
  assertInteger(limit);
  return items.slice(0, limit);
}

export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const now = options.now ?? Date.now;
  const data = new Map<string, Entry>();
  /** Keys that carry an expiry, so the sweep does not walk every key. */
  const volatile = new Set<string>();
  /** Lock waiters to wake when a lock is released (they also poll, for expiry). */
  const waiters = new Set<() => void>();
  let closed = false;

  const sweep = setInterval(() => {
    const at = now();
    for (const key of volatile) {
      const entry = data.get(key);
      if (entry === undefined || entry.expiresAt === null) volatile.delete(key);
      else if (at > entry.expiresAt) {
        data.delete(key);
        volatile.delete(key);
      }
    }
  }, SWEEP_INTERVAL_MS);
  // Never keep the process alive just to sweep.
  sweep.unref();

  function guard(): void {
    if (closed) throw new StoreUnavailableError(new Error('the in-memory store is closed'));
  }

  /** The live entry for a key; expired keys are removed on access, as Redis does lazily. */
  function lookup(key: string): Entry | undefined {
    const entry = data.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== null && now() > entry.expiresAt) {
      data.delete(key);
      volatile.delete(key);
      return undefined;
    }
    return entry;
  }

  function read<T extends ValueType>(key: string, type: T): ValueOf<T> | undefined {
    const entry = lookup(key);
    if (entry === undefined) return undefined;
    const value: Value = entry.data;
    if (value.type !== type) throw replyError(WRONGTYPE);
    return value.value as ValueOf<T>;
  }

  /** The collection at `key`, created empty (without expiry) when missing. */
  function write<T extends 'hash' | 'set' | 'zset' | 'list'>(key: string, type: T): ValueOf<T> {
    const existing = read(key, type);
    if (existing !== undefined) return existing;
    const value = (type === 'list' ? [] : type === 'set' ? new Set() : new Map()) as ValueOf<T>;
    data.set(key, { data: { type, value } as Value, expiresAt: null });
    return value;
  }

  /** Redis deletes a collection when its last element goes. */
  function dropIfEmpty(key: string, collection: { size: number } | { length: number }): void {
    if (('size' in collection ? collection.size : collection.length) === 0) {
      data.delete(key);
      volatile.delete(key);
    }
  }

  function setExpiry(key: string, entry: Entry, ttlMs: number | null): void {
    entry.expiresAt = ttlMs === null ? null : now() + ttlMs;
    if (ttlMs === null) volatile.delete(key);
    else volatile.add(key);
  }

  function sortedMembers(zset: Map<string, number>): Array<[string, number]> {
    return [...zset].sort((a, b) => a[1] - b[1] || compareBytes(a[0], b[0]));
  }

  /** ZRANGE ... BYLEX REV LIMIT 0 limit with exclusive bounds, when all scores are equal. */
  function lexRange(
    key: string,
    below: string | undefined,
    above: string | undefined,
    limit: number,
  ): string[] {
    const zset = read(key, 'zset');
    if (zset === undefined) return [];
    // Walk the set from the top in (score, member) order and keep what falls between the
    // exclusive bounds: what ZRANGE ... BYLEX REV does when all scores are equal.
    const members = sortedMembers(zset)
      .reverse()
      .map(([member]) => member)
      .filter(
        (member) =>
          (below === undefined || compareBytes(member, below) < 0) &&
          (above === undefined || compareBytes(member, above) > 0),
      );
    return applyLimit(members, limit);
  }

  // The commands, synchronous so that a batch can apply them all in one turn of the event loop.
  const op = {
    set(key: string, value: string, setOptions: SetOptions = {}): boolean {
      const { ttlMs, nx } = setOptions;
      if (ttlMs !== undefined) {
        assertInteger(ttlMs);
        if (ttlMs <= 0) throw replyError("ERR invalid expire time in 'set' command");
      }
      if (nx && lookup(key) !== undefined) return false;
      // Like SET without KEEPTTL: a plain set makes the key persistent again.
      const entry: Entry = { data: { type: 'string', value }, expiresAt: null };
      data.set(key, entry);
      setExpiry(key, entry, ttlMs ?? null);
      return true;
    },
    del(keys: readonly string[]): number {
      let removed = 0;
      for (const key of keys) {
        if (lookup(key) !== undefined) {
          data.delete(key);
          volatile.delete(key);
          removed++;
        }
      }
      return removed;
    },
    expire(key: string, ttlMs: number): void {
      assertInteger(ttlMs);
      const entry = lookup(key);
      if (entry === undefined) return;
      // PEXPIRE with a time in the past deletes the key.
      if (ttlMs <= 0) op.del([key]);
      else setExpiry(key, entry, ttlMs);
    },
    incrBy(key: string, amount: number): number {
      assertInteger(amount);
      const current = read(key, 'string');
      let base = 0;
      if (current !== undefined) {
        // Redis accepts only canonical integers: no '+', no leading zeros, no spaces.
        if (!/^(0|-?[1-9]\d*)$/.test(current)) throw replyError(NOT_INTEGER);
        base = Number(current);
      }
      const next = base + amount;
      assertInteger(next);
      const entry = lookup(key);
      // INCR keeps the key's TTL.
      if (entry !== undefined) entry.data = { type: 'string', value: String(next) };
      else data.set(key, { data: { type: 'string', value: String(next) }, expiresAt: null });
      return next;
    },
    hset(key: string, field: string, value: string): void {
      write(key, 'hash').set(field, value);
    },
    hdel(key: string, field: string): number {
      const hash = read(key, 'hash');
      if (hash === undefined || !hash.delete(field)) return 0;
      dropIfEmpty(key, hash);
      return 1;
    },
    sadd(key: string, members: readonly string[]): number {
      if (members.length === 0) {
        read(key, 'set');
        return 0;
      }
      const set = write(key, 'set');
      const before = set.size;
      for (const member of members) set.add(member);
      return set.size - before;
    },
    srem(key: string, members: readonly string[]): number {
      const set = read(key, 'set');
      if (set === undefined) return 0;
      let removed = 0;
      for (const member of members) if (set.delete(member)) removed++;
      dropIfEmpty(key, set);
      return removed;
    },
    zadd(key: string, score: number, member: string): void {
      if (Number.isNaN(score)) throw replyError(NOT_FLOAT);
      write(key, 'zset').set(member, score);
    },
    zrem(key: string, member: string): number {
      const zset = read(key, 'zset');
      if (zset === undefined || !zset.delete(member)) return 0;
      dropIfEmpty(key, zset);
      return 1;
    },
    rpush(key: string, values: readonly ListItem[]): number {
      if (values.length === 0) return read(key, 'list')?.length ?? 0;
      const list = write(key, 'list');
      // A Buffer is copied: the caller may reuse its memory, Redis would have sent the bytes.
      for (const value of values) list.push(typeof value === 'string' ? value : Buffer.from(value));
      return list.length;
    },
    ltrim(key: string, start: number, stop: number): void {
      const list = read(key, 'list');
      if (list === undefined) return;
      const range = listRange(list.length, start, stop);
      if (range === null) list.length = 0;
      else {
        list.splice(range[1] + 1);
        list.splice(0, range[0]);
      }
      dropIfEmpty(key, list);
    },
  };

  /** Elements start..stop of a list (LRANGE's indexes). */
  function listSlice(key: string, start: number, stop: number): ListItem[] {
    const list = read(key, 'list');
    if (list === undefined) return [];
    const range = listRange(list.length, start, stop);
    return range === null ? [] : list.slice(range[0], range[1] + 1);
  }

  /** A string key's value; null when missing or of another type (as MGET and the Lua script). */
  function stringAt(key: string): string | null {
    const entry = lookup(key);
    return entry?.data.type === 'string' ? entry.data.value : null;
  }

  /** Store.readGroups, in one synchronous pass (what the Lua script does on Redis). */
  function readGroups({ keys, ids = [], layout, maxRecords, decoy, claim }: GroupRead): GroupReadResult {
    const result: GroupReadResult = {
      claimed: true,
      values: [],
      roots: new Map(),
      members: new Map(),
      records: new Map(),
      complete: true,
    };
    if (claim?.onlyIf) {
      const { hash, field, value } = claim.onlyIf;
      const held = read(hash, 'hash')?.get(field) ?? null;
      if (held !== value) {
        result.claimed = false;
        result.instead = held;
        return result;
      }
    }
    if (claim && !op.set(claim.key, '1', { nx: true, ttlMs: claim.ttlMs })) {
      result.claimed = false;
      return result;
    }
    const holders: string[] = [];
    for (const key of keys) {
      const value = stringAt(key);
      result.values.push(value);
      if (value !== null && !holders.includes(value)) holders.push(value);
    }
    for (const id of ids) if (!holders.includes(id)) holders.push(id);
    if (holders.length === 0 && decoy !== undefined) holders.push(decoy);
    for (const holder of holders) result.roots.set(holder, stringAt(layout.root + holder) ?? holder);
    for (const root of result.roots.values()) {
      if (!result.members.has(root))
        result.members.set(root, [...(read(layout.members + root, 'set') ?? [])]);
    }
    groups: for (const [root, members] of result.members) {
      for (const id of [root, ...members]) {
        if (result.records.has(id)) continue;
        if (result.records.size >= maxRecords) {
          result.complete = false;
          break groups;
        }
        result.records.set(id, stringAt(layout.record + id));
      }
    }
    return result;
  }

  function createBatch(): StoreBatch {
    const queue: Array<() => unknown> = [];
    /** Each expectation, as a check that holds or not when the batch runs. */
    const expectations: Array<() => boolean> = [];
    const enqueue = (command: () => unknown): StoreBatch => {
      queue.push(command);
      batch.length = queue.length;
      return batch;
    };
    // `length` is a data property (StoreBatch.length says why not a getter).
    const batch: CountingBatch = {
      expect(key, value) {
        expectations.push(() => {
          const entry = lookup(key);
          const current =
            entry === undefined ? null : entry.data.type === 'string' ? entry.data.value : undefined;
          return current === value;
        });
        return batch;
      },
      expectExists(key) {
        expectations.push(() => lookup(key) !== undefined);
        return batch;
      },
      expectListHead(key, values, identify) {
        // An identifying prefix where `identify` names one (StoreBatch.expectListHead), else the value.
        const wanted = values.map((value): { prefix: Buffer } | { value: ListItem; prefix?: undefined } => {
          const size = identify?.(value) ?? 0;
          const bytes = size > 0 ? itemBytes(value) : undefined;
          return bytes && size <= bytes.length ? { prefix: bytes.subarray(0, size) } : { value };
        });
        expectations.push(() => {
          if (wanted.length === 0) return true;
          const entry = lookup(key);
          if (entry?.data.type !== 'list' || entry.data.value.length < wanted.length) return false;
          const list = entry.data.value;
          return wanted.every((want, index) => {
            if (want.prefix === undefined) return sameItem(list[index]!, want.value);
            const held = itemBytes(list[index]!);
            return (
              held.length >= want.prefix.length && held.subarray(0, want.prefix.length).equals(want.prefix)
            );
          });
        });
        return batch;
      },
      set(key, value, ttlMs) {
        return enqueue(() => op.set(key, value, ttlMs === undefined ? {} : { ttlMs }));
      },
      del(key) {
        return enqueue(() => op.del([key]));
      },
      expire(key, ttlMs) {
        return enqueue(() => op.expire(key, ttlMs));
      },
      incrBy(key, amount) {
        return enqueue(() => op.incrBy(key, amount));
      },
      hset(key, field, value) {
        return enqueue(() => op.hset(key, field, value));
      },
      hdel(key, field) {
        return enqueue(() => op.hdel(key, field));
      },
      sadd(key, ...members) {
        return members.length > 0 ? enqueue(() => op.sadd(key, members)) : batch;
      },
      srem(key, ...members) {
        return members.length > 0 ? enqueue(() => op.srem(key, members)) : batch;
      },
      zadd(key, score, member) {
        // Bytes are the member's UTF-8, read back as Redis gives them (a lone surrogate as U+FFFD).
        const text = typeof member === 'string' ? member : member.toString('utf8');
        return enqueue(() => op.zadd(key, score, text));
      },
      zrem(key, member) {
        return enqueue(() => op.zrem(key, member));
      },
      rpush(key, ...values) {
        return values.length > 0 ? enqueue(() => op.rpush(key, values)) : batch;
      },
      ltrim(key, start, stop) {
        return enqueue(() => op.ltrim(key, start, stop));
      },
      length: 0,
      async exec() {
        guard();
        if (!expectations.every((holds) => holds())) {
          queue.length = 0;
          batch.length = 0;
          return false;
        }
        // All in one synchronous pass, so no other caller can observe half of the batch. Like
        // Redis's EXEC, a command that fails (e.g. WRONGTYPE) does not undo the others: the
        // first failure is reported after every command has run.
        let firstError: unknown;
        batch.length = 0;
        for (const command of queue.splice(0)) {
          try {
            command();
          } catch (error) {
            firstError ??= error;
          }
        }
        if (firstError !== undefined) throw firstError;
        return true;
      },
    };
    return batch;
  }

  function wakeLockWaiters(): void {
    for (const wake of [...waiters]) wake();
  }

  function waitForRelease(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
    });
  }

  const store: Store = {
    kind: 'memory',

    async get(key) {
      guard();
      return read(key, 'string') ?? null;
    },
    async mget(keys) {
      guard();
      // MGET answers nil for keys holding another type instead of failing.
      return keys.map((key) => {
        const entry = lookup(key);
        return entry?.data.type === 'string' ? entry.data.value : null;
      });
    },
    async set(key, value, setOptions) {
      guard();
      return op.set(key, value, setOptions);
    },
    async del(...keys) {
      guard();
      return op.del(keys);
    },
    async incr(key) {
      guard();
      return op.incrBy(key, 1);
    },
    async pttl(key) {
      guard();
      const entry = lookup(key);
      if (entry === undefined) return -2;
      if (entry.expiresAt === null) return -1;
      return Math.max(0, entry.expiresAt - now());
    },
    async countInWindow(key, windowMs) {
      guard();
      checkWindow(windowMs);
      const count = op.incrBy(key, 1);
      const entry = lookup(key)!;
      if (entry.expiresAt === null) {
        setExpiry(key, entry, windowMs);
        return { count, ttlMs: windowMs };
      }
      return { count, ttlMs: Math.max(0, entry.expiresAt - now()) };
    },

    async hget(key, field) {
      guard();
      return read(key, 'hash')?.get(field) ?? null;
    },
    async hgetall(key) {
      guard();
      return Object.fromEntries(read(key, 'hash') ?? []);
    },
    async hmget(key, fields) {
      guard();
      const hash = read(key, 'hash');
      return fields.map((field) => hash?.get(field) ?? null);
    },
    async hset(key, field, value) {
      guard();
      op.hset(key, field, value);
    },
    async hdel(key, field) {
      guard();
      return op.hdel(key, field);
    },
    async hscanFields(key, cursor, count) {
      guard();
      checkHscanFields(count);
      // As scanKeys: `f` and the last field looked at, fields walked in code unit order.
      if (!(cursor === '0' || cursor.startsWith('f'))) throw replyError('ERR invalid cursor');
      const after = cursor === '0' ? null : cursor.slice(1);
      const ordered = [...(read(key, 'hash')?.keys() ?? [])]
        .filter((field) => after === null || field > after)
        .sort();
      const fields = ordered.slice(0, count);
      const done = fields.length === ordered.length;
      return { cursor: done ? '0' : `f${fields[fields.length - 1]}`, fields };
    },

    async sadd(key, ...members) {
      guard();
      return op.sadd(key, members);
    },
    async srem(key, ...members) {
      guard();
      return op.srem(key, members);
    },
    async smembers(key) {
      guard();
      return [...(read(key, 'set') ?? [])];
    },
    async smismember(key, members) {
      guard();
      const set = read(key, 'set');
      return members.map((member) => set?.has(member) ?? false);
    },
    async sinterScan(keys, cursor, { count, scan }: SinterScanOptions) {
      guard();
      checkSinterScan(cursor, count, scan);
      const sets = keys.map((key) => read(key, 'set') ?? new Set<string>());
      // The cursor is `<index of the walked set>:<last member looked at>`; members are walked in
      // code unit order, so one added or removed meanwhile moves no other (as SSCAN guarantees).
      let walked = 0;
      let after: string | null = null;
      if (cursor === '0') {
        if (sets.length === 0 || sets.some((set) => set.size === 0)) return { cursor: '0', members: [] };
        sets.forEach((set, index) => {
          if (set.size < sets[walked]!.size) walked = index;
        });
      } else {
        const sep = cursor.indexOf(':');
        walked = Number(cursor.slice(0, sep));
        after = cursor.slice(sep + 1);
      }
      const ordered = [...(sets[walked] ?? [])].filter((member) => after === null || member > after).sort();
      const members: string[] = [];
      let looked = 0;
      for (const member of ordered) {
        looked++;
        if (sets.every((set, index) => index === walked || set.has(member))) members.push(member);
        if (members.length >= count || looked >= scan) break;
      }
      const done = looked === ordered.length;
      return { cursor: done ? '0' : `${walked}:${ordered[looked - 1]}`, members };
    },

    async scanKeys(prefix, cursor, count) {
      guard();
      checkScanKeys(count);
      // The cursor is `k` and the last key looked at; keys are walked in code unit order, so one
      // added or removed meanwhile moves no other (as SCAN guarantees). Redis's cursors are digits.
      if (!(cursor === '0' || cursor.startsWith('k'))) throw replyError('ERR invalid cursor');
      const after = cursor === '0' ? null : cursor.slice(1);
      const ordered = [...data.keys()]
        .filter((key) => key.startsWith(prefix) && (after === null || key > after))
        .sort();
      const looked = ordered.slice(0, count);
      const keys = looked.filter((key) => lookup(key) !== undefined);
      const done = looked.length === ordered.length;
      return { cursor: done ? '0' : `k${looked[looked.length - 1]}`, keys };
    },

    async zadd(key, score, member) {
      guard();
      op.zadd(key, score, member);
    },
    async zrem(key, member) {
      guard();
      return op.zrem(key, member);
    },
    async zcard(key) {
      guard();
      return read(key, 'zset')?.size ?? 0;
    },
    async zscore(key, member) {
      guard();
      return read(key, 'zset')?.get(member) ?? null;
    },
    async zrangeByScore(key, min, max, limit) {
      const entries = await store.zrangeByScoreWithScores(key, min, max, limit);
      return entries.map(({ member }) => member);
    },
    async zrangeByScoreWithScores(key, min, max, limit) {
      guard();
      if (Number.isNaN(min) || Number.isNaN(max)) throw replyError('ERR min or max is not a float');
      const zset = read(key, 'zset');
      if (zset === undefined) return [];
      const members = sortedMembers(zset)
        .filter(([, score]) => score >= min && score <= max)
        .map(([member, score]) => ({ member, score }));
      return applyLimit(members, limit);
    },
    async zrevrangeByLex(key, { below, above, limit }: LexRangeOptions) {
      guard();
      return lexRange(key, below, above, limit);
    },
    async zrevrangeByLexBuffer(key, { below, above, limit }: LexRangeBufferOptions) {
      guard();
      // Members are kept as text here; a timeline's members are valid UTF-8 as Redis keeps them
      // (JSON.stringify's text: lone surrogates escaped), so their bytes are their text's.
      const text = (bound: string | Buffer | undefined) =>
        bound === undefined || typeof bound === 'string' ? bound : bound.toString('utf8');
      return lexRange(key, text(below), text(above), limit).map((member) => Buffer.from(member, 'utf8'));
    },

    async rpush(key, ...values) {
      guard();
      return op.rpush(key, values);
    },
    async lrange(key, start, stop) {
      guard();
      return listSlice(key, start, stop).map(itemText);
    },
    async lrangeBuffer(key, start, stop) {
      guard();
      return listSlice(key, start, stop).map(itemBytes);
    },
    async llen(key) {
      guard();
      return read(key, 'list')?.length ?? 0;
    },

    async readGroups(request) {
      guard();
      return readGroups(request);
    },

    batch() {
      return createBatch();
    },

    async lock(keys, { ttlMs, waitMs }: LockOptions): Promise<Lock> {
      guard();
      const lockKeys = [...new Set(keys)].map((key) => LOCK_KEY_PREFIX + key);
      if (lockKeys.length === 0) throw new Error('lock() needs at least one key');
      assertInteger(ttlMs);
      if (ttlMs <= 0) throw replyError("ERR invalid expire time in 'set' command");
      const token = randomUUID();
      // Waiting is real time even under a fake clock: a frozen clock must not wait forever.
      const deadline = performance.now() + waitMs;
      for (;;) {
        guard();
        if (lockKeys.every((key) => lookup(key) === undefined)) {
          for (const key of lockKeys) op.set(key, token, { ttlMs });
          return {
            keys: [...keys],
            async release() {
              if (closed) return;
              let released = false;
              for (const key of lockKeys) {
                const entry = lookup(key);
                // Only our own token: after expiry someone else may hold this key now.
                if (entry?.data.type === 'string' && entry.data.value === token) {
                  op.del([key]);
                  released = true;
                }
              }
              if (released) wakeLockWaiters();
            },
            async renew(renewTtlMs = ttlMs) {
              guard();
              assertInteger(renewTtlMs);
              if (renewTtlMs <= 0) throw replyError("ERR invalid expire time in 'pexpire' command");
              // Only our own token, as release(): after expiry someone else may hold a key.
              const owned = lockKeys.every((key) => {
                const entry = lookup(key);
                return entry?.data.type === 'string' && entry.data.value === token;
              });
              if (owned) for (const key of lockKeys) op.set(key, token, { ttlMs: renewTtlMs });
              return owned;
            },
          };
        }
        const remaining = deadline - performance.now();
        if (remaining <= 0) throw new StoreBusyError(keys.join(', '));
        await waitForRelease(Math.min(remaining, LOCK_POLL_MS));
      }
    },

    async ping() {
      guard();
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      data.clear();
      volatile.clear();
      // Waiters wake up, see the store closed and reject.
      wakeLockWaiters();
    },
  };
  return store;
}
