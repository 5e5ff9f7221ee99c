import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { isRecordId, key, publicId, storedId } from '../src/contacts/keys.js';
import { decideMerge, type MergeSituation, mergeWrites, refusalWrites } from '../src/contacts/merge.js';
import { normalizePhone } from '../src/contacts/normalize.js';
import { checkObservation } from '../src/contacts/observation.js';
import {
  decodeRecord,
  encodeRecord,
  mergedView,
  newRecord,
  newRecordId,
  type StoredRecord,
} from '../src/contacts/record.js';
import {
  entryId,
  eventId,
  isoOf,
  nameWords,
  timelineMember,
  timelineMemberWithData,
} from '../src/contacts/timeline.js';
import { type Identifier, type Observation, observationSchema } from '../src/contacts/types.js';
import { planIdentifierSplit, planRecordUnmerge } from '../src/contacts/unmerge.js';
import { AppError, ValidationError } from '../src/errors.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The engine's pure parts (issue 12 item 2), without a store: the record's stored form, the
 * merged view, the key layout, the timeline helpers, the merge policy and unmerge planning. Then the lock-free write path's
 * guarantees with a store: concurrent writers of one contact lose nothing.
 */

// A record as the engine stored it before the shorter forms (times equal to createdAt as 0,
// e-mail and phone identifiers as references into e/p, every pair and stat written out in full).
// It must still read; re-encoded, it takes the shorter forms (STORED_NOW).
const STORED =
  '{"c":"2026-11-01T12:00:00.000Z","u":"2026-11-02T08:00:00.000Z","n":[["Anna Petrova",0]],' +
  '"e":[["anna@example.com",0]],"p":[["+79161234567","2026-11-02T08:00:00.000Z"]],' +
  '"i":[["person","p-1"],["@e",0],["@p",0],["visitor","v9","web"]],"l":["VIP"],' +
  '"a":{"city":{"value":"Kazan","channelId":"web","at":"2026-11-01T12:00:00.000Z"}},' +
  '"ch":{"web":["jivochat",0,"2026-11-02T08:00:00.000Z",2,1]}}';
const STORED_NOW =
  '{"c":"2026-11-01T12:00:00.000Z","u":"2026-11-02T08:00:00.000Z","n":["Anna Petrova"],' +
  '"e":["anna@example.com"],"p":[["+79161234567","2026-11-02T08:00:00.000Z"]],' +
  '"i":[["person","p-1"],"@e","@p",["visitor","v9","web"]],"l":["VIP"],' +
  '"a":{"city":{"value":"Kazan","channelId":"web","at":"2026-11-01T12:00:00.000Z"}},' +
  '"ch":{"web":["jivochat",0,"2026-11-02T08:00:00.000Z",2,1]}}';

describe('record codec', () => {
  it('reads a record stored in the older compact form and writes it in the shorter one', () => {
    const record = decodeRecord('c_1', STORED);
    expect(record.id).toBe('c_1');
    expect(record.names).toEqual([{ v: 'Anna Petrova', at: '2026-11-01T12:00:00.000Z' }]);
    expect(record.ids).toEqual([
      { kind: 'person', value: 'p-1' },
      { kind: 'email', value: 'anna@example.com' },
      { kind: 'phone', value: '+79161234567' },
      { kind: 'visitor', value: 'v9', channelId: 'web' },
    ]);
    expect(record.channels.web).toEqual({
      vendor: 'jivochat',
      firstSeen: '2026-11-01T12:00:00.000Z',
      lastSeen: '2026-11-02T08:00:00.000Z',
      observations: 2,
      conversations: 1,
    });
    expect(encodeRecord(record)).toBe(STORED_NOW);
    expect(decodeRecord('c_1', STORED_NOW)).toEqual(record);
    expect(encodeRecord(decodeRecord('c_1', STORED_NOW))).toBe(STORED_NOW);
  });

  it('writes the common case shortest and every other case in full, and reads both', () => {
    const at = '2026-11-01T12:00:00.000Z';
    const later = '2026-11-02T08:00:00.000Z';
    const record = newRecord(at);
    record.names.push({ v: 'Anna', at }, { v: 'Anya', at: later });
    record.emails.push({ v: 'a@x.org', at, ok: true }, { v: 'b@x.org', at });
    record.phones.push({ v: '+79160000001', at });
    record.ids.push(
      { kind: 'email', value: 'b@x.org' },
      { kind: 'email', value: 'a@x.org' },
      { kind: 'phone', value: '+79160000001' },
      { kind: 'email', value: 'c@x.org' },
    );
    record.channels.web = {
      vendor: 'jivochat',
      firstSeen: at,
      lastSeen: at,
      observations: 1,
      conversations: 0,
    };
    record.channels.tg = {
      vendor: 'livetex',
      firstSeen: at,
      lastSeen: at,
      observations: 3,
      conversations: 0,
    };
    record.channels.site = {
      vendor: 'chatvisor',
      firstSeen: at,
      lastSeen: later,
      observations: 1,
      conversations: 0,
    };
    const text = encodeRecord(record);
    expect(JSON.parse(text)).toEqual({
      c: at,
      n: ['Anna', ['Anya', later]],
      e: [['a@x.org', 0, 1], 'b@x.org'],
      p: ['+79160000001'],
      i: [['@e', 1], '@e', '@p', ['email', 'c@x.org']],
      ch: { web: ['jivochat'], tg: ['livetex', 0, 0, 3], site: ['chatvisor', 0, later] },
    });
    expect(decodeRecord(record.id, text)).toEqual(record);
    // Each shorter form against the older, full one: both read the same.
    const full =
      '{"c":"2026-11-01T12:00:00.000Z","n":[["Anna",0],["Anya","2026-11-02T08:00:00.000Z"]],' +
      '"e":[["a@x.org",0,1],["b@x.org",0]],"p":[["+79160000001",0]],' +
      '"i":[["@e",1],["@e",0],["@p",0],["email","c@x.org"]],' +
      '"ch":{"web":["jivochat",0,0,1,0],"tg":["livetex",0,0,3,0],"site":["chatvisor",0,"2026-11-02T08:00:00.000Z",1,0]}}';
    expect(decodeRecord(record.id, full)).toEqual(record);
  });

  it('keeps vendor attribute names such as __proto__ as data', () => {
    const record = decodeRecord(
      'c_2',
      '{"c":"2026-11-01T12:00:00.000Z","a":{"__proto__":{"value":"x","channelId":"web","at":"2026-11-01T12:00:00.000Z"}}}',
    );
    expect(Object.keys(record.attrs)).toEqual(['__proto__']);
  });

  it('a new record has a random id and no data', () => {
    const a = newRecord('2026-11-01T12:00:00.000Z');
    const b = newRecord('2026-11-01T12:00:00.000Z');
    expect(a.id).toMatch(/^c_[1-9][0-9]{17,18}$/);
    expect(a.id).not.toBe(b.id);
    expect(encodeRecord(a)).toBe('{"c":"2026-11-01T12:00:00.000Z"}');
  });
});

describe('responsible agent statements (mixed versions)', () => {
  const T = (minute: number) => `2026-11-01T12:${String(minute).padStart(2, '0')}:00.000Z`;
  const C = T(0);

  it("keeps each channel's newest statement; g stays the newest in the shape older versions read", () => {
    const record = newRecord(C);
    record.agents = [
      { email: 'dmitry@store.example', at: T(1), c: 'cv' },
      { at: T(2), c: 'site' },
    ];
    const text = encodeRecord(record);
    const stored = JSON.parse(text);
    // An older version reads g alone, by its rule (the newest statement, an unassignment: nobody).
    expect(stored.g).toEqual({ at: T(2) });
    expect(stored.gc).toBe('site');
    expect(stored.go).toEqual([{ email: 'dmitry@store.example', at: T(1), c: 'cv' }]);
    // Read back: the same statements (the newest first).
    expect(decodeRecord(record.id, text).agents).toEqual([record.agents[1], record.agents[0]]);
    expect(mergedView(record.id, [record]).responsibleAgent).toEqual({ email: 'dmitry@store.example' });
    // One channel's agent: only its channel is added to the record (gc), and no `c` leaks into g.
    const one = newRecord(C);
    one.agents = [{ email: 'oleg@shop.example', name: 'Oleg', at: T(3), c: 'site' }];
    expect(encodeRecord(one)).toBe(
      `{"c":"${C}","g":{"email":"oleg@shop.example","name":"Oleg","at":"${T(3)}"},"gc":"site"}`,
    );
  });

  it("reads what an older version stored: its agent and its unassignment are any channel's", () => {
    // Written before statements were kept per channel (no gc, no go).
    const agent = decodeRecord('c_1', `{"c":"${C}","g":{"email":"oleg@shop.example","at":"${T(1)}"}}`);
    expect(agent.agents).toEqual([{ email: 'oleg@shop.example', at: T(1) }]);
    expect(mergedView('c_1', [agent]).responsibleAgent).toEqual({ email: 'oleg@shop.example' });
    // Any channel's newer unassignment clears it, as it did; an older one does not.
    const cleared = newRecord(C);
    cleared.agents = [{ at: T(2), c: 'site' }];
    expect(mergedView('c_1', [agent, cleared]).responsibleAgent).toBeNull();
    cleared.agents = [{ at: T(0), c: 'site' }];
    expect(mergedView('c_1', [agent, cleared]).responsibleAgent).toEqual({ email: 'oleg@shop.example' });
    // Its unassignment clears every older agent of the group, whatever the channel.
    const unassigned = decodeRecord('c_2', `{"c":"${C}","g":{"at":"${T(5)}"}}`);
    const named = newRecord(C);
    named.agents = [{ email: 'dmitry@store.example', at: T(4), c: 'cv' }];
    expect(mergedView('c_2', [unassigned, named]).responsibleAgent).toBeNull();
    named.agents = [{ email: 'dmitry@store.example', at: T(6), c: 'cv' }];
    expect(mergedView('c_2', [unassigned, named]).responsibleAgent).toEqual({
      email: 'dmitry@store.example',
    });
  });
});

describe('merged view', () => {
  it('unites a root and its members: newest values first, channel counts summed, root first', () => {
    const root = decodeRecord('c_root', STORED);
    const member = newRecord('2026-11-03T00:00:00.000Z');
    member.names.push({ v: 'Anya', at: '2026-11-03T00:00:00.000Z' });
    member.channels.web = {
      vendor: 'jivochat',
      firstSeen: '2026-10-01T00:00:00.000Z',
      lastSeen: '2026-11-03T00:00:00.000Z',
      observations: 1,
      conversations: 0,
    };
    const contact = mergedView('c_root', [member, root]);
    expect(contact.id).toBe('c_root');
    expect(contact.records).toEqual(['c_root', member.id]);
    expect(contact.names).toEqual(['Anya', 'Anna Petrova']);
    expect(contact.name).toBe('Anya');
    expect(contact.channels).toEqual([
      {
        channelId: 'web',
        vendor: 'jivochat',
        firstSeen: '2026-10-01T00:00:00.000Z',
        lastSeen: '2026-11-03T00:00:00.000Z',
        observations: 3,
        conversations: 1,
      },
    ]);
    expect(contact.createdAt).toBe('2026-11-01T12:00:00.000Z');
  });
});

describe('key layout', () => {
  it('names every key as stored data expects', () => {
    // An id made before record ids were digits (c_ + 20 hex): its keys are what they were.
    const old = 'c_8cd87099e81c222c22b3';
    expect(key.record(old)).toBe(`rec:${old}`);
    expect(key.root(old)).toBe(`root:${old}`);
    expect(key.members(old)).toBe(`members:${old}`);
    expect(key.apart(old)).toBe(`apart:${old}`);
    expect(key.timeline(old)).toBe(`tl:${old}`);
    // A c_<digits> id is stored as its digits, in keys as in values.
    const id = 'c_4611686018427387904';
    expect(key.record(id)).toBe('rec:4611686018427387904');
    expect(key.root(id)).toBe('root:4611686018427387904');
    expect(key.members(id)).toBe('members:4611686018427387904');
    expect(key.apart(id)).toBe('apart:4611686018427387904');
    expect(key.timeline(id)).toBe('tl:4611686018427387904');
    expect(key.index({ kind: 'email', value: 'a@b.c' })).toBe('idx:email:*:a@b.c');
    expect(key.index({ kind: 'visitor', value: 'v1', channelId: 'web' })).toBe('idx:visitor:web:v1');
    expect(key.search({ kind: 'email', value: 'a@b.c' })).toBe('sidx:email:a@b.c');
    expect(key.name('anna')).toBe('sidx:name:anna');
    expect(key.dedupe('web', 'chat-1')).toMatch(/^dedupe:[A-Za-z0-9_-]{43}$/);
    expect(key.dedupe('web', 'chat-1')).not.toBe(key.dedupe('web2', 'chat-1'));
    // The same names as before the one-shot digest: repeated deliveries of stored keys still match.
    const before = createHash('sha256').update('web').update('\n').update('chat-1').digest('base64url');
    expect(key.dedupe('web', 'chat-1')).toBe(`dedupe:${before}`);
  });

  it('stores new ids as their digits and every other id as it is, and reads each back', () => {
    const cases: Array<[id: string, stored: string]> = [
      ['c_100000000000000000', '100000000000000000'],
      ['c_9223372036854775807', '9223372036854775807'],
      ['c_1', '1'],
      // Old ids: 20 hex characters, which may all be digits, or start with 0.
      ['c_8cd87099e81c222c22b3', 'c_8cd87099e81c222c22b3'],
      ['c_27182818284590452353', 'c_27182818284590452353'],
      ['c_00000000000000000042', 'c_00000000000000000042'],
      // Anything else a caller may name, and the decoy.
      ['c_0', 'c_0'],
      ['c_0123', 'c_0123'],
      ['c_12a', 'c_12a'],
      ['c_decoy_never_written', 'c_decoy_never_written'],
    ];
    for (const [id, stored] of cases) {
      expect(storedId(id)).toBe(stored);
      expect(publicId(stored)).toBe(id);
    }
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.stringMatching(/^(c_)?[0-9]{1,21}$/)), (text) => {
        if (isRecordId(text)) {
          // Any id a caller may name is stored as a value that reads back as that id, and no
          // other id is stored as the same value.
          expect(publicId(storedId(text))).toBe(text);
        } else {
          // Only digits alone are no id: they are how c_<digits> is stored.
          expect(text).toMatch(/^[0-9]+$/);
        }
      }),
    );
  });

  it('makes ids whose digits Redis keeps as a 64-bit integer', () => {
    for (let i = 0; i < 2000; i++) {
      const id = newRecordId();
      expect(id).toMatch(/^c_[1-9][0-9]{17,18}$/);
      const digits = BigInt(storedId(id));
      expect(digits >= 10n ** 17n && digits < 2n ** 63n).toBe(true);
    }
  });
});

describe('phone normalisation (cached)', () => {
  it('answers the same the second time, per default country, for phones and non-phones alike', () => {
    const cases: Array<[string, string, string | null]> = [
      ['8 916 123-45-67', 'RU', '+79161234567'],
      ['8 916 123-45-67', 'US', null],
      ['(201) 555-0123', 'US', '+12015550123'],
      // Read in RU it would be +7 201…, a number Russia does not have: a domestic form of elsewhere.
      ['(201) 555-0123', 'RU', null],
      ['+1 (201) 555-0123', 'RU', '+12015550123'],
      ['12', 'RU', null],
      [`+7 916 123 45 67${' '.repeat(80)}0`, 'RU', null],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [value, country, expected] of cases) expect(normalizePhone(value, country)).toBe(expected);
    }
  });
});

describe('timeline helpers', () => {
  it('name words are folded and split; entry and event ids are stable, event ids salted', () => {
    expect(nameWords("Анна-Мария O'Néil")).toEqual(['анна', 'мария', 'o', 'neil']);
    expect(entryId('web', 'k', 'e1')).toBe(entryId('web', 'k', 'e1'));
    expect(entryId('web', 'k', 'e1')).not.toBe(entryId('web', 'k', 'e2'));
    expect(eventId('salt-a', 'web', 'k', 'contact')).toMatch(/^evt_[A-Za-z0-9_-]{22}$/);
    expect(eventId('salt-a', 'web', 'k', 'contact')).not.toBe(eventId('salt-b', 'web', 'k', 'contact'));
    expect(isoOf('2026-11-01T15:00:00+03:00')).toBe('2026-11-01T12:00:00.000Z');
    expect(() => isoOf('yesterday')).toThrow(ValidationError);
  });

  it('a timeline member sorts by time, then id, and carries the entry', () => {
    const entry = {
      id: 'e1',
      at: '2026-11-01T12:00:00.000Z',
      channelId: 'web',
      vendor: 'jivochat',
      type: 'conversation.started',
      summary: 'hi',
      data: {},
    };
    const member = timelineMember(entry);
    expect(member.startsWith('2026-11-01T12:00:00.000Z|e1|')).toBe(true);
    expect(JSON.parse(member.slice(member.indexOf('|', 25) + 1))).toEqual(entry);
  });

  it('a member made from data already serialised is the same text', () => {
    fc.assert(
      fc.property(
        fc.record({
          id: fc.string(),
          at: fc.string(),
          channelId: fc.string(),
          vendor: fc.string(),
          type: fc.string({ unit: 'binary' }),
          summary: fc.string({ unit: 'grapheme' }),
          data: fc.dictionary(fc.string(), fc.jsonValue()),
        }),
        (entry) => {
          const { data, ...rest } = entry;
          expect(timelineMemberWithData(rest, JSON.stringify(data))).toBe(timelineMember(entry));
        },
      ),
    );
  });
});

/** A record with a given id and creation time (ids and times decide survivors). */
function record(id: string, createdAt: string, extra: Partial<StoredRecord> = {}): StoredRecord {
  return { ...newRecord(createdAt), id, ...extra };
}

describe('merge policy', () => {
  const person: Identifier = { kind: 'person', value: 'p-1', provenance: 'verified' };
  const typedEmail: Identifier = { kind: 'email', value: 'a@b.c', provenance: 'visitor' };
  const verifiedEmail: Identifier = { ...typedEmail, provenance: 'verified' };
  /** Two groups: c_new (holds the person id, the target) and c_old + its member c_m (holds the e-mail). */
  function situation(email: Identifier): MergeSituation {
    const records = new Map([
      ['c_new', record('c_new', '2026-11-02T00:00:00.000Z')],
      [
        'c_old',
        record('c_old', '2026-11-01T00:00:00.000Z', {
          merges: [{ at: '2026-11-01T01:00:00.000Z', records: ['c_m'], via: person }],
        }),
      ],
      ['c_m', record('c_m', '2026-10-01T00:00:00.000Z')],
    ]);
    return {
      roots: ['c_new', 'c_old'],
      members: new Map([
        ['c_new', []],
        ['c_old', ['c_m']],
      ]),
      records,
      recordRoots: new Map([
        ['c_new', 'c_new'],
        ['c_m', 'c_old'],
      ]),
      resolving: [person, email],
      holders: ['c_new', 'c_m'],
      targetRoot: 'c_new',
    };
  }
  const rules = { maxMergeSize: 10, apart: new Map<string, string[]>() };

  it('the oldest root survives; the merge is via the identifier that reached the other group', () => {
    const decision = decideMerge(situation(verifiedEmail), rules);
    expect(decision).toEqual({
      outcome: 'merged',
      survivor: 'c_old',
      via: verifiedEmail,
      typed: false,
      absorbed: ['c_new'],
    });
  });

  it('a group reached only through a visitor-typed value makes the merge typed', () => {
    expect(decideMerge(situation(typedEmail), rules)).toMatchObject({ outcome: 'merged', typed: true });
  });

  it('refuses groups larger than maxMergeSize together, and records kept apart by an unmerge', () => {
    expect(decideMerge(situation(typedEmail), { ...rules, maxMergeSize: 2 })).toEqual({
      outcome: 'refused',
      reason: 'too_large',
      via: typedEmail,
    });
    const apart = new Map([['c_m', ['c_new']]]);
    expect(decideMerge(situation(typedEmail), { ...rules, apart })).toMatchObject({
      outcome: 'refused',
      reason: 'unmerged_before',
    });
    // Kept apart from a record of its own group (or of no group here) is no reason to refuse.
    const within = new Map([['c_m', ['c_old', 'c_elsewhere']]]);
    expect(decideMerge(situation(typedEmail), { ...rules, apart: within }).outcome).toBe('merged');
  });

  it('writes: records point at the survivor, member sets move, merge logs move with a new entry', () => {
    const given = situation(typedEmail);
    const decision = decideMerge(given, rules);
    if (decision.outcome !== 'merged') throw new Error('expected a merge');
    const newcomer = given.records.get('c_new')!;
    newcomer.merges.push({ at: '2026-11-02T01:00:00.000Z', records: ['c_x'], via: person });
    const writes = mergeWrites(decision, given, '2026-11-03T00:00:00.000Z');
    const survivor = given.records.get('c_old')!;
    expect(survivor.merges).toEqual([
      { at: '2026-11-01T01:00:00.000Z', records: ['c_m'], via: person },
      { at: '2026-11-02T01:00:00.000Z', records: ['c_x'], via: person },
      { at: '2026-11-03T00:00:00.000Z', records: ['c_new'], via: typedEmail, typed: true },
    ]);
    expect(newcomer.merges).toEqual([]);
    expect(writes).toEqual([
      { op: 'set', key: 'root:c_new', value: 'c_old' },
      { op: 'sadd', key: 'members:c_old', members: ['c_new'] },
      { op: 'del', key: 'members:c_new' },
      { op: 'set', key: 'rec:c_new', value: encodeRecord(newcomer) },
      { op: 'set', key: 'rec:c_old', value: encodeRecord(survivor) },
    ]);
    expect(refusalWrites('too_large', ['c_new', 'c_old'], typedEmail, 'T', 'web')).toEqual([
      {
        op: 'rpush',
        key: 'identity:conflicts',
        values: [
          JSON.stringify({
            at: 'T',
            reason: 'too_large',
            roots: ['c_new', 'c_old'],
            via: typedEmail,
            channelId: 'web',
          }),
        ],
      },
      { op: 'ltrim', key: 'identity:conflicts', start: -10_000, stop: -1 },
    ]);
  });
});

describe('unmerge planning', () => {
  const via: Identifier = { kind: 'email', value: 'a@b.c' };
  /** c_r absorbed c_a with its member c_b in one merge, then c_c in another. */
  function group() {
    const root = record('c_r', '2026-11-01T00:00:00.000Z', {
      merges: [
        { at: '2026-11-02T00:00:00.000Z', records: ['c_a', 'c_b'], via },
        { at: '2026-11-03T00:00:00.000Z', records: ['c_c'], via },
      ],
    });
    const records = new Map(
      [root, ...['c_a', 'c_b', 'c_c'].map((id) => record(id, '2026-11-01T00:00:00.000Z'))].map((r) => [
        r.id,
        r,
      ]),
    );
    return { members: ['c_c', 'c_b', 'c_a'], records };
  }

  it('a merged record leaves with the group it joined with, kept apart from the rest', () => {
    const { members, records } = group();
    const plan = planRecordUnmerge({
      rootId: 'c_r',
      recordId: 'c_b',
      members,
      records,
      at: '2026-11-04T00:00:00.000Z',
      entryId: 'unmerge_1',
    });
    expect(plan.expectRecords).toEqual(['c_r']);
    expect(plan.contact.records).toEqual(['c_r', 'c_c']);
    expect(plan.split.id).toBe('c_a');
    expect(plan.split.records).toEqual(['c_a', 'c_b']);
    expect(records.get('c_r')!.merges.map((merge) => merge.records)).toEqual([['c_c']]);
    const writes = plan.writes.filter((write) => write.op !== 'zadd');
    expect(writes).toEqual([
      { op: 'srem', key: 'members:c_r', members: ['c_a', 'c_b'] },
      { op: 'del', key: 'root:c_a' },
      { op: 'set', key: 'root:c_b', value: 'c_a' },
      { op: 'sadd', key: 'members:c_a', members: ['c_b'] },
      { op: 'sadd', key: 'apart:c_a', members: ['c_r', 'c_c'] },
      { op: 'sadd', key: 'apart:c_b', members: ['c_r', 'c_c'] },
      { op: 'sadd', key: 'apart:c_r', members: ['c_a', 'c_b'] },
      { op: 'sadd', key: 'apart:c_c', members: ['c_a', 'c_b'] },
      { op: 'set', key: 'rec:c_r', value: encodeRecord(records.get('c_r')!) },
    ]);
    const entry = plan.writes.find((write) => write.op === 'zadd');
    expect(entry).toMatchObject({ key: 'tl:c_r' });
    expect(plan.events.map((event) => [event.event.id, event.event.type, event.orderingKey])).toEqual([
      ['evt_unmerge_1', 'contact.updated', 'c_r'],
      ['evt_unmerge_1_split', 'contact.created', 'c_a'],
    ]);
  });

  it('the merges the leaving group had made leave with it, onto its new root', () => {
    // c_a had absorbed c_b before c_r absorbed c_a's group: c_r's log holds both merges.
    const root = record('c_r', '2026-11-01T00:00:00.000Z', {
      merges: [
        { at: '2026-11-02T00:00:00.000Z', records: ['c_b'], via },
        { at: '2026-11-03T00:00:00.000Z', records: ['c_c'], via },
        { at: '2026-11-04T00:00:00.000Z', records: ['c_a', 'c_b'], via },
      ],
    });
    const records = new Map(
      [root, ...['c_a', 'c_b', 'c_c'].map((id) => record(id, '2026-11-01T00:00:00.000Z'))].map((r) => [
        r.id,
        r,
      ]),
    );
    const plan = planRecordUnmerge({
      rootId: 'c_r',
      recordId: 'c_a',
      members: ['c_a', 'c_b', 'c_c'],
      records,
      at: '2026-11-05T00:00:00.000Z',
      entryId: 'unmerge_2',
    });
    expect(plan.contact.merges.map((merge) => merge.recordId)).toEqual(['c_c']);
    expect(plan.split.records).toEqual(['c_a', 'c_b']);
    expect(plan.split.merges.map((merge) => merge.recordId)).toEqual(['c_b']);
    // The new root's record is written, so it must be as read.
    expect(plan.expectRecords).toEqual(['c_r', 'c_a']);
    expect(plan.writes).toContainEqual({
      op: 'set',
      key: 'rec:c_a',
      value: encodeRecord(records.get('c_a')!),
    });
    expect(records.get('c_a')!.merges.map((merge) => merge.records)).toEqual([['c_b']]);
  });

  it('refuses the root itself and records that are not members', () => {
    const { members, records } = group();
    const base = { members, records, at: '2026-11-04T00:00:00.000Z', entryId: 'u' };
    expect(() => planRecordUnmerge({ ...base, rootId: 'c_r', recordId: 'c_r' })).toThrow(ValidationError);
    expect(() => planRecordUnmerge({ ...base, rootId: 'c_r', recordId: 'c_zz' })).toThrow(
      /not a merged record/,
    );
  });

  it('an identifier splits off into a new record that takes its value and index', () => {
    const email: Identifier = { kind: 'email', value: 'a@b.c' };
    const source = record('c_r', '2026-11-01T00:00:00.000Z', {
      ids: [email, { kind: 'person', value: 'p-1' }],
      emails: [{ v: 'a@b.c', at: '2026-11-01T00:00:00.000Z' }],
    });
    const fresh = record('c_new', '2026-11-04T00:00:00.000Z');
    const plan = planIdentifierSplit({
      rootId: 'c_r',
      holder: 'c_r',
      identifier: email,
      members: ['c_m'],
      records: new Map([
        ['c_r', source],
        ['c_m', record('c_m', '2026-11-01T00:00:00.000Z')],
      ]),
      fresh,
      at: '2026-11-04T00:00:00.000Z',
    });
    expect(source.ids).toEqual([{ kind: 'person', value: 'p-1' }]);
    expect(source.emails).toEqual([]);
    expect(plan.split.emails).toEqual(['a@b.c']);
    expect(plan.contact.records).toEqual(['c_r', 'c_m']);
    expect(plan.expectIndex).toEqual({ key: 'idx:email:*:a@b.c', holder: 'c_r' });
    // The new record's key too: a random id already in use must not overwrite that record.
    expect(plan.expectRecords).toEqual(['c_r', 'c_new']);
    expect(plan.writes).toEqual([
      { op: 'set', key: 'rec:c_r', value: encodeRecord(source) },
      { op: 'set', key: 'rec:c_new', value: encodeRecord(fresh) },
      { op: 'set', key: 'idx:email:*:a@b.c', value: 'c_new' },
      { op: 'sadd', key: 'apart:c_new', members: ['c_r', 'c_m'] },
      { op: 'sadd', key: 'apart:c_r', members: ['c_new'] },
      { op: 'sadd', key: 'apart:c_m', members: ['c_new'] },
    ]);
  });

  it('an identifier split off keeps its value as it was, verified mark included', () => {
    const phone: Identifier = { kind: 'phone', value: '+79160000001' };
    const source = record('c_r', '2026-11-01T00:00:00.000Z', {
      ids: [phone],
      phones: [{ v: '+79160000001', at: '2026-11-02T00:00:00.000Z', ok: true }],
    });
    const fresh = record('c_new', '2026-11-04T00:00:00.000Z');
    const plan = planIdentifierSplit({
      rootId: 'c_r',
      holder: 'c_r',
      identifier: phone,
      members: [],
      records: new Map([['c_r', source]]),
      fresh,
      at: '2026-11-04T00:00:00.000Z',
    });
    expect(fresh.phones).toEqual([{ v: '+79160000001', at: '2026-11-02T00:00:00.000Z', ok: true }]);
    expect(plan.split.identities).toEqual([{ ...phone, provenance: 'verified' }]);
  });
});

describe('observation check', () => {
  /** Mostly the valid value, sometimes something else: most generated observations stay valid. */
  const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) =>
    fc.oneof({ arbitrary: good, weight: 30 }, { arbitrary: bad, weight: 1 });
  const maybe = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });
  const junk = fc.oneof(
    fc.constant(null),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.string({ maxLength: 3 }),
    fc.constant([]),
    fc.constant({}),
  );
  const text = mostly(
    fc.string({ minLength: 1, maxLength: 6 }),
    fc.constantFrom('', 'x'.repeat(512), 'x'.repeat(513), 'Анна 😀'),
  );
  const at = mostly(
    fc.oneof(
      fc
        .date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true })
        .map((date) => date.toISOString()),
      fc.constantFrom('2026-11-01T12:00:00+03:00', '2024-02-29T10:00:00.5-01:30'),
    ),
    fc.oneof(
      fc.constantFrom('2026-02-29T00:00:00Z', '2026-11-01T12:00Z', '2026-11-01T12:00:00+0300', 'yesterday'),
      junk,
    ),
  );
  const kind = mostly(
    fc.constantFrom('person', 'email', 'phone', 'visitor', 'a_1'),
    fc.oneof(fc.constantFrom('Bad', '1x', ''), text),
  );
  const identifier = mostly(
    fc.record(
      {
        kind,
        value: text,
        channelId: maybe(mostly(text, junk)),
        provenance: maybe(mostly(fc.constantFrom('verified', 'visitor'), fc.constant('other'))),
        extra: maybe(text),
      },
      { requiredKeys: ['kind', 'value'] },
    ),
    junk,
  );
  const attribute = mostly(
    fc.record(
      {
        value: mostly(
          fc.oneof(text, fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean()),
          fc.oneof(fc.constant(null), fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY)),
        ),
        label: maybe(mostly(text, fc.integer())),
        type: maybe(mostly(fc.constantFrom('string', 'url', 'phone'), fc.constant('bogus'))),
      },
      { requiredKeys: ['value'] },
    ),
    junk,
  );
  const data = mostly(
    fc.oneof(
      fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
      fc.constant(Object.create(null)),
    ),
    fc.oneof(
      fc.constant(JSON.parse('{"__proto__": {"x": 1}, "y": 2}')),
      fc.constant({ [Symbol('s')]: 1 }),
      fc.constant(new Date(0)),
      junk,
    ),
  );
  const entry = mostly(
    fc.record(
      { key: maybe(text), at, type: text, summary: mostly(text, fc.constant(undefined)), data: maybe(data) },
      { requiredKeys: ['at', 'type', 'summary'] },
    ),
    junk,
  );
  const event = mostly(
    fc.record({ type: mostly(text, junk), key: maybe(text), data: maybe(data) }, { requiredKeys: ['type'] }),
    junk,
  );
  const arrayOf = <T>(item: fc.Arbitrary<T>) => maybe(mostly(fc.array(item, { maxLength: 3 }), junk));
  const observation = fc.record(
    {
      channelId: mostly(text, junk),
      vendor: text,
      at,
      idempotencyKey: text,
      identifiers: arrayOf(identifier),
      names: arrayOf(mostly(text, junk)),
      attributes: maybe(mostly(fc.dictionary(fc.string({ maxLength: 6 }), attribute, { maxKeys: 3 }), junk)),
      labels: arrayOf(text),
      responsibleAgent: maybe(
        mostly(
          fc.record(
            { email: maybe(text), name: maybe(mostly(text, junk)), id: maybe(text) },
            { requiredKeys: [] },
          ),
          junk,
        ),
      ),
      crmLink: maybe(mostly(text, junk)),
      // Up to 6: the schema takes at most 4.
      formerIdempotencyKeys: maybe(mostly(fc.array(text, { maxLength: 6 }), junk)),
      snapshot: maybe(mostly(fc.boolean(), junk)),
      timeline: arrayOf(entry),
      events: arrayOf(event),
      unknown: maybe(text),
    },
    { requiredKeys: ['channelId', 'vendor', 'at', 'idempotencyKey'] },
  );

  it('accepts, fills in and refuses exactly what observationSchema does', () => {
    let accepted = 0;
    fc.assert(
      fc.property(observation, (input) => {
        const parsed = observationSchema.safeParse(input);
        if (parsed.success) {
          accepted++;
          const checked = checkObservation(input as Observation);
          expect(checked).toEqual(parsed.data);
          // Vendor-named attributes never meet Object.prototype (`__proto__`, `constructor` are data).
          if (input.attributes !== undefined) expect(Object.getPrototypeOf(checked.attributes)).toBeNull();
          expect(checked).not.toBe(input);
          for (const entry of checked.timeline)
            expect(JSON.stringify(entry.data)).toBe(
              JSON.stringify(parsed.data.timeline[checked.timeline.indexOf(entry)]!.data),
            );
        } else {
          let error: unknown;
          try {
            checkObservation(input as Observation);
          } catch (caught) {
            error = caught;
          }
          expect(error).toBeInstanceOf(ValidationError);
          expect((error as ValidationError).code).toBe('invalid_observation');
        }
      }),
      { numRuns: 2000 },
    );
    // Not a vacuous property: a good share of the inputs are valid observations.
    expect(accepted).toBeGreaterThan(200);
  });

  it('copies what the engine rewrites: the observation given is left as it was', () => {
    const input: Observation = {
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T12:00:00.000Z',
      idempotencyKey: 'k',
      identifiers: [{ kind: 'person', value: 'p' }],
      names: ['Anna'],
      attributes: { city: { value: 'Kazan' } },
      timeline: [{ at: '2026-11-01T12:00:00.000Z', type: 't', summary: 's', data: { a: 1 } }],
    };
    const before = structuredClone(input);
    const checked = checkObservation(input);
    checked.names.push('x');
    checked.identifiers[0]!.provenance = 'verified';
    checked.attributes.city!.value = 'Moscow';
    checked.timeline[0]!.data = { truncated: true };
    expect(input).toEqual(before);
  });
});

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const prefixes: string[] = [];
let redisUrl: string | undefined;
afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

for (const kind of ['memory', 'redis'] as const) {
  describe(`lock-free writes (${kind} store)`, () => {
    async function stores(): Promise<[Store, Store]> {
      if (kind === 'memory') {
        const store = createMemoryStore();
        return [store, store];
      }
      redisUrl ??= await getTestRedisUrl();
      const keyPrefix = uniquePrefix('parts');
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

    /** The store, counting the engine's reads (readGroups) through it. */
    function countingReads(store: Store) {
      /** `writes`: guarded batches sent (held or not). */
      const counted = { reads: 0, writes: 0, store };
      counted.store = new Proxy(store, {
        get(target, property, receiver) {
          if (property === 'readGroups') {
            return (...args: Parameters<Store['readGroups']>) => {
              counted.reads++;
              return target.readGroups(...args);
            };
          }
          if (property === 'batch') {
            return () => {
              const batch = target.batch();
              const exec = batch.exec.bind(batch);
              batch.exec = () => {
                counted.writes++;
                return exec();
              };
              return batch;
            };
          }
          return Reflect.get(target, property, receiver);
        },
      });
      return counted;
    }

    it('two instances writing one known contact at once lose none of the updates', async () => {
      const [storeA, storeB] = await stores();
      const engines = [engineOn(storeA), engineOn(storeB)];
      const base = {
        channelId: 'web',
        vendor: 'jivochat',
        identifiers: [{ kind: 'person', value: 'busy-1' }],
      };
      const first = await engines[0]!.observe({
        ...base,
        at: '2026-11-01T12:00:00.000Z',
        idempotencyKey: 'first',
      });
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, index) =>
          engines[index % 2]!.observe({
            ...base,
            at: '2026-11-01T12:00:01.000Z',
            idempotencyKey: `update-${index}`,
            labels: [`label-${index}`],
          }),
        ),
      );
      expect(new Set(results.map((result) => result.contact.id))).toEqual(new Set([first.contact.id]));
      const contact = await engines[1]!.get(first.contact.id);
      expect(contact?.contact.labels).toHaveLength(30);
      expect(contact?.contact.channels[0]?.observations).toBe(31);
      // Repeated deliveries change nothing and answer the same contact.
      const again = await engines[1]!.observe({
        ...base,
        at: '2026-11-01T12:00:01.000Z',
        idempotencyKey: 'update-3',
        labels: ['label-new'],
      });
      expect(again.duplicate).toBe(true);
      expect((await engines[0]!.get(first.contact.id))?.contact.channels[0]?.observations).toBe(31);
      if (storeA !== storeB) await storeB.close();
      await storeA.close();
    });

    it('a busy contact written through other identifiers at every turn still takes an observation: the contact is locked, not only its identifiers', async () => {
      // One contact (person + a visitor id). Instance A observes it by the person id; each time A
      // has read, instance B writes the same contact by the visitor id (another lane, another
      // identity lock) before A's write goes out, so every write A planned on that read fails its
      // check. A must still get through once it queues on the lock (README: "a busy visitor is
      // never refused"), instead of giving up after its attempts (identity_contention).
      const [storeA, storeB] = await stores();
      let onExec: (() => void) | undefined;
      const countedB = new Proxy(storeB, {
        get(target, property, receiver) {
          if (property !== 'batch') return Reflect.get(target, property, receiver);
          return () => {
            const batch = target.batch();
            const exec = batch.exec.bind(batch);
            batch.exec = async () => {
              try {
                return await exec();
              } finally {
                const settled = onExec;
                onExec = undefined;
                settled?.();
              }
            };
            return batch;
          };
        },
      });
      const b = engineOn(countedB);
      const base = { channelId: 'web', vendor: 'jivochat', at: '2026-11-01T12:00:00.000Z' };
      const first = await b.observe({
        ...base,
        idempotencyKey: 'busy-first',
        identifiers: [
          { kind: 'person', value: 'busy-lanes' },
          { kind: 'visitor', value: 'v-busy' },
        ],
      });
      const interfering: Promise<unknown>[] = [];
      let interferences = 0;
      const interferingA = new Proxy(storeA, {
        get(target, property, receiver) {
          if (property !== 'readGroups') return Reflect.get(target, property, receiver);
          return async (...args: Parameters<Store['readGroups']>) => {
            const read = await target.readGroups(...args);
            if (interferences < 30) {
              const n = interferences++;
              // B's next checked write, held or not, has been answered before A goes on.
              const bWrote = new Promise<void>((resolve) => {
                onExec = resolve;
              });
              interfering.push(
                b.observe({
                  ...base,
                  idempotencyKey: `busy-b-${n}`,
                  identifiers: [{ kind: 'visitor', value: 'v-busy' }],
                  labels: [`b-${n}`],
                }),
              );
              await bWrote;
            }
            return read;
          };
        },
      });
      const a = engineOn(interferingA);
      const result = await a.observe({
        ...base,
        idempotencyKey: 'busy-a',
        identifiers: [{ kind: 'person', value: 'busy-lanes' }],
        labels: ['a'],
      });
      expect(result.contact.id).toBe(first.contact.id);
      await Promise.all(interfering);
      const contact = (await b.get(first.contact.id))!.contact;
      expect([...contact.labels].sort()).toEqual(
        ['a', ...Array.from({ length: interferences }, (_, n) => `b-${n}`)].sort(),
      );
      if (storeA !== storeB) await storeB.close();
      await storeA.close();
    });

    it('an observation whose contact keeps changing under it is refused as passing (503, retry later), not as a conflict: vendors drop a 4xx', async () => {
      // Every checked write fails, as if other writers changed the contact each time: the
      // observation gives up after its attempts. JivoChat treats 4xx as rejected and does not
      // resend (vendors/jivochat.md), so the answer must say "retry".
      const [store, other] = await stores();
      const engine = engineOn(store);
      const base = {
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T12:00:00.000Z',
        identifiers: [{ kind: 'person', value: 'always-changing' }],
      };
      await engine.observe({ ...base, idempotencyKey: 'first' });
      const failing = new Proxy(store, {
        get(target, property, receiver) {
          if (property !== 'batch') return Reflect.get(target, property, receiver);
          return () => {
            const batch = target.batch();
            batch.exec = async () => false;
            return batch;
          };
        },
      });
      const refused = await engineOn(failing)
        .observe({ ...base, idempotencyKey: 'second' })
        .then(
          () => null,
          (error: unknown) => error,
        );
      expect(refused).toBeInstanceOf(AppError);
      expect(refused).toMatchObject({ status: 503, code: 'identity_contention' });
      expect((refused as AppError).headers).toMatchObject({ 'retry-after': expect.any(String) });
      if (other !== store) await other.close();
      await store.close();
    });

    it('a search naming two contacts that merge while it runs lists the merged contact once', async () => {
      const [storeA, storeB] = await stores();
      const other = engineOn(storeB);
      const observe = (second: number, identifiers: Identifier[]) =>
        other.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: `2026-11-01T12:00:0${second}.000Z`,
          idempotencyKey: `search-merge-${second}`,
          identifiers: identifiers.map((identifier) => ({ ...identifier, provenance: 'verified' as const })),
        });
      const email: Identifier = { kind: 'email', value: 'search-merge@example.org' };
      const phone: Identifier = { kind: 'phone', value: '+79161230099' };
      const s = await observe(1, [{ kind: 'person', value: 'search-s' }, phone]);
      await observe(2, [{ kind: 'person', value: 'search-r' }, email]);
      let merged = false;
      const mergingMeanwhile = new Proxy(storeA, {
        get(target, property, receiver) {
          if (property !== 'readGroups') return Reflect.get(target, property, receiver);
          return async (...args: Parameters<Store['readGroups']>) => {
            // Once the search has found both records, before it reads their contacts: they merge.
            if (!merged && (args[0].ids?.length ?? 0) > 1) {
              merged = true;
              await observe(3, [email, phone]);
            }
            return target.readGroups(...args);
          };
        },
      });
      const found = await engineOn(mergingMeanwhile).find({ email: email.value, phone: phone.value });
      expect(merged).toBe(true);
      expect(found.map((contact) => contact.id)).toEqual([s.contact.id]);
      if (storeA !== storeB) await storeB.close();
      await storeA.close();
    });

    for (const what of ['an identifier', 'a merged record'] as const) {
      it(`splitting ${what} off a contact that is merged into another meanwhile splits it off the contact it is part of now`, async () => {
        // R (root) and M (holds the e-mail) are one contact; S is older. The admin asks R to
        // split off the e-mail (or the record M); between the request's first read and its lock,
        // another instance merges R's contact into S's. The request must act on the contact as it
        // is now (S's), not fail on R's emptied member list (a TypeError: 500) or answer that the
        // identifier or record is not part of the contact it asked about.
        const [storeA, storeB] = await stores();
        const other = engineOn(storeB);
        const at = (second: number) => `2026-11-01T12:00:${String(second).padStart(2, '0')}.000Z`;
        const observe = (engine: typeof other, second: number, identifiers: Identifier[]) =>
          engine.observe({
            channelId: 'web',
            vendor: 'jivochat',
            at: at(second),
            idempotencyKey: `moved-${what}-${second}`,
            identifiers: identifiers.map((identifier) => ({
              ...identifier,
              provenance: 'verified' as const,
            })),
          });
        const person = (value: string): Identifier => ({ kind: 'person', value: `${what}-${value}` });
        const email: Identifier = { kind: 'email', value: `moved-${what.length}@example.org` };
        const s = await observe(other, 1, [person('s')]);
        const r = await observe(other, 2, [person('r')]);
        const m = await observe(other, 3, [person('m'), email]);
        await observe(other, 4, [person('r'), email]);
        let merged = false;
        const mergingMeanwhile = new Proxy(storeA, {
          get(target, property, receiver) {
            if (property !== 'lock') return Reflect.get(target, property, receiver);
            return async (...args: Parameters<Store['lock']>) => {
              if (!merged && args[0].some((name) => name.startsWith('root:'))) {
                merged = true;
                await observe(other, 5, [person('s'), person('r')]);
              }
              return target.lock(...args);
            };
          },
        });
        const engine = engineOn(mergingMeanwhile);
        const result = await engine.unmerge(
          r.contact.id,
          what === 'an identifier' ? { identifier: email } : { recordId: m.contact.id },
        );
        expect(merged).toBe(true);
        expect(result.contact.id).toBe(s.contact.id);
        if (what === 'an identifier') {
          expect(result.split.emails).toEqual([email.value]);
          expect([...result.contact.records].sort()).toEqual(
            [s.contact.id, r.contact.id, m.contact.id].sort(),
          );
          expect((await engine.findByIdentifier(email))?.id).toBe(result.split.id);
        } else {
          // The merge that brought M into S's contact now is the one that joined R's group.
          expect([...result.split.records].sort()).toEqual([r.contact.id, m.contact.id].sort());
          expect(result.contact.records).toEqual([s.contact.id]);
        }
        expect(result.contact.emails).not.toContain(email.value);
        expect((await engine.findByIdentifier(person('s')))?.id).toBe(s.contact.id);
        if (storeA !== storeB) await storeB.close();
        await storeA.close();
      });
    }

    for (const [repeatAt, repeatOf, expectedReads, expectedWrites, why] of [
      // The first reads; the 38 after it plan on the write before them; the repeated delivery's
      // planned write fails (its key exists), so it reads and finds itself.
      [39, 7, 2, 40, 'the last'],
      // The same, but the 19 queued behind the repeated delivery planned on its write, which did
      // not happen: each reads once, after the one before it has finished (not all at once).
      [20, 7, 21, 59, 'the 21st'],
      // Right behind the delivery it repeats: the write it would plan on carries its own key
      // (LaneState.applied), so it is not tried; it reads once that write has settled, and the
      // ones behind it plan on what the lane remembers.
      [21, 20, 2, 39, 'the 22nd, right behind the one it repeats,'],
    ] as const) {
      it(`one instance, one person, 40 observations at once, ${why} a repeated delivery: every update kept, ${expectedReads} reads, ${expectedWrites} writes`, async () => {
        // The lane plans each observation on the write before it (engine.ts, LaneState): no
        // update may be lost, a repeated delivery must still be seen, and the reads saved are
        // counted here. The installation salt is read apart from these.
        const [store, other] = await stores();
        const counting = countingReads(store);
        const engine = engineOn(counting.store);
        const base = {
          channelId: 'web',
          vendor: 'jivochat',
          identifiers: [{ kind: 'person', value: 'lane-1' }],
        };
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, index) =>
            engine.observe({
              ...base,
              at: `2026-11-01T12:00:${String(index).padStart(2, '0')}.000Z`,
              idempotencyKey: `update-${index === repeatAt ? repeatOf : index}`,
              labels: [`label-${index}`],
              timeline: [
                {
                  key: 'msg',
                  type: 'message.received',
                  at: '2026-11-01T12:00:00.000Z',
                  summary: `m${index}`,
                },
              ],
            }),
          ),
        );
        const ids = new Set(results.map((result) => result.contact.id));
        expect(ids.size).toBe(1);
        expect(results.filter((result) => result.created)).toHaveLength(1);
        expect(results.map((result, index) => (result.duplicate ? index : -1)).filter((i) => i >= 0)).toEqual(
          [repeatAt],
        );
        const id = [...ids][0]!;
        const contact = (await engine.get(id))?.contact;
        expect(contact?.labels).toHaveLength(39);
        expect(contact?.labels).not.toContain(`label-${repeatAt}`);
        expect(contact?.channels[0]?.observations).toBe(39);
        const page = await engine.timeline(id, { limit: 100 });
        expect(page.entries).toHaveLength(39);
        expect(counting.reads).toBe(expectedReads);
        expect(counting.writes).toBe(expectedWrites);
        if (other !== store) await other.close();
        await store.close();
      });
    }

    it('a returning person is written without a read while nothing else wrote them; a write by another instance in between is caught, and that person is read first for a while', async () => {
      // engine.ts, `remembered`: the plan is made on what this instance last wrote for the person.
      const [storeA, storeB] = await stores();
      const counting = countingReads(storeA);
      const a = engineOn(counting.store);
      const b = engineOn(storeB);
      const observation = (n: number) => ({
        channelId: 'web',
        vendor: 'jivochat',
        at: `2026-11-01T12:00:0${n}.000Z`,
        idempotencyKey: `returning-${n}`,
        identifiers: [{ kind: 'person', value: 'returning-1' }],
        labels: [`label-${n}`],
      });
      const first = await a.observe(observation(1));
      expect(counting.reads).toBe(1);
      await a.observe(observation(2));
      expect(counting.reads).toBe(1); // planned on the write before: no read
      expect(counting.writes).toBe(2);
      // A repeat of one of the person's latest deliveries is found by one read, without a write
      // planned on the remembered state first (it would only fail on the delivery's key), and
      // does not make the next observation read.
      expect((await a.observe(observation(2))).duplicate).toBe(true);
      expect((await a.observe(observation(1))).duplicate).toBe(true);
      expect(counting.reads).toBe(3);
      expect(counting.writes).toBe(2);
      await a.observe(observation(3));
      expect(counting.reads).toBe(3);
      expect(counting.writes).toBe(3);
      // The other instance writes the person: A's remembered state no longer holds.
      await b.observe(observation(4));
      const fifth = await a.observe(observation(5));
      expect(counting.reads).toBe(4);
      expect(counting.writes).toBe(5); // the one planned on what A remembered failed, then one held
      expect(fifth.duplicate).toBe(false);
      expect([...fifth.contact.labels].sort()).toEqual([
        'label-1',
        'label-2',
        'label-3',
        'label-4',
        'label-5',
      ]);
      // Lost to another writer lately: A reads first for a while.
      await a.observe(observation(6));
      expect(counting.reads).toBe(5);
      const contact = (await b.get(first.contact.id))!.contact;
      expect(contact.labels).toHaveLength(6);
      expect(contact.channels[0]?.observations).toBe(6);
      if (storeA !== storeB) await storeB.close();
      await storeA.close();
    });

    it('observations at once at two instances over a few shared identifiers end as if applied one by one (property)', async () => {
      // Bursts mix lanes (one per strongest identifier), plans made on the write before
      // (LaneState) or on what an instance remembers of a person from an earlier burst, merges
      // under locks and repeated deliveries. Whatever the interleaving, the
      // contacts must be the connected identifier groups, each with every label and observation
      // of its group once.
      const universe: Identifier[] = [
        { kind: 'person', value: 'p-1' },
        { kind: 'person', value: 'p-2' },
        { kind: 'email', value: 'a@example.org' },
        { kind: 'email', value: 'b@example.org' },
        { kind: 'phone', value: '+79161234567' },
        { kind: 'phone', value: '+79161234568' },
      ].map((identifier) => ({ ...identifier, provenance: 'verified' as const }));
      const specs = fc.array(
        fc.record({
          ids: fc.uniqueArray(fc.integer({ min: 0, max: universe.length - 1 }), {
            minLength: 1,
            maxLength: 3,
          }),
          repeatOf: fc.option(fc.nat(), { nil: undefined }),
        }),
        { minLength: 1, maxLength: 24 },
      );
      let run = 0;
      await fc.assert(
        fc.asyncProperty(specs, async (list) => {
          run++;
          const [store, other] = await stores();
          // Two instances (on Redis, two connections), taking turns: lanes keep one instance's
          // observations of a person in order, only the expectations keep the two apart.
          const engines = [engineOn(store), engineOn(other)];
          const engine = engines[0]!;
          // A repeat is the same delivery again (same key, same content) of an earlier one.
          const deliveries = list.map((spec, index) => {
            const source = spec.repeatOf !== undefined && index > 0 ? spec.repeatOf % index : index;
            const original = list[source]!;
            return { source, ids: original.ids };
          });
          const observations = deliveries.map(({ source, ids }) => ({
            channelId: 'web',
            vendor: 'jivochat',
            at: `2026-11-01T12:00:${String(source).padStart(2, '0')}.000Z`,
            idempotencyKey: `run-${run}-obs-${source}`,
            identifiers: ids.map((id) => universe[id]!),
            labels: [`label-${source}`],
            timeline: [
              { key: 'msg', type: 'message.received', at: '2026-11-01T12:00:00.000Z', summary: 'm' },
            ],
          }));
          // In waves: an observation of a later wave may plan on what its instance remembers of
          // that person from an earlier one (engine.ts, `remembered`), often stale by then
          // because the other instance wrote the person meanwhile.
          const waves = Math.min(3, observations.length);
          for (let wave = 0; wave < waves; wave++) {
            await Promise.all(
              observations
                .map((observation, index) => ({ observation, index }))
                .filter(({ index }) => index % waves === wave)
                .map(({ observation, index }) => engines[index % 2]!.observe(observation)),
            );
          }

          // Expected: identifiers joined by the deliveries applied (each source once).
          const parent = universe.map((_, index) => index);
          const find = (index: number): number => (parent[index] === index ? index : find(parent[index]!));
          const sources = [...new Set(deliveries.map((delivery) => delivery.source))];
          for (const source of sources) {
            const [first, ...rest] = list[source]!.ids;
            for (const id of rest) parent[find(id)] = find(first!);
          }
          const used = [...new Set(sources.flatMap((source) => list[source]!.ids))];
          const contactOf = new Map<number, string>();
          for (const id of used) {
            const contact = await engine.findByIdentifier(universe[id]!);
            expect(contact, `identifier ${id} has a contact`).not.toBeNull();
            contactOf.set(id, contact!.id);
          }
          for (const a of used)
            for (const b of used) expect(contactOf.get(a) === contactOf.get(b)).toBe(find(a) === find(b));
          for (const root of new Set(used.map(find))) {
            const members = sources.filter((source) => find(list[source]!.ids[0]!) === root);
            const id = contactOf.get(used.find((candidate) => find(candidate) === root)!)!;
            const contact = (await engine.get(id))!.contact;
            expect([...contact.labels].sort()).toEqual(members.map((source) => `label-${source}`).sort());
            const observed = contact.channels.reduce((sum, channel) => sum + channel.observations, 0);
            expect(observed).toBe(members.length);
            const page = await engine.timeline(id, { limit: 200 });
            expect(page.entries.filter((entry) => entry.type === 'message.received')).toHaveLength(
              members.length,
            );
          }
          if (other !== store) await other.close();
          await store.close();
        }),
        { numRuns: kind === 'memory' ? 40 : 15 },
      );
    });

    it('claimAndFind: claims once, finds as findByIdentifier does (merged groups, misses, both read paths)', async () => {
      const [store] = await stores();
      for (const mergeOnVisitorTyped of [
        identity.mergeOnVisitorTyped,
        ['email', 'phone'] as typeof identity.mergeOnVisitorTyped,
      ]) {
        const engine = createContactEngine({
          store,
          identity: { ...identity, mergeOnVisitorTyped },
          events: createOutboxPublisher(store),
          metrics: new Metrics(),
          logger,
        });
        const tag = mergeOnVisitorTyped.length;
        const observe = (idempotencyKey: string, identifiers: { kind: string; value: string }[]) =>
          engine.observe({
            channelId: 'web',
            vendor: 'jivochat',
            at: '2026-11-01T12:00:00.000Z',
            idempotencyKey: `${tag}-${idempotencyKey}`,
            identifiers: identifiers.map((item) => ({ ...item, provenance: 'verified' as const })),
          });
        await observe('a', [{ kind: 'person', value: `claim-a-${tag}` }]);
        await observe('b', [
          { kind: 'person', value: `claim-b-${tag}` },
          { kind: 'email', value: `claim-${tag}@example.com` },
        ]);
        // Joins a and b (the e-mail reaches b's group).
        await observe('ab', [
          { kind: 'person', value: `claim-a-${tag}` },
          { kind: 'email', value: `claim-${tag}@example.com` },
        ]);
        const claim = (name: string) => ({ key: `claim-test:${tag}:${name}`, ttlMs: 60_000 });
        for (const person of [`claim-a-${tag}`, `claim-b-${tag}`, `nobody-${tag}`, 'null']) {
          const identifier = { kind: 'person', value: person };
          const expected = await engine.findByIdentifier(identifier, { evenWork: true });
          const found = await engine.claimAndFind(identifier, { claim: claim(person), evenWork: true });
          expect(found).toEqual({ claimed: true, contact: expected });
          expect(await engine.claimAndFind(identifier, { claim: claim(person), evenWork: true })).toEqual({
            claimed: false,
          });
        }
        const merged = await engine.claimAndFind(
          { kind: 'person', value: `claim-b-${tag}` },
          { claim: claim('merged') },
        );
        expect(merged.claimed && merged.contact?.records).toHaveLength(2);
      }
      await store.close();
    });

    it('claimAndFind answers as findByIdentifier after every change of the group: updates here and elsewhere, merge, unmerge', async () => {
      const [store, other] = await stores();
      const engine = engineOn(store);
      const elsewhere = engineOn(other);
      let n = 0;
      const observe = (on: typeof engine, identifiers: { kind: string; value: string }[], name?: string) =>
        on.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: `2026-11-01T12:00:${String(n).padStart(2, '0')}.000Z`,
          idempotencyKey: `view-${n++}`,
          identifiers: identifiers.map((item) => ({ ...item, provenance: 'verified' as const })),
          ...(name ? { names: [name] } : {}),
        });
      const anna = { kind: 'person', value: 'view-anna' };
      /** Two lookups in a row (the second may answer from the view kept), both as a find says. */
      let claims = 0;
      const looksUpAsFound = async () => {
        const expected = await engine.findByIdentifier(anna, { evenWork: true });
        for (let i = 0; i < 2; i++) {
          const found = await engine.claimAndFind(anna, {
            claim: { key: `view-claim:${claims++}`, ttlMs: 60_000 },
            evenWork: true,
          });
          expect(found).toEqual({ claimed: true, contact: expected });
        }
        return expected!;
      };
      await observe(engine, [anna], 'Anna');
      expect((await looksUpAsFound()).names).toEqual(['Anna']);
      // Updated, by this engine and by another instance (whose write this one never saw).
      await observe(engine, [anna, { kind: 'email', value: 'anna@view.example' }], 'Anna Petrova');
      expect((await looksUpAsFound()).emails).toEqual(['anna@view.example']);
      await observe(elsewhere, [anna, { kind: 'phone', value: '+79161112233' }]);
      expect((await looksUpAsFound()).phones).toEqual(['+79161112233']);
      // Merged with another contact: the group grows.
      const boris = await observe(elsewhere, [
        { kind: 'person', value: 'view-boris' },
        { kind: 'email', value: 'b@view.example' },
      ]);
      await observe(elsewhere, [anna, { kind: 'email', value: 'b@view.example' }]);
      const merged = await looksUpAsFound();
      expect(merged.records).toHaveLength(2);
      expect(merged.emails).toContain('b@view.example');
      // Unmerged: the group shrinks.
      await elsewhere.unmerge(merged.id, { recordId: boris.contact.id });
      const alone = await looksUpAsFound();
      expect(alone.records).toHaveLength(1);
      // A member added while the root's own record stays as it was (written by hand here): the
      // group read is not the one kept.
      await store.sadd(key.members(alone.id), storedId(boris.contact.id));
      await store.set(key.root(boris.contact.id), storedId(alone.id));
      expect((await looksUpAsFound()).records).toHaveLength(2);
      await store.srem(key.members(alone.id), storedId(boris.contact.id));
      await store.del(key.root(boris.contact.id));
      expect((await looksUpAsFound()).records).toHaveLength(1);
      // A view kept for lookups is shared: it cannot be changed by whoever reads it.
      const kept = await engine.claimAndFind(anna, { claim: { key: 'view-claim:frozen', ttlMs: 60_000 } });
      if (!kept.claimed || !kept.contact) throw new Error('expected a contact');
      expect(() => kept.contact!.names.push('Mallory')).toThrow(TypeError);
      expect((await looksUpAsFound()).names).not.toContain('Mallory');
      if (other !== store) await other.close();
      await store.close();
    });

    it('a group larger than one read holds (maxMergeSize lowered since) is still read whole', async () => {
      const [store] = await stores();
      const roomy = createContactEngine({
        store,
        identity: { ...identity, maxMergeSize: 3 },
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
      });
      const at = '2026-11-01T12:00:00.000Z';
      const observe = (
        engine: typeof roomy,
        idempotencyKey: string,
        people: string[],
        labels: string[] = [],
      ) =>
        engine.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at,
          idempotencyKey,
          identifiers: people.map((value) => ({ kind: 'person', value })),
          labels,
        });
      for (const person of ['big-a', 'big-b', 'big-c']) await observe(roomy, person, [person]);
      await observe(roomy, 'join-ab', ['big-a', 'big-b']);
      const joined = await observe(roomy, 'join-ac', ['big-a', 'big-c']);
      expect(joined.contact.records).toHaveLength(3);
      // The read holds at most maxMergeSize (now 2) records: the third is read before writing.
      const tight = createContactEngine({
        store,
        identity: { ...identity, maxMergeSize: 2 },
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
      });
      const known = await observe(tight, 'later', ['big-c'], ['vip']);
      expect(known.created).toBe(false);
      expect(known.contact.id).toBe(joined.contact.id);
      expect([...known.contact.records].sort()).toEqual([...joined.contact.records].sort());
      expect(known.contact.labels).toEqual(['vip']);
      const again = await observe(tight, 'later', ['big-c'], ['other']);
      expect(again.duplicate).toBe(true);
      expect(again.contact).toEqual(known.contact);
      await store.close();
    });
  });
}
