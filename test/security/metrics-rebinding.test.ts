import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { rawRequest } from './support.js';

/**
 * DNS rebinding: the metrics listener is open and on loopback, and answered whatever `Host` a
 * request named. A page at http://attacker.example:9464/ whose name is then pointed at 127.0.0.1
 * is the same origin as its requests to the listener, so the browser let it read the metrics: the
 * channel ids (which the lookup URL is built not to tell apart), destinations and traffic. The
 * browser cannot change the Host header, which names the attacker's domain: a loopback listener
 * now answers only a Host no DNS answer controls (an IP address, localhost) or one listed in
 * metrics.allowedHosts.
 */
describe('the metrics listener on loopback: DNS rebinding', () => {
  let bridge: TestBridge;
  let base: string;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: [{ id: 'secret-app-channel', vendor: 'livetex', token: 'app-webhook-token-0123456789' }],
        metrics: { allowedHosts: ['prometheus-alias.internal'] },
      },
    });
    // A lookup, so that the channel's id is in the metrics.
    await fetch(`${bridge.url}/livetex/secret-app-channel/attributes`, {
      method: 'POST',
      headers: { 'content-type': 'application/jose' },
      body: 'not-a-jwe',
    });
    const server = await bridge.bridge.listenMetrics(0, '127.0.0.1');
    base = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  });
  afterAll(() => bridge.close());

  it('refuses a Host that names a domain (403 host_not_allowed), telling nothing', async () => {
    for (const host of [
      'attacker.example:9464',
      'attacker.example',
      '127.0.0.1.nip.io:9464',
      'LOCALHOST.attacker.example',
    ]) {
      const answer = await rawRequest(base, 'GET', '/metrics', { headers: { host } });
      expect(answer.status, host).toBe(403);
      expect(JSON.parse(answer.text).error.code, host).toBe('host_not_allowed');
      expect(answer.text, host).not.toContain('secret-app-channel');
    }
  });

  it('answers an IP address, localhost and a listed name', async () => {
    for (const host of [
      undefined, // rawRequest's own: 127.0.0.1:<port>
      'localhost:9464',
      'localhost',
      'localhost.',
      'metrics.localhost',
      '[::1]:9464',
      '10.0.0.5:9464',
      'Prometheus-Alias.internal:9464',
    ]) {
      const answer = await rawRequest(base, 'GET', '/metrics', host ? { headers: { host } } : {});
      expect(answer.status, host).toBe(200);
      expect(answer.text, host).toContain('secret-app-channel');
    }
  });
});

describe('the metrics listener on another address', () => {
  let bridge: TestBridge;
  let base: string;
  beforeAll(async () => {
    bridge = await startTestBridge({});
    // All addresses, as in a container whose Prometheus scrapes it by its service name.
    const server = await bridge.bridge.listenMetrics(0, '0.0.0.0');
    base = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  });
  afterAll(() => bridge.close());

  it('answers any Host (a Compose or Kubernetes service name the bridge cannot know)', async () => {
    const answer = await rawRequest(base, 'GET', '/metrics', { headers: { host: 'chatbridge:9464' } });
    expect(answer.status).toBe(200);
  });
});

/**
 * With the example's published credentials the bridge listens on loopback only (README "Running
 * for real"): anyone can read its admin token, and loopback was what kept them out. DNS
 * rebinding got past that: a page in the machine's browser, its name pointed at 127.0.0.1, sent
 * `Authorization: Bearer example-admin-token-change-me` as its own origin and read every contact.
 * While a published credential is configured the main port now answers only a Host no DNS answer
 * controls; with the operator's own credentials (a proxy in front sends the public name) any.
 */
describe('the main port with published credentials: DNS rebinding', () => {
  const PUBLISHED_ADMIN = 'example-admin-token-change-me';
  let published: TestBridge;
  let own: TestBridge;
  beforeAll(async () => {
    published = await startTestBridge({ config: { admin: { token: PUBLISHED_ADMIN } } });
    own = await startTestBridge({});
  });
  afterAll(async () => {
    await published?.close();
    await own?.close();
  });

  it('refuses a Host naming a domain, on the API, the console and the lookup alike', async () => {
    const auth = { authorization: `Bearer ${PUBLISHED_ADMIN}` };
    for (const path of ['/api/v1/contacts?email=maria@example.org', '/console/sign-in', '/healthz']) {
      const answer = await rawRequest(published.url, 'GET', path, {
        headers: { ...auth, host: 'attacker.example:3000' },
      });
      expect(answer.status, path).toBe(403);
      expect(JSON.parse(answer.text).error.code, path).toBe('host_not_allowed');
      expect(answer.text, path).not.toContain(PUBLISHED_ADMIN);
    }
    const local = await rawRequest(published.url, 'GET', '/api/v1/contacts?email=maria@example.org', {
      headers: { ...auth, host: 'localhost:3000' },
    });
    expect(local.status).toBe(200);
  });

  it('answers any Host with the operator’s own credentials', async () => {
    const answer = await rawRequest(own.url, 'GET', '/healthz', { headers: { host: 'bridge.example.org' } });
    expect(answer.status).toBe(200);
  });
});
