import { afterAll, describe, expect, it } from 'vitest';
import { key, storedId } from '../src/contacts/keys.js';
import { encodeRecord, newRecord, type StoredRecord } from '../src/contacts/record.js';
import {
  NORMALIZATION_KEY,
  NORMALIZATION_VERSION,
  type ReindexReport,
  reindexContacts,
} from '../src/contacts/reindex.js';
import { nameWords } from '../src/contacts/timeline.js';
import type { Store } from '../src/store/types.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The console's name search over a store an older version wrote. Names were indexed
 * (`sidx:name:<word>`) only from the version that added the console's search on, and only when a
 * record first saw the name; until 7655d60 a word mixing Latin and Cyrillic look-alikes was
 * indexed as typed ("иванoв" with a Latin o), a key no query reaches since queries are folded to
 * one script ("иванов"). The contact re-index a worker runs once per store (src/contacts/reindex.ts)
 * puts every name under today's key and takes the record off keys only an older folding gave it.
 *
 * The store is written as those versions left it (records and keys, no engine), the bridge is
 * started on it as an upgrade starts it, and the names are searched in the console as staff do.
 */

const AT = '2026-10-01T10:00:00.000Z';
/** A Latin o inside a Cyrillic word (a keyboard switched mid-word). */
const MIXED = 'Иванoв';
const MIXED_OLD_WORD = 'иванoв';
/** A word of 40 UTF-16 units with a Latin o: folded today, indexed as typed before. */
const LONG = `${MIXED}${'а'.repeat(34)}`;
/** The same word and a Latin z: no longer foldable (z has no look-alike), so cut as typed today too. */
const LONG_Z = `${LONG}z`;

interface OldContact {
  record: StoredRecord;
  /** The words the older version indexed its names under (none: before the name index). */
  oldWords: string[];
}

function oldContact(email: string, names: string[], oldWords: string[]): OldContact {
  const record: StoredRecord = {
    ...newRecord(AT),
    names: names.map((v) => ({ v, at: AT })),
    emails: [{ v: email, at: AT }],
    ids: [{ kind: 'email', value: email }],
  };
  return { record, oldWords };
}

const contactsOf = () => ({
  // Seen before the name index existed: no entry at all.
  petr: oldContact('petr@example.org', ['Пётр Сидоров'], []),
  olga: oldContact('olga@example.org', ['Olga Smirnova', 'Ольга С.'], []),
  // Indexed as typed, before look-alikes were folded.
  ivanov: oldContact('ivanov@example.org', [`${MIXED} Сергей`], [MIXED_OLD_WORD, 'сергеи']),
  // Two names: the second one's word today is the first one's word before (both 40 units, the
  // second cut from 41): that entry is still what a query for the second name reaches, and stays.
  long: oldContact('long@example.org', [LONG, LONG_Z], [LONG.toLowerCase()]),
  // Indexed in today's form already (Cyrillic only): nothing to do.
  anna: oldContact('anna@example.org', ['Анна Кузнецова'], ['анна', 'кузнецова']),
});

async function writeOldStore(store: Store, contacts: ReturnType<typeof contactsOf>): Promise<void> {
  const batch = store.batch();
  for (const { record, oldWords } of Object.values(contacts)) {
    batch.set(key.record(record.id), encodeRecord(record));
    for (const identifier of record.ids) batch.set(key.index(identifier), storedId(record.id));
    for (const word of oldWords) batch.sadd(key.name(word), storedId(record.id));
  }
  // A record id that another contact's name put under the old key, and one no record has any more.
  batch.sadd(key.name(MIXED_OLD_WORD), '900000000000000001');
  expect(await batch.exec()).toBe(true);
}

/** The contact ids a console search page lists, in its order. */
const idsListed = (html: string) =>
  [...html.matchAll(/<div class="muted mono">([^<]+)<\/div>/g)].map((match) => match[1]!);

async function search(bridge: TestBridge, cookie: string, q: string): Promise<string[]> {
  const page = await consoleRequest(bridge.url, `/console/contacts?q=${encodeURIComponent(q)}`, { cookie });
  expect(page.status).toBe(200);
  return idsListed(page.text);
}

describe.each(['memory', 'redis'] as const)(
  'the name search after an upgrade over an older store (%s store)',
  (kind) => {
    const bridges: TestBridge[] = [];
    const prefixes: string[] = [];
    afterAll(async () => {
      for (const bridge of bridges.reverse()) await bridge.close();
      if (prefixes.length > 0) {
        const url = await getTestRedisUrl();
        for (const prefix of prefixes) await cleanupPrefix(url, prefix);
      }
    });

    /** A bridge on the old store, its background work not started yet. */
    async function upgraded(options: { keyPrefix?: string } = {}) {
      const bridge = await startTestBridge({
        store: kind,
        start: false,
        ...(options.keyPrefix ? { keyPrefix: options.keyPrefix } : {}),
        config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
      });
      bridges.push(bridge);
      return bridge;
    }

    async function expectFound(bridge: TestBridge, contacts: ReturnType<typeof contactsOf>) {
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      const id = (name: keyof typeof contacts) => contacts[name].record.id;
      expect(await search(bridge, cookie, 'петр сидоров')).toEqual([id('petr')]);
      expect(await search(bridge, cookie, 'Сидоров')).toEqual([id('petr')]);
      expect(await search(bridge, cookie, 'smirnova')).toEqual([id('olga')]);
      expect(await search(bridge, cookie, 'Ольга')).toEqual([id('olga')]);
      // The agent types the name in Cyrillic; the stored name had a Latin o.
      expect(await search(bridge, cookie, 'Иванов')).toEqual([id('ivanov')]);
      expect(await search(bridge, cookie, 'иванов сергей')).toEqual([id('ivanov')]);
      expect(await search(bridge, cookie, LONG)).toEqual([id('long')]);
      expect(await search(bridge, cookie, LONG_Z)).toEqual([id('long')]);
      expect(await search(bridge, cookie, 'Анна Кузнецова')).toEqual([id('anna')]);
    }

    async function expectIndex(store: Store, contacts: ReturnType<typeof contactsOf>) {
      const { ivanov, long, anna } = contacts;
      // Today's keys hold every name's record...
      for (const { record } of Object.values(contacts))
        for (const name of record.names)
          for (const word of nameWords(name.v))
            expect(
              await store.smismember(key.name(word), [storedId(record.id)]),
              `${name.v}: ${word}`,
            ).toEqual([true]);
      // ...the key only the old folding gave Иванoв no longer holds that record (the other ids
      // under it are not this record's to remove), the one LONG_Z still gives today keeps its record.
      expect((await store.smembers(key.name(MIXED_OLD_WORD))).sort()).toEqual(['900000000000000001']);
      expect(await store.smembers(key.name(LONG.toLowerCase()))).toEqual([storedId(long.record.id)]);
      expect(nameWords(LONG_Z)).toEqual([LONG.toLowerCase()]);
      expect((await store.smembers(key.name('анна'))).sort()).toEqual([storedId(anna.record.id)]);
      // Records keep every name (unmerges and the contact page need them): the pass wrote none.
      for (const { record } of [ivanov, long, anna])
        expect(await store.get(key.record(record.id))).toBe(encodeRecord(record));
    }

    it('a worker that starts on it indexes every name in today’s form, once, in the background', async () => {
      const bridge = await upgraded();
      const contacts = contactsOf();
      await writeOldStore(bridge.bridge.store, contacts);
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      // As the older version left it: Пётр is not found by his name.
      expect(await search(bridge, cookie, 'Сидоров')).toEqual([]);
      await bridge.bridge.start();
      await expect
        .poll(() => bridge.bridge.store.get(NORMALIZATION_KEY), { timeout: 20_000 })
        .toBe(String(NORMALIZATION_VERSION));
      await expectFound(bridge, contacts);
      await expectIndex(bridge.bridge.store, contacts);
    });

    it('a store the previous version re-indexed (identifier keys only) is passed over once more', async () => {
      const bridge = await upgraded();
      const contacts = contactsOf();
      await writeOldStore(bridge.bridge.store, contacts);
      await bridge.bridge.store.set(NORMALIZATION_KEY, '2');
      await bridge.bridge.start();
      await expect
        .poll(() => bridge.bridge.store.get(NORMALIZATION_KEY), { timeout: 20_000 })
        .toBe(String(NORMALIZATION_VERSION));
      await expectFound(bridge, contacts);
    });

    it('a dry run says what a pass would do and writes nothing; a second pass finds nothing to do', async () => {
      const bridge = await upgraded();
      const contacts = contactsOf();
      const store = bridge.bridge.store;
      await writeOldStore(store, contacts);
      const pass = (dryRun: boolean) =>
        reindexContacts({ store, identity: bridge.bridge.config.identity, dryRun, pageSize: 2 });
      const expected: Partial<ReindexReport> = {
        complete: true,
        // petr (2 words), olga (4), ivanov (иванов), long (its folded word).
        namesIndexed: 4,
        nameEntriesAdded: 8,
        staleNameEntriesRemoved: 1,
        changed: 0,
        busy: 0,
      };
      expect(await pass(true)).toMatchObject({ ...expected, dryRun: true });
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      expect(await search(bridge, cookie, 'Сидоров')).toEqual([]);
      expect(await store.smembers(key.name(MIXED_OLD_WORD))).toContain(storedId(contacts.ivanov.record.id));
      expect(await pass(false)).toMatchObject(expected);
      expect(await pass(false)).toMatchObject({
        namesIndexed: 0,
        nameEntriesAdded: 0,
        staleNameEntriesRemoved: 0,
      });
      await expectFound(bridge, contacts);
      await expectIndex(store, contacts);
    });

    it('a name seen while the pass runs: both end up indexed, nothing lost', async () => {
      const bridge = await upgraded();
      const contacts = contactsOf();
      const store = bridge.bridge.store;
      await writeOldStore(store, contacts);
      const observe = (index: number) =>
        bridge.bridge.context.contacts.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: `2026-12-01T10:00:${String(index).padStart(2, '0')}.000Z`,
          idempotencyKey: `during-${index}`,
          identifiers: [{ kind: 'email', value: index % 2 ? 'ivanov@example.org' : 'petr@example.org' }],
          names: [index % 2 ? `Сергей Иванов ${index}` : `Пётр ${index}`],
        });
      const [report] = await Promise.all([
        reindexContacts({ store, identity: bridge.bridge.config.identity, pageSize: 1 }),
        ...Array.from({ length: 10 }, (_, index) => observe(index)),
      ]);
      expect(report.complete).toBe(true);
      await reindexContacts({ store, identity: bridge.bridge.config.identity });
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      expect(await search(bridge, cookie, 'Сидоров')).toEqual([contacts.petr.record.id]);
      expect(await search(bridge, cookie, 'Пётр 4')).toEqual([contacts.petr.record.id]);
      expect(await search(bridge, cookie, 'иванов сергей 3')).toEqual([contacts.ivanov.record.id]);
      expect(await search(bridge, cookie, 'Иванов')).toEqual([contacts.ivanov.record.id]);
      expect(await store.smembers(key.name(MIXED_OLD_WORD))).not.toContain(
        storedId(contacts.ivanov.record.id),
      );
    });

    it('a record whose names change between its read and the write is read again, not written blind', async () => {
      const bridge = await upgraded();
      const contacts = contactsOf();
      const store = bridge.bridge.store;
      await writeOldStore(store, contacts);
      // The first membership read of the pass: a chat gives Иванoв another name meanwhile.
      const smismember = store.smismember.bind(store);
      let changedOnce = false;
      store.smismember = async (...args) => {
        if (!changedOnce) {
          changedOnce = true;
          await bridge.bridge.context.contacts.observe({
            channelId: 'web',
            vendor: 'jivochat',
            at: '2026-12-01T10:00:00.000Z',
            idempotencyKey: 'meanwhile',
            identifiers: [{ kind: 'email', value: 'ivanov@example.org' }],
            names: ['Serge Ivanov'],
          });
        }
        return smismember(...args);
      };
      const report = await reindexContacts({ store, identity: bridge.bridge.config.identity });
      store.smismember = smismember;
      expect(changedOnce).toBe(true);
      expect(report).toMatchObject({ complete: true, busy: 0, namesIndexed: 4, staleNameEntriesRemoved: 1 });
      await expectFound(bridge, contacts);
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      expect(await search(bridge, cookie, 'serge ivanov')).toEqual([contacts.ivanov.record.id]);
      expect(await store.smembers(key.name(MIXED_OLD_WORD))).toEqual(['900000000000000001']);
    });

    if (kind === 'redis')
      it('two instances started on one store: one pass, every name found through either', async () => {
        const keyPrefix = uniquePrefix('name-backfill');
        prefixes.push(keyPrefix);
        const first = await upgraded({ keyPrefix });
        const second = await upgraded({ keyPrefix });
        const contacts = contactsOf();
        await writeOldStore(first.bridge.store, contacts);
        await Promise.all([first.bridge.start(), second.bridge.start()]);
        await expect
          .poll(() => first.bridge.store.get(NORMALIZATION_KEY), { timeout: 20_000 })
          .toBe(String(NORMALIZATION_VERSION));
        await expectFound(first, contacts);
        await expectFound(second, contacts);
        await expectIndex(second.bridge.store, contacts);
      });
  },
);
