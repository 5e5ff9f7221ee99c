import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { isCrmDestination } from '../src/config/schema.js';
import { planDeliveries } from '../src/delivery/drain.js';
import type { JobOutcome } from '../src/delivery/queue.js';
import { createDeliveryRecords, deliveryKeys } from '../src/delivery/records.js';
import { Metrics } from '../src/metrics.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore, LOCK_KEY_PREFIX } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { amoWorld, bitrixWorld } from './support/crm-worlds.js';
import { startLateProxy } from './support/late-proxy.js';
import { crmDestinationRuntime, offlineMessage, processorOver } from './support/processor-world.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';
import { until } from './support/until.js';

/**
 * One run of a CRM delivery at a time. A queue may run the same delivery twice at once: BullMQ
 * hands a job whose lock lapsed (the event loop stalled past lockDuration, the worker lost Redis
 * for a while) to another worker as stalled while the first run still goes on. For a signed
 * webhook that is one more POST the receiver dedupes by webhook-id; a CRM attempt creates things
 * (contact, deal, task, note) step by step, each run from the progress it read when it began, so
 * two runs at once made the task or note twice. Here the processor is run twice for one delivery
 * the way such a queue would, against the fake CRMs behind a proxy that holds an answer open so
 * that the first run is slow, on both stores. Outcomes only.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each(['memory', 'redis'] as const)('a CRM delivery runs once at a time (%s store)', (kind) => {
  async function storeOf(): Promise<Store> {
    if (kind === 'memory') {
      const store = createMemoryStore();
      cleanups.push(() => store.close());
      return store;
    }
    const url = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('crm-once');
    const store = await createRedisStore({ url, keyPrefix, logger });
    cleanups.push(async () => {
      await store.close();
      await cleanupPrefix(url, keyPrefix);
    });
    return store;
  }

  describe.each([
    ['amoCRM', amoWorld],
    ['Bitrix24', bitrixWorld],
  ] as const)('%s', (_name, makeWorld) => {
    /** An offline message for a new visitor, queued as one delivery; the CRM behind a proxy. */
    async function setup(retrySchedule: string[] = ['0s', '50ms', '50ms']) {
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
              retrySchedule,
              events: ['offline_message.received'],
            }),
          ],
        },
        defaultRegistry(),
        {},
      );
      const destination = config.destinations[0]!;
      if (!isCrmDestination(destination)) throw new Error('not a CRM destination');
      const store = await storeOf();
      const records = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
      const metrics = new Metrics();
      const now = () => new Date();
      const runtime = crmDestinationRuntime({ destination, config, store, logger, metrics, now });
      const entry = offlineMessage('evt_offline_1');
      const plans = planDeliveries(entry, [runtime], {
        agents: config.agents,
        channels: config.channels,
        vendorNames: new Map([['jivochat', 'JivoChat']]),
      });
      const [record] = await records.ensure(plans, now());
      if (!record) throw new Error('no delivery planned');
      /** A worker (of this or another instance) running this delivery's job. */
      const worker = (leaseTtlMs?: number) =>
        processorOver(records, runtime, logger, {
          metrics,
          now,
          ...(leaseTtlMs !== undefined ? { leaseTtlMs } : {}),
        });
      const job = { deliveryId: record.id, cycle: record.cycle };
      return { crm, proxy, store, records, worker, job, id: record.id };
    }

    /** A processor whose runs hold their lease for `leaseTtlMs`. */
    function withLease(made: Awaited<ReturnType<typeof setup>>, leaseTtlMs: number) {
      return made.worker(leaseTtlMs);
    }

    it('a second run while the first is still at work makes nothing again and is no failed attempt', async () => {
      const { crm, proxy, records, worker, job, id } = await setup();
      // The CRM makes the contact at once but its answer is slow: the first run is held there.
      proxy.hold(crm.isCreate('contact'), 1500);
      const first = worker()('crm', job);
      await until(() => crm.state().contacts.length === 1, 'the first run made the contact');
      // The queue runs the same job again meanwhile (BullMQ: a job it took for stalled).
      const second = await worker()('crm', job);
      const outcome = await first;

      expect(outcome).toEqual<JobOutcome>({ kind: 'done' });
      const state = crm.state();
      expect(state.contacts).toHaveLength(1);
      expect(state.deals).toHaveLength(1);
      expect(state.tasks).toHaveLength(1);
      // The second run stood back: tried again later, when it finds the delivery done. It did not
      // get to the delivery, so it does not clear the job's count of runs that died (stoodBack).
      expect(second).toMatchObject({ kind: 'later', stoodBack: true });
      const record = await records.get(id);
      expect(record).toMatchObject({ state: 'delivered', attempts: 1 });
      expect(await worker()('crm', job)).toEqual<JobOutcome>({ kind: 'done' });
      expect(crm.state().tasks).toHaveLength(1);
    });

    it('a retry the first run scheduled while a second run stood back keeps its time', async () => {
      // BullMQ: the second run moved the job to look again in a few seconds, and the first run's
      // own move (to its retry time) fails, its lock being gone. The look a few seconds later
      // attempted at once: the retry schedule (here an hour) was cut short, an attempt counted.
      const { crm, proxy, records, worker, job, id } = await setup(['0s', '1h', '1h']);
      proxy.hold(crm.isCreate('contact'), 1500);
      crm.failCreate('task', 1);
      const first = worker()('crm', job);
      await until(() => crm.state().contacts.length === 1, 'the first run made the contact');
      expect((await worker()('crm', job)).kind).toBe('later');
      const outcome = await first;
      expect(outcome.kind).toBe('later');
      expect(await records.get(id)).toMatchObject({ state: 'pending', attempts: 1 });

      // The queue's look again, a few seconds later: the retry is an hour away.
      const again = await worker()('crm', job);
      expect(again.kind).toBe('later');
      expect(again.kind === 'later' && again.delayMs).toBeGreaterThan(30 * 60_000);
      expect(crm.state().tasks).toHaveLength(0);
      expect(await records.get(id)).toMatchObject({ state: 'pending', attempts: 1 });
    });

    it('a run whose process died holds the delivery only until its lease expires', async () => {
      const { crm, store, records, worker, job, id } = await setup();
      // What a run that died mid-attempt leaves behind: its lease, no longer renewed.
      await store.lock([deliveryKeys.lease(id)], { ttlMs: 400, waitMs: 0 });
      const before = crm.requestCount();
      const held = await worker()('crm', job);
      // Standing back is no sign that the runs stopped dying: the job's stall count stays.
      expect(held).toMatchObject({ kind: 'later', stoodBack: true });
      expect(crm.requestCount()).toBe(before);
      expect(await records.get(id)).toMatchObject({ state: 'pending', attempts: 0 });

      await until(async () => (await worker()('crm', job)).kind === 'done', 'the delivery was attempted');
      expect(await records.get(id)).toMatchObject({ state: 'delivered', attempts: 1 });
      expect(crm.state().tasks).toHaveLength(1);
    });
    it('a run that lost its lease writes no further step and marks nothing; the next run finishes it once', async () => {
      const made = await setup();
      const { crm, proxy, store, records, worker, job, id } = made;
      proxy.hold(crm.isCreate('contact'), 1000);
      const first = withLease(made, 30_000)('crm', job);
      await until(() => crm.state().contacts.length === 1, 'the first run made the contact');
      // Its lease expires meanwhile (the store was unreachable for its whole ttl, say).
      await store.del(LOCK_KEY_PREFIX + deliveryKeys.lease(id));
      expect((await first).kind).toBe('later');
      expect(crm.state().tasks).toHaveLength(0);
      expect(crm.state().deals).toHaveLength(0);
      expect(await records.get(id)).toMatchObject({ state: 'pending', attempts: 0 });

      expect(await worker()('crm', job)).toEqual<JobOutcome>({ kind: 'done' });
      const state = crm.state();
      expect(state.contacts).toHaveLength(1);
      expect(state.deals).toHaveLength(1);
      expect(state.tasks).toHaveLength(1);
      expect(await records.get(id)).toMatchObject({ state: 'delivered', attempts: 1 });
    });
  });
});
