import { randomPool } from '../random.js';
import { identifierLabel } from './normalize.js';
import type { AgentRef, AttributeValue, Contact, Identifier } from './types.js';

/**
 * The contact record and its stored form (pure: no store, no clock). Every contact the bridge
 * ever created is a record (`rec:<id>`); a contact the API shows is the merged view of a root
 * record and its members (mergedView).
 */

export interface Valued {
  v: string;
  at: string;
  /**
   * E-mails and phones only: set when some observation gave this value as verified (issue 10
   * item 5). Absent means visitor-typed, the default, which is also what records written before
   * provenance existed read as.
   */
  ok?: true;
}

export interface StoredAttribute extends AttributeValue {
  channelId: string;
  at: string;
}

export interface ChannelStat {
  vendor: string;
  firstSeen: string;
  lastSeen: string;
  observations: number;
  conversations: number;
}

export interface MergeLogEntry {
  at: string;
  /** The records that joined with this merge (the absorbed root first). */
  records: string[];
  via: Identifier;
  /**
   * Set when some group joined only through visitor-typed (or vendor-local) values of the
   * observation, not a verified one (issue 10 item 5): what the merge brought rests on them.
   */
  typed?: true;
}

/**
 * Whether an agent names anyone. A stored statement that does not ({at} alone) is an unassignment
 * the vendor stated at `at` (engine.ts apply).
 */
export function named(agent: AgentRef | undefined): agent is AgentRef {
  return agent !== undefined && Boolean(agent.email || agent.name || agent.id);
}

/** The agent a statement names, as the contact shows it (no time, no channel). */
export function agentRefOf(statement: AgentStatement): AgentRef {
  const agent: AgentRef = {};
  if (statement.email !== undefined) agent.email = statement.email;
  if (statement.name !== undefined) agent.name = statement.name;
  if (statement.id !== undefined) agent.id = statement.id;
  return agent;
}

/** Whether two statements name the same agent (both none included). */
export function sameAgent(a: AgentRef | undefined, b: AgentRef | undefined): boolean {
  return a?.email === b?.email && a?.name === b?.name && a?.id === b?.id;
}

/**
 * One channel's newest statement of who is responsible for the customer (README, Responsible
 * agent): an agent, or an unassignment (no name, e-mail or id). `c` is the channel that said it.
 * A statement stored before they were kept per channel has none: which channel said it is not
 * known, so it is taken as every channel's (an unassignment of any channel newer than it clears
 * it, and an unassignment without a channel clears every older agent), as it was then.
 */
export interface AgentStatement extends AgentRef {
  at: string;
  c?: string;
}

/**
 * Who is responsible, from statements of one record or of a whole group (root's first): each
 * channel's newest statement counts, and the contact's agent is the newest agent a channel still
 * names. So an unassignment takes back only what its own channel said; another channel's agent
 * stands (and comes back when it was the one before). On a tie the first in order wins.
 */
export function responsibleOf(statements: Iterable<AgentStatement>): AgentStatement | undefined {
  // (named() narrows: an unassignment would type as never.)
  const says = (statement: AgentStatement): boolean => named(statement);
  const newest = new Map<string, AgentStatement>();
  for (const statement of statements) {
    const channel = statement.c ?? '';
    const known = newest.get(channel);
    if (!known || known.at < statement.at) newest.set(channel, statement);
  }
  const legacy = newest.get('');
  const legacyClear = legacy && !says(legacy) ? legacy.at : undefined;
  let best: AgentStatement | undefined;
  for (const statement of newest.values()) {
    if (!says(statement)) continue;
    if (statement.c === undefined) {
      let cleared = false;
      for (const other of newest.values()) if (!says(other) && other.at >= statement.at) cleared = true;
      if (cleared) continue;
    } else if (legacyClear !== undefined && legacyClear >= statement.at) continue;
    if (!best || best.at < statement.at) best = statement;
  }
  return best;
}

export interface StoredRecord {
  id: string;
  createdAt: string;
  updatedAt: string;
  names: Valued[];
  emails: Valued[];
  phones: Valued[];
  ids: Identifier[];
  labels: string[];
  attrs: Record<string, StoredAttribute>;
  /** Each channel's newest statement of the responsible agent (at most one a channel; responsibleOf). */
  agents?: AgentStatement[];
  crmLink?: Valued;
  channels: Record<string, ChannelStat>;
  /** Only meaningful on a root: the merges that built this group, oldest first. */
  merges: MergeLogEntry[];
}

/**
 * How a record is stored: the same data as StoredRecord, written compactly, because records are
 * most of what a contact costs in Redis (bench/run.js, identity scale). Positional pairs instead
 * of {v, at} objects, a time equal to the record's createdAt written as 0 (most are: one
 * observation made the record), empty fields left out, the id not repeated (it is in the key),
 * and an e-mail or phone identifier written as a reference to its entry in `e`/`p` instead of a
 * second copy of the value. What is most common is shortest: a value seen only when the record
 * was made, and not verified, is its bare string (`"Anna"` for `["Anna",0]`); a reference to the
 * first e-mail or phone is `"@e"`/`"@p"` (for `["@e",0]`); a channel's stat leaves out trailing
 * fields at their usual values (first and last seen 0, one observation, no conversation). The
 * longer forms are still read (records written before), and still written when needed.
 */
type StoredTime = string | 0;
/** A third element 1 marks a verified e-mail or phone: the default (visitor-typed) costs nothing. */
type EncodedValued = string | [string, StoredTime] | [string, StoredTime, 1];
type EncodedIdentifier = [string, string] | [string, string, string] | ['@e' | '@p', number] | '@e' | '@p';
type EncodedChannel = [
  vendor: string,
  firstSeen?: StoredTime,
  lastSeen?: StoredTime,
  observations?: number,
  conversations?: number,
];
/** What a channel stat's fields after the vendor are when left out (trailing ones only). */
const CHANNEL_DEFAULTS: readonly unknown[] = [undefined, 0, 0, 1, 0];
interface EncodedRecord {
  c: string;
  u?: string;
  n?: EncodedValued[];
  e?: EncodedValued[];
  p?: EncodedValued[];
  i?: EncodedIdentifier[];
  l?: string[];
  a?: Record<string, StoredAttribute>;
  /**
   * The newest agent statement (an agent, or {at} alone for an unassignment), without its channel:
   * the one field versions before per-channel statements read (they show this, by their rule).
   */
  g?: AgentRef & { at: string };
  /** g's channel; absent on a statement stored before (or rewritten by such a version). */
  gc?: string;
  /** The other channels' newest statements, each with its channel (`c`). */
  go?: AgentStatement[];
  k?: Valued;
  ch?: Record<string, EncodedChannel>;
  m?: MergeLogEntry[];
}

/**
 * A copy of `from` (own enumerable properties, in order; none when absent) without a prototype:
 * attributes are named by vendors, and `constructor` or `__proto__` must be kept like any other
 * name (issue 10 item 14). Object.create(null) gives such an object in V8's dictionary mode,
 * which every record decode, for-in and Object.keys then paid for on V8's slow paths (in a loop:
 * a parsed record's ten attributes copied in 0.30 µs against 0.09, a for-in over them 0.25 µs
 * against 0.01, Object.keys 0.18 against 0.02; bench/HISTORY.md, twenty-fourth round); a literal
 * given a null prototype stays a fast object. The spread defines each key as its own data
 * property, `__proto__` too (it does not set the prototype).
 */
export function withoutPrototype<T>(from?: Readonly<Record<string, T>>): Record<string, T> {
  return Object.setPrototypeOf(from === undefined ? {} : { ...from }, null) as Record<string, T>;
}

/** Whether an object has an own enumerable key, without listing them all. */
function hasKeys(object: object): boolean {
  for (const _ in object) return true;
  return false;
}

export function encodeRecord(record: StoredRecord): string {
  const created = record.createdAt;
  const time = (at: string): StoredTime => (at === created ? 0 : at);
  const valued = (list: Valued[]) =>
    list.map((item): EncodedValued => {
      const at = time(item.at);
      if (item.ok) return [item.v, at, 1];
      return at === 0 ? item.v : [item.v, at];
    });
  const encoded: EncodedRecord = { c: created };
  if (record.updatedAt !== created) encoded.u = record.updatedAt;
  if (record.names.length > 0) encoded.n = valued(record.names);
  if (record.emails.length > 0) encoded.e = valued(record.emails);
  if (record.phones.length > 0) encoded.p = valued(record.phones);
  if (record.ids.length > 0) {
    encoded.i = record.ids.map((identifier): EncodedIdentifier => {
      if (identifier.channelId !== undefined)
        return [identifier.kind, identifier.value, identifier.channelId];
      const list =
        identifier.kind === 'email' ? record.emails : identifier.kind === 'phone' ? record.phones : null;
      const at = list ? list.findIndex((item) => item.v === identifier.value) : -1;
      const pointer = identifier.kind === 'email' ? '@e' : '@p';
      if (at === 0) return pointer;
      if (at > 0) return [pointer, at];
      return [identifier.kind, identifier.value];
    });
  }
  if (record.labels.length > 0) encoded.l = record.labels;
  if (hasKeys(record.attrs)) encoded.a = record.attrs;
  const agents = record.agents;
  if (agents !== undefined && agents.length > 0) {
    let newest = agents[0]!;
    for (const statement of agents) if (newest.at < statement.at) newest = statement;
    const { c, ...said } = newest;
    encoded.g = said;
    if (c !== undefined) encoded.gc = c;
    if (agents.length > 1) encoded.go = agents.filter((statement) => statement !== newest);
  }
  if (record.crmLink) encoded.k = record.crmLink;
  if (hasKeys(record.channels)) {
    const channels: NonNullable<EncodedRecord['ch']> = {};
    for (const channelId in record.channels) {
      const stat = record.channels[channelId]!;
      const channel: EncodedChannel = [
        stat.vendor,
        time(stat.firstSeen),
        time(stat.lastSeen),
        stat.observations,
        stat.conversations,
      ];
      while (channel.length > 1 && channel[channel.length - 1] === CHANNEL_DEFAULTS[channel.length - 1])
        channel.pop();
      channels[channelId] = channel;
    }
    encoded.ch = channels;
  }
  if (record.merges.length > 0) encoded.m = record.merges;
  return JSON.stringify(encoded);
}

export function decodeRecord(id: string, text: string): StoredRecord {
  const parsed = JSON.parse(text) as EncodedRecord;
  const created = parsed.c;
  const time = (at: StoredTime) => (at === 0 ? created : at);
  const valued = (list: EncodedValued[] | undefined): Valued[] =>
    list === undefined
      ? []
      : list.map((item): Valued => {
          if (typeof item === 'string') return { v: item, at: created };
          const [v, at, ok] = item;
          return ok ? { v, at: time(at), ok: true } : { v, at: time(at) };
        });
  const names = valued(parsed.n);
  const emails = valued(parsed.e);
  const phones = valued(parsed.p);
  const ids = (parsed.i === undefined ? [] : parsed.i).map((item): Identifier => {
    if (item === '@e') return { kind: 'email', value: emails[0]!.v };
    if (item === '@p') return { kind: 'phone', value: phones[0]!.v };
    if (item[0] === '@e' || item[0] === '@p') {
      const list = item[0] === '@e' ? emails : phones;
      return { kind: item[0] === '@e' ? 'email' : 'phone', value: list[item[1] as number]!.v };
    }
    const [kind, value, channelId] = item as [string, string, string?];
    return channelId === undefined ? { kind, value } : { kind, value, channelId };
  });
  const record: StoredRecord = {
    id,
    createdAt: created,
    updatedAt: parsed.u ?? created,
    names,
    emails,
    phones,
    ids,
    labels: parsed.l ?? [],
    // Null prototype: attributes are named by vendors, and `constructor` or `__proto__` must be
    // kept like any other name (issue 10 item 14).
    attrs: withoutPrototype(parsed.a),
    channels: {},
    merges: parsed.m ?? [],
  };
  if (parsed.g) {
    // A version before per-channel statements rewrites g and drops gc and go: then g is read as
    // a statement of no known channel, and what the other channels said is forgotten.
    const newest: AgentStatement = parsed.gc === undefined ? parsed.g : { ...parsed.g, c: parsed.gc };
    record.agents = parsed.go === undefined ? [newest] : [newest, ...parsed.go];
  }
  if (parsed.k) record.crmLink = parsed.k;
  const channels = parsed.ch;
  if (channels !== undefined) {
    for (const channelId in channels) {
      const [vendor, firstSeen = 0, lastSeen = 0, observations = 1, conversations = 0] = channels[channelId]!;
      record.channels[channelId] = {
        vendor,
        firstSeen: time(firstSeen),
        lastSeen: time(lastSeen),
        observations,
        conversations,
      };
    }
  }
  return record;
}

/**
 * A record the engine has changed (apply), put in the form decodeRecord gives of its encoded
 * text, so that the engine can plan its next write on it without decoding that text
 * (engine.ts, LaneState.decoded). The one difference apply leaves is the order of the agent
 * statements: encodeRecord stores the newest apart (`g`, the first of the newest in order) and
 * decodeRecord puts it first, the others after it in their order. What else apply puts in a
 * record is as decodeRecord makes it (its values, times and objects; identifiers without their
 * provenance): test/contacts.handed-record.test.ts holds an engine planning on such records to
 * the record texts and contacts of one that decodes every text.
 */
export function asDecoded(record: StoredRecord): StoredRecord {
  const agents = record.agents;
  if (agents !== undefined && agents.length === 0) delete record.agents;
  else if (agents !== undefined && agents.length > 1) {
    let newest = 0;
    for (let index = 1; index < agents.length; index++)
      if (agents[newest]!.at < agents[index]!.at) newest = index;
    if (newest > 0)
      record.agents = [agents[newest]!, ...agents.slice(0, newest), ...agents.slice(newest + 1)];
  }
  return record;
}

// ISO-8601 UTC timestamps of one format compare correctly as strings.
const minIso = (a: string, b: string) => (a < b ? a : b);
const maxIso = (a: string, b: string) => (a > b ? a : b);

/** The unified view of a group: the root record plus its members, newest values first. */
export function mergedView(rootId: string, records: StoredRecord[]): Contact {
  const root = records.find((record) => record.id === rootId) ?? records[0]!;
  const ordered = [root, ...records.filter((record) => record !== root)];
  const newestFirst = (field: 'names' | 'emails' | 'phones') => {
    const best = new Map<string, string>();
    for (const record of ordered) {
      for (const item of record[field]) {
        const seen = best.get(item.v);
        if (!seen || seen < item.at) best.set(item.v, item.at);
      }
    }
    return [...best.entries()]
      .sort((a, b) => b[1].localeCompare(a[1]) || a[0].localeCompare(b[0]))
      .map(([v]) => v);
  };
  const names = newestFirst('names');
  // Verified once (in any record of the group) is verified.
  const verifiedValues = new Set<string>();
  for (const record of ordered) {
    for (const item of record.emails) if (item.ok) verifiedValues.add(`email:${item.v}`);
    for (const item of record.phones) if (item.ok) verifiedValues.add(`phone:${item.v}`);
  }
  const identities: Identifier[] = [];
  const seenIds = new Set<string>();
  for (const record of ordered) {
    for (const identifier of record.ids) {
      const label = identifierLabel(identifier);
      if (!seenIds.has(label)) {
        seenIds.add(label);
        // The stored identifier without its provenance (what the view says instead, below).
        const plain: Identifier =
          identifier.channelId === undefined
            ? { kind: identifier.kind, value: identifier.value }
            : { kind: identifier.kind, value: identifier.value, channelId: identifier.channelId };
        // Global kinds say where their value came from; person ids are the company's own.
        if (identifier.kind === 'person') plain.provenance = 'verified';
        else if (identifier.kind === 'email' || identifier.kind === 'phone')
          plain.provenance = verifiedValues.has(label) ? 'verified' : 'visitor';
        identities.push(plain);
      }
    }
  }
  const attributes: Contact['attributes'] = withoutPrototype();
  const labels = new Set<string>();
  const agentStatements: AgentStatement[] = [];
  let crmLink: Valued | undefined;
  const channels = new Map<string, Contact['channels'][number]>();
  let createdAt = root.createdAt;
  let updatedAt = root.updatedAt;
  for (const record of ordered) {
    for (const name in record.attrs) {
      const attribute = record.attrs[name]!;
      const current = attributes[name];
      if (!current || current.at < attribute.at) attributes[name] = attribute;
    }
    for (const label of record.labels) labels.add(label);
    if (record.agents !== undefined) for (const statement of record.agents) agentStatements.push(statement);
    if (record.crmLink && (!crmLink || crmLink.at < record.crmLink.at)) crmLink = record.crmLink;
    for (const channelId in record.channels) {
      const stat = record.channels[channelId]!;
      const current = channels.get(channelId);
      if (current) {
        current.vendor = stat.vendor;
        current.firstSeen = minIso(current.firstSeen, stat.firstSeen);
        current.lastSeen = maxIso(current.lastSeen, stat.lastSeen);
        current.observations += stat.observations;
        current.conversations += stat.conversations;
      } else {
        channels.set(channelId, {
          channelId,
          vendor: stat.vendor,
          firstSeen: stat.firstSeen,
          lastSeen: stat.lastSeen,
          observations: stat.observations,
          conversations: stat.conversations,
        });
      }
    }
    if (record.createdAt < createdAt) createdAt = record.createdAt;
    if (record.updatedAt > updatedAt) updatedAt = record.updatedAt;
  }
  const agent = responsibleOf(agentStatements);
  return {
    id: rootId,
    name: names[0] ?? null,
    names,
    emails: newestFirst('emails'),
    phones: newestFirst('phones'),
    identities,
    labels: [...labels].sort(),
    attributes,
    responsibleAgent: agent ? agentRefOf(agent) : null,
    crmLink: crmLink?.v ?? null,
    channels: [...channels.values()],
    records: ordered.map((record) => record.id),
    merges: root.merges.map((merge) => ({
      at: merge.at,
      recordId: merge.records[0]!,
      via: merge.via,
      ...(merge.typed ? { verified: false as const } : {}),
    })),
    createdAt,
    updatedAt,
  };
}

const sameList = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((value, index) => value === b[index]);

/**
 * Whether two views of one contact show the same thing, as `contact.updated` tells it (README,
 * Outbox): names, e-mails and phones in their order (the newest is primary), identities with their
 * provenance, labels, each attribute's value, label and type, the responsible agent and the CRM
 * link. Not the bookkeeping every observation moves (channel counts, times, an attribute's channel
 * and time when its value stays), nor the records and merge log (a merge is told by
 * contact.merged).
 */
export function sameShown(a: Contact, b: Contact): boolean {
  if (!sameList(a.names, b.names) || !sameList(a.emails, b.emails) || !sameList(a.phones, b.phones))
    return false;
  if (!sameList(a.labels, b.labels) || a.crmLink !== b.crmLink) return false;
  if (!sameAgent(a.responsibleAgent ?? undefined, b.responsibleAgent ?? undefined)) return false;
  if (a.identities.length !== b.identities.length) return false;
  for (let index = 0; index < a.identities.length; index++) {
    const x = a.identities[index]!;
    const y = b.identities[index]!;
    if (x.kind !== y.kind || x.value !== y.value || x.channelId !== y.channelId) return false;
    if (x.provenance !== y.provenance) return false;
  }
  let count = 0;
  for (const name in a.attributes) {
    const x = a.attributes[name]!;
    const y = b.attributes[name];
    if (!y || x.value !== y.value || x.label !== y.label || x.type !== y.type) return false;
    count++;
  }
  for (const _ in b.attributes) count--;
  return count === 0;
}

/** The times of a record's values, to tell later whether their order moved (sameOrder); none for fewer than two. */
export function timesOf(list: readonly Valued[]): string[] | undefined {
  return list.length > 1 ? list.map((item) => item.at) : undefined;
}

/**
 * Whether a record's list of values shows in the same order (newest first, as mergedView shows a
 * group's) as `before`, the values' times before an observation moved them. Only lists of two or
 * more can change order without a value added.
 */
export function sameOrder(list: readonly Valued[], before: readonly string[]): boolean {
  const order = (items: readonly { v: string; at: string }[]) =>
    [...items].sort((x, y) => y.at.localeCompare(x.at) || x.v.localeCompare(y.v)).map((item) => item.v);
  const was = order(before.map((at, index) => ({ v: list[index]!.v, at })));
  return sameList(was, order(list));
}

/**
 * Record ids are `c_` and a random integer in [10^17, 2^63): 18 or 19 digits, no leading zero,
 * so that the store can keep the digits as a 64-bit integer (src/contacts/keys.ts, storedId).
 * About 63 random bits (values below 10^17, 1 %, are drawn again): among 10 million ids, two are
 * equal with a chance of about 1 in 200,000, and a new record is written only if its key does not
 * exist yet (the engine expects it absent), so a collision costs a retry, not a contact. The random
 * bytes come from a pool refilled every 256 ids, not from a crypto call per id. (Ids made before
 * were `c_` + 20 hex characters; they stay valid, see keys.ts.)
 */
const idBytes = randomPool(8, 256);
const MIN_ID = 10n ** 17n;

export function newRecordId(): string {
  for (;;) {
    const value = idBytes().readBigUInt64LE(0) >> 1n;
    if (value >= MIN_ID) return `c_${value}`;
  }
}

export function newRecord(at: string): StoredRecord {
  return {
    id: newRecordId(),
    createdAt: at,
    updatedAt: at,
    names: [],
    emails: [],
    phones: [],
    ids: [],
    labels: [],
    attrs: withoutPrototype(),
    channels: {},
    merges: [],
  };
}

export function upsertValued(list: Valued[], value: string, at: string, verified = false): boolean {
  const existing = list.find((item) => item.v === value);
  if (!existing) {
    list.push(verified ? { v: value, at, ok: true } : { v: value, at });
    return true;
  }
  if (existing.at < at) existing.at = at;
  if (verified && !existing.ok) {
    existing.ok = true; // verified once is verified
    return true;
  }
  return false;
}
