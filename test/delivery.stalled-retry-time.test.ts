import { randomUUID } from 'node:crypto';
import { Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { deliveryIdOf } from '../src/delivery/drain.js';
import { queueNameOf } from '../src/delivery/queue-bullmq.js';
import { createDeliveryRecords, jobOf } from '../src/delivery/records.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { defaultRegistry } from '../src/registry.js';
import { createRedisStore } from '../src/store/redis.js';
import { planOne, processorOver, testDelivery, webhookRuntime } from './support/processor-world.js';
import { startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';
import { until } from './support/until.js';

/**
 * A webhook delivery's job run again after a stall waits for the retry its delivery has
 * scheduled. A run that recorded a retry (the backoff, or the destination's Retry-After) and then
 * died, or lost its job lock, before the job was moved to delayed leaves the job to BullMQ's
 * stalled check, which puts it back to wait: its next run POSTed at once, before the time the
 * record holds (a CRM delivery's run already waited for it). Now the run puts the job back until
 * that time. Real Redis, the receiver in test/support; once with the processor run as the queue
 * runs it, once with real BullMQ and a worker that dies holding the job. Outcomes only.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const SECRET = `whsec_${Buffer.from('stalled-retry-time-secret-01234').toString('base64')}`;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function entry(): OutboxEntry {
  return {
    event: {
      id: 'evt_retry_time_1',
      type: 'conversation.started',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: null,
      data: {},
    },
    orderingKey: 'c_1',
    stagedAt: Date.now(),
  };
}

describe('a webhook delivery run again after a stall', () => {
  it("waits for the destination's Retry-After instead of POSTing at once", async () => {
    const receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.close());
    // Retry-After an hour, longer than the schedule's own next step and than the destination
    // pause (10 minutes at most): the record's next attempt time is what holds it.
    receiver.respond({ kind: 'status', status: 429, retryAfter: '3600' });
    const config = parseConfig(
      {
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        channels: [{ id: 'site', vendor: 'jivochat', token: 'jivo-token-0123456789' }],
        destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '1s', '1s'] }],
      },
      defaultRegistry(),
      {},
    );
    const destination = config.destinations[0]!;
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('stalled-retry-time');
    const store = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
    const runtime = webhookRuntime(destination, SECRET);
    const record = await planOne(records, entry(), runtime, {
      agents: config.agents,
      channels: config.channels,
      vendorNames: new Map(),
    });
    const processor = processorOver(records, runtime, logger);

    const first = await processor('crm', jobOf(record));
    expect(first.kind).toBe('later');
    const waiting = await records.get(record.id);
    expect(waiting).toMatchObject({ state: 'pending', attempts: 1, lastStatus: 429 });
    const nextAt = Date.parse(waiting!.nextAttemptAt!);

    // The run died before its job was moved to delayed: BullMQ runs the job again now.
    const again = await processor('crm', jobOf(record), { stalls: 1 });
    expect(receiver.requests).toHaveLength(1);
    expect(await records.get(record.id)).toMatchObject({ state: 'pending', attempts: 1 });
    // Put back until the time the record holds.
    expect(again.kind).toBe('later');
    const until = Date.now() + (again.kind === 'later' ? again.delayMs : 0);
    expect(until).toBeGreaterThanOrEqual(nextAt - 1000);
  });

  it('with BullMQ: the job is moved to delayed until the retry time; nothing is sent early', async () => {
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('stalled-retry-time');
    const store = await createRedisStore({ url, keyPrefix, logger });
    const receiver = await startReceiver({ secret: SECRET });
    receiver.respond({ kind: 'status', status: 503 });
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '1h', '1h'] }],
    });
    const events = createOutboxPublisher(store);
    const bridge = () =>
      testDelivery({
        config,
        store,
        redisUrl: url,
        keyPrefix,
        events,
        logger,
      });
    const prefix = `${keyPrefix}:bull`;
    const name = queueNameOf('crm');
    const redis = new Redis(url, { maxRetriesPerRequest: null });
    const inspect = new Queue(name, { connection: redis, prefix });
    const checker = new Worker(name, null, {
      connection: new Redis(url, { maxRetriesPerRequest: null }),
      prefix,
      autorun: false,
      maxStalledCount: 10,
    });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    cleanups.push(() => receiver.close());
    cleanups.push(async () => {
      await checker.close();
      await inspect.close();
      redis.disconnect();
    });
    const id = deliveryIdOf('crm', 'evt_retry_time_1');
    const jobId = `${id}.0`;
    const stateOf = async () => (await Job.fromId(inspect, jobId))?.getState();

    // The first attempt: 503, a retry an hour later, the job delayed till then.
    const first = bridge();
    cleanups.push(() => first.close());
    await events.publish([entry()]);
    expect(await first.drain()).toBe(1);
    await first.start();
    await until(async () => (await stateOf()) === 'delayed', 'the first attempt ended in a retry');
    await first.close();
    expect(receiver.requests).toHaveLength(1);
    const nextAt = Date.parse((await first.get(id))!.nextAttemptAt!);

    // As if that run had died right after recording the retry, holding its job: taken by a
    // worker that dies with it, then BullMQ's stalled check (two passes) puts it back to wait.
    await (await Job.fromId(inspect, jobId))!.promote();
    const dead = new Worker(name, null, { connection: redis, prefix, autorun: false });
    expect((await dead.getNextJob(`dead-${randomUUID()}`))?.id).toBe(jobId);
    await dead.close(true);
    await redis.del(inspect.toKey(`${jobId}:lock`));
    const moveStalled = (checker as unknown as { moveStalledJobsToWait(): Promise<void> })
      .moveStalledJobsToWait;
    for (let pass = 0; pass < 2; pass++) {
      await redis.del(inspect.toKey('stalled-check'));
      await moveStalled.call(checker);
    }
    expect(await stateOf()).toBe('waiting');

    // A worker runs it again: back to delayed, until the retry's time, with no second POST.
    const second = bridge();
    cleanups.push(() => second.close());
    await second.start();
    await until(
      async () => !['waiting', 'active'].includes((await stateOf()) ?? 'gone'),
      'the job run again',
    );
    expect(await stateOf()).toBe('delayed');
    await second.close();
    expect(receiver.requests).toHaveLength(1);
    expect(await second.get(id)).toMatchObject({ state: 'pending', attempts: 1 });
    const score = await redis.zscore(inspect.toKey('delayed'), jobId);
    expect(Math.floor(Number(score) / 0x1000)).toBeGreaterThanOrEqual(nextAt - 1000);
  });
});
