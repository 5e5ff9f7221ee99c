import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('limits LiveTex lookups per address and per channel', async () => {
    const lookup = (address: string) =>
      rawRequest(bridge.url, 'POST', '/livetex/app/attributes', {
        headers: { 'x-forwarded-for': address, 'content-type': 'application/jose' },
        body: 'not-a-jwe',
      });
    for (let index = 0; index < 4; index++) expect((await lookup('192.0.2.1')).status).not.toBe(429);
    const perAddress = await lookup('192.0.2.1');
    expect(perAddress.status).toBe(429);
    expect(perAddress.headers['retry-after']).toBeDefined();
    // Two more from elsewhere reach the channel's limit of 6.
    expect((await lookup('192.0.2.2')).status).not.toBe(429);
    expect((await lookup('192.0.2.3')).status).not.toBe(429);
    expect((await lookup('192.0.2.4')).status).toBe(429);
    expect(await refusals('lookup_address')).toBe(1);
    expect(await refusals('lookup_channel')).toBe(1);
  });
});
