/**
 * `new Date(ms).toISOString()` without the Date: the same text, about 3× faster (V8 formats a
 * Date through its date cache; this is arithmetic on the day count). A 50-message chat_finished
 * formats one time per message, and every timeline entry's time is formatted again when stored.
 * Integer milliseconds from 1970 to 9999 only (4-digit years); anything else goes through Date,
 * which also throws the RangeError for an invalid time as before.
 *
 * The text is made by one String.fromCharCode, so it is a flat string. Joined from its pieces
 * (a template literal) it was a tree of ~13 strings (a ConsString), which every JSON.stringify
 * and UTF-8 write of it flattened again: a 50-message transcript's times cost ~8 µs to format and
 * ~8 µs more to stringify that way, ~5 and ~4.5 µs now, and 470 bytes of garbage each
 * (bench/HISTORY.md, twenty-fifth round). The date's digits are kept for the last day formatted:
 * a transcript's times, and a request's, are mostly of one day.
 */
export function isoFromMs(ms: number): string {
  if (!Number.isInteger(ms) || ms < 0 || ms >= MAX_FOUR_DIGIT_YEAR_MS) return new Date(ms).toISOString();
  const days = Math.floor(ms / DAY_MS);
  if (days !== lastDay) dateOf(days);
  let rest = ms - days * DAY_MS;
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  const millis = rest - seconds * 1000;
  const d = lastDate;
  return String.fromCharCode(
    d[0]!,
    d[1]!,
    d[2]!,
    d[3]!,
    DASH,
    d[4]!,
    d[5]!,
    DASH,
    d[6]!,
    d[7]!,
    T,
    ZERO + Math.floor(hours / 10),
    ZERO + (hours % 10),
    COLON,
    ZERO + Math.floor(minutes / 10),
    ZERO + (minutes % 10),
    COLON,
    ZERO + Math.floor(seconds / 10),
    ZERO + (seconds % 10),
    DOT,
    ZERO + Math.floor(millis / 100),
    ZERO + (Math.floor(millis / 10) % 10),
    ZERO + (millis % 10),
    Z,
  );
}

const ZERO = 48;
const DASH = 45;
const COLON = 58;
const DOT = 46;
const T = 84;
const Z = 90;
/** The day last formatted (days since 1970) and the character codes of its YYYYMMDD. */
let lastDay = -1;
const lastDate = new Uint8Array(8);

/** Sets lastDay and lastDate to `days`'s civil date. */
function dateOf(days: number): void {
  // Civil date from a day count (Howard Hinnant's civil_from_days), in 400-year eras
  // of 146097 days, the year starting on 1 March so that a leap day is the year's last.
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor(
    (dayOfEra -
      Math.floor(dayOfEra / 1460) +
      Math.floor(dayOfEra / 36_524) -
      Math.floor(dayOfEra / 146_096)) /
      365,
  );
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const monthFromMarch = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * monthFromMarch + 2) / 5) + 1;
  const month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  lastDate[0] = ZERO + Math.floor(year / 1000);
  lastDate[1] = ZERO + (Math.floor(year / 100) % 10);
  lastDate[2] = ZERO + (Math.floor(year / 10) % 10);
  lastDate[3] = ZERO + (year % 10);
  lastDate[4] = ZERO + Math.floor(month / 10);
  lastDate[5] = ZERO + (month % 10);
  lastDate[6] = ZERO + Math.floor(day / 10);
  lastDate[7] = ZERO + (day % 10);
  lastDay = days;
}

const DAY_MS = 86_400_000;
/** 10000-01-01T00:00:00.000Z: from here on toISOString writes a signed 6-digit year. */
const MAX_FOUR_DIGIT_YEAR_MS = 253_402_300_800_000;

/**
 * `Date.parse`, except that an ISO date-time without a zone ("2026-01-05T10:00:00", or with a
 * space for the T) is read as UTC. Date.parse reads it in the process's local time (TZ), so the
 * same vendor payload gave 07:00Z on an instance run with TZ=Europe/Moscow (as schedules in Moscow
 * time ask) and 10:00Z on one on UTC. Which zone a vendor meant is unknown; UTC is the same on
 * every instance.
 */
export function parseTime(value: string): number {
  const local = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)$/.exec(value.trim());
  return Date.parse(local ? `${local[1]}T${local[2]}Z` : value);
}
