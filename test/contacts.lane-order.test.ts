import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import type { Observation } from '../src/contacts/types.js';
import { createOutboxPublisher, OUTBOX_KEY, type OutboxEntry } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Observations of one person in one process are recorded in the order they came in (README, How
 * it works → Identity: they "queue behind each other"), so the contact's outbound events leave
 * in that order too. Found by the model test (test/slow/contacts.model.test.ts): when the first
 * of two queued observations wrote on a plan that no longer held (here: what this instance
 * remembered of the person, after another instance wrote them), the second one — which carried
 * an identifier the first did not, and so read instead of planning on the first's write — was
 * written before the first one's retry.
 */

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const prefixes: string[] = [];
let redisUrl: string | undefined;

afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

for (const kind of ['memory', 'redis'] as const) {
  describe(`one person's observations in one process, on the ${kind} store`, () => {
    async function twoInstances(): Promise<[Store, Store]> {
      if (kind === 'memory') {
        const store = createMemoryStore();
        return [store, store];
      }
      redisUrl ??= await getTestRedisUrl();
      const keyPrefix = uniquePrefix('lane-order');
      prefixes.push(keyPrefix);
      return [
        await createRedisStore({ url: redisUrl, keyPrefix, logger }),
        await createRedisStore({ url: redisUrl, keyPrefix, logger }),
      ];
    }
    const engineOn = (store: Store) =>
      createContactEngine({
        store,
        identity,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
      });
    const observation = (n: number, identifiers: Observation['identifiers']): Observation => ({
      channelId: 'web',
      vendor: 'jivochat',
      at: `2026-11-01T12:00:0${n}.000Z`,
      idempotencyKey: `lane-order-${n}`,
      identifiers,
      events: [{ type: 'message.received', key: 'm', data: { n } }],
    });

    it('are recorded in the order they came in, even when the first one has to read again', async () => {
      const [storeA, storeB] = await twoInstances();
      const a = engineOn(storeA);
      const b = engineOn(storeB);
      try {
        const person = { kind: 'person', value: 'P-lane-order' };
        // Instance A writes the person (and remembers what it wrote), then B writes them too.
        await a.observe(observation(1, [person]));
        await b.observe(observation(2, [person, { kind: 'visitor', value: 'v-1' }]));
        // Two events of one chat at once on A: the first is planned on what A remembered, which
        // no longer holds; the second brings an e-mail, so it reads rather than plan on the first.
        const [first, second] = await Promise.all([
          a.observe(observation(3, [person])),
          a.observe(observation(4, [person, { kind: 'email', value: 'lane-order@example.org' }])),
        ]);
        expect(first.contact.id).toBe(second.contact.id);
        const outbox = (await storeA.lrange(OUTBOX_KEY, 0, -1)).map((raw) => JSON.parse(raw) as OutboxEntry);
        const order = outbox
          .filter((entry) => entry.event.type === 'message.received')
          .map((entry) => entry.event.data.n);
        expect(order).toEqual([1, 2, 3, 4]);
        // The answer to the second shows what the first wrote (it was recorded after it).
        expect(second.contact.channels[0]?.observations).toBe(4);
      } finally {
        if (storeB !== storeA) await storeB.close();
        await storeA.close();
      }
    });

    it('are recorded in the order they came in when a failed write would have left the record as it is', async () => {
      const [storeA, storeB] = await twoInstances();
      const a = engineOn(storeA);
      const b = engineOn(storeB);
      const at = (second: number) => `2026-11-01T12:00:0${second}.000Z`;
      try {
        const person = { kind: 'person', value: 'P-lane-aba' };
        const email = { kind: 'email', value: 'lane-aba@example.org' };
        await a.observe({ ...observation(1, [person, email]), at: at(0) });
        await b.observe({ ...observation(2, [person, email]), at: at(9) });
        // Three at once on A. The first is planned on what A remembered (stale: B wrote since)
        // and is tried again; the second reads (it brings the e-mail) before that retry, so its
        // write fails too, but what it would have written is the record as it now is: the two
        // say nothing the record does not hold already, dated within what it has seen. The third
        // is planned on the second's write, which did not hold: it must not be recorded first.
        const results = await Promise.all([
          a.observe({ ...observation(3, [person]), at: at(5) }),
          a.observe({ ...observation(4, [person, email]), at: at(5) }),
          a.observe({ ...observation(5, [person]), at: at(6) }),
        ]);
        expect(new Set(results.map((result) => result.contact.id)).size).toBe(1);
        const outbox = (await storeA.lrange(OUTBOX_KEY, 0, -1)).map((raw) => JSON.parse(raw) as OutboxEntry);
        const order = outbox
          .filter((entry) => entry.event.type === 'message.received')
          .map((entry) => entry.event.data.n);
        expect(order).toEqual([1, 2, 3, 4, 5]);
        expect(results.map((result) => result.contact.channels[0]?.observations)).toEqual([3, 4, 5]);
      } finally {
        if (storeB !== storeA) await storeB.close();
        await storeA.close();
      }
    });
  });
}
