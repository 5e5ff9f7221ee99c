import { randomUUID } from 'node:crypto';
import { Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { deliveryPage } from '../src/console/pages.js';
import type { Contact } from '../src/contacts/types.js';
import { deliveryIdOf } from '../src/delivery/drain.js';
import { queueNameOf } from '../src/delivery/queue-bullmq.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createRedisStore } from '../src/store/redis.js';
import { runDeliveriesCommand } from './support/deliveries-cli.js';
import { capturingLogger } from './support/logs.js';
import { testDelivery } from './support/processor-world.js';
import { startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';
import { until } from './support/until.js';

/**
 * A delivery whose runs really do keep dying: the process delivering it crashes or is killed
 * (out of memory on a pathological body, say) every time it gets to it. BullMQ fails such a job
 * after its stall limit ("job stalled more than allowable limit"); the delivery's record stayed
 * pending, the periodic restore put the job back with its stall count (and BullMQ's deferred
 * failure) still on it, so it failed again at once, every restore pass, for good: the record was
 * never failed, never listed with the failed ones, and the contact's later deliveries waited
 * behind it in their lane for ever. Now the delivery fails, kept for replay, with a reason
 * that says what happened; the lane moves on.
 *
 * Real BullMQ on real Redis, the bridge's delivery on a real receiver on 127.0.0.1. A run that
 * dies is a worker that takes the job and is gone while it holds it (never renewed, its lock
 * dropped as when it lapses); BullMQ's stalled check (two passes, as a worker runs it) then puts
 * the job back to wait with one more stall. Outcomes only.
 */

const SECRET = `whsec_${Buffer.from('stall-limit-test-secret-0123456').toString('base64')}`;
/** BullMQ's maxStalledCount in the bridge's workers (queue-bullmq.ts). */
const MAX_STALLED_COUNT = 10;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function contact(id: string): Contact {
  const at = '2024-05-01T10:00:00.000Z';
  return {
    id,
    name: `Client ${id}`,
    names: [`Client ${id}`],
    emails: [`${id}@example.org`],
    phones: [],
    identities: [{ kind: 'email', value: `${id}@example.org` }],
    labels: [],
    attributes: {},
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: [id],
    merges: [],
    createdAt: at,
    updatedAt: at,
  };
}

function entry(contactId: string, n: number): OutboxEntry {
  return {
    event: {
      id: `evt_${contactId}_${n}`,
      type: 'message.received',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: contact(contactId),
      data: { n, text: `message ${n}` },
    },
    orderingKey: contactId,
    stagedAt: Date.now(),
  };
}

async function world(options: { restoreIntervalMs?: number } = {}) {
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('stall-limit');
  const { logger, lines } = capturingLogger('info');
  const store = await createRedisStore({ url, keyPrefix, logger });
  const receiver = await startReceiver({ secret: SECRET });
  const metrics = new Metrics();
  const config = configSchema.parse({
    admin: { token: 'admin-token-0123456789' },
    channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
    destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '100ms'] }],
  });
  const events = createOutboxPublisher(store);
  const delivery = testDelivery({
    config,
    store,
    redisUrl: url,
    keyPrefix,
    events,
    logger,
    metrics,
    pruneIntervalMs: 100,
    ...options,
  });
  const prefix = `${keyPrefix}:bull`;
  const name = queueNameOf('crm');
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  const inspect = new Queue(name, { connection: redis, prefix });
  // Runs BullMQ's stalled check as any of the bridge's workers does, with their limit.
  const checker = new Worker(name, null, {
    connection: new Redis(url, { maxRetriesPerRequest: null }),
    prefix,
    autorun: false,
    maxStalledCount: MAX_STALLED_COUNT,
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
  cleanups.push(() => delivery.close());

  const moveStalled = (checker as unknown as { moveStalledJobsToWait(): Promise<void> })
    .moveStalledJobsToWait;
  /** A run takes the job and dies holding it; the stalled check puts the job back to wait. */
  async function runDies(jobId: string) {
    const dead = new Worker(name, null, { connection: redis, prefix, autorun: false });
    expect((await dead.getNextJob(`dead-${randomUUID()}`))?.id).toBe(jobId);
    await dead.close(true);
    await redis.del(inspect.toKey(`${jobId}:lock`));
    for (let pass = 0; pass < 2; pass++) {
      await redis.del(inspect.toKey('stalled-check'));
      await moveStalled.call(checker);
    }
  }
  /** The events the receiver was sent (every attempt), as `contact:n`. */
  const sent = () =>
    receiver.requests.map((request) => {
      const payload = request.payload as { contact: { id: string }; data: { n: number } };
      return `${payload.contact.id}:${payload.data.n}`;
    });
  return { delivery, events, receiver, metrics, lines, inspect, runDies, sent };
}

describe('a delivery whose runs keep dying', () => {
  it('fails as stalled after 10 runs in a row died; the lane goes on; a replay delivers it', async () => {
    const { delivery, events, receiver, metrics, lines, inspect, runDies, sent } = await world();
    await events.publish([entry('c1', 1)]);
    expect(await delivery.drain()).toBe(1);
    const poison = deliveryIdOf('crm', 'evt_c1_1');
    for (let run = 0; run < MAX_STALLED_COUNT; run++) await runDies(`${poison}.0`);
    // The contact's later event, and another contact's.
    await events.publish([entry('c1', 2), entry('c2', 1)]);

    await delivery.start();
    await until(() => sent().includes('c1:2') && sent().includes('c2:1'), 'the later events delivered');
    // Not attempted an eleventh time: it is the one whose runs kill the process.
    expect(sent()).not.toContain('c1:1');
    const [failed, ...others] = await delivery.list({ state: 'failed' });
    expect(others).toEqual([]);
    expect(failed).toMatchObject({
      id: poison,
      state: 'failed',
      lastError: { status: null },
    });
    expect(failed!.lastError!.message).toMatch(
      /^stalled: the process delivering it stopped 10 times in a row before the attempt ended/,
    );
    expect(await delivery.list({ state: 'pending' })).toEqual([]);

    // Counted, and said once at error.
    const text = await metrics.registry.metrics();
    expect(text).toContain('chatbridge_delivery_stalled_total{destination="crm"} 1');
    expect(text).toContain('chatbridge_deliveries_total{destination="crm",outcome="failed"} 1');
    const errors = lines.filter((line) => line.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ destination: 'crm', delivery: poison, contact: 'c1', stalls: 10 });
    expect(errors[0]!.msg).toContain('stopped 10 times in a row');
    // The commands it names both ways: a newcomer in a checkout has no `chatbridge` on the PATH.
    expect(errors[0]!.msg).toContain(
      `\`chatbridge deliveries replay --id ${poison}\` (in a checkout: \`node bin/chatbridge.js deliveries replay --id ${poison}\`)`,
    );

    // The failed-delivery tools list it with its reason.
    const out: string[] = [];
    const code = await runDeliveriesCommand(['list', '--state', 'failed'], delivery, {
      stdout: (line) => out.push(line),
      stderr: () => {},
    });
    expect(code).toBe(0);
    expect(out.join('\n')).toMatch(/last error: stalled: the process delivering it stopped 10 times/);
    const page = deliveryPage({ csrf: 'x'.repeat(43), delivery: (await delivery.get(poison))! });
    expect(page).toMatch(/<dt>Reason<\/dt><dd>stalled: the process delivering it stopped 10 times/);
    expect(page).toContain('No attempt recorded.');

    // A replay is a new job, with no stall on it: attempted, and delivered.
    await delivery.replay(poison);
    await until(() => sent().includes('c1:1'), 'the replayed delivery attempted');
    await until(
      async () => (await delivery.get(poison))?.state === 'delivered',
      'the replayed delivery delivered',
    );
    expect(await Job.fromId(inspect, `${poison}.0`)).toBeUndefined();
    expect(receiver.application.map((event) => event.payload.id)).toEqual(
      expect.arrayContaining(['evt_c1_1', 'evt_c1_2', 'evt_c2_1']),
    );
  }, 60_000);

  it('fails as stalled a job BullMQ failed at its own limit, instead of failing it again at every restore', async () => {
    // BullMQ's limit is one stall past the bridge's: a job gets there when a run died before it
    // could look (another job's run killed the process first), or from an older version.
    const { delivery, events, metrics, lines, inspect, runDies, sent } = await world({
      restoreIntervalMs: 200,
    });
    await events.publish([entry('c1', 1)]);
    expect(await delivery.drain()).toBe(1);
    const poison = deliveryIdOf('crm', 'evt_c1_1');
    for (let run = 0; run <= MAX_STALLED_COUNT; run++) await runDies(`${poison}.0`);
    await events.publish([entry('c1', 2)]);

    await delivery.start();
    await until(async () => (await delivery.get(poison))?.state === 'failed', 'the delivery failed');
    await until(() => sent().includes('c1:2'), "the contact's later event delivered");
    expect(sent()).not.toContain('c1:1');
    expect((await delivery.get(poison))!.lastError!.message).toMatch(
      /^stalled: the process delivering it stopped 11 times in a row/,
    );
    // Its job is gone, not failed again and again by the restore.
    await until(async () => (await Job.fromId(inspect, `${poison}.0`)) === undefined, 'the old job gone');
    const text = await metrics.registry.metrics();
    expect(text).toContain('chatbridge_delivery_stalled_total{destination="crm"} 1');
    expect(lines.filter((line) => line.level === 50)).toHaveLength(1);
  }, 60_000);
});
