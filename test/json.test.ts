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

  it("says why a text is not JSON without the text's control and bidi characters", () => {
    // V8's message quotes a piece of the text; a terminal showing the 400 must not obey it.
    for (const text of ['{"a": \u001b[2J\u202E evil}', '\u0007\u0000']) {
      let message = '';
      try {
        parseJson(text);
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^the body is not valid JSON: /);
      const unshowable = [...message].filter((char) => char < ' ' || char === '\u202E');
      expect(unshowable).toEqual([]);
    }
  });

  it('jumps over strings exactly as a character-by-character scan would (escaped quotes, backslash runs)', () => {
    // The plain scan the fast one replaced, kept here as the reference.
    const reference = (text: string, limit: number): boolean => {
      let depth = 0;
      let inString = false;
      for (let index = 0; index < text.length; index++) {
        const code = text.charCodeAt(index);
        if (inString) {
          if (code === 92) index++;
          else if (code === 34) inString = false;
        } else if (code === 34) inString = true;
        else if (code === 123 || code === 91) {
          if (++depth > limit) return true;
        } else if (code === 125 || code === 93) depth--;
      }
      return false;
    };
    const alphabet = ['"', '\\', '[', ']', '{', '}', 'a', ',', ':', 'ж'];
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let deepOnes = 0;
    for (let round = 0; round < 5000; round++) {
      const length = 1 + Math.floor(random() * 40);
      let text = '';
      for (let index = 0; index < length; index++) text += alphabet[Math.floor(random() * alphabet.length)];
      const want = reference(text, 3);
      if (want) deepOnes++;
      expect([text, jsonDepthExceeds(text, 3)]).toEqual([text, want]);
    }
    expect(deepOnes).toBeGreaterThan(100); // the inputs did reach both answers
    expect(jsonDepthExceeds('["\\\\", [[[["x"]]]]]', 3)).toBe(true); // "\\\\" ends after an even run
    expect(jsonDepthExceeds('["\\\\\\"[[[[", "x"]', 3)).toBe(false); // an odd run: the quote is text
  });
});
