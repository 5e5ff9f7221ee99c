import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { TooManyRequestsError } from '../errors.js';
import { createRepeatGate } from '../logger.js';
import { canonicalAddress, limitKey } from '../net/address.js';
import type { Store } from '../store/types.js';

/**
 * Fixed-window counters per key (a client address, a channel), in process, in a bounded LRU
 * (lru-cache, as the engine's and LiveTex's caches): memory stays capped however many addresses
 * an attacker rotates through, and a window is forgotten once it is over. Per instance: N
 * instances allow N times the limit, which is documented (the LiveTex lookup's limits; the
 * failed-authentication limits also share their counts through the store, createAuthFailureLimit).
 */
export class WindowLimiter {
  private readonly windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    maxKeys = 50_000,
    readonly now: () => number = Date.now,
  ) {
    // ttlResolution 0: read the clock on every call (the default caches it for a millisecond,
    // which a test's pinned clock would not see move).
    this.windows = new LRUCache({ max: maxKeys, ttl: windowMs, ttlResolution: 0, perf: { now } });
  }

  /** Seconds until `key` may try again, or 0 when it is under its limit. */
  blockedFor(key: string): number {
    const window = this.windows.get(key);
    if (!window || window.resetAt <= this.now() || window.count < this.limit) return 0;
    return (window.resetAt - this.now()) / 1000;
  }

  /*
   * A window is counted in place, not set again: the cache's `get` has already made the key the
   * most recently used, and the entry's own expiry (set with the window, `ttl` = windowMs on the
   * same clock) falls when the window is over, after which a read starts a new one anyway. The
   * second set per take re-armed that expiry and moved the key once more, ~0.3–0.6 µs in a loop,
   * twice per lookup (bench/HISTORY.md, twenty-eighth round).
   */

  /** Count one event for `key`. */
  hit(key: string): void {
    const at = this.now();
    const window = this.windows.get(key);
    if (!window || window.resetAt <= at) this.windows.set(key, { count: 1, resetAt: at + this.windowMs });
    else window.count++;
  }

  /**
   * Count one event and say whether it went over the limit (seconds to wait, or 0): blockedFor,
   * then hit, with one read of the window and of the clock (every lookup takes two limits; each
   * read the window twice and the clock three times).
   */
  take(key: string): number {
    const at = this.now();
    const window = this.windows.get(key);
    if (!window || window.resetAt <= at) {
      this.windows.set(key, { count: 1, resetAt: at + this.windowMs });
      return 0;
    }
    if (window.count >= this.limit) return (window.resetAt - at) / 1000;
    window.count++;
    return 0;
  }

  /**
   * Undo one `take` of `key` that counted (answered 0) when this limiter's clock read `takenAt`
   * (read after the take): the event turned out not to be one the limit is for (a replayed
   * LiveTex lookup, refused once its jti claim failed). Only while the window it counted in is
   * still the key's: a window begun since never counted it.
   */
  giveBack(key: string, takenAt: number): void {
    const window = this.windows.peek(key);
    if (window && window.resetAt - this.windowMs <= takenAt && window.count > 0) window.count--;
  }
}

/**
 * The limit on failed authentications with one bearer token (issue 10 item 16), shared by
 * everything that checks it: for the admin token, the API's bearer gate and the console's
 * sign-in form (scope admin_auth); for metrics.token, GET /metrics on the main port
 * (metrics_auth). See createAuthFailureLimit for what it counts and why.
 */
export interface AdminAuthLimit {
  /**
   * Whether `address` authenticates: rejects with TooManyRequestsError (429 with Retry-After)
   * when it may not try now, without calling `tokenMatches`; otherwise calls it (a synchronous,
   * constant-time comparison), counts a failure or notes the success, and answers its result.
   * One call, so that the limit's decision, the comparison and the count happen in one turn of
   * the event loop: split over awaits, concurrent guesses to one instance could all be let try
   * before the first was counted. `address` is clientAddress's; an IPv6 one counts by its
   * prefix (limitKey).
   */
  check(address: string, tokenMatches: () => boolean): Promise<boolean>;
}

/**
 * How long an address that presented the right token stays exempt from the ceiling. A day: staff
 * who worked yesterday from the office or the VPN are let in today, while someone who has never
 * presented the token cannot get an address exempted at all.
 */
export const KNOWN_ADDRESS_TTL_MS = 24 * 3_600_000;
/** How often an instance re-writes a known address to the shared store (not on every request). */
const KNOWN_ADDRESS_REFRESH_MS = 3_600_000;
/** Known addresses kept in process (only the right token adds one, so this is a backstop). */
const KNOWN_ADDRESSES_MAX = 10_000;
/**
 * How long the limiter waits for one answer from the shared store before it answers from its own
 * counters. The client's command timeout (2 s) is for the store's real work; a hung Redis (frozen,
 * not refusing connections) made every admin authentication wait that long, twice for a wrong
 * token. A healthy Redis answers these reads in well under a millisecond.
 */
export const SHARED_DEADLINE_MS = 250;
/**
 * After the shared store failed or missed the deadline, how long the limiter leaves it alone (its
 * own counters answer), then one authentication tries it again: a hung Redis costs one
 * SHARED_DEADLINE_MS per cool-down, not one per request.
 */
export const SHARED_COOL_DOWN_MS = 5_000;

export interface AuthFailureLimitOptions {
  scope: 'admin_auth' | 'metrics_auth';
  /** Failures per client address per window (limits.rate.adminAuthFailuresPerAddress). */
  perAddress: number;
  /** Failures from all addresses together per window (limits.rate.adminAuthFailuresCeiling). */
  ceiling: number;
  windowMs: number;
  /**
   * An IPv6 client counts by this many leading bits of its address (limits.rate.ipv6PrefixLength,
   * limitKey): its failures, and whether it presented the right token lately.
   */
  ipv6PrefixLength: number;
  /**
   * Where the counts are shared by every instance of the bridge (Redis), or null: this process's
   * counters only (the in-memory store, which no other process sees anyway).
   */
  shared: Store | null;
  logger: Logger;
  /** Called once per refused request (the chatbridge_rate_limited_total counter). */
  onRefused(): void;
  now?: () => number;
}

/** What the shared store holds for one address, read in one MGET. */
interface SharedCounts {
  address: number;
  all: number;
  known: boolean;
}

/**
 * Failed authentications, limited two ways (OWASP's Authentication and Credential Stuffing cheat
 * sheets: throttle guessing without letting the throttle lock legitimate users out):
 *
 * - **Per address**: after `perAddress` failures an address gets 429 until its window ends, its
 *   right token included (a guess past the limit is not evaluated at all, or the limit would not
 *   slow anyone). Only that address: a stranger cannot spend someone else's allowance, as the
 *   address is the entry the trusted proxies wrote (clientAddress).
 * - **A ceiling on all addresses together**, against guessing spread over many addresses (a
 *   botnet, an IPv6 range) that the per-address limit alone would let run at addresses × limit.
 *   Past it, an address is refused *before its token is looked at* (a right guess must look like
 *   a wrong one, or the ceiling would not slow guessing either), **unless it presented the right
 *   token within the last day** (KNOWN_ADDRESS_TTL_MS). It used to refuse every address, so
 *   anyone able to send `ceiling` wrong tokens a minute locked every admin, console sign-in and
 *   scraper out, for as long as they kept sending. Known addresses still have their own
 *   per-address limit, and nobody can make an address known without the token (an IPv6
 *   "address" is its prefix, limitKey: one right token makes its whole /64 known). What remains: a
 *   person at an address the bridge has not seen with the token today waits for the window to end
 *   while a distributed guess is under way (or works from an address that has signed in, or a
 *   console session, which this limit does not touch).
 *
 * Why not let a right token through the ceiling from anywhere: then a guess past the ceiling
 * would be answered 200 or 429, and the ceiling would slow no one. The config asks only that
 * admin.token (and metrics.token) be at least 16 characters, not that they be random: a token
 * people chose (`Company-Admin-2024`) is what the ceiling protects. A random one (`openssl rand
 * -base64 32`, README "Security") is beyond guessing at any rate these limits allow.
 *
 * With a shared store the counts (and the known addresses) are the bridge's, not the instance's:
 * behind a load balancer, N instances allowed N times each limit. One MGET per authentication
 * (the admin API and the sign-in are not hot paths) and two counter writes per failure. This
 * instance's own counters are kept too: they are the floor when the shared counts are read
 * (concurrent guesses across instances can pass by what is in flight at once, never by more than
 * the old per-instance limits), and they answer alone while the store cannot be reached: a
 * wrong token then still gets 401 or 429, never a 5xx, and the fallback is logged once (and its
 * end), not once per request. A store that hangs rather than refuses costs little too: each call
 * here has its own deadline (SHARED_DEADLINE_MS), and after a failure the store is left alone for
 * SHARED_COOL_DOWN_MS, so staff on a degraded Redis are not held up on every request.
 */
/** The shared store did not answer within SHARED_DEADLINE_MS. */
class SharedDeadlineError extends Error {
  constructor(ms: number) {
    super(`no answer from the store within ${ms} ms`);
    this.name = 'SharedDeadlineError';
  }
}

/**
 * `work`, or a SharedDeadlineError after `ms`. The command itself is not cancelled (ioredis has no
 * way to): its late answer or its own timeout is dropped here. When the timer fires, pending I/O
 * gets one turn first (setImmediate runs after the poll phase), so a reply that arrived while this
 * process was busy (a GC pause, a loaded machine) is taken rather than counted as a hung store.
 */
function withinDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (settled) return;
          settled = true;
          reject(new SharedDeadlineError(ms));
        }),
      ms,
    );
    work.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export function createAuthFailureLimit(options: AuthFailureLimitOptions): AdminAuthLimit {
  const { scope, perAddress, ceiling, windowMs, ipv6PrefixLength, shared, logger, onRefused } = options;
  const now = options.now ?? Date.now;
  const byAddress = new WindowLimiter(perAddress, windowMs, 50_000, now);
  const all = new WindowLimiter(ceiling, windowMs, 1, now);
  /** Address -> when it was last written to the shared store. */
  const known = new LRUCache<string, number>({
    max: KNOWN_ADDRESSES_MAX,
    ttl: KNOWN_ADDRESS_TTL_MS,
    ttlResolution: 0,
    perf: { now },
  });
  // Key layout (the store adds its prefix, a hash tag on a Cluster, so the MGET below stays in
  // one slot). An address is what limitKey made of clientAddress's: at most 43 characters (an
  // IPv6 prefix and its length), so keys stay short.
  const addressKey = (address: string) => `auth-limit:${scope}:address:${address}`;
  const allKey = `auth-limit:${scope}:all`;
  const knownKey = (address: string) => `auth-limit:${scope}:known:${address}`;

  let sharedDown = false;
  /** Until when the shared store is left alone (a tiny circuit breaker; SHARED_COOL_DOWN_MS). */
  let skipUntil = 0;
  /**
   * The shared store to ask now, or null: none, or cooling down after a failure. Once the
   * cool-down is over one authentication tries it again, the others meanwhile still skip it (the
   * cool-down is pushed on before the try), so a hung store delays one request per cool-down.
   */
  const usableShared = (): Store | null => {
    if (!shared) return null;
    const at = now();
    if (at < skipUntil) return null;
    if (sharedDown) skipUntil = at + SHARED_COOL_DOWN_MS;
    return shared;
  };
  const ask = <T>(call: (store: Store) => Promise<T>, store: Store): Promise<T> =>
    withinDeadline(call(store), SHARED_DEADLINE_MS);
  const sharedFailed = (error: unknown) => {
    skipUntil = now() + SHARED_COOL_DOWN_MS;
    if (sharedDown) return;
    sharedDown = true;
    logger.warn(
      { err: error, scope, retryAfterMs: SHARED_COOL_DOWN_MS },
      'admin-auth limits: the store cannot be reached; counting failed authentications on this instance only until it is back',
    );
  };
  const sharedAnswered = () => {
    skipUntil = 0;
    if (!sharedDown) return;
    sharedDown = false;
    logger.info(
      { scope },
      'admin-auth limits: the store answers again; failed authentications are counted across instances',
    );
  };
  const ceilingRepeats = createRepeatGate(windowMs, now);

  /** Seconds left of a shared window (one more trip, on a refusal only). */
  const sharedWait = async (key: string): Promise<number> => {
    const store = usableShared();
    if (!store) return windowMs / 1000;
    try {
      const ms = await ask((given) => given.pttl(key), store);
      return ms > 0 ? ms / 1000 : windowMs / 1000;
    } catch (error) {
      sharedFailed(error);
      return windowMs / 1000;
    }
  };

  /**
   * 'allowed', or why not: seconds to wait (this instance's own window), -1 (the shared count
   * for the address) or -2 (the shared ceiling). Synchronous: see AdminAuthLimit.check.
   */
  function decide(address: string, counts: SharedCounts | null): number | 'allowed' {
    const local = byAddress.blockedFor(address);
    if (local > 0) return local;
    if (counts && counts.address >= perAddress) return -1;
    if (known.has(address) || counts?.known) return 'allowed';
    const localAll = all.blockedFor('all');
    if (localAll <= 0 && !(counts !== null && counts.all >= ceiling)) return 'allowed';
    const repeats = ceilingRepeats.sayNow(scope);
    if (repeats !== undefined)
      logger.warn(
        { scope, ceiling, ...(repeats > 0 ? { repeats } : {}) },
        'admin-auth limits: the ceiling on failed authentications from all addresses is reached; addresses that did not present the right token in the last 24 h get 429 until the window ends',
      );
    return localAll > 0 ? localAll : -2;
  }

  async function readShared(address: string): Promise<SharedCounts | null> {
    const store = usableShared();
    if (!store) return null;
    try {
      const [fromAddress, fromAll, isKnown] = await ask(
        (given) => given.mget([addressKey(address), allKey, knownKey(address)]),
        store,
      );
      sharedAnswered();
      return { address: Number(fromAddress ?? 0), all: Number(fromAll ?? 0), known: isKnown !== null };
    } catch (error) {
      sharedFailed(error);
      return null;
    }
  }

  async function countFailure(address: string): Promise<void> {
    const store = usableShared();
    if (!store) return;
    try {
      await ask(
        (given) =>
          Promise.all([
            given.countInWindow(addressKey(address), windowMs),
            given.countInWindow(allKey, windowMs),
          ]),
        store,
      );
      sharedAnswered();
    } catch (error) {
      sharedFailed(error);
    }
  }

  async function noteSuccess(address: string): Promise<void> {
    const at = now();
    const written = known.get(address);
    if (written !== undefined && at - written < KNOWN_ADDRESS_REFRESH_MS) return;
    known.set(address, at);
    if (!shared) return;
    const store = usableShared();
    // Cooling down: known here, and written at this address's next success after it.
    if (!store) {
      known.set(address, at - KNOWN_ADDRESS_REFRESH_MS);
      return;
    }
    try {
      await ask((given) => given.set(knownKey(address), '1', { ttlMs: KNOWN_ADDRESS_TTL_MS }), store);
      sharedAnswered();
    } catch (error) {
      // Known here; written again at this address's next success.
      known.set(address, at - KNOWN_ADDRESS_REFRESH_MS);
      sharedFailed(error);
    }
  }

  return {
    async check(given, tokenMatches) {
      // Every spelling of one client, and an IPv6 client's whole prefix, is one address here.
      const address = limitKey(given, ipv6PrefixLength);
      const counts = await readShared(address);
      // From here to the local count below: no await (see AdminAuthLimit.check).
      const verdict = decide(address, counts);
      if (verdict !== 'allowed') {
        onRefused();
        // A shared window's end costs one more trip, on a refusal only.
        const seconds =
          verdict > 0 ? verdict : await sharedWait(verdict === -1 ? addressKey(address) : allKey);
        throw new TooManyRequestsError(seconds);
      }
      if (tokenMatches()) {
        await noteSuccess(address);
        return true;
      }
      byAddress.hit(address);
      all.hit('all');
      await countFailure(address);
      return false;
    },
  };
}

export interface WebhookTokenLimitOptions {
  /** Failed tokens per client address per window (limits.rate.webhookTokenFailuresPerAddress). */
  perAddress: number;
  windowMs: number;
  /** An IPv6 client counts by this many leading bits of its address (limitKey). */
  ipv6PrefixLength: number;
  logger: Logger;
  /** Called once per refused request (the chatbridge_rate_limited_total counter). */
  onRefused(): void;
  now?: () => number;
}

/**
 * Failed webhook URL tokens (a wrong token, or a channel that is none: both get the one 404),
 * limited per client address; see createWebhookTokenLimit.
 */
export interface WebhookTokenLimit {
  /**
   * Whether the webhook may go on: `right` is whether its channel exists and its token matched
   * (compared by the caller for every request, so a refused one costs the same comparison).
   * False for a wrong token (counted), and for any token from an address over its limit that
   * has not presented a right one lately (refused before `right` is looked at).
   */
  admits(request: Parameters<typeof clientAddress>[0], right: boolean): boolean;
}

/**
 * Without a limit a webhook token could be guessed at full speed: every wrong one got its 404 at
 * once. After `perAddress` failures in a window an address gets that same 404 for every webhook,
 * its right token included, until the window ends: a right guess looks like a wrong one, and the
 * guesser is not told it was held back (a 429 would tell it the limit, and when to go on).
 *
 * A vendor must never be refused a right token: a right token is never counted, and an address
 * that presented one in the last day (KNOWN_ADDRESS_TTL_MS) is never held back by its own wrong
 * ones (a vendor's servers with one channel set up wrongly at the vendor, or another of the
 * vendor's customers pointed at this bridge). What remains: a vendor address that sends
 * `perAddress` wrong tokens before its first right one since a token last failed (anywhere)
 * waits for the window to end, with the 404 its wrong URLs were getting anyway.
 *
 * The hot path pays nothing: until some token fails, a right one returns at once, without the
 * client address (noting every right token's address as known cost ~0.7–1.5 µs a webhook in a
 * loop, mostly the TTL cache's write; this check ~10–50 ns). After a failure, for a day, right
 * tokens note their address as known (one bounded LRU write). Counted per instance, as the
 * LiveTex lookup's limits are, on Redis too (decided, not overlooked: README "Security"). There is
 * no ceiling across addresses (a vendor's servers are many addresses), so a guesser with A
 * addresses gets A times the limit however the instances count; shared, N instances would allow
 * A times the limit instead of N × A times, for a store trip per wrong token and per first right
 * one from each vendor address after a failure (and, to close the gap fully, a check of the
 * store's "failed lately" on right tokens this instance would otherwise pass at once). The
 * token's randomness is what protects it; this limit slows a guess at a chosen one.
 */
export function createWebhookTokenLimit(options: WebhookTokenLimitOptions): WebhookTokenLimit {
  const { perAddress, windowMs, ipv6PrefixLength, logger, onRefused } = options;
  const now = options.now ?? Date.now;
  const failures = new WindowLimiter(perAddress, windowMs, 50_000, now);
  /** Addresses that presented a right token lately (only a right token adds one). */
  const known = new LRUCache<string, true>({
    max: KNOWN_ADDRESSES_MAX,
    ttl: KNOWN_ADDRESS_TTL_MS,
    ttlResolution: 0,
    perf: { now },
  });
  /** Whether a token failed within the last KNOWN_ADDRESS_TTL_MS (lastFailureAt), anywhere. */
  let failedLately = false;
  let lastFailureAt = 0;
  const refusals = createRepeatGate(windowMs, now);
  return {
    admits(request, right) {
      if (right && !failedLately) return true;
      if (right && now() - lastFailureAt >= KNOWN_ADDRESS_TTL_MS) {
        failedLately = false;
        return true;
      }
      const address = limitKey(clientAddress(request), ipv6PrefixLength);
      if (failures.blockedFor(address) > 0 && !known.has(address)) {
        onRefused();
        const repeats = refusals.sayNow(address);
        if (repeats !== undefined)
          logger.warn(
            { address, limit: perAddress, ...(repeats > 0 ? { repeats } : {}) },
            'webhook token limits: an address sent more wrong webhook tokens than limits.rate.webhookTokenFailuresPerAddress; its webhooks get 404 until the window ends',
          );
        return false;
      }
      if (right) {
        known.set(address, true);
        return true;
      }
      failures.hit(address);
      lastFailureAt = now();
      failedLately = true;
      return false;
    },
  };
}

/**
 * The client address the limits count by: `ctx.ip` as forwardedHeaders (src/http/forwarded.ts,
 * the app's first middleware) set it: the connection's own address or, on a connection from a
 * trusted proxy (server.trustedProxies), the address its walk of X-Forwarded-For reached (at most
 * `server.proxyHops` entries). Before the header was read from trusted proxies only, a client
 * reaching the bridge directly wrote it: a new address per request past every per-address limit,
 * or up to 16 KiB of made-up text as a counter key of its own (limiters hold 50,000 keys:
 * hundreds of MB). An entry that is no IP address still counts against the proxy that passed it
 * on, a proxy's `ip:port` as its address.
 *
 * The address is in its one spelling (canonicalAddress, src/net/address.ts): `2001:DB8:0::1`,
 * `2001:db8::1` and `[2001:db8::1]:443` are one client, `::ffff:192.0.2.1` (a dual-stack socket,
 * some proxies) is `192.0.2.1`. Each spelling was a counter of its own (audit-security4). What a
 * limit counts by is limitKey of it: an IPv6 client by its prefix. A `ctx.ip` that is no IP address (the
 * connection had none) is not taken: the connection's own address counts.
 */
export function clientAddress(ctx: {
  ip: string;
  request: { socket: { remoteAddress?: string | undefined } };
}): string {
  const given = ctx.ip;
  return canonicalAddress(isIP(given) !== 0 ? given : (ctx.request.socket.remoteAddress ?? ''));
}
