import type { AgentConfig } from '../../src/config/schema.js';
import { type FactAnswer, unverifiedValues } from '../../src/contacts/facts.js';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type {
  AgentRef,
  Contact,
  Identifier,
  Observation,
  TimelineEntryInput,
  TranscriptMessage,
} from '../../src/contacts/types.js';
import { extend } from '../../src/extend.js';
import { cutText, digest, exactNumber, first, isoTime, keyPart, text } from '../../src/intake/wire.js';
import { ANSWER_LIMITS, type LookupAnswer, type LookupAttribute } from './codec.js';
import {
  type ConversationInput,
  type DiscourserInput,
  type EmployeeInput,
  type MessageInput,
  type RatingInput,
  type WebhookEnvelope,
  webhookEnvelopeSchema,
} from './schemas.js';

/**
 * LiveTex payloads → the contact model, and the contact model → the lookup answer.
 * The dialog webhook's nested fields are not public (vendors/livetex.md §3): the field choices
 * below are our reading, kept in this one file so a real sample changes only here and schemas.ts.
 */

export const VENDOR = 'livetex';

export type DialogEvent = 'closed' | 'assigned' | 'rated';

export interface Rating {
  /** LiveTex's two scales (Visitor API): doublePoint 0/1, fivePoint 1–5. */
  scale: 'doublePoint' | 'fivePoint';
  value: number;
  comment?: string;
}

export interface ClientInfo {
  name?: string;
  /** personId (web) and customVisitorToken (mobile): one identifier kind, `person`. */
  personIds: string[];
  visitorToken?: string;
  clientId?: string;
  emails: string[];
  phones: string[];
  attributes: Record<string, string | number | boolean>;
}

export interface DialogRecord {
  event: DialogEvent;
  /** LiveTex's conversation id plus the dialog's ordinal when given (one conversation, several dialogs). */
  dialogId?: string;
  conversationId?: string;
  topic?: string;
  startedAt?: string;
  endedAt?: string;
  /** When the payload says the event happened, if it does. */
  eventAt?: string;
  agents: AgentRef[];
  /** Operators of the payload beyond AGENTS_PER_PAYLOAD, left out (counted by the intake). */
  agentsLeftOut?: number;
  client: ClientInfo;
  rating?: Rating;
  messages: TranscriptMessage[];
}

/**
 * Operators read from one payload: each is looked up in the agent directory, so a payload listing
 * thousands must not cost thousands of directory scans. A dialog has one operator, a few at most.
 */
export const AGENTS_PER_PAYLOAD = 20;

export type ParsedWebhook = { kind: 'dialog'; record: DialogRecord } | { kind: 'unhandled'; reason: string };

// ---------------------------------------------------------------------------------------------
// Small readers

/** ISO 8601 text, or Unix seconds / milliseconds (numbers or numeric text). */
export const isoOf = isoTime;

const EVENT_WORDS: Record<string, DialogEvent> = {
  close: 'closed',
  closed: 'closed',
  finish: 'closed',
  finished: 'closed',
  end: 'closed',
  ended: 'closed',
  assign: 'assigned',
  assigned: 'assigned',
  assignment: 'assigned',
  rate: 'rated',
  rated: 'rated',
  rating: 'rated',
};

function eventFromName(name: string): DialogEvent | undefined {
  const words = name
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z]+/);
  for (const word of words) {
    const event = EVENT_WORDS[word];
    if (event) return event;
  }
  return undefined;
}

/**
 * Which event: an explicit event field if any (its name is not documented: `dialog_closed`,
 * `dialogRated`, `ASSIGNED` all read), else "closed", the documented default delivery. A bare
 * `type` is only a hint: it may describe something else (the payload, the channel).
 */
export function eventOf(envelope: WebhookEnvelope): DialogEvent | { unknown: string } {
  const named = text(first(envelope.event, envelope.eventType, envelope.event_type));
  if (named !== undefined) return eventFromName(named) ?? { unknown: named };
  const hint = text(envelope.type);
  return (hint ? eventFromName(hint) : undefined) ?? 'closed';
}

export function normalizeRating(
  input: RatingInput | null | undefined,
  siblingComment?: string | null,
): Rating | undefined {
  if (input === null || input === undefined) return undefined;
  const object = typeof input === 'object' ? input : undefined;
  const rawValue = object ? object.value : input;
  const value =
    typeof rawValue === 'number'
      ? rawValue
      : typeof rawValue === 'string' && /^\d+$/.test(rawValue.trim())
        ? Number(rawValue)
        : undefined;
  if (value === undefined || !Number.isInteger(value)) return undefined;
  const type = object?.type?.toLowerCase().replace(/[^a-z]/g, '');
  let scale: Rating['scale'] | undefined;
  if (type === 'doublepoint') scale = 'doublePoint';
  else if (type === 'fivepoint') scale = 'fivePoint';
  // Without a type only the unambiguous values tell the scale (1 exists on both).
  else if (type === undefined) scale = value === 0 ? 'doublePoint' : value >= 2 ? 'fivePoint' : undefined;
  if (scale === undefined) return undefined;
  if (scale === 'doublePoint' ? value !== 0 && value !== 1 : value < 1 || value > 5) return undefined;
  const comment = text(object?.comment) ?? text(siblingComment);
  return { scale, value, ...(comment ? { comment } : {}) };
}

export function ratingLabel(rating: Rating): string {
  const score =
    rating.scale === 'fivePoint' ? `${rating.value}/5` : rating.value === 1 ? 'positive' : 'negative';
  return rating.comment ? `${score} ("${rating.comment.slice(0, 80)}")` : score;
}

function agentOf(employee: EmployeeInput, directory: readonly AgentConfig[]): AgentRef | undefined {
  const email =
    text(employee.email)?.toLowerCase() ??
    (text(employee.login)?.includes('@') ? text(employee.login)?.toLowerCase() : undefined);
  const name = text(employee.name);
  const id = employee.id ?? undefined;
  // LiveTex shows names; the company's directory knows e-mails, which CRMs route on.
  const known =
    (email ? directory.find((agent) => agent.email === email) : undefined) ??
    (name ? directory.find((agent) => agent.name.toLowerCase() === name.toLowerCase()) : undefined);
  // Built field by field (src/extend.ts on why): this runs for every operator of every dialog.
  const ref: AgentRef = {};
  if (id) ref.id = id;
  const refName = name ?? known?.name;
  if (refName) ref.name = refName;
  const refEmail = email ?? known?.email;
  if (refEmail) ref.email = refEmail;
  return Object.keys(ref).length > 0 ? ref : undefined;
}

const AUTHOR_TYPES: Record<string, TranscriptMessage['author']['type']> = {
  visitor: 'visitor',
  client: 'visitor',
  discourser: 'visitor',
  user: 'visitor',
  employee: 'agent',
  operator: 'agent',
  agent: 'agent',
  bot: 'bot',
  system: 'system',
};

function messageOf(message: MessageInput): TranscriptMessage | undefined {
  const body = first(message.text, message.message, message.content);
  if (body === undefined) return undefined;
  const author = first(message.author, message.creator, message.from);
  const rawType = typeof author === 'string' ? author : text(author?.type);
  const name = typeof author === 'object' ? text(author.name) : undefined;
  return {
    at: isoOf(first(message.createdAt, message.created_at, message.time, message.timestamp)) ?? null,
    author: { type: AUTHOR_TYPES[rawType?.toLowerCase() ?? ''] ?? 'unknown', ...(name ? { name } : {}) },
    text: body,
  };
}

const PERSON_KEYS = ['personId', 'person_id', 'customVisitorToken', 'custom_visitor_token'];

function clientOf(discourser: DiscourserInput | null | undefined): ClientInfo {
  // Null-prototype attributes: `__proto__`, `constructor` and the like are ordinary names.
  const client: ClientInfo = { personIds: [], emails: [], phones: [], attributes: Object.create(null) };
  if (!discourser) return client;
  const name = text(discourser.name);
  if (name) client.name = name;
  const attributes: Record<string, unknown> = discourser.attributes ?? Object.create(null);
  const personValues = [
    discourser.personId,
    discourser.person_id,
    discourser.customVisitorToken,
    discourser.custom_visitor_token,
    ...PERSON_KEYS.map((key) => {
      const value = attributes[key];
      // A number JSON.parse rounded (past 2^53) or 1e400 would be another customer's id: none.
      return typeof value === 'string' || exactNumber(value) ? String(value) : undefined;
    }),
  ];
  for (const value of personValues) {
    const trimmed = text(value ?? undefined);
    if (trimmed && !client.personIds.includes(trimmed)) client.personIds.push(trimmed);
  }
  const visitorToken = text(first(discourser.visitorToken, discourser.visitor_token));
  if (visitorToken) client.visitorToken = visitorToken;
  if (discourser.id) client.clientId = discourser.id;
  const email = text(discourser.email);
  if (email) client.emails.push(email);
  const phone = text(discourser.phone);
  if (phone) client.phones.push(phone);
  for (const entry of discourser.contacts ?? []) {
    const value = text(entry.value);
    const type = entry.type?.toLowerCase() ?? '';
    if (!value) continue;
    if (type.includes('mail')) client.emails.push(value);
    else if (type.includes('phone') || type.includes('tel')) client.phones.push(value);
  }
  for (const [key, value] of Object.entries(attributes)) {
    if (PERSON_KEYS.includes(key) || Object.keys(client.attributes).length >= 50) continue;
    // A number of 1e400 (Infinity) is left out, not the whole event (an observation refuses it).
    if (
      typeof value === 'string' ||
      (typeof value === 'number' && Number.isFinite(value)) ||
      typeof value === 'boolean'
    ) {
      client.attributes[key] = typeof value === 'string' ? cutText(value, 1024) : value;
    }
  }
  return client;
}

function dialogIdOf(envelope: WebhookEnvelope, conversation: ConversationInput | undefined) {
  const conversationId = first(
    conversation?.id,
    conversation?.conversationId,
    conversation?.conversation_id,
    envelope.conversationId,
  );
  const explicit = first(
    conversation?.dialogId,
    conversation?.dialog_id,
    conversation?.chatId,
    conversation?.chat_id,
    envelope.dialogId,
  );
  const ordinal = first(conversation?.dialogNumber, conversation?.dialog_number);
  const dialogId =
    explicit ?? (conversationId ? (ordinal ? `${conversationId}-${ordinal}` : conversationId) : undefined);
  return { dialogId, conversationId };
}

/** The webhook body (already JSON) → one dialog record, or why it cannot be used. */
export function parseWebhook(body: unknown, directory: readonly AgentConfig[]): ParsedWebhook {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { kind: 'unhandled', reason: 'the body is not a JSON object' };
  }
  const parsed = webhookEnvelopeSchema.safeParse(body);
  // Every field is tolerant, so this only fails on a shape we cannot read at all.
  if (!parsed.success)
    return { kind: 'unhandled', reason: `unreadable envelope: ${parsed.error.message.slice(0, 300)}` };
  const envelope = parsed.data;
  const event = eventOf(envelope);
  if (typeof event === 'object') return { kind: 'unhandled', reason: `unknown event "${event.unknown}"` };
  const conversation = envelope.conversation ?? envelope.Conversation ?? undefined;
  if (!conversation && !envelope.discourser && !envelope.dialogId && !envelope.conversationId) {
    return { kind: 'unhandled', reason: 'neither Conversation/conversation, discourser nor a dialog id' };
  }
  const { dialogId, conversationId } = dialogIdOf(envelope, conversation);
  const employees = envelope.employee
    ? Array.isArray(envelope.employee)
      ? envelope.employee
      : [envelope.employee]
    : [];
  const agents = employees
    .slice(0, AGENTS_PER_PAYLOAD)
    .map((employee) => agentOf(employee, directory))
    .filter((agent) => agent !== undefined);
  const rating = normalizeRating(
    first(envelope.rate, envelope.rating, conversation?.rate, conversation?.rating),
    first(envelope.comment, conversation?.comment),
  );
  const messages = [...(conversation?.messages ?? []), ...(envelope.messages ?? [])]
    .map(messageOf)
    .filter((message) => message !== undefined);
  const topic = text(first(conversation?.topic, conversation?.subject));
  const startedAt = isoOf(
    first(
      conversation?.startedAt,
      conversation?.started_at,
      conversation?.createdAt,
      conversation?.created_at,
    ),
  );
  const endedAt = isoOf(
    first(
      conversation?.closedAt,
      conversation?.closed_at,
      conversation?.endedAt,
      conversation?.ended_at,
      conversation?.finishedAt,
    ),
  );
  const eventAt = isoOf(first(envelope.time, envelope.timestamp));
  const record: DialogRecord = {
    event,
    ...(dialogId ? { dialogId } : {}),
    ...(conversationId ? { conversationId } : {}),
    ...(topic ? { topic } : {}),
    ...(startedAt ? { startedAt } : {}),
    ...(endedAt ? { endedAt } : {}),
    ...(eventAt ? { eventAt } : {}),
    agents,
    ...(employees.length > AGENTS_PER_PAYLOAD
      ? { agentsLeftOut: employees.length - AGENTS_PER_PAYLOAD }
      : {}),
    client: clientOf(envelope.discourser),
    ...(rating ? { rating } : {}),
    messages,
  };
  return { kind: 'dialog', record };
}

// ---------------------------------------------------------------------------------------------
// Dialog record → observations

/** The client's identifiers; channel-scoped kinds carry the channel (DESIGN §7). */
export function identifiersOf(client: ClientInfo, channelId: string): Identifier[] {
  return [
    // personId / customVisitorToken are set by the company's site or app (issue 10 item 5):
    // verified. E-mails and phones come from the visitor's chat form: visitor-typed.
    ...client.personIds.map((value) => ({ kind: 'person', value, provenance: 'verified' as const })),
    ...client.emails.map((value) => ({ kind: 'email', value, provenance: 'visitor' as const })),
    ...client.phones.map((value) => ({ kind: 'phone', value, provenance: 'visitor' as const })),
    ...(client.visitorToken ? [{ kind: 'visitor', value: client.visitorToken, channelId }] : []),
    ...(client.clientId ? [{ kind: 'client', value: client.clientId, channelId }] : []),
  ];
}

/**
 * When a payload names no client (a rating delivered alone), the dialog itself identifies the
 * contact within the channel, so the record is kept rather than dropped.
 */
export function dialogIdentifier(dialogKey: string, channelId: string): Identifier {
  // An identifier holds at most 512 characters; a dialog id with its ordinal may be longer.
  return { kind: 'dialog', value: dialogKey.length <= 512 ? dialogKey : keyPart(dialogKey), channelId };
}

export function hashOf(value: string): string {
  return digest(value, 32);
}

/** What tells one rating from another in its key: the scale and score as is, a comment as a digest. */
export function ratingKey(rating: Rating): string {
  const score = `${rating.scale === 'fivePoint' ? 'f' : 'd'}${rating.value}`;
  return rating.comment ? `${score}:${hashOf(rating.comment)}` : score;
}

/**
 * A dialog's rating as last recorded (kept beside the dialog memory, webhook.ts): `k` its
 * ratingKey, `at` the time it was given (the event's own time, else its arrival), `n` how many
 * ratings the dialog has had recorded.
 */
export interface RatedBefore {
  k: string;
  at: string;
  n: number;
}

/**
 * What tells a new rating event from a redelivery (README, rated). Nothing LiveTex documents: no
 * event id, no delivery rules. Our reading, kept here: (1) a redelivery repeats the payload as it
 * was, its own `time` / `timestamp` included, while a new rating event is sent when the visitor
 * rates, with that moment's time; so with a time the rating's key is the rating and that time. (2)
 * The rating the dialog already has (the one last recorded) stated again — the close that carries
 * it and its own rated event, either first, or any redelivery once recorded — is no news. (3)
 * Without a time, the key counts the dialog's recorded ratings instead, so 3 → 5 → 3 is three
 * ratings; the price: a redelivery of an older rating arriving after a newer one was recorded is
 * taken for the visitor changing back. A close's rating has no time of its own: it is keyed as
 * (3).
 */
function ratingEventKey(record: DialogRecord, rating: Rating, before: RatedBefore | undefined): string {
  const own = record.event === 'rated' ? record.eventAt : undefined;
  if (own !== undefined) return `${ratingKey(rating)}:${own}`;
  // A dialog's first rating keeps the key versions before this gave it (a redelivery across the
  // upgrade is still a repeat).
  const count = before?.n ?? 0;
  return count === 0 ? ratingKey(rating) : `${ratingKey(rating)}:#${count}`;
}

/** When the rating an event carries was given, as far as the event says (else its arrival). */
function ratedAt(record: DialogRecord, receivedAt: string): string {
  return (record.event === 'rated' ? record.eventAt : (record.endedAt ?? record.eventAt)) ?? receivedAt;
}

/**
 * Whether this event's rating is news (see ratingEventKey): not the rating the dialog already
 * has, nor a close's rating older than it (a close redelivered after the visitor rated again
 * carries the rating the dialog had then).
 */
export function ratingIsNews(
  record: DialogRecord,
  rating: Rating,
  before: RatedBefore | undefined,
  receivedAt: string,
): boolean {
  if (before === undefined) return true;
  if (before.k === ratingKey(rating)) return false;
  return record.event === 'rated' || ratedAt(record, receivedAt) >= before.at;
}

/** The dialog's rating once this event's is recorded (webhook.ts keeps it); none when it is no news. */
export function ratedAfter(
  record: DialogRecord,
  before: RatedBefore | undefined,
  receivedAt: Date,
): RatedBefore | undefined {
  const rating = record.rating;
  const arrived = receivedAt.toISOString();
  if (!rating || !ratingIsNews(record, rating, before, arrived)) return undefined;
  const at = ratedAt(record, arrived);
  // An older rating delivered late is recorded (its own key) but does not replace the newer one.
  if (before && before.at > at) return { ...before, n: before.n + 1 };
  return { k: ratingKey(rating), at, n: (before?.n ?? 0) + 1 };
}

/** The dialog's key: its id, or (with no id at all) a hash of the exact payload. */
export function dialogKeyOf(record: DialogRecord, rawBody: Buffer): string {
  return record.dialogId ?? `body-${hashOf(rawBody.toString('utf8'))}`;
}

export interface ObservationInput {
  channelId: string;
  record: DialogRecord;
  dialogKey: string;
  identifiers: Identifier[];
  /** The payload as received, kept in the timeline entry for later remapping. */
  raw: unknown;
  receivedAt: Date;
  /** The dialog's rating as last recorded, if the dialog memory has it. */
  ratedBefore?: RatedBefore;
}

const agentLabel = (agent: AgentRef) => agent.name ?? agent.email ?? agent.id;

/**
 * The contact's responsible agent as a dialog event states it (README, Responsible agent): LiveTex
 * has no client-card responsible, so a dialog's operator is the closest it says, and only when the
 * payload names exactly one. `employee[]` is "the employees who took part" and its order is not
 * documented, so with several operators neither the first nor the last is known to be the one now
 * responsible: the same for an assignment (a transfer may list both) as for a close. LiveTex sends
 * no unassignment, so nothing here clears it.
 */
function responsibleOf(record: DialogRecord): AgentRef | undefined {
  return record.agents.length === 1 ? record.agents[0] : undefined;
}

/**
 * One observation per (dialog, event); for a rating, per rating event (ratingEventKey). A close
 * that carries a rating also gives the "rated" observation, unless the dialog has that rating
 * already, so it is recorded once whichever way it comes. A rating can change (the visitor sends a
 * rating event, and nothing in LiveTex's documentation makes the first one final): 3 then 5 is
 * two ratings, and 3 again after them a third.
 */
export function observationsOf(input: ObservationInput): Observation[] {
  const { record, channelId, dialogKey } = input;
  const receivedAt = input.receivedAt.toISOString();
  const dialogRef = record.dialogId ? `Dialog ${record.dialogId}` : 'Dialog';
  const context = {
    conversationId: dialogKey,
    ...(record.conversationId ? { livetexConversationId: record.conversationId } : {}),
    ...(record.topic ? { topic: record.topic } : {}),
  };
  const base = {
    channelId,
    vendor: VENDOR,
    identifiers: input.identifiers,
    names: record.client.name ? [record.client.name] : [],
    attributes: Object.fromEntries(
      Object.entries(record.client.attributes).map(([key, value]) => [key, { value }]),
    ),
  };
  const agentNames = record.agents.map(agentLabel).filter((name) => name !== undefined);
  // A long dialog id (up to 512 characters, and its ordinal) is digested in the key (keyPart).
  const keyOf = (event: string, extra = '') =>
    `${VENDOR}:${channelId}:${keyPart(dialogKey)}:${event}${extra}`;
  const observations: Observation[] = [];

  if (record.event === 'closed') {
    const at = record.endedAt ?? record.eventAt ?? receivedAt;
    const data = extend(context, {
      ...(record.startedAt ? { startedAt: record.startedAt } : {}),
      endedAt: at,
      agents: record.agents,
      messages: record.messages,
      ...(record.rating ? { rating: record.rating } : {}),
    });
    const entry: TimelineEntryInput = {
      key: 'finished',
      at,
      type: 'conversation.finished',
      summary: `${dialogRef} closed${agentNames.length > 0 ? ` by ${agentNames.join(', ')}` : ''}${
        record.topic ? `: ${record.topic}` : ''
      }${record.messages.length > 0 ? ` (${record.messages.length} message${record.messages.length === 1 ? '' : 's'})` : ''}`,
      data: extend(data, { raw: input.raw }),
    };
    observations.push({
      ...base,
      at,
      idempotencyKey: keyOf('closed'),
      ...(responsibleOf(record) ? { responsibleAgent: responsibleOf(record) } : {}),
      timeline: [entry],
      events: [{ type: 'conversation.finished', key: 'finished', data }],
    });
  }

  if (record.event === 'assigned') {
    const at = record.eventAt ?? receivedAt;
    const data = extend(context, { agents: record.agents });
    // A reassignment to someone else is news; the same assignment delivered twice is not.
    const who = record.agents
      .map((agent) => agent.id ?? agent.email ?? agent.name ?? '')
      .sort()
      .join(',');
    observations.push({
      ...base,
      at,
      idempotencyKey: keyOf('assigned', who ? `:${hashOf(who)}` : ''),
      // The dialog's operators as they now are: handed back to an earlier operator later is news
      // (README, Idempotency), the same assignment within LiveTex's retries is not.
      snapshot: true,
      ...(responsibleOf(record) ? { responsibleAgent: responsibleOf(record) } : {}),
      timeline: [
        {
          key: 'assigned',
          at,
          type: 'conversation.assigned',
          summary: `${dialogRef} assigned to ${agentNames.join(', ') || 'an operator'}`,
          data: extend(data, { raw: input.raw }),
        },
      ],
      events: [{ type: 'conversation.assigned', key: 'assigned', data }],
    });
  }

  if (
    record.rating &&
    (record.event === 'rated' || record.event === 'closed') &&
    ratingIsNews(record, record.rating, input.ratedBefore, receivedAt)
  ) {
    const at =
      record.event === 'rated'
        ? (record.eventAt ?? receivedAt)
        : (record.endedAt ?? record.eventAt ?? receivedAt);
    const data = extend(context, { rating: record.rating });
    observations.push({
      ...base,
      at,
      idempotencyKey: keyOf('rated', `:${ratingEventKey(record, record.rating, input.ratedBefore)}`),
      // The same rating in the close and in its own rated event, delivered together: each read
      // the dialog's rating before the other recorded its own, so each took itself for news,
      // under keys of its own (the close's count, the rated event's time), and the rating was
      // recorded twice. Both also name the place this rating takes among the dialog's ratings
      // (the same for both): the engine records one, and the other finds it and is a repeat.
      sharedIdempotencyKeys: [
        keyOf('rated', `:slot:${ratingKey(record.rating)}:#${input.ratedBefore?.n ?? 0}`),
      ],
      timeline: [
        {
          key: 'rated',
          at,
          type: 'conversation.rated',
          summary: `${dialogRef} rated ${ratingLabel(record.rating)}`,
          data: extend(data, { raw: input.raw }),
        },
      ],
      events: [{ type: 'conversation.rated', key: 'rated', data }],
    });
  }
  return observations;
}

// ---------------------------------------------------------------------------------------------
// Contact → lookup answer

/**
 * The card's facts as LiveTex's operator is shown them. Their labels and values come from every
 * channel (other vendors' attributes, attribute sources), as sent: they are cleaned as a shown
 * name is (cleanDisplayText: no control characters, no bidi embedding, override or isolate that
 * would turn the text after it around, a lone surrogate as U+FFFD) and cut to the answer's limits
 * (codec.ts) without cutting a character in two.
 */
export function attributesOf(answer: FactAnswer): LookupAttribute[] {
  return answer.facts.map((fact) => ({
    key: fact.key,
    label: cutText(cleanDisplayText(fact.label) ?? '', ANSWER_LIMITS.label),
    value: cutText(cleanDisplayText(fact.value) ?? '', ANSWER_LIMITS.value),
    type: fact.type,
    ...(fact.verified === false ? { verified: false as const } : {}),
  }));
}

export function foundAnswer(requestId: string, contact: Contact, facts: FactAnswer): LookupAnswer {
  const crmLink = facts.crmLink ?? contact.crmLink ?? undefined;
  const unverified = unverifiedValues(contact);
  const notVerified = [...contact.emails, ...contact.phones].filter((value) => unverified.has(value));
  return {
    requestId,
    found: true,
    contact: {
      id: contact.id,
      name: contact.name,
      emails: contact.emails,
      phones: contact.phones,
      labels: contact.labels,
      ...(notVerified.length > 0 ? { notVerified } : {}),
    },
    attributes: attributesOf(facts),
    ...(crmLink ? { crmLink } : {}),
  };
}

export function notFoundAnswer(requestId: string): LookupAnswer {
  return { requestId, found: false, attributes: [] };
}
