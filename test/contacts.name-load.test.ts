import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { storedId } from '../src/contacts/keys.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Identifier } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A search loaded the contacts it found one at a time: after the word intersection (or an
 * identifier's set), a read of the root pointers, then per contact its root pointer, member set
 * and record (three commands, one round trip), contact after contact — 53 round trips for a page
 * of 51. The found records' contacts are now read together (Store.readGroups with `ids`): the
 * store steps a search takes no longer grow with the page. Counted where the store is called
 * (both stores) and, on Redis, as round trips on the client (commands sent before any answer came
 * back share one, as bench/trips.js counts them).
 */

const CONTACTS = 130;
/** Every other contact has a second record, merged in by an e-mail. */
const MERGED_EVERY = 2;

/** Counts the calls made to the store's methods while `on` (the engine holds this same object). */
function countStoreCalls(store: Store): { on: boolean; calls: string[] } {
  const counter = { on: false, calls: [] as string[] };
  const target = store as unknown as Record<string, unknown>;
  for (const name of [
    'get',
    'mget',
    'pttl',
    'smembers',
    'sinterScan',
    'readGroups',
    'zrevrangeByLex',
    'hget',
    'hgetall',
  ]) {
    const method = target[name] as (...args: unknown[]) => Promise<unknown>;
    target[name] = (...args: unknown[]) => {
      if (counter.on) counter.calls.push(name);
      return method.apply(store, args);
    };
  }
  return counter;
}

/** Round trips on a Redis store's client while `on` (see bench/trips.js). */
function countTrips(store: RedisStore): { on: boolean; trips: number; commands: number } {
  const counter = { on: false, trips: 0, commands: 0 };
  let answered = true;
  const client = store.client as unknown as {
    sendCommand: (command: { promise: Promise<unknown> }, ...rest: unknown[]) => unknown;
  };
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, ...rest) => {
    if (counter.on) {
      counter.commands++;
      if (answered) {
        answered = false;
        counter.trips++;
      }
      const done = () => {
        answered = true;
      };
      command.promise.then(done, done);
    }
    return send(command, ...rest);
  };
  return counter;
}

describe.each(['redis', 'memory'] as const)(
  'a search loads its page of contacts in one step (%s store)',
  (storeKind) => {
    let bridge: TestBridge;
    let contacts: ContactService;
    let calls: ReturnType<typeof countStoreCalls>;
    let trips: ReturnType<typeof countTrips> | undefined;

    beforeAll(async () => {
      bridge = await startTestBridge({
        store: storeKind,
        start: false,
        config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
      });
      contacts = bridge.bridge.context.contacts;
      const observe = (key: string, identifiers: Identifier[], name?: string) =>
        contacts.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: '2026-11-01T10:00:00.000Z',
          idempotencyKey: key,
          identifiers,
          names: name === undefined ? [] : [name],
        });
      const email = (value: string): Identifier => ({ kind: 'email', value, provenance: 'verified' });
      await Promise.all(
        Array.from({ length: CONTACTS }, (_, i) =>
          observe(
            `a-${i}`,
            [{ kind: 'visitor', value: `v${i}` }, email(`a${i}@example.org`)],
            `Paula Pagesize${i}`,
          ),
        ),
      );
      // Second records, each then merged into its contact by both e-mails. Named otherwise, so
      // that every id of the word is one contact: how many pages a search reads is then fixed.
      for (let i = 0; i < CONTACTS; i += MERGED_EVERY) {
        await observe(`b-${i}`, [email(`b${i}@example.org`)], `Second Record${i}`);
        await observe(`c-${i}`, [email(`a${i}@example.org`), email(`b${i}@example.org`)]);
      }
      calls = countStoreCalls(bridge.bridge.store);
      if (storeKind === 'redis') trips = countTrips(bridge.bridge.store as RedisStore);
    }, 60_000);
    afterAll(async () => {
      await bridge?.close();
    });

    async function counted<T>(
      run: () => Promise<T>,
    ): Promise<{ result: T; calls: string[]; trips?: number }> {
      calls.calls = [];
      calls.on = true;
      if (trips) Object.assign(trips, { on: true, trips: 0, commands: 0 });
      try {
        const result = await run();
        return { result, calls: [...calls.calls], ...(trips ? { trips: trips.trips } : {}) };
      } finally {
        calls.on = false;
        if (trips) trips.on = false;
      }
    }

    it.each([10, 51, 101])(
      'a page of %i contacts: a few store steps, not a few per contact',
      async (limit) => {
        const {
          result,
          calls: made,
          trips: sent,
        } = await counted(() => contacts.find({ name: 'paula', limit }));
        expect(result).toHaveLength(limit);
        expect(new Set(result.map((contact) => contact.id)).size).toBe(limit);
        // Merged contacts (every other one) come whole: both records, read in the same step.
        const merged = result.filter((contact) => contact.records.length === 2);
        if (limit > 50) expect(merged.length).toBeGreaterThan(0);
        for (const contact of merged) expect(contact.names).toContainEqual(expect.stringMatching(/^Second /));
        for (const contact of result) expect(contact.names).toContainEqual(expect.stringMatching(/^Paula /));
        // One page of the word's ids (sinterScan), its contacts read in one step (readGroups),
        // whatever the page size; before, a pointer read and then 3 calls per contact.
        expect(made).toEqual(['sinterScan', 'readGroups']);
        // One round trip per store call (and one more for a script Redis had not cached yet).
        if (sent !== undefined) expect(sent).toBeLessThanOrEqual(3);
      },
    );

    it('a search by an identifier set loads its contacts in one step too', async () => {
      // Twelve visitors typed the same phone (search-only: it merges nobody).
      await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          contacts.observe({
            channelId: 'web',
            vendor: 'jivochat',
            at: '2026-11-01T11:00:00.000Z',
            idempotencyKey: `shared-${i}`,
            identifiers: [
              { kind: 'visitor', value: `shared-${i}` },
              { kind: 'phone', value: '+7 495 123-45-67 доб. 101' },
            ],
            names: [`Shared Line${i}`],
          }),
        ),
      );
      const { result, calls: made } = await counted(() =>
        contacts.find({ phone: '+74951234567', limit: 20 }),
      );
      expect(result).toHaveLength(12);
      expect(made.filter((name) => name === 'readGroups')).toHaveLength(1);
      expect(made.length).toBeLessThanOrEqual(4); // the identifier's index and sets, then the contacts
    });
  },
);

/**
 * The name index holds record ids (`sidx:name:<word>`), not contacts: a record keeps every name it
 * was given (DESIGN §7, nothing is thrown away), and a search lists the contact each found record
 * belongs to at the time of the search. So a merge, an unmerge or a split writes nothing to the
 * index and leaves nothing in it that is not true: these pin that the search (its batched load
 * included) resolves every found record to its contact as it is now.
 */
describe.each(['redis', 'memory'] as const)(
  'the name index after merges and unmerges (%s store)',
  (storeKind) => {
    let bridge: TestBridge;
    let contacts: ContactService;
    let step = 0;
    const observe = (emails: string[], names: string[]) =>
      contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: new Date(Date.UTC(2026, 10, 1, 10, 0, step)).toISOString(),
        idempotencyKey: `merge-${step++}`,
        identifiers: emails.map((value) => ({
          kind: 'email' as const,
          value,
          provenance: 'verified' as const,
        })),
        names,
      });
    const search = async (name: string) =>
      (await contacts.find({ name })).map((contact) => ({ id: contact.id, names: contact.names }));

    beforeAll(async () => {
      bridge = await startTestBridge({
        store: storeKind,
        start: false,
        config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
      });
      contacts = bridge.bridge.context.contacts;
    });
    afterAll(async () => {
      await bridge?.close();
    });

    it('a merged-away record is found as the contact it is part of, and as its own again once unmerged', async () => {
      const anna = (await observe(['anna@example.org'], ['Anna Kuznetsova'])).contact;
      const boris = (await observe(['boris@example.org'], ['Boris Kuznetsov'])).contact;
      const merged = (await observe(['anna@example.org', 'boris@example.org'], [])).contact;
      expect(merged.id).toBe(anna.id);
      expect(await search('boris')).toEqual([
        { id: anna.id, names: expect.arrayContaining(['Boris Kuznetsov']) },
      ]);
      // The record that holds the name is still where the index says: no write to the index.
      expect(await bridge.bridge.store.smembers('sidx:name:boris')).toEqual([storedId(boris.id)]);

      await contacts.unmerge(anna.id, { recordId: boris.id });
      expect(await search('boris')).toEqual([{ id: boris.id, names: ['Boris Kuznetsov'] }]);
      expect(await search('anna')).toEqual([{ id: anna.id, names: ['Anna Kuznetsova'] }]);
      expect((await search('boris kuznetsov')).map((found) => found.id)).toEqual([boris.id]);
    });

    it('a name given later adds to the names: both find the contact, which lists both', async () => {
      const first = (await observe(['vera@example.org'], ['Vera Guest'])).contact;
      await observe(['vera@example.org'], ['Vera Sokolova']);
      expect(await search('guest vera')).toEqual([{ id: first.id, names: ['Vera Sokolova', 'Vera Guest'] }]);
      expect(await search('sokolova')).toEqual([{ id: first.id, names: ['Vera Sokolova', 'Vera Guest'] }]);
    });

    it('splitting an identifier off moves no name: the names stay found on the contact that keeps them', async () => {
      const gleb = (await observe(['gleb@example.org', 'gleb.work@example.org'], ['Gleb Orlov'])).contact;
      const { split } = await contacts.unmerge(gleb.id, {
        identifier: { kind: 'email', value: 'gleb.work@example.org' },
      });
      expect(split.names).toEqual([]);
      expect((await search('gleb orlov')).map((found) => found.id)).toEqual([gleb.id]);
    });
  },
);

/**
 * One step reads at most 1,000 records (FOUND_RECORDS in src/contacts/engine.ts): a page whose
 * contacts hold more is read in more steps, each contact whole in one of them.
 */
describe.each(['redis', 'memory'] as const)(
  'contacts of more records than one step reads (%s store)',
  (kind) => {
    const { newStore, engineOn, group } = groupHelpers(kind);

    it('a page of 21 contacts of 50 records each: two steps, every contact whole', async () => {
      const store = await newStore();
      const engine = engineOn(store, 50);
      const ids = await Promise.all(
        Array.from({ length: 21 }, (_, i) => group(engine, `wide${i}`, 50, `Wide Group${i}`)),
      );
      const calls = countStoreCalls(store);
      calls.on = true;
      const found = await engine.find({ name: 'wide', limit: 30 });
      calls.on = false;
      expect(found.map((contact) => contact.id).sort()).toEqual([...ids].sort());
      for (const contact of found) expect(contact.records).toHaveLength(50);
      expect(calls.calls).toEqual(['sinterScan', 'readGroups', 'readGroups']);
      await store.close();
    }, 60_000);
  },
);

/**
 * A contact larger than any step reads (identity.maxMergeSize lowered after its merges) is read
 * on its own. Memory store only: merging 1,001 records takes seconds on Redis, and what is tested
 * is how the engine takes a step's `complete: false` (both stores' budgets are held to the same
 * behaviour by test/store.conformance.test.ts).
 */
describe('a contact larger than any step reads (memory store)', () => {
  const { newStore, engineOn, group } = groupHelpers('memory');

  it('is still listed whole, with the page’s other contacts', async () => {
    const store = await newStore();
    const id = await group(engineOn(store, 1100), 'huge', 1001, 'Huge Group');
    await group(engineOn(store, 1100), 'small', 2, 'Huge Small');
    const found = await engineOn(store, 10).find({ name: 'huge' });
    expect(found.map((contact) => contact.records.length).sort((a, b) => a - b)).toEqual([2, 1001]);
    expect(found.map((contact) => contact.id)).toContain(id);
    await store.close();
  }, 60_000);
});

/** Stores (Redis under a prefix of their own), engines on them, and merged contacts to search. */
function groupHelpers(kind: 'redis' | 'memory') {
  const logger = createLogger('silent');
  const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
  const prefixes: string[] = [];
  const stores: Store[] = [];
  let redisUrl: string | undefined;
  afterAll(async () => {
    // A test that timed out on a loaded machine is still merging: close its stores first, so
    // that nothing writes under a prefix after it has been deleted.
    await Promise.allSettled(stores.map((store) => store.close()));
    if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
  });
  async function newStore(): Promise<Store> {
    if (kind === 'memory') return createMemoryStore();
    redisUrl ??= await getTestRedisUrl();
    const keyPrefix = uniquePrefix('name-load');
    prefixes.push(keyPrefix);
    const store = await createRedisStore({ url: redisUrl, keyPrefix, logger });
    stores.push(store);
    return store;
  }
  const engineOn = (store: Store, maxMergeSize: number) =>
    createContactEngine({
      store,
      identity: { ...identity, maxMergeSize },
      events: createOutboxPublisher(store),
      metrics: new Metrics(),
      logger,
    });
  /** A contact of `size` records (one e-mail each, merged 20 at a time); only the first is named. */
  async function group(engine: ContactService, tag: string, size: number, name: string): Promise<string> {
    const email = (j: number): Identifier => ({ kind: 'email', value: `${tag}-${j}@example.org` });
    const observe = (key: string, identifiers: Identifier[], names: string[] = []) =>
      engine.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T10:00:00.000Z',
        idempotencyKey: `${tag}-${key}`,
        identifiers,
        names,
      });
    await observe('0', [email(0)], [name]);
    for (let start = 1; start < size; start += 100)
      await Promise.all(
        Array.from({ length: Math.min(100, size - start) }, (_, k) =>
          observe(`${start + k}`, [email(start + k)]),
        ),
      );
    let last = '';
    for (let start = 1; start < size; start += 19) {
      const joining = Array.from({ length: Math.min(19, size - start) }, (_, k) => email(start + k));
      last = (await observe(`join-${start}`, [email(0), ...joining])).contact.id;
    }
    return last;
  }
  return { newStore, engineOn, group };
}
