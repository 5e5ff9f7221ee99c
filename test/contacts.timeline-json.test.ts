import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import {
  createContactEngine,
  TIMELINE_PAGE_BYTES,
  TIMELINE_SCAN_BYTES,
  TIMELINE_SCAN_ENTRIES,
} from '../src/contacts/engine.js';
import { key } from '../src/contacts/keys.js';
import type { ContactService, TimelineOptions, TimelinePage } from '../src/contacts/service.js';
import { timelineMember } from '../src/contacts/timeline.js';
import type { TimelineEntry } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The admin API's timeline page is made from the stored members' bytes (contacts.timelineJson),
 * no longer from JSON.stringify of timeline()'s parsed page. Both must answer the same bytes for
 * every member a bridge writes: entries of observations (timelineMemberWithData), merge and
 * unmerge entries (timelineMember), entries an older version wrote (the fixtures), and hostile
 * values (lone surrogates, U+2028, HTML, `__proto__` and integer-like keys, -0, 1e21, control
 * characters), on every page of a walk, with and without filters, at the byte bound; a member
 * not as a bridge writes it (bytes that are not UTF-8, an entry that is not an object) is
 * answered as timeline() answers it.
 */

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const prefixes: string[] = [];
let redisUrl: string | undefined;
afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

const HOSTILE_STRINGS = [
  '\ud800',
  'a\udfffb',
  '\ud83d\ude00',
  '\udbff\udfff',
  '\ue000\uffff',
  'line\u2028sep\u2029para',
  '</script><script>alert("x")</script>&amp;<!--',
  '\u0000\u0001\u001f\u007f\u0085\u00a0',
  '"\\/\b\f\n\r\t',
  'Добрый день! Где мой заказ?',
  '𝒳 emoji 👩‍👩‍👧 and combining é',
  '',
];
const hostileData = (): Record<string, unknown> => ({
  texts: HOSTILE_STRINGS,
  ...JSON.parse('{"__proto__": {"polluted": true}, "constructor": "c"}'),
  '2': 'two',
  '10': 'ten',
  '1': 'one',
  '-1': 'minus one',
  '4294967295': 'max+',
  numbers: [-0, 0, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, -1.5, 2 ** 53 + 2],
  nested: [[[{ deep: [null, true, false, {}] }]]],
  html: '<b onclick="x()">bold</b>',
});

async function makeStores(): Promise<Array<{ name: string; store: Store }>> {
  redisUrl ??= await getTestRedisUrl();
  const keyPrefix = uniquePrefix('tljson');
  prefixes.push(keyPrefix);
  return [
    { name: 'memory', store: createMemoryStore() },
    { name: 'redis', store: await createRedisStore({ url: redisUrl, keyPrefix, logger }) },
  ];
}

/**
 * The engine's timeline reads while a call runs (readsOf): as text (zrevrangeByLex, which the
 * walk no longer uses) and as bytes (zrevrangeByLexBuffer, one per chunk).
 */
const reads = { text: 0, bytes: 0 };
let counting = false;

async function readsOf(call: () => Promise<unknown>): Promise<{ text: number; bytes: number }> {
  reads.text = 0;
  reads.bytes = 0;
  counting = true;
  try {
    await call();
  } finally {
    counting = false;
  }
  return { ...reads };
}

/** The store each engine of engineOn reads (for the reference walk). */
const storeOf = new WeakMap<ContactService, Store>();

function engineOn(store: Store): ContactService {
  const read = store.zrevrangeByLex.bind(store);
  store.zrevrangeByLex = (...args) => {
    if (counting) reads.text += 1;
    return read(...args);
  };
  const readBytes = store.zrevrangeByLexBuffer.bind(store);
  store.zrevrangeByLexBuffer = (...args) => {
    if (counting) reads.bytes += 1;
    return readBytes(...args);
  };
  const contacts = createContactEngine({
    store,
    identity,
    events: createOutboxPublisher(store),
    metrics: new Metrics(),
    logger,
  });
  storeOf.set(contacts, store);
  return contacts;
}

/**
 * The reference: timeline()'s walk as it was before timeline() and timelineJson shared one walk
 * (engine.ts at 1533d88), over the text read (store.zrevrangeByLex: bytes that are not UTF-8 read
 * as U+FFFD, members compared as JavaScript strings), frozen here so that both public functions
 * are compared with it and not only with each other. `reads` counts its store reads.
 */
const ORACLE_CHUNK = 26;
async function oracleTimeline(
  store: Store,
  recordIds: string[],
  options: TimelineOptions,
  reads = { count: 0 },
): Promise<TimelinePage> {
  let below: string | undefined;
  if (options.before) {
    below = Buffer.from(options.before, 'base64url').toString('utf8');
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\|[A-Za-z0-9_-]{1,64}$/.test(below))
      throw new Error('invalid cursor');
  }
  const limit = options.limit;
  const { channelId, type } = options.filter ?? {};
  const filtered = channelId !== undefined || type !== undefined;
  const chunk = filtered ? ORACLE_CHUNK : Math.min(limit + 1, ORACLE_CHUNK);
  const cursors = recordIds.map((recordId) => ({
    key: key.timeline(recordId),
    below,
    buffer: [] as string[],
    done: false,
  }));
  const fill = async (cursor: (typeof cursors)[number]) => {
    if (cursor.buffer.length > 0 || cursor.done) return;
    reads.count += 1;
    const members = await store.zrevrangeByLex(cursor.key, {
      ...(cursor.below === undefined ? {} : { below: cursor.below }),
      limit: chunk,
    });
    cursor.buffer = members;
    if (members.length > 0) cursor.below = members[members.length - 1];
    if (members.length < chunk) cursor.done = true;
  };
  await Promise.all(cursors.map(fill));
  const entries: TimelineEntry[] = [];
  let bytes = 0;
  let skipped = 0;
  let skippedBytes = 0;
  let last = '';
  const cursorOf = (atId: string) => Buffer.from(atId, 'utf8').toString('base64url');
  for (;;) {
    let next: (typeof cursors)[number] | undefined;
    for (const cursor of cursors) {
      if (cursor.buffer.length > 0 && (!next || cursor.buffer[0]! > next.buffer[0]!)) next = cursor;
    }
    if (!next) return { entries, nextCursor: null };
    const member = next.buffer[0]!;
    const split = member.indexOf('|', 25);
    const json = member.slice(split + 1);
    const size = Buffer.byteLength(json);
    if (entries.length >= limit || (entries.length > 0 && bytes + size > TIMELINE_PAGE_BYTES)) {
      return { entries, nextCursor: cursorOf(last) };
    }
    if (skipped >= TIMELINE_SCAN_ENTRIES || skippedBytes >= TIMELINE_SCAN_BYTES) {
      return { entries, nextCursor: cursorOf(last), partial: true };
    }
    const entry = JSON.parse(json) as TimelineEntry;
    if (
      (channelId === undefined || entry.channelId === channelId) &&
      (type === undefined || entry.type === type)
    ) {
      entries.push(entry);
      bytes += size;
    } else {
      skipped += 1;
      skippedBytes += size;
    }
    last = member.slice(0, split);
    next.buffer.shift();
    await fill(next);
  }
}

/** What a call answers or throws, as text: the same for two calls that behave alike. */
async function outcome(call: () => Promise<unknown>): Promise<string> {
  try {
    const answer = await call();
    return `ok ${Buffer.isBuffer(answer) ? answer.toString('latin1') : Buffer.from(JSON.stringify(answer), 'utf8').toString('latin1')}`;
  } catch (error) {
    // The engine says `invalid cursor` as a ValidationError, the reference as an Error.
    const { message } = error as Error;
    return message === 'invalid cursor'
      ? 'throws invalid cursor'
      : `throws ${(error as Error).name}: ${message}`;
  }
}

/**
 * One page of both public functions against the reference: timeline()'s page deep-equal to it
 * (and the same JSON text), timelineJson's bytes those of JSON.stringify of it; or all three
 * throw the same error. Each reads the chunks the reference reads, once (one walk, as bytes).
 * Returns the reference page (undefined when it throws).
 */
async function sameAsOracle(
  store: Store,
  contacts: ContactService,
  id: string,
  request: TimelineOptions,
): Promise<TimelinePage | undefined> {
  const found = await contacts.get(id);
  if (!found) throw new Error(`no contact ${id}`);
  let page: TimelinePage | undefined;
  const reference = { count: 0 };
  const expected = await outcome(async () => {
    page = await oracleTimeline(store, found.contact.records, request, reference);
    return page;
  });
  for (const call of [() => contacts.timeline(id, request), () => contacts.timelineJson(id, request)]) {
    let answer = '';
    const counted = await readsOf(async () => {
      answer = await outcome(call);
    });
    expect(answer).toBe(expected);
    if (page) expect(counted).toEqual({ text: 0, bytes: reference.count });
  }
  if (page) expect(await contacts.timeline(id, request)).toStrictEqual(page);
  return page;
}

/** Every page of a walk with `options`, against the reference; returns the entries seen. */
async function oraclePages(store: Store, contacts: ContactService, id: string, options: TimelineOptions) {
  let before: string | undefined;
  let seen = 0;
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await sameAsOracle(store, contacts, id, { ...options, ...(before ? { before } : {}) });
    if (!page) return seen;
    seen += page.entries.length;
    if (!page.nextCursor) return seen;
    before = page.nextCursor;
  }
  throw new Error('no end of the timeline');
}

/** Every page of a walk with `options`, old path against new, byte for byte; returns the entries seen. */
async function samePages(contacts: ContactService, id: string, options: TimelineOptions): Promise<number> {
  let before: string | undefined;
  let seen = 0;
  for (let pages = 0; pages < 10_000; pages++) {
    const request = { ...options, ...(before ? { before } : {}) };
    const page = await contacts.timeline(id, request);
    const old = Buffer.from(JSON.stringify(page), 'utf8');
    const stored = await contacts.timelineJson(id, request);
    expect(stored.toString('latin1')).toBe(old.toString('latin1'));
    // Both against the reference walk (not only against each other), and their reads.
    await sameAsOracle(storeOf.get(contacts)!, contacts, id, request);
    seen += page.entries.length;
    if (!page.nextCursor) return seen;
    before = page.nextCursor;
  }
  throw new Error('no end of the timeline');
}

const ALL_OPTIONS: TimelineOptions[] = [
  { limit: 1 },
  { limit: 3 },
  { limit: 50 },
  { limit: 200 },
  { limit: 2, filter: { channelId: 'web' } },
  { limit: 5, filter: { type: 'message.received' } },
  { limit: 50, filter: { channelId: 'app', type: 'message.sent' } },
  { limit: 200, filter: { channelId: 'nowhere' } },
];

describe('timelineJson answers what JSON.stringify(timeline()) answers', () => {
  it('for observed, merged, unmerged, hand-written and generated hostile entries', async () => {
    for (const { name, store } of await makeStores()) {
      const contacts = engineOn(store);
      let sequence = 0;
      const observe = (channelId: string, person: string, timeline: unknown[], extra: object = {}) =>
        contacts.observe({
          channelId,
          vendor: channelId === 'web' ? 'jivochat' : 'livetex',
          at: new Date(Date.UTC(2026, 0, 1, 0, sequence)).toISOString(),
          idempotencyKey: `tljson-${name}-${sequence++}`,
          identifiers: [{ kind: 'person', value: person }],
          timeline: timeline as never,
          ...extra,
        });
      // Two contacts, each with hostile entries, then merged (a merge entry) and split (unmerge).
      for (const [index, person] of ['p-anna', 'p-boris'].entries()) {
        for (let chat = 0; chat < 6; chat++) {
          await observe(chat % 2 ? 'web' : 'app', person, [
            {
              key: `m${chat}`,
              at: new Date(Date.UTC(2026, 0, 1, 1, chat * 2 + index)).toISOString(),
              type: chat % 3 ? 'message.received' : 'message.sent',
              summary: HOSTILE_STRINGS[(chat + index) % HOSTILE_STRINGS.length]!,
              data: hostileData(),
            },
            {
              key: `t${chat}`,
              at: new Date(Date.UTC(2026, 0, 1, 1, chat * 2 + index, 30)).toISOString(),
              type: 'message.received',
              summary: `plain ${chat}`,
              data: { text: `Message ${chat} to ${person}` },
            },
          ]);
        }
      }
      const { contact } = await observe('web', 'p-anna', [], {
        identifiers: [
          { kind: 'person', value: 'p-anna' },
          { kind: 'email', value: 'anna@example.com', provenance: 'verified' },
        ],
      });
      const { contact: merged } = await observe('app', 'p-boris', [], {
        identifiers: [
          { kind: 'person', value: 'p-boris' },
          { kind: 'email', value: 'anna@example.com', provenance: 'verified' },
        ],
      });
      expect(merged.records.length).toBe(2);
      // Entries written as timelineMember writes them, into both records: hostile values, one
      // `at|id|` in both records (compared as text: U+E000 sorts below a surrogate pair in UTF-16
      // and above it in bytes), and entries at the page's byte bound.
      const [first, second] = merged.records as [string, string];
      const batch = store.batch();
      const write = (recordId: string, entry: TimelineEntry) =>
        batch.zadd(key.timeline(recordId), 0, timelineMember(entry));
      const entry = (id: string, at: string, data: unknown, summary = 's'): TimelineEntry => ({
        id,
        at,
        channelId: 'web',
        vendor: 'jivochat',
        type: 'message.received',
        summary,
        data: data as TimelineEntry['data'],
      });
      write(first, entry('tie', '2026-01-02T00:00:00.000Z', { t: '\ue000' }));
      write(second, entry('tie', '2026-01-02T00:00:00.000Z', { t: '\ud83d\ude00' }));
      write(first, entry('tie2', '2026-01-02T00:00:01.000Z', { t: 'a' }));
      write(second, entry('tie2', '2026-01-02T00:00:01.000Z', { t: 'a' }, '\u2028'));
      for (let big = 0; big < 20; big++)
        write(
          big % 2 ? first : second,
          entry(`big${big}`, `2026-01-03T00:00:${String(big).padStart(2, '0')}.000Z`, {
            text: `${HOSTILE_STRINGS[big % HOSTILE_STRINGS.length]}${'я'.repeat(30_000 + big)}`,
          }),
        );
      // Generated values: any UTF-16 code unit in strings, any JSON shape.
      const unit = fc.oneof(
        fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)),
        fc.constantFrom(...HOSTILE_STRINGS),
      );
      const generated = fc.sample(fc.jsonValue({ stringUnit: unit, maxDepth: 4 }), {
        numRuns: 150,
        seed: 12,
      });
      const summaries = fc.sample(fc.string({ unit, maxLength: 30 }), { numRuns: 150, seed: 13 });
      for (const [index, value] of generated.entries())
        write(
          index % 2 ? first : second,
          entry(
            `gen${index}`,
            new Date(Date.UTC(2026, 0, 4, 0, 0, index)).toISOString(),
            value,
            summaries[index],
          ),
        );
      await batch.exec();
      const id = contact.id;
      for (const options of ALL_OPTIONS) await samePages(contacts, id, options);
      expect(await samePages(contacts, id, { limit: 200 })).toBe(24 + 1 + 4 + 20 + 150);
      // Split again: the unmerge entries, then both contacts' pages.
      const split = await contacts.unmerge(id, { recordId: second });
      for (const each of [split.contact.id, split.split.id]) {
        for (const options of ALL_OPTIONS) await samePages(contacts, each, options);
      }
      await store.close();
    }
    // Every page of eight walks (down to one entry a page) of ~200 entries, each page read three
    // ways, on both stores: ~10 s on a loaded two-core machine, which the 20 s default did not
    // always cover at a load average of 14.
  }, 60_000);

  it('for the entries older versions stored (the compatibility fixtures)', async () => {
    const fixture = JSON.parse(
      readFileSync(new URL('./__fixtures__/contacts-before-digit-ids.json', import.meta.url), 'utf8'),
    ) as {
      keys: Array<{ key: string; type: string; value?: string; members?: string[]; values?: string[] }>;
      ids: Record<string, string>;
    };
    const timelines = fixture.keys.filter((each) => each.type === 'zset' && each.key.startsWith('tl:'));
    expect(timelines.length).toBeGreaterThan(0);
    for (const { store } of await makeStores()) {
      const batch = store.batch();
      for (const each of fixture.keys) {
        if (each.type === 'string') batch.set(each.key, each.value!);
        else if (each.type === 'set') batch.sadd(each.key, ...each.members!);
        else if (each.type === 'zset') for (const member of each.members!) batch.zadd(each.key, 0, member);
        else batch.rpush(each.key, ...each.values!);
      }
      await batch.exec();
      const contacts = engineOn(store);
      let seen = 0;
      for (const id of Object.values(fixture.ids))
        for (const options of ALL_OPTIONS) seen += await samePages(contacts, id, options);
      expect(seen).toBeGreaterThan(0);
      await store.close();
    }
  });

  it('answers a page holding a member no bridge writes as timeline() does (one walk of that page)', async () => {
    const { store } = (await makeStores())[1]!;
    const contacts = engineOn(store);
    const { contact } = await contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-01-01T00:00:00.000Z',
      idempotencyKey: 'odd-1',
      identifiers: [{ kind: 'person', value: 'p-odd' }],
      timeline: [
        { key: 'a', at: '2026-01-01T00:00:00.000Z', type: 'message.received', summary: 'ok', data: {} },
      ],
    });
    const recordId = contact.records[0]!;
    const prefix = (id: string) => `2026-01-05T00:00:00.000Z|${id}|`;
    const valid = (id: string) =>
      JSON.stringify({ id, at: '2026-01-05T00:00:00.000Z', channelId: 'web', type: 'note' });
    const odd = [
      // Bytes that are not UTF-8 (timeline() reads U+FFFD for them).
      Buffer.concat([
        Buffer.from(`${prefix('x1')}{"id":"x1","text":"`),
        Buffer.from([0xff, 0xc3]),
        Buffer.from('"}'),
      ]),
      // An entry that is JSON but not an object.
      Buffer.from(`${prefix('x2')}["not", "an", "object"]`),
      // A well-formed one after them.
      Buffer.from(`${prefix('x3')}${valid('x3')}`),
    ];
    for (const member of odd) {
      await store.batch().zadd(key.timeline(recordId), 0, member).exec();
      await samePages(contacts, contact.id, { limit: 50 });
      await samePages(contacts, contact.id, { limit: 1 });
      // The first page holds the odd members: timelineJson read it once, as the reference does
      // (its entries parsed and serialised again, no second walk).
      const reference = { count: 0 };
      await oracleTimeline(store, contact.records, { limit: 50 }, reference);
      expect(await readsOf(() => contacts.timelineJson(contact.id, { limit: 50 }))).toEqual({
        text: 0,
        bytes: reference.count,
      });
    }
    await store.close();
  });
});

describe('timeline() and timelineJson against the reference walk', () => {
  it('members no bridge writes, in two merged records: every page, both stores', async () => {
    for (const { name, store } of await makeStores()) {
      const contacts = engineOn(store);
      const observe = (person: string, sequence: number, email?: string) =>
        contacts.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: new Date(Date.UTC(2026, 0, 1, 0, sequence)).toISOString(),
          idempotencyKey: `oracle-odd-${name}-${sequence}`,
          identifiers: [
            { kind: 'person', value: person },
            ...(email ? [{ kind: 'email' as const, value: email, provenance: 'verified' as const }] : []),
          ],
          timeline: [
            {
              key: `k${sequence}`,
              at: new Date(Date.UTC(2026, 0, 1, 0, sequence)).toISOString(),
              type: 'message.received',
              summary: 'ok',
              data: { n: sequence },
            },
          ],
        });
      await observe('p-odd-a', 0);
      await observe('p-odd-b', 1);
      await observe('p-odd-a', 2, 'odd@example.com');
      const { contact } = await observe('p-odd-b', 3, 'odd@example.com');
      expect(contact.records.length).toBe(2);
      const [first, second] = contact.records as [string, string];
      const at = (minute: number) => new Date(Date.UTC(2026, 0, 5, 0, minute)).toISOString();
      const valid = (id: string, minute: number, extra = '') =>
        `${at(minute)}|${id}|{"id":"${id}","at":"${at(minute)}","channelId":"${minute % 2 ? 'web' : 'app'}","type":"note"${extra}}`;
      const members: Array<[string, Buffer]> = [];
      for (let minute = 0; minute < 40; minute++) {
        const record = minute % 3 ? first : second;
        const id = `o${minute}`;
        const kind = minute % 8;
        let member: Buffer;
        if (kind === 0)
          // Bytes that are not UTF-8: a lone continuation byte (its U+FFFD sorts above it) and 0xff.
          member = Buffer.concat([
            Buffer.from(valid(id, minute).slice(0, -1)),
            Buffer.from(',"t":"'),
            Buffer.from(minute % 16 ? [0x80] : [0xff, 0xc3]),
            Buffer.from('"}'),
          ]);
        else if (kind === 1) member = Buffer.from(`${at(minute)}|${id}|["not", "an", "object"]`);
        else if (kind === 2)
          // One `at|id|` in both records: compared as text.
          member = Buffer.from(
            valid(id, minute, minute % 16 === 2 ? ',"t":"\ue000"' : ',"t":"\ud83d\ude00"'),
          );
        else if (kind === 3) member = Buffer.from(valid(id, minute, ',"t":"é"'));
        else member = Buffer.from(valid(id, minute));
        members.push([record, member]);
        if (kind === 2)
          members.push([record === first ? second : first, Buffer.from(valid(id, minute, ',"t":"\ue000"'))]);
      }
      // One `at|id|` in both records, a lone continuation byte in one (its U+FFFD sorts above
      // the other's é as text, below it as bytes).
      const prefix = `${at(45)}|o45|{"id":"o45","t":"`;
      members.push([first, Buffer.concat([Buffer.from(prefix), Buffer.from([0x80]), Buffer.from('"}')])]);
      members.push([second, Buffer.from(`${prefix}é"}`)]);
      // Then 30 members in one record, each with a lone continuation byte: whichever is last of a
      // chunk, its text (U+FFFD above the byte) is the next read's bound, which reads it again.
      for (let minute = 60; minute < 90; minute++)
        members.push([
          second,
          Buffer.concat([
            Buffer.from(`${at(minute)}|o${minute}|{"t":"`),
            Buffer.from([0x80]),
            Buffer.from('"}'),
          ]),
        ]);
      const batch = store.batch();
      for (const [record, member] of members) batch.zadd(key.timeline(record), 0, member);
      await batch.exec();
      const total = 4 + 1 + 40 + 5 + 2 + 30;
      for (const options of [...ALL_OPTIONS, { limit: 2 }, { limit: 4, filter: { channelId: 'app' } }])
        await oraclePages(store, contacts, contact.id, options);
      // Read as Redis keeps them (bytes), a member last of a chunk is taken twice; the memory
      // store keeps text (U+FFFD), so once.
      expect(await oraclePages(store, contacts, contact.id, { limit: 200 })).toBe(
        name === 'redis' ? total + 1 : total,
      );
      // A non-ASCII `at|id` (its cursor is refused), one whose `at` is not ASCII (string and byte
      // offsets of its `|` differ), and last a member with no `|` after its time (not JSON).
      for (const member of [
        `${at(50)}|é${name}|{"id":"é"}`,
        `é${at(51).slice(1)}|x51|{"id":"x51"}`,
        `${at(52)}-no-bar-after-the-time-at-all`,
      ]) {
        await store.batch().zadd(key.timeline(first), 0, member).exec();
        for (const options of [
          { limit: 1 },
          { limit: 3 },
          { limit: 50 },
          { limit: 2, filter: { channelId: 'web' } },
        ])
          await oraclePages(store, contacts, contact.id, options);
      }
      await store.close();
    }
  });

  it('at the filter scan bounds (entries and bytes): partial pages and their cursors', async () => {
    for (const { name, store } of await makeStores()) {
      const contacts = engineOn(store);
      const { contact } = await contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-01-01T00:00:00.000Z',
        idempotencyKey: `oracle-scan-${name}`,
        identifiers: [{ kind: 'person', value: 'p-scan' }],
        timeline: [{ key: 'a', at: '2026-01-01T00:00:00.000Z', type: 'note', summary: 'ok', data: {} }],
      });
      const recordId = contact.records[0]!;
      const batch = store.batch();
      const write = (index: number, channelId: string, text: string) => {
        const at = new Date(Date.UTC(2026, 0, 2) + index * 1000).toISOString();
        batch.zadd(
          key.timeline(recordId),
          0,
          timelineMember({
            id: `s${index}`,
            at,
            channelId,
            vendor: 'jivochat',
            type: 'note',
            summary: 's',
            data: { text },
          }),
        );
      };
      // Past TIMELINE_SCAN_ENTRIES small ones that do not match, then past TIMELINE_SCAN_BYTES large ones.
      for (let index = 0; index < TIMELINE_SCAN_ENTRIES + 60; index++)
        write(index, index % 97 ? 'app' : 'web', 'x');
      for (let index = 0; index < 75; index++)
        write(TIMELINE_SCAN_ENTRIES + 100 + index, index % 31 ? 'app' : 'web', 'я'.repeat(30_000 + index));
      await batch.exec();
      for (const options of [
        { limit: 5, filter: { channelId: 'web' } },
        { limit: 50, filter: { channelId: 'nowhere' } },
        { limit: 200 },
      ])
        await oraclePages(store, contacts, contact.id, options);
      await store.close();
    }
  });
});

describe('GET /api/v1/contacts/:id/timeline', () => {
  it('answers timelineJson as JSON: the bytes and headers Koa gave the parsed page', async () => {
    const { startTestBridge } = await import('./support/harness.js');
    const bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    try {
      const { contacts } = bridge.bridge.context;
      let contactId = '';
      for (let index = 0; index < 5; index++) {
        const { contact } = await contacts.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: '2026-11-01T10:00:00.000Z',
          idempotencyKey: `chat-${index}`,
          identifiers: [{ kind: 'visitor', value: 'v1' }],
          timeline: [
            {
              at: new Date(Date.UTC(2026, 10, 1, 10, index)).toISOString(),
              type: index % 2 ? 'message.received' : 'message.sent',
              summary: HOSTILE_STRINGS[index]!,
              key: `chat-${index}`,
              data: hostileData(),
            },
          ],
        });
        contactId = contact.id;
      }
      for (const [query, options] of [
        ['limit=2', { limit: 2 }],
        ['limit=50&type=message.sent', { limit: 50, filter: { type: 'message.sent' } }],
      ] as const) {
        const url = `${bridge.url}/api/v1/contacts/${contactId}/timeline?${query}`;
        const headers = { authorization: `Bearer ${bridge.adminToken}` };
        const answer = await fetch(url, { headers });
        expect(answer.status).toBe(200);
        expect(answer.headers.get('content-type')).toBe('application/json; charset=utf-8');
        const bytes = Buffer.from(await answer.arrayBuffer());
        const expected = Buffer.from(JSON.stringify(await contacts.timeline(contactId, options)), 'utf8');
        expect(bytes.equals(expected)).toBe(true);
        expect(answer.headers.get('content-length')).toBe(String(expected.length));
        const head = await fetch(url, { method: 'HEAD', headers });
        expect(head.status).toBe(200);
        expect(head.headers.get('content-type')).toBe('application/json; charset=utf-8');
        expect(head.headers.get('content-length')).toBe(String(expected.length));
      }
    } finally {
      await bridge.close();
    }
  });
});
