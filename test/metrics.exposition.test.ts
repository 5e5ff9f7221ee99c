import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Exposition, parseExposition } from './support/prometheus.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import {
  cleanupPrefix,
  getTestRedisUrl,
  type PrivateRedis,
  type ReplicatedRedis,
  startPrivateRedis,
  startReplicatedRedis,
  uniquePrefix,
} from './support/redis.js';

/**
 * The delivery backlog gauges (queue depth, failed, oldest pending, outbox depth and age) were set
 * only by the worker's own 5 s timer: a web instance showed an outbox of 0 with events piling up
 * in it, no failed deliveries at all, and a worker showed the last values it had read, even while
 * its store did not answer. Every role now reads them from the store at each scrape (bounded by a
 * short timeout: a hung store makes them NaN in that scrape rather than hanging /metrics). Every
 * scrape here is real HTTP, read by a strict exposition-format parser.
 */

const SECRET = `whsec_${Buffer.from('metrics-exposition-secret-012345').toString('base64')}`;
const TOKEN = 'echo-channel-token-metrics-01';
const METRICS_TOKEN = 'metrics-token-exposition-0123';

async function scrape(bridge: TestBridge): Promise<Exposition> {
  const answer = await fetch(`${bridge.url}/metrics`, {
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(answer.status).toBe(200);
  expect(answer.headers.get('content-type')).toContain('text/plain');
  return parseExposition(await answer.text());
}

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  // The test's timeout is the guard on a loaded machine, not a count of rounds.
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the strict exposition parser', () => {
  it('reads what the format allows and refuses what it does not', () => {
    const good = parseExposition(
      [
        '# HELP a_total Things, with "quotes" and \\ backslashes',
        '# TYPE a_total counter',
        'a_total{x="1",y="q\\"uote\\\\d\\n"} 3',
        'a_total{x="2"} 4 1700000000000',
        '# TYPE h histogram',
        'h_bucket{le="1"} 1',
        'h_bucket{le="+Inf"} 2',
        'h_sum 3.5e0',
        'h_count 2',
        '',
        'untyped_thing NaN',
        '',
      ].join('\n'),
    );
    expect(good.value('a_total', { x: '1', y: 'q"uote\\d\n' })).toBe(3);
    expect(good.value('h_count')).toBe(2);
    expect(good.families.get('h')?.samples).toHaveLength(4);
    for (const bad of [
      'a 1 2 3\n',
      'a{x="1"} one\n',
      'a{x=1} 1\n',
      'a{x="1",x="2"} 1\n',
      'a{x="1"}1\n',
      'a{x="\\t"} 1\n',
      '1a 1\n',
      'a{x="1"} 1\na{x="1"} 2\n',
      'a 1\nb 1\na{x="2"} 1\n',
      '# TYPE a counter\n# TYPE a gauge\n',
      '# TYPE a counter\na 1\n# TYPE a counter\n',
      '# TYPE a nonsense\n',
      '# TYPE h histogram\nh 1\n',
      '# TYPE h histogram\nh_bucket 1\n',
      '#TYPE a counter\n',
      'a 1',
    ]) {
      expect(() => parseExposition(bad), JSON.stringify(bad)).toThrow(/metrics|newline/);
    }
  });
});

describe('delivery backlog gauges are read from the store at each scrape, on every role', () => {
  let crm: Receiver;
  let web: TestBridge | undefined;
  let worker: TestBridge | undefined;
  const keyPrefix = uniquePrefix('metrics-roles');
  const config = {
    channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
    metrics: { token: METRICS_TOKEN },
    destinations: [
      { id: 'crm', url: '', secret: SECRET, events: ['message.received'], retrySchedule: ['0s'] },
    ],
  };

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    // A permanent refusal: the delivery fails for good and is kept for replay.
    crm.respond(() => ({ kind: 'status', status: 422 }));
    config.destinations[0]!.url = crm.url;
  });
  afterAll(async () => {
    await web?.close();
    await worker?.close();
    await crm?.close();
    await cleanupPrefix(await getTestRedisUrl(), keyPrefix);
  });

  it('a web instance reports the outbox, then the failed delivery the worker recorded', async () => {
    web = await startTestBridge({ adapters: [echoAdapter], store: 'redis', keyPrefix, role: 'web', config });
    const empty = await scrape(web);
    expect(empty.value('chatbridge_outbox_depth')).toBe(0);
    expect(empty.value('chatbridge_delivery_queue_depth', { destination: 'crm' })).toBe(0);
    expect(empty.value('chatbridge_delivery_failed', { destination: 'crm' })).toBe(0);

    const posted = await web.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'message',
      visitor: 7,
      email: 'maria@example.org',
      text: 'Hello',
    });
    expect(posted.status).toBe(200);
    // No worker yet: the event waits in the outbox, and the web instance says so.
    const waiting = await scrape(web);
    expect(waiting.value('chatbridge_outbox_depth')).toBeGreaterThan(0);
    expect(waiting.value('chatbridge_outbox_oldest_seconds')).toBeGreaterThanOrEqual(0);

    worker = await startTestBridge({
      adapters: [echoAdapter],
      store: 'redis',
      keyPrefix,
      role: 'worker',
      config,
    });
    await until(
      () => web!.admin('GET', '/api/v1/deliveries?state=failed&destination=crm'),
      (answer) => answer.body.deliveries?.length === 1,
    );
    // Read from the store at this scrape, on both roles: no timer to wait for.
    for (const bridge of [web, worker]) {
      const after = await scrape(bridge);
      expect(after.value('chatbridge_delivery_failed', { destination: 'crm' })).toBe(1);
      expect(after.value('chatbridge_delivery_queue_depth', { destination: 'crm' })).toBe(0);
      expect(after.value('chatbridge_delivery_oldest_pending_seconds', { destination: 'crm' })).toBe(0);
      expect(after.value('chatbridge_outbox_depth')).toBe(0);
      expect(after.value('chatbridge_store_up')).toBe(1);
    }
  });
});

describe('a hung store does not hang /metrics, nor leave stale backlog values', () => {
  let redis: PrivateRedis;
  let crm: Receiver;
  let bridge: TestBridge;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    crm = await startReceiver({ secret: SECRET });
    // Retried an hour later: the delivery stays pending.
    crm.respond(() => ({ kind: 'status', status: 503 }));
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: {
        store: { redis: redis.url },
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        metrics: { token: METRICS_TOKEN },
        destinations: [
          { id: 'crm', url: crm.url, secret: SECRET, events: ['message.received'], retrySchedule: ['1h'] },
        ],
      },
    });
  });
  afterAll(async () => {
    redis?.resume();
    await bridge?.close();
    await crm?.close();
    await redis?.stop();
  });

  it('answers with NaN store gauges while the store does not answer, and the values after', async () => {
    const posted = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'message',
      visitor: 8,
      email: 'oleg@example.org',
      text: 'Hello',
    });
    expect(posted.status).toBe(200);
    await until(
      () => scrape(bridge),
      (seen) =>
        seen.value('chatbridge_delivery_queue_depth', { destination: 'crm' }) === 1 &&
        seen.value('chatbridge_outbox_depth') === 0,
    );

    redis.pause();
    try {
      // Answered at all (a hang would end in the test's timeout), and with NaN: not the last
      // values read, which would look current, nor 0, which would look healthy.
      const during = await scrape(bridge);
      expect(during.value('chatbridge_store_up')).toBe(0);
      for (const name of [
        'chatbridge_delivery_queue_depth',
        'chatbridge_delivery_failed',
        'chatbridge_delivery_oldest_pending_seconds',
      ])
        expect(during.value(name, { destination: 'crm' }), name).toBeNaN();
      expect(during.value('chatbridge_outbox_depth')).toBeNaN();
      expect(during.value('chatbridge_outbox_oldest_seconds')).toBeNaN();
      // What does not live in the store is still reported.
      expect(during.value('chatbridge_delivery_circuit_open', { destination: 'crm' })).toBe(0);
    } finally {
      redis.resume();
    }
    const back = await until(
      () => scrape(bridge),
      (seen) => seen.value('chatbridge_store_up') === 1,
    );
    expect(back.value('chatbridge_delivery_queue_depth', { destination: 'crm' })).toBe(1);
  }, 60_000);
});

describe('chatbridge_store_up is bounded like the other store gauges', () => {
  let pair: ReplicatedRedis;
  let primary: PrivateRedis;
  let replica: PrivateRedis;
  let bridge: TestBridge;

  beforeAll(async () => {
    pair = await startReplicatedRedis('store-up');
    ({ primary, replica } = pair);
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: {
        // The check is the /readyz one: a write, confirmed by WAIT for up to a minute.
        store: { redis: primary.url, durability: { replicas: 1, timeoutMs: 60_000 } },
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        metrics: { token: METRICS_TOKEN },
      },
    });
  });
  afterAll(async () => {
    // Resumed first: the bridge's close must not wait on a frozen replica.
    replica?.resume();
    await bridge?.close();
    await pair?.close();
  });

  it('answers 0 while the check hangs (a replica that does not acknowledge), and 1 after', async () => {
    expect((await scrape(bridge)).value('chatbridge_store_up')).toBe(1);
    replica.pause();
    try {
      // The primary answers, the WAIT does not: the check alone would hold the scrape for the
      // minute of durability.timeoutMs, past any scrape timeout (this test's own included).
      expect((await scrape(bridge)).value('chatbridge_store_up')).toBe(0);
      expect((await scrape(bridge)).value('chatbridge_store_up')).toBe(0);
    } finally {
      replica.resume();
    }
    await until(
      () => scrape(bridge),
      (seen) => seen.value('chatbridge_store_up') === 1,
    );
  }, 30_000);
});
