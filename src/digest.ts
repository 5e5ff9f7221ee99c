import * as crypto from 'node:crypto';

/**
 * What is hashed for a string: its UTF-8 bytes when it is well-formed (what every stored key was
 * made with), else a byte 0xFF — which UTF-8 never contains, so no well-formed string hashes the
 * same bytes — then its UTF-16 code units. UTF-8 alone is lossy: it writes every lone surrogate
 * as U+FFFD, and ids that differ only in one (JSON's `"\ud800"` and `"\ud801"`) would share a
 * dedupe key, and the second event be dropped as a repeat of the first.
 */
function lossless(data: string): string | Buffer {
  return wellFormed(data) ? data : Buffer.concat([ILL_FORMED, Buffer.from(data, 'utf16le')]);
}
const ILL_FORMED = Buffer.from([0xff]);

/** String.prototype.isWellFormed (Node 20; ES2024, newer than the lib this project compiles against). */
export function wellFormed(value: string): boolean {
  return (value as string & { isWellFormed(): boolean }).isWellFormed();
}

/**
 * A one-shot digest of a string (UTF-8; see `lossless` for lone surrogates): crypto.hash
 * (Node >= 20.12) computes it without a Hash object per call, which the hot path makes several of
 * per request (idempotency keys, entry and event ids, the guarded batch's expected-record
 * digests). Node 20.11, which package.json still allows, falls back to createHash.
 */
export const digest: (algorithm: 'sha1' | 'sha256', data: string, encoding: 'hex' | 'base64url') => string =
  typeof crypto.hash === 'function'
    ? (algorithm, data, encoding) => crypto.hash(algorithm, lossless(data), encoding)
    : (algorithm, data, encoding) => crypto.createHash(algorithm).update(lossless(data)).digest(encoding);

/**
 * The same one-shot digest as raw bytes (for constant-time comparison). Asked of crypto.hash as
 * 'binary' (latin1) text, one character per byte, so Buffer.from gives the same bytes back: its 'buffer'
 * output took Node 20.20 ~1.2 µs a call against ~0.7 µs this way (every webhook's token check;
 * bench/HISTORY.md, twenty-fifth round).
 */
export const digestBytes: (algorithm: 'sha1' | 'sha256', data: string) => Buffer =
  typeof crypto.hash === 'function'
    ? (algorithm, data) => Buffer.from(crypto.hash(algorithm, lossless(data), 'binary'), 'latin1')
    : (algorithm, data) => crypto.createHash(algorithm).update(lossless(data)).digest();

/**
 * The digest of a string's UTF-8 bytes, lone surrogates as U+FFFD: what Redis computes over the
 * value it stores (the guarded batch's expected values, a script's SHA-1). Not for keys or ids.
 */
export const digestUtf8: (
  algorithm: 'sha1' | 'sha256',
  data: string,
  encoding: 'hex' | 'base64url',
) => string =
  typeof crypto.hash === 'function'
    ? (algorithm, data, encoding) => crypto.hash(algorithm, data, encoding)
    : (algorithm, data, encoding) => crypto.createHash(algorithm).update(data, 'utf8').digest(encoding);
