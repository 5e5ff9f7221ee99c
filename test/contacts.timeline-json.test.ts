import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { key } from '../src/contacts/keys.js';
import type { ContactService, TimelineOptions } from '../src/contacts/service.js';
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

/** Calls of the text read (timeline()'s) while timelineJson runs: 0 unless it fell back. */
let textReads = 0;
let counting = false;

function engineOn(store: Store): ContactService {
  const read = store.zrevrangeByLex.bind(store);
  store.zrevrangeByLex = (...args) => {
    if (counting) textReads += 1;
    return read(...args);
  };
  return createContactEngine({
    store,
    identity,
    events: createOutboxPublisher(store),
    metrics: new Metrics(),
    logger,
  });
}

/** Every page of a walk with `options`, old path against new, byte for byte; returns the entries seen. */
async function samePages(
  contacts: ContactService,
  id: string,
  options: TimelineOptions,
  fallback = false,
): Promise<number> {
  let before: string | undefined;
  let seen = 0;
  for (let pages = 0; pages < 10_000; pages++) {
    const request = { ...options, ...(before ? { before } : {}) };
    const page = await contacts.timeline(id, request);
    const old = Buffer.from(JSON.stringify(page), 'utf8');
    textReads = 0;
    counting = true;
    const stored = await contacts.timelineJson(id, request).finally(() => {
      counting = false;
    });
    if (!fallback) expect(textReads).toBe(0);
    expect(stored.toString('latin1')).toBe(old.toString('latin1'));
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
  });

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

  it('answers a page holding a member no bridge writes as timeline() does (it reads that page)', async () => {
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
      await samePages(contacts, contact.id, { limit: 50 }, true);
      await samePages(contacts, contact.id, { limit: 1 }, true);
      // The first page holds the odd members: timeline() read it.
      textReads = 0;
      counting = true;
      await contacts.timelineJson(contact.id, { limit: 50 });
      counting = false;
      expect(textReads).toBeGreaterThan(0);
    }
    await store.close();
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
