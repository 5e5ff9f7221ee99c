import { digest } from '../digest.js';
import { ValidationError } from '../errors.js';
import type { Store } from '../store/types.js';
import { key, publicId } from './keys.js';
import { MANUAL_MERGE_KIND } from './merge.js';
import { decodeRecord, type MergeLogEntry } from './record.js';
import type { ConflictsPage } from './service.js';
import type { Conflict, ConflictState, Identifier } from './types.js';

/**
 * The identity conflicts list (`identity:conflicts`, written by merge.ts conflictWrites) read a
 * page at a time, each conflict with its state now. The list is history: a conflict is kept as it
 * was recorded, and what became of it is read from its contacts as they are at the time of the
 * read (their root pointers, and the merge log of the contact they became): `open` while two of
 * them are still apart; once they are one contact, `merged` when a merge by hand (console, API,
 * CLI) brought one of them in, else `resolved` (a later chat naming them merged them). An unmerge
 * that splits them again makes the conflict open again: nothing about the state is stored.
 */

/** Entries a page filtered by state looks at, at most, before it answers (then `partial`). */
export const CONFLICTS_SCAN = 1000;
/** Entries read (and their states worked out) per step of a filtered page. */
const STEP = 100;
/** Entries read per step while looking for the entry a cursor names. */
const FIND_STEP = 200;

interface StoredConflict {
  at: string;
  reason: Conflict['reason'];
  roots: string[];
  via: Identifier;
  channelId?: string;
  was?: string;
}

const conflictMark = (raw: string) => digest('sha256', raw, 'base64url').slice(0, 16);

export function createConflictList(store: Store) {
  /**
   * The conflicts list grows at its end (newest) and is trimmed at its start (the oldest past
   * 10 000, refusalWrites), so no index names an entry for long: an index from the end moves
   * with every refusal, one from the start with every trim once the list is full. A cursor is the
   * index from the start of the oldest entry the page looked at and a digest of it; the next page
   * looks for that entry at or before the index (a trim only moves entries towards the start), and
   * reads on below it. Gone altogether means trimmed away, and everything older with it: the last page.
   */
  async function page(options: {
    limit: number;
    before?: string | undefined;
    state?: ConflictState | undefined;
  }): Promise<ConflictsPage> {
    const { limit, state } = options;
    let end: number; // the page is what is below index `end`, newest first
    if (options.before === undefined) {
      end = await store.llen(key.conflicts);
    } else {
      const match = /^(\d{1,6})\.([A-Za-z0-9_-]{16})$/.exec(options.before);
      if (!match) {
        throw new ValidationError(
          'invalid cursor',
          [{ path: 'before', message: 'not a cursor this API returned (use nextCursor of a page)' }],
          'invalid_query',
        );
      }
      const found = await findConflict(Number(match[1]), match[2]!);
      if (found === null) return { conflicts: [], nextCursor: null };
      end = found;
    }
    if (state === undefined) {
      // One more than the page: whether there is a next page (null on the last, as the journal).
      const start = Math.max(0, end - limit - 1);
      const raw = end === 0 ? [] : await store.lrange(key.conflicts, start, end - 1);
      const more = raw.length > limit;
      const newestFirst = (more ? raw.slice(1) : raw).reverse();
      const oldest = newestFirst[newestFirst.length - 1];
      return {
        conflicts: await viewsOf(newestFirst),
        nextCursor: more && oldest !== undefined ? `${start + 1}.${conflictMark(oldest)}` : null,
      };
    }
    // Filtered: read back a step at a time until `limit` match or CONFLICTS_SCAN were looked at
    // (a state few conflicts have costs several bounded requests, never one that reads 10 000).
    const conflicts: Conflict[] = [];
    let low = end; // the oldest entry looked at (entries below it are not yet)
    let lowRaw: string | undefined;
    let looked = 0;
    while (low > 0 && looked < CONFLICTS_SCAN && conflicts.length < limit) {
      const from = Math.max(0, low - Math.min(STEP, CONFLICTS_SCAN - looked));
      const raw = await store.lrange(key.conflicts, from, low - 1);
      if (raw.length === 0) break;
      const views = await viewsOf(raw);
      let index = raw.length - 1;
      for (; index >= 0; index--) {
        looked += 1;
        if (views[index]!.state === state) conflicts.push(views[index]!);
        if (conflicts.length === limit) break;
      }
      const stoppedAt = Math.max(index, 0);
      low = from + stoppedAt;
      lowRaw = raw[stoppedAt];
    }
    const more = low > 0 && lowRaw !== undefined;
    return {
      conflicts,
      nextCursor: more ? `${low}.${conflictMark(lowRaw!)}` : null,
      ...(more && conflicts.length < limit ? { partial: true as const } : {}),
    };
  }

  /**
   * Each stored entry with its state now: one MGET of its contacts' root pointers, and for those
   * that are one contact now, one of those contacts' records (the merge log is on the root).
   */
  async function viewsOf(raw: readonly string[]): Promise<Conflict[]> {
    const stored = raw.map((text) => JSON.parse(text) as StoredConflict);
    const roots = [...new Set(stored.flatMap((item) => item.roots))];
    const pointers = await store.mget(roots.map(key.root));
    const contactOf = new Map(
      roots.map((root, index) => {
        const pointer = pointers[index];
        return [root, pointer === null || pointer === undefined ? root : publicId(pointer)] as const;
      }),
    );
    const oneNow = (item: StoredConflict) => {
      const now = new Set(item.roots.map((root) => contactOf.get(root)!));
      return now.size === 1 ? [...now][0]! : null;
    };
    const survivors = [...new Set(stored.map(oneNow).filter((id): id is string => id !== null))];
    const texts = await store.mget(survivors.map(key.record));
    const mergesOf = new Map<string, MergeLogEntry[]>(
      survivors.map((id, index) => {
        const text = texts[index];
        return [id, text === null || text === undefined ? [] : decodeRecord(id, text).merges] as const;
      }),
    );
    return stored.map((item) => {
      const view: Conflict = {
        at: item.at,
        reason: item.reason,
        roots: item.roots,
        via: item.via,
        ...(item.channelId === undefined ? {} : { channelId: item.channelId }),
        ...(item.was === undefined ? {} : { was: item.was }),
        state: 'open',
      };
      const survivor = oneNow(item);
      if (survivor === null) return view;
      // The merges that brought one of its contacts in (an unmerge takes its merge off the log).
      const byHand = (mergesOf.get(survivor) ?? []).some(
        (merge) =>
          merge.via.kind === MANUAL_MERGE_KIND &&
          merge.records.some((id) => id !== survivor && item.roots.includes(id)),
      );
      return { ...view, state: byHand ? 'merged' : 'resolved', mergedInto: survivor };
    });
  }

  /** Where the entry a cursor names is now (at or below `hint`), or null when trimmed away. */
  async function findConflict(hint: number, mark: string): Promise<number | null> {
    let top = Math.min(hint, (await store.llen(key.conflicts)) - 1);
    while (top >= 0) {
      const from = Math.max(0, top - FIND_STEP + 1);
      const slice = await store.lrange(key.conflicts, from, top);
      for (let index = slice.length - 1; index >= 0; index--) {
        if (conflictMark(slice[index]!) === mark) return from + index;
      }
      top = from - 1;
    }
    return null;
  }

  return { page };
}
