import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClaims, sealRequest } from '../../adapters/livetex/codec.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/** Issue 10 item 2: no found/not-found oracle through /metrics or the answer's size. */
describe('LiveTex lookup oracle', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' }] },
    });
  });
  afterAll(() => bridge.close());

  it('serves /metrics only on its own (loopback) listener, not on the public port', async () => {
    expect((await fetch(`${bridge.url}/metrics`)).status).toBe(404);
    const server = await bridge.bridge.listenMetrics(0, '127.0.0.1');
    expect(server).not.toBeNull();
    const port = (server!.address() as AddressInfo).port;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toContain('chatbridge_intake_total');
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/contacts`)).status).toBe(404);
    expect((await fetch(`${bridge.url}/metrics`)).status).toBe(404);
  });

  it('answers a contact with a huge card in the same size as an unknown person', async () => {
    // A card far beyond any size class: many long attributes, e-mails and labels.
    const attributes: Record<string, { value: string }> = {};
    for (let index = 0; index < 300; index++) attributes[`a${index}`] = { value: 'v'.repeat(200) };
    await bridge.bridge.context.contacts.observe({
      channelId: 'other',
      vendor: 'echo',
      at: new Date().toISOString(),
      idempotencyKey: 'big',
      identifiers: [{ kind: 'person', value: 'p-big' }],
      names: ['N'.repeat(3000)],
      labels: Array.from({ length: 200 }, (_, index) => `label-${index}-${'l'.repeat(50)}`),
      attributes,
    });
    const key = (await bridge.admin('POST', '/api/v1/channels/app/keys')).body as {
      kid: string;
      key: string;
    };
    const ask = async (personId: string) => {
      const claims = buildClaims({
        subject: { personId },
        requestId: randomUUID(),
        jti: randomUUID(),
        iat: Date.now() / 1000,
      });
      const body = await sealRequest(claims, key.kid, new Uint8Array(Buffer.from(key.key, 'base64url')));
      const response = await fetch(`${bridge.url}/livetex/app/attributes`, {
        method: 'POST',
        headers: { 'content-type': 'application/jose' },
        body,
      });
      expect(response.status).toBe(200);
      return (await response.text()).length;
    };
    expect(await ask('p-big')).toBe(await ask('p-nobody'));
  });
});
