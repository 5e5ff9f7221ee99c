import { domainToASCII, domainToUnicode } from 'node:url';
// libphonenumber-js's modern build with its "min" metadata passed in: the same parser and the same
// metadata as the package's default entry ('libphonenumber-js', which is "min" too), without that
// entry's costs per call: its build spreads options through Babel's _objectSpread (about a third
// of a parse) and copies each call's arguments to append the metadata.
import { type CountryCode, parsePhoneNumberFromString } from 'libphonenumber-js/core/es6';
import metadata from 'libphonenumber-js/min/metadata';
import type { Identifier } from './types.js';

/**
 * Identifier normalisation: the same person must produce the same key whichever vendor saw them.
 * E-mails are trimmed and lower-cased, an internationalised domain in its Unicode form (почта.рф,
 * not xn--80a1acny.xn--p1ai); phones become E.164 using the configured default country
 * (so the Russian trunk prefix "8 916 ..." becomes "+7916..."); blocklisted junk values
 * ("null", "0", "anonymous" ...) identify nobody.
 */
export const GLOBAL_KINDS = new Set(['person', 'email', 'phone']);

export interface NormalizeOptions {
  blocklist: ReadonlySet<string>;
  defaultCountry: string;
}

/** The options for the config's `identity` (blocklisted values compared trimmed and lower-cased). */
export function normalizeOptionsOf(identity: {
  blocklist: readonly string[];
  defaultCountry: string;
}): NormalizeOptions {
  return {
    blocklist: new Set(identity.blocklist.map((value) => value.trim().toLowerCase())),
    defaultCountry: identity.defaultCountry,
  };
}

export function normalizeEmail(value: string): string | null {
  const email = value.trim().toLowerCase();
  // Deliberately loose: vendors pass what visitors typed; we only refuse what cannot be an address.
  if (!(/^[^\s@]+@[^\s@]+$/.test(email) && email.length <= 254)) return null;
  return unicodeDomain(email);
}

/**
 * The address with its domain in Unicode form: a visitor types ivan@почта.рф, a CRM or a mail
 * system may hand back ivan@xn--80a1acny.xn--p1ai, and both must be one key. Unicode rather than
 * punycode because it is what people read and type (and what most stored keys already are). A
 * domain that is not a valid IDN is kept as typed; ASCII domains without "xn--" skip the work.
 */
function unicodeDomain(email: string): string {
  const at = email.lastIndexOf('@');
  const domain = email.slice(at + 1);
  if (/^[\x21-\x7e]*$/.test(domain) && !domain.includes('xn--')) return email;
  const ascii = domainToASCII(domain);
  const unicode = ascii === '' ? '' : domainToUnicode(ascii);
  return unicode === '' ? email : `${email.slice(0, at + 1)}${unicode}`;
}

/**
 * The ways a CRM may store a normalised address: as is, and with an internationalised domain in
 * punycode (a mail integration writes ivan@xn--80a1acny.xn--p1ai for ivan@почта.рф). The CRMs
 * search by text, so each form is asked for; a found value is compared through normalizeEmail.
 */
export function emailForms(email: string): string[] {
  const at = email.lastIndexOf('@');
  const domain = email.slice(at + 1);
  if (/^[\x21-\x7e]*$/.test(domain)) return [email];
  const ascii = domainToASCII(domain);
  return ascii === '' || ascii === domain ? [email] : [email, `${email.slice(0, at + 1)}${ascii}`];
}

/**
 * Parsed phones, by default country and text: libphonenumber's parse is the costliest step of
 * normalising an observation, and the same visitors' phones come back chat after chat. Bounded
 * (entries and key length), so a flood of distinct numbers only evicts; NOT_A_PHONE stands for
 * "not a phone" (the cache holds no null).
 *
 * Two generations of maps rather than an LRU: every new visitor's phone is a miss and an insert,
 * and lru-cache's bookkeeping for that (a "country|text" key built and hashed, its list, evicting
 * the oldest entry) cost a quarter of parsePhone's time under load (bench/HISTORY.md, round 28).
 * Inserts go to the recent generation; when it holds half the entries it becomes the older one
 * and the older is dropped whole. A hit in the older generation is copied to the recent one, so a
 * phone that keeps coming back stays.
 */
const PHONE_CACHE_MAX = 10_000;
const PHONE_CACHE_KEY_LENGTH = 64;
const NOT_A_PHONE: PhoneParts = { number: '' };
let recentPhones = new Map<string, Map<string, PhoneParts>>();
let olderPhones = new Map<string, Map<string, PhoneParts>>();
let recentPhoneCount = 0;

function cachedPhone(defaultCountry: string, text: string): PhoneParts | undefined {
  const recent = recentPhones.get(defaultCountry)?.get(text);
  if (recent !== undefined) return recent;
  const older = olderPhones.get(defaultCountry)?.get(text);
  if (older !== undefined) cachePhone(defaultCountry, text, older);
  return older;
}

function cachePhone(defaultCountry: string, text: string, parts: PhoneParts): void {
  if (recentPhoneCount >= PHONE_CACHE_MAX / 2) {
    olderPhones = recentPhones;
    recentPhones = new Map();
    recentPhoneCount = 0;
  }
  let byText = recentPhones.get(defaultCountry);
  if (byText === undefined) {
    byText = new Map();
    recentPhones.set(defaultCountry, byText);
  }
  byText.set(text, parts);
  recentPhoneCount += 1;
}

/** A phone as E.164 and, when one was written, its extension (digits). */
export interface PhoneParts {
  number: string;
  ext?: string;
}

/**
 * Extension words libphonenumber does not know: "д. 5" and "доп. 5" (дополнительный) as Russian
 * business cards write them, after the number and an optional comma. Rewritten to "доб. 5",
 * which it reads (as it reads "ext. 5", "x5", "#5"); without this the whole value was no phone.
 * The spaces after the comma are read only after a comma: written `[,;]?\s*`, a run of spaces
 * after a digit could be split between `[\s)]*` and `\s*` every way, and a 4,000-character value
 * of a digit, spaces and "д" took 30 ms (a CRM's answer of 1 MiB, hours).
 */
const RU_EXTENSION = /(\p{Nd}[\s)]*)(?:[,;]\s*)?(?:доп|д)\.?\s*(\p{Nd}{1,10})\s*$/iu;

/**
 * Whether the first "+" or decimal digit of a value is a "+". It was written as "strip what is
 * neither, NFKC, starts with +", which answers the same for every string (NFKC maps no digit to
 * "+" and composes nothing with a leading "+"; compared on every code point, and
 * test/contacts.phone-parse.test.ts compares parsePhone's answers) without the copy and the
 * normalisation.
 */
const STARTS_WITH_PLUS = /^[^+\p{Nd}]*\+/u;

/** The number and extension of `value`, read as normalizePhone does; null when it is no phone. */
export function parsePhone(value: string, defaultCountry: string): PhoneParts | null {
  const trimmed = value.trim();
  // Any decimal digit: libphonenumber reads fullwidth (８９１６…) and Arabic-Indic digits too.
  if (!/\p{Nd}/u.test(trimmed)) return null;
  const cacheable = trimmed.length <= PHONE_CACHE_KEY_LENGTH;
  const cached = cacheable ? cachedPhone(defaultCountry, trimmed) : undefined;
  if (cached !== undefined) return cached === NOT_A_PHONE ? null : cached;
  const text = /[дД]/.test(trimmed) ? trimmed.replace(RU_EXTENSION, '$1 доб. $2') : trimmed;
  const parsed = parsePhoneNumberFromString(text, defaultCountry as CountryCode, metadata);
  // A number written without a country code was read in the default country, and must exist
  // there: "8 044 123 45 67" (a Belarusian mobile, written the Belarusian way) and "044 123 45 67"
  // (a Kyiv landline) both read as +7 044…, a number Russia does not have, and joined two
  // strangers. Such a value is some other country's domestic form, which one we cannot tell: it
  // identifies nobody. A number given with its country code keeps the looser "possible" check.
  // "With its country code" means the first "+" or digit of the value is a "+" (a fullwidth
  // "＋" before it counts as neither, so "＋7 …" takes the "valid" check).
  const national = parsed !== undefined && !STARTS_WITH_PLUS.test(trimmed);
  const parts: PhoneParts | null =
    parsed && (national ? parsed.isValid() : parsed.isPossible())
      ? parsed.ext
        ? { number: parsed.number, ext: parsed.ext }
        : { number: parsed.number }
      : null;
  if (cacheable) cachePhone(defaultCountry, trimmed, parts ?? NOT_A_PHONE);
  return parts;
}

/** `value` as E.164 (an extension dropped: the contract's phones are E.164), or null. */
export function normalizePhone(value: string, defaultCountry: string): string | null {
  return parsePhone(value, defaultCountry)?.number ?? null;
}

/**
 * The numbers of one phone field: visitors and CRMs put two in one ("+7 916 123-45-67, +7 926
 * 765-43-21", with ";" or "/" too), which as one value was no phone at all. A piece with fewer
 * than 7 digits is not a number of its own but the end of the one before it ("…-67, доб. 101"),
 * and is joined back to it. A value without a separator is returned as is.
 */
export function splitPhones(value: string): string[] {
  if (!/[,;/]/.test(value)) return [value];
  const pieces: string[] = [];
  for (const piece of value.split(/[,;/]/)) {
    const digits = piece.match(/\p{Nd}/gu)?.length ?? 0;
    if (pieces.length > 0 && digits < 7) pieces[pieces.length - 1] += ` ${piece.trim()}`;
    else pieces.push(piece.trim());
  }
  return pieces.filter((piece) => piece !== '');
}

/**
 * Whether every number of a phone field is written with an extension: such a value is
 * search-only in the engine (colleagues share the number), so it holds no contact together.
 */
export function onlyPhonesWithExtension(value: string, defaultCountry: string): boolean {
  return splitPhones(value).every((piece) => parsePhone(piece, defaultCountry)?.ext !== undefined);
}

/**
 * Whether a phone as someone else stores it (any format: "8 905 777-01-23", "9057770123",
 * "+1 905 777 0123") is the number `e164`. A value without a country code is read in `e164`'s own
 * country, which is what it would have to mean to be that number; comparing only the last digits
 * (the CRMs' usual search) would take +1 905 777-01-23 for +7 905 777-01-23.
 */
export function samePhone(stored: string, e164: string): boolean {
  const country = parsePhoneNumberFromString(e164, metadata)?.country;
  if (country) return normalizePhone(stored, country) === e164;
  return stored.replace(/\D/g, '') === e164.replace(/\D/g, '');
}

/**
 * Characters that make two different-looking ids one key, or one id two keys: control characters
 * (NUL among them), bidi controls and invisible joiners, lone surrogates. A value that holds any
 * of them identifies nobody (refused, not stripped: stripping could make two ids one key).
 */
const UNSAFE_IN_IDS =
  /[\p{Cc}\u200B-\u200F\u202A-\u202E\u2060-\u2069\u061C\uFEFF\uFFF9-\uFFFB]|[\uD800-\uDFFF]/u;

/**
 * What a name or label may not hold, as it is shown to people (the console, agents' apps, CRMs):
 * control characters (NUL, BEL, escape, line breaks) and the bidi embeddings, overrides and
 * isolates (U+202A–U+202E, U+2066–U+2069), which reorder the text after them: a visitor named
 * "\u202Egnp.exe" reads backwards, and so does what a page shows next to the name on its line.
 * Lone surrogates cannot be stored as UTF-8 and are refused by JSON readers such as PHP's.
 */
const UNSHOWABLE = /[\p{Cc}\u202A-\u202E\u2066-\u2069]|[\uD800-\uDFFF]/u;
const UNSHOWABLE_ALL = /([\t\n\v\f\r\u0085])|[\p{Cc}\u202A-\u202E\u2066-\u2069]|([\uD800-\uDFFF])/gu;

/**
 * At most `max` UTF-16 units of `value`, never ending in the first half of a surrogate pair: a
 * plain `slice` cuts an emoji in two, and the lone half it leaves is written `\ud83d` in JSON,
 * which strict readers (PHP's json_decode, Rust's serde_json) refuse for the whole body.
 */
export function cutText(value: string, max: number): string {
  if (value.length <= max) return value;
  const last = value.charCodeAt(max - 1);
  return value.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/**
 * `value` in at most `limit` characters, the cut marked with …: cutText's, so never between the
 * two halves of a surrogate pair (half an emoji is a lone surrogate, written as `\ud83d` in every
 * JSON body and refused whole by strict readers).
 */
export function clipText(value: string, limit: number): string {
  return value.length > limit ? `${cutText(value, limit - 1)}…` : value;
}

/** How much of a caller's id an error message quotes (ids the bridge gives out are shorter). */
export const QUOTED_INPUT_CHARS = 80;

/**
 * Something a caller sent (an id from a path, a header value) as an error message quotes it: the
 * message goes back in the JSON error and on to terminals and logs, so at most `limit` characters
 * of it (cutText's cut, marked …) and nothing that clears a terminal or turns the text around
 * (cleanDisplayText). An id of 2 000 characters was quoted whole in a 404.
 */
export function quotedInput(value: string, limit = QUOTED_INPUT_CHARS): string {
  const cut = cutText(value, limit);
  return `${cleanDisplayText(cut) ?? ''}${cut.length < value.length ? '…' : ''}`;
}

/**
 * A name or label as it can be shown: whitespace controls (tab, line breaks) become spaces, other
 * controls and bidi embeddings, overrides and isolates are dropped, a lone surrogate becomes
 * U+FFFD; trimmed. Null when nothing is left. The marks (LRM, RLM) and joiners (ZWJ in emoji)
 * stay: they reorder nothing beyond themselves.
 */
export function cleanDisplayText(value: string): string | null {
  const cleaned = UNSHOWABLE.test(value)
    ? value.replace(UNSHOWABLE_ALL, (_all, space: string | undefined, lone: string | undefined) =>
        space ? ' ' : lone ? '\uFFFD' : '',
      )
    : value;
  const trimmed = cleaned.trim();
  return trimmed === '' ? null : trimmed;
}

/** NFC, so that the same visible id typed on two systems (é as one or two code points) is one key. */
export function cleanIdentifierValue(value: string): string | null {
  const trimmed = value.trim(); // surrounding whitespace (a trailing newline) is not part of an id
  if (UNSAFE_IN_IDS.test(trimmed)) return null;
  return trimmed.normalize('NFC');
}

export function normalizeIdentifier(
  identifier: Identifier,
  options: NormalizeOptions,
  channelId?: string,
): Identifier | null {
  const raw = cleanIdentifierValue(identifier.value);
  if (raw === null) return null;
  if (raw === '' || options.blocklist.has(raw.toLowerCase())) return null;
  switch (identifier.kind) {
    case 'email': {
      const value = normalizeEmail(raw);
      return value ? { kind: 'email', value } : null;
    }
    case 'phone': {
      // A field of several numbers stands for its first here (a search, an adapter's check that
      // a value identifies someone); the engine splits them before this (splitPhones).
      const [first = raw] = splitPhones(raw);
      const value = normalizePhone(first, options.defaultCountry);
      return value ? { kind: 'phone', value } : null;
    }
    case 'person':
      return { kind: 'person', value: raw };
    default: {
      // Vendor-local ids only mean something inside their channel.
      const scope = identifier.channelId ?? channelId;
      return scope ? { kind: identifier.kind, value: raw, channelId: scope } : null;
    }
  }
}

export function identifierLabel(identifier: Identifier): string {
  return identifier.channelId
    ? `${identifier.kind}:${identifier.channelId}:${identifier.value}`
    : `${identifier.kind}:${identifier.value}`;
}
