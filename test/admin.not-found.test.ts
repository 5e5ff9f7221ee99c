import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A 404 names what was not found, quoted cut: the id comes from the path, any length and any
 * characters a client put there, and the message went back whole (2 000 characters for an id of
 * 2 000), terminal escapes and bidi controls included. Over HTTP, on Redis under the test's own
 * key prefix.
 */

describe('404 messages quote the id from the path cut and clean', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'redis',
      adapters: [echoAdapter],
      config: { channels: [{ id: 'site', vendor: 'echo', token: 'echo-channel-token-404test' }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  const long = `c_${'x'.repeat(1998)}`;
  const hostile = `c_\u001b[2J\u202Eevil${'y'.repeat(300)}`;

  for (const [what, method, path, body] of [
    ['GET /contacts/:id', 'GET', (id: string) => `/api/v1/contacts/${encodeURIComponent(id)}`, undefined],
    [
      'GET /contacts/:id/timeline',
      'GET',
      (id: string) => `/api/v1/contacts/${encodeURIComponent(id)}/timeline`,
      undefined,
    ],
    [
      'GET /contacts/:id/timeline?channel=',
      'GET',
      (id: string) => `/api/v1/contacts/${encodeURIComponent(id)}/timeline?channel=gone`,
      undefined,
    ],
    [
      'POST /contacts/:id/unmerge',
      'POST',
      (id: string) => `/api/v1/contacts/${encodeURIComponent(id)}/unmerge`,
      { recordId: 'c_other' },
    ],
  ] as const) {
    it(`${what}: at most about 100 characters of the id, cut marked, controls dropped`, async () => {
      for (const id of [long, hostile]) {
        const response = await bridge.admin(method, path(id), body);
        expect(response.status).toBe(404);
        expect(response.body.error.code).toBe('contact_not_found');
        const message: string = response.body.error.message;
        expect(message.length).toBeLessThan(120);
        expect(message).toMatch(/^no contact c_.*…$/);
        expect(message).not.toContain('\u001b');
        expect(message).not.toContain('\u202E');
      }
      // A short id is quoted whole, as before.
      const short = await bridge.admin(method, path('c_nobody'), body);
      expect(short.body.error.message).toBe('no contact c_nobody');
    });
  }

  it('a replay of an unknown destination: its id, from the query, quoted cut and clean', async () => {
    const destination = `d\u001b[2J\u202Eevil${'z'.repeat(190)}`;
    const response = await bridge.admin(
      'POST',
      `/api/v1/deliveries/replay?destination=${encodeURIComponent(destination)}`,
    );
    expect(response.status).toBe(404);
    expect(response.body.error.code).toBe('destination_not_found');
    expect(response.body.error.message).toMatch(/^no destination d\[2Jevilz+…$/);
    expect(response.body.error.message.length).toBeLessThan(120);
  });

  it("a channel route's unknown channel: the id quoted cut and clean too", async () => {
    const livetex = await startTestBridge({
      store: 'redis',
      start: false,
      config: {
        channels: [{ id: 'app', vendor: 'livetex', token: 'app-token-0123456789abcdef' }],
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
      },
    });
    try {
      for (const id of [long, hostile]) {
        const response = await livetex.admin('GET', `/api/v1/channels/${encodeURIComponent(id)}/keys`);
        expect(response.status).toBe(404);
        expect(response.body.error.code).toBe('channel_not_found');
        const message: string = response.body.error.message;
        expect(message.length).toBeLessThan(120);
        expect(message).toMatch(/^no LiveTex channel c_.*…$/);
        expect(message).not.toContain('\u001b');
        expect(message).not.toContain('\u202E');
        // A key the channel does not have: its kid, from the path, quoted the same way (it was
        // quoted whole, 3 000 characters for a kid of 3 000, controls included).
        const key = await livetex.admin('DELETE', `/api/v1/channels/app/keys/${encodeURIComponent(id)}`);
        expect(key.status).toBe(404);
        expect(key.body.error.code).toBe('unknown_key');
        expect(key.body.error.message.length).toBeLessThan(140);
        expect(key.body.error.message).toMatch(/^no key "c_.*…" on this channel$/);
        expect(key.body.error.message).not.toContain('\u001b');
        expect(key.body.error.message).not.toContain('\u202E');
      }
      const short = await livetex.admin('DELETE', '/api/v1/channels/app/keys/k_nope');
      expect(short.body.error.message).toBe('no key "k_nope" on this channel');
    } finally {
      await livetex.close();
    }
  });
});
