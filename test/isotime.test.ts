import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isoFromMs } from '../src/isotime.js';

describe('isoFromMs', () => {
  it('writes what Date#toISOString writes, for every time a Date can hold', () => {
    const edges = [
      0, // 1970-01-01
      951_782_400_000, // 2000-02-29 (a leap day of a century divisible by 400)
      951_868_799_999, // its last millisecond
      4_107_542_400_000, // 2100-03-01 (2100 has no 29 February)
      4_107_542_399_999,
      1_718_610_000_000,
      253_402_300_799_999, // 9999-12-31T23:59:59.999Z, the last 4-digit year
      253_402_300_800_000, // 10000: +010000-… through Date
      -1, // before 1970: through Date
      8.64e15,
      -8.64e15,
      1.5, // not an integer: through Date (it truncates)
    ];
    for (const ms of edges) expect(isoFromMs(ms), String(ms)).toBe(new Date(ms).toISOString());
    fc.assert(
      fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), (ms) => {
        expect(isoFromMs(ms)).toBe(new Date(ms).toISOString());
      }),
      { numRuns: 20_000 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 253_402_300_799_999 }), (ms) => {
        expect(isoFromMs(ms)).toBe(new Date(ms).toISOString());
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes the right date when times of one day and of others follow each other (the last day is kept)', () => {
    // A transcript's times (one day, then the next across midnight), and times of two days in turn:
    // the date part kept from the call before must be used only for a time of that same day.
    const midnight = 1_718_668_800_000; // 2024-06-18T00:00:00.000Z
    const times = [
      ...Array.from({ length: 50 }, (_, index) => midnight - 25 * 60_000 + index * 30_000),
      ...Array.from({ length: 20 }, (_, index) => (index % 2 === 0 ? midnight - 1 : midnight) + index),
      951_868_799_999, // 2000-02-29T23:59:59.999Z
      951_868_800_000, // 2000-03-01
      951_782_400_000, // 2000-02-29 again
      0,
      253_402_300_799_999,
      midnight,
    ];
    for (const ms of times) expect(isoFromMs(ms), String(ms)).toBe(new Date(ms).toISOString());
    fc.assert(
      fc.property(
        // Times of three neighbouring days in any order: mostly the kept day, sometimes another.
        fc.integer({ min: 0, max: 2_932_894 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 86_399_999 })), {
          maxLength: 20,
        }),
        (firstDay, pairs) => {
          for (const [day, time] of pairs) {
            const ms = (firstDay + day) * 86_400_000 + time;
            expect(isoFromMs(ms)).toBe(new Date(ms).toISOString());
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('throws for a time a Date cannot hold, as toISOString does', () => {
    expect(() => isoFromMs(Number.NaN)).toThrow(RangeError);
    expect(() => isoFromMs(8.64e15 + 1)).toThrow(RangeError);
  });
});

describe('a vendor time without a zone', () => {
  it('is read as UTC whatever TZ the process runs with (TZ=Europe/Moscow for schedules)', async () => {
    const { isoTime } = await import('../src/intake/wire.js');
    const { isoOf } = await import('../src/contacts/timeline.js');
    const before = process.env.TZ;
    process.env.TZ = 'Europe/Moscow'; // Node reads TZ again when it is set
    try {
      // Read as local time, the same payload gave 07:00Z here and 10:00Z on an instance on UTC.
      expect(isoTime('2026-01-05T10:00:00')).toBe('2026-01-05T10:00:00.000Z');
      expect(isoTime('2026-01-05 10:00:00.250')).toBe('2026-01-05T10:00:00.250Z');
      expect(isoOf('2026-01-05T10:00')).toBe('2026-01-05T10:00:00.000Z');
      // A time that names its zone is read in it.
      expect(isoTime('2026-01-05T10:00:00+03:00')).toBe('2026-01-05T07:00:00.000Z');
      expect(isoOf('2026-01-05T10:00:00Z')).toBe('2026-01-05T10:00:00.000Z');
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });
});
