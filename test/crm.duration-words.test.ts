import { describe, expect, it } from 'vitest';
import { describeExpiry, durationInWords, expiresAtText } from '../src/crm/credentials.js';

/**
 * durationInWords is the one wording of a duration for people (a token's expiry in crm check, the
 * log and the console; how long ago the console's last crm check was). Under a minute it says so:
 * "1 minute" for a few seconds read wrong both ways (the console had a special case for it).
 */
describe('durationInWords', () => {
  it('says "under a minute" below one minute, then the largest whole unit', () => {
    expect([0, 1, 5_000, 59_999].map(durationInWords)).toEqual(Array(4).fill('under a minute'));
    expect(durationInWords(60_000)).toBe('1 minute');
    expect(durationInWords(90_000)).toBe('1 minute');
    expect(durationInWords(59 * 60_000)).toBe('59 minutes');
    expect(durationInWords(3 * 3_600_000 + 1)).toBe('3 hours');
    expect(durationInWords(12 * 86_400_000)).toBe('12 days');
  });

  it('expiry texts keep their meaning: a token seconds from expiry expires "in under a minute"', () => {
    const at = new Date('2026-12-05T12:00:00.000Z');
    expect(expiresAtText({ at, msLeft: 30_000 })).toBe(
      'token expires at 2026-12-05T12:00:00.000Z (in under a minute)',
    );
    expect(expiresAtText({ at, msLeft: 2 * 86_400_000 })).toBe(
      'token expires at 2026-12-05T12:00:00.000Z (in 2 days)',
    );
    expect(describeExpiry({ state: 'soon', at, msLeft: 30_000, renew: 'make a new one' }, 'amoCRM')).toBe(
      'token expires at 2026-12-05T12:00:00.000Z, in under a minute: then every delivery to amoCRM fails with 401 until it is replaced; make a new one',
    );
  });
});
