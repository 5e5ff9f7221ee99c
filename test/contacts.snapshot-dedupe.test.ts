import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatvisorRuntime } from '../adapters/chatvisor/index.js';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { key, storedId } from '../src/contacts/keys.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Contact, Observation } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Snapshot events (README "How it works", Idempotency): an event that restates a state — a
 * JivoChat client card (`client_updated`, `chat_updated`, `client_attribute_updated`), a Chatvisor
 * conversation's status, a LiveTex dialog's operators — is a repeat only within
 * `identity.snapshotDedupeSeconds` (15 minutes by default, far past a vendor's retries): a card
 * that goes back to what it was later (Dmitry → Irina → Dmitry) is news, while a redelivery, or a
 * late redelivery of the earlier state after the newer one, still changes nothing. One-off events
 * (a chat's finish) stay repeats for `identity.dedupeTtlSeconds` (7 days).
 *
 * Crossing the window takes no waiting: the memory store's clock is moved past it; on Redis each
 * key is checked to expire within the window and is then removed, as its expiry would.
 */

/** identity.snapshotDedupeSeconds' default (README, Configuration reference). */
const WINDOW_MS = 15 * 60_000;
const JIVO_TOKEN = 'snapshot-jivo-token-0001';
const CV_TOKEN = 'snapshot-cv-token-0123456789';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface World {
  bridge: TestBridge;
  /** The dedupe keys in the store now (Redis only: the memory store keeps no listing). */
  dedupeKeys(): Promise<Set<string>>;
  /** Time passes beyond the snapshot window for `keys` (the keys written by the snapshots so far). */
  pass(keys: Iterable<string>): Promise<void>;
  /** The remaining lifetime (ms) of a dedupe key (Redis only). */
  pttl(key: string): Promise<number>;
}

async function world(store: 'memory' | 'redis', config: Record<string, unknown>): Promise<World> {
  let offset = 0;
  const bridge = await startTestBridge({ store, config, memoryClock: () => Date.now() + offset });
  cleanups.push(() => bridge.close());
  if (store === 'memory') {
    return {
      bridge,
      dedupeKeys: async () => new Set(),
      pass: async () => {
        offset += WINDOW_MS + 1000;
      },
      pttl: async () => Number.NaN,
    };
  }
  const redis = new Redis(bridge.redisUrl!);
  cleanups.push(async () => {
    redis.disconnect();
  });
  return {
    bridge,
    async dedupeKeys() {
      const out = new Set<string>();
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${bridge.keyPrefix}:dedupe:*`, 'COUNT', 500);
        cursor = next;
        for (const found of keys) out.add(found);
      } while (cursor !== '0');
      return out;
    },
    async pass(keys) {
      for (const key of keys) {
        // It would be gone by then by itself: it lives no longer than the window.
        const left = await redis.pttl(key);
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThanOrEqual(WINDOW_MS);
        await redis.del(key);
      }
    },
    pttl: (key) => redis.pttl(key),
  };
}

/** The keys written by `send` (Redis; empty on the memory store). */
async function keysOf(w: World, send: () => Promise<unknown>): Promise<string[]> {
  const before = await w.dedupeKeys();
  await send();
  return [...(await w.dedupeKeys())].filter((found) => !before.has(found));
}

async function onlyContact(bridge: TestBridge, query: string): Promise<Contact> {
  const found = await bridge.admin<{ contacts: Contact[] }>('GET', `/api/v1/contacts?${query}`);
  expect(found.status).toBe(200);
  expect(found.body.contacts).toHaveLength(1);
  return found.body.contacts[0]!;
}

async function entriesOf(bridge: TestBridge, contactId: string, type: string): Promise<number> {
  const page = await bridge.admin<{ entries: { type: string }[] }>(
    'GET',
    `/api/v1/contacts/${contactId}/timeline?limit=200`,
  );
  expect(page.status).toBe(200);
  return page.body.entries.filter((entry) => entry.type === type).length;
}

const DMITRY = { id: 55120, email: 'dmitry@store.example', name: 'Dmitry Volkov' };
const IRINA = { id: 55121, email: 'irina@store.example', name: 'Irina Volkova' };

describe.each(['memory', 'redis'] as const)('JivoChat snapshots (%s store)', (store) => {
  const jivoWorld = () =>
    world(store, {
      channels: [{ id: 'shop-site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
    });
  const jivo = async (bridge: TestBridge, payload: unknown) => {
    const answer = await bridge.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, payload);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ result: 'ok' });
  };
  const card = (assigned: unknown, extra: Record<string, unknown> = {}) => ({
    event_name: 'client_updated',
    widget_id: 'w1',
    client_id: '17',
    visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
    assigned_agent: assigned,
    ...extra,
  });
  const maria = (bridge: TestBridge) => onlyContact(bridge, 'email=maria@example.org');

  it('a card back on its earlier responsible agent later is recorded; a redelivery, early or late, is not', async () => {
    const w = await jivoWorld();
    const { bridge } = w;
    const first = await keysOf(w, () => jivo(bridge, card(DMITRY)));
    const contact = await maria(bridge);
    expect(contact.responsibleAgent).toMatchObject({ email: 'dmitry@store.example' });
    // Jivo sends it again (its answer was lost): nothing is recorded twice.
    await jivo(bridge, card(DMITRY));
    expect(await entriesOf(bridge, contact.id, 'contact.updated')).toBe(1);

    const second = await keysOf(w, () => jivo(bridge, card(IRINA)));
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'irina@store.example' });
    // A late redelivery of the Dmitry card, arriving after the Irina one: no revert.
    await jivo(bridge, card(DMITRY));
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'irina@store.example' });
    expect(await entriesOf(bridge, contact.id, 'contact.updated')).toBe(2);

    // Later, the card goes back to Dmitry: a new event, recorded.
    await w.pass([...first, ...second]);
    await jivo(bridge, card(DMITRY));
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'dmitry@store.example' });
    expect(await entriesOf(bridge, contact.id, 'contact.updated')).toBe(3);
    // And that one's own redelivery is a repeat again.
    await jivo(bridge, card(DMITRY));
    expect(await entriesOf(bridge, contact.id, 'contact.updated')).toBe(3);
  });

  it('a status, tags or attributes back on an earlier value later are recorded', async () => {
    const w = await jivoWorld();
    const { bridge } = w;
    const later = { status: { id: '4', title: 'contact_later' }, tags: [{ id: '5', title: 'VIP' }] };
    const attributes = (segment: string) => ({
      event_name: 'client_attribute_updated',
      widget_id: 'w1',
      client_id: 17,
      user_token: null,
      attributes: { segment },
    });
    const keys = [
      ...(await keysOf(w, () => jivo(bridge, card(DMITRY, later)))),
      ...(await keysOf(w, () => jivo(bridge, attributes('wholesale')))),
      ...(await keysOf(w, () => jivo(bridge, card(DMITRY, { status: null, tags: [] })))),
      ...(await keysOf(w, () => jivo(bridge, attributes('retail')))),
    ];
    const contact = await maria(bridge);
    expect(contact.attributes.status).toMatchObject({ value: 'contact_later' });
    await w.pass(keys);

    await jivo(bridge, card(DMITRY, later));
    await jivo(bridge, attributes('wholesale'));
    const back = await maria(bridge);
    expect(back.attributes.status).toMatchObject({ value: 'contact_later' });
    expect(back.attributes['client.segment']).toMatchObject({ value: 'wholesale' });
  });

  it('a one-off event (a chat finished) stays a repeat past the snapshot window', async () => {
    const w = await jivoWorld();
    const { bridge } = w;
    const finished = {
      event_name: 'chat_finished',
      widget_id: 'w1',
      chat_id: 7,
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      agents: [{ id: '1', name: 'Oleg', email: 'oleg@shop.example' }],
      chat: { messages: [{ message: 'Hi', timestamp: 1717401600, type: 'visitor' }] },
    };
    const keys = await keysOf(w, () => jivo(bridge, finished));
    const contact = await maria(bridge);
    if (store === 'redis') {
      expect(keys).toHaveLength(1);
      expect(await w.pttl(keys[0]!)).toBeGreaterThan(WINDOW_MS);
    } else {
      await w.pass([]);
    }
    await jivo(bridge, finished);
    expect(await entriesOf(bridge, contact.id, 'conversation.finished')).toBe(1);
  });
});

describe.each(['memory', 'redis'] as const)('Chatvisor snapshots (%s store)', (store) => {
  let fake: FakeChatvisor;
  async function chatvisorWorld() {
    fake = await startFakeChatvisor();
    cleanups.push(() => fake.close());
    const w = await world(store, {
      agents: [{ email: 'oleg@shop.example', name: 'Oleg Petrov' }],
      channels: [fake.channel('cv', CV_TOKEN)],
    });
    return w;
  }
  const idle = (bridge: TestBridge) => (bridge.bridge.channels.get('cv')!.runtime as ChatvisorRuntime).idle();
  const conversation = async (bridge: TestBridge, status: string, text: string) => {
    const answer = await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
      customerId: 'cv-maria',
      status,
      lastMessage: { text },
    });
    expect(answer.status).toBe(200);
    await idle(bridge);
  };

  it('a conversation reopened and finished again later, on the same last message, is a second finish', async () => {
    const w = await chatvisorWorld();
    const { bridge } = w;
    fake.addCustomer({ customerId: 'cv-maria', email: 'maria@example.org' });
    await conversation(bridge, 'UNREAD', 'Where is my order?');
    const finish = await keysOf(w, () => conversation(bridge, 'DONE', 'Where is my order?'));
    const contact = await onlyContact(bridge, 'email=maria@example.org');
    expect(await entriesOf(bridge, contact.id, 'conversation.finished')).toBe(1);

    // Later an agent reopens it and closes it again; the customer wrote nothing meanwhile.
    await w.pass(finish);
    await conversation(bridge, 'UNRESOLVED', 'Where is my order?');
    await conversation(bridge, 'DONE', 'Where is my order?');
    expect(await entriesOf(bridge, contact.id, 'conversation.finished')).toBe(2);
    expect(await entriesOf(bridge, contact.id, 'conversation.started')).toBe(2);
  });
});

describe.each(['memory', 'redis'] as const)('LiveTex snapshots (%s store)', (store) => {
  const LT_TOKEN = 'lt-snapshot-token-0123456789';
  const IRINA_LT = { id: '11', name: 'Irina Volkova' };
  const OLEG_LT = { id: '12', name: 'Oleg Petrov' };
  it('a dialog handed back to its earlier operator later makes them responsible again', async () => {
    const w = await world(store, {
      agents: [
        { email: 'oleg@shop.example', name: 'Oleg Petrov' },
        { email: 'irina@shop.example', name: 'Irina Volkova' },
      ],
      channels: [{ id: 'lt-web', vendor: 'livetex', token: LT_TOKEN }],
      // A LiveTex channel on Redis keeps its keys encrypted with it (never used here).
      secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
    });
    const { bridge } = w;
    const assigned = async (at: string, operator: { id: string; name: string }) => {
      const answer = await bridge.post(`/webhooks/livetex/lt-web/${LT_TOKEN}`, {
        event: 'dialog_assigned',
        time: at,
        conversation: { dialogId: 'd1' },
        discourser: { name: 'Anna', personId: 'p-anna-0002' },
        employee: [operator],
      });
      expect(answer.status).toBe(200);
    };
    const anna = () => onlyContact(bridge, 'identity=person:p-anna-0002');
    const keys = [
      ...(await keysOf(w, () => assigned('2026-11-02T09:00:00Z', IRINA_LT))),
      ...(await keysOf(w, () => assigned('2026-11-02T09:05:00Z', OLEG_LT))),
    ];
    expect((await anna()).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
    // Irina's assignment delivered again, late: no change.
    await assigned('2026-11-02T09:00:00Z', IRINA_LT);
    expect((await anna()).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });

    await w.pass(keys);
    await assigned('2026-11-02T09:40:00Z', IRINA_LT);
    const contact = await anna();
    expect(contact.responsibleAgent).toMatchObject({ email: 'irina@shop.example' });
    expect(await entriesOf(bridge, contact.id, 'conversation.assigned')).toBe(3);
  });
});

/**
 * A snapshot's key written before snapshots had a window of their own lives
 * identity.dedupeTtlSeconds: it still makes a redelivery that straddles the upgrade a repeat, and
 * once it is older than the window (its remaining lifetime says so) the same state is recorded.
 * The older version is stood in for by setting the key as it wrote it, with the lifetime left.
 */
describe.each(['memory', 'redis'] as const)('snapshot keys of before (%s store)', (kind) => {
  const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
  const DEDUPE_MS = identity.dedupeTtlSeconds * 1000;
  const prefixes: string[] = [];
  afterEach(async () => {
    const url = await getTestRedisUrl();
    while (prefixes.length > 0) await cleanupPrefix(url, prefixes.pop()!);
  });
  async function engineOn(): Promise<{ store: Store; contacts: ContactService }> {
    let store: Store;
    if (kind === 'memory') store = createMemoryStore();
    else {
      const keyPrefix = uniquePrefix('snapshot-before');
      prefixes.push(keyPrefix);
      store = await createRedisStore({
        url: await getTestRedisUrl(),
        keyPrefix,
        logger: createLogger('silent'),
      });
    }
    cleanups.push(() => store.close());
    const contacts = createContactEngine({
      store,
      identity,
      events: createOutboxPublisher(store),
      metrics: new Metrics(),
      logger: createLogger('silent'),
    });
    return { store, contacts };
  }
  // Each card a second after the one before (in the past: a vendor time is taken up to now).
  // Both read the clock: two recorded within one millisecond were one timeline entry (same id,
  // same time), and 'the same state after it is recorded' failed now and then on a fast run.
  let cards = 0;
  const card = (snapshot: boolean): Observation => {
    const at = new Date(Date.now() - 3_600_000 + ++cards * 1000).toISOString();
    return {
      channelId: 'site',
      vendor: 'jivochat',
      at,
      idempotencyKey: 'jivochat:site:client_updated:17:card-dmitry',
      ...(snapshot ? { snapshot: true } : {}),
      identifiers: [{ kind: 'person', value: 'p-maria' }],
      responsibleAgent: { email: 'dmitry@store.example' },
      timeline: [{ key: 'card', at, type: 'contact.updated', summary: 'card' }],
    };
  };
  const dedupeKey = key.dedupe('site', 'jivochat:site:client_updated:17:card-dmitry');
  /** The key as a version before wrote it, `ageMs` ago. */
  const writtenBefore = (store: Store, contactId: string, ageMs: number) =>
    store.set(dedupeKey, storedId(contactId), { ttlMs: DEDUPE_MS - ageMs });

  it('a redelivery within the window is a repeat; the same state after it is recorded', async () => {
    const { store, contacts } = await engineOn();
    const first = await contacts.observe(card(true));
    await writtenBefore(store, first.contact.id, 60_000);
    expect(await contacts.observe(card(true))).toMatchObject({ duplicate: true });

    await writtenBefore(store, first.contact.id, WINDOW_MS + 1000);
    expect(await contacts.observe(card(true))).toMatchObject({ duplicate: false, created: false });
    // Written again, with the window's lifetime: its own redelivery is a repeat.
    const left = await store.pttl(dedupeKey);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(WINDOW_MS);
    expect(await contacts.observe(card(true))).toMatchObject({ duplicate: true });
    expect((await contacts.timeline(first.contact.id, { limit: 10 })).entries).toHaveLength(2);
  });

  it('a one-off event’s key of before stays a repeat whatever its age', async () => {
    const { store, contacts } = await engineOn();
    const first = await contacts.observe(card(false));
    await writtenBefore(store, first.contact.id, WINDOW_MS + 1000);
    expect(await contacts.observe(card(false))).toMatchObject({ duplicate: true });
  });
});
