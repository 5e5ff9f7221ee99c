import { timingSafeEqual } from 'node:crypto';
import { digestBytes } from '../digest.js';

/**
 * Request-path and credential helpers shared by the admin gate, the webhook token check and the
 * request log. They live apart from the routers on purpose: routers match paths exactly
 * (case-sensitive, strict), while everything that protects a path works on its *normalised*
 * form, so no spelling of a path (letter case, doubled or trailing slashes, percent-encoded
 * letters, dot segments) can reach a handler without passing the same check.
 */

/** Decode %XX escapes one at a time; an invalid escape is kept as written (never throws). */
function decodeLoose(segment: string): string {
  return segment.replace(/%[0-9A-Fa-f]{2}/g, (hex) => String.fromCharCode(Number.parseInt(hex.slice(1), 16)));
}

/**
 * The path as a set of segments that no router would tell apart: percent-escapes decoded
 * (repeatedly, so `%2561` is `a`), lower case, empty and `.` segments dropped, `..` resolved.
 */
export function normalisedSegments(path: string): string[] {
  let text = path;
  for (let round = 0; round < 3 && /%[0-9A-Fa-f]{2}/.test(text); round++) text = decodeLoose(text);
  const out: string[] = [];
  for (const raw of text.toLowerCase().split(/[/\\]+/)) {
    if (raw === '' || raw === '.') continue;
    if (raw === '..') out.pop();
    else out.push(raw);
  }
  return out;
}

export function normalisePath(path: string): string {
  return `/${normalisedSegments(path).join('/')}`;
}

/**
 * A path with nothing to fold but letter case: no escape, no backslash, no empty segment, no
 * segment starting with a dot. Most requests look like this; for them the first segments can be
 * read off the path as written (case-insensitively) without building the segment list.
 */
const PLAIN = /^(?:\/[^/\\%.][^/\\%]*)*\/?$/;
const ADMIN_PREFIX = /^\/api\/v1(?:\/|$)/i;

/**
 * Whether a path, however it is spelt, is under the admin API (`/api/v1`): as written (what the
 * routers match) or normalised (what a lenient router or a proxy in front would make of it).
 * Both, not the normalised form alone: a `..` escaped inside one segment (`%2F..`, `\..`) climbs
 * out of /api/v1 once normalised, while the router still matches `/api/v1/contacts/:id` on the
 * path as written and hands the handler the decoded parameter.
 */
export function isAdminPath(path: string): boolean {
  if (ADMIN_PREFIX.test(path)) return true;
  if (PLAIN.test(path)) return false;
  const [first, second] = normalisedSegments(path);
  return first === 'api' && second === 'v1';
}

/**
 * The token in a webhook URL is a credential: never log it. Works on any spelling of
 * `/webhooks/<vendor>/<channel>/<token>` (the router refuses the odd ones, but the request log
 * still sees them): everything after the channel segment is masked. Likewise everything after
 * `/console/c/` (a signed agent link).
 */
const SECRET_PREFIX = /^\/(?:webhooks|console\/c)(?:\/|$)/i;
/** Runs of path separators, as written or percent-escaped (up to the three decoding rounds). */
const SEPARATORS = /((?:[/\\]|%(?:25){0,3}(?:2[fF]|5[cC]))+)/;
const SEPARATOR_RUN = /^(?:[/\\]|%(?:25){0,3}(?:2[fF]|5[cC]))+$/;

export function redactPath(path: string): string {
  if (PLAIN.test(path)) return SECRET_PREFIX.test(path) ? redactPlain(path) : path;
  // Logged as sent up to the part where the path, read as normalisedSegments reads it, first
  // reaches a secret segment; masked from there. Decided while walking, not on the whole
  // normalised path: `..` escaped after the token (`<token>%2F..%2F..`) climbs back out, and
  // judged on the end result the path was logged whole, the token in it. Parts are split at
  // separators as written or escaped (%2F, %5C, %252F); each is decoded as normalisedSegments
  // does, so a separator escaped any other way (%25%32%46) is counted too: counting literal
  // slashes only left `/webhooks/jivochat/site%2F<token>` whole.
  const raw = path.split(SEPARATORS);
  const stack: string[] = [];
  for (let index = 0; index < raw.length; index++) {
    const part = raw[index]!;
    if (part === '' || SEPARATOR_RUN.test(part)) continue;
    let text = part;
    for (let round = 0; round < 3 && /%[0-9A-Fa-f]{2}/.test(text); round++) text = decodeLoose(text);
    for (const piece of text.toLowerCase().split(/[/\\]+/)) {
      if (piece === '' || piece === '.') continue;
      if (piece === '..') stack.pop();
      else stack.push(piece);
    }
    // A webhook's token is its fourth segment; an agent link (/console/c/<token>) is a
    // credential too, for console.linkTtl.
    const secretAt = stack[0] === 'webhooks' ? 4 : stack[0] === 'console' && stack[1] === 'c' ? 3 : 0;
    if (secretAt > 0 && stack.length >= secretAt) return `${raw.slice(0, index).join('')}***`;
  }
  return path;
}

/**
 * redactPath of a plain path (PLAIN) under a secret prefix: its segments are the path's own, as
 * the walk below would read them (nothing to decode, no empty or dot segment), so the secret
 * starts at its fourth segment (a webhook) or third (an agent link), as written. Every webhook at
 * its plain URL is one (its access line, at log level info): the walk cost ~2–4 µs a request.
 */
function redactPlain(path: string): string {
  const secretAt = /^\/webhooks(?:\/|$)/i.test(path) ? 4 : 3;
  let slash = 0;
  for (let segment = 1; segment < secretAt; segment++) {
    slash = path.indexOf('/', slash + 1);
    if (slash === -1) return path;
  }
  return slash === path.length - 1 ? path : `${path.slice(0, slash + 1)}***`;
}

/**
 * Constant-time comparison of a presented credential with the expected one. Both sides are
 * hashed first, so the comparison takes the same time whatever the lengths (no early return
 * that would tell an attacker the token's length).
 */
export function tokenEquals(presented: string, expected: string): boolean {
  return timingSafeEqual(digestOf(presented), expectedDigest(expected));
}

function digestOf(text: string): Buffer {
  return digestBytes('sha256', text);
}

/**
 * The expected side is one of a handful of configured tokens: its digest is computed once, not
 * on every webhook (bounded, so a caller passing ever-new "expected" values cannot grow it).
 */
const expectedDigests = new Map<string, Buffer>();
function expectedDigest(expected: string): Buffer {
  let digest = expectedDigests.get(expected);
  if (digest === undefined) {
    digest = digestOf(expected);
    if (expectedDigests.size >= 256) expectedDigests.clear();
    expectedDigests.set(expected, digest);
  }
  return digest;
}
