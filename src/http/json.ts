import { BadRequestError } from '../errors.js';

/**
 * JSON from vendors and callers. JSON.parse accepts nesting far deeper than anything we later
 * serialise (timeline entries keep raw payloads; JSON.stringify then overflows the stack), so a
 * hostile body could turn into a 500 long after it was accepted. Bodies nested deeper than
 * MAX_JSON_DEPTH are refused up front with a 400. The scan is linear and allocation-free.
 */
export const MAX_JSON_DEPTH = 64;

export function jsonDepthExceeds(text: string, limit = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (inString) {
      if (code === 92 /* \ */) index++;
      else if (code === 34 /* " */) inString = false;
    } else if (code === 34) inString = true;
    else if (code === 123 /* { */ || code === 91 /* [ */) {
      if (++depth > limit) return true;
    } else if (code === 125 /* } */ || code === 93 /* ] */) depth--;
  }
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
    throw new BadRequestError('invalid_json', `the body is not valid JSON: ${(error as Error).message}`);
  }
}
