import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { transcriptOf } from '../src/contacts/types.js';
import {
  canonicalJson,
  digest,
  first,
  isoTime,
  KEY_PART_MAX,
  keyPart,
  soft,
  softArray,
  softId,
  softString,
  softText,
  softTime,
  text,
  wireId,
  wireText,
  wireTime,
} from '../src/intake/wire.js';

/** The shared adapter kit for lenient wire parsing (src/intake/wire.ts), and the one transcript shape. */

describe('lenient wire parsing', () => {
  it('the one-step fields give exactly what the composed ones give, present, absent or null', () => {
    const pairs: Array<[string, z.ZodType, z.ZodType]> = [
      ['text', soft(wireText), softText],
      ['string', soft(z.string()), softString],
      ['id', soft(wireId), softId()],
      ['id max 8', soft(wireId.pipe(z.string().max(8))), softId(8)],
      ['time', soft(wireTime), softTime],
    ];
    const value = fc.oneof(
      fc.anything(),
      fc.string(),
      fc.constantFrom('', ' ', ' 12 ', '123456789', 'x'.repeat(64), 'x'.repeat(65), '\t'),
      fc.double(),
      fc.integer(),
      fc.constantFrom(null, undefined, Number.NaN, Number.POSITIVE_INFINITY, -0, 0),
      fc.constantFrom(2 ** 53 - 1, 2 ** 53, -(2 ** 53), 2 ** 63, 1e21),
    );
    for (const [name, composed, oneStep] of pairs) {
      const before = z.looseObject({ f: composed });
      const after = z.looseObject({ f: oneStep });
      fc.assert(
        fc.property(value, fc.boolean(), (input, present) => {
          const payload = present ? { f: input, g: 1 } : { g: 1 };
          const a = before.parse(payload);
          const b = after.parse(payload);
          expect({ name, keys: Object.keys(b), value: b.f }).toEqual({
            name,
            keys: Object.keys(a),
            value: a.f,
          });
        }),
        { numRuns: 400 },
      );
    }
  });

  it('drops an unusable field instead of failing the payload', () => {
    const schema = z.object({ id: soft(wireId), name: soft(wireText), tags: softArray(z.string()) });
    expect(schema.parse({ id: 2016, name: 79161234567, tags: ['a', 5, 'b', null] })).toEqual({
      id: '2016',
      name: '79161234567',
      tags: ['a', 'b'],
    });
    expect(schema.parse({ id: { nested: true }, name: null, tags: 'nope' })).toEqual({
      id: undefined,
      name: null,
      tags: undefined,
    });
    expect(schema.parse({})).toEqual({});
  });

  it('reads ids as trimmed strings; empty is no id', () => {
    expect(wireId.parse(' 42 ')).toBe('42');
    expect(wireId.safeParse('  ').success).toBe(false);
    expect(wireId.safeParse(Number.NaN).success).toBe(false);
  });

  it('reads a number JSON.parse could not read exactly (past 2^53, Infinity) as no id and no text', () => {
    // 9007199254740993 and 9007199254740992 both parse to 2^53: as text they would be one id.
    const parsed = JSON.parse('{"a":9007199254740993,"b":1e400,"c":9007199254740991,"d":-9007199254740993}');
    const schema = z.object({ a: softId(), b: softId(), c: softId(), d: softId() });
    expect(schema.parse(parsed)).toEqual({ a: undefined, b: undefined, c: '9007199254740991', d: undefined });
    const texts = z.object({ a: softText, b: softText, c: softText, d: softText });
    expect(texts.parse(parsed)).toEqual({ a: undefined, b: undefined, c: '9007199254740991', d: undefined });
    expect(wireId.safeParse(parsed.a).success).toBe(false);
    expect(wireText.safeParse(parsed.a).success).toBe(false);
  });

  it('reads an id holding a lone surrogate as no id (it cannot be keyed or stored losslessly)', () => {
    for (const value of ['77\ud800', '\udc00x', 'a\ud800\ud800']) {
      expect(wireId.safeParse(value).success, value).toBe(false);
      expect(z.object({ id: softId() }).parse({ id: value }), value).toEqual({ id: undefined });
    }
    // A pair is one code point: a well-formed id.
    expect(wireId.parse('p-\ud83d\ude00')).toBe('p-\ud83d\ude00');
    expect(z.object({ id: softId() }).parse({ id: 'p-\ud83d\ude00' })).toEqual({ id: 'p-\ud83d\ude00' });
  });

  it('digests text with lone surrogates losslessly (UTF-8 would make them all U+FFFD)', () => {
    const digests = ['k\ud800', 'k\ud801', 'k\udc00', 'k\ufffd'].map((value) => digest(value));
    expect(new Set(digests).size).toBe(4);
  });

  it('reads times as ISO text, Unix seconds or milliseconds (numbers or numeric text), else nothing', () => {
    expect(isoTime(1718610000)).toBe('2024-06-17T07:40:00.000Z');
    expect(isoTime(1718610000123)).toBe('2024-06-17T07:40:00.123Z');
    expect(isoTime('1741950000000')).toBe('2025-03-14T11:00:00.000Z');
    expect(isoTime(1741950000)).toBe('2025-03-14T11:00:00.000Z');
    expect(isoTime('2025-03-14T09:12:05+03:00')).toBe('2025-03-14T06:12:05.000Z');
    for (const nonsense of [-1, 1e300, Number.NaN, undefined, null, 'yesterday']) {
      expect(isoTime(nonsense), String(nonsense)).toBeUndefined();
    }
    // Numbers are formatted without a Date now (src/isotime.ts): the same as through one.
    const throughDate = (value: number) => {
      const date = new Date(value >= 1e11 ? value : value * 1000);
      return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
    };
    expect(isoTime(1718610000.5)).toBe('2024-06-17T07:40:00.500Z');
    expect(isoTime(8.64e12)).toBe(throughDate(8.64e12));
    expect(isoTime(8.64e15 + 1)).toBeUndefined();
    // Only years 0000–9999: observations refuse toISOString's six-digit years (+010000-…).
    const lastMs = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
    const fourDigits = (value: number) => {
      const ms = Math.trunc(value >= 1e11 ? value : value * 1000);
      return ms > lastMs ? undefined : throughDate(value);
    };
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e16, noNaN: true }), (value) => {
        expect(isoTime(value)).toBe(fourDigits(value));
      }),
      { numRuns: 5000 },
    );
  });

  it('reads a time outside the years 0000–9999 as no time', () => {
    for (const outside of [
      '10000-01-01',
      '+010000-01-01T00:00:00Z',
      '-000001-12-31T00:00:00Z',
      '+275760-09-13T00:00:00Z',
      253_402_300_800_000,
      '253402300800000',
    ]) {
      expect(isoTime(outside), String(outside)).toBeUndefined();
    }
    expect(isoTime('9999-12-31T23:59:59.999Z')).toBe('9999-12-31T23:59:59.999Z');
    expect(isoTime(253_402_300_799_999)).toBe('9999-12-31T23:59:59.999Z');
    expect(isoTime('0000-01-01T00:00:00Z')).toBe('0000-01-01T00:00:00.000Z');
    expect(isoTime('1969-07-20T20:17:40Z')).toBe('1969-07-20T20:17:40.000Z');
  });

  it('keyPart keeps short parts and replaces long or ill-formed ones by a digest', () => {
    expect(keyPart('884213-2')).toBe('884213-2');
    expect(keyPart('d'.repeat(KEY_PART_MAX))).toBe('d'.repeat(KEY_PART_MAX));
    const long = keyPart('d'.repeat(494));
    expect(long).toBe(`~${digest('d'.repeat(494))}`);
    expect(keyPart('d'.repeat(495))).not.toBe(long);
    // Never one a short part could be: those that look like a digest are digested too.
    expect(keyPart(long)).not.toBe(long);
    expect(keyPart('a\ud800')).not.toBe(keyPart('a\ud801'));
    // The parts' separator: two splits of one text must not make one key.
    expect(keyPart('a:b')).toBe(`~${digest('a:b')}`);
    expect([keyPart('a:b'), keyPart('c')].join(':')).not.toBe([keyPart('a'), keyPart('b:c')].join(':'));
  });

  it('keeps the digests stored keys were made with', () => {
    const sha = (value: string, encoding: 'hex' | 'base64url') =>
      createHash('sha256').update(value).digest(encoding);
    expect(digest('dialog-1')).toBe(sha('dialog-1', 'base64url').slice(0, 32));
    expect(digest('text', 22)).toBe(sha('text', 'base64url').slice(0, 22));
    expect(digest('p-1', 16, 'hex')).toBe(sha('p-1', 'hex').slice(0, 16));
    expect(canonicalJson({ b: [1, { d: 3, c: 2 }], a: 1, x: undefined })).toBe(
      '{"a":1,"b":[1,{"c":2,"d":3}]}',
    );
  });

  it('has small readers for text vendors spell several ways', () => {
    expect(text('  a ')).toBe('a');
    expect(text('   ')).toBeUndefined();
    expect(first(undefined, null, 0, 1)).toBe(0);
  });
});

describe('the one transcript shape', () => {
  it('reads messages in the shape, and leaves out what does not fit it', () => {
    expect(
      transcriptOf({
        messages: [
          { at: '2024-05-01T10:00:00Z', author: { type: 'visitor', name: 'Maria' }, text: 'Hi' },
          { at: null, author: { type: 'robot' }, text: 'x' },
          'junk',
        ],
      }),
    ).toEqual([{ at: '2024-05-01T10:00:00Z', author: { type: 'visitor', name: 'Maria' }, text: 'Hi' }]);
    expect(transcriptOf({})).toEqual([]);
    expect(transcriptOf(undefined)).toEqual([]);
  });

  it('reads what Chatvisor stored before it (author as a word, agentEmail beside it)', () => {
    expect(
      transcriptOf({
        messages: [
          { at: null, author: 'customer', text: 'Hello' },
          { at: null, author: 'agent', agentEmail: 'oleg@shop.example', text: 'Hi' },
        ],
      }),
    ).toEqual([
      { at: null, author: { type: 'visitor' }, text: 'Hello' },
      { at: null, author: { type: 'agent', email: 'oleg@shop.example' }, text: 'Hi' },
    ]);
  });
});
