import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { isCrmDestination } from '../src/config/schema.js';
import { type JobOutcome, STALL_LIMIT } from '../src/delivery/queue.js';
import { createDeliveryRecords, jobOf } from '../src/delivery/records.js';
import { Metrics } from '../src/metrics.js';
import { defaultRegistry } from '../src/registry.js';
import { createRedisStore } from '../src/store/redis.js';
import { amoWorld, bitrixWorld } from './support/crm-worlds.js';
import { startLateProxy } from './support/late-proxy.js';
import {
  crmDestinationRuntime,
  offlineMessage,
  planOne,
  processorOver,
  webhookRuntime,
} from './support/processor-world.js';
import { type ReceiverAnswer, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';
import { until } from './support/until.js';

/**
 * An attempt's outcome is written only over the record the attempt started from. An attempt runs
 * for up to its timeout, and meanwhile its delivery may move on: BullMQ gives a job whose lock
 * lapsed to another worker while the first run goes on (a second run of the same delivery, which
 * records its own outcome), a run at the stall limit fails the delivery as stalled, and an
 * operator replays it (a new cycle, whose job is queued). The first run's "delivered" was written
 * over all that, as the record was when it began: the replay showed delivered while its own
 * attempt was still queued (that job then found its cycle gone and did nothing), and the other
 * run's attempt went missing from the attempts and the history.
 *
 * The processor is run the way the queue runs it (twice at once for one job, as BullMQ does with
 * a job it took for stalled), on real Redis, against the receiver in test/support (webhooks) and
 * the fake CRMs behind a proxy that holds an answer open (CRM destinations). The replay is the
 * records' replay, the write `chatbridge deliveries replay` and the admin API make. Outcomes only.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const SECRET = `whsec_${Buffer.from('outcome-race-test-secret-012345').toString('base64')}`;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function redisStore() {
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('outcome-race');
  const store = await createRedisStore({ url, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(url, keyPrefix);
  });
  return store;
}

/** One delivery to a webhook receiver, and the processor a worker runs its job with. */
async function webhookWorld() {
  const receiver = await startReceiver({ secret: SECRET });
  cleanups.push(() => receiver.close());
  const config = parseConfig(
    {
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: 'jivo-token-0123456789' }],
      destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '1h', '1h'] }],
    },
    defaultRegistry(),
    {},
  );
  const destination = config.destinations[0]!;
  const records = createDeliveryRecords(await redisStore(), { deliveredRetentionMs: 86_400_000 });
  const runtime = webhookRuntime(destination, SECRET);
  const record = await planOne(records, offlineMessage('evt_race_1'), runtime, {
    agents: config.agents,
    channels: config.channels,
    vendorNames: new Map(),
  });
  const processor = processorOver(records, runtime, logger);
  /** The first request is answered 200 only when `release()` is called; the later ones `later`. */
  function holdFirst(later: ReceiverAnswer) {
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let seen = 0;
    receiver.respond(() => {
      seen += 1;
      return seen === 1 ? { kind: 'held', until: held } : later;
    });
    return () => release();
  }
  return { receiver, records, record, processor, holdFirst };
}

describe('a webhook attempt that answers 2xx after its delivery moved on', () => {
  it('leaves a replay made meanwhile pending, with its own attempt to come', async () => {
    const { receiver, records, record, processor, holdFirst } = await webhookWorld();
    // The first run's POST is held open; the second run (the job taken for stalled) is refused.
    const release = holdFirst({ kind: 'status', status: 410 });
    const first = processor('crm', jobOf(record));
    await receiver.waitFor(() => receiver.requests.length === 1, 5000, 'the first POST in flight');
    expect(await processor('crm', jobOf(record), { stalls: 1 })).toEqual<JobOutcome>({ kind: 'done' });
    expect(await records.get(record.id)).toMatchObject({ state: 'failed', attempts: 1 });

    // An operator replays it (CLI / admin API): pending again, a new cycle, its job queued.
    const replayed = await records.replay(record.id, new Date());
    expect(replayed).toMatchObject({ state: 'pending', cycle: 1 });

    // Now the first POST is answered 200.
    receiver.respond({ kind: 'ok' });
    release();
    await first;

    // The replay's state stands: pending in its own cycle, with the refused attempt kept.
    const after = await records.get(record.id);
    expect(after).toMatchObject({ state: 'pending', cycle: 1, attempts: 1, cycleAttempts: 0 });
    expect(after!.history.map((attempt) => attempt.status)).toEqual([410]);

    // The replay's job delivers it.
    expect(await processor('crm', jobOf(replayed!))).toEqual<JobOutcome>({ kind: 'done' });
    const delivered = await records.get(record.id);
    expect(delivered).toMatchObject({ state: 'delivered', cycle: 1, attempts: 2 });
    expect(delivered!.history.map((attempt) => [attempt.cycle, attempt.status])).toEqual([
      [0, 410],
      [1, 200],
    ]);
    expect(receiver.application.map((event) => event.webhookId)).toEqual(['evt_race_1']);
  });

  it('keeps the retry another run of the same delivery recorded meanwhile in its attempts', async () => {
    const { receiver, records, record, processor, holdFirst } = await webhookWorld();
    const release = holdFirst({ kind: 'status', status: 503 });
    const first = processor('crm', jobOf(record));
    await receiver.waitFor(() => receiver.requests.length === 1, 5000, 'the first POST in flight');
    expect((await processor('crm', jobOf(record), { stalls: 1 })).kind).toBe('later');
    expect(await records.get(record.id)).toMatchObject({ state: 'pending', attempts: 1 });

    release();
    expect(await first).toEqual<JobOutcome>({ kind: 'done' });

    // Delivered (the 200 is a delivery), and the 503 of the other run is not lost.
    const after = await records.get(record.id);
    expect(after).toMatchObject({ state: 'delivered', cycle: 0, attempts: 2, cycleAttempts: 2 });
    expect(after!.history.map((attempt) => attempt.status)).toEqual([503, 200]);
  });
});

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)(
  '%s: a CRM attempt that ends after its delivery failed as stalled and was replayed',
  (_name, makeWorld) => {
    it('leaves the replay pending; the replay delivers it without making the task again', async () => {
      const crm = await makeWorld();
      cleanups.push(() => crm.close());
      const proxy = await startLateProxy(crm.url);
      cleanups.push(() => proxy.close());
      const config = parseConfig(
        {
          admin: { token: 'admin-token-0123456789' },
          log: { level: 'silent' },
          channels: [
            { id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: 'jivo-token-0123456789' },
          ],
          destinations: [
            crm.destination({
              ...crm.via(proxy.url),
              timeoutMs: 20_000,
              retrySchedule: ['0s', '1h'],
              events: ['offline_message.received'],
            }),
          ],
        },
        defaultRegistry(),
        {},
      );
      const destination = config.destinations[0]!;
      if (!isCrmDestination(destination)) throw new Error('not a CRM destination');
      const store = await redisStore();
      const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
      const metrics = new Metrics();
      const now = () => new Date();
      const runtime = crmDestinationRuntime({ destination, config, store, logger, metrics, now });
      const record = await planOne(
        records,
        offlineMessage('evt_race_1'),
        runtime,
        {
          agents: config.agents,
          channels: config.channels,
          vendorNames: new Map([['jivochat', 'JivoChat']]),
        },
        now(),
      );
      const processor = processorOver(records, runtime, logger, { metrics, now });

      // The first run is held at the CRM's answer to the contact it made.
      proxy.hold(crm.isCreate('contact'), 3000);
      const first = processor(destination.id, jobOf(record));
      await until(() => crm.state().contacts.length === 1, 'the first run made the contact');
      // Its job comes back at the stall limit (BullMQ took it for stalled, over and over): the
      // delivery fails as stalled, without an attempt. An operator replays it.
      expect(await processor(destination.id, jobOf(record), { stalls: STALL_LIMIT })).toEqual<JobOutcome>({
        kind: 'done',
      });
      expect(await records.get(record.id)).toMatchObject({ state: 'failed', cycle: 0 });
      const replayed = await records.replay(record.id, now());
      expect(replayed).toMatchObject({ state: 'pending', cycle: 1 });

      // The first run goes on to the end: deal and task made.
      expect(await first).toEqual<JobOutcome>({ kind: 'done' });
      expect(crm.state().tasks).toHaveLength(1);
      // The replay's state stands: pending, its attempt to come (not "delivered" with its job queued).
      expect(await records.get(record.id)).toMatchObject({ state: 'pending', cycle: 1, cycleAttempts: 0 });

      // The replay's job: resumes from what the first run recorded, makes nothing again.
      expect(await processor(destination.id, jobOf(replayed!))).toEqual<JobOutcome>({ kind: 'done' });
      expect(await records.get(record.id)).toMatchObject({ state: 'delivered', cycle: 1 });
      const state = crm.state();
      expect(state.contacts).toHaveLength(1);
      expect(state.deals).toHaveLength(1);
      expect(state.tasks).toHaveLength(1);
    });
  },
);
