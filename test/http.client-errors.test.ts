import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Requests Node's HTTP parser refuses before Koa sees them (headers too large, malformed framing)
 * are answered with the bridge's JSON error naming the problem, not Node's bare status line.
 * Sent over a raw socket: no HTTP client would send them.
 */
const HOOK = '/webhooks/jivochat/site/jivo-client-errors-token-0123';

describe('requests the HTTP parser refuses', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'site', vendor: 'jivochat', token: 'jivo-client-errors-token-0123' }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  /** Send `text` as it is and read everything until the server closes. */
  function exchange(text: string): Promise<{ status: number; headers: string; body: any }> {
    const { port } = new URL(bridge.url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.end(text));
      const chunks: Buffer[] = [];
      socket.on('data', (chunk) => chunks.push(chunk));
      socket.on('error', reject);
      socket.on('close', () => {
        const answer = Buffer.concat(chunks).toString('utf8');
        const [head = '', body = ''] = answer.split('\r\n\r\n');
        let parsed: unknown = body;
        try {
          parsed = JSON.parse(body);
        } catch {
          // not JSON: the assertion below shows it
        }
        resolve({ status: Number(head.split(' ')[1]), headers: head, body: parsed });
      });
    });
  }

  it('headers larger than Node takes: 431 headers_too_large, as JSON', async () => {
    const answer = await exchange(
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\nContent-Length: 2\r\n\r\n{}`,
    );
    expect(answer.status).toBe(431);
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(answer.body).toMatchObject({ error: { code: 'headers_too_large' } });
  });

  it('as many headers as fit in the size: 431 as JSON too', async () => {
    const many = Array.from({ length: 3000 }, (_, index) => `x-h${index}: v`).join('\r\n');
    const answer = await exchange(
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\n${many}\r\nContent-Length: 2\r\n\r\n{}`,
    );
    expect(answer.status).toBe(431);
    expect(answer.body).toMatchObject({ error: { code: 'headers_too_large' } });
  });

  it.each([
    ['a request line that is not HTTP', 'GARBAGE\r\n\r\n'],
    [
      'a chunk size that is not hex',
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
    ],
    [
      'both Content-Length and Transfer-Encoding',
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
    ],
    [
      'two Content-Lengths',
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
    ],
    [
      'a NUL in a header value',
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nX-A: a\u0000b\r\nContent-Length: 2\r\n\r\n{}`,
    ],
  ])('%s: 400 bad_http naming the parser error, as JSON', async (_what, text) => {
    const answer = await exchange(text);
    expect(answer.status).toBe(400);
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(answer.body.error.code).toBe('bad_http');
    expect(answer.body.error.message).toMatch(/not valid HTTP\/1\.1 \(HPE_[A-Z_]+\)/);
  });

  // Found by test/slow/routes.fuzz.test.ts: Node refused these with a bare status and no body.
  it.each([
    ['an admin path', '/api/v1/contacts'],
    ['a vendor webhook', HOOK],
    ['a console page', '/console/contacts'],
  ])('an HTTP/1.1 request without Host (%s): 400 missing_host, as JSON', async (_where, path) => {
    const answer = await exchange(`GET ${path} HTTP/1.1\r\nConnection: close\r\n\r\n`);
    expect(answer.status).toBe(400);
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(answer.body).toEqual({
      error: { code: 'missing_host', message: 'an HTTP/1.1 request needs a Host header' },
    });
  });

  it('an HTTP/1.0 request without Host is answered as usual (HTTP/1.0 has none to send)', async () => {
    const answer = await exchange('GET /healthz HTTP/1.0\r\n\r\n');
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ ok: true });
  });

  it('an Expect other than 100-continue: 417 expectation_failed naming it, as JSON', async () => {
    const answer = await exchange(
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nExpect: nope\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
    );
    expect(answer.status).toBe(417);
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(answer.body).toEqual({
      error: {
        code: 'expectation_failed',
        message: 'Expect: "nope" is not supported: send the request without it, or with Expect: 100-continue',
      },
    });
  });

  it('Expect: 100-continue still gets its 100 Continue, then the answer', async () => {
    const answer = await exchange(
      'GET /healthz HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
    );
    expect(answer.status).toBe(100);
    expect(answer.body).toMatch(/^HTTP\/1\.1 200 OK/);
  });

  it('a valid request on the same server is answered as before', async () => {
    const answer = await exchange(
      `POST ${HOOK} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
    );
    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('invalid_body');
  });
});
