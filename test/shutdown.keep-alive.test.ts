import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type Bridge, createBridge } from '../src/bridge.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/logger.js';
import { AdapterRegistry } from '../src/registry.js';
import { echoAdapter } from './support/echo-adapter.js';
import { TEST_ADMIN_TOKEN } from './support/harness.js';

/**
 * SIGTERM with vendors (or a load balancer) on keep-alive connections: Node's server.close()
 * closes only idle connections, so one busy at that moment stayed open, its answer said
 * keep-alive, and the client sent its next request on it. The bridge kept serving such
 * connections for the whole server.shutdownTimeoutMs, then dropped them with a request in
 * flight (seen with 20 keep-alive clients: every SIGTERM left 20 requests unanswered). An answer
 * given while shutting down now says `Connection: close`, so the client takes its next request
 * elsewhere and the connection ends with the answer.
 */

const TOKEN = 'keep-alive-echo-token-0001';

/** Reads from a raw socket until `done(text)` holds; rejects if the socket ends first. */
function readUntil(socket: Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) {
        socket.off('data', onData);
        socket.off('close', onClose);
        resolve(text);
      }
    };
    const onClose = () => reject(new Error(`socket closed after: ${JSON.stringify(text)}`));
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

/** One complete HTTP/1.1 answer with a Content-Length body. */
function completeAnswer(text: string): boolean {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
  return length !== null && text.length >= end + 4 + Number(length[1]);
}

describe('graceful shutdown with a keep-alive connection in use', () => {
  let bridge: Bridge | undefined;
  let socket: Socket | undefined;
  afterEach(async () => {
    socket?.destroy();
    await bridge?.close();
    bridge = undefined;
  });

  it('answers the request in flight with Connection: close and ends the connection', async () => {
    const registry = new AdapterRegistry([echoAdapter]);
    const config = parseConfig(
      {
        // A grace far longer than the test: the connection must end with its answer, not at the
        // deadline when the bridge drops every connection left.
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 600_000 },
        admin: { token: TEST_ADMIN_TOKEN },
        log: { level: 'silent' },
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
      },
      registry,
      {},
    );
    bridge = await createBridge({ config, registry, logger: createLogger('silent') });
    const server: Server = await bridge.listen(0, '127.0.0.1');
    await bridge.start();
    const { port } = server.address() as { port: number };

    socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => socket?.once('connect', () => resolve()));
    const live = socket;
    // A first exchange: the connection is kept alive, as a vendor's or a load balancer's is.
    live.write('GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n');
    const first = await readUntil(live, completeAnswer);
    expect(first).toMatch(/^HTTP\/1\.1 200/);
    expect(first.toLowerCase()).toContain('connection: keep-alive');

    // A webhook whose body is still coming when the signal arrives: in flight, not idle.
    const body = JSON.stringify({ event: 'hello', visitor: 'v1', email: 'maria@example.org' });
    const headersParsed = new Promise<void>((resolve) => server.once('request', () => resolve()));
    live.write(
      `POST /webhooks/echo/site/${TOKEN} HTTP/1.1\r\nHost: bridge\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
        body.slice(0, 10),
    );
    await headersParsed;
    const closed = bridge.close();
    const ended = new Promise<void>((resolve) => live.once('end', () => resolve()));
    const answer = readUntil(live, completeAnswer);
    live.write(body.slice(10));

    const second = await answer;
    expect(second).toMatch(/^HTTP\/1\.1 200/);
    expect(second.toLowerCase()).toContain('connection: close');
    // The bridge ends the connection after its answer, and its shutdown completes without
    // waiting for the grace period.
    await ended;
    await closed;
    bridge = undefined;
  }, 60_000);
});
