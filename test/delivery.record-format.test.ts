import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createDeliveryRecords, type DeliveryRecord, deliveryKeys } from '../src/delivery/records.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A delivery record's body (the exact JSON sent and signed) comes back byte for byte through
 * every write and read, on both stores, and records in the format earlier versions wrote (the
 * whole record as one JSON object, the body a string in it, `history` absent in the oldest) are
 * read, marked and listed. Written for a change of the stored format (branch perf-delivery-record,
 * the body kept as its own text after the metadata; not merged): whatever format records.ts
 * writes, these hold.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function memory(): Promise<Store> {
  return createMemoryStore();
}

async function redis(): Promise<Store> {
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('record-format');
  const store = await createRedisStore({ url, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(url, keyPrefix);
  });
  return store;
}

/** Bodies that must come back byte for byte: escapes, non-ASCII, line separators, a raw newline. */
const BODIES = [
  JSON.stringify({ id: 'evt_1', data: { text: 'plain' } }),
  JSON.stringify({ id: 'evt_2', data: { text: 'quotes " and \\ backslashes \\" and \\\\n' } }),
  JSON.stringify({ id: 'evt_3', data: { text: 'Привет, 👋 \u2028\u2029 \u0000 \ufffd' } }),
  JSON.stringify({ id: 'evt_4', data: { text: 'line\nbreaks\r\n\ttabs' } }, null, 2),
  '',
  '\n',
  `{"id":"evt_5","big":"${'x'.repeat(70_000)}"}`,
];

const plan = (index: number, body: string) => ({
  id: `dlv_fmt_${index}`,
  destinationId: 'hook',
  eventId: `evt_${index}`,
  eventType: 'conversation.finished',
  orderingKey: `c_${index}`,
  contactId: `c_${index}`,
  stagedAt: 1_700_000_000_000 + index,
  body,
});

/** A record as an earlier version wrote it: the whole record as one JSON object. */
function oldFormat(index: number, body: string, extra: Partial<DeliveryRecord> = {}): string {
  const at = '2026-12-04T18:49:35.633Z';
  const { history, ...rest } = {
    id: `dlv_old_${index}`,
    destinationId: 'hook',
    eventId: `evt_old_${index}`,
    eventType: 'conversation.finished',
    orderingKey: `c_old_${index}`,
    contactId: `c_old_${index}`,
    state: 'pending',
    cycle: 0,
    seq: 3_000_000 + index,
    attempts: 0,
    cycleAttempts: 0,
    stagedAt: 1_796_410_175_552,
    pendingSince: 1_796_410_175_552,
    createdAt: at,
    updatedAt: at,
    nextAttemptAt: at,
    deliveredAt: null,
    failedAt: null,
    lastStatus: null,
    lastError: null,
    body,
    history: [] as unknown[],
    ...extra,
  };
  // Records older still have no history at all (the schema's default).
  return JSON.stringify(index % 2 === 0 ? { ...rest, history } : rest);
}

describe.each([
  ['memory', memory],
  ['redis', redis],
])('delivery record format (%s store)', (_name, makeStore) => {
  it('gives back every body byte for byte, after ensure, get and each mark', async () => {
    const store = await makeStore();
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 60_000 });
    const now = new Date('2026-12-05T20:00:00.000Z');
    const made = await records.ensure(
      BODIES.map((body, index) => plan(index, body)),
      now,
    );
    expect(made.map((record) => record.body)).toEqual(BODIES);
    for (const [index, body] of BODIES.entries()) {
      const read = await records.get(`dlv_fmt_${index}`);
      expect(read?.body).toBe(body);
      expect(read?.state).toBe('pending');
      const error = { status: 503, message: 'down\n"really"', at: now.toISOString() };
      const retried = await records.markRetry(read!, error, new Date(now.getTime() + 5000), now);
      expect(retried?.body).toBe(body);
      const again = await records.get(`dlv_fmt_${index}`);
      expect(again).toEqual(retried);
      const delivered = await records.markDelivered(again!, 204, now);
      expect(delivered?.body).toBe(body);
      expect(await records.get(`dlv_fmt_${index}`)).toEqual(delivered);
    }
  });

  it('reads, delivers and marks a record an earlier version wrote (the body a string in one JSON object)', async () => {
    const store = await makeStore();
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 60_000 });
    for (const [index, body] of BODIES.entries()) {
      const text = oldFormat(index, body);
      await store.set(deliveryKeys.record(`dlv_old_${index}`), text);
      const read = await records.get(`dlv_old_${index}`);
      expect(read?.body).toBe(body);
      expect(read?.history).toEqual([]);
      expect(read?.eventId).toBe(`evt_old_${index}`);
      // The compare-and-set is over the old text as stored.
      const now = new Date();
      const delivered = await records.markDelivered(read!, 200, now);
      expect(delivered?.state).toBe('delivered');
      expect((await records.get(`dlv_old_${index}`))?.body).toBe(body);
    }
    // inState (the API's listing) reads both formats side by side.
    await records.ensure([plan(9, BODIES[1]!)], new Date());
    await store.set(deliveryKeys.record('dlv_old_9'), oldFormat(9, BODIES[2]!));
    const both = await records.inState('pending', ['dlv_fmt_9', 'dlv_old_9']);
    expect(both.map((record) => record.body)).toEqual([BODIES[1], BODIES[2]]);
  });

  it('a changed old-format record is not written over (the compare-and-set holds across formats)', async () => {
    const store = await makeStore();
    const records = createDeliveryRecords(store, { deliveredRetentionMs: 60_000 });
    const key = deliveryKeys.record('dlv_old_1');
    await store.set(key, oldFormat(1, BODIES[1]!));
    const read = await records.get('dlv_old_1');
    // Another writer (an older instance) moves it on meanwhile.
    const newer = oldFormat(1, BODIES[1]!, { cycle: 1 });
    await store.set(key, newer);
    expect(await records.markDelivered(read!, 200, new Date())).toBeNull();
    expect(await store.get(key)).toBe(newer);
  });

  it('passes over a damaged record like an unreadable one, saying why', async () => {
    const store = await makeStore();
    const unreadable: string[] = [];
    const records = createDeliveryRecords(store, {
      deliveredRetentionMs: 60_000,
      onUnreadable: (id, reason) => unreadable.push(`${id}: ${reason}`),
    });
    await records.ensure([plan(1, BODIES[0]!)], new Date());
    const key = deliveryKeys.record('dlv_fmt_1');
    const stored = (await store.get(key))!;
    await store.set(key, stored.replace('"state":"pending"', '"state":"lost"'));
    expect(await records.get('dlv_fmt_1')).toBeNull();
    await store.set(key, `{"id":${stored.slice(8)}`);
    expect(await records.get('dlv_fmt_1')).toBeNull();
    await store.set(key, 'not a record');
    expect(await records.get('dlv_fmt_1')).toBeNull();
    expect(unreadable).toHaveLength(3);
    expect(unreadable[0]).toContain('state');
  });
});
