import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetricsApp } from '../src/http/app.js';
import { Metrics } from '../src/metrics.js';
import { rawRequest } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A method no router takes (TRACE, PROPFIND, M-SEARCH: valid HTTP, sent by scanners and odd
 * clients) is a wrong request, not a failure of the bridge: 405 with Allow on a path that takes
 * other methods, the one JSON 404 elsewhere (and on the public vendor paths, which never confirm
 * that they exist). @koa/router answered 501 Not Implemented on every path, a 5xx that alerting
 * counts as the bridge failing. Found by test/slow/routes.fuzz.test.ts.
 */
const TOKEN = 'jivo-unknown-methods-token-01';
const HOOK = `/webhooks/jivochat/site/${TOKEN}`;
const METHODS = ['TRACE', 'PROPFIND', 'M-SEARCH'];

describe('methods no route takes', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });
  const admin = () => ({ authorization: `Bearer ${bridge.adminToken}` });

  it.each(METHODS)('%s on a known path: 405 with Allow and the JSON error', async (method) => {
    for (const [path, allow] of [
      ['/api/v1/contacts', 'HEAD, GET'],
      ['/api/v1/contacts/c_1/merge', 'POST'],
      ['/healthz', 'HEAD, GET'],
    ] as const) {
      const answer = await rawRequest(bridge.url, method, path, { headers: admin() });
      expect(answer.status, `${method} ${path}`).toBe(405);
      expect(answer.headers.allow, `${method} ${path}`).toBe(allow);
      expect(JSON.parse(answer.text), `${method} ${path}`).toEqual({
        error: { code: 'method_not_allowed', message: `${method} is not allowed here; allowed: ${allow}` },
      });
    }
  });

  it.each(METHODS)('%s on a vendor webhook or an unknown path: the one JSON 404', async (method) => {
    const patch = await rawRequest(bridge.url, 'PATCH', HOOK);
    expect(patch.status).toBe(404);
    for (const path of [HOOK, '/webhooks/jivochat/nope/nope', '/nope', '/api/v1/nope']) {
      const answer = await rawRequest(bridge.url, method, path, { headers: admin() });
      expect(answer.status, `${method} ${path}`).toBe(404);
      expect(answer.headers.allow, `${method} ${path}`).toBeUndefined();
      expect(answer.text, `${method} ${path}`).toBe(patch.text);
    }
  });

  it('TRACE on the metrics listener: 405 with Allow, as for POST', async () => {
    const server = createMetricsApp(new Metrics()).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const answer = await rawRequest(url, 'TRACE', '/metrics');
      expect(answer.status).toBe(405);
      expect(answer.headers.allow).toBe('HEAD, GET');
      expect(JSON.parse(answer.text).error.code).toBe('method_not_allowed');
      expect((await rawRequest(url, 'TRACE', '/nope')).status).toBe(404);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
