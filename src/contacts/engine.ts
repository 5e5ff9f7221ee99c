import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import {
  AppError,
  ConflictError,
  formatPath,
  IdentityContentionError,
  NoIdentifierError,
  NotFoundError,
  ValidationError,
} from '../errors.js';
import type { EventPublisher, OutboxEntry } from '../events/outbox.js';
import { extend } from '../extend.js';
import { deepFreeze } from '../freeze.js';
import { isoFromMs } from '../isotime.js';
import type { Metrics } from '../metrics.js';
import { LOCK_KEY_PREFIX } from '../store/memory.js';
import type { Claim, GroupReadResult, Lock, Store, StoreBatch } from '../store/types.js';
import { ENCODE_TRANSCODED_UNITS, utf8Bytes } from '../utf8.js';
import { createConflictList } from './conflicts.js';
import { groupLayout, isRecordId, key, publicId, storedId } from './keys.js';
import { isHttpLink } from './links.js';
import {
  decideMerge,
  groupIdsOf,
  MANUAL_MERGE_KIND,
  type MergeRefusal,
  type MergeSituation,
  mergeWrites,
  refusalWrites,
  survivorOf,
} from './merge.js';
import {
  cleanDisplayText,
  clipText,
  identifierLabel,
  normalizeIdentifier,
  normalizeOptionsOf,
  parsePhone,
  quotedInput,
  splitPhones,
} from './normalize.js';
import { capIdentifiersPerKind, checkObservation } from './observation.js';
import {
  type AgentStatement,
  asDecoded,
  decodeRecord,
  encodeRecord,
  mergedView,
  named,
  newRecord,
  responsibleOf,
  type StoredRecord,
  sameAgent,
  sameOrder,
  sameShown,
  timesOf,
  upsertValued,
} from './record.js';
import {
  type ClaimedFind,
  type ContactQuery,
  type ContactService,
  FIND_LIMIT,
  type ManyContact,
  type TimelineOptions,
  type TimelinePage,
  type UnmergeRequest,
} from './service.js';
import {
  entryId,
  eventId,
  isoOf,
  nameWords,
  notAfter,
  timelineMember,
  timelineMemberWithData,
} from './timeline.js';
import type { Contact, Identifier, ObserveResult, ParsedObservation, TimelineEntry } from './types.js';
import { assertMergedRecord, planIdentifierSplit, planRecordUnmerge, type UnmergePlan } from './unmerge.js';
import { queueWrites } from './writes.js';

export { nameWords } from './timeline.js';

/**
 * The identity engine (DESIGN §7).
 *
 * Storage model — records and groups:
 * - Every contact the bridge ever created is a *record* (`rec:<id>`, JSON). Records are never
 *   physically merged: a merge points the absorbed records at the surviving root (`root:<id>`)
 *   and adds them to the root's member set (`members:<root>`). The contact the API shows is
 *   the union of a root and its members. Undoing a merge is therefore just moving pointers
 *   back, and nothing a vendor said is ever thrown away.
 * - Identifiers that may merge (kinds in identity.mergeOn, and vendor-local ids within their
 *   channel) map to exactly one record: `idx:<kind>:<scope>:<value>`. Kinds that must not merge
 *   are only searchable: `sidx:<kind>:<value>` (a set).
 * - Each record has its own timeline (`tl:<id>`, a sorted set whose members sort by time, read
 *   newest first across the group's records).
 *
 * Concurrency (optimistic): an observation reads in one trip (Store.readGroups: the idempotency
 * key, the identifier index, and the holders' roots, member lists and every record of their
 * groups, up to identity.maxMergeSize records), plans its write, and commits it as ONE atomic batch (record, index claims, timeline entries,
 * idempotency key, outbound events) that *expects* every value it was planned on — no earlier
 * delivery, the same holders, roots and record texts (StoreBatch.expect, one Lua script on
 * Redis). If anything changed, nothing is written and it reads again: two instances seeing the
 * same new person both try to claim the identifiers as absent, one wins, the other re-reads and
 * updates the winner's record. An observation may also plan without reading, on a state it
 * is handed (a lane's previous write, or what this process last wrote for the person: LaneState,
 * `remembered`) — with the same expectations, so a stale one fails the same way and reads.
 * No locks on these paths, but those writes expect the contact's lock (its root's) to be free.
 * A merge of two existing contacts takes the identifier and record locks (one atomic step
 * each, identifiers first), so two merges of one group do not interleave; unmerge and split
 * keep theirs, and also expect what they read, since observations no longer lock. An
 * observation that keeps losing its check takes its identifiers' lock, then its contact's, and
 * reads and writes under both (observe, lockedAttempt). The pure parts live next to this file:
 * record.ts (stored form, merged view), keys.ts (key layout), timeline.ts (entries, event ids),
 * merge.ts (merge policy: survivor, refusals, merge log), unmerge.ts (what an unmerge or split
 * writes), writes.ts (planned writes as data); this file reads, plans with them and writes.
 */

const UNSAFE_LINKS_HELP =
  'Links for agents dropped because they were not http(s) (javascript:, data: ...), by where they came from';
const LOCK_TTL_MS = 10_000;
const LOCK_WAIT_MS = 5_000;
const MAX_PLAN_ATTEMPTS = 8;
/** A timeline page stops once its entries reach this many bytes of JSON (always one entry at least). */
export const TIMELINE_PAGE_BYTES = 1024 * 1024;
/** Timeline members read per round trip, per record, when a page is merged. */
const TIMELINE_CHUNK = 26;
/**
 * A filtered timeline page passes over at most this many entries that do not match, and at most
 * about this many bytes of them, then answers with what it found (`partial: true`) and a cursor
 * to read on: a filter that matches nothing in 10,000 entries costs several bounded requests,
 * not one that reads them all.
 */
export const TIMELINE_SCAN_ENTRIES = 1000;
export const TIMELINE_SCAN_BYTES = 4 * 1024 * 1024;
/** timelineJson's fixed bytes: the page's opening and the comma between entries. */
const ENTRIES_OPEN = Buffer.from('{"entries":[');
const COMMA = Buffer.from(',');

/**
 * Where a member's `at|id|` ends (its second `|`), or -1 for a member not as the bridge writes
 * them as far as a cheap check tells: no such `|`, a non-ASCII `at|id`, an entry not `{...}`,
 * bytes that are not UTF-8 (read as text, U+FFFD for them). timelineWalk takes such an odd member
 * as its text, and timelineJson answers a page that read one as JSON.stringify of timeline()'s.
 */
function storedSplit(member: Buffer): number {
  const split = member.indexOf(0x7c, 25);
  if (split < 0 || member[split + 1] !== 0x7b || member[member.length - 1] !== 0x7d) return -1;
  for (let index = 0; index < split; index++) if (member[index]! >= 0x80) return -1;
  return isUtf8(member) ? split : -1;
}

/** One record's timeline as timelineWalk reads it on: the chunk's members not yet taken. */
interface WalkCursor {
  key: string;
  /** The next chunk's exclusive upper bound: the last member read (an odd one as its text). */
  below: string | Buffer | undefined;
  buffer: Buffer[];
  /** storedSplit of each member in `buffer`. */
  splits: number[];
  /** Each odd member's text (as read as UTF-8), undefined for the others; empty when none is odd. */
  texts: Array<string | undefined>;
  done: boolean;
}

/** A timeline page as timelineWalk took it (see there). */
interface WalkedPage {
  json: Array<Buffer | string>;
  entries: TimelineEntry[] | undefined;
  nextCursor: string | null;
  partial: boolean;
  odd: boolean;
}

/** A page as timeline() answers it: `partial` only when true. */
function pageOf(entries: TimelineEntry[], page: WalkedPage): TimelinePage {
  return page.partial
    ? { entries, nextCursor: page.nextCursor, partial: true }
    : { entries, nextCursor: page.nextCursor };
}

/** A taken entry's JSON parsed (its bytes read as UTF-8). */
function parseEntry(json: Buffer | string): TimelineEntry {
  return JSON.parse(typeof json === 'string' ? json : json.toString('utf8')) as TimelineEntry;
}

/**
 * Whether one record's next member is newer than another's, as their texts compare (UTF-16
 * order, what timeline() compared when it read members as strings): `at|id|` is ASCII, where byte
 * order is that string order; two members of one `at|id|` (one entry id in two merged records),
 * and any odd member, are compared as text.
 */
function memberAbove(a: WalkCursor, b: WalkCursor): boolean {
  const x = a.buffer[0]!;
  const y = b.buffer[0]!;
  const split = a.splits[0]!;
  const other = b.splits[0]!;
  if (split < 0 || other < 0) return (a.texts[0] ?? x.toString('utf8')) > (b.texts[0] ?? y.toString('utf8'));
  if (split === other && x.compare(y, 0, split + 1, 0, split + 1) === 0)
    return x.toString('utf8') > y.toString('utf8');
  return x.compare(y) > 0;
}

/**
 * A name search reads at most about this many record ids (plus one page) before it answers with
 * what it found and `more` (refine the search); ids are asked for NAME_SEARCH_PAGE at most at a
 * time, and one store call looks at no more than NAME_SEARCH_SCAN ids of the smallest word's set.
 */
export const NAME_SEARCH_IDS = 1000;
const NAME_SEARCH_PAGE = 200;
const NAME_SEARCH_SCAN = 5000;
/**
 * A search loads the contacts of at most this many found record ids per store step
 * (Store.readGroups with `ids`), reading at most FOUND_RECORDS records in it (more in a later
 * step): a page of contacts costs one round trip, not one or two per contact.
 */
const FOUND_IDS = NAME_SEARCH_PAGE;
const FOUND_RECORDS = 1000;
/** Lock-free tries before a contended observation queues on the identity lock. */
const OPTIMISTIC_ATTEMPTS = 3;
const CONTACT_EVENTS_KEY = 'contact';
/** What is kept for planning without a read (see `remembered`): about 16 MiB. */
const REMEMBERED_BYTES = 16 * 1024 * 1024;
/**
 * A remembered state's heap besides its keys (~150 B each, with the cache's entry), texts, applied
 * keys and decoded record: measured, a new JivoChat visitor's compact state (four keys, 1,470
 * characters of text) took ~2.15 KB with its entry, where this counts 2.2 KB. A group's four maps
 * add about GROUP_BYTES.
 */
const STATE_BYTES = 100;
const GROUP_BYTES = 800;
/** Contacts kept as lookups last answered them (see `lookedUp`): about 8 MiB. */
const LOOKED_UP_BYTES = 8 * 1024 * 1024;
/** After a remembered state did not hold, that person is read first for this long. */
const REMEMBER_BACKOFF_MS = 60_000;
/**
 * The lock of a contact: its root's. Merges, unmerges and contended observations take it; every
 * other write of the contact expects it free (engine's writeObservation).
 */
export const contactLockName = (root: string) => `root:${root}`;
/** An unmerge finds its contact again this often if it keeps being merged away meanwhile. */
const UNMERGE_ATTEMPTS = 3;
/** The contact an unmerge was about became part of another one before its lock was taken. */
class RootMoved extends Error {}
/** The per-installation random salt of event ids (see installationSalt). */
export const INSTALLATION_SALT_KEY = 'installation:salt';
/** Until when (ms since epoch) observations' former idempotency keys are looked for (formerKeysUntil). */
export const FORMER_KEYS_UNTIL_KEY = 'compat:former-keys-until';
/** How long older instances may go on writing former keys after this version first ran (a rolling upgrade). */
const FORMER_KEYS_GRACE_MS = 24 * 3_600_000;
const NO_KEYS: readonly string[] = [];
const NO_FORMER_READS: ReadonlyArray<{ key: string; value: string | null }> = [];
/** An observation's own dedupe key as a read found it (ownKeyOf in the engine). */
interface OwnKey {
  repeatOf: string | null;
  outlived: string | null;
}
const NO_OWN_KEY: OwnKey = { repeatOf: null, outlived: null };

export interface ContactEngineOptions {
  store: Store;
  identity: Config['identity'];
  events: EventPublisher;
  metrics: Metrics;
  logger: Logger;
  now?: () => Date;
  /** Size caps (config `limits`); the schema's defaults when not given. */
  limits?: Partial<Config['limits']>;
}

const DEFAULT_LIMITS = {
  fieldLength: 2000,
  attributesPerContact: 200,
  identifiersPerKind: 20,
  labelsPerObservation: 100,
  messagesPerTranscript: 500,
  attributeValueLength: 4000,
  timelineEntryBytes: 64 * 1024,
  contactRecordBytes: 256 * 1024,
  timelineRetention: 0,
};

/** Names one observation gives a contact; further ones are dropped and counted. */
const NAMES_PER_OBSERVATION = 20;

export class ContactTooLargeError extends AppError {
  constructor(bytes: number, limit: number) {
    super(
      'contact_too_large',
      413,
      `the contact record would be ${bytes} bytes, more than limits.contactRecordBytes (${limit}); nothing was written`,
    );
  }
}

export function createContactEngine(options: ContactEngineOptions): ContactService {
  const { store, identity, events, metrics, logger } = options;
  const now = options.now ?? (() => new Date());
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const truncated = () => metrics.truncated();
  const mergeOn = new Set<string>(identity.mergeOn);
  const normalizeOptions = normalizeOptionsOf(identity);
  const dedupeTtlMs = identity.dedupeTtlSeconds * 1000;
  /**
   * How long a snapshot's key is kept (Observation.snapshot; README, Idempotency): never longer
   * than any other key's.
   */
  const snapshotTtlMs = Math.min(identity.snapshotDedupeSeconds * 1000, dedupeTtlMs);
  const conflictList = createConflictList(store);

  /** Identifiers that resolve to exactly one record: mergeable global kinds and vendor-local ids. */
  const mergeOnVisitorTyped = new Set<string>(identity.mergeOnVisitorTyped ?? identity.mergeOn);
  /** Identifiers of the observation at hand that are visitor-typed and may not merge (search only). */
  const searchOnly = new WeakSet<Identifier>();
  /**
   * Phones written with an extension ("+7 495 123-45-67 доб. 101"), with that extension. The key
   * is the number (E.164, the contract's phones), which the colleagues behind one switchboard
   * share: such a phone is search-only whatever its provenance (it must not merge the person at
   * 101 with the one at 102), found through `sidx:phone:<number>` and, by a search that gives
   * the same extension, `sidx:phone:<number>;ext=<ext>` (the same person seen by two vendors).
   */
  const extensionOf = new WeakMap<Identifier, string>();
  /** The extension of a phone identifier as given (`raw`), noted on its normalised `identifier`. */
  const noteExtension = (raw: Identifier, identifier: Identifier) => {
    if (identifier.kind !== 'phone') return undefined;
    const ext = parsePhone(splitPhones(raw.value.trim())[0] ?? '', normalizeOptions.defaultCountry)?.ext;
    if (ext !== undefined) extensionOf.set(identifier, ext);
    return ext;
  };
  const resolves = (identifier: Identifier) =>
    identifier.channelId !== undefined || (mergeOn.has(identifier.kind) && !searchOnly.has(identifier));
  /** Earlier kinds win when choosing which record an observation writes to. */
  const priority = (identifier: Identifier) => {
    const order = ['person', 'email', 'phone'].indexOf(identifier.kind);
    return order === -1 ? 3 : order;
  };

  /** The stored text each record was read from: an observation writes only if it is unchanged. */
  const readAs = new WeakMap<StoredRecord, string>();

  async function readRecords(ids: readonly string[]): Promise<Map<string, StoredRecord>> {
    const out = new Map<string, StoredRecord>();
    if (ids.length === 0) return out;
    const values = await store.mget(ids.map(key.record));
    ids.forEach((id, index) => {
      const value = values[index];
      if (value) {
        const record = decodeRecord(id, value);
        readAs.set(record, value);
        out.set(id, record);
      }
    });
    return out;
  }

  /**
   * limits.timelineRetention: a timeline is dropped after that long without a new entry, so every
   * write that adds one (an observation's entries, a merge's, an unmerge's) starts the clock again.
   */
  function retainTimeline(batch: StoreBatch, timelineKey: string): void {
    if (limits.timelineRetention > 0) batch.expire(timelineKey, limits.timelineRetention);
  }

  /**
   * `awaitRelease: false` is for a lock taken inside another one: its release is sent without
   * waiting, and the outer lock's release, sent after it on the same connection, is only answered
   * once Redis has applied both — one round trip instead of two, with the same guarantees.
   */
  async function withLock<T>(
    names: string[],
    what: string,
    run: () => Promise<T>,
    options: { awaitRelease?: boolean } = {},
  ): Promise<T> {
    const unique = [...new Set(names)].sort();
    let lock: Lock;
    try {
      lock = await store.lock(unique, { ttlMs: LOCK_TTL_MS, waitMs: LOCK_WAIT_MS });
    } catch (error) {
      logger.warn({ what, err: error }, 'lock not taken');
      throw error;
    }
    try {
      return await run();
    } finally {
      const released = lock.release(); // never rejects (Store contract)
      if (options.awaitRelease ?? true) await released;
    }
  }

  /** A set of record ids (members, apart, search), as ids: the store holds their stored form. */
  async function idSet(setKey: string): Promise<string[]> {
    return (await store.smembers(setKey)).map(publicId);
  }

  function membersOf(rootId: string): Promise<string[]> {
    return idSet(key.members(rootId));
  }

  /** A string key that names a record (index, root pointer), as the record's id. */
  async function idAt(stringKey: string): Promise<string | null> {
    const value = await store.get(stringKey);
    return value === null ? null : publicId(value);
  }

  async function loadGroup(rootId: string): Promise<StoredRecord[]> {
    const members = await membersOf(rootId);
    const records = await readRecords([rootId, ...members.sort()]);
    return [...records.values()];
  }

  async function loadContact(id: string): Promise<{ contact: Contact; rootId: string } | null> {
    if (!isRecordId(id)) return null;
    // Read as if `id` were a root (it usually is): pointer, members and record in one trip; a
    // merged-away id or a group with members costs one more.
    const [stored, members, own] = await Promise.all([
      store.get(key.root(id)),
      membersOf(id),
      readRecords([id]),
    ]);
    const pointer = stored === null ? null : publicId(stored);
    if (pointer !== null) {
      const records = await loadGroup(pointer);
      return records.length === 0 ? null : { contact: mergedView(pointer, records), rootId: pointer };
    }
    const record = own.get(id);
    if (!record) return null;
    const others = members.length > 0 ? await readRecords(members.sort()) : new Map<string, StoredRecord>();
    return { contact: mergedView(id, [record, ...others.values()]), rootId: id };
  }

  /**
   * The ids of the records a contact's group holds — what loadContact's `contact.records` lists —
   * without decoding them or building the merged view: a timeline page needs only these, and for
   * a contact with a long history the decode and view were most of a page's allocations
   * (1.3 MB per page of a 1,000-dialog contact, measured with a sampling heap profile).
   */
  async function recordIdsOf(id: string): Promise<string[] | null> {
    if (!isRecordId(id)) return null;
    // Whether a record exists, without reading it (PTTL: -2 for a missing key).
    const exists = async (recordId: string) => (await store.pttl(key.record(recordId))) !== -2;
    // Only the records that exist, as the merged view lists them.
    const existing = async (ids: string[]) => {
      const present = await Promise.all(ids.map(exists));
      return ids.filter((_, index) => present[index]);
    };
    const [stored, members, own] = await Promise.all([store.get(key.root(id)), membersOf(id), exists(id)]);
    if (stored === null) return own ? [id, ...(await existing(members))] : null;
    const pointer = publicId(stored);
    const found = await existing([pointer, ...(await membersOf(pointer))]);
    return found.length === 0 ? null : found;
  }

  /** Apply what the observation says to one record; returns whether contact-visible data changed. */
  function apply(
    record: StoredRecord,
    observation: ParsedObservation,
    identifiers: Identifier[],
    at: string,
  ): boolean {
    let changed = false;
    // A value seen again can become the newest, and so the one shown first (mergedView), with
    // nothing added: the times before are kept, only for a list that could change order.
    const namesAt = observation.names.length > 0 ? timesOf(record.names) : undefined;
    let emailsAt: string[] | undefined;
    let phonesAt: string[] | undefined;
    for (const identifier of identifiers) {
      if (identifier.kind === 'email') emailsAt ??= timesOf(record.emails);
      else if (identifier.kind === 'phone') phonesAt ??= timesOf(record.phones);
    }
    // Names arrive cut to limits.fieldLength with … (capObservation, counted there): kept whole.
    for (const name of observation.names) {
      const trimmed = name.trim();
      if (trimmed && upsertValued(record.names, trimmed, at)) changed = true;
    }
    const knownIds = new Set(record.ids.map(identifierLabel));
    for (const identifier of identifiers) {
      const label = identifierLabel(identifier);
      if (!knownIds.has(label)) {
        knownIds.add(label);
        // As stored (encodeRecord keeps kind, value and channel): the record may be handed to the
        // lane's next plan as decodeRecord would make it (LaneState.decoded), and the
        // observation's identifier carries its provenance besides.
        record.ids.push(
          identifier.channelId === undefined
            ? { kind: identifier.kind, value: identifier.value }
            : { kind: identifier.kind, value: identifier.value, channelId: identifier.channelId },
        );
        changed = true;
      }
      const verified = identifier.provenance === 'verified';
      if (identifier.kind === 'email' && upsertValued(record.emails, identifier.value, at, verified))
        changed = true;
      if (identifier.kind === 'phone' && upsertValued(record.phones, identifier.value, at, verified))
        changed = true;
    }
    for (const label of observation.labels) {
      if (label && !record.labels.includes(label)) {
        record.labels.push(label);
        changed = true;
      }
    }
    let attributeCount = Object.keys(record.attrs).length;
    // for-in, not Object.entries: no [name, value] array per attribute (tens per webhook).
    for (const name in observation.attributes) {
      const attribute = observation.attributes[name]!;
      const current = record.attrs[name];
      if (!current && attributeCount >= limits.attributesPerContact) {
        truncated().inc({ what: 'attribute_count' });
        continue;
      }
      if (!current) attributeCount++;
      if (current && current.at > at) continue;
      if (
        !current ||
        current.value !== attribute.value ||
        current.label !== attribute.label ||
        current.type !== attribute.type
      )
        changed = true;
      record.attrs[name] = extend(attribute, { channelId: observation.channelId, at });
    }
    // One rule for every vendor (README, Responsible agent): each channel's newest statement of
    // who is responsible counts, an explicit unassignment (null) included, and the contact's agent
    // is the newest one a channel still names (record.ts responsibleOf). So an unassignment takes
    // back only what its own channel said. It is kept ({at} and the channel) even on a record that
    // had no agent, so that it also clears that channel's older agent on another record of the
    // group, and a statement of that channel older than it, arriving late, brings nobody back.
    const agent = observation.responsibleAgent;
    if (agent === null || named(agent)) {
      const channel = observation.channelId;
      const statements = record.agents ?? [];
      const index = statements.findIndex((statement) => statement.c === channel);
      if (index < 0 || statements[index]!.at <= at) {
        const statement: AgentStatement =
          agent === null
            ? { at, c: channel }
            : extend(
                agent,
                agent.email ? { email: agent.email.toLowerCase(), at, c: channel } : { at, c: channel },
              );
        const before = responsibleOf(statements);
        const after = index < 0 ? [...statements, statement] : statements.with(index, statement);
        record.agents = after;
        if (!sameAgent(before, responsibleOf(after))) changed = true;
      }
    }
    if (observation.crmLink && (!record.crmLink || record.crmLink.at <= at)) {
      if (record.crmLink?.v !== observation.crmLink) changed = true;
      record.crmLink = { v: observation.crmLink, at };
    }
    const stat = record.channels[observation.channelId] ?? {
      vendor: observation.vendor,
      firstSeen: at,
      lastSeen: at,
      observations: 0,
      conversations: 0,
    };
    stat.observations += 1;
    if (at > stat.lastSeen) stat.lastSeen = at;
    if (at < stat.firstSeen) stat.firstSeen = at;
    for (const entry of observation.timeline)
      if (entry.type === 'conversation.finished') stat.conversations++;
    record.channels[observation.channelId] = stat;
    if (record.updatedAt < at) record.updatedAt = at;
    if (changed) return true;
    return !(
      (namesAt === undefined || sameOrder(record.names, namesAt)) &&
      (emailsAt === undefined || sameOrder(record.emails, emailsAt)) &&
      (phonesAt === undefined || sameOrder(record.phones, phonesAt))
    );
  }

  /**
   * Event ids (DESIGN §8) must be unique across installations: two bridges that see the same
   * vendor chat id must not send the same `webhook-id` for different contacts, or a receiver that
   * dedupes on it drops real events. So they are derived with a random salt made once per
   * installation and kept in the store (the first instance to need it writes it, SET NX; every
   * instance on that store reads the same one), which also keeps them stable across retries and
   * replays. Read once per process.
   */
  let salt: Promise<string> | undefined;
  function installationSalt(): Promise<string> {
    salt ??= (async () => {
      const fresh = randomBytes(16).toString('base64url');
      if (await store.set(INSTALLATION_SALT_KEY, fresh, { nx: true })) return fresh;
      const kept = await store.get(INSTALLATION_SALT_KEY);
      if (!kept) throw new Error('the installation salt vanished from the store; retry');
      return kept;
    })();
    // A store outage must not pin a rejected promise: the next observation tries again.
    salt.catch(() => {
      salt = undefined;
    });
    return salt;
  }

  /**
   * Until when (ms since epoch) an observation's former idempotency keys are looked for. They are
   * the keys an older version gave the same events (formerIdempotencyKeys: JivoChat before
   * b168a00), and such a key lives identity.dedupeTtlSeconds after that version wrote it: so from
   * the first observation on this store that names one (SET NX: every instance, and every later
   * start, reads the same time), for that long and a day more for older instances still running
   * in a rolling upgrade. After that an observation that names them costs nothing more than one
   * that does not (no read, no await). Read once per process.
   */
  let formerUntil: Promise<number> | undefined;
  let formerUntilRead: number | undefined;
  function formerKeysUntil(): Promise<number> {
    formerUntil ??= (async () => {
      const stored = await store.get(FORMER_KEYS_UNTIL_KEY);
      if (stored !== null) return Number(stored);
      const until = String(now().getTime() + dedupeTtlMs + FORMER_KEYS_GRACE_MS);
      if (await store.set(FORMER_KEYS_UNTIL_KEY, until, { nx: true })) return Number(until);
      return Number((await store.get(FORMER_KEYS_UNTIL_KEY)) ?? until);
    })().then((until) => {
      formerUntilRead = until;
      return until;
    });
    formerUntil.catch(() => {
      formerUntil = undefined;
    });
    return formerUntil;
  }

  /**
   * What the observation's own dedupe key, as a read found it (`found`, a record id), means: the
   * record it is a repeat of (`repeatOf`), or, for a snapshot's key that outlived the snapshot
   * window, none, and the value its write must find there instead of no key (`outlived`, stored
   * form). A key written before snapshots had a window of their own lives
   * identity.dedupeTtlSeconds; one written longer ago than the window (its remaining lifetime
   * says so) is a state the contact may legitimately return to, not a redelivery. A key written
   * with the window is gone once it is that old. Costs a PTTL on a snapshot's repeat only, and
   * nothing (no promise, no await) otherwise; a key of unknown age (dedupeTtlSeconds lowered
   * since) counts as a repeat, as before.
   */
  function ownKeyOf(
    observation: ParsedObservation,
    dedupeKey: string,
    found: string | null | undefined,
  ): OwnKey | Promise<OwnKey> {
    if (found === null || found === undefined) return NO_OWN_KEY;
    if (!observation.snapshot || snapshotTtlMs >= dedupeTtlMs) return { repeatOf: found, outlived: null };
    return store
      .pttl(dedupeKey)
      .then((left) =>
        left > snapshotTtlMs && dedupeTtlMs - left >= snapshotTtlMs
          ? { repeatOf: null, outlived: storedId(found) }
          : { repeatOf: found, outlived: null },
      );
  }

  /** The dedupe keys of observation.sharedIdempotencyKeys (types.ts), besides its own. */
  function sharedDedupeKeys(observation: ParsedObservation): readonly string[] {
    const shared = observation.sharedIdempotencyKeys;
    if (shared === undefined || shared.length === 0) return NO_KEYS;
    return shared
      .filter((sharedKey) => sharedKey !== observation.idempotencyKey)
      .map((sharedKey) => key.dedupe(observation.channelId, sharedKey));
  }

  /** The dedupe keys an older version gave this observation, while any can still exist (above). */
  function formerDedupeKeys(observation: ParsedObservation): readonly string[] | Promise<readonly string[]> {
    const former = observation.formerIdempotencyKeys;
    if (former === undefined || former.length === 0) return NO_KEYS;
    if (formerUntilRead === undefined) return formerKeysUntil().then(() => formerDedupeKeys(observation));
    if (now().getTime() >= formerUntilRead) return NO_KEYS;
    return former
      .filter((formerKey) => formerKey !== observation.idempotencyKey)
      .map((formerKey) => key.dedupe(observation.channelId, formerKey));
  }

  /**
   * A former key's value that names a record of the contact the observation's identifiers lead to
   * (`rest`: a read's values after the dedupe key's, the identifiers' holders first): a repeat of
   * the event that record got from the older version. Another person's event the older version
   * keyed alike (a second widget's chat reusing a chat id and agent, which b168a00 told apart) is
   * not one, and is recorded.
   */
  function formerRepeat(read: GroupReadResult, rest: readonly (string | null)[], holders: number) {
    const rootOf = (id: string) => read.roots.get(id) ?? id;
    const roots = new Set<string>();
    for (let index = 0; index < holders; index++) {
      const holder = rest[index];
      if (holder) roots.add(rootOf(holder));
    }
    for (let index = holders; index < rest.length; index++) {
      const value = rest[index];
      if (value && roots.has(rootOf(value))) return value;
    }
    return null;
  }

  interface Plan {
    targetId: string | null;
    roots: string[];
    recordRoots: Map<string, string>;
    /** The groups' records and the roots' member lists, as read (readGroups). */
    records: Map<string, StoredRecord>;
    members: Map<string, string[]>;
    /** Ids whose record was read (present or not); others of the groups are read before writing. */
    read: ReadonlySet<string>;
  }

  /** Decode a record as read, remembering its text for the write's expectations. */
  function decodeRead(id: string, text: string): StoredRecord {
    const record = decodeRecord(id, text);
    readAs.set(record, text);
    return record;
  }

  /**
   * One read (dedupe key and identifier index, with every group they lead to) for observe; the
   * former dedupe keys last, so that the identifiers' groups come first within maxRecords.
   */
  async function readState(
    dedupeKey: string,
    indexKeys: string[],
    formerKeys: readonly string[],
  ): Promise<GroupReadResult> {
    return withPublicIds(
      await store.readGroups({
        keys: formerKeys.length === 0 ? [dedupeKey, ...indexKeys] : [dedupeKey, ...indexKeys, ...formerKeys],
        layout: groupLayout,
        maxRecords: identity.maxMergeSize,
      }),
    );
  }

  /**
   * A readGroups answer with record ids instead of their stored form (keys.ts, storedId): the
   * store reads the layout as written, values and keys alike, and knows nothing of ids. Every
   * value read names a record, so all of them are ids.
   */
  function withPublicIds(read: GroupReadResult): GroupReadResult {
    const ids = <T>(map: Map<string, T>, value: (item: T) => T) =>
      new Map([...map].map(([id, item]) => [publicId(id), value(item)] as const));
    return {
      claimed: read.claimed,
      values: read.values.map((value) => (value === null ? null : publicId(value))),
      roots: ids(read.roots, publicId),
      members: ids(read.members, (members) => members.map(publicId)),
      records: ids(read.records, (text) => text),
      complete: read.complete,
      ...(read.instead === undefined ? {} : { instead: read.instead }),
    };
  }

  /**
   * The contact a record belongs to, from a readGroups answer, as loadContact would read it
   * (root first, then its members in id order); undefined when the read left part of the group
   * unread (the caller loads it then), null when there is no such contact.
   */
  function viewFromRead(
    read: GroupReadResult,
    id: string,
  ): { contact: Contact; rootId: string } | null | undefined {
    const rootId = read.roots.get(id);
    if (rootId === undefined) return undefined;
    // A root that is not merged away must have its own record; a merged-away id needs any.
    const contact = groupFromRead(read, rootId, rootId === id);
    return contact && { contact, rootId };
  }

  /**
   * The contact of the group `rootId` heads, from a readGroups answer that read its members;
   * undefined when some of its records were left unread, null when it has none (or, with
   * `rootRecord`, not the root's own).
   */
  function groupFromRead(
    read: GroupReadResult,
    rootId: string,
    rootRecord: boolean,
  ): Contact | null | undefined {
    const ids = [rootId, ...[...(read.members.get(rootId) ?? [])].sort()];
    const records: StoredRecord[] = [];
    for (const member of ids) {
      if (!read.records.has(member)) return undefined;
      const text = read.records.get(member);
      // decodeRecord, not decodeRead: the records serve this view only, no checked write.
      if (text) records.push(decodeRecord(member, text));
    }
    if (rootRecord ? records[0]?.id !== rootId : records.length === 0) return null;
    return mergedView(rootId, records);
  }

  /**
   * Contacts as the lookups (claimAndFind) last answered them, by root: the group's ids and the
   * record texts the view was made of. A lookup reads the whole group in its one store step
   * anyway; when every text it read is the one kept, the kept view is what decoding and merging
   * them again would make (the same pure functions of the same texts), without the ~5 µs that
   * costs per lookup (bench/HISTORY.md, twenty-third round). What the step read decides, never
   * the memory: a changed, added or removed record is a miss, and the view is made again.
   * Frozen, since every lookup of the contact shares it. Bounded by size (LRU).
   */
  const lookedUp = new LRUCache<string, { ids: string[]; texts: (string | null)[]; contact: Contact }>({
    maxSize: LOOKED_UP_BYTES,
    // The view is about as large as its texts again, plus its maps and arrays.
    sizeCalculation: (kept) => {
      let bytes = 1024;
      for (const text of kept.texts) bytes += 2 * (text?.length ?? 0);
      return bytes;
    },
  });

  /** viewFromRead for a lookup, answered from `lookedUp` when the group read is the one kept. */
  function lookupView(
    read: GroupReadResult,
    id: string,
  ): { contact: Contact; rootId: string } | null | undefined {
    const rootId = read.roots.get(id);
    if (rootId === undefined) return undefined;
    const kept = lookedUp.get(rootId);
    // Every kept id read with its kept text, and as many as the group has: the same group (the
    // step read one group, so its records are the root's and its members' only).
    if (
      kept !== undefined &&
      kept.ids.length === (read.members.get(rootId)?.length ?? 0) + 1 &&
      kept.ids.every((member, index) => read.records.get(member) === kept.texts[index])
    )
      return { contact: kept.contact, rootId };
    const view = viewFromRead(read, id);
    if (view) {
      const ids = [rootId, ...[...(read.members.get(rootId) ?? [])].sort()];
      const texts = ids.map((member) => read.records.get(member) ?? null);
      lookedUp.set(rootId, { ids, texts, contact: deepFreeze(view.contact) });
    }
    return view;
  }

  /**
   * What the observation writes, from a read (or a LaneState made a read by readAfter: `after`,
   * whose decoded records it takes instead of decoding their texts).
   */
  function plan(
    read: GroupReadResult,
    indexValues: (string | null)[],
    identifiers: Identifier[],
    after?: LaneState,
  ): Plan {
    const recordIds = [...new Set(indexValues.filter((value): value is string => value !== null))];
    const recordRoots = new Map(recordIds.map((id) => [id, read.roots.get(id) ?? id]));
    const roots = [...new Set(recordRoots.values())];
    const members = new Map<string, string[]>();
    for (const root of roots) members.set(root, [...(read.members.get(root) ?? [])].sort());
    const records = new Map<string, StoredRecord>();
    for (const [id, text] of read.records) {
      if (text === null) continue;
      const handed = after?.decoded;
      if (handed === undefined || id !== after!.target) {
        records.set(id, decodeRead(id, text));
        continue;
      }
      // Taken: this plan's write changes it (apply), so no other plan on the state may have it.
      after!.decoded = undefined;
      readAs.set(handed, text);
      records.set(id, handed);
    }
    // The record to write to: the one holding the strongest identifier (person > email > phone > local).
    let targetId: string | null = null;
    let best = Number.POSITIVE_INFINITY;
    identifiers.forEach((identifier, index) => {
      const value = indexValues[index];
      if (value && priority(identifier) < best) {
        best = priority(identifier);
        targetId = value;
      }
    });
    return { targetId, roots, recordRoots, records, members, read: new Set(read.records.keys()) };
  }

  function refuseMerge(
    batch: StoreBatch,
    reason: MergeRefusal,
    roots: string[],
    via: Identifier,
    at: string,
    observation: ParsedObservation,
  ) {
    metrics.merges.inc({ outcome: 'refused' });
    logger.warn(
      { roots, via: identifierLabel(via), reason, channelId: observation.channelId },
      'merge refused',
    );
    queueWrites(batch, refusalWrites(reason, roots, via, at, observation.channelId));
  }

  /**
   * Size caps (issue 10 item 4): one payload must not fill the store. Text fields and attribute
   * values are cut with a visible …, a timeline entry too large keeps its summary and says it was
   * truncated; every cut is counted in chatbridge_truncated_total. Returns each timeline entry's
   * data as JSON: measured here, and written as is (serialised once).
   */
  function capObservation(observation: ParsedObservation): string[] {
    const cut = (what: string) => truncated().inc({ what });
    const clip = (value: string, limit: number, what: string) => {
      if (value.length <= limit) return value;
      cut(what);
      return clipText(value, limit);
    };
    // A phone field holding several numbers ("+7 916 …, +7 926 …") gives each (before the cap,
    // which then counts each number).
    if (
      observation.identifiers.some(
        (identifier) => identifier.kind === 'phone' && /[,;/]/.test(identifier.value),
      )
    )
      observation.identifiers = observation.identifiers.flatMap((identifier) =>
        identifier.kind === 'phone'
          ? splitPhones(identifier.value).map((value) => ({ ...identifier, value }))
          : [identifier],
      );
    // Counts first (a length check): only a list over its cap is walked to cut it.
    if (observation.identifiers.length > limits.identifiersPerKind) {
      const kept = capIdentifiersPerKind(observation.identifiers, limits.identifiersPerKind);
      if (kept !== observation.identifiers) cut('identifier_count');
      observation.identifiers = kept;
    }
    if (observation.names.length > NAMES_PER_OBSERVATION) {
      cut('name_count');
      observation.names = observation.names.slice(0, NAMES_PER_OBSERVATION);
    }
    if (observation.labels.length > limits.labelsPerObservation) {
      cut('label_count');
      observation.labels = observation.labels.slice(0, limits.labelsPerObservation);
    }
    // Names and labels are shown to people: nothing in them may reorder or break what is around
    // them (cleanDisplayText); one left empty is no name.
    observation.names = showable(observation.names).map((name) => clip(name, limits.fieldLength, 'field'));
    observation.labels = showable(observation.labels).map((label) =>
      clip(label, limits.fieldLength, 'field'),
    );
    const names = Object.keys(observation.attributes);
    if (names.length > limits.attributesPerContact) {
      cut('attribute_count');
      for (const name of names.slice(limits.attributesPerContact)) delete observation.attributes[name];
    }
    for (const name in observation.attributes) {
      const attribute = observation.attributes[name]!;
      if (name.length > 200) {
        delete observation.attributes[name];
        cut('attribute');
        continue;
      }
      if (typeof attribute.value === 'string')
        attribute.value = clip(attribute.value, limits.attributeValueLength, 'attribute');
      if (attribute.label) attribute.label = clip(attribute.label, limits.fieldLength, 'field');
    }
    // Transcripts (`data.messages`): a length check each; the outbound events carry them to CRMs.
    for (const event of observation.events) event.data = capTranscript(event.data, cut);
    return observation.timeline.map((entry) => {
      entry.data = capTranscript(entry.data, cut);
      let json: string | undefined;
      try {
        json = JSON.stringify(entry.data ?? null);
      } catch {
        json = undefined; // too deep (or not data) to serialise: treated as too large
      }
      // UTF-8 takes at most 3 bytes per UTF-16 unit, so only a text that might be over the limit
      // is measured: byteLength walks the whole string, which for a chat_finished transcript in
      // Cyrillic (~14,000 two-byte units) cost about as much as the JSON.stringify above.
      const bytes =
        json === undefined
          ? Number.POSITIVE_INFINITY
          : json.length * 3 <= limits.timelineEntryBytes
            ? 0
            : Buffer.byteLength(json, 'utf8');
      if (json === undefined || bytes > limits.timelineEntryBytes) {
        cut('timeline_entry');
        entry.data = { truncated: true, originalBytes: Number.isFinite(bytes) ? bytes : null };
        json = JSON.stringify(entry.data);
      }
      return json;
    });
  }

  /**
   * A transcript longer than limits.messagesPerTranscript keeps its first and last messages, with
   * a system line between them saying how many were left out (the one transcript shape, so the
   * console and CRM notes show it as they show any message). A new data object: the timeline
   * entry and the event of one chat may share their messages.
   */
  function capTranscript<T extends Record<string, unknown> | undefined>(
    data: T,
    cut: (what: string) => void,
  ): T {
    const messages = data?.messages;
    const keep = limits.messagesPerTranscript;
    if (!Array.isArray(messages) || messages.length <= keep) return data;
    cut('transcript');
    const head = Math.ceil(keep / 2);
    const omitted = messages.length - keep;
    const line = { at: null, author: { type: 'system' }, text: `… ${omitted} messages left out …` };
    return extend(data as Record<string, unknown>, {
      messages: [...messages.slice(0, head), line, ...messages.slice(messages.length - (keep - head))],
    }) as T;
  }

  /**
   * Timeline members this long (UTF-16 units) and longer are kept as their UTF-8 bytes (see
   * timed): the length from which the store's script call encodes a text on its own anyway
   * (src/utf8.ts); a chat_accepted's member stays under it and goes as before.
   */
  const MEMBER_BYTES_FROM = ENCODE_TRANSCODED_UNITS;

  /**
   * observe's first steps, in their order: the caps (capObservation, which gives each timeline
   * entry's data as JSON), the observation's time, and each timeline entry as its stored member.
   * A function of its own so that nothing in observe holds that JSON: observe's closures (its
   * attempts) live until the write is answered, and a variable they can see lives with them. A
   * chat_finished's data is ~16,000 UTF-16 units of JSON (~32 KB, held as the parts of
   * JSON.stringify's builder), and its member as much again once flattened: every young-generation
   * collection copied both for each observation in flight. A long member is kept as its UTF-8
   * bytes instead (Buffer memory, which the collector does not copy), encoded once for every
   * attempt's write; the store writes the same bytes either way (StoreBatch.zadd).
   */
  function timed(observation: ParsedObservation): { at: string; timelineMembers: Array<string | Buffer> } {
    const dataJson = capObservation(observation);
    // A vendor time later than now (a vendor clock ahead, a wrong field) is dated now: nothing
    // reaches the bridge before it happened, and a future time would otherwise keep its entry on
    // top of the timeline and let its values (attributes, responsible agent, CRM link) outrank
    // those of every later event until that time came. The vendor's own time stays in the data.
    const recordedAt = isoFromMs(now().getTime());
    const at = notAfter(isoOf(observation.at), recordedAt);
    // Timeline entries go to the record the observation writes (so an unmerge takes them along);
    // their text does not depend on which record that is, so it is made once, not per attempt.
    const timelineMembers = observation.timeline.map((entry, index) => {
      const member = timelineMemberWithData(
        {
          id: entryId(observation.channelId, observation.idempotencyKey, entry.key),
          at: notAfter(isoOf(entry.at), recordedAt),
          channelId: observation.channelId,
          vendor: observation.vendor,
          type: entry.type,
          // Adapters build summaries from vendor names ("… with <agents>"): one bidi override in
          // a name would reorder the rest of the line wherever it is shown (console, CRM notes).
          summary: cleanDisplayText(entry.summary.slice(0, 500)) ?? '',
        },
        dataJson[index]!,
      );
      return member.length < MEMBER_BYTES_FROM ? member : utf8Bytes(member);
    });
    return { at, timelineMembers };
  }

  async function observe(input: Parameters<ContactService['observe']>[0]): Promise<ObserveResult> {
    // Typed callers: checked by hand, the schema only for what does not pass (observation.ts).
    const observation = checkObservation(input);
    if (observation.crmLink !== undefined && !isHttpLink(observation.crmLink)) {
      // Shown to agents as a link later: javascript:/data: never get in (issue 10 item 10).
      delete observation.crmLink;
      metrics
        .counter('chatbridge_unsafe_links_dropped_total', UNSAFE_LINKS_HELP, ['where'])
        .inc({ where: 'crm_link' });
    }
    // Capped, dated, and its timeline entries made into members (see timed on why apart).
    const { at, timelineMembers } = timed(observation);
    // A redelivery of an event an older version recorded under another key (JivoChat).
    const lookedUp = formerDedupeKeys(observation);
    const formerOnly = lookedUp instanceof Promise ? await lookedUp : lookedUp;
    // Keys shared with another form of the same fact are looked for like former keys (a value
    // naming a record of this contact is a repeat), always, and written with the record.
    const shared = sharedDedupeKeys(observation);
    const formerKeys = shared.length === 0 ? formerOnly : [...formerOnly, ...shared];
    const saltValue = await installationSalt();
    const identifiers: Identifier[] = [];
    const seen = new Map<string, Identifier>();
    for (const raw of observation.identifiers) {
      const identifier = normalizeIdentifier(raw, normalizeOptions, observation.channelId);
      if (!identifier) continue;
      const ext = noteExtension(raw, identifier);
      // One number with two extensions is two people's: each is kept (and searchable).
      const label =
        ext === undefined ? identifierLabel(identifier) : `${identifierLabel(identifier)};ext=${ext}`;
      const provenance = raw.provenance ?? (raw.kind === 'person' ? 'verified' : 'visitor');
      const earlier = seen.get(label);
      if (earlier) {
        if (provenance === 'verified') {
          if (ext === undefined) searchOnly.delete(earlier); // verified once is verified
          if (earlier.channelId === undefined) earlier.provenance = 'verified';
        }
        continue;
      }
      // Global kinds carry their provenance on: the record keeps it per value (e-mails, phones)
      // and a merge log names it, so answers can mark what rests on visitor-typed values.
      if (identifier.channelId === undefined) identifier.provenance = provenance;
      if (provenance === 'visitor' && !mergeOnVisitorTyped.has(identifier.kind)) searchOnly.add(identifier);
      if (ext !== undefined) searchOnly.add(identifier); // a shared line: never merges
      seen.set(label, identifier);
      identifiers.push(identifier);
    }
    const resolving = identifiers.filter(resolves).sort((a, b) => priority(a) - priority(b));
    if (resolving.length === 0) {
      throw new NoIdentifierError();
    }
    const dedupeKey = key.dedupe(observation.channelId, observation.idempotencyKey);
    const indexKeys = resolving.map(key.index);

    // No locks on the common paths (new contact, known contact, repeated delivery): read, then
    // write in one atomic step that holds only if nothing read has changed (StoreBatch.expect),
    // else read again. Observations of one person in this process queue behind each other
    // (a lane per strongest identifier), so they do not keep invalidating each other's reads;
    // other instances are kept apart by the expectations. Only a merge of two existing contacts
    // takes the identity and record locks, so that merges of one group do not interleave.
    const laneName = indexKeys[0]!;
    return inLane(laneName, async (writeSent, handed, previousSettled) => {
      const attempt = async (
        locked: boolean,
        after?: LaneState,
        options: { read?: GroupReadResult; contactLocked?: readonly string[] } = {},
      ): Promise<ObserveResult | null> => {
        // The state this attempt's lock-free write leaves behind, remembered once it has held.
        let sent: LaneState | undefined;
        const sentNow = (state?: LaneState) => {
          sent = state;
          writeSent(state);
        };
        // One trip: the delivery's idempotency key, the identifiers' holders, their roots, the
        // roots' members and the groups' records (a repeated delivery finds its contact there).
        // Or none: planned on what the lane's previous write leaves behind (see LaneState).
        const plannedAfter =
          options.read === undefined && after ? readAfter(after, indexKeys, formerKeys.length) : null;
        const read = options.read ?? plannedAfter ?? (await readState(dedupeKey, indexKeys, formerKeys));
        const [found, ...rest] = read.values;
        const own = ownKeyOf(observation, dedupeKey, found);
        const { repeatOf: duplicateOf, outlived } = own instanceof Promise ? await own : own;
        const indexValues = formerKeys.length === 0 ? rest : rest.slice(0, indexKeys.length);
        const repeatOf =
          duplicateOf ?? (formerKeys.length === 0 ? null : formerRepeat(read, rest, indexKeys.length));
        if (repeatOf) {
          const existing = viewFromRead(read, repeatOf) ?? (await loadContact(repeatOf));
          if (existing) return { contact: existing.contact, created: false, duplicate: true };
        }
        const planned = plan(read, indexValues, resolving, plannedAfter ? after : undefined);
        // Under the contacts' locks (lockedAttempt): a group that is not one of those locked
        // joined since (a merge, a claim); let go and plan again.
        const { contactLocked } = options;
        if (contactLocked && !planned.roots.every((root) => contactLocked.includes(root))) return null;
        // Only a write planned on the previous write of the lane (handed over) may go out while
        // that one is in flight: should it not hold, this one fails with it. Any other plan (a
        // read, what was remembered) waits for it to settle: else, when that write failed and is
        // tried again, this observation would be recorded before it — and its outbound events
        // sent before the earlier one's — instead of in the order the person's events came in.
        const onHanded = plannedAfter && after === handed ? handed : undefined;
        if (!locked && !onHanded) await previousSettled;
        // Keys this process applied for the person stay applied, whatever state this plan is on.
        const appliedBefore = after?.applied ?? remembered.peek(laneName)?.applied ?? [];
        const write = () =>
          writeObservation(
            observation,
            at,
            resolving,
            indexKeys,
            identifiers,
            indexValues,
            planned,
            dedupeKey,
            outlived,
            // As read (null when planned on a lane's state): held by another person's event, or
            // absent — written meanwhile by an older instance, it fails the write, which reads again.
            formerKeys.length === 0
              ? NO_FORMER_READS
              : formerKeys.map((formerKey, index) => ({
                  key: formerKey,
                  value: rest[indexKeys.length + index] ?? null,
                })),
            appliedBefore,
            saltValue,
            timelineMembers,
            locked || planned.roots.length > 1,
            contactLocked !== undefined,
            sentNow,
            onHanded && writtenBy(onHanded),
          );
        const result =
          planned.roots.length > 1 && !locked
            ? await withLock([...indexKeys, dedupeKey], 'identifiers', write, { awaitRelease: false })
            : await write();
        if (result && sent) {
          // A person this write created is remembered without the record object (LaneState.decoded):
          // for a new visitor it was half of the state's heap (3.1 of 6.2 KB for a JivoChat
          // visitor) and the larger part of what each new contact promoted to the old generation;
          // 16 MiB held ~3,100 such states, now nearly twice as many. That person's next event, if
          // remembered still, decodes the text (one trip still); a returning person's state keeps
          // it. Dropped from this state, not from a copy: with a copy remembered, the promotion per
          // new contact stayed as it was (bench/HISTORY.md, thirtieth round).
          if (result.created) sent.decoded = undefined;
          remember(laneName, sent);
        }
        return result;
      };
      // Planned on what this process last wrote for this person (see `remembered`): one trip if
      // nothing else wrote since; else its write fails like a stale read's and we read.
      // If it failed, something else wrote this person: plan on a read for a while (`missed`,
      // which also stops the attempts below from remembering). Unless this delivery was a repeat
      // (its own key failed the check): then what was remembered may still hold, and is kept.
      const recalled = handed ? undefined : remembered.get(laneName);
      // A repeat of one of the lane's latest deliveries: a write planned on that state would fail
      // on the delivery's key (and send the whole batch for nothing), so it reads at once.
      const repeats = (state: LaneState) => state.applied.includes(dedupeKey);
      let recalledFailed = false;
      if (recalled && !repeats(recalled)) {
        const result = await attempt(false, recalled);
        if (result) return result;
        remembered.delete(laneName);
        missed.set(laneName, true);
        recalledFailed = true;
      }
      const afterRecall = (result: ObserveResult) => {
        if (recalledFailed && result.duplicate) {
          missed.delete(laneName);
          remember(laneName, recalled!);
        }
        return result;
      };
      // A write planned on the previous write's outcome fails (and costs a read) only when that
      // write failed or something else changed meanwhile: it is not one of the attempts below.
      if (handed) {
        if (!repeats(handed)) {
          const result = await attempt(false, handed);
          if (result) return result;
        }
        // The write it was planned on did not hold, or this delivery was applied before. The
        // observations queued behind this one planned on it and fail too: each goes back in line
        // behind the one before it (read after it has finished), or they would all read and
        // write at once and keep invalidating each other.
        await previousSettled;
      }
      for (let round = 0; round < OPTIMISTIC_ATTEMPTS; round++) {
        const result = await attempt(false);
        if (result) return afterRecall(result);
      }
      // Contended (several instances writing one person at once, a loaded machine): queue on the
      // identity lock with the other contenders, then on the lock of the contact itself (its
      // groups' roots, the lock merges and unmerges take), and read and write holding both. Every
      // other write of that contact fails its check while the contact's lock is held (see
      // writeObservation), whichever identifiers it came by — an observation of the same person
      // by an e-mail, a phone or a vendor-local id is another lane and another identity lock, and
      // such writers used to invalidate the lock holder's read again and again until it gave up.
      const lockedAttempt = async (): Promise<ObserveResult | null> => {
        const read = await readState(dedupeKey, indexKeys, formerKeys);
        const [found, ...rest] = read.values;
        const own = ownKeyOf(observation, dedupeKey, found);
        const { repeatOf: duplicateOf } = own instanceof Promise ? await own : own;
        const indexValues = formerKeys.length === 0 ? rest : rest.slice(0, indexKeys.length);
        const repeated =
          duplicateOf ?? (formerKeys.length === 0 ? null : formerRepeat(read, rest, indexKeys.length));
        const roots = repeated ? [] : plan(read, indexValues, resolving).roots;
        // A new contact (nothing to lock yet) or a repeated delivery: on this read, as before.
        if (roots.length === 0) return attempt(true, undefined, { read });
        return withLock(
          roots.map(contactLockName),
          'contact',
          () => attempt(true, undefined, { contactLocked: roots }),
          { awaitRelease: false },
        );
      };
      // Not while holding the lock: the observation before this one may need it.
      await previousSettled;
      const result = await withLock(
        [...indexKeys, dedupeKey],
        'identifiers',
        async () => {
          for (let round = 0; round < MAX_PLAN_ATTEMPTS; round++) {
            const written = await lockedAttempt();
            if (written) return written;
          }
          return null;
        },
        { awaitRelease: false },
      );
      if (result) return afterRecall(result);
      throw new IdentityContentionError();
    });
  }

  /**
   * What a lock-free write leaves behind for its identifiers, as a read would find it right after
   * (if the write holds): the holders of its index keys, their roots and members, and the text of
   * every record of the group. The next observation of the lane plans on it instead of reading,
   * with the same expectations a read would give it — so if the write did not hold, or anything
   * else changed, that plan's write fails as a stale read's would, and the observation reads.
   *
   * Kept in a compact form when the contact is the written record alone, holding every index key
   * (a new contact, most known ones): its id, its text and the keys, which is all a read would
   * find; readAfter makes the read's maps from them when a plan needs them. Remembered states live
   * for seconds to minutes (`remembered`), so each is promoted to V8's old generation: four maps
   * of one to four entries were ~740 B of a new visitor's ~3.1 KB state, more than the rest but
   * the text (bench/HISTORY.md, thirty-first round).
   */
  interface LaneState {
    /** The record the write wrote: with `applied[0]` what that write sets (writtenBy). */
    target: string;
    /** Its text as written. */
    text: string;
    /** The write's index keys (observe's `indexKeys`): all held by `target` unless `group` says. */
    keys: readonly string[];
    /**
     * The read as the write leaves it, when it is more than `target` alone, its own root with no
     * members, holding every key: the holders of the keys, the records' roots, the roots'
     * members, every record's text.
     */
    group?: {
      holders: Map<string, string>;
      roots: Map<string, string>;
      members: Map<string, string[]>;
      records: Map<string, string>;
    };
    /**
     * The idempotency (dedupe) keys of the lane's last few writes, newest first. A delivery whose
     * key is here is a repeat of one of them: a write planned on this state would only fail on
     * that key, so it is not tried and the delivery reads (which finds it) straight away. Vendor
     * retries are of a person's latest events, hence a few.
     */
    applied: readonly string[];
    /**
     * `target`'s record as an object, exactly what decodeRecord makes of its text (record.ts
     * asDecoded), when its write wrote no other record. A plan on this state takes it (plan)
     * instead of decoding the text — the JSON.parse and decode of a known contact's record were
     * the engine's largest step per webhook (bench/HISTORY.md, twenty-seventh round) — so it is
     * used by one plan at most; a later plan on the same state (remembered after a hand-over
     * whose write failed) decodes the text. Not copied: apply changes the record in place, and
     * the write that made it is done with it once this state is made (its text encoded, its
     * contact made). Not remembered for a record the write created (see `remembered`, and
     * observe where it remembers): only handed over.
     */
    decoded?: StoredRecord;
  }
  /**
   * The idempotency key the write that leaves `state` sets, and its value (the record it wrote).
   * A write planned on a handed-over state expects it: it holds only if that write did. Its
   * other expectations (holders, roots, records as that write leaves them) can all hold though
   * that write failed — when it would have left the records as they already are — and the
   * observation behind it would then be recorded before it.
   */
  function writtenBy(state: LaneState): { key: string; value: string } {
    return { key: state.applied[0]!, value: storedId(state.target) };
  }
  /** How many of a lane's latest idempotency keys a LaneState keeps (see `applied`). */
  const APPLIED_KEYS = 4;

  /**
   * A read made of a LaneState, when it covers every index key (else the caller reads). The
   * delivery's own key and its former ones (`former` of them) are expected absent, and checked.
   */
  function readAfter(after: LaneState, indexKeys: readonly string[], former: number): GroupReadResult | null {
    const values: (string | null)[] = [null];
    const { group, target } = after;
    for (const indexKey of indexKeys) {
      const holder = group ? group.holders.get(indexKey) : after.keys.includes(indexKey) ? target : undefined;
      if (holder === undefined) return null;
      values.push(holder);
    }
    for (let index = 0; index < former; index++) values.push(null);
    return {
      claimed: true,
      values,
      roots: group ? group.roots : new Map([[target, target]]),
      members: group ? group.members : new Map([[target, []]]),
      records: group ? group.records : new Map([[target, after.text]]),
      complete: true,
    };
  }

  /**
   * Per-process queues by name. A task starts when the previous one of its lane has settled, or
   * as soon as that one has handed its write to the store (`writeSent`), whichever comes first.
   * Handed over with the write's LaneState, the next task plans without reading, and its write
   * goes out right behind the previous one on the same connection (StoreBatch.exec): a burst of
   * one person's observations costs one round trip, not two per observation. Without it (a
   * merge, a lock), the next task's read goes out behind the write and is answered after it.
   * `previousSettled` lets a task whose plan did not hold wait for the previous one to finish.
   */
  interface LaneTurn {
    handed: Promise<LaneState | undefined>;
    settled: Promise<void>;
  }
  const lanes = new Map<string, LaneTurn>();

  /**
   * What this process's last lock-free write for a person left behind (a LaneState, by lane
   * name), kept once the write has held: that person's next observation plans on it and writes
   * in one trip instead of reading first (a returning visitor, a chat's accepted → finished).
   * Safe for the same reason as a lane's hand-over: the write carries the expectations a read
   * would have given it, so if anything changed since (another instance, an edit through the
   * API, an unmerge, an expired key) it fails, costs that one trip, and the observation reads.
   * A person whose remembered state failed is not remembered again for REMEMBER_BACKOFF_MS, so
   * two instances taking turns on one person (a round-robin balancer) pay the wasted trip about
   * once a minute, not on every observation. Bounded by size (LRU, REMEMBERED_BYTES).
   */
  const remembered = new LRUCache<string, LaneState>({
    maxSize: REMEMBERED_BYTES,
    // A person's state is ~100 bytes plus ~150 per index key and the record text (STATE_BYTES),
    // and ~800 more for a group's maps; two-byte text (Cyrillic) is counted once, so the bound
    // is approximate.
    sizeCalculation: (state) => {
      let bytes = STATE_BYTES + 150 * state.keys.length + state.text.length;
      if (state.group !== undefined) {
        bytes += GROUP_BYTES;
        for (const [id, text] of state.group.records) if (id !== state.target) bytes += text.length;
      }
      for (const applied of state.applied) bytes += applied.length;
      // A decoded record's objects and strings take about twice its text (a known contact's of
      // 1,590 characters: 3.2 KB of heap, measured with 20,000 of them).
      if (state.decoded !== undefined) bytes += 2 * state.text.length;
      return bytes;
    },
  });
  /** Lanes whose remembered state lost to another writer lately: not remembered for now. */
  const missed = new LRUCache<string, true>({ max: 10_000, ttl: REMEMBER_BACKOFF_MS });
  function remember(lane: string, state: LaneState) {
    if (!missed.has(lane)) remembered.set(lane, state);
  }
  function inLane<T>(
    name: string,
    run: (
      writeSent: (after?: LaneState) => void,
      handed: LaneState | undefined,
      previousSettled: Promise<void>,
    ) => Promise<T>,
  ): Promise<T> {
    const previous = lanes.get(name);
    let open!: (after?: LaneState) => void;
    let finish!: () => void;
    const turn: LaneTurn = {
      handed: new Promise((resolve) => {
        open = resolve;
      }),
      settled: new Promise((resolve) => {
        finish = resolve;
      }),
    };
    lanes.set(name, turn);
    const result = previous
      ? previous.handed.then((handed) => run(open, handed, previous.settled))
      : run(open, undefined, Promise.resolve());
    const settle = () => {
      open(undefined);
      finish();
    };
    result.then(settle, settle);
    void turn.settled.then(() => {
      if (lanes.get(name) === turn) lanes.delete(name);
    });
    return result;
  }

  /** Returns null when the groups changed between planning and locking (the caller re-plans). */
  async function writeObservation(
    observation: ParsedObservation,
    at: string,
    resolving: Identifier[],
    /** The index keys of `resolving`, in its order (observe's). */
    indexKeys: readonly string[],
    identifiers: Identifier[],
    indexValues: (string | null)[],
    planned: Plan,
    dedupeKey: string,
    /** The value of the observation's own dedupe key as read when it outlived its window (ownKeyOf); else null. */
    outlived: string | null,
    /** The observation's former dedupe keys (formerKeysUntil), each with its value as read. */
    formerKeys: ReadonlyArray<{ key: string; value: string | null }>,
    /** LaneState.applied of the state this write was planned on (or the lane's last). */
    appliedBefore: readonly string[],
    saltValue: string,
    timelineMembers: ReadonlyArray<string | Buffer>,
    /** Whether this write runs under the identity lock of its identifiers (see below). */
    holdsIdentityLock: boolean,
    /** Whether this write runs under the lock of every contact (root) it was planned on. */
    holdsContactLock: boolean,
    /** Called once the lock-free write is queued on the store's connection (see inLane). */
    writeSent: (after?: LaneState) => void,
    /** Planned on the lane's previous write (handed over): what that write sets (writtenBy). */
    previousWrite?: { key: string; value: string },
  ): Promise<ObserveResult | null> {
    const created = planned.targetId === null;
    const fresh = created ? newRecord(at) : null;
    const targetId = planned.targetId ?? fresh!.id;
    const lockNames = [`rec:${targetId}`, ...planned.roots.map(contactLockName)];
    // A merge takes its contacts' locks below; a contended observation holds them already.
    const locksContacts = planned.roots.length > 1 && !holdsContactLock;

    const write = async (): Promise<ObserveResult | null> => {
      // What the plan read is checked when the write runs (expectations below), so nothing is
      // read twice: only records of groups larger than one read may hold are read here.
      const current = planned.recordRoots;
      const members = planned.members;
      const records = new Map(planned.records);
      const groupIds = groupIdsOf(planned.roots, members);
      const unread = groupIds.filter((id) => !planned.read.has(id));
      if (unread.length > 0) for (const [id, record] of await readRecords(unread)) records.set(id, record);
      const target = fresh ?? records.get(targetId);
      if (!target) return null;
      if (fresh) records.set(fresh.id, fresh);

      const batch = store.batch();
      // A new id is random (newRecordId): should it equal one in use, this write does not happen
      // and the next attempt makes another.
      if (fresh) batch.expect(key.record(fresh.id), null);
      // The write holds only if what it was planned on still holds: no earlier delivery of this
      // observation, the identifiers' holders, the holders' roots and every record of the groups.
      batch.expect(dedupeKey, outlived);
      for (const former of formerKeys)
        batch.expect(former.key, former.value === null ? null : storedId(former.value));
      if (previousWrite) batch.expect(previousWrite.key, previousWrite.value);
      resolving.forEach((identifier, index) => {
        const holder = indexValues[index];
        batch.expect(key.index(identifier), holder ? storedId(holder) : null);
        // A writer that queued on the identity lock (it lost three checked writes in a row) must
        // get through: while anyone holds the lock, lock-free writers of these identifiers stand
        // back (their write expects no lock, fails, and they queue too). Without this, two
        // instances in step could keep invalidating the lock holder's reads until it gave up.
        if (!holdsIdentityLock) batch.expect(LOCK_KEY_PREFIX + key.index(identifier), null);
      });
      // Likewise for the contact: while a contended observation, a merge or an unmerge holds its
      // lock, other writes of it stand back, whatever identifiers they came by (see observe).
      if (!holdsContactLock && !locksContacts)
        for (const root of planned.roots) batch.expect(LOCK_KEY_PREFIX + contactLockName(root), null);
      for (const [recordId, root] of current)
        batch.expect(key.root(recordId), root === recordId ? null : storedId(root));
      for (const id of groupIds) {
        const record = records.get(id);
        const text = record && readAs.get(record);
        if (text !== undefined) batch.expect(key.record(id), text);
      }
      const outbox: OutboxEntry[] = [];
      // A fresh record joined nothing (no identifier was known), so it is its own root.
      const targetRoot = fresh ? fresh.id : current.get(targetId)!;
      let groupIdsAfter = fresh ? [fresh.id] : [targetRoot, ...(members.get(targetRoot) ?? [])];

      // Merge: every other root joins, unless the size cap or an earlier unmerge forbids it.
      let survivor = targetRoot;
      const absorbed: string[] = [];
      let mergedVia: Identifier | undefined;
      if (planned.roots.length > 1) {
        const apartLists = await Promise.all(groupIds.map((id) => idSet(key.apart(id))));
        const apart = new Map(groupIds.map((id, index) => [id, apartLists[index]!]));
        const situation: MergeSituation = {
          roots: planned.roots,
          members,
          records,
          recordRoots: current,
          resolving,
          holders: indexValues,
          targetRoot,
        };
        const decision = decideMerge(situation, { maxMergeSize: identity.maxMergeSize, apart });
        if (decision.outcome === 'refused') {
          refuseMerge(batch, decision.reason, planned.roots, decision.via, at, observation);
        } else {
          survivor = decision.survivor;
          mergedVia = decision.via;
          queueWrites(batch, mergeWrites(decision, situation, at));
          absorbed.push(...decision.absorbed);
          groupIdsAfter = groupIds;
        }
      }

      // Claim the identifiers nobody holds yet. Those held by a group we could not merge stay
      // with that group; those held by another record of this group stay on that record.
      for (const identifier of resolving) {
        if (indexValues[resolving.indexOf(identifier)] === null)
          batch.set(key.index(identifier), storedId(target.id));
      }
      const kept = identifiers.filter((identifier) => {
        if (!resolves(identifier)) return true;
        const holder = indexValues[resolving.indexOf(identifier)];
        return holder === null || holder === target.id;
      });
      for (const identifier of identifiers) {
        if (!resolves(identifier)) batch.sadd(key.search(identifier), storedId(target.id));
        const ext = extensionOf.get(identifier);
        if (ext !== undefined) batch.sadd(key.searchExtension(identifier, ext), storedId(target.id));
      }
      // A contact of several records shows what all of them say (mergedView), so whether this
      // observation changed what it shows (contact.updated) is judged on the contact as shown
      // before and after it: another record may already show, or outrank, what it says of the one
      // record it writes, and what it says there may change what another record's value counts
      // for (an unassignment, an e-mail seen again). "Before" is the group as merged now: a merge
      // is told by contact.merged. A contact of one record shows that record: apply() tells.
      const groupAfter = () =>
        groupIdsAfter.map((id) => records.get(id)).filter((record) => record !== undefined);
      const shownBefore = groupIdsAfter.length > 1 ? mergedView(survivor, groupAfter()) : undefined;
      // An e-mail or phone held by another record of the group (as merged now) stays there, but
      // what this observation says of it counts there: its time (the newest value is primary) and
      // its verified mark (verified once is verified). That record was read and is expected as
      // read like every record of the group, so this adds a SET to the same batch, not a trip,
      // and only when the value's time or mark moved. Values of a group not merged are left alone.
      const rewritten = new Map<string, string>();
      let heldChanged = false;
      const touched = new Set<StoredRecord>();
      resolving.forEach((identifier, index) => {
        const holder = indexValues[index];
        if (identifier.kind !== 'email' && identifier.kind !== 'phone') return;
        if (holder == null || holder === target.id || !groupIdsAfter.includes(holder)) return;
        const record = records.get(holder);
        if (!record) return;
        const list = identifier.kind === 'email' ? record.emails : record.phones;
        const before = list.find((item) => item.v === identifier.value);
        const [wasAt, wasOk] = [before?.at, before?.ok];
        if (upsertValued(list, identifier.value, at, identifier.provenance === 'verified'))
          heldChanged = true;
        if (!before || before.at !== wasAt || before.ok !== wasOk) touched.add(record);
      });
      for (const record of touched) {
        if (record.updatedAt < at) record.updatedAt = at;
        const text = encodeRecord(record);
        batch.set(key.record(record.id), text);
        rewritten.set(record.id, text);
      }
      // Name search: each word of a name new to this record points at it (a set per word, like
      // sidx). Names the record already has were indexed when first seen: no write per repeat.
      // The name is compared as apply() stores it (whole); the index needs no cut of its own:
      // nameWords keeps at most 16 words of at most 40 characters.
      for (const name of observation.names) {
        const trimmed = name.trim();
        if (!trimmed || target.names.some((known) => known.v === trimmed)) continue;
        for (const word of nameWords(trimmed)) batch.sadd(key.name(word), storedId(target.id));
      }
      const recordChanged = apply(target, observation, kept, at) || heldChanged;
      // Written last so it carries both the merge log changes above and what the observation said.
      const encoded = encodeRecord(target);
      // Bytes as stored (UTF-8), not string length: Cyrillic or CJK text is 2-3 bytes a character,
      // and comparing .length let such a record reach two or three times the cap. At most 3 bytes
      // per UTF-16 unit, so only a record that might be over the cap is measured (as in
      // capObservation): byteLength walks the whole text.
      if (encoded.length * 3 > limits.contactRecordBytes) {
        const recordBytes = Buffer.byteLength(encoded, 'utf8');
        // Thrown before the batch runs: nothing of this observation is written.
        if (recordBytes > limits.contactRecordBytes)
          throw new ContactTooLargeError(recordBytes, limits.contactRecordBytes);
      }
      batch.set(key.record(target.id), encoded);

      for (const member of timelineMembers) batch.zadd(key.timeline(target.id), 0, member);
      if (timelineMembers.length > 0) retainTimeline(batch, key.timeline(target.id));
      if (absorbed.length > 0 && mergedVia) {
        const mergeEntry: TimelineEntry = {
          id: entryId(observation.channelId, observation.idempotencyKey, 'merge'),
          at,
          channelId: observation.channelId,
          vendor: observation.vendor,
          type: 'contact.merged',
          summary: `Merged ${absorbed.length} contact${absorbed.length === 1 ? '' : 's'} via ${mergedVia.kind}`,
          data: { survivor, absorbed, via: mergedVia },
        };
        batch.zadd(key.timeline(survivor), 0, timelineMember(mergeEntry));
        retainTimeline(batch, key.timeline(survivor));
      }
      // A snapshot (a state restated: a client card, a conversation's status) is a repeat only
      // within the vendor's retries: the same state later is a return to it, news again.
      batch.set(dedupeKey, storedId(target.id), observation.snapshot ? snapshotTtlMs : dedupeTtlMs);
      // The same fact in another form (sharedIdempotencyKeys): recorded with this one, so a
      // delivery of that form that planned on reading none fails its expectation and reads it.
      for (const sharedKey of sharedDedupeKeys(observation))
        batch.set(sharedKey, storedId(target.id), dedupeTtlMs);

      // The group as it is after this write, for the answer and the events.
      const contact = mergedView(survivor, groupAfter());
      const changed = shownBefore === undefined ? recordChanged : !sameShown(shownBefore, contact);

      const channel = { id: observation.channelId, vendor: observation.vendor };
      const event = (
        type: OutboxEntry['event']['type'],
        eventKey: string,
        data: Record<string, unknown>,
      ): OutboxEntry => ({
        event: {
          id: eventId(saltValue, observation.channelId, observation.idempotencyKey, eventKey),
          type,
          occurredAt: at,
          channel,
          contact,
          data,
        },
        orderingKey: survivor,
        stagedAt: now().getTime(),
      });
      // Without a destination nothing would deliver them: not built (ids are digests) nor staged.
      if (events.enabled) {
        if (created) {
          outbox.push(event('contact.created', CONTACT_EVENTS_KEY, {}));
        } else if (changed) {
          outbox.push(event('contact.updated', CONTACT_EVENTS_KEY, {}));
        }
        if (absorbed.length > 0) {
          outbox.push(event('contact.merged', 'merge', { survivor, absorbed, via: mergedVia }));
        }
        for (const item of observation.events) {
          outbox.push(event(item.type as OutboxEntry['event']['type'], item.key, item.data));
        }
        // From its first event on, the merged contact's deliveries go after whatever is still
        // pending under the ids it absorbed (src/delivery/README.md, "Order per contact").
        if (absorbed.length > 0 && outbox[0]) outbox[0].follows = absorbedLanes(absorbed, members);
        events.stage(batch, outbox);
      }

      /** This write's outcome for the next observation of the lane (LaneState), if all is known. */
      const laneStateAfter = (): LaneState | undefined => {
        const applied = [dedupeKey];
        for (const earlier of appliedBefore) {
          if (applied.length === APPLIED_KEYS) break;
          if (earlier !== dedupeKey) applied.push(earlier);
        }
        // Only the written record, and only when nothing else of the group was changed in memory
        // (a merge, another record's e-mail or phone): the others are decoded from their texts.
        const decoded = planned.roots.length <= 1 && touched.size === 0 ? asDecoded(target) : undefined;
        // The contact is the written record alone, its own root, holding every key: compact.
        if (
          groupIdsAfter.length === 1 &&
          targetRoot === target.id &&
          indexValues.every((holder) => holder === null || holder === target.id)
        )
          return { target: target.id, text: encoded, keys: indexKeys, applied, decoded };
        const texts = new Map<string, string>();
        for (const id of groupIdsAfter) {
          const record = records.get(id);
          const text = id === target.id ? encoded : (rewritten.get(id) ?? (record && readAs.get(record)));
          if (text === undefined) return undefined;
          texts.set(id, text);
        }
        const roots = new Map(current);
        roots.set(target.id, targetRoot);
        const membersAfter = new Map(members);
        if (!membersAfter.has(targetRoot)) membersAfter.set(targetRoot, []);
        const holders = new Map<string, string>();
        indexKeys.forEach((indexKey, index) => {
          holders.set(indexKey, indexValues[index] ?? target.id);
        });
        return {
          target: target.id,
          text: encoded,
          keys: indexKeys,
          group: { holders, roots, members: membersAfter, records: texts },
          applied,
          decoded,
        };
      };
      // Something read has changed since: nothing was written; the caller reads and plans again.
      const executing = batch.exec(); // queued on the connection before exec() returns
      // Under a lock the next task would only fail its lock expectation: it waits for the end.
      if (!holdsIdentityLock) writeSent(laneStateAfter());
      if (!(await executing)) return null;
      if (outbox.length > 0) events.committed();
      if (created) metrics.contactsCreated.inc();
      if (absorbed.length > 0) metrics.merges.inc({ outcome: 'merged' });
      return { contact, created, duplicate: false };
    };

    // Only a merge takes the record locks here (a contended observation took them before it
    // read, see observe); every other write is kept correct by its expectations alone.
    return locksContacts ? withLock(lockNames, 'records', write, { awaitRelease: false }) : write();
  }

  async function currentId(id: string): Promise<string> {
    // Root pointers are kept flat (every record of a group points at its root): one read.
    if (!isRecordId(id)) return id;
    return (await idAt(key.root(id))) ?? id;
  }

  async function get(id: string) {
    const loaded = await loadContact(id);
    if (!loaded) return null;
    return loaded.rootId === id ? { contact: loaded.contact } : { contact: loaded.contact, mergedFrom: id };
  }

  /** The newest name a record holds itself (its names are kept with when each was seen). */
  function recordNameOf(record: StoredRecord | undefined): string | null {
    let newest: { v: string; at: string } | undefined;
    for (const name of record?.names ?? []) if (!newest || name.at > newest.at) newest = name;
    return newest?.v ?? null;
  }

  /**
   * One step of a read of many contacts by id (getMany, search): their groups, as many as fit in
   * the step's record budget (a group larger than identity.maxMergeSize still fits whole).
   */
  async function readFound(ids: readonly string[]) {
    return withPublicIds(
      await store.readGroups({
        keys: [],
        ids: ids.map(storedId),
        layout: groupLayout,
        maxRecords: Math.max(FOUND_RECORDS, identity.maxMergeSize),
      }),
    );
  }

  /**
   * get() for many ids at once: their groups read together (Store.readGroups with `ids`: root
   * pointers, member sets and records in one step for up to FOUND_IDS ids and FOUND_RECORDS
   * records; more in later steps), so a page of contacts costs one round trip, not a few per
   * contact. A group larger than a whole step is read on its own (identity.maxMergeSize lowered
   * since its merges), as search() does.
   */
  async function getMany(ids: readonly string[]): Promise<Map<string, ManyContact>> {
    const wanted = [...new Set(ids)].filter(isRecordId);
    const found = new Map<string, ManyContact>();
    const add = (id: string, contact: Contact, rootId: string, recordName: string | null) =>
      found.set(id, { contact, ...(rootId === id ? {} : { mergedFrom: id }), recordName });
    let start = 0;
    while (start < wanted.length) {
      const chunk = wanted.slice(start, start + FOUND_IDS);
      const read = await readFound(chunk);
      let done = 0;
      for (const id of chunk) {
        const view = viewFromRead(read, id);
        if (view === undefined) {
          // Left unread (the step's record budget): the next step starts with this id.
          if (done > 0) break;
          const loaded = await loadContact(id);
          if (loaded) add(id, loaded.contact, loaded.rootId, recordNameOf((await readRecords([id])).get(id)));
        } else if (view) {
          const text = read.records.get(id);
          add(id, view.contact, view.rootId, text ? recordNameOf(decodeRecord(id, text)) : null);
        }
        done++;
      }
      start += done;
    }
    return found;
  }

  function normalizePublic(identifier: Identifier): Identifier | null {
    return normalizeIdentifier(identifier, normalizeOptions);
  }

  async function findRecordIds(identifier: Identifier, ext?: string): Promise<string[]> {
    if (resolves(identifier)) {
      // A phone with an extension (extensionOf): the people at that extension first (a lookup
      // answers with the first), then the number's own contact, as a search without it finds.
      const atExtension = ext === undefined ? [] : await idSet(key.searchExtension(identifier, ext));
      const recordId = await idAt(key.index(identifier));
      // Visitor-typed values that were not allowed to merge (identity.mergeOnVisitorTyped) are
      // kept search-only under the same kind, and so are phones with an extension: a search
      // finds those contacts too (the number without an extension: everyone reached through it).
      const others =
        mergeOnVisitorTyped.has(identifier.kind) && (identifier.kind !== 'phone' || ext !== undefined)
          ? []
          : await idSet(key.search(identifier));
      return [...new Set([...atExtension, ...(recordId ? [recordId] : []), ...others])];
    }
    return idSet(key.search(identifier));
  }

  /** No record has this id (ids are c_ and digits, or c_ + 20 hex): the decoy a miss reads with evenWork. */
  const DECOY_RECORD_ID = 'c_decoy_never_written';

  async function find(query: ContactQuery, options: { evenWork?: boolean } = {}): Promise<Contact[]> {
    return (await search(query, options)).contacts;
  }

  /**
   * Contacts matching the query, at most `limit`; `more` when the name search stopped at
   * NAME_SEARCH_IDS record ids read before it had `limit` contacts (more may match). Identifiers
   * lead to few records; a name word may lead to tens of thousands (Александр, Maria), so the
   * name's records are read a page at a time, intersected in the store (Store.sinterScan), and
   * only until the contacts are found: a common name costs about one page, not its whole set.
   */
  async function search(
    query: ContactQuery,
    options: { evenWork?: boolean } = {},
  ): Promise<{ contacts: Contact[]; more: boolean }> {
    const wanted: Identifier[] = [];
    if (query.email) wanted.push({ kind: 'email', value: query.email });
    // Each number of a field that holds several (as observe splits them).
    if (query.phone) for (const value of splitPhones(query.phone)) wanted.push({ kind: 'phone', value });
    if (query.identity) wanted.push(query.identity);
    const limit = query.limit ?? FIND_LIMIT;
    const recordIds = new Set<string>();
    for (const raw of wanted) {
      const identifier = normalizePublic(raw);
      if (!identifier) continue;
      for (const id of await findRecordIds(identifier, noteExtension(raw, identifier))) recordIds.add(id);
    }
    const contacts: Contact[] = [];
    const rootsSeen = new Set<string>();
    const idsSeen = new Set<string>();
    // The bound is on contacts, not records: a contact is often several merged records that all
    // match (each holds the name), so cutting the records first listed fewer contacts than
    // matched, and the caller (asking one more than it shows) could not tell the list was cut.
    // The found records' contacts are read together, root pointers, member sets and records in
    // one store step (Store.readGroups): a name search for a page of 51 contacts took 53 round
    // trips (the word page, a read of the root pointers, then one per contact, three commands
    // each) and now takes 2 (bench/name-search.js).
    const load = async (found: Iterable<string>, whole = false) => {
      const ids = [...found].filter((id) => !idsSeen.has(id));
      for (const id of ids) idsSeen.add(id);
      let start = 0;
      while (start < ids.length && contacts.length < limit) {
        // About as many ids as contacts are still missing (more when merged records share one);
        // a name page was asked for that many already: read whole.
        const size = whole ? FOUND_IDS : Math.min(FOUND_IDS, Math.max(limit - contacts.length, 16));
        const chunk = ids.slice(start, start + size);
        const read = await readFound(chunk);
        let done = 0;
        for (const id of chunk) {
          // A search-only value may be shared by any number of contacts: the answer is bounded.
          if (contacts.length >= limit) break;
          const root = read.roots.get(id) ?? id;
          if (!rootsSeen.has(root)) {
            // As get() would read the root: a contact needs the root's own record.
            let contact = groupFromRead(read, root, true);
            if (contact === undefined) {
              // Left unread (the step's record budget): the next step starts with this group.
              if (done > 0) break;
              // Larger than a whole step reads (identity.maxMergeSize lowered since its merges):
              // read on its own; it may have been merged into a contact listed meanwhile.
              const loaded = await loadContact(root);
              contact = loaded && !rootsSeen.has(loaded.rootId) ? loaded.contact : null;
              if (loaded) rootsSeen.add(loaded.rootId);
            }
            rootsSeen.add(root);
            if (contact) contacts.push(contact);
          }
          done++;
        }
        start += done;
      }
    };
    await load(recordIds);
    let more = false;
    const words = query.name ? nameWords(query.name) : [];
    if (words.length > 0 && contacts.length < limit) {
      // Every word must match (records whose names hold all the words).
      const keys = words.map((word) => key.name(word));
      let cursor = '0';
      let read = 0;
      do {
        // About as many ids as contacts are still missing (more when merged records share one).
        const count = Math.min(NAME_SEARCH_PAGE, Math.max(limit - contacts.length, 16));
        const page = await store.sinterScan(keys, cursor, { count, scan: NAME_SEARCH_SCAN });
        cursor = page.cursor;
        read += page.members.length;
        await load(page.members.map(publicId), true);
      } while (cursor !== '0' && contacts.length < limit && read < NAME_SEARCH_IDS);
      more = cursor !== '0' && contacts.length < limit;
    }
    // A miss reads a decoy group: the same root, member and record reads as a hit (see service.ts).
    if (options.evenWork && idsSeen.size === 0) await load([DECOY_RECORD_ID]);
    return { contacts, more };
  }

  async function findByIdentifier(
    identifier: Identifier,
    options: { evenWork?: boolean } = {},
  ): Promise<Contact | null> {
    const [contact] = await find({ identity: identifier }, options);
    return contact ?? null;
  }

  /** A claim refused: taken before, or (with `instead`) its condition no longer held. */
  const notClaimed = (read: GroupReadResult): ClaimedFind =>
    read.instead === undefined ? { claimed: false } : { claimed: false, instead: read.instead };

  async function claimAndFind(
    identifier: Identifier,
    options: { claim: Claim; evenWork?: boolean },
  ): Promise<ClaimedFind> {
    const normalized = normalizePublic(identifier);
    // A kind that may also be search-only (identity.mergeOnVisitorTyped) is found through a set
    // as well: claim, then the ordinary find (more trips; not the default configuration).
    // So is a phone with an extension (found through the extension's set first). A lookup by a
    // number without one stays one step: it answers with that number's own contact, not with
    // one of the colleagues reached through it (a search lists those, findRecordIds).
    if (
      normalized &&
      !(
        resolves(normalized) &&
        mergeOnVisitorTyped.has(normalized.kind) &&
        !noteExtension(identifier, normalized)
      )
    ) {
      // The claim alone (with its condition, if any) is a group read of nothing.
      const claimed = await store.readGroups({
        keys: [],
        layout: groupLayout,
        maxRecords: 0,
        claim: options.claim,
      });
      if (!claimed.claimed) return notClaimed(claimed);
      return { claimed: true, contact: await findByIdentifier(identifier, options) };
    }
    // One step: claim, then the identifier's holder, its root, members and records (a miss with
    // evenWork reads the decoy group the same way; an unusable identifier reads it too).
    const read = withPublicIds(
      await store.readGroups({
        keys: normalized ? [key.index(normalized)] : [],
        layout: groupLayout,
        maxRecords: identity.maxMergeSize,
        claim: options.claim,
        ...(options.evenWork ? { decoy: storedId(DECOY_RECORD_ID) } : {}),
      }),
    );
    if (!read.claimed) return notClaimed(read);
    const holder = read.values[0];
    if (!holder) return { claimed: true, contact: null };
    // As find: the holder's root, loaded as a contact (which needs the root's own record).
    const rootId = read.roots.get(holder) ?? holder;
    if (read.records.has(rootId) && read.records.get(rootId) === null)
      return { claimed: true, contact: null };
    const loaded = lookupView(read, holder) ?? (await loadContact(rootId));
    return { claimed: true, contact: loaded?.contact ?? null };
  }

  function decodeCursor(cursor: string): string {
    const decoded = Buffer.from(cursor, 'base64url').toString('utf8');
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\|[A-Za-z0-9_-]{1,64}$/.test(decoded)) {
      throw new ValidationError(
        'invalid cursor',
        [{ path: 'before', message: 'not a cursor this API returned' }],
        'invalid_query',
      );
    }
    return decoded;
  }

  async function timeline(id: string, options: TimelineOptions): Promise<TimelinePage> {
    const page = await timelineWalk(id, options, true);
    return pageOf(page.entries!, page);
  }

  /**
   * timeline()'s page as the UTF-8 bytes of `JSON.stringify(page)`, what the admin API answers,
   * made from the members' stored bytes instead: each entry's JSON is answered as it is stored,
   * not decoded, parsed, serialised and encoded again (only a filtered page parses an entry, to
   * test it). The same walk as timeline() (timelineWalk), so the same entries, cursors and order.
   *
   * Byte for byte the same answer because every member was written as `at|id|` and
   * JSON.stringify's text of the entry (timelineMember and timelineMemberWithData, in every
   * version; no Lua script writes one), whose JSON.stringify(JSON.parse(text)) is the text itself,
   * and Redis keeps its UTF-8 as sent (JSON.stringify escapes lone surrogates). A page whose walk
   * read a member not of that form as far as a cheap check sees (invalid UTF-8, a non-ASCII or
   * missing `at|id|`, an entry that is not `{...}`) is JSON.stringify of timeline()'s page: its
   * entries parsed and serialised again.
   */
  async function timelineJson(id: string, options: TimelineOptions): Promise<Buffer> {
    const page = await timelineWalk(id, options, false);
    if (page.odd) {
      const entries = page.entries ?? page.json.map((json) => parseEntry(json));
      return Buffer.from(JSON.stringify(pageOf(entries, page)), 'utf8');
    }
    const parts: Buffer[] = [ENTRIES_OPEN];
    for (const [index, json] of page.json.entries()) {
      if (index > 0) parts.push(COMMA);
      parts.push(json as Buffer);
    }
    parts.push(
      Buffer.from(
        `],"nextCursor":${JSON.stringify(page.nextCursor)}${page.partial ? ',"partial":true' : ''}}`,
        'utf8',
      ),
    );
    return Buffer.concat(parts);
  }

  /**
   * One timeline page, for timeline() and timelineJson: each taken entry's JSON (`json`: the
   * stored bytes, or for a member not as the bridge writes it, see storedSplit, its text as read
   * as UTF-8), the entries parsed (`entries`, when `parse` or a filter asked for them), the cursor,
   * and whether the walk read such an odd member. Members are read as bytes and walked as
   * timeline() walked them as text (ioredis's strings): an odd one is taken, compared, bounded
   * and cut at its `|` as its text (bytes that are not UTF-8 as U+FFFD, a non-ASCII `at|id` by
   * UTF-16 offsets), the others as bytes, which give the same answers for them.
   */
  async function timelineWalk(id: string, options: TimelineOptions, parse: boolean): Promise<WalkedPage> {
    const recordIds = await recordIdsOf(id);
    if (!recordIds) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(id)}`);
    const below = options.before ? decodeCursor(options.before) : undefined;
    const limit = options.limit;
    const { channelId, type } = options.filter ?? {};
    const filtered = channelId !== undefined || type !== undefined;
    // Each record's timeline is read on in chunks and merged newest first, only as far as the
    // page takes from it: a page of finished chats (each up to limits.timelineEntryBytes) stops
    // at TIMELINE_PAGE_BYTES, and no more than about that is read, however many records merged.
    // A filtered page may skip most of what it reads, so it reads whole chunks whatever `limit`.
    const chunk = filtered ? TIMELINE_CHUNK : Math.min(limit + 1, TIMELINE_CHUNK);
    const cursors: WalkCursor[] = recordIds.map((recordId) => ({
      key: key.timeline(recordId),
      below,
      buffer: [],
      splits: [],
      texts: [],
      done: false,
    }));
    let odd = false;
    const fill = async (cursor: WalkCursor) => {
      if (cursor.buffer.length > 0 || cursor.done) return;
      const members = await store.zrevrangeByLexBuffer(cursor.key, {
        ...(cursor.below === undefined ? {} : { below: cursor.below }),
        limit: chunk,
      });
      const splits = members.map(storedSplit);
      cursor.buffer = members;
      cursor.splits = splits;
      cursor.texts = [];
      if (splits.includes(-1)) {
        odd = true;
        cursor.texts = members.map((member, index) =>
          splits[index]! < 0 ? member.toString('utf8') : undefined,
        );
      }
      // The next read starts below the last member as timeline() read it: an odd one as its text.
      if (members.length > 0) cursor.below = cursor.texts[members.length - 1] ?? members[members.length - 1];
      if (members.length < chunk) cursor.done = true;
    };
    await Promise.all(cursors.map(fill));
    const json: Array<Buffer | string> = [];
    const entries: TimelineEntry[] | undefined = parse || filtered ? [] : undefined;
    let bytes = 0;
    // What the filter passed over: bounded, so a filter that matches nothing in a long history
    // answers after TIMELINE_SCAN_ENTRIES / TIMELINE_SCAN_BYTES with a cursor to read on from.
    let skipped = 0;
    let skippedBytes = 0;
    // `at|id` of the last member taken or passed over: the next page starts below it, so the
    // entries a filter skipped are not read again (without a filter, the last entry's).
    let last: Buffer | string = '';
    const cursorOf = () =>
      (typeof last === 'string' ? Buffer.from(last, 'utf8') : last).toString('base64url');
    for (;;) {
      let next: WalkCursor | undefined;
      for (const cursor of cursors) {
        if (cursor.buffer.length > 0 && (!next || memberAbove(cursor, next))) next = cursor;
      }
      if (!next) return { json, entries, nextCursor: null, partial: false, odd };
      const member = next.buffer[0]!;
      const split = next.splits[0]!;
      const text = next.texts[0];
      // An odd member is cut as timeline() cut its text (at its first `|` from UTF-16 offset 25).
      const textSplit = text === undefined ? -1 : text.indexOf('|', 25);
      const oddJson = text?.slice(textSplit + 1);
      const size = oddJson === undefined ? member.length - split - 1 : Buffer.byteLength(oddJson);
      if (json.length >= limit || (json.length > 0 && bytes + size > TIMELINE_PAGE_BYTES)) {
        return { json, entries, nextCursor: cursorOf(), partial: false, odd };
      }
      if (skipped >= TIMELINE_SCAN_ENTRIES || skippedBytes >= TIMELINE_SCAN_BYTES) {
        // Fewer than `limit` matched in what one page may read: say so, and where to read on.
        return { json, entries, nextCursor: cursorOf(), partial: true, odd };
      }
      const entryJson = oddJson ?? member.subarray(split + 1);
      let matches = true;
      if (entries) {
        const entry = parseEntry(entryJson);
        matches =
          (channelId === undefined || entry.channelId === channelId) &&
          (type === undefined || entry.type === type);
        if (matches) entries.push(entry);
      }
      if (matches) {
        json.push(entryJson);
        bytes += size;
      } else {
        skipped += 1;
        skippedBytes += size;
      }
      last = text === undefined ? member.subarray(0, split) : text.slice(0, textSplit);
      next.buffer.shift();
      next.splits.shift();
      next.texts.shift();
      if (next.buffer.length === 0) await fill(next);
    }
  }

  async function unmerge(id: string, request: UnmergeRequest) {
    // The contact is found before its lock is taken; should it be merged into another one in
    // between, the split acts on the contact it is part of then (found again), not on the old
    // root's emptied member list.
    for (let attempt = 0; attempt < UNMERGE_ATTEMPTS; attempt++) {
      const loaded = await loadContact(id);
      if (!loaded) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(id)}`);
      const rootId = loaded.rootId;
      try {
        if (request.recordId) return await unmergeRecord(rootId, request.recordId);
        if (request.identifier) return await splitIdentifier(rootId, request.identifier);
      } catch (error) {
        if (error instanceof RootMoved) continue;
        throw error;
      }
      throw new ValidationError('name what to split off', [
        { path: formatPath([]), message: 'give recordId or identifier' },
      ]);
    }
    throw contention();
  }

  /** Under the contact's lock: throws RootMoved when `rootId` was merged into another contact. */
  async function stillRoot(rootId: string): Promise<void> {
    if ((await store.get(key.root(rootId))) !== null) throw new RootMoved();
  }

  /** Commit an unmerge plan as one checked batch (the caller holds the locks). */
  async function commitPlan(
    plan: UnmergePlan,
    records: ReadonlyMap<string, StoredRecord>,
    expectIndex?: { key: string; holder: string },
  ): Promise<{ contact: Contact; split: Contact }> {
    const batch = store.batch();
    if (expectIndex) batch.expect(expectIndex.key, storedId(expectIndex.holder));
    for (const id of plan.expectRecords) {
      const record = records.get(id);
      batch.expect(key.record(id), (record && readAs.get(record)) ?? null);
    }
    queueWrites(batch, plan.writes);
    for (const write of plan.writes) if (write.op === 'zadd') retainTimeline(batch, write.key);
    const stagedAt = Date.now();
    events.stage(
      batch,
      plan.events.map((entry) => extend(entry, { stagedAt })),
    );
    if (!(await batch.exec())) throw contention();
    events.committed();
    return { contact: plan.contact, split: plan.split };
  }

  async function unmergeRecord(rootId: string, recordId: string) {
    return withLock([contactLockName(rootId), `rec:${recordId}`], 'unmerge', async () => {
      const [members] = await Promise.all([membersOf(rootId), stillRoot(rootId)]);
      assertMergedRecord(rootId, recordId, members); // before reading the records
      const records = await readRecords([rootId, ...members]);
      const plan = planRecordUnmerge({
        rootId,
        recordId,
        members,
        records,
        at: now().toISOString(),
        entryId: `unmerge_${randomBytes(8).toString('hex')}`,
      });
      return commitPlan(plan, records);
    });
  }

  async function splitIdentifier(rootId: string, raw: Identifier) {
    const identifier = normalizePublic(raw);
    if (!identifier || !resolves(identifier)) {
      // A vendor-local id without its channel is the likely mistake: name it.
      const local = !['person', 'email', 'phone'].includes(raw.kind) && raw.channelId === undefined;
      throw new ValidationError('identifier cannot be split off', [
        local
          ? {
              path: 'identifier.channelId',
              message: `vendor-local kind "${quotedInput(raw.kind)}" needs the channel it belongs to`,
            }
          : { path: 'identifier', message: 'not a valid identifier of a kind that merges' },
      ]);
    }
    const notPart = () =>
      new ValidationError('identifier is not part of this contact', [
        { path: 'identifier', message: quotedInput(identifierLabel(identifier)) },
      ]);
    const rootOf = async (id: string) => (await idAt(key.root(id))) ?? id;
    return withLock([key.index(identifier)], 'identifiers', async () => {
      const holder = await idAt(key.index(identifier));
      if (!holder) throw notPart();
      if ((await rootOf(holder)) !== rootId) {
        await stillRoot(rootId); // or the contact was merged into the holder's meanwhile
        throw notPart();
      }
      return withLock([contactLockName(rootId), `rec:${holder}`], 'unmerge', async () => {
        // Read again under the contact's lock: it may have been merged into another one, or the
        // holder split off it, since the check above.
        const [members, , holderRoot] = await Promise.all([
          membersOf(rootId),
          stillRoot(rootId),
          rootOf(holder),
        ]);
        if (holderRoot !== rootId) throw notPart();
        const records = await readRecords([rootId, ...members]);
        const at = now().toISOString();
        const plan = planIdentifierSplit({
          rootId,
          holder,
          identifier,
          members,
          records,
          fresh: newRecord(at),
          at,
        });
        return commitPlan(plan, records, plan.expectIndex);
      });
    });
  }

  /**
   * A merge staff asked for (POST /api/v1/contacts/:id/merge, the console, the CLI). It joins the
   * two groups with the same writes as an observation that names both (mergeWrites: oldest root
   * survives, merge log, root pointers, member sets), under both contacts' locks so that no
   * observation, merge or unmerge of either writes in between, and commits them with the
   * timeline entry and the `contact.merged` event as one checked batch. The size cap holds as for
   * an observation (`too_large`); an earlier unmerge (`unmerged_before`) does not: it keeps an
   * identifier from joining the pair again automatically, and a person deciding now overrides it.
   */
  async function mergeContacts(id: string, otherId: string, by: string): Promise<{ contact: Contact }> {
    for (let attempt = 0; attempt < UNMERGE_ATTEMPTS; attempt++) {
      const [one, other] = await Promise.all([loadContact(id), loadContact(otherId)]);
      if (!one) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(id)}`);
      if (!other) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(otherId)}`);
      if (one.rootId === other.rootId)
        throw new ConflictError(
          'same_contact',
          `${quotedInput(id)} and ${quotedInput(otherId)} are the same contact (${one.rootId}): nothing to merge`,
        );
      const roots = [one.rootId, other.rootId];
      try {
        return await withLock(roots.map(contactLockName), 'merge', () => commitManualMerge(roots, by));
      } catch (error) {
        if (error instanceof RootMoved) continue; // merged into another contact meanwhile: find it again
        throw error;
      }
    }
    throw new ConflictError('identity_contention', 'the contacts changed while being merged; retry');
  }

  /** Under both contacts' locks: throws RootMoved when either was merged into another contact. */
  async function commitManualMerge(roots: string[], by: string): Promise<{ contact: Contact }> {
    const [memberLists] = await Promise.all([Promise.all(roots.map(membersOf)), ...roots.map(stillRoot)]);
    const members = new Map(roots.map((root, index) => [root, memberLists[index]!]));
    const groupIds = groupIdsOf(roots, members);
    if (groupIds.length > identity.maxMergeSize)
      throw new ConflictError(
        'too_large',
        `the two contacts hold ${groupIds.length} records together, more than identity.maxMergeSize (${identity.maxMergeSize}); nothing was merged`,
      );
    const records = await readRecords(groupIds);
    if (roots.some((root) => !records.has(root))) throw new RootMoved();
    const at = now().toISOString();
    const via: Identifier = { kind: MANUAL_MERGE_KIND, value: by, provenance: 'verified' };
    const survivor = survivorOf(roots, records);
    const absorbed = roots.filter((root) => root !== survivor);
    const batch = store.batch();
    // The locks keep other writers of these contacts out; the expectations make sure of it.
    for (const groupId of groupIds) {
      const record = records.get(groupId);
      batch.expect(key.record(groupId), (record && readAs.get(record)) ?? null);
    }
    queueWrites(
      batch,
      // typed: false — a person decided, which is as good as a verified id.
      mergeWrites({ outcome: 'merged', survivor, via, typed: false, absorbed }, { members, records }, at),
    );
    const mergeEntry: TimelineEntry = {
      id: `merge_${randomBytes(8).toString('hex')}`,
      at,
      channelId: '',
      vendor: 'chatbridge',
      type: 'contact.merged',
      summary: `Merged ${absorbed.length} contact${absorbed.length === 1 ? '' : 's'} by hand (${by})`,
      data: { survivor, absorbed, via },
    };
    batch.zadd(key.timeline(survivor), 0, timelineMember(mergeEntry));
    retainTimeline(batch, key.timeline(survivor));
    const contact = mergedView(
      survivor,
      groupIds.map((groupId) => records.get(groupId)).filter((record) => record !== undefined),
    );
    events.stage(batch, [
      {
        event: {
          id: `evt_${mergeEntry.id}`,
          type: 'contact.merged',
          occurredAt: at,
          channel: null,
          contact,
          data: { survivor, absorbed, via },
        },
        orderingKey: survivor,
        follows: absorbedLanes(absorbed, members),
        stagedAt: now().getTime(),
      },
    ]);
    if (!(await batch.exec()))
      throw new ConflictError('identity_contention', 'the contacts changed while being merged; retry');
    events.committed();
    metrics.merges.inc({ outcome: 'merged' });
    return { contact };
  }

  function contention(): ConflictError {
    return new ConflictError('identity_contention', 'the contact changed while being split; retry');
  }

  return {
    observe,
    conflictsPage: conflictList.page,
    get,
    getMany,
    currentId,
    find,
    findByName: (name: string, options: { limit: number }) => search({ name, limit: options.limit }),
    findByIdentifier,
    claimAndFind,
    timeline,
    timelineJson,
    unmerge,
    mergeContacts,
    normalizeIdentifier: normalizePublic,
  };
}

/** The names or labels as they can be shown (cleanDisplayText), those left empty dropped. */
function showable(values: string[]): string[] {
  const out: string[] = [];
  for (const value of values) {
    const cleaned = cleanDisplayText(value);
    if (cleaned !== null) out.push(cleaned);
  }
  return out;
}

/**
 * The delivery lanes (ordering keys) a merge's events follow: each absorbed contact's id, and
 * the ids of the records it had absorbed before, whose own earlier events may still be pending
 * under them (a destination that takes no contact.merged events has no merge delivery in the
 * absorbed contact's lane to wait behind).
 */
function absorbedLanes(
  absorbed: readonly string[],
  members: ReadonlyMap<string, readonly string[]>,
): string[] {
  return [...new Set(absorbed.flatMap((root) => [root, ...(members.get(root) ?? [])]))];
}
