import { createHash, randomUUID } from 'node:crypto';
import type { Cluster, Command, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { digestUtf8 } from '../digest.js';
import { AppError, StoreBusyError, StoreUnavailableError } from '../errors.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import {
  closeRedisClient,
  createRedisClient,
  probeNode,
  type RedisClient,
  type RedisTarget,
  redactRedisUrl,
  sentinelTlsOf,
} from './connection.js';
import { checkHscanFields, checkScanKeys, checkSinterScan, checkWindow, LOCK_KEY_PREFIX } from './memory.js';
import { type ScriptArgument, type ScriptCall, scriptCall } from './script-command.js';
import type {
  ConfirmOptions,
  CountingBatch,
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
 * The production store: Redis through ioredis. Tuned to fail fast rather than to wait: while
 * Redis is down every call rejects at once with StoreUnavailableError (the HTTP layer answers
 * 503 and vendors retry), and the client reconnects by itself in the background.
 */
export interface RedisStoreOptions {
  /** One server (shorthand for `target: { kind: 'redis', url }`). */
  url?: string;
  /** Standalone, Sentinel or Cluster (see connection.ts); wins over `url`. */
  target?: RedisTarget;
  /** Prepended to every key as `<keyPrefix>:`, so several bridges can share one Redis. */
  keyPrefix: string;
  logger: Logger;
  /** How long creation waits for the first connection. */
  connectTimeoutMs?: number;
  /** A command that gets no answer within this long fails (e.g. Redis hung, network black hole). */
  commandTimeoutMs?: number;
  /** Answer only after writes reached this many replicas (Redis WAIT); 0 = do not wait. */
  durability?: { replicas: number; timeoutMs: number };
}

export type RedisStore = Store &
  Required<Pick<Store, 'confirmWrites' | 'writeMark'>> & {
    readonly client: RedisClient;
    readonly target: RedisTarget;
  };

/**
 * All-or-none: set every lock key or none of them, in one atomic script, so two callers asking
 * for overlapping key sets in different orders can never deadlock.
 * KEYS = lock keys; ARGV[1] = owner token; ARGV[2] = ttl in ms.
 */
const LOCK_SCRIPT = `
for i = 1, #KEYS do
  if redis.call('exists', KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do
  redis.call('set', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
`;

/** Delete only the keys that still carry our token: after expiry they may belong to someone else. */
const UNLOCK_SCRIPT = `
local released = 0
for i = 1, #KEYS do
  if redis.call('get', KEYS[i]) == ARGV[1] then
    released = released + redis.call('del', KEYS[i])
  end
end
return released
`;

/**
 * Renew a lock: only when every key still carries our token (a renewal must never extend a lock
 * someone else took after ours expired), then all of them. KEYS = lock keys; ARGV[1] = token;
 * ARGV[2] = ttl in ms. Answers 1 when renewed, 0 when the lock was lost.
 */
const RENEW_SCRIPT = `
for i = 1, #KEYS do
  if redis.call('get', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('pexpire', KEYS[i], ARGV[2])
end
return 1
`;

/** Keys checked by one EXISTS or MGET of GUARDED_BATCH_SCRIPT and READ_GROUPS_BODY (see there). */
const EXPECTED_PER_CALL = 1000;

/**
 * A batch (StoreBatch), in one atomic step: check every expectation (expect, expectExists,
 * expectListHead; a plain batch has none), then run the queued writes, or write nothing and
 * answer 0.
 * Every key is a KEYS entry (all carry the bridge's `{prefix}` hash tag, so on a Cluster the
 * script stays in one slot): each expectation's key in order, then each write's key in order (a
 * key both expected and written, or expected twice, is there twice). Implicit by place, not named
 * by an index in ARGV: each index cost the script a tonumber(), which Lua 5.1 makes with two
 * strtod()s — 40 per known-contact observation, ~5 % of Redis's instructions for it (callgrind),
 * and the client a Map to number its keys (bench/HISTORY.md, twenty-sixth round).
 * ARGV[1] = number of expectations; then per expectation, what to expect:
 * - `=` + the string value, or `#` + its SHA-1 (long values, such as records: 40 bytes on the
 *   wire instead of the record), or `0` for absent;
 * - `*`: the key exists, of any type;
 * - `P<count>:` then per element, in list order, 4 hex digits and as many bytes: a list whose
 *   first <count> elements start with those bytes (an identifying prefix, expectListHead's
 *   `identify`), or, after `0000`, whose SHA-1 is the 40 hex characters that follow (an element
 *   without one: every element of the outbox). The deferred intake's items start with an id made
 *   for one append: comparing ~40 bytes each spares Redis a SHA-1 of every 7 KB item
 *   (bench/HISTORY.md, twenty-sixth round). One check per element, never of the head joined: the
 *   join built a new Lua string per element and one of the whole head, 11 ms of Redis per
 *   100-item deferred trim against 3 ms for a SHA-1 each (twenty-fifth round);
 * then per write: command, argument count, arguments.
 * A key of another type never holds an expected string value (the check answers 0, as the
 * in-memory store does). The string expectations are checked together, not one GET each: the
 * keys expected absent with one EXISTS (it counts a key of any type, so another type fails it,
 * as above), those expected to hold a value with one MGET (nil for a key of another type, which
 * then fails as a missing one does): an observation expects 11–13 keys, and a command run from
 * Lua has a cost of its own (with the group read's MGET below, 7.5 % of Redis's instructions per
 * new contact; bench/HISTORY.md, twenty-sixth round). At most EXPECTED_PER_CALL keys go in one
 * EXISTS or MGET (Lua's unpack() takes ~8,000 at most). As with MULTI/EXEC, a write that fails
 * while running (WRONGTYPE) does not stop the others: every write runs (pcall), then the first
 * failure is the reply. A write refused for the server's state (OOM, READONLY, NOREPLICAS,
 * MISCONF) stops the batch with nothing written, as EXEC refuses the whole transaction
 * (test/store.batch-oom.test.ts).
 */
const GUARDED_BATCH_SCRIPT = `
local n = tonumber(ARGV[1])
local absent, valued, wants = {}, {}, {}
for i = 1, n do
  local key, want = KEYS[i], ARGV[i + 1]
  local kind = string.sub(want, 1, 1)
  if want == '0' then
    absent[#absent + 1] = key
  elseif want == '*' then
    if redis.call('exists', key) == 0 then return 0 end
  elseif kind == 'P' then
    local colon = string.find(want, ':', 2, true)
    local count = tonumber(string.sub(want, 2, colon - 1))
    if count > 0 then
      if redis.call('type', key).ok ~= 'list' then return 0 end
      local items = redis.call('lrange', key, 0, count - 1)
      if #items ~= count then return 0 end
      local from = colon + 1
      for _, item in ipairs(items) do
        local size = tonumber(string.sub(want, from, from + 3), 16)
        if size == 0 then
          if redis.sha1hex(item) ~= string.sub(want, from + 4, from + 43) then return 0 end
          from = from + 44
        else
          if string.sub(item, 1, size) ~= string.sub(want, from + 4, from + 3 + size) then return 0 end
          from = from + 4 + size
        end
      end
    end
  else
    valued[#valued + 1] = key
    wants[#wants + 1] = want
  end
end
for first = 1, #absent, ${EXPECTED_PER_CALL} do
  local last = math.min(first + ${EXPECTED_PER_CALL - 1}, #absent)
  if redis.call('exists', unpack(absent, first, last)) ~= 0 then return 0 end
end
for first = 1, #valued, ${EXPECTED_PER_CALL} do
  local last = math.min(first + ${EXPECTED_PER_CALL - 1}, #valued)
  local current = redis.call('mget', unpack(valued, first, last))
  for i = first, last do
    local value, want = current[i - first + 1], wants[i]
    if not value then return 0 end
    if string.sub(want, 1, 1) == '#' then
      if redis.sha1hex(value) ~= string.sub(want, 2) then return 0 end
    elseif value ~= string.sub(want, 2) then
      return 0
    end
  end
end
local failed
local at, written = n + 2, n
while at <= #ARGV do
  written = written + 1
  local command, count = ARGV[at], tonumber(ARGV[at + 1])
  local reply = redis.pcall(command, KEYS[written], unpack(ARGV, at + 2, at + 1 + count))
  if type(reply) == 'table' and reply.err then
    -- Refused for the server's state (past maxmemory, a replica, too few replicas, a failing
    -- disk): Redis refuses a script's writes so only until one of them lands, so nothing was
    -- written yet; stop, as EXEC would refuse the whole batch. Going on, a write allowed past
    -- maxmemory (DEL, ZREM) landed and every write after it too: half a batch.
    local code = string.match(reply.err, '^%u+')
    if code == 'OOM' or code == 'READONLY' or code == 'NOREPLICAS' or code == 'MISCONF' then return reply end
    if not failed then failed = reply end
  end
  at = at + 2 + count
end
if failed then return failed end
return 1
`;

/**
 * Store.readGroups: the keys' values, then for every record they name its root pointer, the
 * root's member set and the group's records (at most ARGV[5] records), in one atomic read.
 * KEYS = the keys to read. ARGV[1] = the client's key prefix; ARGV[2..4] = the root, members and
 * record key prefixes of the layout; ARGV[5] = most records to read; ARGV[6] = the decoy id, or '';
 * ARGV[7] = the claim's ttl (the claim script's; '' otherwise); ARGV[8] = on a Cluster, the hash
 * slot of the prefix ('' otherwise); ARGV[firstId..] = record ids named directly (GroupRead.ids),
 * holders after the keys' values (firstId is 9, or 11 in the guarded claim script, below).
 *
 * The root, member and record keys are computed here from the values read, so they cannot be
 * declared in KEYS beforehand (the keys we know are). On a Cluster that is still correct because
 * every key of one bridge carries its `{prefix}` hash tag (src/store/connection.ts): the computed
 * keys live in the same slot, on the same node, as KEYS[1] — except while a resharding moves that
 * slot key by key. Then the slot is split between the old owner (MIGRATING) and the new one
 * (IMPORTING, reached with ASK), Redis checks only the declared keys, and a computed key may be on
 * the other node: on the old owner touching it fails ("non local key"), on the new owner it reads
 * as absent without any error. Either way the group read would be partial (a record "missing", a
 * member set empty), so the script stops with TRYAGAIN instead, before the claim below: the client
 * retries it, and in the end the caller answers 503 (test/store.cluster-reshard.test.ts). On the
 * new owner a computed key that is absent is taken for one not moved yet. Whether this node is that
 * new owner is read from CLUSTER NODES (the slot is importing there), which builds a long reply, so
 * it is asked only when it may be: once per call, when a computed key is absent and every declared
 * key is here (or only one is declared) — Redis sends a call with several keys to a node that does
 * not own the slot yet only when all of them are there, so an observation (its idempotency key is
 * absent) never asks.
 * The prefix is added by hand (ARGV[1]) because ioredis prefixes only KEYS.
 * The declared keys are read with one MGET (nil for a key of another type; a declared key is never
 * another node's: Redis checked them before the script ran), not one GET each (see
 * GUARDED_BATCH_SCRIPT; bench/HISTORY.md, twenty-sixth round). The computed keys' GETs run
 * through pcall so that a key of another type reads as nil, as MGET does.
 * Reply: {1, values, {holder, root, ...}, {root, {members}, ...}, {id, text or nil, ...}, complete}.
 */
const READ_GROUPS_BODY = `
local prefix, slot = ARGV[1], ARGV[8]
local function split(name)
  error({ err = 'TRYAGAIN ' .. name .. ' may be on the other node of a resharding of slot ' .. slot })
end
local importing
local function absent(name)
  if slot == '' then return end
  if importing == nil then
    importing = false
    local here = #KEYS
    if here > 1 then here = redis.pcall('exists', unpack(KEYS)) end
    if type(here) ~= 'number' then split(name) end
    if here == #KEYS then
      importing = string.find(redis.call('cluster', 'nodes'), '[' .. slot .. '-<-', 1, true) ~= nil
    end
  end
  if importing then split(name) end
end
local function failed(name, reply)
  if string.find(reply.err, 'non local key', 1, true) then split(name) end
end
local function str(name, computed)
  local value = redis.pcall('get', name)
  if type(value) == 'string' then return value end
  if type(value) == 'table' then
    if value.err then failed(name, value) end
  elseif computed then
    absent(name)
  end
  return false
end
local function members(name)
  local value = redis.pcall('smembers', name)
  if value.err then
    failed(name, value)
    error(value)
  end
  if #value == 0 then absent(name) end
  return value
end
local values, holders, seen = {}, {}, {}
for first = 1, nkeys, ${EXPECTED_PER_CALL} do
  local last = math.min(first + ${EXPECTED_PER_CALL - 1}, nkeys)
  local read = redis.call('mget', unpack(KEYS, first, last))
  for i = first, last do
    local value = read[i - first + 1]
    values[i] = value
    if value and not seen[value] then
      seen[value] = true
      holders[#holders + 1] = value
    end
  end
end
for i = firstId, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    holders[#holders + 1] = id
  end
end
if #holders == 0 and ARGV[6] ~= '' then holders[1] = ARGV[6] end
local rootOf, groups, rootSeen = {}, {}, {}
for _, holder in ipairs(holders) do
  local root = str(prefix .. ARGV[2] .. holder, true) or holder
  rootOf[#rootOf + 1] = holder
  rootOf[#rootOf + 1] = root
  if not rootSeen[root] then
    rootSeen[root] = true
    groups[#groups + 1] = root
    groups[#groups + 1] = members(prefix .. ARGV[3] .. root)
  end
end
local records, read, budget, complete = {}, {}, tonumber(ARGV[5]), 1
for i = 1, #groups, 2 do
  local ids = { groups[i] }
  for _, member in ipairs(groups[i + 1]) do ids[#ids + 1] = member end
  for _, id in ipairs(ids) do
    if not read[id] then
      if budget == 0 then
        complete = 0
        break
      end
      read[id] = true
      budget = budget - 1
      records[#records + 1] = id
      records[#records + 1] = str(prefix .. ARGV[4] .. id, true)
    end
  end
  if complete == 0 then break end
end
local reply = { 1, values, rootOf, groups, records, complete }
`;

/**
 * What confirmWrites({ coverReads }) writes before its WAIT (see there): one key per bridge,
 * overwritten each time, gone a minute after the last.
 */
const COVER_READS_KEY = 'durability:cover-reads';
const COVER_READS_TTL_MS = 60_000;

/** Routes a readGroups that names no key (ids only) to the prefix's node; never written. */
const ROUTE_ONLY_KEY = 'route:read-groups';

/** Read-only: what an observation reads before its checked write. */
const READ_GROUPS_SCRIPT = `local nkeys, firstId = #KEYS, 9
${READ_GROUPS_BODY}
return reply`;

/**
 * The same read with a claim (the LiveTex lookup's jti): the last KEYS entry is SET NX PX
 * ARGV[7]; when it already existed the reply is {0} (nothing read is answered). The claim comes
 * after the reads: a read stopped halfway (TRYAGAIN during a resharding, above) must not spend it,
 * or the vendor's retry of the same request would be refused as a replay.
 */
const CLAIM_READ_GROUPS_SCRIPT = `local nkeys, firstId = #KEYS - 1, 9
${READ_GROUPS_BODY}
if not redis.call('set', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[7]) then return { 0 } end
return reply`;

/**
 * The claim script with its condition (Claim.onlyIf): KEYS[#KEYS - 1] is the hash, ARGV[9] the
 * field, ARGV[10] the value it must hold. Checked first: when the field holds anything else, the
 * reply is {2, what it holds (nil: no such field)}, and nothing is read or claimed. The hash is a
 * declared key, so on a Cluster it is routed (and checked during a resharding) like the others;
 * it carries the bridge's `{prefix}` hash tag as every key does, so the call stays in one slot.
 */
const GUARDED_CLAIM_READ_GROUPS_SCRIPT = `local nkeys, firstId = #KEYS - 2, 11
local held = redis.call('hget', KEYS[#KEYS - 1], ARGV[9])
if held ~= ARGV[10] then return { 2, held } end
${READ_GROUPS_BODY}
if not redis.call('set', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[7]) then return { 0 } end
return reply`;

type ReadGroupsReply =
  | [0]
  | [2, string | null]
  | [1, (string | null)[], string[], Array<string | string[]>, Array<string | null>, 0 | 1];

/** What expectListHead sends: each element's SHA-1 (hex, strings as UTF-8), joined in list order. */
/** The longest identifying prefix expectListHead sends (its length is 4 hex digits). */
const LONGEST_LIST_ID = 0xffff;

/**
 * What expectListHead sends (GUARDED_BATCH_SCRIPT's `P`): per element, in list order, its
 * identifying prefix's length (4 hex digits) and those bytes, or 0000 and the SHA-1 of the whole
 * element where it has none (no `identify`: every element).
 */
function listHeadIds(
  values: ReadonlyArray<string | Buffer>,
  identify: ((value: string | Buffer) => number) | undefined,
): Buffer {
  const parts: Buffer[] = [Buffer.from(`P${values.length}:`, 'latin1')];
  for (const value of values) {
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    const size = identify ? identify(value) : 0;
    if (size > 0 && size <= bytes.length && size <= LONGEST_LIST_ID) {
      parts.push(Buffer.from(size.toString(16).padStart(4, '0'), 'latin1'), bytes.subarray(0, size));
    } else {
      parts.push(Buffer.from(`0000${createHash('sha1').update(bytes).digest('hex')}`, 'latin1'));
    }
  }
  return Buffer.concat(parts);
}

/**
 * Store.sinterScan: KEYS the sets; ARGV cursor (`0` to start, else `<index of the walked key>:<its
 * SSCAN cursor>`), count, scan. At the start the smallest set is chosen (an empty or missing one
 * ends the iteration at once); each SSCAN batch of it is checked against every other set with
 * SMISMEMBER (Redis >= 6.2), so only the members common to all travel back to the client. The
 * walk stops at about `count` found or `scan` looked at, so one call never holds Redis for long.
 */
const SINTER_SCAN_SCRIPT = `
local cursor, count, scan = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local walked, at
if cursor == '0' then
  local smallest
  for i = 1, #KEYS do
    local size = redis.call('scard', KEYS[i])
    if size == 0 then return {'0', {}} end
    if smallest == nil or size < smallest then smallest, walked = size, i end
  end
  if walked == nil then return {'0', {}} end
  at = '0'
else
  local sep = string.find(cursor, ':', 1, true)
  walked, at = tonumber(string.sub(cursor, 1, sep - 1)), string.sub(cursor, sep + 1)
end
local found, looked = {}, 0
repeat
  local page = redis.call('sscan', KEYS[walked], at, 'COUNT', count)
  at = page[1]
  local members = page[2]
  looked = looked + #members
  for i = 1, #KEYS do
    if i ~= walked and #members > 0 then
      local held = redis.call('smismember', KEYS[i], unpack(members))
      local kept = {}
      for j = 1, #members do
        if held[j] == 1 then kept[#kept + 1] = members[j] end
      end
      members = kept
    end
  end
  for j = 1, #members do found[#found + 1] = members[j] end
until at == '0' or #found >= count or looked >= scan
return {at == '0' and '0' or (walked .. ':' .. at), found}
`;

/**
 * Store.countInWindow: INCR, then PEXPIRE when the key has no expiry (it was just made, or some
 * writer left it without one), in one script: INCR and PEXPIRE sent apart leave a counter that
 * never expires when the second never arrives, and PEXPIRE on every hit would push the window's
 * end forward for as long as events keep coming. KEYS[1] = the counter; ARGV[1] = the window in
 * ms. Reply: {count, ms left}. One key, declared: a Cluster routes it by its `{prefix}` hash tag.
 */
const COUNT_IN_WINDOW_SCRIPT = `
local count = redis.call('incr', KEYS[1])
local ttl = redis.call('pttl', KEYS[1])
if ttl < 0 then
  redis.call('pexpire', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { count, ttl }
`;

/**
 * Store.hscanFields: one HSCAN step, its values dropped here, on Redis's side, so that a page of
 * large values (cached profiles) is never sent. (HSCAN's NOVALUES came in Redis 7.4.)
 */
const HSCAN_FIELDS_SCRIPT = `
local page = redis.call('hscan', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = {}
for index = 1, #page[2], 2 do fields[#fields + 1] = page[2][index] end
return { page[1], fields }
`;

interface LockCommands {
  chatbridgeHscanFields(key: string, cursor: string, count: number): Promise<[string, string[]]>;
  chatbridgeCountInWindow(key: string, windowMs: number): Promise<[number, number]>;
  chatbridgeSinterScan(numKeys: number, ...args: Array<string | number>): Promise<[string, string[]]>;
  chatbridgeLock(numKeys: number, ...args: Array<string | number>): Promise<number>;
  chatbridgeUnlock(numKeys: number, ...args: string[]): Promise<number>;
  chatbridgeRenew(numKeys: number, ...args: Array<string | number>): Promise<number>;
}

/**
 * Replies that mean "this Redis cannot serve you right now" rather than "your command is wrong":
 * loading after restart, failover in progress, out of memory, a long script. Retrying later is
 * the right answer for all of them, so they become StoreUnavailableError (503) too.
 * NOSCRIPT: ioredis sends a script as EVAL the first time on each node connection and as EVALSHA
 * after, and recovers from one NOSCRIPT (the server lost its scripts) by sending it again. While a
 * resharding splits the bridge's slot, the new owner refuses an EVAL whose keys are split
 * (TRYAGAIN) before it caches the script, yet the connection counts as having it: the next try's
 * EVALSHA meets NOSCRIPT, and a call redirected through that twice failed with NOSCRIPT, a 500
 * (test/slow/cluster.reshard.test.ts). The script did not run; see run().
 */
const TRANSIENT_REPLY =
  /^(LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS|MISCONF|UNBLOCKED|MOVED|ASK|OOM|BUSY|NOSCRIPT)\b/;

/**
 * Connection-level failures (closed, not writeable, timed out, MaxRetriesPerRequestError, socket
 * errors) become StoreUnavailableError; genuine reply errors (WRONGTYPE, syntax) and our own
 * programming errors stay what they are, because retrying would not help.
 */
export function toStoreError(error: unknown): unknown {
  if (error instanceof AppError || error instanceof TypeError || error instanceof RangeError) return error;
  if (error instanceof Error && error.name === 'ReplyError' && !isTransientReply(error)) return error;
  return new StoreUnavailableError(error);
}

/** A plain batch with a write of more arguments than this is sent as MULTI/EXEC (see exec()). */
const LONGEST_SCRIPT_WRITE = 1000;

/**
 * WAIT sent to a server that is a replica now: the primary our writes went through was demoted
 * by a failover (`CLUSTER FAILOVER`; on a Cluster the client finds out at the next MOVED, and WAIT
 * has no key to be redirected by). Those writes may or may not be on the new primary, so WAIT
 * cannot vouch for them: "not now", like READONLY. As a plain ERR it answered vendors 500
 * (test/slow/cluster.failover.test.ts).
 */
const WAIT_ON_REPLICA = /^ERR WAIT cannot be used with replica/;

function isTransientReply(error: Error): boolean {
  if (TRANSIENT_REPLY.test(error.message) || WAIT_ON_REPLICA.test(error.message)) return true;
  // A MULTI whose queued writes were refused (READONLY/NOREPLICAS during a failover) fails as
  // EXECABORT; what counts is why they were refused.
  const previous = (error as { previousErrors?: unknown }).previousErrors;
  return (
    error.message.startsWith('EXECABORT') &&
    Array.isArray(previous) &&
    previous.some((cause) => cause instanceof Error && TRANSIENT_REPLY.test(cause.message))
  );
}

export { redactRedisUrl };

/** Redis spells infinite scores "+inf"/"-inf"; JS would send "Infinity", which Redis refuses. */
function scoreArg(score: number): string {
  if (score === Number.POSITIVE_INFINITY) return '+inf';
  if (score === Number.NEGATIVE_INFINITY) return '-inf';
  return String(score);
}

/** An exclusive ZRANGE BYLEX bound: `(` and the member, as text or as its stored bytes. */
function lexBound(member: string | Buffer): string | Buffer {
  return typeof member === 'string' ? `(${member}` : Buffer.concat([LEX_EXCLUSIVE, member]);
}
const LEX_EXCLUSIVE = Buffer.from('(');

/** ZRANGE's arguments after the key for zrevrangeByLex(Buffer): BYLEX REV (Redis >= 6.2) takes the upper bound first. */
function revLexArgs({ below, above, limit }: LexRangeBufferOptions) {
  return [
    below === undefined ? '+' : lexBound(below),
    above === undefined ? '-' : lexBound(above),
    'BYLEX',
    'REV',
    'LIMIT',
    0,
    limit,
  ] as const;
}

function parseScore(reply: string | null): number | null {
  if (reply === null) return null;
  if (reply === 'inf' || reply === '+inf') return Number.POSITIVE_INFINITY;
  if (reply === '-inf') return Number.NEGATIVE_INFINITY;
  return Number(reply);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Why a start-up found no Redis when nothing failed either: nobody refused, nobody answered. A
 * firewall that drops packets does that, and so does TLS spoken to a port that serves plain text
 * (the server waits for a line that never comes, the client for a handshake): said when TLS is on,
 * since the message was otherwise only "within 5000 ms".
 */
function noAnswerReason(target: RedisTarget): string {
  const tls =
    target.kind === 'redis'
      ? target.url.startsWith('rediss:')
      : target.kind === 'sentinel'
        ? target.tls || sentinelTlsOf(target)
        : target.tls;
  if (!tls) return ' (no answer: is a firewall dropping the connection?)';
  const setting =
    target.kind === 'redis'
      ? 'redis:// instead of rediss://'
      : target.kind === 'sentinel'
        ? 'sentinel.tls / sentinelTls'
        : 'cluster.tls';
  return ` (no answer: TLS spoken to a port that serves plain text waits like this; check ${setting})`;
}

export async function createRedisStore(options: RedisStoreOptions): Promise<RedisStore> {
  const { logger } = options;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const target: RedisTarget = options.target ?? { kind: 'redis', url: options.url ?? '' };
  if (target.kind === 'redis' && target.url === '')
    throw new Error('createRedisStore needs a url or a target');
  const safeUrl =
    target.kind === 'redis'
      ? redactRedisUrl(target.url)
      : `${target.kind} ${target.kind === 'sentinel' ? `${target.name}@` : ''}${target.nodes.join(',')}`;
  const log = logger.child({ component: 'store', redis: safeUrl });
  /** A lock's failed release, said at most once a minute (see lock). */
  const releaseRepeats = createRepeatGate();
  const replicas = options.durability?.replicas ?? 0;
  const waitTimeoutMs = options.durability?.timeoutMs ?? 500;
  /** The longest single WAIT: well inside the command timeout, so the client never gives up on one. */
  const waitSliceMs = Math.max(1, Math.floor((options.commandTimeoutMs ?? 2000) / 2));

  const client = createRedisClient(target, {
    role: 'store',
    keyPrefix: options.keyPrefix,
    logger: log,
    connectTimeoutMs,
    ...(options.commandTimeoutMs === undefined ? {} : { commandTimeoutMs: options.commandTimeoutMs }),
  });
  const commands = client as unknown as Redis & LockCommands;
  commands.defineCommand('chatbridgeLock', { lua: LOCK_SCRIPT });
  commands.defineCommand('chatbridgeUnlock', { lua: UNLOCK_SCRIPT });
  commands.defineCommand('chatbridgeRenew', { lua: RENEW_SCRIPT });
  commands.defineCommand('chatbridgeSinterScan', { lua: SINTER_SCAN_SCRIPT });
  commands.defineCommand('chatbridgeCountInWindow', { lua: COUNT_IN_WINDOW_SCRIPT, numberOfKeys: 1 });
  commands.defineCommand('chatbridgeHscanFields', { lua: HSCAN_FIELDS_SCRIPT, numberOfKeys: 1 });
  const clientPrefix = `${options.keyPrefix}:`;
  /**
   * The calls every observation makes, written without ioredis's per-argument work
   * (script-command.ts). A Cluster client routes a command by its keys, which only ioredis's own
   * commands show it: there they are ioredis's defined commands.
   */
  const hotScript = (name: string, lua: string): ScriptCall => {
    if (target.kind !== 'cluster') return scriptCall(client as Redis, lua, clientPrefix);
    commands.defineCommand(name, { lua });
    const defined = (commands as unknown as Record<string, (...args: ScriptArgument[]) => Promise<unknown>>)[
      name
    ]!;
    return (keys, args) => defined.call(commands, keys.length, ...keys, ...args);
  };
  const guardedBatchScript = hotScript('chatbridgeGuardedBatch', GUARDED_BATCH_SCRIPT);
  const readGroupsScript = hotScript('chatbridgeReadGroups', READ_GROUPS_SCRIPT);
  const claimReadGroupsScript = hotScript('chatbridgeClaimReadGroups', CLAIM_READ_GROUPS_SCRIPT);
  const guardedClaimReadGroupsScript = hotScript(
    'chatbridgeGuardedClaimReadGroups',
    GUARDED_CLAIM_READ_GROUPS_SCRIPT,
  );

  // Connection state, so that an outage is logged once when it starts and once when it ends,
  // not once per reconnect attempt.
  let state: 'connecting' | 'up' | 'down' = 'connecting';
  let closing = false;
  let lastError: Error | undefined;
  const markDown = (error?: Error) => {
    if (state !== 'up' || closing) return;
    state = 'down';
    log.warn({ err: error }, 'Redis connection lost; store calls fail with 503 until it is back');
  };
  // "Connection is closed." from the Sentinels or a Cluster's nodes hides why (connection.ts,
  // probeNode): one look of our own at the first node, in the background, for the start-up
  // error below.
  let nodeDiagnosis: string | undefined;
  let nodeProbed = false;
  client.on('error', (error: Error) => {
    lastError = error;
    const closed = [error.message, (error as { lastNodeError?: Error }).lastNodeError?.message].some(
      (message) => message?.includes('Connection is closed'),
    );
    if (state === 'connecting' && target.kind !== 'redis' && closed && !nodeProbed) {
      nodeProbed = true;
      void probeNode(target).then((reason) => {
        nodeDiagnosis = reason;
      });
    }
    if (state === 'up') markDown(error);
    else log.debug({ err: error }, 'Redis connection attempt failed');
  });
  client.on('close', () => markDown());
  /**
   * Counts changes of the connection the store's commands go through (see confirmWrites(since)):
   * a connection made again; on a Cluster, also the node connection that carries them (below).
   */
  let connectionEpoch = 0;
  const bumpEpoch = () => {
    connectionEpoch++;
  };
  /**
   * On a Cluster: the node connection that carried the latest command with a key, and that key's
   * hash slot. Every key of a bridge carries its `{prefix}` hash tag (connection.ts), so all of
   * them go to the one primary serving that slot — until the slot moves (a failover, a
   * resharding, a MOVED or ASK redirection), and then to another node connection, perhaps one the
   * client had opened long before (nothing connects, nothing closes). WAIT has no key: ioredis
   * would send it wherever, and the slot map names only where the *next* command goes. So every
   * command is seen on its way to its node (ioredis sends each one through the node's
   * sendCommand, redirections included), WAIT goes to the carrier, and a change of carrier
   * changes the epoch: a webhook whose reads and writes did not all go through one node
   * connection gets no WAIT that could vouch for them (503, the vendor retries). Keyless
   * commands (PING, CLUSTER KEYSLOT, SCAN and WAIT sent to a node) carry no data of the bridge
   * and do not count. No extra round trip: this is bookkeeping on commands already sent.
   */
  let carrier: Redis | undefined;
  let carrierSlot: number | undefined;
  const watchNode = (node: Redis) => {
    const send = node.sendCommand.bind(node);
    node.sendCommand = ((command: Command, stream?: unknown) => {
      const slot = command.getSlot();
      if (slot !== null && (node !== carrier || slot !== carrierSlot)) {
        // The first carrier replaces none: nothing was sent before it to be vouched for elsewhere.
        if (carrier !== undefined) bumpEpoch();
        carrier = node;
        carrierSlot = slot;
      }
      return send(command, stream as Parameters<Redis['sendCommand']>[1]);
    }) as Redis['sendCommand'];
    // ioredis gives a Cluster's node connections no retry strategy (a lost one is replaced by a
    // new object, which would be a new carrier), but should one connect again, WAIT there would
    // no longer see the writes sent before.
    node.on('close', () => {
      if (node === carrier) bumpEpoch();
    });
  };
  if (target.kind === 'cluster') (client as Cluster).on('+node', watchNode);
  client.on('ready', () => {
    bumpEpoch();
    if (state === 'down') log.info('Redis connection is back up');
    state = 'up';
    lastError = undefined;
  });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      // Stop the background reconnection: nobody will use this client.
      void closeRedisClient(client);
      const last = [lastError?.message, nodeDiagnosis].filter((part) => part !== undefined).join('; ');
      const reason = last === '' ? noAnswerReason(target) : ` (last error: ${last})`;
      const error = new StoreUnavailableError(lastError);
      error.message = `could not connect to Redis at ${safeUrl} within ${connectTimeoutMs} ms${reason}`;
      reject(error);
    }, connectTimeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
    // A first failure rejects connect(), but ioredis keeps retrying; 'ready' or the timer decides.
    client.connect().catch(() => {});
  });
  log.info('connected to Redis');
  /** On a Cluster: the hash slot of every key of this bridge (its `{prefix}` tag), asked once. */
  let prefixSlot: number | undefined;
  /** The hash slot of every key of this bridge on a Cluster (readGroups tells its script), else ''. */
  const slotArgument = target.kind === 'cluster' ? String(await prefixSlotOf()) : '';

  async function prefixSlotOf(): Promise<number> {
    prefixSlot ??= Number(await run(() => (client as Cluster).cluster('KEYSLOT', `${options.keyPrefix}:x`)));
    return prefixSlot;
  }

  async function run<T>(command: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await command();
      } catch (error) {
        // A script refused with NOSCRIPT did not run, and the connection that refused it now
        // sends EVAL (TRANSIENT_REPLY): one more call usually gets through, else 503.
        if (attempt === 1 && error instanceof Error && /^NOSCRIPT\b/.test(error.message)) continue;
        throw toStoreError(error);
      }
    }
  }

  /**
   * The contact engine's two commands per observation (readGroups, the guarded batch) are held in
   * the socket until the end of the event-loop iteration (cork, uncork in setImmediate), so the
   * observations of every request that became ready in one iteration reach Redis in one write
   * instead of one write each. On this VM a write to a Redis that went idle costs the bridge
   * ~30–60 µs of system time waking it (bench/trip-cost.js), more than building the command; at
   * saturation several requests are handled per iteration. Order on the connection is kept (one
   * socket, written in call order), so a lane's hand-over still finds its predecessor's write
   * ahead of its own (one exception: a script call Redis answers NOSCRIPT, after a SCRIPT FLUSH or
   * a restart, is sent again behind whatever followed it). Measured: README "Benchmarks", seventh round. A Cluster client has a socket
   * per node, found per command: it is left alone. The delivery worker's reads and writes (get,
   * zrangeByScore, plain batches) are held the same way: it asks for a record and its lane's head,
   * or marks a record and reads the lane's next head, in one tick (bench/HISTORY.md, nineteenth
   * round).
   */
  let corked: { uncork(): void } | null = null;
  const coalesceWrites = () => {
    if (corked !== null || target.kind === 'cluster') return;
    const stream = (client as Redis).stream as { cork(): void; uncork(): void } | undefined;
    if (!stream) return;
    corked = stream;
    stream.cork();
    setImmediate(() => {
      const held = corked;
      corked = null;
      held?.uncork();
    });
  };

  function createBatch(): StoreBatch {
    // The writes, sent through the guarded script (with no expectation it just runs them; a write
    // of very many arguments excepted, below): atomic like MULTI/EXEC, and a write that fails does
    // not stop the others, as with EXEC. One command written as one Buffer (script-command.ts)
    // instead of MULTI, EXEC and an ioredis Command per write: a delivery's mark (the record, its
    // lane, four index entries) was eight commands (bench/HISTORY.md, nineteenth round).
    //
    // Kept as GUARDED_BATCH_SCRIPT takes them, not as a tuple per expectation and an array per
    // write flattened at exec: the expectations' keys (KEYS) and their wants (ARGV after the
    // count), the writes' keys and, per write, command, argument count and arguments. A known
    // contact's batch has ~13 expectations and ~4 writes; those ~17 arrays were ~1.5 KB a webhook.
    const expectedKeys: string[] = [];
    /** ARGV[1] (the number of expectations, set at exec), then each expectation's want. */
    const expectedArgs: ScriptArgument[] = [0];
    const writeKeys: string[] = [];
    const writeArgs: ScriptArgument[] = [];
    /** The most arguments of one write (LONGEST_SCRIPT_WRITE). */
    let longestWrite = 0;
    /** Queues a write of `count` arguments, which the caller pushes onto writeArgs next. */
    const queue = (command: string, key: string, count: number): void => {
      writeKeys.push(key);
      writeArgs.push(command, count);
      if (count > longestWrite) longestWrite = count;
      batch.length++;
    };
    const queueMany = (command: string, key: string, values: ReadonlyArray<ScriptArgument>): StoreBatch => {
      if (values.length === 0) return batch;
      queue(command, key, values.length);
      for (const value of values) writeArgs.push(value);
      return batch;
    };
    const expectWant = (key: string, want: string | Buffer): StoreBatch => {
      expectedKeys.push(key);
      expectedArgs.push(want);
      return batch;
    };
    // `length` is a data property (StoreBatch.length says why not a getter).
    const batch: CountingBatch = {
      expect: (key, value) =>
        expectWant(
          key,
          value === null ? '0' : value.length > 64 ? `#${digestUtf8('sha1', value, 'hex')}` : `=${value}`,
        ),
      expectExists: (key) => expectWant(key, '*'),
      expectListHead: (key, values, identify) => expectWant(key, listHeadIds(values, identify)),
      set(key, value, ttlMs) {
        if (ttlMs === undefined) {
          queue('set', key, 1);
          writeArgs.push(value);
        } else {
          queue('set', key, 3);
          writeArgs.push(value, 'PX', ttlMs);
        }
        return batch;
      },
      del(key) {
        queue('del', key, 0);
        return batch;
      },
      expire(key, ttlMs) {
        queue('pexpire', key, 1);
        writeArgs.push(ttlMs);
        return batch;
      },
      incrBy(key, amount) {
        queue('incrby', key, 1);
        writeArgs.push(amount);
        return batch;
      },
      hset(key, field, value) {
        queue('hset', key, 2);
        writeArgs.push(field, value);
        return batch;
      },
      hdel(key, field) {
        queue('hdel', key, 1);
        writeArgs.push(field);
        return batch;
      },
      // Empty SADD/SREM/RPUSH are syntax errors in Redis (the batch would fail); the in-memory
      // store treats them as no-ops, and so do we.
      sadd: (key, ...members) => queueMany('sadd', key, members),
      srem: (key, ...members) => queueMany('srem', key, members),
      zadd(key, score, member) {
        queue('zadd', key, 2);
        writeArgs.push(scoreArg(score), member);
        return batch;
      },
      zrem(key, member) {
        queue('zrem', key, 1);
        writeArgs.push(member);
        return batch;
      },
      rpush: (key, ...values) => queueMany('rpush', key, values),
      ltrim(key, start, stop) {
        queue('ltrim', key, 2);
        writeArgs.push(start, stop);
        return batch;
      },
      length: 0,
      async exec() {
        if (expectedKeys.length > 0) return execGuarded();
        if (batch.length === 0) return true;
        // The script passes a write's arguments on with Lua's unpack(), which refuses ~8,000 and
        // more ("too many results to unpack"); a plain batch with such a write goes as MULTI/EXEC.
        if (longestWrite > LONGEST_SCRIPT_WRITE - 2) return execMulti();
        return execGuarded();
      },
    };
    async function execMulti(): Promise<boolean> {
      coalesceWrites();
      const writes: Array<[string, string, ...ScriptArgument[]]> = [];
      let at = 0;
      for (const key of writeKeys) {
        const count = writeArgs[at + 1] as number;
        writes.push([writeArgs[at] as string, key, ...writeArgs.slice(at + 2, at + 2 + count)]);
        at += 2 + count;
      }
      const multi = client.multi(writes);
      const results = await run(() => multi.exec());
      // null only when a WATCHed key changed; we never WATCH, so treat it as a failure.
      if (results === null) throw new Error('Redis discarded the transaction');
      // EXEC does not roll back: a command that fails at run time (e.g. WRONGTYPE) leaves the
      // others applied. Report the first failure.
      for (const [error] of results) if (error) throw toStoreError(error);
      return true;
    }
    async function execGuarded(): Promise<boolean> {
      // GUARDED_BATCH_SCRIPT's layout: the expectations' keys, then the writes' keys, in order.
      expectedArgs[0] = expectedKeys.length;
      const keys = writeKeys.length === 0 ? expectedKeys : expectedKeys.concat(writeKeys);
      const args = writeArgs.length === 0 ? expectedArgs : expectedArgs.concat(writeArgs);
      coalesceWrites();
      const applied = await run(() => guardedBatchScript(keys, args));
      return applied === 1;
    }
    return batch;
  }

  /**
   * The primary serving this bridge's hash slot, as the client's slot map names it now (SCAN;
   * WAIT before anything was written). On one server or Sentinel: the one connection.
   */
  async function primaryConnection(): Promise<Redis> {
    if (target.kind !== 'cluster') return client as Redis;
    const cluster = client as Cluster;
    const prefixSlot = await prefixSlotOf();
    const owner = cluster.slots[prefixSlot]?.[0];
    const node = cluster
      .nodes('master')
      .find((candidate) => `${candidate.options.host}:${candidate.options.port}` === owner);
    if (node === undefined) throw new Error(`no primary known for hash slot ${prefixSlot}`);
    return node;
  }

  /**
   * Store.scanKeys on a Cluster: a walk of every primary, one SCAN per call, the cursor naming
   * where it is (`<SCAN cursor>@<node>@<first node>`, nodes as host:port). Every key of this
   * bridge carries its hash tag, so it lives on the primary serving that slot — but a resharding
   * moves the slot, and while it does, a key is on either node (MIGRATE moves a few at a time);
   * after it, on the new one. Walking only the primary the client's slot map named saw none of
   * the keys already moved while the slot was split, and a walk that went on after the slot had
   * moved went on at the old primary (nothing left there) or, once the client knew, took the old
   * node's SCAN cursor to the new one, whose cursor means another place: keys were missed in
   * both cases (test/slow/cluster.reshard.test.ts). So:
   * - The walk starts at the slot's primary, then takes every other primary in address order.
   *   During a move keys only go from that primary to another one, which is walked after it: a
   *   key that moves before the walk reached it is found where it went.
   * - When the slot's primary is another than the one the walk started at (the slot moved, or a
   *   failover promoted a replica), or the node the cursor names is no longer a primary, the walk
   *   starts again from the beginning: the keys it answered are answered again (Store.scanKeys
   *   allows that; a re-index changes nothing twice), none is missed.
   * What it can still miss: keys of a slot that moves there and back within one walk, and keys
   * on a node the client's slot map does not yet name (it is read again at a redirection and
   * every 5 s). README "Running highly available": run it again after a move.
   */
  async function scanCluster(cursor: string, pattern: string, count: number): Promise<[string, string[]]> {
    const cluster = client as Cluster;
    const addressOf = (node: Redis) => `${node.options.host}:${node.options.port}`;
    const primaries = new Map(cluster.nodes('master').map((node) => [addressOf(node), node]));
    const owner = addressOf(await run(primaryConnection));
    let at = { scan: '0', node: owner, first: owner };
    // A bare SCAN cursor is one an older version answered (a re-index saves its place in the
    // store, and resumes after an upgrade): a place on the node it walked then, which the slot may
    // have left since. It starts the walk again, like a cursor from before a move.
    if (cursor !== '0' && !/^\d+$/.test(cursor)) {
      const parsed = /^(\d+)@([^@]+)@([^@]+)$/.exec(cursor);
      if (!parsed) throw new Error('ERR invalid cursor');
      const [, scan = '0', node = '', first = ''] = parsed;
      if (first === owner && primaries.has(node)) at = { scan, node, first };
    }
    const [next, found] = await run(() =>
      primaries.get(at.node)!.scan(at.scan, 'MATCH', pattern, 'COUNT', count),
    );
    if (next !== '0') return [`${next}@${at.node}@${at.first}`, found];
    // This node is done: the next primary in address order, the first one aside.
    const after = [...primaries.keys()]
      .filter((address) => address !== at.first && (at.node === at.first || address > at.node))
      .sort()[0];
    return [after === undefined ? '0' : `0@${after}@${at.first}`, found];
  }

  /** A 503 with what went wrong in its message (the log has it; the vendor is told to retry). */
  const unavailable = (message: string) => {
    const error = new StoreUnavailableError();
    error.message = message;
    return error;
  };

  /**
   * Where WAIT goes: the connection our reads and writes went through (WAIT counts the replicas
   * that have *that connection's* writes). On a Cluster the node connection that carried them
   * (see `carrier`), and only while the client still knows it as the primary serving their slot:
   * once the slot has moved (a failover made another node primary, a resharding moved it), the
   * writes may be on a server whose replicas nobody asks, or on none; WAIT anywhere else would
   * answer for another connection's writes.
   */
  async function waitConnection(): Promise<Redis> {
    if (target.kind !== 'cluster') return client as Redis;
    const node = carrier;
    if (node === undefined || carrierSlot === undefined) return primaryConnection();
    const cluster = client as Cluster;
    const serving = cluster.slots[carrierSlot]?.[0] === `${node.options.host}:${node.options.port}`;
    if (!serving || !cluster.nodes('master').includes(node))
      throw unavailable(
        `the Redis node these writes went through no longer serves hash slot ${carrierSlot} as its primary, so WAIT cannot vouch for them; retry later`,
      );
    return node;
  }

  /** Nothing to wait for without replicas: undefined, not a promise (Store.confirmWrites). */
  function confirmWrites(since?: number, confirmOptions?: ConfirmOptions): Promise<void> | undefined {
    return replicas === 0 ? undefined : confirmReplicas(since, confirmOptions ?? {});
  }

  async function confirmReplicas(since: number | undefined, confirmOptions: ConfirmOptions): Promise<void> {
    const changed = () => {
      if (since === undefined || since === connectionEpoch) return;
      throw unavailable(
        "the connection to Redis was made again (or, on a Cluster, the bridge's commands went through another node) since these writes, so WAIT cannot vouch for them; retry later",
      );
    };
    changed();
    if (confirmOptions.coverReads) {
      // WAIT's mark is the connection's last command that Redis propagated (releases after 7.0;
      // 7.0 and older moved it on every command, reads included, which covered this by chance).
      // What this caller read but did not write — the state a vendor's retry answers from, the
      // first attempt's writes, made on another connection or by another instance — is behind
      // that mark only if something is written now: a replica that acknowledges this write holds
      // everything the primary held when it ran, what was read before it on this connection
      // included (one replication stream per primary, in order). Written under the bridge's
      // prefix, so on a Cluster it goes to the slot's primary like the reads (the carrier; a read
      // that went elsewhere changed the epoch). One round trip, only for such callers.
      await run(() => client.set(COVER_READS_KEY, String(Date.now()), 'PX', COVER_READS_TTL_MS));
      changed();
    }
    // WAIT in slices shorter than the client's command timeout: one WAIT of timeoutMs would be
    // given up on by the client at the command timeout (2 s), cutting any longer timeoutMs short
    // (503 at 2 s while the replicas were catching up). A WAIT after another waits for at least
    // as much (this connection's offset only grows), so the slices never vouch for less.
    const deadline = performance.now() + waitTimeoutMs;
    let acknowledged = 0;
    for (;;) {
      const remaining = Math.ceil(deadline - performance.now());
      // At least 1 ms: WAIT with timeout 0 blocks for ever.
      const slice = Math.max(1, Math.min(remaining, waitSliceMs));
      acknowledged = await run(async () => (await waitConnection()).wait(replicas, slice));
      // Checked again after the reply: a WAIT queued while reconnecting runs on the new connection.
      changed();
      if (acknowledged >= replicas || remaining <= slice) break;
    }
    if (acknowledged < replicas)
      throw unavailable(
        `the write reached ${acknowledged} of ${replicas} replicas within ${waitTimeoutMs} ms; retry later`,
      );
  }

  const store: RedisStore = {
    kind: 'redis',
    topology: target.kind === 'redis' ? 'standalone' : target.kind,
    client,
    target,
    confirmWrites,
    writeMark: () => connectionEpoch,
    async probeWrite() {
      await run(() => client.set('ready-probe', String(Date.now()), 'PX', 60_000));
      await confirmWrites();
    },

    get: (key) => {
      coalesceWrites();
      return run(() => client.get(key));
    },
    mget: (keys) => (keys.length === 0 ? Promise.resolve([]) : run(() => client.mget(...keys))),
    async set(key, value, setOptions: SetOptions = {}) {
      const { ttlMs, nx } = setOptions;
      const reply = await run(() => {
        if (ttlMs !== undefined && nx) return client.set(key, value, 'PX', ttlMs, 'NX');
        if (ttlMs !== undefined) return client.set(key, value, 'PX', ttlMs);
        if (nx) return client.set(key, value, 'NX');
        return client.set(key, value);
      });
      return reply === 'OK';
    },
    del: (...keys) => (keys.length === 0 ? Promise.resolve(0) : run(() => client.del(...keys))),
    incr: (key) => run(() => client.incr(key)),
    pttl: (key) => run(() => client.pttl(key)),
    async countInWindow(key, windowMs) {
      checkWindow(windowMs);
      const [count, ttlMs] = await run(() => commands.chatbridgeCountInWindow(key, windowMs));
      return { count, ttlMs };
    },

    hget: (key, field) => run(() => client.hget(key, field)),
    hgetall: (key) => run(() => client.hgetall(key)),
    // HMGET takes at least one field; with none, HLEN still refuses a key of another type.
    hmget: async (key, fields) =>
      fields.length === 0
        ? run(() => client.hlen(key)).then(() => [])
        : run(() => client.hmget(key, ...fields)),
    async hset(key, field, value) {
      await run(() => client.hset(key, field, value));
    },
    hdel: (key, field) => run(() => client.hdel(key, field)),
    async hscanFields(key, cursor, count) {
      checkHscanFields(count);
      if (!/^\d+$/.test(cursor)) throw new Error(`ERR invalid cursor ${JSON.stringify(cursor)}`);
      const [next, fields] = await run(() => commands.chatbridgeHscanFields(key, cursor, count));
      return { cursor: next, fields };
    },

    sadd: (key, ...members) =>
      members.length === 0 ? store.smembers(key).then(() => 0) : run(() => client.sadd(key, ...members)),
    srem: (key, ...members) =>
      members.length === 0 ? Promise.resolve(0) : run(() => client.srem(key, ...members)),
    smembers: (key) => run(() => client.smembers(key)),
    smismember: async (key, members) =>
      members.length === 0
        ? store.smembers(key).then(() => [])
        : (await run(() => client.smismember(key, ...members))).map((held) => held === 1),
    async sinterScan(keys, cursor, { count, scan }: SinterScanOptions) {
      checkSinterScan(cursor, count, scan);
      if (keys.length === 0) return { cursor: '0', members: [] };
      const [next, members] = await run(() =>
        commands.chatbridgeSinterScan(keys.length, ...keys, cursor, count, scan),
      );
      return { cursor: next, members };
    },

    async scanKeys(prefix, cursor, count) {
      checkScanKeys(count);
      // ioredis prefixes keys, not SCAN's pattern: the prefix is written here, glob characters
      // escaped, and taken off the keys answered.
      const pattern = `${`${clientPrefix}${prefix}`.replace(/[*?[\]\\]/g, '\\$&')}*`;
      const page =
        target.kind === 'cluster'
          ? await scanCluster(cursor, pattern, count)
          : await run(() => (client as Redis).scan(cursor, 'MATCH', pattern, 'COUNT', count));
      const [next, found] = page;
      return { cursor: next, keys: found.map((key) => key.slice(clientPrefix.length)) };
    },

    async zadd(key, score, member) {
      await run(() => client.zadd(key, scoreArg(score), member));
    },
    zrem: (key, member) => run(() => client.zrem(key, member)),
    zcard: (key) => run(() => client.zcard(key)),
    zscore: async (key, member) => parseScore(await run(() => client.zscore(key, member))),
    zrangeByScore: (key, min, max, limit) => {
      coalesceWrites();
      return run(() =>
        limit === undefined
          ? client.zrangebyscore(key, scoreArg(min), scoreArg(max))
          : client.zrangebyscore(key, scoreArg(min), scoreArg(max), 'LIMIT', 0, limit),
      );
    },
    zrangeByScoreWithScores: async (key, min, max, limit) => {
      coalesceWrites();
      const flat = await run(() =>
        limit === undefined
          ? client.zrangebyscore(key, scoreArg(min), scoreArg(max), 'WITHSCORES')
          : client.zrangebyscore(key, scoreArg(min), scoreArg(max), 'WITHSCORES', 'LIMIT', 0, limit),
      );
      const pairs: Array<{ member: string; score: number }> = [];
      for (let index = 0; index + 1 < flat.length; index += 2)
        pairs.push({ member: flat[index]!, score: parseScore(flat[index + 1]!) ?? Number.NaN });
      return pairs;
    },
    zrevrangeByLex: (key, range: LexRangeOptions) => run(() => client.zrange(key, ...revLexArgs(range))),

    rpush: (key, ...values) => {
      if (values.length === 0) return store.llen(key);
      // Held with the iteration's other writes (coalesceWrites): the deferred intake's append is
      // the one store call of an acknowledged webhook, so at saturation the appends of every
      // request that became ready in one iteration leave in one write, not one ~9 KB write each.
      coalesceWrites();
      return run(() => client.rpush(key, ...values));
    },
    lrange: (key, start, stop) => run(() => client.lrange(key, start, stop)),
    zrevrangeByLexBuffer: (key, range: LexRangeBufferOptions) =>
      run(() => client.zrangeBuffer(key, ...revLexArgs(range))),
    lrangeBuffer: (key, start, stop) => run(() => client.lrangeBuffer(key, start, stop)),
    llen: (key) => run(() => client.llen(key)),

    async readGroups({ keys, ids = [], layout, maxRecords, decoy, claim }) {
      const args = [
        clientPrefix,
        layout.root,
        layout.members,
        layout.record,
        maxRecords,
        decoy ?? '',
        claim ? claim.ttlMs : '',
        slotArgument,
        ...(claim?.onlyIf ? [claim.onlyIf.field, claim.onlyIf.value] : []),
        ...ids,
      ];
      coalesceWrites();
      // A read by ids alone has no key to route it by: on a Cluster, ioredis sent the script to
      // any node, which refused the keys it computes from the prefix ("non local key"; a name
      // search and the webhooks after a failover answered 500). One key that is never written
      // routes it to the prefix's node; its value (nil) is dropped from the reply below.
      const routed = keys.length === 0 && !claim;
      const reply = (await run(() =>
        claim?.onlyIf
          ? guardedClaimReadGroupsScript([...keys, claim.onlyIf.hash, claim.key], args)
          : claim
            ? claimReadGroupsScript([...keys, claim.key], args)
            : readGroupsScript(routed ? [ROUTE_ONLY_KEY] : keys, args),
      )) as ReadGroupsReply;
      const result: GroupReadResult = {
        claimed: reply[0] === 1,
        values: [],
        roots: new Map(),
        members: new Map(),
        records: new Map(),
        complete: true,
      };
      if (reply[0] === 2) result.instead = reply[1];
      if (reply[0] !== 1) return result;
      const [, values, rootOf, groups, records, complete] = reply;
      result.values = routed ? [] : values;
      for (let i = 0; i < rootOf.length; i += 2) result.roots.set(rootOf[i]!, rootOf[i + 1]!);
      for (let i = 0; i < groups.length; i += 2)
        result.members.set(groups[i] as string, groups[i + 1] as string[]);
      for (let i = 0; i < records.length; i += 2) result.records.set(records[i]!, records[i + 1] ?? null);
      result.complete = complete === 1;
      return result;
    },

    batch: createBatch,

    async lock(keys, { ttlMs, waitMs }: LockOptions): Promise<Lock> {
      const lockKeys = [...new Set(keys)].map((key) => LOCK_KEY_PREFIX + key);
      if (lockKeys.length === 0) throw new Error('lock() needs at least one key');
      if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0)
        throw new Error("ERR invalid expire time in 'set' command");
      const token = randomUUID();
      const deadline = performance.now() + waitMs;
      for (let attempt = 0; ; attempt++) {
        const taken = await run(() => commands.chatbridgeLock(lockKeys.length, ...lockKeys, token, ttlMs));
        if (taken === 1) {
          return {
            keys: [...keys],
            async release() {
              try {
                await commands.chatbridgeUnlock(lockKeys.length, ...lockKeys, token);
              } catch (error) {
                // Every lock in flight when Redis went away fails here: said once a minute.
                warnOncePerMinute(
                  log,
                  releaseRepeats,
                  'release',
                  { err: error, keys },
                  'could not release a lock; it will expire by itself',
                );
              }
            },
            async renew(renewTtlMs = ttlMs) {
              if (!Number.isSafeInteger(renewTtlMs) || renewTtlMs <= 0)
                throw new Error("ERR invalid expire time in 'pexpire' command");
              const renewed = await run(() =>
                commands.chatbridgeRenew(lockKeys.length, ...lockKeys, token, renewTtlMs),
              );
              return renewed === 1;
            },
          };
        }
        const remaining = deadline - performance.now();
        if (remaining <= 0) throw new StoreBusyError(keys.join(', '));
        // Short jittered backoff: holders keep locks for milliseconds, and jitter spreads
        // competing waiters so they do not retry in lockstep.
        const backoff = Math.min(5 * 2 ** attempt, 100);
        await delay(Math.min(remaining, backoff / 2 + (Math.random() * backoff) / 2));
      }
    },

    async ping() {
      await run(() => client.ping());
    },
    async close() {
      if (closing) return;
      closing = true;
      // QUIT, or (Redis down, or the quit timed out) drop the socket and stop reconnecting.
      await closeRedisClient(client);
    },
  };
  return store;
}
