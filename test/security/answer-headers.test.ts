import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetricsApp } from '../../src/http/app.js';
import { createHttpServer } from '../../src/http/client-error.js';
import { Metrics } from '../../src/metrics.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { allVendorChannels, rawRequest } from './support.js';

const [jivo] = allVendorChannels as unknown as [{ token: string }];

/**
 * `X-Content-Type-Options: nosniff` was on console answers only: every other answer of the
 * bridge (the API, webhooks, lookups, health, errors, the metrics listener) let a browser guess
 * its type. Every answer now carries it, with `Cache-Control: no-store` (answers name contacts),
 * a CSP that lets nothing load or frame it, and `Referrer-Policy: no-referrer`; the console keeps
 * its own stricter set (its assets `no-cache`).
 */
const DEFENSIVE = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

function headersOf(answer: { headers: Record<string, string | string[] | undefined> }) {
  return Object.fromEntries(Object.keys(DEFENSIVE).map((name) => [name, answer.headers[name]]));
}

describe('every answer carries the defensive headers', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: allVendorChannels,
        limits: { rate: { lookupsPerAddress: 1, window: '1h' } },
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, bodyLimitBytes: 1024 },
      },
    });
  });
  afterAll(() => bridge.close());

  it('on the main port: API, webhooks, lookups, health and every error status', async () => {
    const admin = { authorization: `Bearer ${bridge.adminToken}` };
    const lookup = { 'x-forwarded-for': '192.0.2.77', 'content-type': 'application/jose' };
    const probes: Array<[string, string, string, { headers?: Record<string, string>; body?: string }]> = [
      ['200 healthz', 'GET', '/healthz', {}],
      ['200 readyz', 'GET', '/readyz', {}],
      ['200 openapi', 'GET', '/api/v1/openapi.json', {}],
      ['200 contacts', 'GET', '/api/v1/contacts?email=a@example.org', { headers: admin }],
      ['401 admin', 'GET', '/api/v1/channels', {}],
      ['200 webhook', 'POST', `/webhooks/jivochat/site/${jivo.token}`, { body: '{"event_name":"x"}' }],
      ['404 webhook', 'POST', '/webhooks/jivochat/site/wrong-token-000000000', { body: '{}' }],
      ['404 route', 'GET', '/nothing/here', {}],
      ['405', 'PUT', '/healthz', {}],
      ['413', 'POST', '/api/v1/contacts/c_1/merge', { headers: admin, body: `"${'x'.repeat(4096)}"` }],
      ['400 lookup', 'POST', '/livetex/app/attributes', { headers: lookup, body: 'not-a-jwe' }],
      ['429 lookup', 'POST', '/livetex/app/attributes', { headers: lookup, body: 'not-a-jwe' }],
    ];
    const seen: Record<string, unknown> = {};
    const want: Record<string, unknown> = {};
    for (const [name, method, path, options] of probes) {
      const answer = await rawRequest(bridge.url, method, path, options);
      seen[name] = { status: answer.status, ...headersOf(answer) };
      want[name] = { status: Number(name.slice(0, 3)), ...DEFENSIVE };
    }
    expect(seen).toEqual(want);
  });

  it('keeps the console its own headers', async () => {
    const page = await rawRequest(bridge.url, 'GET', '/console/sign-in');
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(String(page.headers['content-security-policy'])).toContain("script-src 'self'");
  });

  it("on a request Node's parser refuses, and on the metrics listener", async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk.toString();
      });
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
      socket.end('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n');
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    const head = raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase();
    for (const [name, value] of Object.entries(DEFENSIVE)) expect(head).toContain(`${name}: ${value}`);

    const server = createHttpServer(createMetricsApp(new Metrics()).callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (const [path, status] of [
        ['/metrics', 200],
        ['/nothing', 404],
      ] as const) {
        const answer = await rawRequest(base, 'GET', path);
        expect({ status: answer.status, ...headersOf(answer) }).toEqual({ status, ...DEFENSIVE });
      }
    } finally {
      server.close();
    }
  });
});
