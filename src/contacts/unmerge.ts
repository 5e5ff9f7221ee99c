import { ValidationError } from '../errors.js';
import type { OutboxEntry } from '../events/outbox.js';
import { key, storedId } from './keys.js';
import { identifierLabel } from './normalize.js';
import { encodeRecord, mergedView, type StoredRecord, type Valued } from './record.js';
import { timelineMember } from './timeline.js';
import type { Contact, Identifier, TimelineEntry } from './types.js';
import type { PlannedWrite } from './writes.js';

/**
 * Unmerge planning (pure: no store, no clock, no randomness — the caller passes the time, the
 * entry id and the new record). Given a group as read (its root, members and records), a plan
 * says what splits off, which records must still be as read when the write runs, the writes,
 * the two contacts after it and the events to stage. The engine takes the locks, reads, and
 * commits the plan as one checked batch. Ids written as values are stored ids (keys.ts), as in
 * every key of the layout.
 */

/** An outbound event of a plan; the engine adds when it was staged. */
export type PlannedEvent = Omit<OutboxEntry, 'stagedAt'>;

export interface UnmergePlan {
  /** Records whose stored text must be unchanged since they were read (the write's expectations). */
  expectRecords: string[];
  writes: PlannedWrite[];
  /** The contact that stays, and the one split off. */
  contact: Contact;
  split: Contact;
  events: PlannedEvent[];
}

/** Only a record merged into the group (not its root) can be split off. */
export function assertMergedRecord(rootId: string, recordId: string, members: readonly string[]): void {
  if (recordId === rootId || !members.includes(recordId)) {
    throw new ValidationError('not a merged record of this contact', [
      { path: 'recordId', message: `merged records: ${[...members].sort().join(', ') || 'none'}` },
    ]);
  }
}

/**
 * Split a merged record off its group: the whole group it joined with (the merge that brought
 * it in) leaves together, under the first record of that merge as the new root, and the two
 * groups are kept apart from then on so that the identifier that joined them does not merge them
 * again. The root's merge log loses that merge, and the merges the leaving group had made
 * before go back to its new root (both records are updated in place).
 */
export function planRecordUnmerge(input: {
  rootId: string;
  recordId: string;
  /** The root's members as read (their order is kept). */
  members: readonly string[];
  records: ReadonlyMap<string, StoredRecord>;
  at: string;
  /** A fresh id for the `contact.unmerged` timeline entry. */
  entryId: string;
}): UnmergePlan {
  const { rootId, recordId, members, records, at } = input;
  assertMergedRecord(rootId, recordId, members);
  const root = records.get(rootId)!;
  // Undo the merge that brought this record in: its whole group at the time leaves together.
  const mergeIndex = root.merges.findLastIndex((merge) => merge.records.includes(recordId));
  const leaving =
    mergeIndex >= 0 ? root.merges[mergeIndex]!.records.filter((id) => members.includes(id)) : [recordId];
  const newRoot = leaving[0]!;
  const staying = [rootId, ...members.filter((member) => !leaving.includes(member))];
  const writes: PlannedWrite[] = [
    { op: 'srem', key: key.members(rootId), members: leaving.map(storedId) },
    { op: 'del', key: key.root(newRoot) },
  ];
  for (const member of leaving.slice(1))
    writes.push({ op: 'set', key: key.root(member), value: storedId(newRoot) });
  if (leaving.length > 1)
    writes.push({ op: 'sadd', key: key.members(newRoot), members: leaving.slice(1).map(storedId) });
  // Remember the split, so the identifier that joined them does not merge them again.
  for (const id of leaving) writes.push({ op: 'sadd', key: key.apart(id), members: staying.map(storedId) });
  for (const id of staying) writes.push({ op: 'sadd', key: key.apart(id), members: leaving.map(storedId) });
  if (mergeIndex >= 0) root.merges.splice(mergeIndex, 1);
  // The merges the leaving group had made before it joined moved into the root's log with it
  // (mergeWrites): every entry whose records all leave goes back onto the new root, in order.
  const newRootRecord = records.get(newRoot)!;
  const goesBack = root.merges.filter((merge) => merge.records.every((id) => leaving.includes(id)));
  if (goesBack.length > 0) {
    root.merges = root.merges.filter((merge) => !goesBack.includes(merge));
    newRootRecord.merges.push(...goesBack);
    writes.push({ op: 'set', key: key.record(newRoot), value: encodeRecord(newRootRecord) });
  }
  writes.push({ op: 'set', key: key.record(rootId), value: encodeRecord(root) });
  const present = (ids: readonly string[]) =>
    ids.map((member) => records.get(member)).filter((record) => record !== undefined);
  const contact = mergedView(rootId, present(staying));
  const split = mergedView(newRoot, [
    newRootRecord,
    ...present(leaving).filter((record) => record !== newRootRecord),
  ]);
  const entry: TimelineEntry = {
    id: input.entryId,
    at,
    channelId: '',
    vendor: 'chatbridge',
    type: 'contact.unmerged',
    summary: `Split off ${leaving.length} record${leaving.length === 1 ? '' : 's'} into ${newRoot}`,
    data: { from: rootId, split: newRoot, records: leaving },
  };
  writes.push({ op: 'zadd', key: key.timeline(rootId), member: timelineMember(entry) });
  return {
    // Observations write without locks: this holds only if the records it writes are as read.
    expectRecords: goesBack.length > 0 ? [rootId, newRoot] : [rootId],
    writes,
    contact,
    split,
    events: [
      {
        event: {
          id: `evt_${entry.id}`,
          type: 'contact.updated',
          occurredAt: at,
          channel: null,
          contact,
          data: { unmerged: leaving },
        },
        orderingKey: rootId,
      },
      {
        event: {
          id: `evt_${entry.id}_split`,
          type: 'contact.created',
          occurredAt: at,
          channel: null,
          contact: split,
          data: { unmergedFrom: rootId },
        },
        orderingKey: newRoot,
        // What was recorded about the contact before the split reaches destinations first.
        follows: [rootId],
      },
    ],
  };
}

/**
 * Split one identifier off into a contact of its own: the record holding it gives it up (and
 * the e-mail or phone value with it), a new record takes it and the identifier's index points
 * there, kept apart from every record of the group. `source` is updated in place; `fresh` is the
 * new, empty record.
 */
export function planIdentifierSplit(input: {
  rootId: string;
  /** The record the identifier's index points at (a record of this group). */
  holder: string;
  identifier: Identifier;
  members: readonly string[];
  records: ReadonlyMap<string, StoredRecord>;
  fresh: StoredRecord;
  at: string;
}): UnmergePlan & { expectIndex: { key: string; holder: string } } {
  const { rootId, holder, identifier, members, records, fresh: split, at } = input;
  const source = records.get(holder)!;
  const label = identifierLabel(identifier);
  source.ids = source.ids.filter((known) => identifierLabel(known) !== label);
  split.ids.push(identifier);
  // The value leaves as it was held: its time and its verified mark (verified once is verified).
  const move = (list: Valued[]): Valued[] => {
    const held = list.find((item) => item.v === identifier.value);
    return held ? [{ ...held }] : [{ v: identifier.value, at }];
  };
  if (identifier.kind === 'email') {
    split.emails.push(...move(source.emails));
    source.emails = source.emails.filter((item) => item.v !== identifier.value);
  }
  if (identifier.kind === 'phone') {
    split.phones.push(...move(source.phones));
    source.phones = source.phones.filter((item) => item.v !== identifier.value);
  }
  const groupIds = [rootId, ...members];
  const writes: PlannedWrite[] = [
    { op: 'set', key: key.record(holder), value: encodeRecord(source) },
    { op: 'set', key: key.record(split.id), value: encodeRecord(split) },
    { op: 'set', key: key.index(identifier), value: storedId(split.id) },
    { op: 'sadd', key: key.apart(split.id), members: groupIds.map(storedId) },
  ];
  for (const id of groupIds) writes.push({ op: 'sadd', key: key.apart(id), members: [storedId(split.id)] });
  const contact = mergedView(
    rootId,
    groupIds.map((id) => records.get(id)).filter((record) => record !== undefined),
  );
  const splitView = mergedView(split.id, [split]);
  return {
    // Observations write without locks: this holds only if the index and record are as read
    // (and the new record's random id is not taken: then it is not written).
    expectIndex: { key: key.index(identifier), holder },
    expectRecords: [holder, split.id],
    writes,
    contact,
    split: splitView,
    events: [
      {
        event: {
          id: `evt_split_${split.id}`,
          type: 'contact.created',
          occurredAt: at,
          channel: null,
          contact: splitView,
          data: { unmergedFrom: rootId, identifier },
        },
        orderingKey: split.id,
        follows: [rootId],
      },
      {
        event: {
          id: `evt_split_${split.id}_from`,
          type: 'contact.updated',
          occurredAt: at,
          channel: null,
          contact,
          data: { removedIdentifier: identifier },
        },
        orderingKey: rootId,
      },
    ],
  };
}
