import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveryQueue } from '../src/delivery/queue.js';
import { createBullQueue, queueNameOf } from '../src/delivery/queue-bullmq.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A destination's pause on Redis (BullMQ's queue-wide rate limit) lasts as long as the longest
 * pause asked for. The processor pauses for a receiver's Retry-After (up to 10 minutes) and for
 * the circuit breaker's cooldown, and each worker pauses when it finds the breaker open: set one
 * after the other, a shorter pause must not cut a longer one short, as it does not on the
 * in-process queue. (Asserted on the pause left, read from Redis, not on time passing.)
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('pausing a destination on the BullMQ queue', () => {
  it('keeps the longer pause when a shorter one is asked for after it, and lengthens a shorter one', async () => {
    const url = await getTestRedisUrl();
    const prefix = `${uniquePrefix('queue-pause')}:bull`;
    const queue: DeliveryQueue = createBullQueue({
      redisUrl: url,
      prefix,
      destinations: [{ id: 'crm', concurrency: 1 }],
      logger,
    });
    const redis = new Redis(url);
    cleanups.push(async () => {
      await queue.close();
      redis.disconnect();
      await cleanupPrefix(url, prefix);
    });
    const limiter = `${prefix}:${queueNameOf('crm')}:limiter`;

    await queue.pause('crm', 600_000); // a receiver's Retry-After: 600 (capped at 10 minutes)
    await queue.pause('crm', 30_000); // then the breaker opens on the same attempt
    await queue.pause('crm', 1_000); // and another worker's 429 says Retry-After: 1
    expect(await redis.pttl(limiter)).toBeGreaterThan(300_000);

    await redis.del(limiter);
    await queue.pause('crm', 1_000);
    await queue.pause('crm', 120_000);
    expect(await redis.pttl(limiter)).toBeGreaterThan(60_000);
  });
});
