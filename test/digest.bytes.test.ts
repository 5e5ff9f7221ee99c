import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { digest, digestBytes } from '../src/digest.js';

/**
 * digestBytes asks crypto.hash for latin1 text and turns it back into bytes (cheaper than its
 * 'buffer' output): the bytes must be the digest's, for every byte value a digest can hold, and
 * the text hashed the same as digest() hashes it (lone surrogates included).
 */
describe('digestBytes', () => {
  const texts = [
    '',
    'jivochat-6a4683e0ee9933a90865e809',
    'токен-канала',
    '😀 emoji',
    'lone \ud800 surrogate',
    ...Array.from({ length: 200 }, (_, index) => `token-${index}`),
  ];

  it('is the SHA-256 of the UTF-8 text as raw bytes', () => {
    for (const text of texts.filter((each) => !each.includes('\ud800'))) {
      expect(digestBytes('sha256', text).equals(createHash('sha256').update(text, 'utf8').digest())).toBe(
        true,
      );
    }
  });

  it('holds the same digest as digest() for every text, lone surrogates included', () => {
    const seenBytes = new Set<number>();
    for (const text of texts) {
      const bytes = digestBytes('sha256', text);
      expect(bytes).toHaveLength(32);
      expect(bytes.toString('base64url')).toBe(digest('sha256', text, 'base64url'));
      for (const byte of bytes) seenBytes.add(byte);
    }
    // The texts' digests reach bytes above 0x7f, where a lossy text round trip would show.
    expect([...seenBytes].some((byte) => byte >= 0x80)).toBe(true);
  });
});
