import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The bridge's own address, opened in a browser: a newcomer's first request. It answered the
 * JSON 404 "no such route", as if nothing were served there.
 */
describe('GET / (the address opened in a browser)', () => {
  let web: TestBridge;
  let worker: TestBridge;
  beforeAll(async () => {
    web = await startTestBridge({ store: 'memory', start: false });
    worker = await startTestBridge({ store: 'memory', start: false, role: 'worker' });
  });
  afterAll(async () => {
    await web?.close();
    await worker?.close();
  });

  it('with the console (an all or web instance) is a redirect to it, GET and HEAD', async () => {
    for (const method of ['GET', 'HEAD']) {
      const answer = await rawRequest(web.url, method, '/', { headers: { accept: 'text/html' } });
      expect(answer.status, method).toBe(302);
      // Relative to the address the browser used: behind a proxy that serves the bridge under a
      // path (https://example.org/bridge/), the console is below that path too.
      expect(answer.headers.location, method).toBe('console');
      expect(new URL(String(answer.headers.location), 'https://example.org/bridge/').href).toBe(
        'https://example.org/bridge/console',
      );
    }
    // And the console's address answers (its own redirect to its first page).
    const console = await rawRequest(web.url, 'GET', '/console');
    expect(console.status).toBe(302);
    // Another method is not a redirect: the router's 405, JSON.
    const post = await rawRequest(web.url, 'POST', '/');
    expect(post.status).toBe(405);
    expect(JSON.parse(post.text).error.code).toBe('method_not_allowed');
  });

  it('without the console (a worker) says what the service is and where its health and docs are', async () => {
    const answer = await rawRequest(worker.url, 'GET', '/');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toMatch(/^application\/json/);
    const body = JSON.parse(answer.text);
    expect(body).toMatchObject({
      service: 'chatbridge',
      role: 'worker',
      health: '/healthz',
      ready: '/readyz',
    });
    expect(body.error).toBeUndefined();
    expect(body.docs).toContain('/api/v1/openapi.json');
    expect((await rawRequest(worker.url, 'HEAD', '/')).status).toBe(200);
  });
});
