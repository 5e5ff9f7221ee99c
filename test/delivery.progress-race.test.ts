import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createDeliveryRecords } from '../src/delivery/records.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A CRM attempt records each step's result on its delivery (saveProgress) while it holds the
 * delivery's lease. The lease keeps other attempts out, not every writer: a delivery is failed as
 * stalled by another run of its job without the lease (processor.ts failStalled), and an operator
 * replays a failed one without it. saveProgress read the record and wrote it back whole, so such a
 * write landing between its read and its write was undone: the replay reverted to the failed
 * record (while the index and the lane said pending and the replay's job found its cycle gone),
 * the stalled failure back to pending. Here the competing write is made, on the same Redis, in
 * that window: right after saveProgress has read the record.
 */
const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const ID = 'dlv_progress';
const error = (at: Date) => ({ status: null, message: 'stalled', at: at.toISOString() });

async function world() {
  const url = await getTestRedisUrl();
  const keyPrefix = uniquePrefix('progress-race');
  const store = await createRedisStore({ url, keyPrefix, logger });
  cleanups.push(async () => {
    await store.close();
    await cleanupPrefix(url, keyPrefix);
  });
  /** Run once right after the next read of the delivery's record through `records`. */
  let between: (() => Promise<void>) | null = null;
  const hooked = new Proxy(store, {
    get(target, name, receiver) {
      if (name !== 'get') {
        const value = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return async (key: string) => {
        const text = await target.get(key);
        const run = between;
        if (run && key.endsWith(ID)) {
          between = null;
          await run();
        }
        return text;
      };
    },
  }) as Store;
  const options = { deliveredRetentionMs: 86_400_000 };
  const records = createDeliveryRecords(hooked, options);
  /** The other writer: another run of the job, or the admin API, on the same store. */
  const other = createDeliveryRecords(store, options);
  const at = new Date();
  const [record] = await records.ensure(
    [
      {
        id: ID,
        destinationId: 'crm',
        eventId: 'evt_progress',
        eventType: 'message.received',
        orderingKey: 'c_pavel',
        contactId: null,
        stagedAt: at.getTime() - 1000,
        body: JSON.stringify({ text: 'Call me back' }),
      },
    ],
    at,
  );
  return {
    records,
    other,
    record: record!,
    at,
    inWindow(write: () => Promise<void>) {
      between = write;
    },
  };
}

describe('CRM progress written while another writer changes the delivery', () => {
  it('a failure as stalled made meanwhile stands, with the step recorded on it', async () => {
    const { records, other, at, inWindow } = await world();
    inWindow(async () => {
      expect(await other.abandon(ID, error(at), at)).toBe(true);
    });
    await records.saveProgress(ID, { leadId: '4242' });
    const now = await other.get(ID);
    // main: state 'pending' (the stalled failure undone, the record out of its lane and index).
    expect(now).toMatchObject({ state: 'failed', cycle: 0, crm: { leadId: '4242' } });
    expect((await other.list({ state: 'failed', destinationId: 'crm', limit: 10 })).map((r) => r.id)).toEqual(
      [ID],
    );
  });

  it("an operator's replay made meanwhile stands, with the step recorded on it", async () => {
    const { records, other, at, inWindow } = await world();
    expect(await other.abandon(ID, error(at), at)).toBe(true);
    inWindow(async () => {
      expect(await other.replay(ID, at)).toMatchObject({ state: 'pending', cycle: 1 });
    });
    await records.saveProgress(ID, { leadId: '4242' });
    // main: state 'failed', cycle 0 (the replay undone; its job finds its cycle gone).
    expect(await other.get(ID)).toMatchObject({ state: 'pending', cycle: 1, crm: { leadId: '4242' } });
  });
});
