import { describe, expect, it } from 'vitest';
import {
  addressSet,
  canonicalAddress,
  limitKey,
  parseAddress,
  parseAddressRange,
} from '../src/net/address.js';

/**
 * The client-address helpers (src/net/address.ts) as tables: the limits count by what they
 * answer, and the walk of X-Forwarded-For decides trust by it, so every spelling of one client
 * has to come out the same. Over HTTP: test/security/address-canonical.test.ts (the limits count
 * one client once), address-zone.test.ts, proxy-trust.test.ts (the config's messages, the walk).
 */

describe('canonicalAddress', () => {
  it.each([
    ['2001:db8::1', '2001:db8::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['::', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['fe80::1%eth0', 'fe80::1'],
    ['fe80::1%zone-with-dashes.and:colons', 'fe80::1'],
    ['192.0.2.1', '192.0.2.1'],
    ['::192.0.2.1', '::c000:201'],
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
  ])('writes %s as %s', (given, canonical) => {
    expect(canonicalAddress(given)).toBe(canonical);
  });

  it.each([
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:C000:0201', '192.0.2.1'],
    ['0:0:0:0:0:ffff:192.0.2.1', '192.0.2.1'],
    ['::ffff:0:0', '0.0.0.0'],
    ['::ffff:255.255.255.255', '255.255.255.255'],
    ['::ffff:192.0.2.1%eth0', '192.0.2.1'],
  ])('writes the IPv4-mapped %s as the IPv4 address %s', (given, canonical) => {
    expect(canonicalAddress(given)).toBe(canonical);
  });

  // What isIP refuses is no address to rewrite: it comes back as it was (clientAddress and the
  // walk of X-Forwarded-For only pass on what isIP took).
  it.each(['', 'not-an-address', '01.2.3.4', '192.0.2.1:443', '[2001:db8::1]', '2001:db8:::1', '1.2.3.4 '])(
    'returns %j, no IP address, as it is',
    (given) => {
      expect(canonicalAddress(given)).toBe(given);
    },
  );
});

describe('limitKey', () => {
  it.each([
    ['2001:db8:1:2:3:4:5:6', 64, '2001:db8:1:2::/64'],
    ['2001:db8:1:2:3:4:5:6', 48, '2001:db8:1::/48'],
    ['2001:db8:1:2ab:3:4:5:6', 56, '2001:db8:1:200::/56'],
    ['2001:db8:1:2:3:4:5:6', 32, '2001:db8::/32'],
    ['2001:db8::ffff', 127, '2001:db8::fffe/127'],
    ['2001:db8:1:2:3:4:5:6', 128, '2001:db8:1:2:3:4:5:6'],
    ['2001:DB8:1:2:ffff::1', 64, '2001:db8:1:2::/64'],
    ['fe80::1:2:3:4%eth0', 64, 'fe80::/64'],
    ['64:ff9b::192.0.2.1', 96, '64:ff9b::/96'],
  ])('keys the IPv6 address %s at /%i as %s', (given, prefixLength, key) => {
    expect(limitKey(given, prefixLength)).toBe(key);
  });

  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:c000:201', '192.0.2.1'],
  ])('keys %s by the IPv4 address itself, whatever the prefix length', (given, key) => {
    for (const prefixLength of [32, 64, 128]) expect(limitKey(given, prefixLength)).toBe(key);
  });

  it('keys every address of one /64 alike, and the next /64 apart', () => {
    const keys = ['2001:db8:1:2::a', '2001:db8:1:2:ffff::b', '2001:DB8:1:2:1:2:3:4'].map((address) =>
      limitKey(address, 64),
    );
    expect(new Set(keys)).toEqual(new Set(['2001:db8:1:2::/64']));
    expect(limitKey('2001:db8:1:3::a', 64)).toBe('2001:db8:1:3::/64');
  });

  it('is canonicalAddress at 128 bits, for every spelling', () => {
    for (const given of ['2001:0db8::0001', '::ffff:192.0.2.1', 'fe80::1%eth0', '::', '192.0.2.1', 'x', ''])
      expect(limitKey(given, 128)).toBe(canonicalAddress(given));
  });

  it.each(['', 'not-an-address', '192.0.2.1:443'])('returns %j, no IP address, as it is', (given) => {
    expect(limitKey(given, 64)).toBe(given);
  });
});

describe('parseAddress (an X-Forwarded-For entry)', () => {
  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['2001:DB8::1', '2001:db8::1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['192.0.2.1:443', '192.0.2.1'],
    ['[2001:Db8::1]:4711', '2001:db8::1'],
    ['[::ffff:192.0.2.1]:80', '192.0.2.1'],
  ])('reads %s as %s', (given, address) => {
    expect(parseAddress(given)).toBe(address);
  });

  it.each([
    '',
    'unknown',
    '_hidden',
    '999.0.2.1:80',
    '[not-an-ip]:80',
    '[2001:db8::1]',
    '[2001:db8::1]:',
    '192.0.2.1:port',
    '2001:db8::1]:80',
  ])('reads no address in %j', (given) => {
    expect(parseAddress(given)).toBeUndefined();
  });
});

describe('parseAddressRange', () => {
  it.each([
    ['10.0.0.5', { network: '10.0.0.5', prefixLength: 32, family: 'ipv4' }],
    ['10.0.0.0/8', { network: '10.0.0.0', prefixLength: 8, family: 'ipv4' }],
    ['0.0.0.0/0', { network: '0.0.0.0', prefixLength: 0, family: 'ipv4' }],
    ['fd00::/8', { network: 'fd00::', prefixLength: 8, family: 'ipv6' }],
    ['2001:0DB8:0::7', { network: '2001:db8::7', prefixLength: 128, family: 'ipv6' }],
    ['::ffff:192.0.2.11', { network: '192.0.2.11', prefixLength: 32, family: 'ipv4' }],
  ])('reads %s in canonical form', (entry, range) => {
    expect(parseAddressRange(entry)).toEqual(range);
  });

  it.each([
    ['nginx.internal', 'is not an IP address or CIDR range'],
    ['', 'is not an IP address or CIDR range'],
    ['10.0.0.0/', 'is not an IP address or CIDR range'],
    ['10.0.0.0/x', 'is not an IP address or CIDR range'],
    ['10.0.0.0/8/8', 'is not an IP address or CIDR range'],
    ['192.168.0.0/33', 'an IPv4 range has a prefix length of 0 to 32'],
    ['fd00::/129', 'an IPv6 range has a prefix length of 0 to 128'],
    ['fe80::1%eth0', 'leave out the zone (%eth0)'],
    ['::ffff:10.0.0.0/104', 'write an IPv4 range in IPv4 form (10.0.0.0/8)'],
  ])('names what is wrong with %j', (entry, problem) => {
    const parsed = parseAddressRange(entry);
    expect(parsed).toEqual({ problem: expect.stringContaining(problem) });
  });
});

describe('addressSet (CIDR membership)', () => {
  const ranges = ['10.0.0.0/8', '192.168.1.7', 'fd00::/8', '2001:db8:1::/48', '172.16.5.9/12'].map(
    (entry) => {
      const range = parseAddressRange(entry);
      if ('problem' in range) throw new Error(range.problem);
      return range;
    },
  );
  const set = addressSet(ranges);

  it.each([
    ['10.0.0.0', true],
    ['10.255.255.255', true],
    ['11.0.0.0', false],
    ['9.255.255.255', false],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    // Host bits after the prefix are the range's network (172.16.5.9/12 is 172.16.0.0/12).
    ['172.16.0.1', true],
    ['172.31.255.255', true],
    ['172.32.0.0', false],
    ['fd00::1', true],
    ['fdff:ffff::1', true],
    ['fe80::1', false],
    ['2001:db8:1:ffff::1', true],
    ['2001:db8:2::1', false],
  ])('%s is in the ranges: %s', (address, inside) => {
    expect(set.has(address)).toBe(inside);
  });

  it('matches a client by its canonical address (an IPv4-mapped one as IPv4)', () => {
    expect(set.has(canonicalAddress('::ffff:10.9.8.7'))).toBe(true);
    expect(set.has(canonicalAddress('FD00:0:0::1'))).toBe(true);
  });

  it.each(['', 'not-an-address', '10.0.0.1:80', '[fd00::1]:80'])(
    '%j, no address, is in no range',
    (given) => {
      expect(set.has(given)).toBe(false);
    },
  );

  it('matches nothing with no ranges', () => {
    expect(addressSet([]).has('10.0.0.1')).toBe(false);
  });
});
