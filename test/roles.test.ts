import cron from 'node-cron';
import { afterEach, describe, expect, it } from 'vitest';
import type { AdapterDefinition } from '../src/contracts/adapter.js';
import { OUTBOX_KEY } from '../src/events/outbox.js';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * `chatbridge start --role` (DESIGN §5): a worker serves only /healthz, /readyz and /metrics; a
 * web instance answers vendors and the admin API and does no background work (no schedules, no
 * outbox drain, no delivery), which a worker on the same Redis does instead.
 */
const TOKEN = 'roles-echo-channel-token-01';
const SECRET = `whsec_${Buffer.from('roles-test-secret-0123456789abcd').toString('base64')}`;

/** The echo adapter plus a scheduled job, so a started scheduler shows up in node-cron's tasks. */
const scheduledEcho: AdapterDefinition = {
  ...echoAdapter,
  create(context, channel) {
    return {
      ...echoAdapter.create(context, channel),
      jobs: [{ name: 'tick', schedule: '0 0 1 1 *', run: async () => {} }],
    };
  },
};

const cronTaskNames = () => [...cron.getTasks().values()].map((task) => task.name);

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function bridgeWith(options: Parameters<typeof startTestBridge>[0]): Promise<TestBridge> {
  const bridge = await startTestBridge(options);
  cleanups.push(() => bridge.close());
  return bridge;
}

describe('--role worker', () => {
  it('serves /healthz, /readyz and /metrics, and nothing else', async () => {
    const worker = await bridgeWith({
      adapters: [scheduledEcho],
      role: 'worker',
      config: {
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        metrics: { token: 'metrics-token-0123456789' },
      },
    });
    expect((await fetch(`${worker.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${worker.url}/readyz`)).status).toBe(200);
    // OPTIONS as on a web instance: 204 with Allow, no body.
    const options = await fetch(`${worker.url}/healthz`, { method: 'OPTIONS' });
    expect([options.status, options.headers.get('allow'), await options.text()]).toEqual([
      204,
      'HEAD, GET',
      '',
    ]);
    const metrics = await fetch(`${worker.url}/metrics`, {
      headers: { authorization: 'Bearer metrics-token-0123456789' },
    });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('# TYPE');

    const webhook = await worker.post(`/webhooks/echo/site/${TOKEN}`, { event: 'hello', visitor: 1 });
    expect(webhook.status).toBe(404);
    expect(webhook.body.error.message).toContain('--role worker');
    expect((await worker.admin('GET', '/api/v1/contacts?email=a@example.org')).status).toBe(404);
    expect((await worker.admin('GET', '/api/v1/channels')).status).toBe(404);
    expect((await fetch(`${worker.url}/api/v1/openapi.json`)).status).toBe(404);
    expect((await fetch(`${worker.url}/echo/site/greeting/ann`)).status).toBe(404);
    // No console either (it was mounted before the role's check): its sign-in and pages are 404 JSON.
    for (const path of ['/console', '/console/sign-in', '/console/contacts']) {
      const page = await fetch(`${worker.url}${path}`, { redirect: 'manual' });
      expect(page.status, path).toBe(404);
      expect(((await page.json()) as { error: { message: string } }).error.message).toContain(
        '--role worker',
      );
    }
    // Nor the admin gate: a call without a token is the worker's 404, not a 401 counted as a failure.
    expect((await fetch(`${worker.url}/api/v1/contacts`)).status).toBe(404);
    // The worker does run the schedules.
    expect(cronTaskNames()).toContain('site:tick');
  });

  it('answers a wrong method on its paths with the JSON 405 naming it, not its 404 body', async () => {
    // Its 404 ("runs --role worker") was the last middleware, reached before the router's 405 was
    // decided: a POST /healthz got status 405 with that 404's body.
    const worker = await bridgeWith({ adapters: [scheduledEcho], role: 'worker' });
    const wrong = await fetch(`${worker.url}/healthz`, { method: 'POST' });
    expect([wrong.status, wrong.headers.get('allow')]).toEqual([405, 'HEAD, GET']);
    expect(await wrong.json()).toEqual({
      error: { code: 'method_not_allowed', message: 'POST is not allowed here; allowed: HEAD, GET' },
    });
    const unknown = await fetch(`${worker.url}/nope`, { method: 'POST' });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toContain(
      '--role worker',
    );
  });

  it('reports chatbridge_store_up as the store is at each scrape, whether or not /readyz was asked', async () => {
    // Set only by /readyz, it read 0 on a healthy worker nobody probed, and 1 after its store went.
    const worker = await bridgeWith({
      adapters: [scheduledEcho],
      role: 'worker',
      config: {
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        metrics: { token: 'metrics-token-0123456789' },
      },
    });
    const storeUp = async () => {
      const metrics = await fetch(`${worker.url}/metrics`, {
        headers: { authorization: 'Bearer metrics-token-0123456789' },
      });
      expect(metrics.status).toBe(200);
      return /^chatbridge_store_up (\d+)$/m.exec(await metrics.text())?.[1];
    };
    expect(await storeUp()).toBe('1');
    expect((await fetch(`${worker.url}/readyz`)).status).toBe(200);
    await worker.bridge.store.close();
    expect(await storeUp()).toBe('0');
    expect((await fetch(`${worker.url}/readyz`)).status).toBe(503);
  });
});

describe('--role web', () => {
  let receiver: Receiver;

  it('answers vendors but schedules, drains and delivers nothing; a worker on the same Redis delivers', async () => {
    receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.close());
    const redisUrl = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('roles');
    cleanups.push(() => cleanupPrefix(redisUrl, keyPrefix));
    const config = {
      channels: [{ id: 'web-site', vendor: 'echo', token: TOKEN }],
      destinations: [{ id: 'crm', url: receiver.url, secret: SECRET }],
    };
    const web = await bridgeWith({
      adapters: [scheduledEcho],
      role: 'web',
      store: 'redis',
      keyPrefix,
      config,
    });
    expect(cronTaskNames()).not.toContain('web-site:tick');

    const answer = await web.post(`/webhooks/echo/web-site/${TOKEN}`, {
      event: 'hello',
      visitor: 7,
      email: 'web-role@example.org',
    });
    expect(answer.status).toBe(200);
    // The event waits in the outbox: nothing on a web instance drains it.
    expect(await web.bridge.store.llen(OUTBOX_KEY)).toBeGreaterThan(0);
    expect(await web.bridge.delivery.list({ limit: 10 })).toEqual([]);
    expect(receiver.requests).toEqual([]);

    // A worker on the same Redis picks it up: web + worker together lose nothing.
    await bridgeWith({ adapters: [scheduledEcho], role: 'worker', store: 'redis', keyPrefix, config });
    await receiver.waitFor(
      () => receiver.application.some((event) => event.payload.type === 'message.received'),
      15_000,
      'the worker delivers the event the web instance took',
    );
    expect(cronTaskNames()).toContain('web-site:tick');
  });
});
