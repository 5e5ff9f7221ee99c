import { describe, expect, it } from 'vitest';
import { extend } from '../src/extend.js';

describe('extend (object spread without the slow path)', () => {
  it('copies as { ...base, ...extra } does: same keys, same order, extra winning in place', () => {
    const base = { a: 1, b: 2, c: 3 };
    const extra = { b: 20, d: 4 };
    const out = extend(base, extra);
    expect(out).toEqual({ ...base, ...extra });
    expect(Object.keys(out)).toEqual(Object.keys({ ...base, ...extra }));
    expect(JSON.stringify(out)).toBe(JSON.stringify({ ...base, ...extra }));
    // A new object: neither input is changed.
    expect(base).toEqual({ a: 1, b: 2, c: 3 });
    expect(out).not.toBe(base);
  });

  it('keeps a __proto__ key from parsed JSON a plain property, as spread does', () => {
    const hostile = JSON.parse('{"__proto__":{"polluted":true},"name":"x"}') as Record<string, unknown>;
    const out = extend(hostile, { raw: 1 }) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(out.polluted).toBeUndefined();
    expect(Object.keys(out)).toEqual(['__proto__', 'name', 'raw']);
    expect(JSON.stringify(out)).toBe(JSON.stringify({ ...hostile, raw: 1 }));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('copies own enumerable properties only (and reads getters, as spread does)', () => {
    const base = Object.create({ inherited: 1 }) as Record<string, unknown>;
    Object.defineProperty(base, 'hidden', { value: 1, enumerable: false });
    Object.defineProperty(base, 'computed', { get: () => 42, enumerable: true });
    base.own = 2;
    expect(extend(base, {})).toEqual({ computed: 42, own: 2 });
  });
});
