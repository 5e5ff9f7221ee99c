import { digest } from '../digest.js';
import type { Identifier } from './types.js';

/**
 * The contact model's key layout in the store (without the configured prefix; on a Redis
 * Cluster every key of one bridge shares its `{prefix}` hash tag, see src/store/connection.ts).
 * - `rec:<id>` a record; `root:<id>` the root a merged record points at; `members:<root>` the
 *   records merged into a root; `apart:<id>` records an unmerge keeps apart from this one.
 * - `idx:<kind>:<channel or *>:<value>` the one record an identifier that may merge belongs to;
 *   `sidx:<kind>:<value>` (a set) records with a search-only identifier; `sidx:name:<word>`.
 * - `tl:<id>` a record's timeline; `dedupe:<hash>` an observation already applied.
 */
export const key = {
  record: (id: string) => `rec:${id}`,
  root: (id: string) => `root:${id}`,
  members: (id: string) => `members:${id}`,
  apart: (id: string) => `apart:${id}`,
  timeline: (id: string) => `tl:${id}`,
  index: (identifier: Identifier) =>
    `idx:${identifier.kind}:${identifier.channelId ?? '*'}:${identifier.value}`,
  search: (identifier: Identifier) => `sidx:${identifier.kind}:${identifier.value}`,
  name: (word: string) => `sidx:name:${word}`,
  dedupe: (channelId: string, idempotencyKey: string) =>
    `dedupe:${digest('sha256', `${channelId}\n${idempotencyKey}`, 'base64url')}`,
  conflicts: 'identity:conflicts',
};

/** The group layout as Store.readGroups takes it (each prefix is followed by a record id). */
export const groupLayout = { root: key.root(''), members: key.members(''), record: key.record('') };
