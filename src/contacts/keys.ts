import { digest } from '../digest.js';
import type { Identifier } from './types.js';

/**
 * The contact model's key layout in the store (without the configured prefix; on a Redis
 * Cluster every key of one bridge shares its `{prefix}` hash tag, see src/store/connection.ts).
 * - `rec:<id>` a record; `root:<id>` the root a merged record points at; `members:<root>` the
 *   records merged into a root; `apart:<id>` records an unmerge keeps apart from this one.
 * - `idx:<kind>:<channel or *>:<value>` the one record an identifier that may merge belongs to;
 *   `sidx:<kind>:<value>` (a set) records with a search-only identifier (a phone with an
 *   extension among them, also in `sidx:phone:<value>;ext=<ext>`); `sidx:name:<word>`.
 * - `tl:<id>` a record's timeline; `dedupe:<hash>` an observation already applied.
 *
 * `<id>` in a key, and every record id stored as a value (index and idempotency keys, root
 * pointers, member, apart and search sets), is the record's *stored id* (storedId): a record id
 * `c_<digits>` (what newRecordId makes) without its `c_`. Redis keeps a string value that is a
 * decimal integer fitting 64 bits as that integer, in its 16 B value object, instead of a 48 B
 * string object (32 B less per index or idempotency key; a minimal contact has four index keys:
 * README, Benchmarks), and a set of at most 512 such integers as an intset (8 B a member). Ids made
 * before (`c_` + 20 hex characters) are stored as they were, in keys and values: data written
 * then keeps working without a migration, and the two kinds mix freely (a group, a set). The
 * store knows nothing of this: its scripts build keys from stored ids as they read them
 * (Store.readGroups), and the engine turns what it reads back into ids (publicId).
 */
export const key = {
  record: (id: string) => `rec:${storedId(id)}`,
  root: (id: string) => `root:${storedId(id)}`,
  members: (id: string) => `members:${storedId(id)}`,
  apart: (id: string) => `apart:${storedId(id)}`,
  timeline: (id: string) => `tl:${storedId(id)}`,
  index: (identifier: Identifier) =>
    `idx:${identifier.kind}:${identifier.channelId ?? '*'}:${identifier.value}`,
  search: (identifier: Identifier) => `sidx:${identifier.kind}:${identifier.value}`,
  /** The records with a phone at this extension (RFC 3966's `;ext=`): a set, search only. */
  searchExtension: (identifier: Identifier, ext: string) =>
    `sidx:${identifier.kind}:${identifier.value};ext=${ext}`,
  name: (word: string) => `sidx:name:${word}`,
  dedupe: (channelId: string, idempotencyKey: string) =>
    `dedupe:${digest('sha256', `${channelId}\n${idempotencyKey}`, 'base64url')}`,
  conflicts: 'identity:conflicts',
};

/**
 * `c_` and 1 to 19 digits, the first not 0: the ids stored as their digits. Old ids have exactly
 * 20 characters after `c_` (and may be all digits, or start with 0), so none of them matches and
 * each is stored as it is; a stored value of digits only is therefore always a new id.
 */
const DIGIT_ID = /^c_[1-9][0-9]{0,18}$/;
const DIGITS = /^[0-9]+$/;

/** How a record id is written in keys and values (see above); publicId reverses it. */
export function storedId(id: string): string {
  return DIGIT_ID.test(id) ? id.slice(2) : id;
}

/** The record id a stored value names: digits are a `c_<digits>` id, anything else is the id. */
export function publicId(stored: string): string {
  return DIGITS.test(stored) ? `c_${stored}` : stored;
}

/**
 * Whether a caller's id can name a record: a string of digits alone cannot (no id ever made is
 * one), and its keys would be those of the record `c_<digits>`, so it must not be looked up.
 */
export function isRecordId(id: string): boolean {
  return !DIGITS.test(id);
}

/** The group layout as Store.readGroups takes it (each prefix is followed by a stored id). */
export const groupLayout = { root: key.root(''), members: key.members(''), record: key.record('') };
