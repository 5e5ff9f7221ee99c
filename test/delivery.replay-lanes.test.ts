import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import type { Contact } from '../src/contacts/types.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { testDelivery } from './support/processor-world.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A replay goes at the end of the lane of the contact its delivery's contact is part of *now*
 * (ContactService.currentId): the look-up is made again after the replay's write, and a merge
 * that committed in between (and may have been drained before the write, with nothing pending in
 * the lane the delivery was put in, so that no lane link was made) moves it to the end of the
 * merged contact's lane before its job is queued. The contact directory here is the engine's
 * root pointers as a map the test changes, as a merge changes them; the merge happens right after
 * the replay's first look-up. Outcomes only: the order a real receiver's application got.
 */
const SECRET = `whsec_${Buffer.from('replay-lanes-secret-0123456789ab').toString('base64')}`;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function entry(contactId: string, n: number): OutboxEntry {
  const at = '2026-11-01T10:00:00.000Z';
  const contact: Contact = {
    id: contactId,
    name: contactId,
    names: [contactId],
    emails: [],
    phones: [],
    identities: [],
    labels: [],
    attributes: {},
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: [contactId],
    merges: [],
    createdAt: at,
    updatedAt: at,
  };
  return {
    event: {
      id: `evt_${contactId}_${n}`,
      type: 'message.received',
      occurredAt: at,
      channel: { id: 'site', vendor: 'jivochat' },
      contact,
      data: { n },
    },
    orderingKey: contactId,
    stagedAt: Date.now(),
  };
}

describe.each(['memory', 'redis'] as const)('replay lanes (%s store)', (kind) => {
  async function setup(receiver: Receiver, contacts: { currentId(id: string): Promise<string> }) {
    const redisUrl = kind === 'redis' ? await getTestRedisUrl() : undefined;
    const keyPrefix = uniquePrefix('replay-lanes');
    const store: Store = redisUrl
      ? await createRedisStore({ url: redisUrl, keyPrefix, logger })
      : createMemoryStore();
    cleanups.push(async () => {
      await store.close();
      if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
    });
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: [
        {
          id: 'crm',
          url: receiver.url,
          secret: SECRET,
          retrySchedule: ['0s', ...Array.from({ length: 60 }, () => '200ms')],
          timeoutMs: 10_000,
          circuitBreaker: { failureThreshold: 10_000, cooldown: '1s' },
        },
      ],
    });
    const events = createOutboxPublisher(store);
    const delivery = testDelivery({
      config,
      store,
      redisUrl,
      keyPrefix,
      events,
      logger,
      contacts,
    });
    cleanups.push(() => delivery.close());
    await delivery.start();
    return { delivery, events };
  }

  it('moves a replay to the merged contact’s lane when a merge commits between its look-up and its write', async () => {
    const receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.close());
    let borisAnswer = 410;
    receiver.respond((request) =>
      request.webhookId === 'evt_c_boris_1' && borisAnswer !== 200
        ? { kind: 'status', status: borisAnswer }
        : { kind: 'ok' },
    );
    // Boris was merged into Anna; the first look-up of the replay is answered so, and right then
    // Anna is merged into Zoe (every record of the group points at the new root).
    const roots = new Map([['c_boris', 'c_anna']]);
    let merging = false;
    const contacts = {
      async currentId(id: string) {
        const answer = roots.get(id) ?? id;
        if (merging) {
          merging = false;
          for (const record of ['c_boris', 'c_anna']) roots.set(record, 'c_zoe');
        }
        return answer;
      },
    };
    const { delivery, events } = await setup(receiver, contacts);
    await events.publish([entry('c_boris', 1)]);
    let failed = await delivery.list({ state: 'failed' });
    for (let tries = 0; failed.length === 0; tries++) {
      if (tries > 500) throw new Error('boris’s delivery did not fail');
      await new Promise((resolve) => setTimeout(resolve, 10));
      failed = await delivery.list({ state: 'failed' });
    }

    borisAnswer = 503;
    merging = true;
    const refused = () => receiver.requests.filter((request) => request.answered === 503).length;
    await delivery.replay(failed[0]!.id);
    await receiver.waitFor(() => refused() >= 1, 10_000, 'the replay’s first attempt');
    // Zoe (the merged person) writes after the replay.
    await events.publish([entry('c_zoe', 1)]);
    await receiver.waitFor(() => refused() >= 4, 10_000, 'three more attempts of the replay');
    borisAnswer = 200;
    await receiver.waitFor(() => receiver.application.length === 2, 10_000, 'both delivered');
    expect(receiver.application.map((event) => event.webhookId)).toEqual(['evt_c_boris_1', 'evt_c_zoe_1']);
  });
});
