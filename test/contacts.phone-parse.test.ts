import fc from 'fast-check';
import {
  type CountryCode,
  getCountries as getCountriesBefore,
  isSupportedCountry as isSupportedCountryBefore,
  parsePhoneNumberFromString as parseBefore,
} from 'libphonenumber-js';
import { getCountries, getCountryCallingCode, isSupportedCountry } from 'libphonenumber-js/core/es6';
import metadata from 'libphonenumber-js/min/metadata';
import examples from 'libphonenumber-js/mobile/examples';
import { describe, expect, it } from 'vitest';
import {
  onlyPhonesWithExtension,
  type PhoneParts,
  parsePhone,
  samePhone,
  splitPhones,
} from '../src/contacts/normalize.js';

/**
 * parsePhone (issue 12: the costliest step of normalising a new visitor) was made cheaper without
 * changing one answer: it parses with libphonenumber-js's modern build and the same "min"
 * metadata, and tells a value with its country code by a pattern instead of a replace and NFKC.
 * Its answers are compared here with the function as it was (copied below, from main at 4a11178,
 * without its cache, which changes no answer), on every country's example number written many
 * ways and on many thousands of generated values: formats, extensions, digits of other scripts,
 * pluses that are not "+", junk, numbers one digit off. Each value is asked twice, so that the
 * new function's cached answer is compared too.
 */

const RU_EXTENSION_BEFORE = /(\p{Nd}[\s)]*)(?:[,;]\s*)?(?:доп|д)\.?\s*(\p{Nd}{1,10})\s*$/iu;

/** parsePhone as it was (4a11178), its cache left out. */
function parsePhoneBefore(value: string, defaultCountry: string): PhoneParts | null {
  const trimmed = value.trim();
  if (!/\p{Nd}/u.test(trimmed)) return null;
  const text = /[дД]/.test(trimmed) ? trimmed.replace(RU_EXTENSION_BEFORE, '$1 доб. $2') : trimmed;
  const parsed = parseBefore(text, defaultCountry as CountryCode);
  const national =
    parsed !== undefined && !/^\+/.test(trimmed.replace(/^[^+\p{Nd}]+/u, '').normalize('NFKC'));
  return parsed && (national ? parsed.isValid() : parsed.isPossible())
    ? parsed.ext
      ? { number: parsed.number, ext: parsed.ext }
      : { number: parsed.number }
    : null;
}

/** samePhone as it was (4a11178). */
function samePhoneBefore(stored: string, e164: string): boolean {
  const country = parseBefore(e164)?.country;
  if (country) return (parsePhoneBefore(stored, country)?.number ?? null) === e164;
  return stored.replace(/\D/g, '') === e164.replace(/\D/g, '');
}

/** What the compared values were: phones, phones with an extension, neither. */
const seen = { values: 0, phones: 0, extensions: 0 };
function share() {
  const counts = { ...seen };
  seen.values = 0;
  seen.phones = 0;
  seen.extensions = 0;
  return counts;
}

/** Both functions' answers for `value` read in `country`, the new one asked twice (miss, then cache). */
function expectSame(value: string, country: string) {
  const before = parsePhoneBefore(value, country);
  seen.values += 1;
  if (before) seen.phones += 1;
  if (before?.ext) seen.extensions += 1;
  expect(parsePhone(value, country), `${JSON.stringify(value)} in ${country}`).toEqual(before);
  expect(parsePhone(value, country), `${JSON.stringify(value)} in ${country}, cached`).toEqual(before);
}

const COUNTRIES = getCountriesBefore();
/** Default countries: the usual ones, neighbours whose numbers look alike, NANPA, and codes the library does not know. */
const DEFAULTS = [
  'RU',
  'BY',
  'KZ',
  'UA',
  'US',
  'CA',
  'GB',
  'DE',
  'FR',
  'BR',
  'AR',
  'MX',
  'IN',
  'CN',
  'IT',
  'AU',
];
const UNKNOWN_DEFAULTS = ['UK', 'XX', '', 'ru'];

/** Digits of other scripts (libphonenumber reads fullwidth, Arabic-Indic and Persian ones; \p{Nd} all of these). */
const DIGIT_SETS = ['０１２３４５６７８９', '٠١٢٣٤٥٦٧٨٩', '۰۱۲۳۴۵۶۷۸۹', '०१२३४५६७८९', '𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗'];
const inScript = (text: string, set: string) =>
  text.replace(/[0-9]/g, (digit) => Array.from(set)[Number(digit)] ?? digit);

/** Ways of writing a national significant number `nsn` of calling code `cc`, with national prefix `prefix`. */
function writings(cc: string, nsn: string, prefix: string): string[] {
  const spaced = nsn.replace(/(\d{3})(?=\d)/g, '$1 ');
  const dashed = `${nsn.slice(0, 3)}-${nsn.slice(3, 6)}-${nsn.slice(6)}`;
  const bracketed = `(${nsn.slice(0, 3)}) ${nsn.slice(3)}`;
  return [
    `+${cc}${nsn}`,
    `+${cc} ${spaced}`,
    `+${cc} ${bracketed}`,
    `+${cc}-${dashed}`,
    `00${cc}${nsn}`,
    `${cc}${nsn}`,
    nsn,
    spaced,
    `${prefix}${nsn}`,
    `${prefix} ${bracketed}`,
    `${prefix}-${dashed}`,
    `+${cc}${prefix}${nsn}`,
    `＋${cc} ${spaced}`,
    `⁺${cc}${nsn}`,
    `tel:+${cc}-${dashed}`,
    `tel:+${cc}${nsn};ext=12`,
    `+${cc} ${spaced} ext. 123`,
    `+${cc}${nsn} x5`,
    `+${cc}${nsn}#7`,
    `${prefix} ${spaced} доб. 101`,
    `${prefix} ${spaced}, д. 5`,
    `+${cc} ${spaced} доп 42`,
    `+${cc} ${bracketed} д.7`,
    `  +${cc}${nsn}\n`,
    `тел.: +${cc} ${spaced}`,
    `+${cc}${nsn}!`,
    `+${cc}${nsn.slice(0, -1)}`,
    `+${cc}${nsn}0`,
    `+${cc}${nsn}${nsn}`,
    inScript(`+${cc}${nsn}`, DIGIT_SETS[0]!),
    inScript(`${prefix}${nsn}`, DIGIT_SETS[1]!),
    inScript(`+${cc} ${spaced}`, DIGIT_SETS[3]!),
  ];
}

/** A country's national (trunk) prefix: 8 in Russia, 0 in Britain, 1 in the US; "0" where it has none. */
function nationalPrefix(country: CountryCode): string {
  // The metadata's own layout (version 4: the prefix is the sixth field of a country).
  const prefix = (metadata.countries[country] as unknown as unknown[])[5];
  return typeof prefix === 'string' ? prefix : '0';
}

describe('parsePhone gives the answers it gave before it was made cheaper', () => {
  it('the phone library build and metadata: the same countries known', () => {
    expect([nationalPrefix('RU'), nationalPrefix('GB'), nationalPrefix('US')]).toEqual(['8', '0', '1']);
    expect(getCountries(metadata)).toEqual(getCountriesBefore());
    for (const code of [...COUNTRIES, ...UNKNOWN_DEFAULTS, 'ZZ', 'AA'])
      expect(isSupportedCountry(code as CountryCode, metadata)).toBe(isSupportedCountryBefore(code));
  });

  it('every country example number, written 32 ways, read in its own country, RU, BY and none', () => {
    for (const country of COUNTRIES) {
      const nsn = examples[country];
      const cc = getCountryCallingCode(country, metadata);
      for (const value of writings(cc, nsn, nationalPrefix(country))) {
        for (const defaultCountry of [country, 'RU', 'BY', 'XX', '']) expectSame(value, defaultCountry);
      }
    }
    const { values, phones, extensions } = share();
    expect(values).toBeGreaterThan(35_000);
    expect(phones).toBeGreaterThan(15_000);
    expect(extensions).toBeGreaterThan(5_000);
  });

  // Phone-like values: pieces that libphonenumber and RU_EXTENSION read (pluses, digits of four
  // scripts, separators, extension words) and some they do not.
  const digit = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...'0123456789') },
    { weight: 1, arbitrary: fc.constantFrom(...DIGIT_SETS.flatMap((set) => Array.from(set))) },
  );
  const separator = fc.constantFrom(
    '',
    '',
    ' ',
    ' ',
    '-',
    '(',
    ')',
    ') ',
    '.',
    '/',
    '\u00a0',
    '\u3000',
    '–',
    '\t',
    '\u200b',
  );
  const pluses = ['+', '＋', '⁺', '﹢', '₊', '\u0301', '\u0338', '\ufeff'];
  const extensionWords = [
    ' ext. ',
    ' x',
    '#',
    ';ext=',
    ' доб. ',
    ' д. ',
    ', доп ',
    'Д.',
    ' int ',
    ',,',
    ';',
    ',',
    ' anexo ',
    'ｅｘｔ',
  ];
  const junk = fc.oneof(
    { weight: 6, arbitrary: fc.constant('') },
    { weight: 1, arbitrary: fc.constantFrom(...pluses, 'tel:', 'тел. ', ':', '\u200e') },
    { weight: 1, arbitrary: fc.string({ maxLength: 3, unit: 'binary' }) },
  );

  /** `arbitrary` in one value of five, null in the others. */
  const rarely = <T>(arbitrary: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary });
  const ascii = (min: number, max: number) =>
    fc
      .array(fc.constantFrom(...'0123456789'), { minLength: min, maxLength: max })
      .map((list) => list.join(''));

  /**
   * A number as a person might type one: a start (+, 00, 8, nothing), 7 to 13 digits in groups
   * with separators, maybe an extension; now and then all in the digits of another script.
   */
  const typed = fc
    .record({
      before: junk,
      start: fc.constantFrom(
        '',
        '+',
        '+',
        '+',
        '+7',
        '+7 9',
        '8',
        '8 9',
        '8 (9',
        '00',
        '＋',
        '⁺',
        '+1',
        '+44 ',
      ),
      groups: fc.array(fc.tuple(ascii(3, 4), separator), { minLength: 3, maxLength: 4 }),
      extension: rarely(fc.tuple(fc.constantFrom(...extensionWords), ascii(1, 12))),
      after: junk,
      script: rarely(fc.constantFrom(...DIGIT_SETS)),
    })
    .map(({ before, start, groups, extension, after, script }) => {
      const text = `${start}${groups.map(([group, sep]) => group + sep).join('')}${extension ? extension.join('') : ''}`;
      return `${before}${script ? inScript(text, script) : text}${after}`;
    });
  /** Phone characters in any order. */
  const soup = fc
    .array(
      fc.oneof(
        { weight: 20, arbitrary: digit },
        { weight: 4, arbitrary: separator },
        { weight: 1, arbitrary: fc.constantFrom(...pluses) },
        { weight: 1, arbitrary: fc.constantFrom(...extensionWords, 'tel:') },
        { weight: 1, arbitrary: fc.string({ maxLength: 3, unit: 'binary' }) },
      ),
      { minLength: 1, maxLength: 30 },
    )
    .map((pieces) => pieces.join(''));
  const phoneLike = fc.oneof({ weight: 3, arbitrary: typed }, { weight: 1, arbitrary: soup });

  /** A real number (a country's example) in one of its writings, then changed a little. */
  const nearReal = fc
    .record({
      country: fc.constantFrom(...COUNTRIES),
      way: fc.nat(31),
      edits: fc.array(fc.tuple(fc.nat(40), digit, fc.constantFrom('set', 'insert', 'delete')), {
        maxLength: 3,
      }),
      before: fc.constantFrom('', '', '', ' ', '＋', 'phone: ', '\u200e', 'н'),
      after: fc.constantFrom('', '', '', ' ', '.', ' доб. 5', ' д. 12', ' ext 7', ', +7 916 123-45-67', '!!'),
    })
    .map(({ country, way, edits, before, after }) => {
      const nsn = examples[country];
      let text = writings(getCountryCallingCode(country, metadata), nsn, nationalPrefix(country))[way] ?? nsn;
      for (const [at, value, edit] of edits) {
        const i = at % (text.length + 1);
        text =
          edit === 'set'
            ? text.slice(0, i) + value + text.slice(i + 1)
            : edit === 'insert'
              ? text.slice(0, i) + value + text.slice(i)
              : text.slice(0, i) + text.slice(i + 1);
      }
      return `${before}${text}${after}`;
    });

  const defaultCountry = fc.oneof(
    { weight: 6, arbitrary: fc.constant('RU') },
    { weight: 3, arbitrary: fc.constantFrom(...DEFAULTS) },
    { weight: 1, arbitrary: fc.constantFrom(...COUNTRIES, ...UNKNOWN_DEFAULTS) },
  );

  it('generated phone-like values (20,000)', () => {
    fc.assert(
      fc.property(phoneLike, defaultCountry, (value, country) => expectSame(value, country)),
      { numRuns: 20_000 },
    );
    // Not mostly junk: a share of them are phones, some with an extension.
    const { phones, extensions } = share();
    expect(phones).toBeGreaterThan(1_000);
    expect(extensions).toBeGreaterThan(100);
  });

  it('real numbers a digit or two off, with junk around them (20,000)', () => {
    fc.assert(
      fc.property(nearReal, defaultCountry, (value, country) => expectSame(value, country)),
      { numRuns: 20_000 },
    );
    const { phones, extensions } = share();
    expect(phones).toBeGreaterThan(2_000);
    expect(extensions).toBeGreaterThan(500);
  });

  it('any text (5,000)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80, unit: 'binary' }), defaultCountry, (value, country) =>
        expectSame(value, country),
      ),
      { numRuns: 5_000 },
    );
    share();
  });

  it('values past the cache key length (not cached) and past the library input length', () => {
    for (const value of [
      `+7 916 123-45-67 ${' '.repeat(60)}`,
      `${'-'.repeat(70)}+79161234567`,
      `+7${'9'.repeat(300)}`,
      `8 916 123 45 67 ${'д'.repeat(100)} 5`,
      `${' '.repeat(245)}+79161234567`,
    ])
      expectSame(value, 'RU');
  });

  it('a phone asked again after thousands of others (kept in the older half of the cache, then dropped)', () => {
    const phones = ['+7 916 123-45-67 доб. 5', '8 (916) 765-43-21', '8 044 123 45 67', 'null'];
    const others = (from: number, count: number) => {
      for (let i = from; i < from + count; i++) parsePhone(`+7 903 ${String(i).padStart(7, '0')}`, 'RU');
    };
    for (const phone of phones) expectSame(phone, 'RU');
    others(0, 6_000);
    for (const phone of phones) expectSame(phone, 'RU');
    others(6_000, 12_000);
    for (const phone of phones) expectSame(phone, 'RU');
  });

  it('samePhone and onlyPhonesWithExtension, which read phones through it', () => {
    fc.assert(
      fc.property(fc.oneof(nearReal, phoneLike), nearReal, (stored, other) => {
        const e164 = parsePhoneBefore(other, 'RU')?.number ?? '+79161234567';
        expect(samePhone(stored, e164)).toBe(samePhoneBefore(stored, e164));
        expect(onlyPhonesWithExtension(stored, 'RU')).toBe(
          splitPhones(stored).every((piece) => parsePhoneBefore(piece, 'RU')?.ext !== undefined),
        );
      }),
      { numRuns: 3_000 },
    );
  });
});
