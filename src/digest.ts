import * as crypto from 'node:crypto';

/**
 * A one-shot digest of a string (UTF-8): crypto.hash (Node >= 20.12) computes it without a Hash
 * object per call, which the hot path makes several of per request (idempotency keys, entry and
 * event ids, the guarded batch's expected-record digests). Node 20.11, which package.json still
 * allows, falls back to createHash.
 */
export const digest: (algorithm: 'sha1' | 'sha256', data: string, encoding: 'hex' | 'base64url') => string =
  typeof crypto.hash === 'function'
    ? (algorithm, data, encoding) => crypto.hash(algorithm, data, encoding)
    : (algorithm, data, encoding) => crypto.createHash(algorithm).update(data, 'utf8').digest(encoding);

/** The same one-shot digest as raw bytes (for constant-time comparison). */
export const digestBytes: (algorithm: 'sha1' | 'sha256', data: string) => Buffer =
  typeof crypto.hash === 'function'
    ? (algorithm, data) => crypto.hash(algorithm, data, 'buffer') as unknown as Buffer
    : (algorithm, data) => crypto.createHash(algorithm).update(data, 'utf8').digest();
