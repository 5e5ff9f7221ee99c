import { cleanDisplayText } from '../contacts/normalize.js';
import { BadRequestError } from '../errors.js';

/**
 * JSON from vendors and callers. JSON.parse accepts nesting far deeper than anything we later
 * serialise (timeline entries keep raw payloads; JSON.stringify then overflows the stack), so a
 * hostile body could turn into a 500 long after it was accepted. Bodies nested deeper than
 * MAX_JSON_DEPTH are refused up front with a 400. The scan is linear and allocation-free, and refuses
 * `[[[[…` of any length after MAX_JSON_DEPTH + 1 characters (JSON.parse would build it all: ~0.3 s
 * for a megabyte of brackets), which is why it runs before the parse rather than as a walk after it.
 */
export const MAX_JSON_DEPTH = 64;

export function jsonDepthExceeds(text: string, limit = MAX_JSON_DEPTH): boolean {
  // Nesting needs a bracket per level: a text with no more `{` and `[` than the limit, inside
  // strings or not, cannot exceed it. Counted with native indexOf, a few times cheaper than the
  // scan below, which then runs only for texts with many brackets (a chat_finished of 50
  // messages has ~60; a LiveTex lookup or a chat_accepted ~20).
  if (!moreBracketsThan(text, limit)) return false;
  let depth = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code === 34 /* " */) {
      // Most of a payload is inside strings (a chat transcript's text): jump to the closing quote
      // with indexOf, which is native and several times faster than looking at every character.
      // A quote after an odd run of backslashes is escaped and does not close the string.
      for (;;) {
        const close = text.indexOf('"', index + 1);
        if (close === -1) return false; // never closed: JSON.parse refuses the text anyway
        let backslashes = 0;
        while (text.charCodeAt(close - 1 - backslashes) === 92 /* \ */) backslashes++;
        index = close;
        if (backslashes % 2 === 0) break;
      }
    } else if (code === 123 /* { */ || code === 91 /* [ */) {
      if (++depth > limit) return true;
    } else if (code === 125 /* } */ || code === 93 /* ] */) depth--;
  }
  return false;
}

function moreBracketsThan(text: string, limit: number): boolean {
  let count = 0;
  for (let at = text.indexOf('{'); at !== -1; at = text.indexOf('{', at + 1))
    if (++count > limit) return true;
  for (let at = text.indexOf('['); at !== -1; at = text.indexOf('[', at + 1))
    if (++count > limit) return true;
  return false;
}

/** Parse a body as JSON, or throw a 400 that says why (invalid, or nested too deeply). */
export function parseJson(text: string): unknown {
  if (jsonDepthExceeds(text)) {
    throw new BadRequestError('json_too_deep', `the body nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    // "Unexpected end of JSON input" for nothing at all says less than this.
    if (text.trim() === '') throw new BadRequestError('invalid_json', 'the body is empty: JSON is expected');
    // V8's message quotes a piece of the text: a caller's control and bidi characters are dropped
    // from it, as from any input an error message quotes (quotedInput).
    throw new BadRequestError(
      'invalid_json',
      `the body is not valid JSON: ${cleanDisplayText((error as Error).message) ?? 'unreadable'}`,
    );
  }
}
