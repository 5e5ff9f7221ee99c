import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { queueNameOf } from '../../src/delivery/queue-bullmq.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './redis.js';

/**
 * What the BullMQ queue tests share: a private prefix on the test Redis, the queue name of
 * destination `crm`, a connection and a BullMQ Queue to look at its jobs with. Its clean-up
 * (close, disconnect, delete the prefix's keys) goes onto `cleanups`, which the test's afterEach
 * runs last-in first-out: whatever the test pushes after this is closed before it.
 */
export async function bullWorld(label: string, cleanups: Array<() => Promise<void>>) {
  const url = await getTestRedisUrl();
  const prefix = `${uniquePrefix(label)}:bull`;
  const name = queueNameOf('crm');
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  const inspect = new Queue(name, { connection: redis, prefix });
  cleanups.push(async () => {
    await inspect.close();
    redis.disconnect();
    await cleanupPrefix(url, prefix);
  });
  return { url, prefix, name, redis, inspect };
}
