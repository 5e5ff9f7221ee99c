import { key, storedId } from './keys.js';
import { encodeRecord, type MergeLogEntry, type StoredRecord } from './record.js';
import type { Identifier } from './types.js';
import type { PlannedWrite } from './writes.js';

/**
 * The merge policy (pure: no store, no clock). An observation whose identifiers reach two or
 * more groups (roots) joins them into one, unless a guard rail refuses:
 * - `too_large`: the groups together would hold more than identity.maxMergeSize records;
 * - `unmerged_before`: an earlier unmerge keeps two of their records apart (`apart:<id>`).
 * The oldest root survives (ids already handed to CRMs stay stable); every record of the other
 * groups points at it, and its merge log records each join (`typed` when a group was reached
 * only through visitor-typed or vendor-local values of the observation, not a verified one).
 */

export interface MergeSituation {
  /** The distinct roots the observation's identifiers reach, in plan order (two or more). */
  roots: readonly string[];
  /** Each root's member records. */
  members: ReadonlyMap<string, readonly string[]>;
  /** The records of every group, by id. */
  records: ReadonlyMap<string, StoredRecord>;
  /** The root of each identifier holder. */
  recordRoots: ReadonlyMap<string, string>;
  /** The observation's identifiers that resolve to one record, and who holds each (null: nobody). */
  resolving: readonly Identifier[];
  holders: readonly (string | null)[];
  /** The root of the record the observation writes to. */
  targetRoot: string;
}

/**
 * The `via` kind of a merge staff made by hand (ContactService.mergeContacts): its value says
 * where (`api`, `console`, `cli`). Not an identifier any contact holds.
 */
export const MANUAL_MERGE_KIND = 'manual';

export type MergeRefusal = 'too_large' | 'unmerged_before';

export type MergeDecision =
  | { outcome: 'refused'; reason: MergeRefusal; via: Identifier }
  | {
      outcome: 'merged';
      survivor: string;
      via: Identifier;
      typed: boolean;
      /** The roots that join the survivor, in plan order. */
      absorbed: string[];
    };

/** Every record of the groups, root first, group by group. */
export function groupIdsOf(
  roots: readonly string[],
  members: ReadonlyMap<string, readonly string[]>,
): string[] {
  return roots.flatMap((root) => [root, ...(members.get(root) ?? [])]);
}

/** The identifier that reached a group other than the target's: the merge is "via" it. */
export function joiningIdentifier(situation: MergeSituation): Identifier {
  const { resolving, holders, recordRoots, targetRoot } = situation;
  return resolving.find((_, index) => {
    const holder = holders[index];
    return holder != null && recordRoots.get(holder) !== targetRoot;
  })!;
}

/**
 * Whether an earlier unmerge keeps two records of different groups apart. `apart` holds each
 * group record's `apart:<id>` set (records without one may be left out).
 */
export function keptApart(
  roots: readonly string[],
  members: ReadonlyMap<string, readonly string[]>,
  apart: ReadonlyMap<string, readonly string[]>,
): boolean {
  const groupOf = new Map<string, string>();
  for (const root of roots) for (const id of [root, ...(members.get(root) ?? [])]) groupOf.set(id, root);
  for (const [id, group] of groupOf) {
    for (const other of apart.get(id) ?? []) {
      const otherGroup = groupOf.get(other);
      if (otherGroup !== undefined && otherGroup !== group) return true;
    }
  }
  return false;
}

/** Proven only if every joining group was reached by a verified value of this observation. */
export function mergeIsTyped(situation: MergeSituation): boolean {
  const { roots, resolving, holders, recordRoots } = situation;
  return !roots.every((root) =>
    resolving.some((identifier, index) => {
      const holder = holders[index];
      return identifier.provenance === 'verified' && holder != null && recordRoots.get(holder) === root;
    }),
  );
}

/** The oldest root record survives (ties: the smaller id); roots without a record are skipped. */
export function survivorOf(roots: readonly string[], records: ReadonlyMap<string, StoredRecord>): string {
  const candidates = roots.map((root) => records.get(root)).filter((record) => record !== undefined);
  candidates.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  return candidates[0]!.id;
}

export function decideMerge(
  situation: MergeSituation,
  rules: { maxMergeSize: number; apart: ReadonlyMap<string, readonly string[]> },
): MergeDecision {
  const via = joiningIdentifier(situation);
  const { roots, members, records } = situation;
  if (groupIdsOf(roots, members).length > rules.maxMergeSize)
    return { outcome: 'refused', reason: 'too_large', via };
  if (keptApart(roots, members, rules.apart)) return { outcome: 'refused', reason: 'unmerged_before', via };
  const survivor = survivorOf(roots, records);
  return {
    outcome: 'merged',
    survivor,
    via,
    typed: mergeIsTyped(situation),
    absorbed: roots.filter((root) => root !== survivor),
  };
}

export function mergeLogEntry(at: string, records: string[], via: Identifier, typed: boolean): MergeLogEntry {
  return { at, records, via, ...(typed ? { typed: true as const } : {}) };
}

/**
 * The writes of a merge, in order: per absorbed root, its records point at the survivor, join
 * the survivor's member set (the absorbed member set goes) and the absorbed root's merge log
 * moves into the survivor's, followed by the join itself; then the survivor's record. The merge
 * logs of the given records are updated in place (they are the caller's working copies). Ids
 * written as values are stored ids (keys.ts), as in every key of the layout.
 */
export function mergeWrites(
  decision: Extract<MergeDecision, { outcome: 'merged' }>,
  situation: Pick<MergeSituation, 'members' | 'records'>,
  at: string,
): PlannedWrite[] {
  const { members, records } = situation;
  const { survivor, via, typed } = decision;
  const writes: PlannedWrite[] = [];
  const survivorRecord = records.get(survivor)!;
  for (const root of decision.absorbed) {
    const joined = [root, ...(members.get(root) ?? [])];
    for (const id of joined) writes.push({ op: 'set', key: key.root(id), value: storedId(survivor) });
    writes.push({ op: 'sadd', key: key.members(survivor), members: joined.map(storedId) });
    writes.push({ op: 'del', key: key.members(root) });
    const rootRecord = records.get(root)!;
    survivorRecord.merges.push(...rootRecord.merges, mergeLogEntry(at, joined, via, typed));
    rootRecord.merges = [];
    writes.push({ op: 'set', key: key.record(root), value: encodeRecord(rootRecord) });
  }
  writes.push({ op: 'set', key: key.record(survivor), value: encodeRecord(survivorRecord) });
  return writes;
}

/** A refused merge is kept for operators (`identity:conflicts`, the newest 10 000). */
export function refusalWrites(
  reason: MergeRefusal,
  roots: readonly string[],
  via: Identifier,
  at: string,
  channelId: string,
): PlannedWrite[] {
  return conflictWrites({ at, reason, roots, via, channelId });
}

/**
 * An identity conflict for operators (GET /api/v1/identity/conflicts): contacts that one
 * identifier names but that were not merged. `reason` says why: a refused merge (MergeRefusal),
 * or `renormalized` (a re-index gave a stored identifier the key another contact holds, `was`
 * its form before; reindex-plan.ts). The list keeps the newest 10 000.
 */
export function conflictWrites(entry: {
  at: string;
  reason: MergeRefusal | 'renormalized';
  roots: readonly string[];
  via: Identifier;
  channelId?: string;
  was?: string;
}): PlannedWrite[] {
  return [
    { op: 'rpush', key: key.conflicts, values: [JSON.stringify(entry)] },
    { op: 'ltrim', key: key.conflicts, start: -10_000, stop: -1 },
  ];
}
