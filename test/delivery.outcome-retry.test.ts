import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { planDeliveries } from '../src/delivery/drain.js';
import type { DestinationRuntime } from '../src/delivery/processor.js';
import type { JobOutcome } from '../src/delivery/queue.js';
import { createDeliveryRecords, type DeliveryRecords, jobOf } from '../src/delivery/records.js';
import { StoreUnavailableError } from '../src/errors.js';
import type { OutboxEntry } from '../src/events/outbox.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore } from '../src/store/memory.js';
import { processorOver, webhookRuntime } from './support/processor-world.js';
import { startReceiver } from './support/receiver.js';

/**
 * What an attempt came to is written even when the store first refuses the write as "not now"
 * (StoreUnavailableError: a failover, or a resharding that splits the bridge's hash slot, where
 * Redis refuses the record's multi-key batch with TRYAGAIN until the last key has moved). The job
 * used to fail instead, and the queue ran it again: the event was POSTed once more, its record
 * still pending (every delivery answered during a slot move went out twice,
 * test/slow/cluster.reshard.test.ts), and a failed attempt was made again at once, not on the
 * schedule. Here the records refuse a mark a few times; a job that fails is run again, as the
 * queue would.
 */
const logger = pino({ level: 'silent' });
const SECRET = `whsec_${Buffer.from('outcome-retry-secret-0123456789ab').toString('base64')}`;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function setup() {
  const receiver = await startReceiver({ secret: SECRET });
  cleanups.push(() => receiver.close());
  const config = parseConfig(
    {
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'jivo-token-0123456789' }],
      destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '1h', '1h'] }],
    },
    defaultRegistry(),
    {},
  );
  const destination = config.destinations[0]!;
  const store = createMemoryStore();
  cleanups.push(() => store.close());
  const stored = createDeliveryRecords(store, { deliveredRetentionMs: 86_400_000 });
  /** How many more times each mark is refused as "not now". */
  const refusals = { markDelivered: 0, markRetry: 0 };
  const calls = { markDelivered: 0, markRetry: 0 };
  const records: DeliveryRecords = {
    ...stored,
    async markDelivered(...args) {
      calls.markDelivered++;
      if (refusals.markDelivered-- > 0) throw new StoreUnavailableError();
      return stored.markDelivered(...args);
    },
    async markRetry(...args) {
      calls.markRetry++;
      if (refusals.markRetry-- > 0) throw new StoreUnavailableError();
      return stored.markRetry(...args);
    },
  };
  const entry: OutboxEntry = {
    event: {
      id: 'evt_outcome_1',
      type: 'conversation.started',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: null,
      data: {},
    },
    orderingKey: 'c_1',
    stagedAt: Date.now(),
  };
  const plans = planDeliveries(entry, [{ config: destination } as DestinationRuntime], {
    agents: config.agents,
    channels: config.channels,
    vendorNames: new Map(),
  });
  const [record] = await stored.ensure(plans, new Date());
  if (!record) throw new Error('no delivery planned');
  const runtime = webhookRuntime(destination, SECRET);
  const shutdown = new AbortController();
  const processor = processorOver(records, runtime, logger, { signal: shutdown.signal });
  /** The queue's view: a job that fails (throws) is run again. */
  const runJob = async (): Promise<JobOutcome> => {
    try {
      return await processor('crm', jobOf(record));
    } catch (error) {
      expect(error).toBeInstanceOf(StoreUnavailableError);
      return processor('crm', jobOf(record));
    }
  };
  return { receiver, stored, refusals, calls, record, runJob, processor, shutdown };
}

describe('an attempt whose outcome the store refuses at first', () => {
  it('a 2xx is recorded once the store takes it: the event is POSTed once', async () => {
    const { receiver, stored, refusals, calls, record, runJob } = await setup();
    refusals.markDelivered = 3;
    expect(await runJob()).toEqual<JobOutcome>({ kind: 'done' });
    expect(calls.markDelivered).toBe(4);
    expect(receiver.requests).toHaveLength(1);
    expect(await stored.get(record.id)).toMatchObject({ state: 'delivered', attempts: 1 });
  });

  it('a failed attempt keeps its retry time: it is not made again at once', async () => {
    const { receiver, stored, refusals, calls, record, runJob } = await setup();
    receiver.respond({ kind: 'status', status: 503 });
    refusals.markRetry = 2;
    const outcome = await runJob();
    expect(outcome.kind).toBe('later');
    expect(outcome.kind === 'later' && outcome.delayMs).toBeGreaterThan(30 * 60_000);
    expect(calls.markRetry).toBe(3);
    expect(receiver.requests).toHaveLength(1);
    expect(await stored.get(record.id)).toMatchObject({ state: 'pending', attempts: 1 });
  });

  it('a shutdown stops the tries: the job fails and runs again later, as before', async () => {
    const { receiver, stored, refusals, calls, record, processor, shutdown } = await setup();
    refusals.markDelivered = Number.POSITIVE_INFINITY;
    let settled = false;
    const run = processor('crm', jobOf(record)).finally(() => {
      settled = true;
    });
    run.catch(() => {});
    // Tried again at least once (the first try's refusal was not the end of it) ...
    while (calls.markDelivered < 2 && !settled) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(calls.markDelivered).toBeGreaterThanOrEqual(2);
    shutdown.abort();
    await expect(run).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(receiver.requests).toHaveLength(1);
    expect(await stored.get(record.id)).toMatchObject({ state: 'pending', attempts: 0 });
  });
});
