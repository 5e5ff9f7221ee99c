import { describe, expect, it } from 'vitest';
import { key } from '../src/contacts/keys.js';
import { normalizeOptionsOf } from '../src/contacts/normalize.js';
import { decodeRecord, newRecord, type StoredRecord } from '../src/contacts/record.js';
import { nameIndexOf, phoneEvidence, planReindex, renamesOf } from '../src/contacts/reindex-plan.js';
import type { Identifier } from '../src/contacts/types.js';

/** The re-index's plan of one record (src/contacts/reindex-plan.ts), without a store. */

const options = normalizeOptionsOf({ blocklist: ['null'], defaultCountry: 'RU' });
const AT = '2026-11-01T10:00:00.000Z';

function record(id: string, ids: Identifier[]): StoredRecord {
  const made = { ...newRecord(AT), id, ids };
  for (const identifier of ids) {
    if (identifier.kind === 'email') made.emails.push({ v: identifier.value, at: AT });
    if (identifier.kind === 'phone') made.phones.push({ v: identifier.value, at: AT });
  }
  return made;
}

const member = (data: unknown) =>
  `${AT}|e1|${JSON.stringify({ id: 'e1', at: AT, channelId: 'web', vendor: 'x', type: 't', summary: '', data })}`;

describe('renamesOf: what the current rules key differently', () => {
  it('an IDN domain in punycode, an id not NFC; phones that keep their form; values no key fits', () => {
    const renames = renamesOf(
      record('c_1', [
        { kind: 'email', value: 'ivan@xn--80a1acny.xn--p1ai' },
        { kind: 'email', value: 'anna@example.org' },
        { kind: 'person', value: 'Jose\u0301' },
        { kind: 'visitor', value: 'ide\u0301', channelId: 'web' },
        { kind: 'phone', value: '+74951234567' },
        { kind: 'person', value: 'zero\u200bwidth' },
        { kind: 'person', value: 'null' },
      ]),
      options,
    );
    expect(renames.ids).toEqual([
      {
        from: { kind: 'email', value: 'ivan@xn--80a1acny.xn--p1ai' },
        to: { kind: 'email', value: 'ivan@почта.рф' },
      },
      { from: { kind: 'person', value: 'Jose\u0301' }, to: { kind: 'person', value: 'José' } },
      {
        from: { kind: 'visitor', value: 'ide\u0301', channelId: 'web' },
        to: { kind: 'visitor', value: 'idé', channelId: 'web' },
      },
    ]);
    expect(renames.values).toEqual([
      { list: 'emails', from: 'ivan@xn--80a1acny.xn--p1ai', to: 'ivan@почта.рф' },
    ]);
    expect(renames.phones).toEqual(['+74951234567']);
    expect(renames.unkeyable).toBe(2);
  });
});

describe('phoneEvidence: how the vendors wrote a phone, from the timeline', () => {
  const phones = new Set(['+74951234567', '+78125550011']);

  it("reads JivoChat's and LiveTex's phone fields, each number of a field, with or without an extension", () => {
    const evidence = phoneEvidence(
      [
        member({
          raw: { visitor: { phone: '+7 495 123-45-67 доб. 101' }, agent: { phone: '+74957770001' } },
        }),
        member({ call: { phone: '8 (495) 123-45-67 ext. 102' } }),
        member({
          raw: {
            discourser: { contacts: [{ type: 'phone', value: '+7 812 555-00-11, 8 812 555 00 11 д. 7' }] },
          },
        }),
      ],
      phones,
      'RU',
    );
    expect(evidence.get('+74951234567')).toEqual({ extensions: new Set(['101', '102']), plain: false });
    expect(evidence.get('+78125550011')).toEqual({ extensions: new Set(['7']), plain: true });
    // The agent's own line is another number: not this contact's.
    expect(evidence.has('+74957770001')).toBe(false);
  });

  it('a number in a message, a title or a field not named as a phone is no evidence', () => {
    const evidence = phoneEvidence(
      [
        member({ messages: [{ text: 'call +7 495 123-45-67 доб. 101' }], title: '+7 495 123-45-67' }),
        member({ number: '+74951234567' }),
        'not a member',
      ],
      phones,
      'RU',
    );
    expect(evidence.size).toBe(0);
  });
});

describe('planReindex', () => {
  const identity = (value: string): Identifier => ({ kind: 'email', value });
  const punycode = identity('ivan@xn--80a1acny.xn--p1ai');
  const unicode = identity('ivan@почта.рф');

  it('the current form held by another contact: a conflict entry, the value kept search-only, no merge', () => {
    const mine = record('c_11', [punycode]);
    const renames = renamesOf(mine, options);
    const plan = planReindex({
      record: mine,
      root: 'c_11',
      renames,
      holders: new Map([
        [key.index(punycode), 'c_11'],
        [key.index(unicode), 'c_22'],
      ]),
      holderRoots: new Map([['c_22', 'c_20']]),
      groupRecords: new Map(),
      evidence: new Map(),
      inExtensionSets: new Set(),
      at: AT,
      entryId: 'reindex_1',
    });
    expect(plan.changes).toEqual([
      { kind: 'email', from: punycode.value, to: unicode.value, outcome: 'conflict' },
    ]);
    const ops = plan.writes.map((write) => `${write.op} ${write.key}`);
    expect(ops).toEqual([
      `del ${key.index(punycode)}`,
      `sadd ${key.search(unicode)}`,
      `set ${key.record('c_11')}`,
      `rpush ${key.conflicts}`,
      `ltrim ${key.conflicts}`,
      `zadd ${key.timeline('c_11')}`,
    ]);
    // Nothing claims the other contact's key; the record keeps the address in its current form.
    expect(plan.writes.some((write) => write.key === key.index(unicode))).toBe(false);
    const written = plan.writes.find((write) => write.op === 'set')!;
    expect(decodeRecord('c_11', (written as { value: string }).value).emails).toEqual([
      { v: unicode.value, at: AT },
    ]);
    const conflict = plan.writes.find((write) => write.op === 'rpush') as { values: string[] };
    expect(JSON.parse(conflict.values[0]!)).toEqual({
      at: AT,
      reason: 'renormalized',
      via: unicode,
      was: punycode.value,
      roots: ['c_11', 'c_20'],
    });
  });

  it('a search-only value moves from its old set to its new one; a vendor-local id only changes form', () => {
    const local: Identifier = { kind: 'visitor', value: 'ide\u0301', channelId: 'web' };
    const mine = record('c_11', [punycode, local]);
    const plan = planReindex({
      record: mine,
      root: 'c_11',
      renames: renamesOf(mine, options),
      holders: new Map(),
      holderRoots: new Map(),
      groupRecords: new Map(),
      evidence: new Map(),
      inExtensionSets: new Set(),
      at: AT,
      entryId: 'reindex_2',
    });
    expect(
      plan.writes
        .filter((write) => write.op === 'srem' || write.op === 'sadd')
        .map((write) => `${write.op} ${write.key}`),
    ).toEqual([`srem ${key.search(punycode)}`, `sadd ${key.search(unicode)}`]);
    expect(plan.changes.map((change) => change.outcome)).toEqual(['search', 'search']);
  });

  it('a phone written with an extension only: search-only, its extension indexed once; also without one: left as it is', () => {
    const phone: Identifier = { kind: 'phone', value: '+74951234567' };
    const mine = record('c_11', [phone]);
    const input = {
      record: mine,
      root: 'c_11',
      renames: renamesOf(mine, options),
      holders: new Map([[key.index(phone), 'c_11']]),
      holderRoots: new Map(),
      groupRecords: new Map(),
      evidence: new Map([['+74951234567', { extensions: new Set(['101']), plain: false }]]),
      inExtensionSets: new Set<string>(),
      at: AT,
      entryId: 'reindex_3',
    };
    const plan = planReindex(input);
    expect(plan.writes.filter((write) => write.op !== 'zadd')).toEqual([
      { op: 'sadd', key: key.searchExtension(phone, '101'), members: ['11'] },
      { op: 'del', key: key.index(phone) },
      { op: 'sadd', key: key.search(phone), members: ['11'] },
    ]);
    expect(plan.changes).toEqual([
      { kind: 'phone', from: phone.value, to: phone.value, outcome: 'search-only', extensions: ['101'] },
    ]);
    expect(plan.extensionSets).toBe(1);
    // In the extension's set already (a pass stopped half-way): not added again.
    const again = planReindex({ ...input, inExtensionSets: new Set([key.searchExtension(phone, '101')]) });
    expect(again.extensionSets).toBe(0);
    // Also written without an extension: the person's own number, nothing to do.
    const plain = new Map([['+74951234567', { extensions: new Set(['101']), plain: true }]]);
    expect(planReindex({ ...input, evidence: plain }).writes).toEqual([]);
  });
});

describe('nameIndexOf: the name index a record calls for', () => {
  const names = (...values: string[]) => ({ names: values.map((v) => ({ v, at: AT })) });

  it('every name under today’s words; stale: words only the folding before 7655d60 gave', () => {
    // A Latin o in a Cyrillic word: "иванoв" then, "иванов" now; й is и either way.
    expect(nameIndexOf(names('Иванoв Сергей', 'Ivan'))).toEqual({
      words: ['иванов', 'сергеи', 'ivan'],
      stale: ['иванoв'],
    });
    expect(nameIndexOf(names('Анна Кузнецова', 'Mаria'))).toEqual({
      words: ['анна', 'кузнецова', 'maria'],
      stale: ['mаria'],
    });
    expect(nameIndexOf(names())).toEqual({ words: [], stale: [] });
  });

  it('keeps a word today’s folding still gives another of the record’s names', () => {
    const long = `Иванoв${'а'.repeat(34)}`; // 40 units: folded now
    const plan = nameIndexOf(names(long, `${long}z`)); // 41, not foldable (z): cut as typed
    expect(plan.words).toEqual([`иванов${'а'.repeat(34)}`, `иванoв${'а'.repeat(34)}`]);
    expect(plan.stale).toEqual([]);
    expect(nameIndexOf(names(long)).stale).toEqual([`иванoв${'а'.repeat(34)}`]);
  });
});
