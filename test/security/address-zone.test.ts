import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';
import { allVendorChannels, rawRequest } from './support.js';

/**
 * The client address the limits count by (clientAddress) was bounded to an IP address of at most
 * 45 characters by accepting only what node:net isIP accepts (audit-security2). isIP also accepts
 * an IPv6 address with a zone id ("fe80::1%eth0") of any length: letters, digits, '-', '.' and
 * ':'. A client reaching a bridge with proxyHops 1 directly wrote the "proxy's" entry itself (since
 * then only a trusted proxy's header is read: test/security/proxy-trust.test.ts; a proxy passes on
 * what it is sent too), so `fe80::1%<up to ~16 KiB>` made every request a counter key of its own again: never refused by
 * the per-address limits, each key as long as the header (the LiveTex lookup's limiter holds
 * 50,000 keys, taken before the channel's limit refuses: ~800 MB), and, on Redis, the shared
 * admin-auth counters got keys of that size. The zone names an interface of the machine that
 * wrote the address; it is no part of who the client is, and is dropped.
 */
const zoned = (attempt: number) => `fe80::1%zone-${attempt}-${'x'.repeat(2000)}`;

async function failuresUntilRefused(bridge: TestBridge, forwardedFor: (attempt: number) => string) {
  for (let attempt = 0; attempt < 10; attempt++) {
    const answer = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
      headers: {
        'x-forwarded-for': forwardedFor(attempt),
        authorization: `Bearer guess-${attempt}-0000000000`,
      },
    });
    if (answer.status === 429) return attempt;
    expect(answer.status).toBe(401);
  }
  return null;
}

describe('an IPv6 zone id in X-Forwarded-For is not a counter of its own', () => {
  const limits = { rate: { adminAuthFailuresPerAddress: 2, lookupsPerAddress: 2, window: '1h' } };

  it('counts failed admin authentications from fe80::1%<anything> as one address', async () => {
    const bridge = await startTestBridge({ config: { limits } });
    try {
      expect(await failuresUntilRefused(bridge, zoned)).toBe(2);
      // The same address without a zone is that counter, already full.
      expect(await failuresUntilRefused(bridge, () => 'fe80::1')).toBe(0);
    } finally {
      await bridge.close();
    }
  });

  it('counts LiveTex lookups from fe80::1%<anything> as one address', async () => {
    const bridge = await startTestBridge({ config: { limits, channels: allVendorChannels } });
    try {
      const statuses: number[] = [];
      for (let attempt = 0; attempt < 4; attempt++) {
        const answer = await rawRequest(bridge.url, 'POST', '/livetex/app/attributes', {
          headers: { 'x-forwarded-for': zoned(attempt), 'content-type': 'application/jose' },
          body: 'not-a-jwe',
        });
        statuses.push(answer.status);
      }
      expect(statuses.slice(2)).toEqual([429, 429]);
    } finally {
      await bridge.close();
    }
  });

  describe('on Redis', () => {
    let redisUrl: string;
    const keyPrefix = uniquePrefix('address-zone');
    afterAll(async () => {
      if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
    });

    it('writes no shared counter key longer than an address allows', async () => {
      redisUrl = await getTestRedisUrl();
      const bridge = await startTestBridge({ store: 'redis', keyPrefix, config: { limits }, start: false });
      try {
        expect(await failuresUntilRefused(bridge, zoned)).toBe(2);
      } finally {
        await bridge.close();
      }
      const client = new Redis(redisUrl);
      try {
        const keys: string[] = [];
        let cursor = '0';
        do {
          const [next, found] = await client.scan(cursor, 'MATCH', `*${keyPrefix}*auth-limit*`, 'COUNT', 500);
          cursor = next;
          keys.push(...found);
        } while (cursor !== '0');
        expect(keys.length).toBeGreaterThan(0);
        // The prefix, the scope and an address of at most 45 characters.
        for (const key of keys) expect(key.length).toBeLessThan(keyPrefix.length + 100);
      } finally {
        client.disconnect();
      }
    });
  });
});
