import type { Context, Middleware } from 'koa';
import { LRUCache } from 'lru-cache';
import { addressSet, canonicalAddress, parseAddress, parseAddressRange } from '../net/address.js';

/**
 * Which connections may say who the client is (X-Forwarded-For) and how it connected
 * (X-Forwarded-Proto, X-Forwarded-Host): those from a trusted proxy, i.e. a connection whose own
 * address is in `server.trustedProxies`. Express (`trust proxy`, through proxy-addr) and Fastify
 * (`trustProxy`) decide the same way. The headers used to be taken from every connection while
 * `server.proxyHops` was above 0 (1 by default, with `server.host` 0.0.0.0): a client reaching
 * the bridge directly wrote its own address, a new one per request past every per-address limit,
 * or a staff member's address, spared by the admin lockout's ceiling (audit: proxy trust).
 */

/**
 * The default of `server.trustedProxies`: loopback, the private IPv4 ranges (RFC 1918),
 * link-local and IPv6 unique-local addresses, where nginx, an ingress or a cloud load balancer
 * in front of the bridge connects from. A client on the internet has none of them, so a bridge
 * reached directly takes no header from it, while one behind a proxy on its private network
 * works as it did.
 */
export const DEFAULT_TRUSTED_PROXIES = [
  '127.0.0.0/8',
  '::1',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '169.254.0.0/16',
  'fc00::/7',
  'fe80::/10',
] as const;

/** The trusted proxies' addresses: whether a canonical address (canonicalAddress) is one. */
export interface TrustedProxies {
  has(address: string): boolean;
}

/** Answers kept per address: a bridge's proxies are a handful of addresses, asked every request. */
const ANSWERS_KEPT = 1024;

/**
 * `server.trustedProxies` (already checked by the config's schema), matched by addressSet
 * (net.BlockList, about 5 µs a check on our machines). Every request asks it about its
 * connection, almost always one of the same few proxies, so the answers are kept in a small LRU
 * (a lookup well under 1 µs); a client connecting directly costs one check per new address, as
 * without it.
 */
export function trustedProxies(entries: readonly string[]): TrustedProxies {
  const ranges = entries.map((entry) => {
    const range = parseAddressRange(entry);
    if ('problem' in range) throw new TypeError(`server.trustedProxies: ${range.problem}`);
    return range;
  });
  const set = addressSet(ranges);
  const answers = new LRUCache<string, boolean>({ max: ANSWERS_KEPT });
  return {
    has(address) {
      const known = answers.get(address);
      if (known !== undefined) return known;
      const trusted = set.has(address);
      answers.set(address, trusted);
      return trusted;
    },
  };
}

/**
 * The client's address, as proxy-addr walks X-Forwarded-For: start at the connection's own
 * address (`peer`); while the address in hand is a trusted proxy's and fewer than `hops` entries
 * were taken, take the next entry from the right (what that proxy saw connect to it). So:
 *
 * - a connection that is not from a trusted proxy is the client, whatever it wrote;
 * - with one hop (the default) the entry the proxy appended counts, never one left of it;
 * - with more, the walk stops at the first address that is not a trusted proxy's: a client that
 *   reached the inner proxy directly, past the outer one, is counted by the address the inner
 *   proxy saw, not by the entry it wrote itself left of it.
 *
 * An entry that is not an IP address (made-up text, an empty entry) stops the walk too: the
 * address counts of the proxy that passed it on (up to 16 KiB of text a request would otherwise
 * be a limiter key of its own). The address returned is canonical (one spelling per client).
 */
export function forwardedClient(
  peer: string,
  forwardedFor: string,
  trusted: TrustedProxies,
  hops: number,
): string {
  let address = canonicalAddress(peer);
  if (hops === 0 || forwardedFor === '') return address;
  const entries = forwardedFor.split(',');
  for (let hop = 0; hop < hops && hop < entries.length; hop++) {
    if (!trusted.has(address)) break;
    const next = parseAddress(entries[entries.length - 1 - hop]!.trim());
    if (next === undefined) break;
    address = next;
  }
  return address;
}

/** The headers only a trusted proxy may send: Koa reads them when `app.proxy` is on. */
const FORWARDED_HEADERS = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'] as const;

/**
 * The first middleware of the main app. On a connection from a trusted proxy (with `hops` above
 * 0) `ctx.ip` becomes forwardedClient's address, and Koa reads X-Forwarded-Proto and -Host
 * (ctx.protocol, ctx.host: the console's Secure-cookie warning, its intake URLs without
 * publicUrl). From anyone else those headers are dropped before anything reads them and
 * `ctx.ip` is the connection's own address. Koa's `app.proxy` is one switch for the whole app;
 * dropping the headers makes it per connection without re-implementing Koa's getters.
 */
export function forwardedHeaders(hops: number, trusted: TrustedProxies): Middleware {
  // Not async: it only passes on, and a promise of its own resolved with next()'s cost every
  // request two more microtask jobs (bench/HISTORY.md, twenty-fifth round).
  return (ctx: Context, next) => {
    const peer = canonicalAddress(ctx.req.socket.remoteAddress ?? '');
    if (hops > 0 && trusted.has(peer)) {
      ctx.request.ip = forwardedClient(peer, ctx.get('x-forwarded-for'), trusted, hops);
    } else {
      for (const name of FORWARDED_HEADERS) delete ctx.req.headers[name];
      ctx.request.ip = peer;
    }
    return next();
  };
}
