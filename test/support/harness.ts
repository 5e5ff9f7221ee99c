import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { type Bridge, createBridge, type Role } from '../../src/bridge.js';
import { parseConfig } from '../../src/config/load.js';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { createLogger } from '../../src/logger.js';
import { AdapterRegistry, defaultRegistry } from '../../src/registry.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './redis.js';

/**
 * A real bridge on 127.0.0.1 (free port), for tests that go through HTTP like a vendor would.
 * Config is given as the parsed YAML document would look, merged over a minimal base.
 */
export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestBridgeOptions {
  config?: Record<string, unknown>;
  store?: 'memory' | 'redis';
  /** Share one Redis key space between several bridges (default: a fresh prefix). */
  keyPrefix?: string;
  adapters?: AdapterDefinition[];
  dispatcher?: Dispatcher;
  now?: () => Date;
  /**
   * The memory store's clock (ms), which its key lifetimes (TTLs) run on: a test crosses a key's
   * lifetime by moving it on, without waiting. Memory store only; the bridge's `now` is apart.
   */
  memoryClock?: () => number;
  role?: Role;
  /** The file the config came from, as `chatbridge start` passes it (createBridge's configPath). */
  configPath?: string;
  /** Start background work (scheduler, delivery). Default true. */
  start?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Where the bridge logs (default: a logger at config.log.level, silent in tests). */
  logger?: Logger;
}

export interface AdminResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface TestBridge {
  url: string;
  bridge: Bridge;
  adminToken: string;
  keyPrefix: string;
  redisUrl: string | undefined;
  admin<T = any>(method: string, path: string, body?: unknown): Promise<AdminResponse<T>>;
  /** POST a raw body (string/Buffer) or JSON to a path on the bridge. */
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<AdminResponse>;
  close(): Promise<void>;
}

export async function startTestBridge(options: TestBridgeOptions = {}): Promise<TestBridge> {
  const storeKind = options.store ?? 'memory';
  const redisUrl = storeKind === 'redis' ? await getTestRedisUrl() : undefined;
  const keyPrefix = options.keyPrefix ?? uniquePrefix('bridge');
  const { store: storeOverrides, admin, ...rest } = (options.config ?? {}) as Record<string, unknown>;
  const document = {
    server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000 },
    admin: { token: TEST_ADMIN_TOKEN, ...(admin as object) },
    store: { keyPrefix, ...(redisUrl ? { redis: redisUrl } : {}), ...(storeOverrides as object) },
    log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    ...rest,
  };
  const registry = options.adapters ? new AdapterRegistry(options.adapters) : defaultRegistry();
  const config = parseConfig(document, registry, options.env ?? {});
  const bridge = await createBridge({
    config,
    registry,
    logger: options.logger ?? createLogger(config.log.level),
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.memoryClock && storeKind === 'memory'
      ? { store: createMemoryStore({ now: options.memoryClock }) }
      : {}),
    ...(options.role ? { role: options.role } : {}),
    ...(options.configPath ? { configPath: options.configPath } : {}),
  });
  const server = await bridge.listen(0, '127.0.0.1');
  if (options.start ?? true) await bridge.start();
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  async function request(method: string, path: string, body: unknown, headers: Record<string, string>) {
    const init: RequestInit = { method, headers: { ...headers } };
    if (body !== undefined) {
      if (typeof body === 'string' || Buffer.isBuffer(body)) init.body = body as string;
      else {
        init.body = JSON.stringify(body);
        (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
      }
    }
    const response = await fetch(url + path, init);
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body: parsed as any, headers: response.headers };
  }

  return {
    url,
    bridge,
    adminToken: TEST_ADMIN_TOKEN,
    keyPrefix,
    redisUrl,
    // The admin API takes JSON declared as JSON (a JSON text given as a string too).
    admin: (method, path, body) =>
      request(method, path, body, {
        authorization: `Bearer ${TEST_ADMIN_TOKEN}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      }),
    post: (path, body, headers = {}) => request('POST', path, body, headers),
    async close() {
      await bridge.close();
      if (redisUrl && !options.keyPrefix) await cleanupPrefix(redisUrl, keyPrefix);
    },
  };
}
