import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBullQueue } from '../src/delivery/queue-bullmq.js';
import { StoreUnavailableError } from '../src/errors.js';
import { type PrivateRedis, startPrivateRedis } from './support/redis.js';

/**
 * The BullMQ side of delivery answers Redis's "not now" the way the store does (DESIGN §12:
 * READONLY, NOREPLICAS and connection failures are 503, never 500). Replaying a delivery from the
 * admin API or the console writes the record through the store, then queues its job here: during
 * a failover the queue's connection can still be on the old primary (READONLY) or reconnecting,
 * and its raw ioredis error used to reach the HTTP layer as a 500.
 */
const logger = pino({ level: 'silent' });
const job = { deliveryId: 'd-1', cycle: 1 };

describe('delivery queue errors', () => {
  let primary: PrivateRedis;
  let replica: PrivateRedis;
  let dir: string;

  beforeAll(async () => {
    // Replication writes an RDB file: into a private directory, not the working directory.
    dir = mkdtempSync(join(tmpdir(), 'chatbridge-queue-errors-'));
    primary = await startPrivateRedis({ args: ['--dir', dir] });
    replica = await startPrivateRedis({
      args: ['--dir', dir, '--replicaof', '127.0.0.1', String(primary.port)],
    });
  });
  afterAll(async () => {
    await replica?.stop();
    await primary?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a write refused by a replica (READONLY) is StoreUnavailableError', async () => {
    const queue = createBullQueue({
      redisUrl: replica.url,
      prefix: 'queue-errors:bull',
      destinations: [{ id: 'crm', concurrency: 1 }],
      logger,
      closeWaitMs: 500,
    });
    try {
      await expect(queue.enqueue('crm', 'job-1', job, 0)).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(queue.enqueueMany('crm', [{ jobId: 'job-2', job, delayMs: 0 }])).rejects.toBeInstanceOf(
        StoreUnavailableError,
      );
    } finally {
      await queue.close();
    }
  });

  it('a Redis that went away is StoreUnavailableError', async () => {
    const gone = await startPrivateRedis();
    const queue = createBullQueue({
      redisUrl: gone.url,
      prefix: 'queue-errors:bull',
      destinations: [{ id: 'crm', concurrency: 1 }],
      logger,
      closeWaitMs: 500,
    });
    try {
      await queue.enqueue('crm', 'job-1', job, 0);
      await gone.stop();
      await expect(queue.enqueue('crm', 'job-2', job, 0)).rejects.toBeInstanceOf(StoreUnavailableError);
    } finally {
      await queue.close();
      await gone.stop();
    }
  });
});
