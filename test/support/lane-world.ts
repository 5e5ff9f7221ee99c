import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { isCrmDestination } from '../../src/config/schema.js';
import { CircuitBreaker } from '../../src/delivery/breaker.js';
import { deliveryMetrics } from '../../src/delivery/metrics.js';
import { createProcessor } from '../../src/delivery/processor.js';
import type { DeliveryQueue, JobHandler } from '../../src/delivery/queue.js';
import {
  createDeliveryRecords,
  type DeliveryPlan,
  type DeliveryRecords,
} from '../../src/delivery/records.js';
import { secretKey } from '../../src/delivery/signing.js';
import { Metrics } from '../../src/metrics.js';
import { createHttpClient } from '../../src/net/http.js';
import { defaultRegistry } from '../../src/registry.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './redis.js';

/**
 * One webhook destination's deliveries worked by hand, without a queue: delivery records on a
 * real store (in memory or on Redis under its own prefix), the real processor, a receiver that
 * answers 204 and keeps each delivery's `webhook-id`, and a queue stand-in that only notes which
 * jobs the processor woke. For the lane tests (test/delivery.job-lane.test.ts,
 * test/delivery.lane-links.test.ts), which call the processor themselves and check outcomes.
 */
export interface LaneWorld {
  store: Store;
  /** The Redis store itself (kind 'redis'), for what only Redis has (SCRIPT FLUSH). */
  redis: RedisStore | undefined;
  records: DeliveryRecords;
  /** A delivery to the one destination ('hook') in lane `orderingKey` (also its contact). */
  plan(id: string, orderingKey: string): DeliveryPlan;
  run: JobHandler;
  /** Job ids the processor woke (DeliveryQueue.wake), in order. */
  woken: string[];
  /** The receiver's deliveries' `webhook-id`s, in the order they arrived. */
  posts: string[];
  close(): Promise<void>;
}

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export async function startLaneWorld(options: {
  kind: 'memory' | 'redis';
  /** Names the Redis key prefix. */
  name: string;
  eventType: string;
  retrySchedule?: string[];
}): Promise<LaneWorld> {
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    while (closers.length > 0) await closers.pop()!();
  };
  try {
    const posts: string[] = [];
    const server: Server = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        posts.push(String(request.headers['webhook-id']));
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;

    let store: Store;
    let redis: RedisStore | undefined;
    if (options.kind === 'memory') {
      store = createMemoryStore();
      closers.push(() => store.close());
    } else {
      const redisUrl = await getTestRedisUrl();
      const keyPrefix = uniquePrefix(options.name);
      redis = await createRedisStore({ url: redisUrl, keyPrefix, logger });
      store = redis;
      closers.push(async () => {
        await store.close();
        await cleanupPrefix(redisUrl, keyPrefix);
      });
    }

    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        destinations: [
          {
            id: 'hook',
            url,
            secret: 'whsec_dGVzdC1zZWNyZXQtZm9yLWpvYi1sYW5lcy0wMTIz',
            ...(options.retrySchedule === undefined ? {} : { retrySchedule: options.retrySchedule }),
          },
        ],
      },
      defaultRegistry(),
      {},
    );
    const destination = config.destinations[0]!;
    if (isCrmDestination(destination)) throw new Error('not a webhook');
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
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
    const plan = (id: string, orderingKey: string): DeliveryPlan => ({
      id,
      destinationId: 'hook',
      eventId: `evt_${id}`,
      eventType: options.eventType,
      orderingKey,
      contactId: orderingKey,
      stagedAt: Date.now(),
      body: JSON.stringify({ id: `evt_${id}` }),
    });
    return { store, redis, records, plan, run, woken, posts, close };
  } catch (error) {
    await close();
    throw error;
  }
}
