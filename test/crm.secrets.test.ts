import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createBridge } from '../src/bridge.js';
import { parseConfig } from '../src/config/load.js';
import type { CrmApi } from '../src/contracts/connector.js';
import { createUserDirectory } from '../src/crm/users.js';
import { createLogger } from '../src/logger.js';
import { defaultRegistry } from '../src/registry.js';
import { amoWorld, bitrixWorld, type CrmWorld, jivoPayloads } from './support/crm-worlds.js';

/**
 * Tokens and the Bitrix24 webhook code never show in logs (at debug level), delivery errors,
 * the admin API or metrics — whether the CRM refuses them, fails, or cannot be reached.
 */

const JIVO_TOKEN = 'jivo-token-0123456789abcdef';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function bridgeWithLogs(world: CrmWorld) {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const registry = defaultRegistry();
  const config = parseConfig(
    {
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000 },
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'trace' },
      channels: [{ id: 'shop-site', vendor: 'jivochat', token: JIVO_TOKEN }],
      // The breaker would pause the destination after the failures this test provokes on purpose.
      destinations: [
        world.destination({
          retrySchedule: ['0s', '20ms', '20ms'],
          circuitBreaker: { failureThreshold: 1000 },
        }),
      ],
    },
    registry,
    {},
  );
  const bridge = await createBridge({ config, registry, logger: createLogger('trace', stream) });
  const server = await bridge.listen(0, '127.0.0.1');
  await bridge.start();
  cleanups.push(() => bridge.close());
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const admin = (path: string) =>
    fetch(`${url}${path}`, { headers: { authorization: 'Bearer admin-token-0123456789' } }).then((r) =>
      r.text(),
    );
  return { url, lines, admin };
}

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('%s secrets', (_name, makeWorld) => {
  it('never appear in logs, errors, the API or metrics: refused, failing, unreachable', async () => {
    const world = await makeWorld();
    let closed = false;
    cleanups.push(async () => {
      if (!closed) await world.close();
    });
    const { url, lines, admin } = await bridgeWithLogs(world);
    const post = (chatId: number) =>
      fetch(`${url}/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(
          jivoPayloads({ name: 'Ann', email: `ann${chatId}@example.org`, phone: `+7916000${chatId}` }, chatId)
            .accepted,
        ),
      });
    const failedCount = async () =>
      JSON.parse(await admin('/api/v1/deliveries?state=failed&limit=100')).deliveries.length;
    const waitFailed = async (count: number) => {
      const deadline = Date.now() + 8000;
      while ((await failedCount()) < count && Date.now() < deadline) await sleep(25);
      expect(await failedCount()).toBeGreaterThanOrEqual(count);
    };
    world.rejectCredential(true);
    await post(1001);
    await waitFailed(1);
    world.rejectCredential(false);
    world.failCreate('contact', 10);
    await post(1002);
    await waitFailed(2);
    await world.close();
    closed = true;
    await post(1003);
    // One chat can make more than one delivery (contact and conversation events), so a count of
    // failed deliveries can be reached before this one fails: wait for its own error instead.
    const deadline = Date.now() + 30_000;
    const unreachable = async () =>
      (JSON.parse(await admin('/api/v1/deliveries?state=failed&limit=100')).deliveries as any[]).some(
        (item) => /unreachable/.test(item.lastError?.message ?? ''),
      );
    while (!(await unreachable()) && Date.now() < deadline) await sleep(25);

    const failed = JSON.parse(await admin('/api/v1/deliveries?state=failed&limit=100')).deliveries as any[];
    const messages = failed.map((item) => item.lastError.message).join('\n');
    expect(messages).toMatch(/rejected by/);
    expect(messages).toMatch(/server error|gave up/);
    expect(messages).toMatch(/unreachable: network error/);
    const everything = [
      lines.join(''),
      await admin('/api/v1/deliveries?limit=100'),
      ...(await Promise.all(failed.map((item) => admin(`/api/v1/deliveries/${item.id}`)))),
      await fetch(`${url}/metrics`).then((r) => r.text()),
    ].join('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const secret of world.secrets) expect(everything).not.toContain(secret);
  });
});

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('%s answer quoting a secret where the excerpt is cut', (_name, makeWorld) => {
  it('shows no part of the secret', async () => {
    const world = await makeWorld();
    cleanups.push(() => world.close());
    const secret = world.secrets.at(-1)!; // the amoCRM token, the Bitrix24 webhook code
    // An error page (not the CRM's JSON error shape) is cut to an excerpt: put the secret across
    // the cut, so a scrub after the cut would no longer find it whole.
    const page = `${'x'.repeat(290)} ${secret} ${'y'.repeat(100)}`;
    const fake = (world as unknown as { fake: { failNext(times: number, answer: object): void } }).fake;
    fake.failNext(100, { status: 400, body: page, headers: { 'content-type': 'text/html' } });
    const { url, lines, admin } = await bridgeWithLogs(world);
    await fetch(`${url}/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(jivoPayloads().accepted),
    });
    let failed: any[] = [];
    // Until it failed, however long a loaded machine takes (the test's timeout is the guard).
    while (failed.length === 0) {
      failed = JSON.parse(await admin('/api/v1/deliveries?state=failed&limit=100')).deliveries;
      if (failed.length === 0) await sleep(25);
    }
    expect(failed.length).toBeGreaterThan(0);
    expect(failed[0].lastError.message).toContain('xxxxxxxx');
    const everything = [lines.join(''), await admin('/api/v1/deliveries?limit=100')].join('\n');
    // Not even its first characters.
    expect(everything).not.toContain(secret.slice(0, 8));
  });
});

describe('CRM users directory', () => {
  it('lists users once, and again on a miss at most once a minute', async () => {
    let calls = 0;
    let now = 0;
    const api = {
      listUsers: async () => {
        calls += 1;
        return [
          { id: '7', email: 'Anna@Shop.example', name: 'Anna', active: true },
          { id: '8', email: 'gone@shop.example', name: 'Gone', active: false },
        ];
      },
    } as unknown as CrmApi;
    const users = createUserDirectory(
      () => api,
      () => now,
    );
    expect(await users.byEmail('anna@shop.example')).toBe('7');
    expect(await users.byEmail('ANNA@shop.example ')).toBe('7');
    expect(calls).toBe(1);
    expect(await users.byEmail('nobody@shop.example')).toBeNull();
    expect(await users.byEmail('gone@shop.example')).toBeNull();
    expect(calls).toBe(1);
    now = 60_000;
    expect(await users.byEmail('nobody@shop.example')).toBeNull();
    expect(calls).toBe(2);
    expect(await users.byEmail('nobody@shop.example')).toBeNull();
    expect(calls).toBe(2);
  });
});
