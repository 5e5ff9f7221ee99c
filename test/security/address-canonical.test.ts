import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';
import { allVendorChannels, rawRequest } from './support.js';

/**
 * The limits count failures and lookups per client address. An IPv6 address has many spellings
 * (`2001:db8::1`, `2001:DB8:0:0:0:0:0:1`, `2001:0db8::0001`), an IPv4 client may come as
 * `::ffff:192.0.2.1` (a dual-stack socket, a proxy that writes it so), and one client holding a
 * /64, the smallest IPv6 allocation a subscriber usually gets, has 2^64 addresses to rotate
 * through. Each spelling and each address was a counter of its own: the per-address limits did
 * not slow such a client, and a member of staff whose temporary (privacy) address changed was a
 * stranger to the admin lockout's known addresses. Addresses are now written one way (RFC 5952,
 * IPv4-mapped as IPv4), and an IPv6 client counts by its /64 (limits.rate.ipv6PrefixLength).
 * The spellings and prefixes themselves, as tables: test/net.address.test.ts.
 */

async function adminStatuses(bridge: TestBridge, addresses: string[], token?: string): Promise<number[]> {
  const statuses: number[] = [];
  for (const [index, address] of addresses.entries()) {
    const answer = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
      headers: {
        'x-forwarded-for': address,
        authorization: `Bearer ${token ?? `guess-${index}-00000000000000`}`,
      },
    });
    statuses.push(answer.status);
  }
  return statuses;
}

describe('failed admin authentications count per client, whatever the spelling of its address', () => {
  const bridges: TestBridge[] = [];
  afterEach(async () => {
    for (const bridge of bridges.splice(0)) await bridge.close();
  });
  async function bridgeWith(rate: Record<string, unknown>) {
    const bridge = await startTestBridge({ config: { limits: { rate: { window: '1h', ...rate } } } });
    bridges.push(bridge);
    return bridge;
  }

  it('counts every spelling of one IPv6 address as that address', async () => {
    const bridge = await bridgeWith({ adminAuthFailuresPerAddress: 3 });
    expect(
      await adminStatuses(bridge, [
        '2001:db8::1',
        '2001:DB8:0:0:0:0:0:1',
        '2001:0db8:0000:0000:0000:0000:0000:0001',
        '[2001:Db8::1]:4711',
      ]),
    ).toEqual([401, 401, 401, 429]);
  });

  it('counts an IPv4-mapped address as the IPv4 address', async () => {
    const bridge = await bridgeWith({ adminAuthFailuresPerAddress: 2 });
    expect(await adminStatuses(bridge, ['::ffff:192.0.2.1', '192.0.2.1', '::FFFF:c000:201'])).toEqual([
      401, 401, 429,
    ]);
  });

  it('counts the addresses of one /64 together, and another /64 apart', async () => {
    const bridge = await bridgeWith({ adminAuthFailuresPerAddress: 3 });
    expect(
      await adminStatuses(bridge, [
        '2001:db8:1:2::a',
        '2001:db8:1:2:ffff::b',
        '2001:db8:1:2:1:2:3:4',
        '2001:db8:1:2::d',
      ]),
    ).toEqual([401, 401, 401, 429]);
    expect(await adminStatuses(bridge, ['2001:db8:1:3::a'])).toEqual([401]);
  });

  it('takes the prefix length from limits.rate.ipv6PrefixLength (128: one address each)', async () => {
    const wide = await bridgeWith({ adminAuthFailuresPerAddress: 2, ipv6PrefixLength: 48 });
    expect(await adminStatuses(wide, ['2001:db8:1:2::a', '2001:db8:1:ff::a', '2001:db8:1:7::a'])).toEqual([
      401, 401, 429,
    ]);
    const narrow = await bridgeWith({ adminAuthFailuresPerAddress: 2, ipv6PrefixLength: 128 });
    expect(await adminStatuses(narrow, ['2001:db8:1:2::a', '2001:db8:1:2::b', '2001:db8:1:2::c'])).toEqual([
      401, 401, 401,
    ]);
  });

  it('lets staff back in past the ceiling from another address of their /64 (a new temporary address)', async () => {
    const bridge = await bridgeWith({ adminAuthFailuresPerAddress: 3, adminAuthFailuresCeiling: 5 });
    expect(await adminStatuses(bridge, ['2001:db8:5:5::1'], bridge.adminToken)).toEqual([200]);
    expect(
      await adminStatuses(bridge, [
        '203.0.113.1',
        '203.0.113.2',
        '203.0.113.3',
        '203.0.113.4',
        '203.0.113.5',
      ]),
    ).toEqual([401, 401, 401, 401, 401]);
    expect(
      await adminStatuses(
        bridge,
        ['2001:DB8:5:5:0:0:0:1', '2001:db8:5:5:8d2e:11ff:fe3a:9b01', '2001:db8:5:6::1'],
        bridge.adminToken,
      ),
    ).toEqual([200, 200, 429]);
  });

  it('does not let one /64 fill the known addresses or the counters with 2^64 keys (a stranger rotating addresses)', async () => {
    const bridge = await bridgeWith({ adminAuthFailuresPerAddress: 2, adminAuthFailuresCeiling: 1000 });
    const rotating = Array.from({ length: 6 }, (_, index) => `2001:db8:66:66::${(index + 1).toString(16)}`);
    expect(await adminStatuses(bridge, rotating)).toEqual([401, 401, 429, 429, 429, 429]);
  });
});

describe('LiveTex lookups count per client, whatever the spelling of its address', () => {
  it('counts one /64 and an IPv4-mapped address as one client each', async () => {
    const bridge = await startTestBridge({
      config: { channels: allVendorChannels, limits: { rate: { lookupsPerAddress: 2, window: '1h' } } },
    });
    try {
      const lookup = async (address: string) =>
        (
          await rawRequest(bridge.url, 'POST', '/livetex/app/attributes', {
            headers: { 'x-forwarded-for': address, 'content-type': 'application/jose' },
            body: 'not-a-jwe',
          })
        ).status;
      const sixes: number[] = [];
      for (const address of ['2001:db8:7:7::1', '2001:db8:7:7::2', '2001:DB8:7:7::3'])
        sixes.push(await lookup(address));
      expect(sixes[2]).toBe(429);
      const fours: number[] = [];
      for (const address of ['::ffff:198.51.100.9', '198.51.100.9', '::ffff:198.51.100.9'])
        fours.push(await lookup(address));
      expect(fours[2]).toBe(429);
    } finally {
      await bridge.close();
    }
  });
});

describe('on Redis', () => {
  let redisUrl: string;
  const keyPrefix = uniquePrefix('address-canonical');
  afterAll(async () => {
    if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
  });

  it('writes one shared counter per /64, in one spelling', async () => {
    redisUrl = await getTestRedisUrl();
    const bridge = await startTestBridge({
      store: 'redis',
      keyPrefix,
      config: { limits: { rate: { adminAuthFailuresPerAddress: 50, window: '1h' } } },
      start: false,
    });
    try {
      const spellings = [
        '2001:DB8:9:9::1',
        '2001:db8:9:9::2',
        '2001:db8:9:9:0:0:0:3',
        '2001:0db8:0009:0009::4',
      ];
      expect(await adminStatuses(bridge, spellings)).toEqual([401, 401, 401, 401]);
    } finally {
      await bridge.close();
    }
    const client = new Redis(redisUrl);
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, found] = await client.scan(
          cursor,
          'MATCH',
          `*${keyPrefix}*auth-limit*:address:*`,
          'COUNT',
          500,
        );
        cursor = next;
        keys.push(...found);
      } while (cursor !== '0');
      expect(keys).toHaveLength(1);
      expect(keys[0]).toMatch(/:address:2001:db8:9:9::\/64$/);
      expect(await client.get(keys[0]!)).toBe('4');
    } finally {
      client.disconnect();
    }
  });
});
