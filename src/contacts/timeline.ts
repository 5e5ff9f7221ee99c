import { digest } from '../digest.js';
import { ValidationError } from '../errors.js';
import { isoFromMs, parseTime } from '../isotime.js';
import { cutText } from './normalize.js';
import type { TimelineEntry } from './types.js';

/** Pure helpers for timeline entries, event ids and the name index (no store). */

/**
 * Words of a name for the name search (the console's contact search): case- and accent-folded
 * (so ё is е and й is и: Семён and Семен are one word), split on anything that is not a letter or
 * digit, a word mixing Latin and Cyrillic look-alikes in one script (sameScript). "Анна-Мария
 * O'Neil" → анна, мария, o, neil.
 */
export function nameWords(name: string): string[] {
  return wordsOf(name, sameScript);
}

/**
 * The words an older version indexed a name under: nameWords before Latin/Cyrillic look-alikes
 * were folded to one script (7655d60; the cut then was `slice(0, 40)`, whose lone surrogate Redis
 * kept as the U+FFFD cutWord ends such a word with). No query reaches a word of this form that
 * nameWords gives differently: the contact re-index (reindex-plan.ts) removes a record's entries
 * under them. Not for indexing or searching.
 */
export function nameWordsBeforeFolding(name: string): string[] {
  return wordsOf(name, (word) => word);
}

function wordsOf(name: string, fold: (word: string) => string): string[] {
  const words = name
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((word) => word.length > 0)
    .map((word) => cutWord(fold(word)));
  return [...new Set(words)].slice(0, 16);
}

const WORD_UNITS = 40;

/**
 * A word's first 40 UTF-16 units, cut between code points: `slice(0, 40)` cut an emoji or a rare
 * CJK letter (two units) in half, leaving a lone surrogate in the word. Such a cut ends in U+FFFD
 * instead, the character Redis was given for that lone half (Node writes it as U+FFFD's UTF-8
 * bytes), so a word indexed before this change has the same key as its query has now.
 */
function cutWord(word: string): string {
  const cut = cutText(word, WORD_UNITS);
  return cut.length < WORD_UNITS && word.length > WORD_UNITS ? `${cut}\uFFFD` : cut;
}

/** Lower-case Latin letters and the Cyrillic letters that look like them (or like their capitals). */
const LATIN_LOOKALIKES = 'aceopxykmhtbi';
const CYRILLIC_LOOKALIKES = 'асеорхукмнтві';
const TO_CYRILLIC = new Map(
  [...LATIN_LOOKALIKES].map((latin, index) => [latin, CYRILLIC_LOOKALIKES[index]!]),
);
const TO_LATIN = new Map(
  [...CYRILLIC_LOOKALIKES].map((cyrillic, index) => [cyrillic, LATIN_LOOKALIKES[index]!]),
);

/**
 * A word that mixes Latin and Cyrillic letters in one script: "иванoв" typed with a Latin o (a
 * keyboard switched mid-word, or a CRM import) is "иванов", and "mаria" with a Cyrillic а is
 * "maria", as the agent searching types them. Only when every letter of the other script has a
 * look-alike; a word of one script, and any other mix, is left as it is.
 */
function sameScript(word: string): string {
  if (!(/\p{Script=Latin}/u.test(word) && /\p{Script=Cyrillic}/u.test(word))) return word;
  const latin = word.match(/\p{Script=Latin}/gu)!;
  if (latin.every((letter) => TO_CYRILLIC.has(letter)))
    return word.replace(/\p{Script=Latin}/gu, (letter) => TO_CYRILLIC.get(letter)!);
  const cyrillic = word.match(/\p{Script=Cyrillic}/gu)!;
  if (cyrillic.every((letter) => TO_LATIN.has(letter)))
    return word.replace(/\p{Script=Cyrillic}/gu, (letter) => TO_LATIN.get(letter)!);
  return word;
}

export function timelineMember(entry: TimelineEntry): string {
  let json: string;
  try {
    json = JSON.stringify(entry);
  } catch (error) {
    // Data nested past what JSON.stringify can walk (a vendor API answer, say): refuse, not 500.
    throw new ValidationError('timeline entry cannot be stored', [
      { path: 'timeline', message: (error as Error).message },
    ]);
  }
  return `${entry.at}|${entry.id}|${json}`;
}

/**
 * timelineMember for an entry whose data is already JSON (`JSON.stringify(entry.data)`): the same
 * text, byte for byte, without serialising the data a second time.
 */
export function timelineMemberWithData(entry: Omit<TimelineEntry, 'data'>, dataJson: string): string {
  const { id, at } = entry;
  return (
    `${at}|${id}|{"id":${JSON.stringify(id)},"at":${JSON.stringify(at)},` +
    `"channelId":${JSON.stringify(entry.channelId)},"vendor":${JSON.stringify(entry.vendor)},` +
    `"type":${JSON.stringify(entry.type)},"summary":${JSON.stringify(entry.summary)},"data":${dataJson}}`
  );
}

/**
 * Event ids (DESIGN §8) are salted per installation (see the engine's installationSalt), so two
 * bridges that see the same vendor chat id never send the same `webhook-id`; stable across
 * retries and replays.
 */
export function eventId(
  saltValue: string,
  channelId: string,
  idempotencyKey: string,
  eventKey: string,
): string {
  return `evt_${digest('sha256', `${saltValue}\n${channelId}\n${idempotencyKey}\nevent:${eventKey}`, 'base64url').slice(0, 22)}`;
}

export function entryId(channelId: string, idempotencyKey: string, entryKey: string): string {
  return digest('sha256', `${channelId}\n${idempotencyKey}\n${entryKey}`, 'base64url').slice(0, 22);
}

export function isoOf(value: string): string {
  const ms = parseTime(value);
  if (Number.isNaN(ms)) throw new ValidationError('bad timestamp', [{ path: 'at', message: value }]);
  return isoFromMs(ms);
}

/**
 * The earlier of two times as isoOf writes them (fixed width, so text order is time order): a
 * vendor time is taken up to the time the bridge records the event, never later.
 */
export function notAfter(at: string, limit: string): string {
  // Past year 9999 isoOf writes a signed six-digit year (`+010000-…`, from e.g.
  // 9999-12-31T23:00:00-14:00), which sorts before every four-digit one: later than any limit.
  return at > limit || at.startsWith('+') ? limit : at;
}
