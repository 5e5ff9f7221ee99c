import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';

/**
 * Fixed-window counters per key (a client address, a channel), in process, in a bounded LRU
 * (lru-cache, as the engine's and LiveTex's caches): memory stays capped however many addresses
 * an attacker rotates through, and a window is forgotten once it is over. Per instance: N
 * instances allow N times the limit, which is documented.
 */
export class WindowLimiter {
  private readonly windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    maxKeys = 50_000,
    private readonly now: () => number = Date.now,
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

  /** Count one event for `key`. */
  hit(key: string): void {
    const at = this.now();
    const window = this.windows.get(key);
    if (!window || window.resetAt <= at) this.windows.set(key, { count: 1, resetAt: at + this.windowMs });
    else {
      window.count++;
      // Re-set keeps it most recently used; the cache's own expiry is only for eviction.
      this.windows.set(key, window);
    }
  }

  /** Count one event and say whether it went over the limit (seconds to wait, or 0). */
  take(key: string): number {
    const blocked = this.blockedFor(key);
    if (blocked > 0) return blocked;
    this.hit(key);
    return 0;
  }
}

/**
 * The limit on failed admin authentications (issue 10 item 16), shared by everything that checks
 * the admin token: the API's bearer gate and the console's sign-in form.
 */
export interface AdminAuthLimit {
  /** Throws TooManyRequestsError (429 with Retry-After) while `address` or the instance is over. */
  assertAllowed(address: string): void;
  /** Count one failed authentication from `address`. */
  failed(address: string): void;
}

const WITH_PORT = /^(?:\[([^\]]{2,45})\]|(\d{1,3}(?:\.\d{1,3}){3})):\d{1,5}$/;

/**
 * The client address the limits count by: Koa's `ctx.ip`, i.e. the `X-Forwarded-For` entry
 * `server.proxyHops` from the right, when that entry is an IP address (a proxy's `ip:port` form,
 * as Azure's writes it, taken without the port); otherwise the socket's peer. The entry is text
 * whoever is in front wrote: on a bridge reached directly while `proxyHops` is above 0 (the
 * default is 1), a client wrote it, and up to 16 KiB of made-up text a request made each
 * request its own counter key (limiters hold 50,000 keys: hundreds of MB). An address is at
 * most 45 characters, and what is not one counts against the connection it came on.
 */
export function clientAddress(ctx: {
  ip: string;
  request: { socket: { remoteAddress?: string | undefined } };
}): string {
  const given = ctx.ip;
  if (isIP(given) !== 0) return given;
  const ported = WITH_PORT.exec(given);
  const bare = ported ? (ported[1] ?? ported[2]!) : undefined;
  if (bare !== undefined && isIP(bare) !== 0) return bare;
  return ctx.request.socket.remoteAddress ?? '';
}
