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
