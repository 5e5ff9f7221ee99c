import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIntakeRequest } from '../src/intake/pipeline.js';
import { encodeCall } from '../src/store/script-command.js';
import { ENCODE_TRANSCODED_UNITS, utf8BytesVia, utf8Text } from '../src/utf8.js';

/**
 * src/utf8.ts decodes and encodes long non-ASCII text through simdutf (node:buffer's transcode)
 * instead of V8's coder: the text and bytes must be V8's exactly, whatever the input — invalid
 * UTF-8 (V8's replacement characters), lone surrogates (V8's U+FFFD), a BOM, astral characters.
 */

// Long enough to go through transcode (1 KB and more), in the scripts our vendors send.
const longText = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 600, maxLength: 6000 }),
  fc.constantFrom(
    'Добрый день! Хочу вернуть чайник 🫖 '.repeat(200),
    'Grüße aus Köln, ça va? '.repeat(300),
    'plain ASCII text only '.repeat(400),
    '\uFEFF{"message":"Здравствуйте"}'.repeat(80),
    '中文字符和表情😀'.repeat(500),
  ),
);

/** Valid UTF-8 with, sometimes, a byte changed or cut: invalid sequences in any place. */
const bodyBytes = fc.oneof(
  longText.map((text) => Buffer.from(text, 'utf8')),
  fc.tuple(longText, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([text, at, byte]) => {
    const bytes = Buffer.from(text, 'utf8');
    bytes[at % bytes.length] = byte;
    return bytes;
  }),
  fc.tuple(longText, fc.nat()).map(([text, cut]) => {
    const bytes = Buffer.from(text, 'utf8');
    return bytes.subarray(0, Math.max(1, cut % bytes.length));
  }),
  fc.uint8Array({ minLength: 1000, maxLength: 5000 }).map((bytes) => Buffer.from(bytes)),
  // Surrogates encoded on their own (CESU-8), overlong forms, past U+10FFFF: invalid UTF-8.
  fc
    .tuple(longText, fc.constantFrom('eda080', 'edbfbf', 'c0af', 'e080af', 'f4908080', 'ff', 'e282'))
    .map(([text, hex]) => Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from(hex, 'hex')])),
);

describe('utf8Text', () => {
  it("is the body's toString('utf8'), valid UTF-8 or not", () => {
    fc.assert(
      fc.property(bodyBytes, (bytes) => {
        expect(utf8Text(bytes)).toBe(bytes.toString('utf8'));
      }),
      { numRuns: 600 },
    );
  });

  it('parses a body into the same value as before, a BOM and replacement characters included', () => {
    const route = { body: 'json' as const };
    const bodies = [
      Buffer.from(`\uFEFF${JSON.stringify({ message: 'Добрый день! '.repeat(200) })}`, 'utf8'),
      Buffer.concat([
        Buffer.from('{"message":"', 'utf8'),
        Buffer.from('Ж'.repeat(800), 'utf8'),
        Buffer.from('eda080ff', 'hex'),
        Buffer.from('"}', 'utf8'),
      ]),
    ];
    for (const body of bodies) {
      const parsed = parseIntakeRequest(route, body, 'application/json', new Date(0)).body;
      expect(parsed).toEqual(JSON.parse(body.toString('utf8').replace(/^\uFEFF/, '')));
    }
  });
});

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

describe('utf8BytesVia', () => {
  it("gives Buffer.from(text, 'utf8')'s bytes, or nothing for a text with a lone surrogate", () => {
    const scratch = Buffer.alloc(64 * 1024);
    const withLone = fc
      .tuple(longText, fc.nat(), fc.constantFrom('\ud800', '\udbff', '\udc00', '\udfff', '\udc00\ud800'))
      .map(([text, at, lone]) => {
        const cut = at % (text.length + 1);
        return text.slice(0, cut) + lone + text.slice(cut);
      });
    fc.assert(
      fc.property(fc.oneof(longText, withLone), fc.nat(1024), (text, offset) => {
        const bytes = utf8BytesVia(text, scratch, offset);
        if (!LONE_SURROGATE.test(text)) expect(bytes?.equals(Buffer.from(text, 'utf8'))).toBe(true);
        else expect(bytes).toBeUndefined();
      }),
      { numRuns: 400 },
    );
  });

  it('encodes script calls with long entries as V8 does, and keeps the earlier long items intact', () => {
    // encodeCall transcodes items of ENCODE_TRANSCODED_UNITS and more, writing their UTF-16 past
    // the bytes of earlier long items still waiting to be copied into the call.
    const long = (text: string) => text.repeat(Math.ceil((ENCODE_TRANSCODED_UNITS + 10) / text.length));
    const items = [
      long('Добрый день! '),
      'short',
      long('plain ascii '),
      `${long('Ж')}\ud800`,
      long('😀 Grüße '),
      'Ж'.repeat(2000),
      long('中文'),
    ];
    const bytes = encodeCall('evalsha', 'f'.repeat(40), ['k'], 'p:', items);
    let expected = `*${4 + items.length}\r\n$7\r\nevalsha\r\n$40\r\n${'f'.repeat(40)}\r\n$1\r\n1\r\n$3\r\np:k\r\n`;
    for (const item of items) expected += `$${Buffer.byteLength(item, 'utf8')}\r\n${item}\r\n`;
    expect(bytes.equals(Buffer.from(expected, 'utf8'))).toBe(true);
  });
});
