import { isAscii, isUtf8, transcode } from 'node:buffer';

/**
 * UTF-8 to and from text through simdutf (node:buffer's `transcode`, `isAscii`, `isUtf8`) where
 * V8's own coder is slow: in Node 20, `buffer.toString('utf8')` and `buffer.write(text, 'utf8')`
 * go one character at a time once a text is not ASCII. A chat_finished body of 9.4 KB with a
 * Cyrillic transcript took ~24 µs to decode that way, ~5 µs transcoded; its timeline entry (~15,000
 * UTF-16 units) ~12 µs to encode, ~4–5 µs transcoded (bench/HISTORY.md, twenty-sixth round). Both
 * give exactly the bytes and text V8's coder gives, or hand the work back to it.
 */

/**
 * Bodies under this many bytes are decoded by V8: transcode's Buffer costs about 1 µs, more than
 * it saves on a small text.
 */
const DECODE_TRANSCODED_BYTES = 1024;

/**
 * `bytes.toString('utf8')`: the same text. ASCII is left to V8 (it copies ASCII in one pass), and
 * so is anything that is not valid UTF-8, whose replacement characters are V8's to place. Valid
 * UTF-8 is decoded by transcode: for valid input there is one right answer, and both give it.
 */
export function utf8Text(bytes: Buffer): string {
  if (bytes.length < DECODE_TRANSCODED_BYTES || isAscii(bytes) || !isUtf8(bytes))
    return bytes.toString('utf8');
  return transcode(bytes, 'utf8', 'utf16le').toString('utf16le');
}

/**
 * Texts under this many UTF-16 units are encoded by V8: transcode's Buffer costs about 1 µs, and
 * an ASCII text (which V8 copies in one pass) costs 1–1.5 µs more transcoded.
 */
export const ENCODE_TRANSCODED_UNITS = 4096;

/**
 * `Buffer.from(text, 'utf8')`'s bytes, transcoded from the text's UTF-16 written into `scratch`
 * (which needs `text.length * 2` bytes from `offset`; what is there is overwritten) — or
 * undefined when `text` holds a lone surrogate: transcode refuses it, and V8 writes it as U+FFFD,
 * which is then the caller's to do as before. Worth it only for a long text that is not ASCII
 * (ENCODE_TRANSCODED_UNITS).
 */
export function utf8BytesVia(text: string, scratch: Buffer, offset: number): Buffer | undefined {
  const end = offset + scratch.write(text, offset, 'utf16le');
  try {
    return transcode(scratch.subarray(offset, end), 'utf16le', 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Where utf8Bytes writes a text's UTF-16 before transcoding it: reused (one call at a time, all
 * synchronous). A text longer than half of it is encoded by V8.
 */
const scratch = Buffer.allocUnsafeSlow(128 * 1024);

/**
 * `Buffer.from(text, 'utf8')`: the same bytes, in a Buffer of their own. A long text
 * (ENCODE_TRANSCODED_UNITS or more) goes through utf8BytesVia, unless it has a lone surrogate.
 */
export function utf8Bytes(text: string): Buffer {
  const bytes =
    text.length >= ENCODE_TRANSCODED_UNITS && text.length * 2 <= scratch.length
      ? utf8BytesVia(text, scratch, 0)
      : undefined;
  return bytes ?? Buffer.from(text, 'utf8');
}
