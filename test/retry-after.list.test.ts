import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { attemptDelivery } from '../src/delivery/attempt.js';
import { createHttpClient } from '../src/net/http.js';
import { parseRetryAfter } from '../src/net/retry.js';

/**
 * Retry-After given twice: a proxy or CDN in front of a receiver adds its own to the server's, and
 * the HTTP client joins repeated headers with ", ". The wait must still be honoured.
 */
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()!();
});

describe('Retry-After given twice', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('reads the first of a list of seconds or of HTTP dates', () => {
    expect(parseRetryAfter('120, 120', now)).toBe(120_000);
    expect(parseRetryAfter('5, 5', now)).toBe(5000);
    expect(parseRetryAfter('30,60', now)).toBe(30_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:02:00 GMT, Thu, 01 Jan 2026 00:05:00 GMT', now)).toBe(
      120_000,
    );
    // One value as before.
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:02:00 GMT', now)).toBe(120_000);
    expect(parseRetryAfter('soon, later', now)).toBeUndefined();
  });

  it('is honoured by a delivery whose receiver sent it twice', async () => {
    const server = createServer((_req, res) => {
      res.setHeader('retry-after', ['120', '120']);
      res.writeHead(429).end('slow down');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(() => resolve())));
    const { port } = server.address() as AddressInfo;
    const result = await attemptDelivery(
      createHttpClient(),
      { url: `http://127.0.0.1:${port}/hook`, headers: {}, body: '{}', timeoutMs: 10_000 },
      Date.now(),
    );
    expect(result).toMatchObject({ kind: 'retry', status: 429, retryAfterMs: 120_000 });
  });
});
