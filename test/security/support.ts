import { request as httpRequest } from 'node:http';

/** Raw HTTP over loopback: the path is sent exactly as written (fetch would normalise it). */
export function rawRequest(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        headers: {
          ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Channels of every real vendor, so the walk covers their admin routes too. */
export const allVendorChannels = [
  { id: 'site', vendor: 'jivochat', token: 'jivo-token-000000000001' },
  { id: 'app', vendor: 'livetex', token: 'livetex-token-00000000001' },
  {
    id: 'cobrowse',
    vendor: 'chatvisor',
    token: 'chatvisor-token-000000001',
    apiUrl: 'http://127.0.0.1:9/rest/v1',
    apiToken: 'chatvisor-api-token-0001',
    schedules: { agentSync: '', conversationPoll: '' },
  },
];

import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { type Bridge, createBridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/logger.js';
import { defaultRegistry } from '../../src/registry.js';
import type { Store } from '../../src/store/types.js';

export const ADMIN = 'security-admin-token-0123456789';

/** A bridge on loopback whose log lines are kept for the test to read. */
export async function startLoggedBridge(
  document: Record<string, unknown>,
  options: { dispatcher?: Dispatcher; store?: Store } = {},
): Promise<{ bridge: Bridge; url: string; lines: string[]; close(): Promise<void> }> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  const registry = defaultRegistry();
  const config = parseConfig(
    {
      admin: { token: ADMIN },
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 1000 },
      log: { level: 'debug' },
      ...document,
    },
    registry,
    {},
  );
  const bridge = await createBridge({
    config,
    registry,
    logger: createLogger('debug', sink),
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
    ...(options.store ? { store: options.store } : {}),
  });
  const server = await bridge.listen(0, '127.0.0.1');
  await bridge.start();
  return {
    bridge,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    lines,
    close: () => bridge.close(),
  };
}
