import { BlockList, isIP } from 'node:net';

/**
 * Client addresses, in one place: one spelling per address (canonicalAddress), what the rate
 * limits count an address by (limitKey: an IPv6 client by its prefix), the address an
 * X-Forwarded-For entry names (parseAddress), and address ranges (parseAddressRange, addressSet:
 * `server.trustedProxies`). The limits (src/http/rate-limit.ts) and the walk of X-Forwarded-For
 * (src/http/forwarded.ts) both count on every spelling of one client coming out the same here.
 *
 * Written here rather than taken from a library (ipaddr.js is what proxy-addr uses): the bridge
 * needs only these, for input node:net's isIP has already checked, and test/net.address.test.ts
 * pins them.
 */

/**
 * An IP address in one spelling: an IPv6 one as RFC 5952 writes it (lower case, no leading
 * zeros, the longest run of two or more zero groups as `::`, the first of equal runs), an
 * IPv4-mapped one (`::ffff:a.b.c.d`, however written) as the IPv4 address, an IPv4 one as it
 * is (isIP refuses leading zeros, so it has one spelling already). Anything isIP does not take
 * is returned as it is (the socket's address when there is none: '').
 *
 * Each spelling of one client was a counter of its own in the limits (audit-security4):
 * `2001:DB8:0::1` and `2001:db8::1` are one client, and `::ffff:192.0.2.1` (a dual-stack socket,
 * some proxies) is `192.0.2.1`.
 *
 * An IPv6 zone id (`fe80::1%eth0`) is dropped: node:net's isIP accepts one of any length
 * (letters, digits, `-`, `.`, `:`), so `fe80::1%<16 KiB>` passed as an address and each made-up
 * zone was a counter of its own again, as long as the header, on Redis too (audit-security3).
 * The zone names an interface of the machine that wrote the address, nothing about the client.
 */
export function canonicalAddress(address: string): string {
  // The whole address is its own prefix: one code path for both, so they cannot disagree.
  return written(address, 128);
}

/** The prefix length limits.rate.ipv6PrefixLength has by default: the smallest usual allocation. */
export const DEFAULT_IPV6_PREFIX_LENGTH = 64;

/**
 * What the limits count an address by, in canonical form (canonicalAddress): an IPv4 address
 * itself; an IPv6 address by its first `prefixLength` bits (limits.rate.ipv6PrefixLength, 64 by
 * default), written as the prefix (`2001:db8:1:2::/64`), or itself at 128. A subscriber usually
 * gets at least a /64 and picks addresses in it at will (privacy extensions make a new one every
 * day, or per connection), so per address a single client had 2^64 counters to rotate through,
 * each of the limits' keys (and, on Redis, a key) of its own, and staff on a new temporary
 * address were strangers to the admin lockout's known addresses. Counted by its /64 a client is
 * one key, and its addresses are one known "address" too (who shares a /64 shares one network,
 * as who shares an IPv4 address behind NAT does).
 *
 * Every LiveTex lookup and admin authentication asks this: it parses the address once and masks
 * the parsed groups in place, with no second parse of canonicalAddress's text.
 */
export function limitKey(address: string, prefixLength: number): string {
  return written(address, prefixLength);
}

/** canonicalAddress and limitKey: `address` in one spelling, an IPv6 one cut to `prefixLength` bits. */
function written(address: string, prefixLength: number): string {
  const bare = withoutZone(address);
  if (isIP(bare) !== 6) return bare;
  const groups = ipv6Groups(bare);
  if (isIpv4Mapped(groups)) return ipv4Of(groups);
  if (prefixLength >= 128) return formatIpv6(groups);
  // The groups are this call's own array: masked where they are, not copied.
  for (let index = 0; index < groups.length; index++) {
    const bitsHere = Math.min(16, Math.max(0, prefixLength - index * 16));
    if (bitsHere < 16) groups[index] = groups[index]! & (0xffff << (16 - bitsHere)) & 0xffff;
  }
  return `${formatIpv6(groups)}/${prefixLength}`;
}

/** The eight 16-bit groups of an IPv6 address isIP accepted (no zone). */
function ipv6Groups(address: string): number[] {
  let text = address;
  // A trailing dotted IPv4 part (::ffff:192.0.2.1) is its two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const [a = 0, b = 0, c = 0, d = 0] = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (part: string) =>
    part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16));
  const gap = text.indexOf('::');
  if (gap === -1) return parse(text);
  const head = parse(text.slice(0, gap));
  const tail = parse(text.slice(gap + 2));
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/** ::ffff:0:0/96, an IPv4 client as a dual-stack socket or a proxy writes it. */
function isIpv4Mapped(groups: readonly number[]): boolean {
  return groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff;
}

function ipv4Of(groups: readonly number[]): string {
  const high = groups[6]!;
  const low = groups[7]!;
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}

/** RFC 5952 section 4: lower-case hex, no leading zeros, `::` for the first longest run of 2+ zero groups. */
function formatIpv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < groups.length; ) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < groups.length && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = (part: readonly number[]) => part.map((group) => group.toString(16)).join(':');
  if (bestStart === -1) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/** An address without its zone id: what is before the `%`. */
function withoutZone(address: string): string {
  const zone = address.indexOf('%');
  return zone === -1 ? address : address.slice(0, zone);
}

/** An address with a port (Azure's load balancers write X-Forwarded-For entries so): IPv4 or bracketed IPv6. */
const WITH_PORT = /^(?:\[([^\]]{2,45})\]|(\d{1,3}(?:\.\d{1,3}){3})):\d{1,5}$/;

/**
 * The address `text` names, in canonical form: an IP address, or one with a port
 * (`192.0.2.1:443`, `[2001:db8::1]:443`); undefined when it names none (made-up text, an empty
 * X-Forwarded-For entry), which the caller must not take as an address of its own.
 */
export function parseAddress(text: string): string | undefined {
  if (isIP(text) !== 0) return canonicalAddress(text);
  const ported = WITH_PORT.exec(text);
  const bare = ported ? (ported[1] ?? ported[2]!) : undefined;
  return bare !== undefined && isIP(bare) !== 0 ? canonicalAddress(bare) : undefined;
}

/** An address or a CIDR range (an entry of `server.trustedProxies`): an address is a range of one. */
export interface AddressRange {
  /** In canonical form (canonicalAddress): an IPv4-mapped address is IPv4. */
  network: string;
  prefixLength: number;
  family: 'ipv4' | 'ipv6';
}

const RANGE_EXAMPLE = 'such as 10.0.0.5, 10.0.0.0/8 or fd00::/8';

/**
 * An address or a CIDR range, or what is wrong with it, worded for the config's message (the
 * schema's check of `server.trustedProxies` and trustedProxies both use this). Host bits after
 * the prefix are allowed (`10.1.2.3/8` is 10.0.0.0/8), as proxy-addr and net.BlockList take them.
 */
export function parseAddressRange(entry: string): AddressRange | { problem: string } {
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

/** Whether an address in canonical form (canonicalAddress) is in any of a set of ranges. */
export interface AddressSet {
  has(address: string): boolean;
}

/**
 * Ranges parsed by parseAddressRange, matched by net.BlockList. Its check builds a SocketAddress
 * each call (about 5 µs on our machines): a caller asking on every request keeps the answers
 * (trustedProxies in src/http/forwarded.ts). Anything that is no IP address is in no range.
 */
export function addressSet(ranges: readonly AddressRange[]): AddressSet {
  const list = new BlockList();
  for (const range of ranges) list.addSubnet(range.network, range.prefixLength, range.family);
  return {
    has(address) {
      const family = isIP(address);
      return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}
