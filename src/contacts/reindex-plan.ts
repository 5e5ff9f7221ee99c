import { key, storedId } from './keys.js';
import { conflictWrites } from './merge.js';
import {
  clipText,
  identifierLabel,
  type NormalizeOptions,
  normalizeIdentifier,
  parsePhone,
  splitPhones,
} from './normalize.js';
import { encodeRecord, type StoredRecord, type Valued } from './record.js';
import { nameWords, nameWordsBeforeFolding, timelineMember } from './timeline.js';
import type { Identifier, TimelineEntry } from './types.js';
import type { PlannedWrite } from './writes.js';

/**
 * What re-indexing one stored record writes (pure: no store, no clock — reindex.ts reads, locks
 * and commits). Stored keys follow the normalisation of the version that wrote them, and three
 * changes since make a key a value maps to today differ from the one stored:
 * - identifiers are NFC (b947a86): `é` written as e + U+0301 was its own key;
 * - an e-mail's internationalised domain is in Unicode form (7655d60): `ivan@xn--80a1acny.xn--p1ai`
 *   was a key of its own, beside `ivan@почта.рф`;
 * - a phone written with an extension is search-only (280f498): it was the plain number's merging
 *   key, which then took in everyone calling from that switchboard.
 * Values the current rules give no key at all (a character now refused, a blocklisted value) are
 * left as they are: nothing new reaches them, and nothing of the contact is dropped.
 *
 * The console's name index (`sidx:name:<word>`) is re-keyed too (nameIndexOf): names a record was
 * given before the index existed were never in it, and a word mixing Latin and Cyrillic look-alikes
 * was indexed as typed until 7655d60, under a key no query reaches (queries are folded too).
 */

/** What a record's timeline says of one of its phones (E.164), in the vendors' own payloads. */
export interface PhoneEvidence {
  /** Extensions it was written with. */
  extensions: Set<string>;
  /** Whether it was also written without one. */
  plain: boolean;
}

/** What of a record the current rules key differently; read from the record alone. */
export interface Renames {
  /** Identifiers of the record whose key changes: the stored one and the current one. */
  ids: Array<{ from: Identifier; to: Identifier }>;
  /** Values of the e-mail and phone lists whose form changes. */
  values: Array<{ list: 'emails' | 'phones'; from: string; to: string }>;
  /** Identifiers the current rules give no key to: kept as they are. */
  unkeyable: number;
  /** The record's phones (E.164) that keep their form: held with an extension, they stop merging. */
  phones: string[];
}

export function renamesOf(record: StoredRecord, options: NormalizeOptions): Renames {
  const renames: Renames = { ids: [], values: [], unkeyable: 0, phones: [] };
  for (const stored of record.ids) {
    const current = normalizeIdentifier(stored, options);
    if (current === null) renames.unkeyable += 1;
    else if (identifierLabel(current) !== identifierLabel(stored))
      renames.ids.push({ from: stored, to: current });
    else if (stored.kind === 'phone' && stored.channelId === undefined) renames.phones.push(stored.value);
  }
  for (const list of ['emails', 'phones'] as const) {
    const kind = list === 'emails' ? 'email' : 'phone';
    for (const item of record[list]) {
      const current = normalizeIdentifier({ kind, value: item.v }, options);
      if (current !== null && current.value !== item.v)
        renames.values.push({ list, from: item.v, to: current.value });
    }
  }
  return renames;
}

/** Whether the record needs more than its own text to be planned (index keys, its timeline). */
export function needsLook(renames: Renames): boolean {
  return renames.ids.length > 0 || renames.values.length > 0 || renames.phones.length > 0;
}

/** The index keys a plan is made on: each renamed identifier's old and new key, each phone's. */
export function indexKeysOf(renames: Renames): string[] {
  const keys = new Set<string>();
  for (const { from, to } of renames.ids) {
    keys.add(key.index(from));
    keys.add(key.index(to));
  }
  for (const phone of renames.phones) keys.add(key.index({ kind: 'phone', value: phone }));
  return [...keys];
}

/**
 * Where a vendor payload keeps a phone as it was written: a field named like one (`phone`,
 * `phones`, `mobile_phone`, `tel`: JivoChat's `visitor.phone` and `call.phone`, LiveTex's
 * `discourser.phone`), or a contact entry typed as one (LiveTex's `{type: "phone", value}`).
 */
const PHONE_FIELD = /phone|mobile|^tel(ephone)?$/i;
const PHONE_TYPE = /phone|tel/i;
/** Nesting walked in one entry's data (a stored entry was parsed with a depth limit anyway). */
const EVIDENCE_DEPTH = 32;

/**
 * Which of `phones` (E.164) the timeline entries (stored members, `at|id|json`) show written with
 * an extension, and which without one. An old version kept only the number of
 * "+7 495 123-45-67 доб. 101" in the record; the payload in the entry still has it as written.
 */
export function phoneEvidence(
  members: readonly string[],
  phones: ReadonlySet<string>,
  defaultCountry: string,
  into: Map<string, PhoneEvidence> = new Map(),
): Map<string, PhoneEvidence> {
  const note = (text: string) => {
    for (const piece of splitPhones(text)) {
      const parts = parsePhone(piece, defaultCountry);
      if (!parts || !phones.has(parts.number)) continue;
      let seen = into.get(parts.number);
      if (!seen) {
        seen = { extensions: new Set(), plain: false };
        into.set(parts.number, seen);
      }
      if (parts.ext === undefined) seen.plain = true;
      else seen.extensions.add(parts.ext);
    }
  };
  const walk = (value: unknown, field: string | undefined, depth: number): void => {
    if (typeof value === 'string') {
      if (field !== undefined && PHONE_FIELD.test(field)) note(value);
      return;
    }
    if (typeof value !== 'object' || value === null || depth > EVIDENCE_DEPTH) return;
    if (Array.isArray(value)) {
      for (const item of value) walk(item, field, depth + 1);
      return;
    }
    const object = value as Record<string, unknown>;
    const type = object.type ?? object.kind;
    if (typeof type === 'string' && PHONE_TYPE.test(type) && typeof object.value === 'string')
      note(object.value);
    for (const name in object) walk(object[name], name, depth + 1);
  };
  for (const member of members) {
    // Only entries that name a phone field somewhere are parsed (most hold none).
    if (!/phone|mobile|tel/i.test(member)) continue;
    const json = member.slice(member.indexOf('|', member.indexOf('|') + 1) + 1);
    let entry: { data?: unknown };
    try {
      entry = JSON.parse(json) as { data?: unknown };
    } catch {
      continue;
    }
    walk(entry.data, undefined, 0);
  }
  return into;
}

/** The extension sets (`sidx:phone:<number>;ext=<ext>`) a record's phones call for: those never written without one. */
export function extensionSetsOf(renames: Renames, evidence: ReadonlyMap<string, PhoneEvidence>): string[] {
  const sets: string[] = [];
  for (const phone of renames.phones) {
    const seen = evidence.get(phone);
    if (!seen || seen.plain) continue;
    for (const ext of seen.extensions) sets.push(key.searchExtension({ kind: 'phone', value: phone }, ext));
  }
  return sets;
}

export interface ReindexInput {
  /** The record as read (a working copy: changed in place). */
  record: StoredRecord;
  /** Its contact: its root (itself when not merged into another). */
  root: string;
  renames: Renames;
  /** Every key of indexKeysOf(renames): the record holding it, null when none. */
  holders: ReadonlyMap<string, string | null>;
  /** The contact (root) of every holder other than the record. */
  holderRoots: ReadonlyMap<string, string>;
  /** Holders of a new key that are other records of the same contact (working copies). */
  groupRecords: ReadonlyMap<string, StoredRecord>;
  /** For the phones whose merging key the record holds: what its timeline says (phoneEvidence). */
  evidence: ReadonlyMap<string, PhoneEvidence>;
  /** Extension sets the record is in already. */
  inExtensionSets: ReadonlySet<string>;
  at: string;
  /** A fresh id for the timeline entry that says what changed. */
  entryId: string;
}

/** One identifier's change, as the timeline entry and the conflicts list tell it. */
export interface ReindexChange {
  kind: string;
  channelId?: string;
  from: string;
  to: string;
  /**
   * `rekeyed`: the record holds the new key; `joined`: another record of the same contact holds
   * it, which keeps the value; `conflict`: another contact holds it (recorded in identity conflicts,
   * nothing merged; the record keeps the value, search-only); `search-only`: a phone always written
   * with an extension gave up the number's merging key; `search`: a search-only value moved set.
   */
  outcome: 'rekeyed' | 'joined' | 'conflict' | 'search-only' | 'search';
  /** search-only: the extensions it was written with. */
  extensions?: string[];
}

export interface ReindexPlan {
  writes: PlannedWrite[];
  /** Other records of the contact the writes rewrite (their text is expected as read). */
  rewritten: string[];
  changes: ReindexChange[];
  /** Extension sets the record joins (its phones that become search-only). */
  extensionSets: number;
}

const sameValue = (list: Valued[], value: string) => list.find((item) => item.v === value);

/** Rename `from` to `to` in a value list; a value already there absorbs it (newest time, verified once). */
function renameValue(list: Valued[], from: string, to: string): void {
  const item = sameValue(list, from);
  if (!item) return;
  const existing = sameValue(list, to);
  if (!existing) {
    item.v = to;
    return;
  }
  if (existing.at < item.at) existing.at = item.at;
  if (item.ok) existing.ok = true;
  list.splice(list.indexOf(item), 1);
}

export function planReindex(input: ReindexInput): ReindexPlan {
  const { record, root, renames, holders, holderRoots, groupRecords } = input;
  const id = record.id;
  const writes: PlannedWrite[] = [];
  const changes: ReindexChange[] = [];
  const rewritten = new Set<string>();
  let recordChanged = false;
  const conflicts: Array<{ via: Identifier; was: string; roots: string[] }> = [];

  // The lists first: each value in its current form (two forms of one value become one entry).
  for (const { list, from, to } of renames.values) {
    renameValue(record[list], from, to);
    recordChanged = true;
  }

  for (const { from, to } of renames.ids) {
    const oldKey = key.index(from);
    const newKey = key.index(to);
    const oldHolder = holders.get(oldKey) ?? null;
    const newHolder = holders.get(newKey) ?? null;
    const change: ReindexChange = {
      kind: from.kind,
      ...(from.channelId === undefined ? {} : { channelId: from.channelId }),
      from: from.value,
      to: to.value,
      outcome: 'rekeyed',
    };
    const fromLabel = identifierLabel(from);
    const toLabel = identifierLabel(to);
    const hasNew = record.ids.some((known) => identifierLabel(known) === toLabel);
    /** The stored identifier in its current form, or gone when the record has that one already. */
    const renameId = () => {
      const at = record.ids.findIndex((known) => identifierLabel(known) === fromLabel);
      if (at === -1) return;
      if (hasNew) record.ids.splice(at, 1);
      else record.ids[at] = to.channelId === undefined ? { kind: to.kind, value: to.value } : { ...to };
    };
    recordChanged = true;
    if (oldHolder !== id) {
      // Not the record's merging key: a search-only value (identity.mergeOnVisitorTyped, a kind
      // outside identity.mergeOn), whose set moves with it.
      renameId();
      // (A vendor-local id always has a merging key, none of these sets.)
      if (from.channelId === undefined) {
        writes.push({ op: 'srem', key: key.search(from), members: [storedId(id)] });
        writes.push({ op: 'sadd', key: key.search(to), members: [storedId(id)] });
      }
      changes.push({ ...change, outcome: 'search' });
      continue;
    }
    writes.push({ op: 'del', key: oldKey });
    if (newHolder === null || newHolder === id) {
      if (newHolder === null) writes.push({ op: 'set', key: newKey, value: storedId(id) });
      renameId();
      changes.push(change);
    } else if (holderRoots.get(newHolder) === root) {
      // Another record of this contact holds the current form: as an observation would, the
      // value stays with that record, which takes this one's time and verified mark.
      const holder = groupRecords.get(newHolder);
      const at = record.ids.findIndex((known) => identifierLabel(known) === fromLabel);
      if (at !== -1) record.ids.splice(at, 1);
      const list = from.kind === 'email' ? 'emails' : from.kind === 'phone' ? 'phones' : null;
      // (A holder whose record is gone leaves the value where it is.)
      if (list && holder) {
        const mine = sameValue(record[list], to.value);
        if (mine) {
          record[list].splice(record[list].indexOf(mine), 1);
          const theirs = sameValue(holder[list], to.value);
          if (!theirs) holder[list].push({ ...mine });
          else {
            if (theirs.at < mine.at) theirs.at = mine.at;
            if (mine.ok) theirs.ok = true;
          }
        }
      }
      if (holder) rewritten.add(newHolder);
      changes.push({ ...change, outcome: 'joined' });
    } else {
      // Another contact holds the current form. Merging is the staff's call (the two were kept
      // apart until now, and may be two people): recorded as an identity conflict. The record
      // keeps the value, as a search-only one (in the search set, not the index).
      renameId();
      writes.push({ op: 'sadd', key: key.search(to), members: [storedId(id)] });
      const otherRoot = holderRoots.get(newHolder) ?? newHolder;
      conflicts.push({ via: to, was: from.value, roots: [root, otherRoot] });
      changes.push({ ...change, outcome: 'conflict' });
    }
  }

  // Phones whose merging key the record holds, written with an extension in its history.
  let extensionSets = 0;
  for (const phone of renames.phones) {
    const identifier = { kind: 'phone', value: phone };
    const indexKey = key.index(identifier);
    if ((holders.get(indexKey) ?? null) !== id) continue;
    const seen = input.evidence.get(phone);
    // Never with an extension, or also without one: the number is the person's own, and keeps
    // merging (a search with an extension finds its holder through the index as well).
    if (!seen || seen.extensions.size === 0 || seen.plain) continue;
    const extensions = [...seen.extensions].sort();
    for (const ext of extensions) {
      const set = key.searchExtension(identifier, ext);
      if (input.inExtensionSets.has(set)) continue;
      writes.push({ op: 'sadd', key: set, members: [storedId(id)] });
      extensionSets += 1;
    }
    writes.push({ op: 'del', key: indexKey });
    writes.push({ op: 'sadd', key: key.search(identifier), members: [storedId(id)] });
    changes.push({ kind: 'phone', from: phone, to: phone, outcome: 'search-only', extensions });
  }

  if (recordChanged) writes.push({ op: 'set', key: key.record(id), value: encodeRecord(record) });
  for (const holder of rewritten)
    writes.push({ op: 'set', key: key.record(holder), value: encodeRecord(groupRecords.get(holder)!) });
  for (const conflict of conflicts)
    writes.push(...conflictWrites({ at: input.at, reason: 'renormalized', ...conflict }));
  // What changed, with the forms before, on the record's timeline: the old form is kept there
  // (and staff see why a value reads differently, or why a phone stopped merging).
  if (changes.length > 0) {
    const entry: TimelineEntry = {
      id: input.entryId,
      at: input.at,
      channelId: '',
      vendor: 'chatbridge',
      type: 'contact.reindexed',
      summary: clipText(`Identifiers re-indexed: ${changes.map(describeChange).join('; ')}`, 500),
      data: { changes },
    };
    writes.push({ op: 'zadd', key: key.timeline(id), member: timelineMember(entry) });
  }
  return { writes, rewritten: [...rewritten], changes, extensionSets };
}

function describeChange(change: ReindexChange): string {
  const name = change.kind === 'email' ? 'e-mail' : change.kind;
  switch (change.outcome) {
    case 'search-only':
      return `phone ${change.from}, always written with an extension (${change.extensions!.join(', ')}), no longer merges contacts`;
    case 'conflict':
      return `${name} ${change.from} is now ${change.to}, which another contact holds (an identity conflict; not merged)`;
    case 'joined':
      return `${name} ${change.from} is now ${change.to}, held by another record of this contact`;
    default:
      return `${name} ${change.from} is now ${change.to}`;
  }
}

/** What the name index should hold for one record, read from the record alone. */
export interface NameIndexPlan {
  /** Today's words of every name of the record: each must hold the record (`sidx:name:<word>`). */
  words: string[];
  /**
   * Words an older folding gave one of its names that today's folding gives none of them: no query
   * reaches them (nameWordsBeforeFolding). Only these, and only the record's own id under them,
   * may go: a record keeps every name it was given, and a word today's folding still gives one of
   * them (a 40-unit cut that no longer folds, say) is what a query for that name reaches.
   */
  stale: string[];
}

export function nameIndexOf(record: Pick<StoredRecord, 'names'>): NameIndexPlan {
  const words = new Set<string>();
  const older = new Set<string>();
  for (const { v } of record.names) {
    for (const word of nameWords(v)) words.add(word);
    for (const word of nameWordsBeforeFolding(v)) older.add(word);
  }
  return { words: [...words], stale: [...older].filter((word) => !words.has(word)) };
}
