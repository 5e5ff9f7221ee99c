import { BlockList, isIP } from 'node:net';
import type { Context, Middleware } from 'koa';
import { LRUCache } from 'lru-cache';
import { canonicalAddress } from './rate-limit.js';

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

/** One entry of `server.trustedProxies`: an address is a range of one. */
export interface ProxyRange {
  /** In canonical form (canonicalAddress): an IPv4-mapped address is IPv4. */
  network: string;
  prefixLength: number;
  family: 'ipv4' | 'ipv6';
}

const RANGE_EXAMPLE = 'such as 10.0.0.5, 10.0.0.0/8 or fd00::/8';

/**
 * An entry of `server.trustedProxies` (an address or a CIDR range), or what is wrong with it, as
 * the config's message (the schema's check and trustedProxies both use this). Host bits after
 * the prefix are allowed (`10.1.2.3/8` is 10.0.0.0/8), as proxy-addr and net.BlockList take them.
 */
export function parseProxyRange(entry: string): ProxyRange | { problem: string } {
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const prefixText = slash === -1 ? undefined : entry.slice(slash + 1);
  const family = isIP(address);
  const unknown = { problem: `"${entry}" is not an IP address or CIDR range (${RANGE_EXAMPLE})` };
  if (family === 0 || (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText))) return unknown;
  // isIP takes a zone of any text; client addresses are compared without theirs.
  const zone = address.indexOf('%');
  if (zone !== -1)
    return {
      problem: `"${entry}": leave out the zone (${address.slice(zone)}); addresses are compared without it`,
    };
  const max = family === 4 ? 32 : 128;
  const prefixLength = prefixText === undefined ? max : Number(prefixText);
  if (prefixLength > max)
    return {
      problem: `"${entry}": an IPv${family} range has a prefix length of 0 to ${max}`,
    };
  const network = canonicalAddress(address);
  if (family === 6 && isIP(network) === 4) {
    // A client's IPv4-mapped address (a dual-stack socket) is compared as IPv4: one mapped
    // address is that IPv4 address, a mapped range would silently match nothing.
    if (prefixText === undefined) return { network, prefixLength: 32, family: 'ipv4' };
    const asIpv4 = prefixLength >= 96 ? `${network}/${prefixLength - 96}` : 'such as 10.0.0.0/8';
    return {
      problem: `"${entry}": write an IPv4 range in IPv4 form (${asIpv4}): IPv4 clients are compared as IPv4 addresses`,
    };
  }
  return { network, prefixLength, family: family === 4 ? 'ipv4' : 'ipv6' };
}

/** The trusted proxies' addresses: whether a canonical address (canonicalAddress) is one. */
export interface TrustedProxies {
  has(address: string): boolean;
}

/** Answers kept per address: a bridge's proxies are a handful of addresses, asked every request. */
const ANSWERS_KEPT = 1024;

/**
 * `server.trustedProxies` (already checked by the config's schema), matched by net.BlockList.
 * Its check builds a SocketAddress each call, about 5 µs on our machines: every request asks it
 * about its connection, almost always one of the same few proxies, so the answers are kept in a
 * small LRU (a lookup well under 1 µs); a client connecting directly costs one check per new
 * address, as without it.
 */
export function trustedProxies(entries: readonly string[]): TrustedProxies {
  const list = new BlockList();
  for (const entry of entries) {
    const range = parseProxyRange(entry);
    if ('problem' in range) throw new TypeError(`server.trustedProxies: ${range.problem}`);
    list.addSubnet(range.network, range.prefixLength, range.family);
  }
  const answers = new LRUCache<string, boolean>({ max: ANSWERS_KEPT });
  return {
    has(address) {
      const known = answers.get(address);
      if (known !== undefined) return known;
      const family = isIP(address);
      const trusted = family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
      answers.set(address, trusted);
      return trusted;
    },
  };
}

/** A proxy's `ip:port` entry (Azure's load balancers write one): IPv4 or bracketed IPv6. */
const WITH_PORT = /^(?:\[([^\]]{2,45})\]|(\d{1,3}(?:\.\d{1,3}){3})):\d{1,5}$/;

/** The address one X-Forwarded-For entry gives, in canonical form, or undefined if it is none. */
function entryAddress(entry: string): string | undefined {
  if (isIP(entry) !== 0) return canonicalAddress(entry);
  const ported = WITH_PORT.exec(entry);
  const bare = ported ? (ported[1] ?? ported[2]!) : undefined;
  return bare !== undefined && isIP(bare) !== 0 ? canonicalAddress(bare) : undefined;
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
    const next = entryAddress(entries[entries.length - 1 - hop]!.trim());
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
  return async (ctx: Context, next) => {
    const peer = canonicalAddress(ctx.req.socket.remoteAddress ?? '');
    if (hops > 0 && trusted.has(peer)) {
      ctx.request.ip = forwardedClient(peer, ctx.get('x-forwarded-for'), trusted, hops);
    } else {
      for (const name of FORWARDED_HEADERS) delete ctx.req.headers[name];
      ctx.request.ip = peer;
    }
    await next();
  };
}
