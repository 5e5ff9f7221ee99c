import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { jivoEnvelopeSchema } from '../adapters/jivochat/schemas.js';
import { webhookEnvelopeSchema } from '../adapters/livetex/schemas.js';
import { soft, softArray, softId, softText, softTime } from '../src/intake/wire.js';
import { parseWire } from '../src/intake/wire-parse.js';

/**
 * parseWire must be schema.parse, only faster (src/intake/wire-parse.ts): the same output (values,
 * present-but-undefined keys, key order) or the same failure, on every vendor fixture and on
 * mutants of them with odd values anywhere.
 */

function fixtures(vendor: string): unknown[] {
  const dir = join(import.meta.dirname, '..', 'adapters', vendor, '__fixtures__');
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .map((name) => JSON.parse(readFileSync(join(dir, name), 'utf8')));
}

/** Values with their keys in order and undefined kept, so that toEqual also compares those. */
function shapeOf(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shapeOf);
  if (typeof value === 'object' && value !== null)
    return Object.keys(value).map((key) => [key, shapeOf((value as Record<string, unknown>)[key])]);
  return value === undefined ? '(undefined)' : value;
}

function same(schema: z.ZodType, input: unknown): { fast: boolean } {
  const expected = schema.safeParse(input);
  let actual: { success: true; data: unknown } | { success: false };
  try {
    actual = { success: true, data: parseWire(schema, input) };
  } catch (error) {
    expect(error).toBeInstanceOf(z.ZodError);
    actual = { success: false };
  }
  expect(actual.success, JSON.stringify(input)).toBe(expected.success);
  if (actual.success && expected.success) {
    expect(shapeOf(actual.data)).toEqual(shapeOf(expected.data));
    expect(actual.data).toStrictEqual(expected.data);
  }
  return { fast: actual.success };
}

/** Every path to a value inside `value` (objects and arrays), the root included. */
function paths(value: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out = [at];
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) out.push(...paths(item, [...at, index]));
  } else if (typeof value === 'object' && value !== null)
    for (const key of Object.keys(value))
      out.push(...paths((value as Record<string, unknown>)[key], [...at, key]));
  return out;
}

const odd = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 1e21, 2016, '', ' ', ' 42 ', 'x'.repeat(70), '1718610000'),
  fc.constantFrom([], {}, [1, 'a', null, {}], { id: 7, title: ' t ' }, { nested: { deep: [1] } }),
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.jsonValue({ maxDepth: 3 }),
);

function mutate(
  base: unknown,
  path: Array<string | number>,
  action: 'set' | 'delete' | 'add',
  value: unknown,
) {
  const copy = structuredClone(base) as Record<string | number, unknown>;
  if (path.length === 0) return action === 'set' ? value : copy;
  let parent: Record<string | number, unknown> = copy;
  for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (action === 'set') parent[last] = value;
  else if (action === 'delete' && !Array.isArray(parent)) delete parent[last];
  else if (
    action === 'add' &&
    typeof parent[last] === 'object' &&
    parent[last] !== null &&
    !Array.isArray(parent[last])
  )
    (parent[last] as Record<string, unknown>).unexpected_field = value;
  return copy;
}

describe('parseWire', () => {
  for (const [vendor, schema] of [
    ['jivochat', jivoEnvelopeSchema],
    ['livetex', webhookEnvelopeSchema],
  ] as const) {
    it(`${vendor}: equal to the schema's parse on every fixture and on 3,000 mutants of them`, () => {
      const bases = fixtures(vendor);
      expect(bases.length).toBeGreaterThan(4);
      let fast = 0;
      let failed = 0;
      for (const base of bases) same(schema, base);
      fc.assert(
        fc.property(
          fc.nat(),
          fc.nat(),
          fc.constantFrom('set', 'set', 'delete', 'add') as fc.Arbitrary<'set' | 'delete' | 'add'>,
          odd,
          (which, where, action, value) => {
            const base = bases[which % bases.length];
            const all = paths(base);
            const input = mutate(base, all[where % all.length]!, action, value);
            if (same(schema, input).fast) fast++;
            else failed++;
          },
        ),
        { numRuns: 3000, seed: 20261203 },
      );
      // Both answers were reached (the root itself is sometimes replaced by a non-object).
      expect(fast).toBeGreaterThan(1000);
      expect(failed).toBeGreaterThan(10);
    });
  }

  it('keeps zod out of the common case: a JivoChat envelope is read without running its schema', () => {
    const payload = fixtures('jivochat')[0];
    const safeParse = vi.spyOn(jivoEnvelopeSchema, 'safeParse');
    const parse = vi.spyOn(jivoEnvelopeSchema, 'parse');
    try {
      parseWire(jivoEnvelopeSchema, payload);
      expect(safeParse).not.toHaveBeenCalled();
      expect(parse).not.toHaveBeenCalled();
    } finally {
      safeParse.mockRestore();
      parse.mockRestore();
    }
  });

  it('reads the kit and plain nodes alike: absent stays absent, __proto__ is not copied, failures are zod errors', () => {
    const schema = z.looseObject({
      name: softText,
      id: softId(4),
      at: softTime,
      inner: soft(z.looseObject({ n: z.number(), flag: z.boolean(), s: z.string() })),
      list: softArray(z.looseObject({ s: z.string() })),
      required: z.string(),
      strict: soft(z.strictObject({ a: z.string() })),
      record: soft(z.record(z.string(), z.unknown())),
    });
    const inputs = [
      { required: 'r' },
      { required: 'r', name: undefined, id: ' 123 ', at: 1718610000 },
      { required: 'r', id: '12345', inner: { n: 1, flag: true, s: 'x', more: [1] } },
      { required: 'r', inner: { n: '1', flag: true, s: 'x' }, list: [{ s: 'a' }, { s: 1 }, 3, null] },
      { required: 'r', list: 'no', strict: { a: 'x', b: 1 }, record: { a: 1 } },
      JSON.parse(
        '{"required":"r","__proto__":{"polluted":true},"inner":{"n":1,"flag":false,"s":"","__proto__":{"x":1}}}',
      ),
      { required: 1 },
      {},
      [],
      null,
      'text',
    ];
    for (const input of inputs) same(schema, input);
    expect(() => parseWire(schema, {})).toThrow(z.ZodError);
    const out = parseWire(schema, inputs[5]) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.hasOwn(out, '__proto__')).toBe(false);
  });

  it('reads any key a schema may declare, as code would spell it or not (each object reader is generated from its keys)', () => {
    // Keys that are no identifiers, look like array indexes, name Object.prototype's members, or
    // would end or break a string literal if written into code unescaped.
    const odd = [
      '0',
      '12',
      'a-b',
      'constructor',
      'toString',
      'hasOwnProperty',
      'quote"d',
      "it's",
      'back\\slash',
      'line\nbreak',
      '\u2028',
      '${x}',
      '',
      ' ',
    ];
    const shape = Object.fromEntries(odd.map((key) => [key, softText]));
    const strict = z.object({ ...shape, need: z.string() });
    const loose = z.looseObject(shape);
    const full = Object.fromEntries(odd.map((key, index) => [key, `v${index}`]));
    const inputs = [
      {},
      full,
      { ...full, need: 'n', extra: 1, 7: 'seven' },
      Object.fromEntries(odd.filter((_, index) => index % 2 === 0).map((key) => [key, 42])),
      JSON.parse('{"constructor":null,"toString":" t ","__proto__":{"polluted":true},"need":"x"}'),
    ];
    for (const input of inputs) {
      same(strict, input);
      same(loose, input);
    }
    expect(parseWire(loose, full)).toStrictEqual(loose.parse(full));
  });

  it("reads a record of unknown values as zod does, without running zod for JSON's objects", () => {
    const record = z.record(z.string(), z.unknown());
    const schema = z.looseObject({ social: soft(record), plain: record });
    const symbolKeyed = { a: 1, [Symbol('s')]: 2 };
    const hidden = Object.defineProperty({ shown: 1 }, 'hidden', { value: 2, enumerable: false });
    class Instance {
      field = 1;
    }
    const inputs: unknown[] = [
      { plain: {} },
      { plain: { b: 2, a: 1, 10: 'ten', 2: 'two', undefinedValue: undefined, nested: { deep: [1] } } },
      JSON.parse('{"plain":{"__proto__":{"polluted":true},"x":1},"social":{"__proto__":1}}'),
      JSON.parse('{"plain":{"constructor":"text","toString":null},"social":{"constructor":{"prototype":1}}}'),
      { plain: {}, social: [] },
      { plain: {}, social: null },
      { plain: {}, social: 'text' },
      { plain: [] },
      { plain: null },
      { plain: Object.create(null) },
      { plain: Object.assign(Object.create(null), { a: 1 }) },
      { plain: symbolKeyed },
      { plain: hidden },
      { plain: new Instance() },
      { plain: new Map([['a', 1]]) },
      { plain: new Date(0) },
    ];
    for (const input of inputs) same(schema, input);
    const safeParse = vi.spyOn(record, 'safeParse');
    try {
      for (const input of inputs.slice(0, 4)) parseWire(schema, input);
      expect(safeParse).not.toHaveBeenCalled();
      // A symbol key (no JSON has one) is zod's to judge.
      same(schema, { plain: symbolKeyed });
      expect(safeParse).toHaveBeenCalled();
    } finally {
      safeParse.mockRestore();
    }
  });
});
