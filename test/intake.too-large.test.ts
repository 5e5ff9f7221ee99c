import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A webhook over server.bodyLimitBytes is refused with 413 and, like every refused payload,
 * journalled: its first bytes as far as they were read, marked truncated (nothing of the body
 * when its Content-Length was already over the limit, but still the entry and the reason).
 * Before, a 413 left no entry: an operator never learnt that a vendor's payloads were too large.
 */
const TOKEN = 'jivo-too-large-token-0123456789';
const HOOK = `/webhooks/jivochat/site/${TOKEN}`;
const LIMIT = 4096;

describe('a webhook over the body limit', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, bodyLimitBytes: LIMIT },
        channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN }],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  /** POST `parts` chunked (no Content-Length), or with `length` declared. */
  function post(parts: string[], length?: number): Promise<{ status: number; body: any }> {
    const url = new URL(HOOK, bridge.url);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(length === undefined ? {} : { 'content-length': String(length) }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
            }),
          );
        },
      );
      // The server may answer and close before everything is written.
      req.on('error', (error) => (req.writableEnded ? undefined : reject(error)));
      for (const part of parts) req.write(part);
      req.end();
    });
  }

  async function newestRejected() {
    const page = await bridge.admin('GET', '/api/v1/journal?channel=site&kind=rejected&limit=1');
    return page.body.entries[0];
  }

  it('sent without a Content-Length: 413, and its first bytes journalled, marked truncated', async () => {
    const head = '{"event_name":"chat_accepted","chat_id":7300,"visitor":{"name":"';
    const answer = await post([head, 'x'.repeat(LIMIT), 'y'.repeat(LIMIT), '"}}']);
    expect(answer.status).toBe(413);
    expect(answer.body.error.code).toBe('payload_too_large');
    const entry = await newestRejected();
    expect(entry).toMatchObject({ kind: 'rejected', truncated: true, encoding: 'utf8' });
    expect(entry.reason).toContain(`larger than ${LIMIT} bytes`);
    expect(entry.body.startsWith(head)).toBe(true);
    expect(entry.body.length).toBeLessThanOrEqual(LIMIT);
  });

  it('declared over the limit: 413, and an entry with the reason although nothing was read', async () => {
    const body = `{"event_name":"chat_accepted","chat_id":7301,"pad":"${'z'.repeat(LIMIT)}"}`;
    const answer = await post([body], Buffer.byteLength(body));
    expect(answer.status).toBe(413);
    const entry = await newestRejected();
    expect(entry).toMatchObject({ kind: 'rejected', truncated: true, body: '' });
    expect(entry.reason).toContain(`larger than ${LIMIT} bytes`);
  });
});
