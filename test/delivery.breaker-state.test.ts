import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import {
  breakerKey,
  createBreakerRecorder,
  GRACE_MS,
  readOpenBreakers,
} from '../src/delivery/breaker-state.js';
import { createDelivery, type Delivery } from '../src/delivery/index.js';
import { createOutboxPublisher, type EventPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store, StoreBatch } from '../src/store/types.js';
import { capture } from './support/cli.js';
import { consoleRequest, signIn } from './support/console.js';
import { runDeliveriesCommand } from './support/deliveries-cli.js';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A destination's circuit breaker is in the memory of the instance whose attempts failed, while
 * its pause holds on every instance: the console's Deliveries page showed "pending, 0 attempts"
 * with no reason. Each instance now records in the store when its breaker opens (until when,
 * after how many failures, the last error) and when it closes, on those changes only; the
 * console, the admin API's deliveries list and `deliveries list` show it. On both stores.
 */

const SECRET = `whsec_${Buffer.from('breaker-state-secret-0123456789ab').toString('base64')}`;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function storeOf(
  kind: 'memory' | 'redis',
): Promise<{ store: Store; redisUrl?: string; keyPrefix: string }> {
  const keyPrefix = uniquePrefix('breaker-state');
  if (kind === 'memory') {
    const store = createMemoryStore();
    cleanups.push(() => store.close());
    return { store, keyPrefix };
  }
  const redisUrl = await getTestRedisUrl();
  const store = await createRedisStore({ url: redisUrl, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(redisUrl, keyPrefix);
  });
  return { store, redisUrl, keyPrefix };
}

/** The store, with every call that names a breaker key counted (batches' queued commands too). */
function counting(store: Store): { store: Store; writes: string[] } {
  const writes: string[] = [];
  const isBreaker = (key: unknown) => typeof key === 'string' && key.startsWith('delivery:breaker:');
  const wrapBatch = (batch: StoreBatch): StoreBatch =>
    new Proxy(batch, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (isBreaker(args[0])) writes.push(`batch.${String(name)}`);
          const result = value.apply(target, args);
          return result === target ? wrapped : result;
        };
      },
    });
  let wrapped: StoreBatch;
  const proxy = new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== 'function') return value;
      if (name === 'batch')
        return () => {
          wrapped = wrapBatch(value.apply(target, []));
          return wrapped;
        };
      return (...args: unknown[]) => {
        if (isBreaker(args[0])) writes.push(String(name));
        return value.apply(target, args);
      };
    },
  });
  return { store: proxy, writes };
}

function entry(contactId: string): OutboxEntry {
  return {
    event: {
      id: `evt_${contactId}`,
      type: 'message.received',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: null,
      data: {},
    },
    orderingKey: contactId,
    stagedAt: Date.now(),
  };
}

async function until<T>(read: () => Promise<T>, check: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached; last ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.each(['memory', 'redis'] as const)('circuit breaker state in the store (%s store)', (kind) => {
  async function setup(): Promise<{
    delivery: Delivery;
    events: EventPublisher;
    receiver: Receiver;
    writes: string[];
    store: Store;
    healthy: { value: boolean };
  }> {
    const receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.close());
    const healthy = { value: true };
    receiver.respond(() =>
      healthy.value ? { kind: 'ok' } : { kind: 'status', status: 503, body: 'down for maintenance' },
    );
    const base = await storeOf(kind);
    const { store, writes } = counting(base.store);
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: [
        {
          id: 'crm',
          url: receiver.url,
          secret: SECRET,
          // One attempt now, the next far away: only new events (new lanes) try the destination.
          retrySchedule: ['0s', '10m'],
          circuitBreaker: { failureThreshold: 2, cooldown: '1s' },
        },
      ],
    });
    const events = createOutboxPublisher(store);
    const delivery = createDelivery({
      config,
      store,
      redisUrl: base.redisUrl,
      keyPrefix: base.keyPrefix,
      events,
      http: createHttpClient(),
      logger,
      metrics: new Metrics(),
      now: () => new Date(),
      pollIntervalMs: 50,
    });
    cleanups.push(() => delivery.close());
    await delivery.start();
    return { delivery, events, receiver, writes, store: base.store, healthy };
  }

  it('is written when the breaker opens and removed when it closes, never while deliveries go through', async () => {
    const { delivery, events, receiver, writes, store, healthy } = await setup();
    await events.publish([entry('c0'), entry('c1')]);
    await until(
      () => delivery.list({ state: 'delivered' }),
      (list) => list.length === 2,
      'delivered',
    );
    // The hot path: deliveries that succeed touch no breaker key.
    expect(writes).toEqual([]);
    expect(await delivery.paused()).toEqual([]);

    healthy.value = false;
    await events.publish([entry('c2'), entry('c3')]);
    const [open] = await until(
      () => delivery.paused(),
      (list) => list.length > 0,
      'breaker recorded',
    );
    expect(open).toMatchObject({ destination: 'crm', failures: 2 });
    expect(open!.instance).toMatch(/:\d+$/);
    expect(open!.lastError).toContain('HTTP 503');
    expect(open!.lastError).toContain('down for maintenance');
    expect(Date.parse(open!.until)).toBeGreaterThan(Date.parse(open!.since));
    // The destination filter; an unknown destination has none.
    expect(await delivery.paused('crm')).toHaveLength(1);
    expect(await delivery.paused('other')).toEqual([]);
    // Its key lapses by itself (an instance that dies with its breaker open leaves nothing for good).
    expect(await store.pttl(breakerKey('crm'))).toBeGreaterThan(0);
    expect(await store.pttl(breakerKey('crm'))).toBeLessThanOrEqual(1000 + GRACE_MS);

    // A trial after the cooldown fails (a new lane tries it): opened again, one more failure.
    await until(
      () => delivery.paused(),
      (list) => list.length === 0,
      'cooldown over',
    );
    await events.publish([entry('c4')]);
    const [again] = await until(
      () => delivery.paused(),
      (list) => list.length > 0 && list[0]!.failures === 3,
      'opened again by the failed trial',
    );
    expect(again!.since).toBe(open!.since);

    // The destination is back: the next trial closes the breaker and removes the record.
    await until(
      () => delivery.paused(),
      (list) => list.length === 0,
      'cooldown over again',
    );
    healthy.value = true;
    await events.publish([entry('c5')]);
    await receiver.waitFor(() => receiver.application.some((event) => event.webhookId === 'evt_c5'));
    await until(
      () => store.hgetall(breakerKey('crm')),
      (fields) => Object.keys(fields).length === 0,
      'removed',
    );
    // Opened twice, closed once: each a write (an opening reads the hash first), nothing else.
    expect(writes.filter((write) => write !== 'hgetall')).toEqual([
      'batch.hset',
      'batch.expire',
      'batch.hset',
      'batch.expire',
      'hdel',
    ]);
  });

  it("another instance's lapsed or unreadable record is not shown, and goes with the next write", async () => {
    const { store } = await storeOf(kind);
    const now = Date.now();
    const field = (instance: string, until: number) =>
      JSON.stringify({
        instance,
        since: new Date(now - 120_000).toISOString(),
        until: new Date(until).toISOString(),
        failures: 9,
        lastError: 'connect ECONNREFUSED',
      });
    await store.hset(breakerKey('crm'), 'dead', field('dead-host:1', now - 2 * GRACE_MS));
    await store.hset(breakerKey('crm'), 'alive', field('alive-host:2', now + 30_000));
    await store.hset(breakerKey('crm'), 'damaged', '{"instance":');
    expect((await readOpenBreakers(store, ['crm'], now)).map((open) => open.instance)).toEqual([
      'alive-host:2',
    ]);

    const recorder = createBreakerRecorder({ store, instanceId: 'mine', instance: 'my-host:3', logger });
    recorder.opened('crm', { since: now, until: now + 5000, failures: 5, lastError: 'HTTP 502\u001b[2J' });
    await recorder.settled();
    expect(Object.keys(await store.hgetall(breakerKey('crm'))).sort()).toEqual(['alive', 'mine']);
    const shown = await readOpenBreakers(store, ['crm'], now);
    // Newest opening first; the error as a terminal may show it.
    expect(shown.map((open) => open.instance)).toEqual(['alive-host:2', 'my-host:3']);
    expect(shown[1]!.lastError).toBe('HTTP 502[2J');
    // The key lives as long as the latest opening recorded in it, and a little more.
    expect(await store.pttl(breakerKey('crm'))).toBeGreaterThan(30_000);
    recorder.closed('crm');
    await recorder.settled();
    expect(Object.keys(await store.hgetall(breakerKey('crm')))).toEqual(['alive']);
    // A close with no opening recorded by this instance writes nothing.
    recorder.closed('crm');
    await recorder.settled();
    expect(Object.keys(await store.hgetall(breakerKey('crm')))).toEqual(['alive']);
  });
  it('Retry-After pauses: the one that ends last is shown, before the breakers; a shorter one writes nothing', async () => {
    const { store } = await storeOf(kind);
    const now = Date.now();
    const mine = createBreakerRecorder({ store, instanceId: 'mine', instance: 'my-host:3', logger });
    const theirs = createBreakerRecorder({ store, instanceId: 'theirs', instance: 'their-host:4', logger });
    mine.retryAfter('crm', { since: now, until: now + 60_000, lastError: 'HTTP 429' });
    theirs.retryAfter('crm', { since: now, until: now + 120_000, lastError: 'HTTP 503: busy' });
    mine.opened('crm', { since: now, until: now + 30_000, failures: 5, lastError: 'HTTP 502' });
    await Promise.all([mine.settled(), theirs.settled()]);
    const shown = await readOpenBreakers(store, ['crm'], now);
    expect(shown.map((open) => [open.cause, open.instance, open.until])).toEqual([
      ['retry-after', 'their-host:4', new Date(now + 120_000).toISOString()],
      ['circuit-breaker', 'my-host:3', new Date(now + 30_000).toISOString()],
    ]);
    expect(shown[0]).toMatchObject({ failures: 0, lastError: 'HTTP 503: busy' });
    // The key lives as long as the latest pause in it, and a little more.
    expect(await store.pttl(breakerKey('crm'))).toBeGreaterThan(120_000);

    // A pause that ends before the one this instance recorded: nothing to write.
    const before = await store.hgetall(breakerKey('crm'));
    mine.retryAfter('crm', { since: now, until: now + 10_000, lastError: 'HTTP 429' });
    await mine.settled();
    expect(await store.hgetall(breakerKey('crm'))).toEqual(before);
    // Past every pause's end, nothing is shown.
    expect(await readOpenBreakers(store, ['crm'], now + 121_000)).toEqual([]);
  });
});

/**
 * A bridge (an echo channel) on `store` with two destinations, `crm` (message.received, answered
 * by `respond`) and `other` (contact.created), and a first event for crm sent: ready once the
 * admin API lists crm paused (`answer`, that listing).
 */
async function pausedBridge(
  store: 'memory' | 'redis',
  options: { token: string; respond: Parameters<Receiver['respond']>[0]; crm?: Record<string, unknown> },
) {
  const receiver = await startReceiver({ secret: SECRET });
  cleanups.push(() => receiver.close());
  receiver.respond(options.respond);
  const bridge = await startTestBridge({
    store,
    adapters: [echoAdapter],
    config: {
      channels: [{ id: 'site', vendor: 'echo', token: options.token }],
      destinations: [
        {
          id: 'crm',
          url: receiver.url,
          secret: SECRET,
          events: ['message.received'],
          retrySchedule: ['0s', '10m'],
          ...options.crm,
        },
        { id: 'other', url: receiver.url, secret: SECRET, events: ['contact.created'] },
      ],
    },
  });
  cleanups.push(() => bridge.close());
  const say = (visitor: string, text: string) =>
    bridge.post(`/webhooks/echo/site/${options.token}`, { event: 'message', visitor, text });
  expect((await say('p1', 'hello')).status).toBe(200);
  const answer = await until(
    () => bridge.admin('GET', '/api/v1/deliveries?destination=crm'),
    (response) => response.body.paused?.length > 0,
    'paused in the API',
  );
  expect(answer.status).toBe(200);
  return {
    bridge,
    answer,
    /** Another contact's event: pending, no attempt (the pause holds it back); its delivery id. */
    async pendingWithNoAttempt(): Promise<string> {
      await say('p2', 'anyone there?');
      const waiting = await until(
        () => bridge.admin('GET', '/api/v1/deliveries?destination=crm&state=pending'),
        (response) => response.body.deliveries.some((item: any) => item.attempts === 0),
        'a pending delivery with no attempt',
      );
      return waiting.body.deliveries.find((item: any) => item.attempts === 0).id as string;
    },
    /**
     * The console's Deliveries list and the pending delivery's page, signed in: both note crm
     * paused until `until`. The list's answer.
     */
    async consolePages(pendingId: string, until_: string) {
      const { cookie } = await signIn(bridge.url, bridge.adminToken);
      const list = await consoleRequest(bridge.url, '/console/deliveries', { cookie });
      expect(list.text).toContain('<strong>Destination crm paused until <time datetime="');
      expect(list.text).toContain(`datetime="${until_}"`);
      const detail = await consoleRequest(bridge.url, `/console/deliveries/${pendingId}`, { cookie });
      expect(detail.text).toContain('Destination crm paused until');
      return { list, cookie };
    },
    /** `deliveries list --destination crm` (the CLI, a process of its own, reads the shared store): its stderr. */
    async cliList(): Promise<string> {
      const cli = capture();
      expect(
        await runDeliveriesCommand(['list', '--destination', 'crm'], bridge.bridge.delivery, cli.io),
      ).toBe(0);
      return cli.err.join('\n');
    },
  };
}

/**
 * A destination paused on every instance, as people see it: by an open circuit breaker, or at its
 * own request — a destination that answers 429 (or 503) with Retry-After is paused as a whole, on
 * every instance, for up to 10 minutes. Only the delivery that got the answer said so: the others
 * sat pending with no attempt and no reason, and nothing showed until when. The pause is now
 * recorded with the breakers' state and shown in the same places, with when it ends, and in a gauge.
 */
describe.each(['memory', 'redis'] as const)('a paused destination, as people see it (%s store)', (store) => {
  it('an open breaker: the admin API, the console (list and a pending delivery) and deliveries list say which destination is paused, until when and why', async () => {
    const { bridge, answer, pendingWithNoAttempt, consolePages, cliList } = await pausedBridge(store, {
      token: 'echo-channel-token-000001',
      respond: { kind: 'status', status: 503, body: 'maintenance' },
      crm: { circuitBreaker: { failureThreshold: 1, cooldown: '10m' } },
    });
    expect(answer.body.paused).toEqual([
      {
        cause: 'circuit-breaker',
        destination: 'crm',
        instance: expect.stringMatching(/:\d+$/),
        since: expect.any(String),
        until: expect.any(String),
        failures: 1,
        lastError: expect.stringContaining('HTTP 503: maintenance'),
      },
    ]);
    // Every configured destination without the filter; none for another one.
    expect((await bridge.admin('GET', '/api/v1/deliveries')).body.paused).toHaveLength(1);
    expect((await bridge.admin('GET', '/api/v1/deliveries?destination=other')).body.paused).toEqual([]);

    const { list, cookie } = await consolePages(await pendingWithNoAttempt(), answer.body.paused[0].until);
    expect(list.status).toBe(200);
    expect(list.text).toContain('after 1 failed attempt in a row');
    expect(list.text).toContain('HTTP 503: maintenance');
    expect(list.text).toMatch(/circuit breaker of instance <span class="mono">[^<]+:\d+<\/span>/);
    // Filtered to a destination that is not paused: no note.
    const other = await consoleRequest(bridge.url, '/console/deliveries?destination=other', { cookie });
    expect(other.text).not.toContain('paused until');

    if (store === 'redis') {
      expect(await cliList()).toMatch(
        /destination crm paused until \S+ after 1 failed attempt in a row \(circuit breaker of instance \S+:\d+, open since \S+\); last error: HTTP 503: maintenance/,
      );
    }
  });

  it('a Retry-After pause: the admin API, the console, deliveries list and the metrics say which destination is paused and until when', async () => {
    const { bridge, answer, pendingWithNoAttempt, consolePages, cliList } = await pausedBridge(store, {
      token: 'echo-channel-token-000002',
      // Only crm's events are asked to wait: `other` (contact.created) takes its own.
      respond: (request) =>
        (request.payload as { type?: string } | undefined)?.type === 'message.received'
          ? { kind: 'status', status: 429, retryAfter: '600', body: 'slow down' }
          : { kind: 'ok' },
    });
    expect(answer.body.paused).toEqual([
      {
        cause: 'retry-after',
        destination: 'crm',
        instance: expect.stringMatching(/:\d+$/),
        since: expect.any(String),
        until: expect.any(String),
        failures: 0,
        lastError: 'HTTP 429: slow down',
      },
    ]);
    const paused = answer.body.paused[0] as { since: string; until: string };
    // The whole Retry-After (600 s), from when the answer came.
    expect(Date.parse(paused.until) - Date.parse(paused.since)).toBe(600_000);
    expect((await bridge.admin('GET', '/api/v1/deliveries?destination=other')).body.paused).toEqual([]);

    const { list } = await consolePages(await pendingWithNoAttempt(), paused.until);
    expect(list.text).toContain('at its own request: it answered with Retry-After');
    expect(list.text).toContain('HTTP 429: slow down');

    // The gauge: when the pause ends, in Unix seconds.
    const text = await bridge.bridge.metrics.registry.metrics();
    expect(text).toContain(
      `chatbridge_delivery_retry_after_until_seconds{destination="crm"} ${Math.ceil(Date.parse(paused.until) / 1000)}`,
    );
    expect(text).toContain('chatbridge_delivery_retry_after_until_seconds{destination="other"} 0');

    if (store === 'redis') {
      const err = await cliList();
      expect(err).toContain(
        `destination crm paused until ${paused.until} at its own request (it answered with Retry-After at ${paused.since}; seen by instance `,
      );
      expect(err).toContain('; answer: HTTP 429: slow down');
    }
  });
});
