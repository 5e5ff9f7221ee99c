import { describe, expect, it } from 'vitest';
import { wireJson } from '../src/net/http.js';

/**
 * What chatbridge sends to other systems is JSON any strict parser takes: a lone UTF-16 surrogate
 * (half an emoji cut by a vendor's length limit, or hostile text) is written as U+FFFD, because
 * PHP's json_decode (amoCRM, Bitrix24, many webhook receivers) and serde_json refuse the whole
 * body for one `\ud83d`.
 */
describe('wireJson', () => {
  it('writes lone surrogates as U+FFFD and leaves pairs, escaped backslashes and other escapes alone', () => {
    const value = {
      cut: 'thanks \ud83d',
      low: '\udc00 start',
      pair: 'ok 😀',
      // A backslash followed by the text "ud83d" is no surrogate: it stays as it was.
      literal: '\\ud83d and \\\\ud83d',
      both: '\\\ud83d',
      control: 'tab\there',
    };
    const text = wireJson(value);
    expect(text).not.toMatch(/(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/);
    expect(JSON.parse(text)).toEqual({
      cut: 'thanks \ufffd',
      low: '\ufffd start',
      pair: 'ok 😀',
      literal: '\\ud83d and \\\\ud83d',
      both: '\\\ufffd',
      control: 'tab\there',
    });
    // Well-formed text is JSON.stringify's, byte for byte.
    const plain = { a: 'x', b: [1, 'é😀'] };
    expect(wireJson(plain)).toBe(JSON.stringify(plain));
  });
});
