import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClaims, sealRequest } from '../../adapters/livetex/codec.js';
import { consoleRequest, cookieOf, fieldOf } from '../support/console.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { allVendorChannels, rawRequest } from './support.js';

/** Issue 10 item 16: failed admin auth and lookups are limited per address and per channel. */
describe('rate limits', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: allVendorChannels,
        limits: {
          rate: { adminAuthFailuresPerAddress: 3, lookupsPerAddress: 4, lookupsPerChannel: 6, window: '1h' },
        },
      },
    });
  });
  afterAll(() => bridge.close());

  async function refusals(scope: string): Promise<number> {
    const text = await bridge.bridge.metrics.registry.metrics();
    const match = new RegExp(`chatbridge_rate_limited_total\\{scope="${scope}"\\} (\\d+)`).exec(text);
    return match ? Number(match[1]) : 0;
  }

  it('answers 429 with Retry-After after too many failed admin authentications from one address', async () => {
    const from = { 'x-forwarded-for': '203.0.113.7' };
    for (let attempt = 0; attempt < 3; attempt++) {
      const answer = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
        headers: { ...from, authorization: `Bearer guess-${attempt}-000000000000` },
      });
      expect(answer.status).toBe(401);
    }
    const limited = await rawRequest(bridge.url, 'GET', '/API/V1/channels', {
      headers: { ...from, authorization: 'Bearer guess-4-000000000000' },
    });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.parse(limited.text).error.code).toBe('rate_limited');
    // No more guesses from there, not even a right one, until the window ends.
    const right = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
      headers: { ...from, authorization: `Bearer ${bridge.adminToken}` },
    });
    expect(right.status).toBe(429);
    // Another address is not affected.
    const other = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
      headers: { 'x-forwarded-for': '198.51.100.1', authorization: `Bearer ${bridge.adminToken}` },
    });
    expect(other.status).toBe(200);
    expect(await refusals('admin_auth')).toBe(2);
  });

  it('counts console sign-ins against the same limit as the API, both ways', async () => {
    const signInFrom = async (address: string, token: string) => {
      const headers = { 'x-forwarded-for': address };
      const form = await consoleRequest(bridge.url, '/console/sign-in', { headers });
      return consoleRequest(bridge.url, '/console/sign-in', {
        headers,
        cookie: cookieOf(form.headers, 'chatbridge_console_pre') ?? '',
        form: { _pre: fieldOf(form.text, '_pre') ?? '', next: '/console/contacts', token },
      });
    };
    const before = await refusals('admin_auth');
    // Wrong tokens at the sign-in form, then the API from that address is refused, right token or not.
    for (let attempt = 0; attempt < 3; attempt++)
      expect((await signInFrom('203.0.113.20', `guess-${attempt}-000000000000`)).status).toBe(401);
    const locked = await signInFrom('203.0.113.20', bridge.adminToken);
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(locked.text).toContain('Too many wrong admin tokens');
    expect(cookieOf(locked.headers, 'chatbridge_console')).toBeUndefined();
    const api = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
      headers: { 'x-forwarded-for': '203.0.113.20', authorization: `Bearer ${bridge.adminToken}` },
    });
    expect(api.status).toBe(429);
    // Wrong tokens at the API, then the sign-in form from that address is refused.
    for (let attempt = 0; attempt < 3; attempt++) {
      const answer = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
        headers: { 'x-forwarded-for': '203.0.113.21', authorization: `Bearer guess-${attempt}-000000000000` },
      });
      expect(answer.status).toBe(401);
    }
    expect((await signInFrom('203.0.113.21', bridge.adminToken)).status).toBe(429);
    expect((await signInFrom('198.51.100.2', bridge.adminToken)).status).toBe(302);
    expect((await refusals('admin_auth')) - before).toBe(3);
  });

  it('limits LiveTex lookups per address (every request) and per channel (sealed ones)', async () => {
    const created = await bridge.admin('POST', '/api/v1/channels/app/keys');
    const key = created.body as { kid: string; key: string };
    const sealed = () =>
      sealRequest(
        buildClaims({
          subject: { personId: 'cust-1' },
          requestId: randomUUID(),
          jti: randomUUID(),
          iat: Date.now() / 1000,
        }),
        key.kid,
        new Uint8Array(Buffer.from(key.key, 'base64url')),
      );
    const lookup = async (address: string, body?: string) =>
      rawRequest(bridge.url, 'POST', '/livetex/app/attributes', {
        headers: { 'x-forwarded-for': address, 'content-type': 'application/jose' },
        body: body ?? (await sealed()),
      });
    for (let index = 0; index < 4; index++)
      expect((await lookup('192.0.2.1', 'not-a-jwe')).status).not.toBe(429);
    const perAddress = await lookup('192.0.2.1');
    expect(perAddress.status).toBe(429);
    expect(perAddress.headers['retry-after']).toBeDefined();
    // Six sealed lookups from elsewhere reach the channel's limit of 6 (the garbage spent none of it).
    for (let index = 0; index < 6; index++) expect((await lookup(`192.0.2.${10 + index}`)).status).toBe(200);
    expect((await lookup('192.0.2.4')).status).toBe(429);
    expect(await refusals('lookup_address')).toBe(1);
    expect(await refusals('lookup_channel')).toBe(1);
  });
});

describe('the client address behind proxies (server.proxyHops)', () => {
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
  const limits = { rate: { adminAuthFailuresPerAddress: 2, window: '1h' } };

  it('takes the entry the trusted proxy appended, not what the client wrote before it', async () => {
    const bridge = await startTestBridge({ config: { limits } });
    try {
      // One proxy (the default) appends the real address 198.51.100.9 after the client's own.
      const refusedAt = await failuresUntilRefused(bridge, (attempt) => `10.9.0.${attempt}, 198.51.100.9`);
      expect(refusedAt).toBe(2);
    } finally {
      await bridge.close();
    }
  });

  it('counts an entry that is no IP address against the connection: made-up text is not a counter of its own', async () => {
    const bridge = await startTestBridge({ config: { limits } });
    try {
      // What a trusted proxy passes on (or, before server.trustedProxies, what a client reaching
      // the bridge directly wrote as the "proxy's" entry): on the old code each made-up text was
      // a key of its own (no refusal, ever, and up to 16 KiB of key per request kept in the
      // limiter). It counts against the proxy that passed it on.
      expect(
        await failuresUntilRefused(bridge, (attempt) => `not-an-address-${attempt}-${'x'.repeat(200)}`),
      ).toBe(2);
    } finally {
      await bridge.close();
    }
  });

  it("takes a proxy's ip:port entry as its address", async () => {
    const bridge = await startTestBridge({ config: { limits } });
    try {
      expect(await failuresUntilRefused(bridge, (attempt) => `198.51.100.20:${40000 + attempt}`)).toBe(2);
      // The port-less form of the same address is the same counter, already full.
      expect(await failuresUntilRefused(bridge, () => '198.51.100.20')).toBe(0);
      expect(await failuresUntilRefused(bridge, (attempt) => `[2001:db8::7]:${40000 + attempt}`)).toBe(2);
    } finally {
      await bridge.close();
    }
  });

  it('ignores the header with proxyHops 0: the address of the connection counts', async () => {
    const bridge = await startTestBridge({
      config: { limits, server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, proxyHops: 0 } },
    });
    try {
      expect(await failuresUntilRefused(bridge, (attempt) => `10.9.0.${attempt}`)).toBe(2);
    } finally {
      await bridge.close();
    }
  });
});

/**
 * A wrong metrics.token (the bearer for /metrics on the main port) was answered 401 as often as
 * anyone asked: a guess at full speed. Failures are limited like the admin token's, with the same
 * limits but counters of their own (scope metrics_auth): a scraper with a stale token does not
 * lock the admins out, nor the other way round.
 */
describe('failed /metrics authentications are rate limited (metrics_auth)', () => {
  const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
  for (const role of ['all', 'worker'] as const) {
    it(`answers 429 with Retry-After after too many wrong metrics tokens from one address (role ${role})`, async () => {
      const bridge = await startTestBridge({
        role,
        config: {
          metrics: { token: METRICS_TOKEN },
          limits: { rate: { adminAuthFailuresPerAddress: 3, window: '1h' } },
        },
      });
      try {
        const scrape = (address: string, token: string) =>
          rawRequest(bridge.url, 'GET', '/metrics', {
            headers: { 'x-forwarded-for': address, authorization: `Bearer ${token}` },
          });
        for (let attempt = 0; attempt < 3; attempt++)
          expect((await scrape('203.0.113.30', `guess-${attempt}-000000000000`)).status).toBe(401);
        const limited = await scrape('203.0.113.30', 'guess-4-000000000000');
        expect(limited.status).toBe(429);
        expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
        expect(JSON.parse(limited.text).error.code).toBe('rate_limited');
        // Not even the right token from there until the window ends; another address scrapes.
        expect((await scrape('203.0.113.30', METRICS_TOKEN)).status).toBe(429);
        const other = await scrape('198.51.100.30', METRICS_TOKEN);
        expect(other.status).toBe(200);
        expect(other.text).toMatch(/^chatbridge_rate_limited_total\{scope="metrics_auth"\} 2$/m);
        if (role === 'all') {
          // Counters of its own: the admin API from the locked-out address still answers.
          const admin = await rawRequest(bridge.url, 'GET', '/api/v1/channels', {
            headers: { 'x-forwarded-for': '203.0.113.30', authorization: `Bearer ${bridge.adminToken}` },
          });
          expect(admin.status).toBe(200);
        }
      } finally {
        await bridge.close();
      }
    });
  }
});
