import { z } from 'zod';
import { digest as losslessDigest, wellFormed } from '../digest.js';
import { isoFromMs, parseTime } from '../isotime.js';

/**
 * The adapter kit for lenient wire parsing (issue 12 item 1): what every vendor adapter needs to
 * read payloads whose documentation disagrees with its samples. One copy here; adapters import it.
 *
 * The rule behind it: a vendor field of an unexpected shape is dropped, not fatal. The raw
 * payload is kept on the timeline entry, so a later remapping loses nothing, while one odd field
 * never costs the whole event.
 */

/**
 * What each schema made by this kit is, for parseWire (wire-parse.ts), which reads the kit's
 * combinators with plain functions instead of running their zod nodes one by one.
 */
export type KitSchema =
  | { kind: 'soft'; inner: z.ZodType }
  | { kind: 'softArray'; item: z.ZodType }
  | { kind: 'lenient'; read: (value: unknown) => unknown };
export const kitSchemas = new WeakMap<z.ZodType, KitSchema>();

/** A field that may be missing, null or of the wrong shape: anything unusable becomes undefined. */
export function soft<T extends z.ZodType>(schema: T) {
  const made = schema.nullish().catch(undefined);
  kitSchemas.set(made, { kind: 'soft', inner: schema });
  return made;
}

/** An array whose unusable items are dropped one by one instead of failing the array. */
export function softArray<T extends z.ZodType>(item: T) {
  const made = soft(
    z.array(z.unknown()).transform((items) =>
      items.flatMap((value) => {
        const parsed = item.safeParse(value);
        return parsed.success ? [parsed.data as z.output<T>] : [];
      }),
    ),
  );
  kitSchemas.set(made, { kind: 'softArray', item });
  return made;
}

/**
 * A number JSON.parse read exactly: finite, and at most 2^53 - 1 either way. Past that JSON.parse
 * rounds (a 64-bit id 9007199254740993 reads as 9007199254740992), and 1e400 reads as Infinity;
 * as text either would be another value than the vendor sent, so two customers' ids would become
 * one identifier (their contacts merged), or every such payload the id "Infinity". Such a
 * number is no id and no text.
 */
export function exactNumber(value: unknown): value is number {
  return typeof value === 'number' && value >= -Number.MAX_SAFE_INTEGER && value <= Number.MAX_SAFE_INTEGER;
}

/** zod's form of exactNumber. */
const exactNumberSchema = z.number().gte(-Number.MAX_SAFE_INTEGER).lte(Number.MAX_SAFE_INTEGER);

/**
 * Ids arrive as `"2016"` or `2016` depending on the vendor's serialiser, sometimes both in one
 * payload: always compare and store the trimmed string. Empty is no id, and so is one with a
 * lone surrogate (JSON's `"\ud800"`): Redis keys and values are UTF-8, which writes every lone
 * surrogate as U+FFFD, so `77\ud800` and `77\ud801` would be one id there. So is a number
 * JSON.parse could not read exactly (exactNumber).
 */
export const wireId = z
  .union([z.string(), exactNumberSchema])
  .transform((value) => String(value).trim())
  .pipe(z.string().min(1).refine(wellFormed, 'an id without lone surrogates'));

/**
 * Free text; a number where text is expected (a phone sent as 79161234567) is kept as text, when
 * it was read exactly (a user_token may be a person id: exactNumber).
 */
export const wireText = z.union([z.string(), exactNumberSchema]).transform((value) => String(value));

/** ISO 8601 text, or a Unix time in seconds or milliseconds (a number or numeric text). */
export const wireTime = z.union([z.string().min(1).max(64), z.number().finite()]);

/*
 * The same lenient fields in one step each. `soft(wireText)` and its kin nest five schemas
 * (catch, optional, nullable, union, transform) and the union records an issue for every id sent
 * as a number; on a webhook with some fifty such fields that was most of the vendor parse's time
 * and allocation. These give the same outputs (held equal by test/intake.wire.test.ts) with one
 * check by hand. Missing stays missing, null stays null, an unusable value becomes undefined.
 */
const lenient = <T>(read: (value: unknown) => T | undefined) => {
  const made = z
    .unknown()
    .transform((value): T | null | undefined => (value === null ? null : read(value)))
    .optional();
  kitSchemas.set(made, { kind: 'lenient', read });
  return made;
};

const finite = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);

/** soft(wireText): text, or an exactly read number as text. */
export const softText = lenient((value) =>
  typeof value === 'string' ? value : exactNumber(value) ? String(value) : undefined,
);

/** soft(z.string()). */
export const softString = lenient((value) => (typeof value === 'string' ? value : undefined));

/**
 * soft(wireId) (and soft(wireId.pipe(z.string().max(max)))): trimmed, non-empty, well-formed (no
 * lone surrogate), at most `max`.
 */
export function softId(max = Number.POSITIVE_INFINITY) {
  return lenient((value) => {
    const id =
      typeof value === 'string' ? value.trim() : exactNumber(value) ? String(value).trim() : undefined;
    return id && id.length <= max && wellFormed(id) ? id : undefined;
  });
}

/** soft(wireTime): 1–64 characters of text, or a finite number, for isoTime. */
export const softTime = lenient((value): string | number | undefined =>
  typeof value === 'string'
    ? value.length >= 1 && value.length <= 64
      ? value
      : undefined
    : finite(value)
      ? value
      : undefined,
);

/** Trimmed text, or undefined when there is none. */
export function text(value: string | null | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

// cutText lives with the other text cleaning (the contact engine cuts with it too).
export { cutText } from '../contacts/normalize.js';

/** The first value that is neither null nor undefined (vendors spell one field several ways). */
export function first<T>(...values: (T | null | undefined)[]): T | undefined {
  for (const value of values) if (value !== null && value !== undefined) return value;
  return undefined;
}

/**
 * A vendor time as ISO 8601: ISO text as is (any offset), numbers and numeric text as Unix time.
 * Seconds are documented everywhere, but a value of 1e11 or more can only be milliseconds (as
 * seconds it would be a date after the year 5000). Negative, non-finite or unreadable: undefined.
 * So is a time outside the years 0000–9999: ISO 8601 writes those with a sign and six digits
 * (`+010000-01-01…`), which an observation refuses, so one odd time would cost the whole event.
 */
export function isoTime(value: string | number | null | undefined): string | undefined {
  if (value === null || value === undefined) return undefined;
  const numeric =
    typeof value === 'number' ? value : /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : undefined;
  if (numeric !== undefined) {
    if (!Number.isFinite(numeric) || numeric < 0) return undefined;
    // The integer part, as `new Date(ms)` would hold it (TimeClip).
    const ms = Math.trunc(numeric >= 1e11 ? numeric : numeric * 1000);
    return ms > LAST_FOUR_DIGIT_MS ? undefined : isoFromMs(ms);
  }
  const parsed = parseTime(value as string);
  return Number.isNaN(parsed) || parsed < FIRST_FOUR_DIGIT_MS || parsed > LAST_FOUR_DIGIT_MS
    ? undefined
    : isoFromMs(parsed);
}

/** 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the times ISO 8601 writes with four digits. */
const FIRST_FOUR_DIGIT_MS = -62_167_219_200_000;
const LAST_FOUR_DIGIT_MS = 253_402_300_799_999;

/**
 * A short stable digest for keys (idempotency keys, store keys, logged subjects). Each adapter
 * keeps the length and encoding its stored keys were made with: changing them would make every
 * redelivery after an upgrade look new. SHA-256 of the UTF-8 text; a text with a lone surrogate
 * is hashed losslessly instead (src/digest.ts), so two that differ only there never share one.
 */
export function digest(value: string, length = 32, encoding: 'hex' | 'base64url' = 'base64url'): string {
  return losslessDigest('sha256', value, encoding).slice(0, length);
}

/**
 * The longest part of an idempotency key kept as it is (keyPart): three such parts and a vendor's
 * prefix stay well within the 512 characters an observation's key may have.
 */
export const KEY_PART_MAX = 200;

/**
 * One part of an idempotency key that comes from the vendor (a chat, dialog, customer or message
 * id, a status): as it is when it has at most KEY_PART_MAX characters, else `~` and its digest,
 * so that a long vendor id never fails the event on the key's length. A part with a lone
 * surrogate, or one that itself starts with `~`, is digested too: the key is then safe for the
 * store (UTF-8) and a digest never equals a part kept as it is. So is a part with a `:`, the
 * separator of the parts: kept, customer `a:b` with status `c` and customer `a` with status `b:c`
 * would make one key, and the second event would be taken for a repeat of the first. Every
 * adapter builds its keys' vendor parts with this; the parts kept as they are are what stored
 * keys were made with.
 */
export function keyPart(value: string): string {
  return value.length <= KEY_PART_MAX && !value.startsWith('~') && !value.includes(':') && wellFormed(value)
    ? value
    : `~${digest(value)}`;
}

/** JSON with sorted keys (undefined members left out), so the same data always hashes the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((key) => record[key] !== undefined)
      .sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** A JSON object (not null, not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
