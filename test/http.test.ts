import type { IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBridge } from '../src/bridge.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/logger.js';
import { AdapterRegistry } from '../src/registry.js';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

const TOKEN = 'echo-channel-token-000001';
const config = {
  channels: [{ id: 'site', vendor: 'echo', token: TOKEN, name: 'website' }],
  server: { bodyLimitBytes: 4096 },
  metrics: { token: 'metrics-token-0123456789' },
};

describe('core HTTP surface', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ adapters: [echoAdapter], config });
  });
  afterAll(() => bridge.close());

  it('answers /healthz, /readyz and /metrics', async () => {
    expect((await fetch(`${bridge.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${bridge.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ok: true, store: 'memory' });
    await bridge.post(`/webhooks/echo/site/${TOKEN}`, { event: 'hello', visitor: 1 });
    expect((await fetch(`${bridge.url}/metrics`)).status).toBe(401);
    const metrics = await (
      await fetch(`${bridge.url}/metrics`, { headers: { authorization: 'Bearer metrics-token-0123456789' } })
    ).text();
    expect(metrics).toContain('chatbridge_intake_total{vendor="echo",event="hello",outcome="ok"} 1');
    expect(metrics).toContain('chatbridge_reply_latency_seconds_bucket');
  });

  it('answers an unknown channel and a wrong token with the same 404 body', async () => {
    const wrongToken = await bridge.post('/webhooks/echo/site/not-the-token', { event: 'x', visitor: 1 });
    const noChannel = await bridge.post(`/webhooks/echo/nope/${TOKEN}`, { event: 'x', visitor: 1 });
    const wrongVendor = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, { event: 'x', visitor: 1 });
    expect(wrongToken.status).toBe(404);
    expect(noChannel.status).toBe(404);
    expect(wrongVendor.status).toBe(404);
    expect(wrongToken.body).toEqual(noChannel.body);
    expect(wrongVendor.body).toEqual(noChannel.body);
  });

  it('turns bad input into a 4xx JSON error and journals the payload', async () => {
    const notJson = await bridge.post(`/webhooks/echo/site/${TOKEN}`, '{"event": nope', {
      'content-type': 'application/json',
    });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('invalid_json');
    const invalid = await bridge.post(`/webhooks/echo/site/${TOKEN}`, { visitor: 1 });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.issues[0].path).toBe('event');
    const tooBig = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'x',
      visitor: 1,
      text: 'a'.repeat(5000),
    });
    expect(tooBig.status).toBe(413);
    expect(tooBig.body.error.code).toBe('payload_too_large');
    const journal = await bridge.admin('GET', '/api/v1/journal?kind=rejected');
    expect(journal.status).toBe(200);
    const bodies = journal.body.entries.map((entry: { body: string }) => entry.body);
    expect(bodies).toContain('{"event": nope');
    expect(bodies).toContain('{"visitor":1}');
  });

  it('requires the admin token on /api/v1 and answers errors as JSON', async () => {
    const anonymous = await fetch(`${bridge.url}/api/v1/contacts?email=a@b.c`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ error: { code: 'unauthorized' } });
    const wrong = await fetch(`${bridge.url}/api/v1/contacts?email=a@b.c`, {
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.status).toBe(401);
    const unknownParam = await bridge.admin('GET', '/api/v1/contacts?colour=blue');
    expect(unknownParam.status).toBe(400);
    expect(unknownParam.body.error.code).toBe('invalid_query');
    const missing = await bridge.admin('GET', '/api/v1/contacts/c_missing');
    expect(missing.status).toBe(404);
    const route = await fetch(`${bridge.url}/nowhere`);
    expect(route.status).toBe(404);
    expect(await route.json()).toMatchObject({ error: { code: 'not_found' } });
  });

  it('serves contacts, merged ids, the timeline and unmerge through the admin API', async () => {
    const first = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'chat',
      visitor: 'v1',
      email: 'Ann@Example.org',
      name: 'Ann',
      at: '2026-11-01T10:00:00Z',
      text: 'hi',
    });
    const second = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'chat',
      visitor: 'v2',
      phone: '8 916 555-00-01',
      at: '2026-11-01T11:00:00Z',
      text: 'from phone',
    });
    expect(first.body.contactId).not.toBe(second.body.contactId);
    const merged = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'chat',
      visitor: 'v3',
      email: 'ann@example.org',
      phone: '+79165550001',
      at: '2026-11-01T12:00:00Z',
      text: 'both',
    });
    expect(merged.body.contactId).toBe(first.body.contactId);

    const found = await bridge.admin('GET', '/api/v1/contacts?phone=%2B7%20916%20555%2000%2001');
    expect(found.body.contacts).toHaveLength(1);
    expect(found.body.contacts[0].emails).toEqual(['ann@example.org']);
    const byIdentity = await bridge.admin('GET', '/api/v1/contacts?identity=visitor:site:v2');
    expect(byIdentity.body.contacts[0].id).toBe(first.body.contactId);
    const viaOldId = await bridge.admin('GET', `/api/v1/contacts/${second.body.contactId}`);
    expect(viaOldId.body.id).toBe(first.body.contactId);
    expect(viaOldId.body.mergedFrom).toBe(second.body.contactId);

    const page1 = await bridge.admin('GET', `/api/v1/contacts/${first.body.contactId}/timeline?limit=2`);
    expect(page1.body.entries.map((entry: { summary: string }) => entry.summary)).toEqual([
      'both',
      'Merged 1 contact via phone',
    ]);
    const page2 = await bridge.admin(
      'GET',
      `/api/v1/contacts/${first.body.contactId}/timeline?limit=2&before=${page1.body.nextCursor}`,
    );
    expect(page2.body.entries.map((entry: { summary: string }) => entry.summary)).toEqual([
      'from phone',
      'hi',
    ]);
    expect(page2.body.nextCursor).toBeNull();

    const badUnmerge = await bridge.admin('POST', `/api/v1/contacts/${first.body.contactId}/unmerge`, {
      what: 1,
    });
    expect(badUnmerge.status).toBe(400);
    const unmerged = await bridge.admin('POST', `/api/v1/contacts/${first.body.contactId}/unmerge`, {
      recordId: second.body.contactId,
    });
    expect(unmerged.status).toBe(200);
    expect(unmerged.body.split.id).toBe(second.body.contactId);
    const after = await bridge.admin('GET', `/api/v1/contacts/${second.body.contactId}`);
    expect(after.body.mergedFrom).toBeUndefined();
  });

  it('dispatches channel routes (public and admin) and refuses wrong methods', async () => {
    // A public route is an adapter's lookup-kind intake route (POST, through the intake pipeline).
    const greeting = await bridge.post('/echo/site/greeting', { person: 'Ann' });
    expect(greeting.body).toEqual({ greeting: 'hello Ann', known: false });
    expect((await bridge.post('/echo/other/greeting', { person: 'Ann' })).status).toBe(404);
    const wrongPublicMethod = await fetch(`${bridge.url}/echo/site/greeting`);
    expect(wrongPublicMethod.status).toBe(404);
    const created = await bridge.admin('POST', '/api/v1/channels/site/things', { a: 1 });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ got: { a: 1 } });
    const wrongMethod = await bridge.admin('GET', '/api/v1/channels/site/things');
    expect(wrongMethod.status).toBe(405);
    const noAuth = await fetch(`${bridge.url}/api/v1/channels/site/things`, { method: 'POST', body: '{}' });
    expect(noAuth.status).toBe(401);
    const channels = await bridge.admin('GET', '/api/v1/channels');
    expect(channels.body.channels[0]).toMatchObject({ id: 'site', vendor: 'echo', name: 'website' });
  });

  it('publishes an OpenAPI document generated from the schemas', async () => {
    const response = await fetch(`${bridge.url}/api/v1/openapi.json`);
    const document = (await response.json()) as any;
    expect(document.openapi).toBe('3.1.0');
    expect(Object.keys(document.paths)).toEqual(
      expect.arrayContaining([
        '/api/v1/contacts',
        '/api/v1/contacts/{id}/timeline',
        '/api/v1/channels/{id}/things',
      ]),
    );
    const contact =
      document.paths['/api/v1/contacts/{id}'].get.responses['200'].content['application/json'].schema;
    expect(contact.properties.emails.type).toBe('array');
  });
});

/** A bridge on the echo adapter whose log lines are kept in `lines`, listening on loopback. */
async function bridgeWithLog(level: 'debug' | 'info', extra: Record<string, unknown> = {}) {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  const registry = new AdapterRegistry([echoAdapter]);
  const parsed = parseConfig(
    {
      admin: { token: 'admin-secret-token-123456' },
      server: { port: 0, host: '127.0.0.1' },
      channels: config.channels,
      log: { level },
      ...extra,
    },
    registry,
    {},
  );
  const bridge = await createBridge({ config: parsed, registry, logger: createLogger(level, sink) });
  const server = await bridge.listen(0, '127.0.0.1');
  return { lines, bridge, server, port: (server.address() as { port: number }).port };
}

describe('logs', () => {
  it('never contain the webhook token or the admin token', async () => {
    const { lines, bridge, port } = await bridgeWithLog('debug');
    await fetch(`http://127.0.0.1:${port}/webhooks/echo/site/${TOKEN}`, {
      method: 'POST',
      body: '{"event":"x","visitor":1}',
    });
    await fetch(`http://127.0.0.1:${port}/webhooks/echo/site/${TOKEN}`, { method: 'POST', body: 'not json' });
    await fetch(`http://127.0.0.1:${port}/api/v1/contacts?email=a@b.c`, {
      headers: { authorization: 'Bearer admin-secret-token-123456' },
    });
    await bridge.close();
    const text = lines.join('');
    expect(text).toContain('/webhooks/echo/site/***');
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain('admin-secret-token-123456');
  });
});

describe('a client that goes away mid-body', () => {
  it('is counted as request_closed, not as a 500 "unhandled error"', async () => {
    // A raw socket: headers promising 100 bytes, 18 of them, then the connection is destroyed.
    // Node emits the request's 'error' ("aborted", ECONNRESET) before its 'close'.
    const { connect } = await import('node:net');
    const { lines, bridge, server, port } = await bridgeWithLog('info', {
      metrics: { token: 'metrics-token-0123456789' },
    });
    let arrived: IncomingMessage | undefined;
    server.once('request', (request: IncomingMessage) => {
      arrived = request;
    });
    try {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {}); // we hang up ourselves
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(
        `POST /webhooks/echo/site/${TOKEN} HTTP/1.1\r\nhost: 127.0.0.1\r\n` +
          'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"event":"x","vis',
      );
      // Destroyed once the bridge is reading the body (its listeners are on the request): a
      // request closed before that was already refused as request_closed.
      for (let attempt = 0; attempt < 200 && !(arrived && arrived.listenerCount('data') > 0); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(arrived?.listenerCount('data')).toBeGreaterThan(0);
      socket.destroy();
      const accessLine = () =>
        lines
          .map((line) => JSON.parse(line) as { msg: string; path?: string; status?: number })
          .find((line) => line.msg === 'request' && line.path?.startsWith('/webhooks/echo/'));
      for (let attempt = 0; attempt < 200 && accessLine() === undefined; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      expect(accessLine()).toBeDefined();
      expect(accessLine()?.status).toBe(400);
      expect(lines.filter((line) => line.includes('"level":50'))).toEqual([]);
      const metrics = await (
        await fetch(`http://127.0.0.1:${port}/metrics`, {
          headers: { authorization: 'Bearer metrics-token-0123456789' },
        })
      ).text();
      expect(metrics).toContain(
        'chatbridge_intake_total{vendor="echo",event="unknown",outcome="request_closed"} 1',
      );
      expect(metrics).not.toContain('outcome="error"');
    } finally {
      await bridge.close();
    }
  });
});

describe('readRawBody', () => {
  it('rejects (does not wait forever) when the client closed the request before the body was read', async () => {
    // An earlier step of a request may await something (a store read, a queue) while the client
    // gives up; its 'close' has fired by the time the body is read.
    const { default: Koa } = await import('koa');
    const { request } = await import('node:http');
    const { readRawBody } = await import('../src/http/body.js');
    const { RequestClosedError } = await import('../src/errors.js');
    let arrived!: () => void;
    const arrival = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    let outcome!: (value: unknown) => void;
    const result = new Promise<unknown>((resolve) => {
      outcome = resolve;
    });
    const app = new Koa();
    app.use(async (ctx) => {
      const closed = new Promise((resolve) => ctx.req.once('close', resolve));
      arrived();
      await closed;
      await readRawBody(ctx, 4096).then(outcome, outcome);
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as { port: number };
    const client = request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/',
      headers: { 'content-length': 9 },
    });
    client.on('error', () => {}); // we hang up ourselves
    client.write('{"a":"b"}');
    await arrival;
    client.destroy();
    expect(await result).toBeInstanceOf(RequestClosedError);
    server.close();
  });
});
