import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The metrics listener (metrics.port) answers a method /metrics does not take as the main port
 * answers one on its known paths: a JSON 405 naming the method with `Allow`, OPTIONS 204 with the
 * same `Allow`, HEAD as GET without a body. It answered 404 to all of them, as if /metrics were
 * not there.
 */
describe('the metrics listener', () => {
  let bridge: TestBridge;
  let base: string;
  beforeAll(async () => {
    bridge = await startTestBridge({});
    const server = await bridge.bridge.listenMetrics(0, '127.0.0.1');
    base = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  });
  afterAll(() => bridge.close());

  it('answers a wrong method on /metrics with a JSON 405 naming it, and Allow', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const answer = await rawRequest(base, method, '/metrics');
      expect(answer.status, method).toBe(405);
      expect(answer.headers.allow, method).toBe('HEAD, GET');
      expect(answer.headers['content-type'], method).toMatch(/^application\/json/);
      expect(JSON.parse(answer.text), method).toEqual({
        error: {
          code: 'method_not_allowed',
          message: `${method} is not allowed here; allowed: HEAD, GET`,
        },
      });
    }
  });

  it('answers OPTIONS with 204 and Allow, HEAD as GET without a body', async () => {
    const options = await rawRequest(base, 'OPTIONS', '/metrics');
    expect([options.status, options.headers.allow, options.text]).toEqual([204, 'HEAD, GET', '']);
    expect(options.headers['content-type']).toBeUndefined();
    const get = await rawRequest(base, 'GET', '/metrics');
    expect(get.status).toBe(200);
    expect(get.text).toContain('# TYPE');
    const head = await rawRequest(base, 'HEAD', '/metrics');
    expect([head.status, head.text]).toEqual([200, '']);
    expect(head.headers['content-type']).toBe(get.headers['content-type']);
  });

  it('keeps the one JSON 404 for any other path, whatever the method', async () => {
    for (const method of ['GET', 'POST', 'OPTIONS']) {
      for (const path of ['/', '/metrics/', '/api/v1/contacts', '/healthz']) {
        const answer = await rawRequest(base, method, path);
        expect(answer.status, `${method} ${path}`).toBe(404);
        expect(JSON.parse(answer.text), `${method} ${path}`).toEqual({
          error: { code: 'not_found', message: 'no such route' },
        });
      }
    }
  });
});

/**
 * GET /metrics on the main port without metrics.token is not served there (README: never
 * unauthenticated on the public port). DESIGN and the README's Operations name `GET /metrics`, and
 * a newcomer who tried it on the bridge's port got "no such route", as if metrics did not exist.
 * The 404 stays (nothing is served), with a message that says where metrics are.
 */
describe('GET /metrics on the main port without metrics.token', () => {
  const bridges: TestBridge[] = [];
  afterAll(async () => {
    for (const each of bridges) await each.close();
  });
  const started = async (options: Parameters<typeof startTestBridge>[0]) => {
    const bridge = await startTestBridge(options);
    bridges.push(bridge);
    return bridge;
  };

  it('says metrics are on their own listener (metrics.port), or how to serve them here', async () => {
    for (const role of ['all', 'web', 'worker'] as const) {
      const bridge = await started({
        role,
        ...(role === 'all' ? {} : { store: 'redis' }),
        config: { metrics: { port: 0 } },
      });
      const answer = await rawRequest(bridge.url, 'GET', '/metrics');
      expect(answer.status, role).toBe(404);
      expect(JSON.parse(answer.text), role).toEqual({
        error: {
          code: 'not_found',
          message:
            'metrics are not served on this port: they are on the metrics listener (metrics.port); set metrics.token to serve them here too, behind a bearer token',
        },
      });
    }
  });

  it('says metrics are not served at all without metrics.port, and which setting serves them', async () => {
    const bridge = await started({});
    const answer = await rawRequest(bridge.url, 'GET', '/metrics');
    expect(answer.status).toBe(404);
    expect(JSON.parse(answer.text).error.message).toBe(
      'metrics are not served: set metrics.port (a listener of their own, loopback by default) or metrics.token (on this port, behind a bearer token)',
    );
    // Any other unknown path keeps the one 404.
    expect(JSON.parse((await rawRequest(bridge.url, 'GET', '/metricz')).text).error.message).toBe(
      'no such route',
    );
  });
});
