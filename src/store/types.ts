/**
 * The store: the few Redis-shaped operations chatbridge needs, behind one interface with two
 * implementations (in-memory and Redis). Like BullMQ's IRedisClient, it declares only what we
 * use, so that the in-memory twin stays small and one conformance suite
 * (test/store.conformance.test.ts) holds both to the same behaviour.
 *
 * Keys are given without the configured prefix; implementations add it.
 * Every method may reject with StoreUnavailableError (Redis down) — callers let it propagate,
 * and the HTTP layer answers 503 so vendors retry instead of losing data.
 */
export interface SetOptions {
  /** Expire the key after this many milliseconds. */
  ttlMs?: number;
  /** Only set the key if it does not exist (Redis SET NX). */
  nx?: boolean;
}

export interface SinterScanOptions {
  /** Stop once about this many members were found (1 to 1000). */
  count: number;
  /** Stop once about this many members of the walked set were looked at (at least `count`). */
  scan: number;
}

export interface SinterScanPage {
  /** `'0'` when the iteration is over. */
  cursor: string;
  members: string[];
}

export interface ScanKeysPage {
  /** `'0'` when the iteration is over. */
  cursor: string;
  /** Keys without the store's own prefix, as they are given to every other method. */
  keys: string[];
}

export interface HashFieldsPage {
  /** `'0'` when the iteration is over. */
  cursor: string;
  fields: string[];
}

export interface WindowCount {
  /** Events counted in the window so far, this one included. */
  count: number;
  /** Milliseconds until the window ends (the key expires). */
  ttlMs: number;
}

export interface LexRangeOptions {
  /** Only members strictly below this one (exclusive); omit to start from the top. */
  below?: string;
  /** Only members strictly above this one (exclusive); omit to go to the bottom. */
  above?: string;
  limit: number;
}

/** LexRangeOptions whose bounds may be bytes (a member zrevrangeByLexBuffer read). */
export interface LexRangeBufferOptions {
  below?: string | Buffer;
  above?: string | Buffer;
  limit: number;
}

/**
 * Writes queued and applied together (one Lua script on Redis, atomic as MULTI/EXEC): no reader
 * sees half of them, and when the store is unreachable none is applied. As with EXEC, a command
 * that fails while running (e.g. WRONGTYPE — a bug, not an outage) does not undo the others;
 * exec() then rejects.
 */
export interface StoreBatch {
  set(key: string, value: string, ttlMs?: number): StoreBatch;
  del(key: string): StoreBatch;
  expire(key: string, ttlMs: number): StoreBatch;
  incrBy(key: string, amount: number): StoreBatch;
  hset(key: string, field: string, value: string): StoreBatch;
  hdel(key: string, field: string): StoreBatch;
  sadd(key: string, ...members: string[]): StoreBatch;
  srem(key: string, ...members: string[]): StoreBatch;
  /**
   * Add to a sorted set; members with equal scores order by their bytes (used for lex ranges). A
   * Buffer is the member's UTF-8 bytes (a long timeline entry, encoded once), stored as they are.
   */
  zadd(key: string, score: number, member: string | Buffer): StoreBatch;
  zrem(key: string, member: string): StoreBatch;
  /** Buffers are stored as their bytes, as Store.rpush. */
  rpush(key: string, ...values: Array<string | Buffer>): StoreBatch;
  /** Keep only list elements start..stop (inclusive; negative counts from the end), as LTRIM. */
  ltrim(key: string, start: number, stop: number): StoreBatch;
  /**
   * Apply the batch only if `key` (a string key) holds `value` when it runs (null: the key does
   * not exist). Checked and written in one atomic step (one Lua script on Redis), so a writer can
   * read without locks and commit only if nothing it read has changed (optimistic concurrency).
   */
  expect(key: string, value: string | null): StoreBatch;
  /** Apply the batch only if `key` exists (of any type) when it runs; checked like expect(). */
  expectExists(key: string): StoreBatch;
  /**
   * Apply the batch only if the list at `key` starts with exactly `values`, in this order, when
   * it runs; checked like expect(). (To remove what was read from the head of a list — and
   * nothing else — when it may have changed meanwhile.)
   *
   * `identify(value)`: how many first bytes of a value (UTF-8 for a string) say which element it
   * is; only those are compared, with the element at its place. The caller vouches that no two
   * elements ever pushed to this list with the same first bytes differ after them (an id made
   * for one push), which makes this as exact as comparing the whole elements, and cheaper. 0, more
   * than the value holds, or no `identify`: the whole value is compared.
   */
  expectListHead(
    key: string,
    values: ReadonlyArray<string | Buffer>,
    identify?: (value: string | Buffer) => number,
  ): StoreBatch;
  /**
   * Number of queued operations. Implementations keep it in a data property they update, not in
   * a getter of each batch object: on Node 20 an accessor defined per object (a getter in an
   * object literal) made V8 keep every batch — with the record texts and timeline entries it
   * carries — through young-generation collections, so each webhook promoted ~10 KB to the old
   * generation, freed only by major GCs (bench/getter.js; bench/HISTORY.md, twenty-third round).
   */
  readonly length: number;
  /**
   * True when applied; false when an expectation did not hold (then nothing was written). The
   * batch is handed to the connection before exec() returns, so a command issued after the call
   * (a read) is answered after the batch has run: the engine's lanes rely on it.
   */
  exec(): Promise<boolean>;
}

/** A StoreBatch as its implementations build it: `length` is theirs to count (see there). */
export type CountingBatch = Omit<StoreBatch, 'length'> & { length: number };

/**
 * A read of string keys whose values name records, and of those records' groups, in one step
 * (Store.readGroups). Records live in groups: a record may point at its group's root
 * (`<root prefix><id>` holds the root's id), a root lists its members (`<members prefix><root>`, a
 * set), and each record is a string (`<record prefix><id>`). The contact engine reads its
 * idempotency key and identifier index this way, with every group they lead to.
 */
export interface GroupRead {
  /** String keys read first; each value found names a record (a holder) whose group is read too. */
  keys: readonly string[];
  /**
   * Records named directly (holders after those the keys name, in this order), for a caller that
   * has ids rather than keys holding them: a search reads a page of found records' contacts in
   * one step (ContactService.find) instead of a few round trips per contact.
   */
  ids?: readonly string[];
  /** Key prefixes of the group layout (without the store's prefix), each followed by a record id. */
  layout: { root: string; members: string; record: string };
  /**
   * At most this many records are read in all (root first, then its members, group by group);
   * the caller reads the rest of a larger group itself (`complete` is false then).
   */
  maxRecords: number;
  /**
   * When no key (and no id) names a record, read the group of this id anyway (an id that is never written),
   * so that a miss does the same work as a hit on a one-record group.
   */
  decoy?: string;
  /**
   * Claim first (SET key NX PX ttlMs, in the same atomic step): when the key already existed,
   * nothing is read and `claimed` is false.
   */
  claim?: Claim;
}

/**
 * A one-time claim (SET key NX PX ttlMs), taken in the step that reads what it guards.
 * `onlyIf`: only while this hash field holds exactly `value`, checked in the same atomic step
 * before anything is claimed or read — the LiveTex lookup's key record, so that the credential a
 * request was opened with is still the stored one when its token is spent (a revocation holds
 * from the moment it is written, without a read of its own before the claim).
 */
export interface Claim {
  key: string;
  ttlMs: number;
  onlyIf?: { hash: string; field: string; value: string };
}

export interface GroupReadResult {
  /**
   * False only when a claim was asked and the key existed already, or its `onlyIf` did not hold
   * (then nothing else is read, and nothing claimed).
   */
  claimed: boolean;
  /**
   * Set only when the claim's `onlyIf` did not hold: what the hash field held instead, read in
   * that step (null: no such field).
   */
  instead?: string | null;
  /** The keys' values in order; null for a missing key or a key of another type (as MGET). */
  values: (string | null)[];
  /** For every record named by a value (or the decoy): its root, itself when it points nowhere. */
  roots: Map<string, string>;
  /** For every root in `roots`: its members, in no particular order (empty when it has none). */
  members: Map<string, string[]>;
  /** Every record read, by id: its text, or null when the key does not exist. */
  records: Map<string, string | null>;
  /** False when some group record was left unread (maxRecords): the caller reads the rest. */
  complete: boolean;
}

export interface Lock {
  readonly keys: readonly string[];
  /** Release the lock if we still own it. Never throws. */
  release(): Promise<void>;
  /**
   * Renew the lock: every key expires `ttlMs` from now (the ttl it was taken with when omitted),
   * only if every key still carries this lock's token — checked and set in one atomic step. After
   * a pause longer than the ttl a key may have expired and be held by someone else, whose lock must
   * not be extended. False when the lock was lost: the holder must then not act on what it decided
   * under it. Rejects with StoreUnavailableError when the store cannot be reached.
   */
  renew(ttlMs?: number): Promise<boolean>;
}

export interface LockOptions {
  /** The lock expires by itself after this long, so a crashed holder cannot block forever. */
  ttlMs: number;
  /** Give up (StoreBusyError) if the lock cannot be had within this long. */
  waitMs: number;
}

/** How Store.confirmWrites vouches. */
export interface ConfirmOptions {
  /**
   * Vouch also for what the caller *read* since its mark, not only for what it wrote: the state
   * an answer rests on though this connection did not write it (a vendor's retry finds its
   * idempotency key, written by the first attempt on an earlier connection or another instance,
   * and writes nothing). Costs one write before the WAIT; ask for it only then.
   */
  coverReads?: boolean;
}

export interface Store {
  readonly kind: 'memory' | 'redis';
  /**
   * Redis only: which of DESIGN §3's store keys it was made from (`store.redis` = standalone,
   * `store.sentinel`, `store.cluster`), so /readyz can tell them apart; `kind` stays `redis`
   * for all three, as probes and dashboards already read it.
   */
  readonly topology?: 'standalone' | 'sentinel' | 'cluster';

  get(key: string): Promise<string | null>;
  mget(keys: readonly string[]): Promise<(string | null)[]>;
  /** Returns false when `nx` was asked and the key already existed. */
  set(key: string, value: string, options?: SetOptions): Promise<boolean>;
  del(...keys: string[]): Promise<number>;
  incr(key: string): Promise<number>;
  /** Remaining time to live in ms; -1 without expiry, -2 when the key does not exist. */
  pttl(key: string): Promise<number>;
  /**
   * Count one event in a fixed window that starts with the window's first event: INCR `key`, and
   * give it `windowMs` to live when this made it (or it had no expiry), in one atomic step (one
   * script on Redis), so no crash or second instance can leave a counter that never expires.
   * Answers the count so far and the ms left of the window. For counters that several instances
   * share (the limits on failed admin authentications, src/http/rate-limit.ts).
   */
  countInWindow(key: string, windowMs: number): Promise<WindowCount>;

  hget(key: string, field: string): Promise<string | null>;
  hgetall(key: string): Promise<Record<string, string>>;
  /**
   * The values of `fields` of the hash at `key`, in their order (null: no such field), as HMGET:
   * a few fields of a hash that may hold many, in one step. A missing key is empty.
   */
  hmget(key: string, fields: readonly string[]): Promise<Array<string | null>>;
  hset(key: string, field: string, value: string): Promise<void>;
  hdel(key: string, field: string): Promise<number>;
  /**
   * The fields of the hash at `key`, a page at a time, without their values (HSCAN, whose values
   * a script drops on Redis's side: Redis 7.0 has no NOVALUES): for a pass over a hash that may
   * hold many large values. Start with cursor `'0'` and pass back the cursor each call returns
   * until it is `'0'` again. As HSCAN: a field there for the whole iteration is answered at least
   * once (possibly more than once); one added or removed meanwhile may or may not be. A call looks
   * at about `count` fields (1 to 1000; Redis answers a small hash whole). A missing key is empty.
   */
  hscanFields(key: string, cursor: string, count: number): Promise<HashFieldsPage>;

  sadd(key: string, ...members: string[]): Promise<number>;
  srem(key: string, ...members: string[]): Promise<number>;
  smembers(key: string): Promise<string[]>;
  /** Whether each of `members` is in the set at `key`, in their order (SMISMEMBER; a missing key is an empty set). */
  smismember(key: string, members: readonly string[]): Promise<boolean[]>;
  /**
   * The members common to every set at `keys`, a page at a time (SINTER without reading whole
   * sets; for a search whose sets may hold tens of thousands of members). Start with cursor `'0'`
   * and pass back the cursor each call returns, with the same keys in the same order, until it is
   * `'0'` again. The iteration walks one set, the smallest when it starts, and answers those of
   * its members that every other set holds: a call stops once it has about `count` of them, or
   * has looked at about `scan` members (a page may then be empty before the end). As SSCAN: a
   * member in every set for the whole iteration is answered at least once, and may be answered
   * more than once. A missing key is an empty set.
   */
  sinterScan(keys: readonly string[], cursor: string, options: SinterScanOptions): Promise<SinterScanPage>;

  /**
   * The keys that start with `prefix`, a page at a time, as Redis SCAN with MATCH: start with
   * cursor `'0'` and pass back the cursor each call returns until it is `'0'` again. A key that
   * exists for the whole iteration is answered at least once (possibly more than once); one added
   * or removed meanwhile may or may not be. A call looks at about `count` keys (1 to 1000), so a
   * page may hold fewer, even none, before the end. For passes over every key of a kind run once
   * (chatbridge contacts reindex), never on a request's path: on Redis it walks the whole keyspace
   * (on a Cluster every primary's, and it starts again when the bridge's hash slot has moved
   * since it began: redis.ts scanCluster). A walk while the slot moves there and back can miss
   * keys: run it again after a resharding.
   */
  scanKeys(prefix: string, cursor: string, count: number): Promise<ScanKeysPage>;

  zadd(key: string, score: number, member: string): Promise<void>;
  zrem(key: string, member: string): Promise<number>;
  zcard(key: string): Promise<number>;
  zscore(key: string, member: string): Promise<number | null>;
  /** Members with min <= score <= max, ascending by score, at most `limit`. */
  zrangeByScore(key: string, min: number, max: number, limit?: number): Promise<string[]>;
  /** zrangeByScore with each member's score (a cursor names the score it stopped at). */
  zrangeByScoreWithScores(
    key: string,
    min: number,
    max: number,
    limit?: number,
  ): Promise<Array<{ member: string; score: number }>>;
  /**
   * Members in descending byte order within the exclusive bounds; only meaningful when all
   * members share one score (as our timelines do). Used for cursor paging.
   */
  zrevrangeByLex(key: string, options: LexRangeOptions): Promise<string[]>;
  /**
   * zrevrangeByLex as the stored bytes (no UTF-8 decoding); a bound may be a member read so. For
   * a reader that answers members' bytes as they are (the admin API's timeline page).
   */
  zrevrangeByLexBuffer(key: string, options: LexRangeBufferOptions): Promise<Buffer[]>;

  /** Buffers are stored as their bytes (no UTF-8 round trip for a payload that arrived as bytes). */
  rpush(key: string, ...values: Array<string | Buffer>): Promise<number>;
  lrange(key: string, start: number, stop: number): Promise<string[]>;
  /** LRANGE as the stored bytes (what rpush stored from a Buffer comes back byte for byte). */
  lrangeBuffer(key: string, start: number, stop: number): Promise<Buffer[]>;
  llen(key: string): Promise<number>;

  /**
   * Read keys, the records their values name and those records' groups, in one atomic step (one
   * round trip; a read-only Lua script on Redis, or a claim-then-read script when `claim` is
   * given). See GroupRead.
   */
  readGroups(request: GroupRead): Promise<GroupReadResult>;

  batch(): StoreBatch;

  /**
   * Take several locks at once, all or none (keys are locked in one atomic step, so two callers
   * never deadlock by taking them in different orders).
   */
  lock(keys: readonly string[], options: LockOptions): Promise<Lock>;

  /** Rejects with StoreUnavailableError when the store cannot be reached. */
  ping(): Promise<void>;
  /**
   * Resolves once everything written so far reached the configured number of replicas (Redis
   * WAIT, `store.durability`); rejects with StoreUnavailableError otherwise. Absent or a no-op
   * when there is nothing to wait for.
   *
   * `since` (a `writeMark()` taken before the writes): also rejects when the connection to Redis
   * was made again in between. WAIT counts the replicas that have *this connection's* writes, so
   * on a new connection (a failover, a reconnect) it would pass at once for writes the old
   * primary may never have passed on. On a Cluster it also rejects when the bridge's commands
   * went through another node connection in between, or the node they went through no longer
   * serves the bridge's hash slot as its primary (WAIT anywhere else would answer for another
   * connection's writes).
   *
   * Returns undefined when there is nothing to wait for (no replicas configured), so that a caller
   * on the hot path need not await a promise of nothing (bench/HISTORY.md, twenty-fifth round).
   */
  confirmWrites?(since?: number, options?: ConfirmOptions): Promise<void> | undefined;
  /** Which connection the store writes through now, for confirmWrites(since). */
  writeMark?(): number;
  /** Rejects unless the store accepts a write now (and confirms it, see confirmWrites); for /readyz. */
  probeWrite?(): Promise<void>;
  close(): Promise<void>;
}
