import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine, FORMER_KEYS_UNTIL_KEY } from '../src/contacts/engine.js';
import { key, storedId } from '../src/contacts/keys.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Observation } from '../src/contacts/types.js';
import { createOutboxPublisher, OUTBOX_KEY } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Former idempotency keys (Observation.formerIdempotencyKeys): the key an older version gave the
 * same event (JivoChat before b168a00). A vendor's redelivery of an event that version recorded
 * is a repeat, whatever path records it, for as long as such a key can live in the store
 * (identity.dedupeTtlSeconds from the first observation that names one, and a day for a rolling
 * upgrade); then the engine stops looking, and the observation costs what one without them does.
 * A former key counts only for the person it was recorded for: another person's event that the
 * older version keyed alike (b168a00's case) is recorded.
 *
 * The older version is stood in for by an engine that observes under the old key alone (the
 * dedupe key layout is the same), on the same store, as another instance would be.
 */
const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const DAY_MS = 86_400_000;
const prefixes: string[] = [];
let redisUrl: string | undefined;
afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

describe.each(['memory', 'redis'] as const)('former idempotency keys (%s store)', (kind) => {
  async function storeOf(): Promise<Store> {
    if (kind === 'memory') return createMemoryStore();
    redisUrl ??= await getTestRedisUrl();
    const keyPrefix = uniquePrefix('former-keys');
    prefixes.push(keyPrefix);
    return createRedisStore({ url: redisUrl, keyPrefix, logger });
  }
  /** An engine (an instance) on `store`, whose clock is `clock.now`. */
  const engineOn = (store: Store, clock: { now: number } = { now: Date.now() }): ContactService =>
    createContactEngine({
      store,
      identity,
      events: createOutboxPublisher(store),
      metrics: new Metrics(),
      logger,
      now: () => new Date(clock.now),
    });
  const chat = (person: string, chatId: string, keys: { key: string; former?: string }): Observation => ({
    channelId: 'site',
    vendor: 'jivochat',
    at: '2026-12-04T10:00:00.000Z',
    idempotencyKey: keys.key,
    ...(keys.former === undefined ? {} : { formerIdempotencyKeys: [keys.former] }),
    identifiers: [{ kind: 'person', value: person }],
    timeline: [
      { key: 'accepted', at: '2026-12-04T10:00:00.000Z', type: 'conversation.started', summary: chatId },
    ],
    events: [{ type: 'conversation.started', key: 'accepted', data: { chatId } }],
  });
  const entries = async (contacts: ContactService, id: string) =>
    (await contacts.timeline(id, { limit: 50 })).entries.length;

  it('answers a redelivery of what an older version recorded as a repeat, staging nothing', async () => {
    const store = await storeOf();
    const older = engineOn(store);
    const today = engineOn(store);
    const recorded = await older.observe(
      chat('p-anna', '5000', { key: 'jivochat:site:chat_accepted:5000:7' }),
    );
    const outbox = await store.llen(OUTBOX_KEY);
    const again = await today.observe(
      chat('p-anna', '5000', {
        key: 'jivochat:site:chat_accepted:5000:7:W1',
        former: 'jivochat:site:chat_accepted:5000:7',
      }),
    );
    expect(again).toMatchObject({ duplicate: true, created: false, contact: { id: recorded.contact.id } });
    expect(await entries(today, recorded.contact.id)).toBe(1);
    expect(await store.llen(OUTBOX_KEY)).toBe(outbox);
    await store.close();
  });

  it('records another person’s event that the older version keyed alike, once', async () => {
    const store = await storeOf();
    const older = engineOn(store);
    const today = engineOn(store);
    const anna = await older.observe(chat('p-anna', '5000', { key: 'jivochat:site:chat_accepted:5000:7' }));
    // Another widget's chat 5000, accepted by the same agent: the key of before is Anna's.
    const boris = chat('p-boris', '5000', {
      key: 'jivochat:site:chat_accepted:5000:7:W2',
      former: 'jivochat:site:chat_accepted:5000:7',
    });
    const first = await today.observe(boris);
    expect(first).toMatchObject({ duplicate: false, created: true });
    expect(first.contact.id).not.toBe(anna.contact.id);
    // Its own redelivery is a repeat (today's key).
    expect(await today.observe(boris)).toMatchObject({ duplicate: true, contact: { id: first.contact.id } });
    expect(await entries(today, first.contact.id)).toBe(1);
    expect(await entries(today, anna.contact.id)).toBe(1);
    await store.close();
  });

  it('finds a former key written after the person’s last write it planned on (an older instance, meanwhile)', async () => {
    const store = await storeOf();
    const today = engineOn(store);
    // Today's instance writes the person (and keeps what it wrote, to plan the next write on).
    const anna = await today.observe(
      chat('p-anna', '4999', { key: 'jivochat:site:chat_accepted:4999:7:W1' }),
    );
    // Meanwhile an older instance recorded chat 5000 under the key of before (its dedupe key
    // alone stands in for it: anything more it wrote would fail the plan by itself).
    await store.set(key.dedupe('site', 'jivochat:site:chat_accepted:5000:7'), storedId(anna.contact.id), {
      ttlMs: identity.dedupeTtlSeconds * 1000,
    });
    const again = await today.observe(
      chat('p-anna', '5000', {
        key: 'jivochat:site:chat_accepted:5000:7:W1',
        former: 'jivochat:site:chat_accepted:5000:7',
      }),
    );
    expect(again).toMatchObject({ duplicate: true, contact: { id: anna.contact.id } });
    expect(await entries(today, anna.contact.id)).toBe(1);
    await store.close();
  });

  it('stops looking once no key of before can be left: dedupeTtlSeconds and a day after the first that named one', async () => {
    const store = await storeOf();
    const clock = { now: Date.parse('2026-12-04T10:00:00.000Z') };
    const older = engineOn(store, clock);
    const today = engineOn(store, clock);
    await older.observe(chat('p-anna', '5000', { key: 'jivochat:site:chat_accepted:5000:7' }));
    // The first observation naming a key of before opens the window, for every instance.
    await today.observe(
      chat('p-anna', '4999', {
        key: 'jivochat:site:chat_accepted:4999:7:W1',
        former: 'jivochat:site:chat_accepted:4999:7',
      }),
    );
    expect(Number(await store.get(FORMER_KEYS_UNTIL_KEY))).toBe(
      clock.now + identity.dedupeTtlSeconds * 1000 + DAY_MS,
    );
    // A third instance started later reads the same window: still looking on its last day …
    clock.now += identity.dedupeTtlSeconds * 1000 + DAY_MS - 1;
    const later = engineOn(store, clock);
    const redelivered = (widget: string) =>
      chat('p-anna', '5000', {
        key: `jivochat:site:chat_accepted:5000:7:${widget}`,
        former: 'jivochat:site:chat_accepted:5000:7',
      });
    expect(await later.observe(redelivered('W1'))).toMatchObject({ duplicate: true });
    // … and not after it (the key of before outlived its time here only because this store's
    // clock is not the engines').
    clock.now += 1;
    expect(await later.observe(redelivered('W2'))).toMatchObject({ duplicate: false });
    await store.close();
  });
});
