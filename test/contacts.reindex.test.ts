import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { type Config, configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { key } from '../src/contacts/keys.js';
import { encodeRecord, newRecord } from '../src/contacts/record.js';
import {
  NORMALIZATION_KEY,
  NORMALIZATION_VERSION,
  REINDEX_LOCK,
  REINDEX_PROGRESS_KEY,
  type ReindexReport,
  reindexContacts,
  startReindexOnce,
} from '../src/contacts/reindex.js';
import type { Contact } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { capture } from './support/cli.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger } from './support/logs.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * An upgrade over data an older version stored: the fixture holds the keys, byte for byte, that
 * the bridge of commit a1cdb06 wrote for JivoChat webhooks received through its HTTP intake —
 * before IDN e-mail domains took their Unicode form (ivan@xn--80a1acny.xn--p1ai was a key of its
 * own) and before a phone with an extension became search-only (it held the switchboard number's
 * merging key). Those keys are loaded as they are, the contacts re-indexed (src/contacts/reindex.ts),
 * and the same people are then seen again, in today's forms, through the HTTP intake. On both
 * stores: the in-memory one and a real Redis.
 */

interface FixtureKey {
  key: string;
  type: 'string' | 'set' | 'zset' | 'list' | 'hash';
  value?: string;
  members?: string[];
  values?: string[];
  fields?: Record<string, string>;
  ttl?: true;
}
type Name = 'anna' | 'oleg' | 'ivan' | 'ivanPunycode' | 'pavel' | 'pavelPunycode' | 'svetlana' | 'marina';
interface Fixture {
  ids: Record<Name | 'pavelPunycodeRecord', string>;
  webhooks: Array<{ body: Record<string, unknown> }>;
  keys: FixtureKey[];
  views: Record<Name, { contact: Contact }>;
}

const fixture = JSON.parse(
  readFileSync(new URL('./__fixtures__/contacts-before-renormalization.json', import.meta.url), 'utf8'),
) as Fixture;
const { ids } = fixture;
const TOKEN = 'old-jivo-token-0001';
const silent = createLogger('silent');
const DAY_MS = 24 * 3600 * 1000;

async function loadOldKeys(store: Store): Promise<void> {
  const batch = store.batch();
  for (const entry of fixture.keys) {
    if (entry.type === 'string') batch.set(entry.key, entry.value!, entry.ttl ? 7 * DAY_MS : undefined);
    else if (entry.type === 'set') batch.sadd(entry.key, ...entry.members!);
    else if (entry.type === 'zset') for (const member of entry.members!) batch.zadd(entry.key, 0, member);
    else if (entry.type === 'list') batch.rpush(entry.key, ...entry.values!);
    else for (const [field, value] of Object.entries(entry.fields!)) batch.hset(entry.key, field, value);
  }
  expect(await batch.exec()).toBe(true);
}

/** Every key the fixture wrote, and the keys the re-index may write, as they are now. */
async function snapshot(store: Store): Promise<Record<string, unknown>> {
  const names = new Set(fixture.keys.map((entry) => entry.key));
  for (const email of ['anna@почта.рф', 'ivan@почта.рф', 'pavel@пример.рф'])
    names.add(key.index({ kind: 'email', value: email })).add(key.search({ kind: 'email', value: email }));
  for (const phone of ['+74951234567', '+78125550011'])
    names
      .add(key.search({ kind: 'phone', value: phone }))
      .add(key.searchExtension({ kind: 'phone', value: phone }, '101'))
      .add(key.searchExtension({ kind: 'phone', value: phone }, '7'));
  names.add(key.conflicts).add(NORMALIZATION_KEY);
  const out: Record<string, unknown> = {};
  for (const name of [...names].sort()) {
    const [text] = await store.mget([name]);
    if (text !== null && text !== undefined) out[name] = text;
    else if (name.startsWith('tl:')) out[name] = await store.zrevrangeByLex(name, { limit: 1000 });
    else if (name === key.conflicts) out[name] = await store.lrange(name, 0, -1);
    else if (name.startsWith('console:')) out[name] = await store.hgetall(name);
    else out[name] = (await store.smembers(name)).sort();
  }
  return out;
}

async function oldBridge(kind: 'memory' | 'redis'): Promise<TestBridge> {
  const bridge = await startTestBridge({
    store: kind,
    // Background work (the start-up re-index among it) stays off: each test runs the pass itself.
    start: false,
    config: { channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN, personIdFrom: 'user_token' }] },
  });
  await loadOldKeys(bridge.bridge.store);
  return bridge;
}

const reindex = (bridge: TestBridge, dryRun = false) =>
  reindexContacts({
    store: bridge.bridge.store,
    identity: bridge.bridge.config.identity,
    dryRun,
    // Several pages over the fixture's keys (Redis's SCAN walks the whole test Redis: larger).
    pageSize: bridge.bridge.store.kind === 'memory' ? 7 : 200,
  });

/** A JivoChat chat_accepted in today's forms, through the bridge's HTTP intake. */
async function chat(
  bridge: TestBridge,
  chatId: number,
  visitor: Record<string, unknown>,
  userToken?: string,
) {
  const body = {
    ...fixture.webhooks[0]!.body,
    chat_id: chatId,
    user_token: userToken ?? null,
    visitor: { description: '', social: {}, chats_count: 1, ...visitor },
  };
  const answer = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, body);
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
}

async function findIds(bridge: TestBridge, query: string): Promise<string[]> {
  const answer = await bridge.admin('GET', `/api/v1/contacts?${query}`);
  expect(answer.status).toBe(200);
  return (answer.body.contacts as Contact[]).map((contact) => contact.id);
}

async function contact(bridge: TestBridge, id: string): Promise<Contact> {
  const answer = await bridge.admin('GET', `/api/v1/contacts/${id}`);
  expect(answer.status).toBe(200);
  return answer.body as Contact;
}

const visitor = (number: string) => `identity=${encodeURIComponent(`visitor:site:${number}`)}`;
const email = (value: string) => `email=${encodeURIComponent(value)}`;
const phone = (value: string) => `phone=${encodeURIComponent(value)}`;

/** What the fixture's contacts call for: the counts of one pass over them. */
const EXPECTED: ReindexReport = {
  dryRun: false,
  version: NORMALIZATION_VERSION,
  complete: true,
  records: 8,
  // anna (re-keyed), oleg (search-only phone), ivanPunycode (conflict), pavel's second record
  // (joins the record holding the Unicode form); marina's number, also written without an
  // extension, keeps merging and is left as it is.
  changed: 4,
  rekeyed: 2,
  searchOnlyPhones: 1,
  extensionsAdded: 1,
  conflicts: 1,
  unkeyable: 0,
  // The fixture's names were indexed by the version that wrote it, in today's form (no look-alikes).
  namesIndexed: 0,
  nameEntriesAdded: 0,
  staleNameEntriesRemoved: 0,
  busy: 0,
};

describe.each(['memory', 'redis'] as const)(
  're-indexing contacts stored by an older version (%s store)',
  (kind) => {
    const bridges: TestBridge[] = [];
    afterAll(async () => {
      for (const bridge of bridges) await bridge.close();
    });
    const open = async () => {
      const bridge = await oldBridge(kind);
      bridges.push(bridge);
      return bridge;
    };

    it('an IDN e-mail stored in punycode: the Unicode form seen again is the same contact, not a second one', async () => {
      const bridge = await open();
      expect(await findIds(bridge, email('anna@почта.рф'))).toEqual([]);
      await reindex(bridge);
      await chat(bridge, 6001, { name: 'Анна С.', email: 'anna@почта.рф', number: '2001' });
      expect(await findIds(bridge, email('anna@почта.рф'))).toEqual([ids.anna]);
      expect(await findIds(bridge, visitor('2001'))).toEqual([ids.anna]);
      const anna = await contact(bridge, ids.anna);
      expect(anna.emails).toEqual(['anna@почта.рф']);
      expect(anna.names).toEqual(['Анна С.', 'Анна Смирнова']);
      // Found by either form (searches normalise too), and nothing else of hers changed.
      expect(await findIds(bridge, email('ANNA@XN--80A1ACNY.XN--P1AI'))).toEqual([ids.anna]);
      const before = fixture.views.anna.contact;
      expect(anna.attributes).toEqual({ ...before.attributes, ...anna.attributes });
      expect(anna.createdAt).toBe(before.createdAt);
      // The form it had is kept on her timeline, with why it changed.
      const timeline = await bridge.admin('GET', `/api/v1/contacts/${ids.anna}/timeline?limit=50`);
      const entry = (timeline.body.entries as Array<{ type: string; summary: string; data: any }>).find(
        (item) => item.type === 'contact.reindexed',
      );
      expect(entry?.summary).toContain('anna@xn--80a1acny.xn--p1ai is now anna@почта.рф');
      expect(entry?.data.changes).toEqual([
        { kind: 'email', from: 'anna@xn--80a1acny.xn--p1ai', to: 'anna@почта.рф', outcome: 'rekeyed' },
      ]);
    });

    it('a phone stored without its extension: the switchboard number no longer attaches callers to that person', async () => {
      const bridge = await open();
      await reindex(bridge);
      // Someone else calling from the switchboard, without an extension: a contact of their own.
      await chat(bridge, 6002, { name: 'Reception', phone: '+7 495 123-45-67', number: '2002' });
      const [reception] = await findIds(bridge, visitor('2002'));
      expect(reception).toBeDefined();
      expect(reception).not.toBe(ids.oleg);
      expect((await contact(bridge, ids.oleg)).names).toEqual(['Олег Петров']);
      // Oleg is found by his number with his extension, first; the number alone lists everyone.
      expect((await findIds(bridge, phone('8 (495) 123-45-67 доб. 101')))[0]).toBe(ids.oleg);
      expect((await findIds(bridge, phone('+7 495 123-45-67'))).sort()).toEqual(
        [ids.oleg, reception!].sort(),
      );
      // Oleg himself with his extension again: found (and, as any extension phone, merges nothing).
      await chat(bridge, 6003, { name: 'Олег Петров', phone: '+7 495 123-45-67 доб. 101', number: '1002' });
      expect(await findIds(bridge, visitor('1002'))).toEqual([ids.oleg]);
      // A number also written without an extension is that person's own: it keeps merging.
      await chat(bridge, 6004, { name: 'Марина Ким', phone: '8 812 555 00 11', number: '2004' });
      expect(await findIds(bridge, visitor('2004'))).toEqual([ids.marina]);
      expect(await findIds(bridge, phone('+7 812 555-00-11 доб. 7'))).toEqual([ids.marina]);
    });

    it('a current form another contact holds already: recorded as an identity conflict, nothing merged, nothing lost', async () => {
      const bridge = await open();
      // The old bridge made two contacts of one address written two ways.
      expect(ids.ivanPunycode).not.toBe(ids.ivan);
      const report = await reindex(bridge);
      expect(report.conflicts).toBe(1);
      const conflicts = await bridge.admin('GET', '/api/v1/identity/conflicts?limit=10');
      expect(conflicts.body.conflicts).toEqual([
        {
          at: expect.any(String),
          reason: 'renormalized',
          via: { kind: 'email', value: 'ivan@почта.рф' },
          was: 'ivan@xn--80a1acny.xn--p1ai',
          roots: [ids.ivanPunycode, ids.ivan],
          state: 'open',
        },
      ]);
      // Both contacts are still there, each with its own data; the address reads one way.
      const kept = await contact(bridge, ids.ivanPunycode);
      expect(kept.names).toEqual(['Иван И.']);
      expect(kept.emails).toEqual(['ivan@почта.рф']);
      expect((await contact(bridge, ids.ivan)).names).toEqual(['Иван Иванов']);
      // The address in either form now reaches the contact that held its current form.
      await chat(bridge, 6005, { name: 'Иван', email: 'IVAN@xn--80a1acny.xn--p1ai', number: '2005' });
      expect(await findIds(bridge, visitor('2005'))).toEqual([ids.ivan]);
      expect(await findIds(bridge, email('ivan@почта.рф'))).toEqual([ids.ivan]);
      // A chat that names both (the second contact's visitor, the address) merges them as usual.
      await chat(bridge, 6008, { name: 'Иван Иванов', email: 'ivan@почта.рф', number: '1004' });
      const merged = await contact(bridge, ids.ivan);
      expect(merged.records.sort()).toEqual([ids.ivan, ids.ivanPunycode].sort());
      // The conflict is kept, and says a later merge resolved it.
      const after = await bridge.admin('GET', '/api/v1/identity/conflicts?limit=10');
      expect(after.body.conflicts).toEqual([
        expect.objectContaining({ reason: 'renormalized', state: 'resolved', mergedInto: merged.id }),
      ]);
    });

    it('both forms in one contact (two of its records): one value, held by the record that had the current form', async () => {
      const bridge = await open();
      expect(fixture.views.pavel.contact.emails.sort()).toEqual([
        'pavel@xn--e1afmkfd.xn--p1ai',
        'pavel@пример.рф',
      ]);
      await reindex(bridge);
      const pavel = await contact(bridge, ids.pavel);
      expect(pavel.emails).toEqual(['pavel@пример.рф']);
      expect(pavel.records.sort()).toEqual([ids.pavel, `c_${ids.pavelPunycodeRecord}`].sort());
      expect(pavel.identities.filter((identity) => identity.kind === 'email')).toEqual([
        { kind: 'email', value: 'pavel@пример.рф', provenance: 'visitor' },
      ]);
      await chat(bridge, 6006, { name: 'Павел', email: 'pavel@xn--e1afmkfd.xn--p1ai', number: '2006' });
      expect(await findIds(bridge, visitor('2006'))).toEqual([ids.pavel]);
      // An unmerge still splits the record off whole (its visitor id with it).
      const split = await bridge.admin('POST', `/api/v1/contacts/${ids.pavel}/unmerge`, {
        recordId: `c_${ids.pavelPunycodeRecord}`,
      });
      expect(split.status).toBe(200);
      expect(split.body.split.identities).toEqual([{ kind: 'visitor', value: '1006', channelId: 'site' }]);
    });

    /**
     * The report as expected. Redis's SCAN may answer a key twice (a pass over a keyspace other
     * tests change meanwhile): `records` counts such a record twice, the other counts do not.
     */
    const expectReport = (report: ReindexReport, expected: ReindexReport) => {
      expect(report).toEqual({
        ...expected,
        records: kind === 'memory' ? expected.records : expect.any(Number),
      });
      expect(report.records).toBeGreaterThanOrEqual(expected.records);
    };

    it('a dry run changes nothing and says what a pass would do', async () => {
      const bridge = await open();
      const before = await snapshot(bridge.bridge.store);
      const report = await reindex(bridge, true);
      expectReport(report, { ...EXPECTED, dryRun: true });
      expect(await snapshot(bridge.bridge.store)).toEqual(before);
      // What it said is what a pass then does.
      expectReport(await reindex(bridge), { ...EXPECTED, dryRun: false });
    });

    it('a second pass finds nothing to do and changes nothing; the store says its keys follow this version', async () => {
      const bridge = await open();
      const first = await reindex(bridge);
      expectReport(first, { ...EXPECTED, dryRun: false });
      expect(await bridge.bridge.store.get(NORMALIZATION_KEY)).toBe(String(NORMALIZATION_VERSION));
      const after = await snapshot(bridge.bridge.store);
      const again = await reindex(bridge);
      expectReport(again, {
        ...EXPECTED,
        dryRun: false,
        changed: 0,
        rekeyed: 0,
        searchOnlyPhones: 0,
        extensionsAdded: 0,
        conflicts: 0,
      });
      expect(await snapshot(bridge.bridge.store)).toEqual(after);
    });

    it('safe while the bridge takes webhooks for the same people: nothing lost, every key right', async () => {
      const bridge = await open();
      const chats = Array.from({ length: 12 }, (_, index) =>
        index % 2 === 0
          ? chat(bridge, 7000 + index, { name: 'Анна Смирнова', number: '1001' })
          : chat(bridge, 7000 + index, {
              name: 'Олег Петров',
              number: '1002',
              phone: '+7 495 123-45-67 доб. 101',
            }),
      );
      const [report] = await Promise.all([reindex(bridge), ...chats]);
      expect(report.complete).toBe(true);
      // Whatever the pass left busy, a second pass finishes; then nothing is left to do.
      await reindex(bridge);
      expect((await reindex(bridge)).changed).toBe(0);
      const store = bridge.bridge.store;
      expect(await store.get(key.index({ kind: 'email', value: 'anna@почта.рф' }))).toBe(ids.anna.slice(2));
      expect(await store.get(key.index({ kind: 'email', value: 'anna@xn--80a1acny.xn--p1ai' }))).toBeNull();
      expect(await store.get(key.index({ kind: 'phone', value: '+74951234567' }))).toBeNull();
      expect(await findIds(bridge, email('anna@почта.рф'))).toEqual([ids.anna]);
      for (const [name, id] of [
        ['anna', ids.anna],
        ['oleg', ids.oleg],
      ] as const) {
        const timeline = await bridge.admin('GET', `/api/v1/contacts/${id}/timeline?limit=50`);
        const chatsSeen = (timeline.body.entries as Array<{ type: string }>).filter(
          (entry) => entry.type === 'conversation.started',
        );
        // The one the old bridge recorded, and the six of this test.
        expect(chatsSeen, name).toHaveLength(7);
      }
    });

    it('runs by itself once when a worker starts, in the background', async () => {
      const bridge = await open();
      expect(await bridge.bridge.store.get(NORMALIZATION_KEY)).toBeNull();
      await bridge.bridge.start();
      await expect
        .poll(() => bridge.bridge.store.get(NORMALIZATION_KEY), { timeout: 10_000 })
        .toBe(String(NORMALIZATION_VERSION));
      await chat(bridge, 6007, { name: 'Анна', email: 'anna@почта.рф', number: '2007' });
      expect(await findIds(bridge, email('anna@почта.рф'))).toEqual([ids.anna]);
    });

    it('a stopped pass goes on from where it stopped (its place is kept in the store)', async () => {
      const bridge = await open();
      const store = bridge.bridge.store;
      const controller = new AbortController();
      const stopped = await reindexContacts({
        store,
        identity: bridge.bridge.config.identity,
        pageSize: 2,
        signal: controller.signal,
        onProgress: () => controller.abort(),
      });
      expect(stopped.complete).toBe(false);
      expect(await store.get(REINDEX_PROGRESS_KEY)).not.toBeNull();
      expect(await store.get(NORMALIZATION_KEY)).toBeNull();
      const resumed = await reindexContacts({ store, identity: bridge.bridge.config.identity, resume: true });
      expectReport(resumed, EXPECTED);
      expect(await store.get(REINDEX_PROGRESS_KEY)).toBeNull();
      expect(await store.get(NORMALIZATION_KEY)).toBe(String(NORMALIZATION_VERSION));
    });

    it('once per store: a start on a store whose keys follow this version does not pass over it', async () => {
      const bridge = await open();
      const store = bridge.bridge.store;
      const punycode = key.index({ kind: 'email', value: 'anna@xn--80a1acny.xn--p1ai' });
      const start = () =>
        startReindexOnce({ store, identity: bridge.bridge.config.identity, logger: silent }).finished;
      await store.set(NORMALIZATION_KEY, String(NORMALIZATION_VERSION));
      await start();
      expect(await store.get(punycode)).toBe(ids.anna.slice(2));
      await store.del(NORMALIZATION_KEY);
      await start();
      expect(await store.get(punycode)).toBeNull();
      expect(await store.get(NORMALIZATION_KEY)).toBe(String(NORMALIZATION_VERSION));
    });
  },
);

describe.each(['memory', 'redis'] as const)(
  're-indexing: forms older still, search-only values, values no key fits (%s store)',
  (kind) => {
    const stores: Store[] = [];
    const prefixes: string[] = [];
    afterAll(async () => {
      for (const store of stores) await store.close();
      const url = kind === 'redis' ? await getTestRedisUrl() : undefined;
      if (url) for (const prefix of prefixes) await cleanupPrefix(url, prefix);
    });

    async function engineOn(identity: Partial<Config['identity']>) {
      let store: Store;
      if (kind === 'memory') store = createMemoryStore();
      else {
        const prefix = uniquePrefix('reindex');
        prefixes.push(prefix);
        store = await createRedisStore({ url: await getTestRedisUrl(), keyPrefix: prefix, logger: silent });
      }
      stores.push(store);
      const config = { ...configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity, ...identity };
      const contacts = createContactEngine({
        store,
        identity: config,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger: silent,
      });
      return { store, contacts, identity: config };
    }

    it('an id stored before identifiers were NFC (b947a86) and a search-only e-mail in punycode are found in today’s forms', async () => {
      // Visitor-typed e-mails search-only (identity.mergeOnVisitorTyped without email).
      const { store, contacts, identity } = await engineOn({ mergeOnVisitorTyped: ['person', 'phone'] });
      const jose = 'c_1000000000000000001';
      const vip = 'c_1000000000000000002';
      const at = '2026-11-01T10:00:00.000Z';
      // As that engine keyed them: a person id trimmed, not NFC ("José" typed as e + U+0301); an
      // e-mail lower-cased, its domain as given; a value with a zero-width space accepted.
      const decomposed = 'Jose\u0301';
      const record = (id: string, ids: Array<{ kind: string; value: string }>, emails: string[] = []) =>
        encodeRecord({
          ...newRecord(at),
          id,
          ids,
          emails: emails.map((v) => ({ v, at })),
          names: [{ v: id === jose ? 'José' : 'VIP', at }],
        });
      await store
        .batch()
        .set(
          key.record(jose),
          record(
            jose,
            [
              { kind: 'person', value: decomposed },
              { kind: 'email', value: 'jose@xn--e1afmkfd.xn--p1ai' },
            ],
            ['jose@xn--e1afmkfd.xn--p1ai'],
          ),
        )
        .set(key.index({ kind: 'person', value: decomposed }), '1000000000000000001')
        .sadd(key.search({ kind: 'email', value: 'jose@xn--e1afmkfd.xn--p1ai' }), '1000000000000000001')
        .set(key.record(vip), record(vip, [{ kind: 'person', value: 'vip\u200b42' }]))
        .set(key.index({ kind: 'person', value: 'vip\u200b42' }), '1000000000000000002')
        .exec();
      const report = await reindexContacts({ store, identity });
      expect(report).toMatchObject({
        records: 2,
        changed: 1,
        rekeyed: 2,
        conflicts: 0,
        unkeyable: 1,
        busy: 0,
      });
      const seen = await contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-12-01T10:00:00.000Z',
        idempotencyKey: 'jose-again',
        identifiers: [
          { kind: 'person', value: 'José' },
          { kind: 'email', value: 'jose@пример.рф' },
        ],
      });
      expect(seen.contact.id).toBe(jose);
      expect(seen.created).toBe(false);
      expect(seen.contact.emails).toEqual(['jose@пример.рф']);
      expect((await contacts.find({ email: 'JOSE@XN--E1AFMKFD.XN--P1AI' })).map((found) => found.id)).toEqual(
        [jose],
      );
      expect(
        await store.smembers(key.search({ kind: 'email', value: 'jose@xn--e1afmkfd.xn--p1ai' })),
      ).toEqual([]);
      expect(await store.get(key.index({ kind: 'person', value: decomposed }))).toBeNull();
      // A value no key fits today stays as it was, on its contact.
      expect(await store.get(key.index({ kind: 'person', value: 'vip\u200b42' }))).toBe(
        '1000000000000000002',
      );
      expect((await contacts.get(vip))?.contact.identities).toEqual([
        { kind: 'person', value: 'vip\u200b42', provenance: 'verified' },
      ]);
    });
  },
);

describe('chatbridge contacts reindex', () => {
  const prefix = uniquePrefix('reindex-cli');
  let url: string;
  let file: string;
  let store: Store;

  afterAll(async () => {
    await store?.close();
    if (url) await cleanupPrefix(url, prefix);
  });

  it('--dry-run prints what a pass would do and writes nothing; a pass, then another that finds nothing', async () => {
    url = await getTestRedisUrl();
    store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    await loadOldKeys(store);
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-reindex-'));
    file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      `admin: { token: a-long-enough-admin-token }\nstore: { redis: "${url}", keyPrefix: "${prefix}" }\nlog: { level: silent }\n`,
    );
    const dry = capture();
    expect(await runCli(['contacts', 'reindex', '--dry-run', '--config', file], dry.io)).toBe(0);
    expect(dry.out).toHaveLength(1);
    expect(JSON.parse(dry.out[0]!)).toMatchObject({ dryRun: true, complete: true, changed: 4, conflicts: 1 });
    expect(dry.err.join('\n')).toContain('records read');
    expect(dry.err.join('\n')).toContain('GET /api/v1/identity/conflicts');
    expect(await store.get(NORMALIZATION_KEY)).toBeNull();
    expect(await store.get(key.index({ kind: 'email', value: 'anna@xn--80a1acny.xn--p1ai' }))).not.toBeNull();

    // While another instance holds the pass's lock (a worker's start-up pass), it says so.
    const held = await store.lock([REINDEX_LOCK], { ttlMs: 10_000, waitMs: 0 });
    const refused = capture();
    expect(await runCli(['contacts', 'reindex', '--config', file], refused.io)).toBe(1);
    expect(refused.err.join('\n')).toContain('another instance is re-indexing');
    await held.release();

    const run = capture();
    expect(await runCli(['contacts', 'reindex', '--config', file], run.io)).toBe(0);
    expect(JSON.parse(run.out[0]!)).toMatchObject({
      dryRun: false,
      complete: true,
      changed: 4,
      rekeyed: 2,
      busy: 0,
    });
    expect(await store.get(NORMALIZATION_KEY)).toBe(String(NORMALIZATION_VERSION));
    const again = capture();
    expect(await runCli(['contacts', 'reindex', '--config', file], again.io)).toBe(0);
    expect(JSON.parse(again.out[0]!)).toMatchObject({
      changed: 0,
      rekeyed: 0,
      conflicts: 0,
      searchOnlyPhones: 0,
    });
  });

  it('with no contacts says its progress once, however many pages SCAN walks', async () => {
    // A newcomer's first `contacts reindex` (no contacts yet, on a Redis holding other keys: the
    // bridge's queue, another app) printed "0 records read, 0 changed, 0 found by name now" once
    // per SCAN page: twice for a thousand keys. A page that reads nothing has nothing new to say.
    const empty = uniquePrefix('reindex-cli-empty');
    const neighbour = uniquePrefix('reindex-cli-neighbour');
    const redis = await getTestRedisUrl();
    const other = await createRedisStore({ url: redis, keyPrefix: neighbour, logger: silent });
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-reindex-'));
    const config = join(dir, 'bridge.yaml');
    writeFileSync(
      config,
      `admin: { token: a-long-enough-admin-token }\nstore: { redis: "${redis}", keyPrefix: "${empty}" }\nlog: { level: silent }\n`,
    );
    try {
      const batch = other.batch();
      for (let index = 0; index < 1200; index++) batch.set(`k${index}`, 'x');
      await batch.exec();
      for (const args of [[], ['--dry-run']]) {
        const run = capture();
        expect(await runCli(['contacts', 'reindex', ...args, '--config', config], run.io)).toBe(0);
        expect(JSON.parse(run.out[0]!)).toMatchObject({ records: 0, complete: true });
        expect(run.err.filter((line) => line.includes('records read'))).toHaveLength(1);
      }
    } finally {
      await other.close();
      await cleanupPrefix(redis, neighbour);
      await cleanupPrefix(redis, empty);
    }
  });

  it('refuses an in-memory store config; --help works without one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-reindex-'));
    const memory = join(dir, 'bridge.yaml');
    writeFileSync(memory, 'admin: { token: a-long-enough-admin-token }\nstore: { redis: "" }\n');
    const run = capture();
    expect(await runCli(['contacts', 'reindex', '--config', memory], run.io)).toBe(1);
    expect(run.err[0]).toContain('in-memory store');
    const help = capture();
    expect(await runCli(['contacts', 'reindex', '--help'], help.io)).toBe(0);
    expect(help.out.join('\n')).toContain('--dry-run');
    const group = capture();
    expect(await runCli(['contacts', '--help'], group.io)).toBe(0);
    expect(group.out.join('\n')).toContain('contacts reindex');
  });
});

describe("a worker's start-up pass", () => {
  it('on a Redis holding other keys, says it is in progress only when it has read contacts since it last said so', async () => {
    // A worker's first start on a Redis that other apps (or other bridges) fill logged "contact
    // re-index: in progress" with every count 0 once per 20 SCAN pages (10,000 keys looked at):
    // several lines in a row that said nothing, before the pass found it had no contact at all.
    const empty = uniquePrefix('reindex-start-empty');
    const neighbour = uniquePrefix('reindex-start-neighbour');
    const redis = await getTestRedisUrl();
    const store = await createRedisStore({ url: redis, keyPrefix: empty, logger: silent });
    const other = await createRedisStore({ url: redis, keyPrefix: neighbour, logger: silent });
    try {
      // 15,000 keys of another app: at least 30 SCAN pages of 500, whatever else the test Redis holds.
      for (let start = 0; start < 15_000; start += 5_000) {
        const batch = other.batch();
        for (let index = start; index < start + 5_000; index++) batch.set(`k${index}`, 'x');
        expect(await batch.exec()).toBe(true);
      }
      const { logger, lines } = capturingLogger('info');
      const identity = configSchema.parse({ admin: { token: 'a-long-enough-admin-token' } }).identity;
      await startReindexOnce({ store, identity, logger }).finished;
      const done = lines.find((line) => line.msg === 'contact re-index: done');
      expect(done).toMatchObject({ records: 0, complete: true });
      // The command it names both ways: a newcomer in a checkout (npm start) has no `chatbridge`.
      expect(lines.find((line) => line.msg.startsWith('contact re-index: giving'))?.msg).toContain(
        '`chatbridge contacts reindex --dry-run` (in a checkout: `node bin/chatbridge.js contacts reindex --dry-run`)',
      );
      expect(lines.filter((line) => line.msg === 'contact re-index: in progress')).toEqual([]);
      expect(await store.get(NORMALIZATION_KEY)).toBe(String(NORMALIZATION_VERSION));

      // With contacts among those keys it still says how far it got, each time with more read.
      const at = '2026-11-01T10:00:00.000Z';
      const batch = store.batch().del(NORMALIZATION_KEY);
      for (let index = 0; index < 40; index++) {
        const record = newRecord(at);
        batch.set(key.record(record.id), encodeRecord(record));
      }
      expect(await batch.exec()).toBe(true);
      const again = capturingLogger('info');
      await startReindexOnce({ store, identity, logger: again.logger }).finished;
      expect(again.lines.find((line) => line.msg === 'contact re-index: done')).toMatchObject({
        records: 40,
      });
      const said = again.lines.filter((line) => line.msg === 'contact re-index: in progress');
      // 40 records among 30 pages and more: the 20th page has read some of them.
      expect(said.length).toBeGreaterThan(0);
      const counts = said.map((line) => line.records as number);
      expect(counts[0]).toBeGreaterThan(0);
      for (let index = 1; index < counts.length; index++)
        expect(counts[index]).toBeGreaterThan(counts[index - 1]!);
    } finally {
      await store.close();
      await other.close();
      await cleanupPrefix(redis, neighbour);
      await cleanupPrefix(redis, empty);
    }
  });
});
