import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { itemHeaderSchema, readItemHeader } from '../src/intake/deferred.js';

/**
 * readItemHeader reads a deferred item's header without zod when it is exactly as `append` writes
 * it, and hands everything else to the schema: the two must accept the same values and give the
 * same fields (or both refuse).
 */
function outcome(read: () => unknown): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: read() };
  } catch {
    return { ok: false };
  }
}

function expectSame(value: unknown) {
  const fast = outcome(() => readItemHeader(value));
  const zod = outcome(() => itemHeaderSchema.parse(value));
  expect(fast.ok).toBe(zod.ok);
  if (fast.ok && zod.ok) expect({ ...(fast.value as object) }).toStrictEqual({ ...(zod.value as object) });
}

const written = {
  v: 2,
  id: 'AbCdEfGhIjKlMnOpQrStUvWx.17',
  channelId: 'site',
  vendor: 'jivochat',
  event: 'chat_finished',
  contentType: 'application/json',
  receivedAt: 1764943200123,
};

describe('readItemHeader', () => {
  it('takes a header as append writes it, with and without its optional fields', () => {
    const texts = [
      JSON.stringify(written),
      JSON.stringify({ ...written, path: '/dialog' }),
      JSON.stringify({ ...written, contentType: null }),
      JSON.stringify({ v: 2, channelId: 'a', vendor: 'b', event: 'c', contentType: null, receivedAt: 0 }),
    ];
    for (const text of texts) {
      const value = JSON.parse(text);
      expect(readItemHeader(value)).toStrictEqual(itemHeaderSchema.parse(JSON.parse(text)));
      expectSame(JSON.parse(text));
    }
  });

  it('leaves every other shape to the schema: the same fields, or both refuse', () => {
    const odd = [
      null,
      [],
      'text',
      7,
      {},
      { ...written, v: 1 },
      { ...written, v: '2' },
      { ...written, id: 5 },
      { ...written, id: null },
      { ...written, channelId: undefined },
      { ...written, contentType: undefined },
      { ...written, receivedAt: '1' },
      { ...written, receivedAt: Number.NaN },
      { ...written, path: null },
      { ...written, extra: 'kept out' },
      Object.assign(Object.create({ inherited: 1 }), written),
    ];
    for (const value of odd) expectSame(value);
    // JSON's own oddities: a number read as Infinity, a "__proto__" key.
    expectSame(JSON.parse(JSON.stringify(written).replace('1764943200123', '1e400')));
    expectSame(JSON.parse(`${JSON.stringify(written).slice(0, -1)},"__proto__":{"x":1}}`));
  });

  it('agrees with the schema on generated headers', () => {
    const field = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.double(),
      fc.constant(null),
      fc.constant(undefined),
      fc.boolean(),
      fc.constant(2),
    );
    const header = fc.record(
      {
        v: fc.oneof(fc.constant(2), field),
        id: fc.oneof(fc.string(), field),
        channelId: fc.oneof(fc.string(), field),
        vendor: fc.oneof(fc.string(), field),
        event: fc.oneof(fc.string(), field),
        path: fc.oneof(fc.string(), field),
        contentType: fc.oneof(fc.string(), fc.constant(null), field),
        receivedAt: fc.oneof(fc.double(), fc.integer(), field),
        other: field,
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(header, (value) => {
        expectSame(value);
        // And as read back from JSON text, as the worker reads it.
        expectSame(JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 5_000 },
    );
  });
});
