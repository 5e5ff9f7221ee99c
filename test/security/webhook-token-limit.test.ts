import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { allVendorChannels, rawRequest } from './support.js';

const [jivo] = allVendorChannels as unknown as [{ token: string }];
const EVENT = '{"event_name":"chat_updated"}';

/**
 * A wrong webhook URL token was answered 404 as often as anyone asked: tokens could be guessed at
 * full speed. Failed tokens are now limited per client address (an IPv6 one by its /64, as the
 * other limits count it): past limits.rate.webhookTokenFailuresPerAddress in a window, the
 * address's webhooks get the same 404 before their token is looked at (a right guess looks like a
 * wrong one), counted as chatbridge_rate_limited_total{scope="webhook_token"}. A right token is
 * never counted, and an address that presented one lately (a vendor's, with one channel set up
 * wrongly) is not held back by its own wrong tokens.
 */
describe('failed webhook tokens are limited per address', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: allVendorChannels,
        limits: { rate: { webhookTokenFailuresPerAddress: 3, window: '1h' } },
      },
    });
  });
  afterAll(() => bridge.close());

  const send = (address: string, token: string, channel = 'site') =>
    rawRequest(bridge.url, 'POST', `/webhooks/jivochat/${channel}/${token}`, {
      headers: { 'x-forwarded-for': address },
      body: EVENT,
    });
  async function refusals(): Promise<number> {
    const text = await bridge.bridge.metrics.registry.metrics();
    const match = /chatbridge_rate_limited_total\{scope="webhook_token"\} (\d+)/.exec(text);
    return match ? Number(match[1]) : 0;
  }

  it('refuses a guessing address, its right token included, with the one 404', async () => {
    const wrong = await send('203.0.113.50', 'guess-0-000000000000');
    expect(wrong.status).toBe(404);
    // Wrong tokens and unknown channels count alike.
    expect((await send('203.0.113.50', 'guess-1-000000000000')).status).toBe(404);
    expect((await send('203.0.113.50', jivo.token, 'nope')).status).toBe(404);
    const right = await send('203.0.113.50', jivo.token);
    expect({ status: right.status, text: right.text }).toEqual({ status: 404, text: wrong.text });
    expect(right.headers['retry-after']).toBeUndefined();
    // Another address is not affected.
    expect((await send('198.51.100.50', jivo.token)).status).toBe(200);
    expect(await refusals()).toBe(1);
  });

  it('never counts a right token, and spares an address that presented one', async () => {
    const vendor = '198.51.100.60';
    for (let index = 0; index < 5; index++) expect((await send(vendor, jivo.token)).status).toBe(200);
    // One channel set up wrongly at the vendor: its wrong tokens do not stop the right ones.
    for (let index = 0; index < 5; index++)
      expect((await send(vendor, `stale-${index}-0000000000000`)).status).toBe(404);
    expect((await send(vendor, jivo.token)).status).toBe(200);
  });

  it('counts an IPv6 client by its /64', async () => {
    for (let index = 1; index <= 3; index++)
      expect((await send(`2001:db8:7:7::${index}`, `guess-${index}-00000000000`)).status).toBe(404);
    expect((await send('2001:db8:7:7::ffff', jivo.token)).status).toBe(404);
    expect((await send('2001:db8:7:8::1', jivo.token)).status).toBe(200);
  });
});
