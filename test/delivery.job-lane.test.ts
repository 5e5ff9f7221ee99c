import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { isCrmDestination } from '../src/config/schema.js';
import { CircuitBreaker } from '../src/delivery/breaker.js';
import { deliveryMetrics } from '../src/delivery/metrics.js';
import { createProcessor, type DestinationRuntime } from '../src/delivery/processor.js';
import type { DeliveryJob, DeliveryQueue } from '../src/delivery/queue.js';
import { createDeliveryRecords, type DeliveryPlan, jobOf } from '../src/delivery/records.js';
import { secretKey } from '../src/delivery/signing.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A queue job names its delivery's lane (DeliveryJob.orderingKey), so the worker reads the record
 * and the lane's head together. The record stays the judge: a job without the lane (queued by an
 * older version) or with a lane the record does not have still waits behind an earlier pending
 * delivery of its contact, and the next delivery of the lane is woken when one is marked.
 * Outcomes only, on both stores.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function receiver(): Promise<{ url: string; posts: string[] }> {
  const posts: string[] = [];
  const server: Server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      posts.push(String(request.headers['webhook-id']));
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, posts };
}

describe.each(['memory', 'redis'] as const)('a delivery job and its lane (%s store)', (kind) => {
  async function storeOf(): Promise<Store> {
    if (kind === 'memory') {
      const store = createMemoryStore();
      cleanups.push(() => store.close());
      return store;
    }
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('job-lane');
    const store = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    return store;
  }

  async function setup() {
    const target = await receiver();
    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        destinations: [
          {
            id: 'hook',
            url: target.url,
            secret: 'whsec_dGVzdC1zZWNyZXQtZm9yLWpvYi1sYW5lcy0wMTIz',
            retrySchedule: ['0s', '1s'],
          },
        ],
      },
      defaultRegistry(),
      {},
    );
    const destination = config.destinations[0]!;
    if (isCrmDestination(destination)) throw new Error('not a webhook');
    const runtime: DestinationRuntime = {
      config: destination,
      key: secretKey(destination.secret),
      secrets: [],
      breaker: new CircuitBreaker(5, 30_000),
    };
    const store = await storeOf();
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
    const plan = (id: string, orderingKey: string): DeliveryPlan => ({
      id,
      destinationId: 'hook',
      eventId: `evt_${id}`,
      eventType: 'conversation.started',
      orderingKey,
      contactId: orderingKey,
      stagedAt: Date.now(),
      body: JSON.stringify({ id: `evt_${id}` }),
    });
    // Two events of one contact, in this order, and one of another contact.
    const [first, second, other] = await records.ensure(
      [plan('d1', 'c_anna'), plan('d2', 'c_anna'), plan('d3', 'c_boris')],
      new Date(),
    );
    const woken: string[] = [];
    const queue: DeliveryQueue = {
      enqueue: async () => {},
      enqueueMany: async () => {},
      restore: async () => 0,
      wake: async (_destination, jobId) => {
        woken.push(jobId);
      },
      pause: async () => {},
      start: async () => {},
      counts: async () => ({ waiting: 0, delayed: 0, active: 0 }),
      close: async () => {},
    };
    const run = createProcessor({
      records,
      queue,
      destinations: new Map([['hook', runtime]]),
      http: createHttpClient(),
      logger,
      metrics: deliveryMetrics(new Metrics()),
      now: () => new Date(),
      random: () => 0.5,
      signal: new AbortController().signal,
    });
    return { records, run, first: first!, second: second!, other: other!, posts: target.posts, woken };
  }

  it('jobs carry their lane; the second event of a contact waits behind the first, then is woken', async () => {
    const { records, run, first, second, posts, woken } = await setup();
    expect(jobOf(second)).toEqual({ deliveryId: 'd2', cycle: 0, orderingKey: 'c_anna' });

    expect((await run('hook', jobOf(second))).kind).toBe('later');
    expect(posts).toEqual([]);
    expect(await run('hook', jobOf(first))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1']);
    expect((await records.get('d1'))?.state).toBe('delivered');
    // Marking the first read its lane's next head: the second one, woken.
    expect(woken).toEqual(['d2.0']);
    expect(await run('hook', jobOf(second))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1', 'evt_d2']);
    expect(woken).toEqual(['d2.0']);
  });

  it('a job without its lane (queued by an older version) still waits behind the head', async () => {
    const { run, first, second, posts } = await setup();
    const old: DeliveryJob = { deliveryId: second.id, cycle: second.cycle };
    expect((await run('hook', old)).kind).toBe('later');
    expect(posts).toEqual([]);
    await run('hook', { deliveryId: first.id, cycle: first.cycle });
    expect(await run('hook', old)).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1', 'evt_d2']);
  });

  it('a job naming a lane its record is not in does not skip the record’s own lane', async () => {
    const { run, second, other, posts } = await setup();
    // c_boris's lane has d3 at its head; an empty lane would say "head: none" as well.
    for (const lane of ['c_boris', 'c_nobody']) {
      expect((await run('hook', { ...jobOf(second), orderingKey: lane })).kind).toBe('later');
    }
    expect(posts).toEqual([]);
    expect(await run('hook', jobOf(other))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d3']);
  });
});

describe('marking a delivery wakes its lane’s next one (Redis store)', () => {
  it('also when Redis lost the batch script (SCRIPT FLUSH, a failover): the lane’s head is read after the mark', async () => {
    // The mark is an EVALSHA sent in the same socket write as the lane-head read. When Redis
    // answers NOSCRIPT the mark is sent again, as EVAL — after the read, which then still found
    // the marked record at the head, so the next delivery was not woken (it waited out its park).
    // Fails on the code before this test.
    const target = await receiver();
    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        destinations: [
          { id: 'hook', url: target.url, secret: 'whsec_dGVzdC1zZWNyZXQtZm9yLWpvYi1sYW5lcy0wMTIz' },
        ],
      },
      defaultRegistry(),
      {},
    );
    const destination = config.destinations[0]!;
    if (isCrmDestination(destination)) throw new Error('not a webhook');
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('job-lane-noscript');
    const store = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
    const plan = (id: string): DeliveryPlan => ({
      id,
      destinationId: 'hook',
      eventId: `evt_${id}`,
      eventType: 'conversation.started',
      orderingKey: 'c_anna',
      contactId: 'c_anna',
      stagedAt: Date.now(),
      body: JSON.stringify({ id: `evt_${id}` }),
    });
    const [first] = await records.ensure([plan('d1'), plan('d2')], new Date());
    const woken: string[] = [];
    const run = createProcessor({
      records,
      queue: {
        enqueue: async () => {},
        enqueueMany: async () => {},
        restore: async () => 0,
        wake: async (_destination, jobId) => {
          woken.push(jobId);
        },
        pause: async () => {},
        start: async () => {},
        counts: async () => ({ waiting: 0, delayed: 0, active: 0 }),
        close: async () => {},
      },
      destinations: new Map([
        [
          'hook',
          {
            config: destination,
            key: secretKey(destination.secret),
            secrets: [],
            breaker: new CircuitBreaker(5, 30_000),
          },
        ],
      ]),
      http: createHttpClient(),
      logger,
      metrics: deliveryMetrics(new Metrics()),
      now: () => new Date(),
      random: () => 0.5,
      signal: new AbortController().signal,
    });
    // The scripts were loaded on this connection (ensure used them); Redis forgets them.
    await (store.client as Redis).script('FLUSH');
    expect(await run('hook', jobOf(first!))).toEqual({ kind: 'done' });
    expect(target.posts).toEqual(['evt_d1']);
    expect((await records.get('d1'))?.state).toBe('delivered');
    expect(woken).toEqual(['d2.0']);
  });
});
