import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { deliveryIdOf } from '../src/delivery/drain.js';
import { queueNameOf } from '../src/delivery/queue-bullmq.js';
import { deliveryKeys } from '../src/delivery/records.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { testDelivery } from './support/processor-world.js';
import { startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The second event of a contact goes out as soon as the first is delivered, also when its job
 * was running at that moment. Its job read the lane while the first was still in flight, and
 * the first was delivered (and woke it) before the second's job had moved itself to delayed: on
 * BullMQ the wake found no delayed job and did nothing, and the second event waited out
 * timeoutMs + 1 s behind a delivery that was long gone.
 *
 * The interleaving is forced, not hoped for: the receiver holds the first POST until the second
 * job has read the first record (still pending), and that read is handed back only once the
 * first job has finished, wake included. timeoutMs is an hour, so the event arriving within the
 * test's timeout says the wait was cut, whatever the machine's load; no duration is measured.
 */
const SECRET = `whsec_${Buffer.from('lane-wake-secret-0123456789abcdef').toString('base64')}`;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function entry(n: number): OutboxEntry {
  return {
    event: {
      id: `evt_lane_wake_${n}`,
      type: 'message.received',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: null,
      data: { n },
    },
    orderingKey: 'c_lane_wake',
    stagedAt: Date.now(),
  };
}

describe('the next delivery of a lane, running when the one before it is delivered', () => {
  it('goes at once, not after timeoutMs', async () => {
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('lane-wake');
    const redis = new Redis(url);
    const real = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await real.close();
      redis.disconnect();
      await cleanupPrefix(url, keyPrefix);
    });
    const receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.close());

    const first = deliveryIdOf('crm', 'evt_lane_wake_1');
    const firstJobKey = `${keyPrefix}:bull:${queueNameOf('crm')}:${first}.0`;
    let releaseFirst: () => void = () => {};
    const firstHeld = new Promise<void>((resolve) => {
      releaseFirst = resolve;
    });
    receiver.respond((request) =>
      request.webhookId === 'evt_lane_wake_1' ? { kind: 'held', until: firstHeld } : { kind: 'ok' },
    );
    let forced = false;
    // The store as the delivery sees it: a read of the first record that finds it pending while
    // its POST is in flight is the second job's look at its lane. It gets that answer only after
    // the first is delivered and its job has finished (its wake of the second included).
    const store: Store = new Proxy(real, {
      get(target, property, receiverObject) {
        if (property !== 'get') return Reflect.get(target, property, receiverObject);
        return async (key: string) => {
          const value = await target.get(key);
          const inFlight = receiver.requests.some((request) => request.webhookId === 'evt_lane_wake_1');
          if (key !== deliveryKeys.record(first) || !inFlight || forced) return value;
          if (!value?.includes('"state":"pending"')) return value;
          forced = true;
          releaseFirst();
          while ((await redis.exists(firstJobKey)) === 1)
            await new Promise((resolve) => setTimeout(resolve, 20));
          return value;
        };
      },
    });

    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: [
        {
          id: 'crm',
          url: receiver.url,
          secret: SECRET,
          retrySchedule: ['0s', '1s'],
          // A wait behind the first (timeoutMs + 1 s) would outlast the test many times over.
          timeoutMs: 3_600_000,
          concurrency: 2,
        },
      ],
    });
    const events = createOutboxPublisher(store);
    const delivery = testDelivery({
      config,
      store,
      redisUrl: url,
      keyPrefix,
      events,
      logger,
    });
    cleanups.push(() => delivery.close());
    await delivery.start();

    await events.publish([entry(1)]);
    await receiver.waitFor(
      () => receiver.requests.some((request) => request.webhookId === 'evt_lane_wake_1'),
      25_000,
      'the first POST',
    );
    await events.publish([entry(2)]);
    await receiver.waitFor(() => receiver.application.length === 2, 25_000, 'the second event');
    expect(forced).toBe(true);
    expect(receiver.application.map((event) => event.webhookId)).toEqual([
      'evt_lane_wake_1',
      'evt_lane_wake_2',
    ]);
  }, 60_000);
});
