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

/** Whether a path, however it is spelt, is under the admin API (`/api/v1`). */
export function isAdminPath(path: string): boolean {
  if (PLAIN.test(path)) return ADMIN_PREFIX.test(path);
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

export function redactPath(path: string): string {
  if (PLAIN.test(path) && !SECRET_PREFIX.test(path)) return path;
  const [first, second] = normalisedSegments(path);
  // A console agent link (/console/c/<token>) is a credential too, for console.linkTtl.
  const secretAt = first === 'webhooks' ? 4 : first === 'console' && second === 'c' ? 3 : 0;
  if (secretAt === 0) return path;
  const raw = path.split(/([/\\]+)/); // keep the separators so the logged path looks as sent
  let seen = 0;
  for (let index = 0; index < raw.length; index++) {
    const part = raw[index]!;
    if (part === '' || /^[/\\]+$/.test(part)) continue;
    seen++;
    if (seen === secretAt) return `${raw.slice(0, index).join('')}***`;
  }
  return path;
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
