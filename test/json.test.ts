import { describe, expect, it } from 'vitest';
import { jsonDepthExceeds, MAX_JSON_DEPTH, parseJson } from '../src/http/json.js';

describe('parseJson', () => {
  it('parses ordinary JSON, with brackets inside strings not counted as nesting', () => {
    expect(parseJson('{"a":[1,{"b":"[[[{{{"}]}')).toEqual({ a: [1, { b: '[[[{{{' }] });
    expect(jsonDepthExceeds(`"${'['.repeat(500)}"`)).toBe(false);
    expect(jsonDepthExceeds(`"\\"${'['.repeat(500)}"`)).toBe(false);
  });

  it('refuses nesting beyond the limit with a 400, and invalid JSON with a 400', () => {
    const ok = `${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`;
    expect(() => parseJson(ok)).not.toThrow();
    const deep = `${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`;
    expect(() => parseJson(deep)).toThrow(expect.objectContaining({ status: 400, code: 'json_too_deep' }));
    expect(() => parseJson('{"a":')).toThrow(expect.objectContaining({ status: 400, code: 'invalid_json' }));
    // Deep enough that JSON.stringify would overflow the stack later on.
    const hostile = `{"a":${'{"b":'.repeat(20_000)}1${'}'.repeat(20_000)}}`;
    expect(() => parseJson(hostile)).toThrow(expect.objectContaining({ code: 'json_too_deep' }));
  });
});
