import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpClient } from '../src/net/http.js';

/**
 * An answer whose body is not wanted (HttpRequest.bodyWanted: a delivery's 2xx) is returned at its
 * status and its body read away in the background — bounded by the request's timeout and by the
 * caller's signal, as the request itself is. Before, the combined signal was let go of as soon as
 * the answer was returned, so a receiver that kept a 2xx body open (a byte now and then, under the
 * size limit) held its connection for good: one more per delivery.
 */

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** A receiver that answers 200 with a body it never ends; `closed` settles when the client hangs up. */
async function dribbler(): Promise<{ url: string; closed: Promise<void> }> {
  let hungUp!: () => void;
  const closed = new Promise<void>((resolve) => {
    hungUp = resolve;
  });
  const server = createServer((request, response: ServerResponse) => {
    request.resume();
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.write('a');
    const drip = setInterval(() => response.write('b'), 50);
    response.on('close', () => {
      clearInterval(drip);
      hungUp();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, closed };
}

describe('an answer whose body is not wanted', () => {
  it('is returned at its status, and its body stops being read at the timeout (with a caller signal too)', async () => {
    const receiver = await dribbler();
    const http = createHttpClient();
    const shutdown = new AbortController();
    const response = await http.send({
      method: 'POST',
      url: receiver.url,
      body: '{}',
      timeoutMs: 300,
      signal: shutdown.signal,
      bodyWanted: (status) => status >= 300,
    });
    expect(response.status).toBe(200);
    expect(response.text).toBe('');
    // The caller's signal stays untouched: only the request's timeout may end the body's reading.
    await receiver.closed;
    expect(shutdown.signal.aborted).toBe(false);
  }, 20_000);

  it('stops being read when the caller’s signal aborts (a shutdown)', async () => {
    const receiver = await dribbler();
    const http = createHttpClient();
    const shutdown = new AbortController();
    const response = await http.send({
      method: 'POST',
      url: receiver.url,
      body: '{}',
      timeoutMs: 600_000,
      signal: shutdown.signal,
      bodyWanted: (status) => status >= 300,
    });
    expect(response.status).toBe(200);
    shutdown.abort(new Error('shutting down'));
    await receiver.closed;
  }, 20_000);
});
