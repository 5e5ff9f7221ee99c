import { isAgentLinkUrl } from '../../src/console/links.js';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type {
  AgentRef,
  AttributeValue,
  EventInput,
  Identifier,
  Observation,
  TimelineEntryInput,
  TranscriptAuthor,
  TranscriptMessage,
} from '../../src/contacts/types.js';
import { extend } from '../../src/extend.js';
import {
  canonicalJson,
  digest,
  exactNumber,
  isoTime,
  isRecord,
  keyPart,
  text,
} from '../../src/intake/wire.js';
import { isoFromMs } from '../../src/isotime.js';
import { safeLink, truncate } from './codec.js';
import type { JivoAgent, JivochatSettings, JivoEnvelope, JivoEventName } from './schemas.js';

/**
 * chat_assigned's `assign_to` is the crm_link we answered to chat_accepted (§5.4). With
 * `reply.crmLink: "{consoleUrl}"` that is the bridge's own signed, expiring console link: it is no
 * CRM card, so it must not become (and replace) the contact's CRM link.
 */
function assignedCrmLink(e: JivoEnvelope): string | undefined {
  const link = safeLink(e.assign_to);
  return link && !isAgentLinkUrl(link) ? link : undefined;
}

/**
 * A Jivo event -> one Observation for ContactService.observe (DESIGN §7). Pure: no I/O, the
 * time of receipt is passed in (Jivo's events carry no time of their own, except messages).
 */

export const VENDOR = 'jivochat';

/** Attribute values are shown to agents as facts: long ones are cut so the panel stays readable. */
const ATTRIBUTE_MAX = 300;
const SUMMARY_TEXT_MAX = 120;
const IDENTIFIER_MAX = 512;

export interface MapInput {
  eventName: JivoEventName;
  envelope: JivoEnvelope;
  /** The payload as Jivo sent it (unknown fields included): kept on the main timeline entry. */
  raw: Record<string, unknown>;
  channelId: string;
  settings: JivochatSettings;
  receivedAt: Date;
  /** The body had the docs' invalid `attributes: [...]` form and was read as an object. */
  repaired?: boolean;
}

export type MapResult =
  | { kind: 'observation'; observation: Observation }
  /** Nothing in the payload identifies anyone: the caller journals it instead. */
  | { kind: 'unattached'; reason: string };

// ---------------------------------------------------------------------------------------------
// Small helpers

/** The same data (keys in any order) always hashes the same: 32 hex digits, as stored keys have. */
export function hashOf(value: unknown): string {
  return digest(canonicalJson(value), 32, 'hex');
}

/** The person id lives in whichever field `personIdFrom` names, possibly a dotted path. */
export function readPath(payload: Record<string, unknown>, path: string): string | undefined {
  let current: unknown = payload;
  // The common path is one key (user_token): read without splitting it (an array per call, and
  // this runs once or twice per webhook).
  if (!path.includes('.')) current = isRecord(payload) ? payload[path] : undefined;
  else
    for (const part of path.split('.')) {
      if (!isRecord(current)) return undefined;
      current = current[part];
    }
  // A number JSON.parse rounded (past 2^53) would be another customer's id: none (exactNumber).
  if (exactNumber(current)) return String(current);
  if (typeof current === 'string') return text(current);
  return undefined;
}

function agentRef(agent: JivoAgent | null | undefined): AgentRef | undefined {
  if (!agent) return undefined;
  const ref: AgentRef = {};
  if (agent.id) ref.id = agent.id;
  const name = text(agent.name);
  if (name) ref.name = name;
  const email = text(agent.email);
  if (email) ref.email = email.toLowerCase();
  return Object.keys(ref).length > 0 ? ref : undefined;
}

/**
 * Several vendor values as one attribute, `a, b, c`. Each is cleaned as a shown name is
 * (cleanDisplayText) before the join: the console isolates a whole value (<bdi>), so one bidi
 * override in a tag would otherwise turn every tag after it around, and a line break would split
 * the list. Undefined when none is left.
 */
function shownList(values: readonly (string | undefined)[]): string | undefined {
  // One pass, no intermediate arrays: this runs for four attributes of every webhook.
  let list: string | undefined;
  for (const value of values) {
    const shown = value === undefined ? null : cleanDisplayText(value);
    if (shown !== null) list = list === undefined ? shown : `${list}, ${shown}`;
  }
  return list;
}

/**
 * The contact's responsible agent as this event states it (README, Responsible agent; the
 * assumption is in README.md, "Confirmed vs our assumption"): the client card's `assigned_agent`
 * when it names someone; `null` (an unassignment) only from `client_updated` with an explicit
 * `assigned_agent: null`, the event Jivo sends when the card's responsible agent was changed
 * (vendors/jivochat.md §3) and which carries the card's fields as they now are. The chat events'
 * and the offline message's null is no news: Jivo's own samples send null there, and nothing
 * says it is the card's state rather than a field left empty. Absent, or a value that is no
 * agent object (the schema drops it to undefined), or an object naming nobody: undefined.
 */
export function responsibleOf(eventName: JivoEventName, e: JivoEnvelope): AgentRef | null | undefined {
  if (e.assigned_agent === null) return eventName === 'client_updated' ? null : undefined;
  return agentRef(e.assigned_agent);
}

function agentLabel(agent: AgentRef | undefined): string | undefined {
  return agent?.name ?? agent?.email ?? (agent?.id ? `agent ${agent.id}` : undefined);
}

// ---------------------------------------------------------------------------------------------
// Identifiers, names, attributes

function identifiersOf(input: MapInput): Identifier[] {
  const { envelope, channelId } = input;
  const out: Identifier[] = [];
  /** `scoped`: vendor-local, or the provenance of a global kind (issue 10 item 5). */
  const add = (kind: string, value: string | undefined, scope: 'local' | 'verified' | 'visitor') => {
    // Over-long values are not ids anyone types; the engine would refuse them.
    if (!value || value.length > IDENTIFIER_MAX) return;
    // The first of a kind and value wins. At most six here: a scan, not a Set and a key string each.
    for (const known of out) if (known.kind === kind && known.value === value) return;
    out.push(scope === 'local' ? { kind, value, channelId } : { kind, value, provenance: scope });
  };
  // Jivo sends null when the site never called setUserToken; the engine's blocklist drops the
  // junk values ("null", "0", ...) that sites put there anyway. The field personIdFrom names
  // (user_token by default) is set by the company's own site code (jivo_api.setUserToken), not
  // typed by the visitor: verified.
  add('person', readPath(input.raw, input.settings.personIdFrom), 'verified');
  // Name, e-mail and phone come from the chat's contact form or setContactInfo, which the visitor
  // fills in (or the site copies from what the visitor typed): visitor-typed.
  add('email', text(envelope.visitor?.email), 'visitor');
  add('phone', text(envelope.visitor?.phone), 'visitor');
  // A call's `phone` is the client's number (§4.5), so it identifies them as well. Caller ids
  // can be set by the caller: visitor-typed.
  add('phone', text(envelope.call?.phone), 'visitor');
  // Vendor-local: a visitor number or client id means nothing outside this channel (DESIGN §7).
  add('visitor', envelope.visitor?.number ?? undefined, 'local');
  add('client', envelope.client_id ?? undefined, 'local');
  return out;
}

function attributesOf(input: MapInput): Record<string, AttributeValue> {
  const { envelope } = input;
  const out: Record<string, AttributeValue> = {};
  // This runs for every webhook: built field by field and in plain loops, without the
  // conditional spread, map/filter chains and the Set it had (an object or array each, src/extend.ts).
  const put = (key: string, label: string, value: string | undefined, type?: AttributeValue['type']) => {
    if (value === undefined || value === '') return;
    const attribute: AttributeValue = { value: truncate(value, ATTRIBUTE_MAX), label };
    if (type) attribute.type = type;
    out[key] = attribute;
  };

  put('description', 'Description', text(envelope.visitor?.description));
  put('organization', 'Organization', text(envelope.organization?.name));
  put('status', 'Client status', text(envelope.status?.title));
  const tags: (string | undefined)[] = [];
  for (const tag of envelope.tags ?? []) tags.push(text(tag.title));
  put('tags', 'Tags', shownList(tags));
  put('department', 'Department', text(envelope.department?.name));
  put('topic', 'Topic', text(envelope.topic?.title));

  const agentNames: string[] = [];
  const addAgent = (agent: JivoAgent) => {
    const name = agentLabel(agentRef(agent));
    if (name !== undefined) agentNames.push(name);
  };
  if (envelope.agent) addAgent(envelope.agent);
  else for (const agent of envelope.agents ?? []) addAgent(agent);
  put('agent', agentNames.length > 1 ? 'Agents' : 'Agent', shownList(agentNames));

  const session = envelope.session;
  const utmJson: string[] = [];
  const utm = session?.utm_json;
  if (utm)
    for (const key of Object.keys(utm)) {
      const value = utm[key];
      const shown = typeof value === 'string' ? text(value) : undefined;
      if (shown !== undefined) utmJson.push(`${key}=${shown}`);
    }
  // utm_json is structured; the `a=b|c=d` string is the fallback (§9.7).
  put('utm', 'UTM', shownList(utmJson.length > 0 ? utmJson : (text(session?.utm)?.split('|') ?? [])));
  const geo = session?.geoip;
  // City, region, country, each once (a city-state names itself twice), in that order.
  const city = text(geo?.city);
  let region = text(geo?.region);
  if (region === city) region = undefined;
  let country = text(geo?.country);
  if (country === city || country === region) country = undefined;
  put('location', 'Location', shownList([city, region, country]));
  const pageUrl = text(envelope.page?.url);
  put('page', 'Page', pageUrl, safeLink(pageUrl) ? 'url' : undefined);

  const chats = envelope.visitor?.chats_count;
  if (typeof chats === 'number' && Number.isFinite(chats)) {
    out.chatsCount = { value: chats, label: 'JivoChat chats', type: 'number' };
  }

  // Client attributes keep Jivo's own keys (set under «Настройки атрибутов»), namespaced so an
  // attribute called "status" cannot overwrite the client status above. Only events that carry
  // them pay for the walk (it made an object and an array on every other webhook).
  const clientAttributes = envelope.attributes;
  if (clientAttributes)
    for (const key of Object.keys(clientAttributes)) {
      const value = clientAttributes[key];
      if (value === null || value === '' || value === undefined) continue;
      if (typeof value === 'number' || typeof value === 'boolean') {
        // 1e400 (Infinity) is no value to keep; the other attributes and the event are.
        if (typeof value === 'number' && !Number.isFinite(value)) continue;
        out[`client.${key}`] = { value, label: key, type: typeof value === 'number' ? 'number' : 'boolean' };
      } else {
        put(`client.${key}`, key, text(value), safeLink(value) ? 'url' : undefined);
      }
    }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Idempotency

/**
 * Events that restate the client card as it now is (its data is their key, idempotencyKeysOf):
 * the same card again is Jivo's retry only within its retries, and later a card that went back
 * to what it was (responsible agent Dmitry → Irina → Dmitry, a status or a tag set and unset).
 * Their keys are kept for identity.snapshotDedupeSeconds instead of dedupeTtlSeconds
 * (Observation.snapshot; README, Idempotency).
 */
const SNAPSHOT_EVENTS: ReadonlySet<JivoEventName> = new Set([
  'chat_updated',
  'client_updated',
  'client_attribute_updated',
]);

/**
 * The dedupe key (DESIGN §7): the event, the chat, and what distinguishes one delivery of that
 * event from the next legitimate one. A redelivery gives the same key; a real change a new one.
 */
export function idempotencyKeyOf(input: MapInput): string {
  return idempotencyKeysOf(input).key;
}

/**
 * The dedupe key, and the key a version before b168a00 gave the same event (the widget not in
 * it), when that one differs: an event such a version recorded and Jivo sends again after the
 * upgrade (its answer timed out), or that its worker recorded but had not trimmed from the
 * deferred list when it stopped, must be found under the key it was recorded with (the engine
 * looks for it while such keys can live: src/contacts/engine.ts, formerKeysUntil).
 */
export function idempotencyKeysOf(input: MapInput): { key: string; former?: string } {
  const { envelope: e, eventName, raw } = input;
  const chat = e.chat_id ?? '-';
  const clientData = () =>
    hashOf({
      visitor: {
        name: e.visitor?.name,
        email: e.visitor?.email,
        phone: e.visitor?.phone,
        description: e.visitor?.description,
      },
      person: readPath(raw, input.settings.personIdFrom),
      organization: e.organization?.id ?? e.organization?.name,
      status: e.status?.id ?? e.status?.title,
      tags: (e.tags ?? []).map((tag) => tag.id ?? tag.title),
      responsible: e.assigned_agent?.id ?? e.assigned_agent?.email,
    });
  let parts: string[];
  switch (eventName) {
    case 'call_event':
      // Fires once per status change of a call (§9.14): each status is its own event.
      parts = [chat, hashOf([e.call?.type, e.call?.phone, e.call?.status, e.call?.reason])];
      break;
    case 'chat_accepted':
      // A transfer to another agent is a new acceptance.
      parts = [chat, e.agent?.id ?? '-'];
      break;
    case 'chat_updated':
      parts = [chat, clientData()];
      break;
    case 'chat_assigned':
      parts = [chat, hashOf([e.assign_to, e.agent?.id])];
      break;
    case 'chat_finished':
      parts = [chat];
      break;
    case 'offline_message':
      parts = [e.offline_message_id ?? hashOf([chat, e.message, e.visitor?.number, e.visitor?.email])];
      break;
    case 'client_updated':
      parts = [e.client_id ?? e.visitor?.number ?? '-', clientData()];
      break;
    case 'client_attribute_updated':
      parts = [e.client_id ?? '-', hashOf(e.attributes ?? {})];
      break;
  }
  // Without a chat or client id (the first part) there is nothing stable to key on but the payload
  // itself: the other parts (an agent id, the attributes) are shared by different people's events,
  // so keying on them made a second visitor's chat_accepted a "repeat" answered with the first's
  // contact. A redelivery is the same payload, so it still has the same key.
  if (parts[0] === '-') parts = [hashOf(raw)];
  // A vendor id longer than the kit's KEY_PART_MAX is digested (keyPart); shorter ones, and the
  // hashes, are kept, so keys made before are unchanged, as is the rule below for a long key.
  // The parts are made once for both keys below (each was kept and joined once per key).
  const prefix = `${VENDOR}:${input.channelId}:${eventName}:`;
  const kept = parts.map(keyPart);
  const keyOf = (of: string[], joined: string) => {
    const key = `${prefix}${joined}`;
    return key.length <= 400 ? key : `${prefix}${hashOf(of)}`;
  };
  const joined = kept.join(':');
  // Without `widgetId` a channel takes every widget whose webhook URL it is, and chat and client
  // ids are not known to be unique across widgets (or Jivo accounts): the widget is part of the
  // key then, or a second widget's chat that reused an id was taken for a redelivery of the first
  // and answered with the first visitor's data. With `widgetId` set every payload accepted has
  // that widget, and the keys stay as they were.
  if (input.settings.widgetId === undefined && typeof e.widget_id === 'string') {
    const widget = keyPart(e.widget_id);
    return { key: keyOf([...kept, widget], `${joined}:${widget}`), former: keyOf(kept, joined) };
  }
  return { key: keyOf(kept, joined) };
}

// ---------------------------------------------------------------------------------------------
// Timeline and outbound events

/** "visitor" and "agent" per the docs; bots and system notes when they come; anything else unknown. */
function authorType(type: string | undefined): TranscriptAuthor['type'] {
  return type === 'visitor' || type === 'agent' || type === 'bot' || type === 'system' ? type : 'unknown';
}

/** The chat's messages in the one transcript shape (src/contacts/types.ts). */
function transcriptOf(envelope: JivoEnvelope): TranscriptMessage[] {
  const agents = new Map<string, AgentRef>();
  for (const agent of envelope.agents ?? []) {
    const ref = agentRef(agent);
    if (ref?.id) agents.set(ref.id, ref);
  }
  const visitorName = text(envelope.visitor?.name);
  return (envelope.chat?.messages ?? []).map((message) => {
    const type = authorType(text(message.type));
    let author: TranscriptAuthor = { type };
    if (type === 'agent') {
      // agent_id is a number while agents[].id is a string (§9.1): both are strings by now.
      const known = message.agent_id ? agents.get(message.agent_id) : undefined;
      // Built field by field: this runs for every message (src/extend.ts on why).
      author = { type };
      if (message.agent_id) author.id = message.agent_id;
      if (known) Object.assign(author, known);
    } else if (type === 'visitor' && visitorName) {
      author = { type, name: visitorName };
    }
    return { at: isoTime(message.timestamp) ?? null, author, text: message.message ?? '' };
  });
}

interface ConversationContext {
  conversationId?: string;
  agent?: AgentRef;
  department?: string;
  topic?: string;
  page?: { url: string; title: string | undefined };
}

/** Built field by field (conditional spreads cost an object each, on every webhook). */
function conversationContext(e: JivoEnvelope): ConversationContext {
  const context: ConversationContext = {};
  if (e.chat_id) context.conversationId = e.chat_id;
  const agent = agentRef(e.agent);
  if (agent) context.agent = agent;
  const department = text(e.department?.name);
  if (department) context.department = department;
  const topic = text(e.topic?.title);
  if (topic) context.topic = topic;
  const url = text(e.page?.url);
  if (url) context.page = { url, title: text(e.page?.title) };
  return context;
}

/**
 * `extend(context, { raw })`, field by field in conversationContext's order (it sets only the
 * fields it has): the same keys in the same order, without extend's walk over both objects'
 * keys, for the one entry every chat_accepted makes.
 */
function contextWithRaw(context: ConversationContext, raw: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (context.conversationId !== undefined) out.conversationId = context.conversationId;
  if (context.agent !== undefined) out.agent = context.agent;
  if (context.department !== undefined) out.department = context.department;
  if (context.topic !== undefined) out.topic = context.topic;
  if (context.page !== undefined) out.page = context.page;
  out.raw = raw;
  return out;
}

interface Built {
  timeline: TimelineEntryInput[];
  events: EventInput[];
}

function build(input: MapInput, at: string): Built {
  const { envelope: e, eventName } = input;
  const chatRef = e.chat_id ? `Chat ${e.chat_id}` : 'Chat';
  const raw = input.repaired ? extend(input.raw, { _repairedFromInvalidJson: true }) : input.raw;
  const context = conversationContext(e);
  const agentName = agentLabel(context.agent);

  switch (eventName) {
    case 'chat_accepted': {
      const data = { ...context };
      return {
        timeline: [
          {
            key: 'accepted',
            at,
            type: 'conversation.started',
            summary: `${chatRef} accepted${agentName ? ` by ${agentName}` : ''}`,
            data: contextWithRaw(context, raw),
          },
        ],
        events: [{ type: 'conversation.started', key: 'accepted', data }],
      };
    }
    case 'chat_updated':
      return {
        timeline: [
          {
            key: 'updated',
            at,
            type: 'conversation.updated',
            summary: `${chatRef}: visitor details updated`,
            data: extend(context, { visitor: visitorData(e), raw }),
          },
        ],
        events: [],
      };
    case 'chat_assigned': {
      const crmLink = assignedCrmLink(e);
      // Our own agent link is a bearer link: it is kept in `raw` only, not sent to destinations.
      const assignTo = safeLink(e.assign_to) && !crmLink ? undefined : text(e.assign_to);
      const data = assignTo ? extend(context, { assignTo }) : { ...context };
      return {
        timeline: [
          {
            key: 'assigned',
            at,
            type: 'conversation.assigned',
            summary: `${chatRef} linked to a CRM card${agentName ? ` by ${agentName}` : ''}`,
            data: extend(data, { raw }),
          },
        ],
        events: [
          {
            type: 'conversation.assigned',
            key: 'assigned',
            data: crmLink ? extend(data, { crmLink }) : data,
          },
        ],
      };
    }
    case 'chat_finished': {
      const messages = transcriptOf(e);
      const agents = (e.agents ?? []).map(agentRef).filter((agent) => agent !== undefined);
      const rating = text(e.chat?.rate);
      const data = extend(context, {
        agents,
        messages,
        ...(rating ? { rating } : {}),
        ...(typeof e.chat?.blacklisted === 'boolean' ? { blacklisted: e.chat.blacklisted } : {}),
        ...(text(e.chat?.invitation) ? { invitation: text(e.chat?.invitation) } : {}),
        ...(text(e.plain_messages) ? { plainText: e.plain_messages } : {}),
      });
      const names = agents.map(agentLabel).filter((name) => name !== undefined);
      const built: Built = {
        timeline: [
          {
            key: 'finished',
            at,
            type: 'conversation.finished',
            summary: `${chatRef} finished: ${messages.length} message${messages.length === 1 ? '' : 's'}${
              names.length > 0 ? ` with ${names.join(', ')}` : ''
            }`,
            data: extend(data, { raw }),
          },
        ],
        events: [{ type: 'conversation.finished', key: 'finished', data }],
      };
      if (rating) {
        const rated = e.chat_id ? { conversationId: e.chat_id, rating } : { rating };
        built.timeline.push({
          key: 'rated',
          at,
          type: 'conversation.rated',
          summary: `${chatRef} rated ${rating}`,
          data: rated,
        });
        built.events.push({ type: 'conversation.rated', key: 'rated', data: rated });
      }
      return built;
    }
    case 'offline_message': {
      const message = e.message ?? '';
      const data = {
        ...context,
        ...(e.offline_message_id ? { offlineMessageId: e.offline_message_id } : {}),
        message,
        visitor: visitorData(e),
        // No agent was online: CRMs should make a task of it (DESIGN §1, tasks for offline messages).
        task: true,
      };
      return {
        timeline: [
          {
            key: 'offline',
            at,
            type: 'offline_message.received',
            summary: `Offline message: ${truncate(message.trim() || '(empty)', SUMMARY_TEXT_MAX)}`,
            data: extend(data, { raw }),
          },
        ],
        events: [{ type: 'offline_message.received', key: 'offline', data }],
      };
    }
    case 'call_event': {
      const call = e.call;
      const recordUrl = text(call?.record_url);
      const data = {
        ...context,
        call: {
          ...(text(call?.type) ? { type: text(call?.type) } : {}),
          ...(text(call?.phone) ? { phone: text(call?.phone) } : {}),
          status: text(call?.status) ?? 'unknown',
          ...(text(call?.reason) ? { reason: text(call?.reason) } : {}),
          ...(recordUrl ? { recordUrl } : {}),
        },
      };
      const detail = [text(call?.type), text(call?.phone)].filter(Boolean).join(' ');
      return {
        timeline: [
          {
            key: 'call',
            at,
            type: 'call.updated',
            summary: `Call${detail ? ` (${detail})` : ''}: ${data.call.status}${data.call.reason ? ` (${data.call.reason})` : ''}`,
            data: extend(data, { raw }),
          },
        ],
        events: [{ type: 'call.updated', key: 'call', data }],
      };
    }
    case 'client_updated': {
      const data = {
        ...(e.client_id ? { clientId: e.client_id } : {}),
        visitor: visitorData(e),
        ...(text(e.organization?.name) ? { organization: text(e.organization?.name) } : {}),
        ...(text(e.status?.title) ? { status: text(e.status?.title) } : {}),
        tags: (e.tags ?? []).map((tag) => text(tag.title)).filter((title) => title !== undefined),
        // null: the card's responsible agent was removed (responsibleOf).
        ...(responsibleOf(eventName, e) !== undefined
          ? { responsibleAgent: responsibleOf(eventName, e) }
          : {}),
      };
      return {
        timeline: [
          {
            key: 'client',
            at,
            type: 'contact.updated',
            summary: 'Client card updated in JivoChat',
            data: extend(data, { raw }),
          },
        ],
        events: [],
      };
    }
    case 'client_attribute_updated': {
      const attributes = e.attributes ?? {};
      const keys = Object.keys(attributes);
      return {
        timeline: [
          {
            key: 'attributes',
            at,
            type: 'attributes.updated',
            summary: `Client attributes updated${keys.length > 0 ? `: ${truncate(keys.join(', '), SUMMARY_TEXT_MAX)}` : ''}`,
            data: { ...(e.client_id ? { clientId: e.client_id } : {}), attributes, raw },
          },
        ],
        events: [],
      };
    }
  }
}

function visitorData(e: JivoEnvelope) {
  const v = e.visitor;
  // Built field by field (src/extend.ts on why).
  const out: { name?: string; email?: string; phone?: string; description?: string; number?: string } = {};
  const name = text(v?.name);
  if (name) out.name = name;
  const email = text(v?.email);
  if (email) out.email = email;
  const phone = text(v?.phone);
  if (phone) out.phone = phone;
  const description = text(v?.description);
  if (description) out.description = description;
  if (v?.number) out.number = v.number;
  return out;
}

const unattached = (eventName: string) => `${eventName} names no visitor, client, e-mail, phone or person id`;

/**
 * Why toObservation would find the payload unattached (nothing in it identifies anyone), or
 * undefined when it would make an observation: what toObservation decides, without building it.
 */
export function unattachedReason(input: MapInput): string | undefined {
  return identifiersOf(input).length === 0 ? unattached(input.eventName) : undefined;
}

export function toObservation(input: MapInput): MapResult {
  const identifiers = identifiersOf(input);
  if (identifiers.length === 0) return { kind: 'unattached', reason: unattached(input.eventName) };
  // isoFromMs: Date#toISOString's text without V8's date cache (src/isotime.ts), once per webhook.
  const at = isoFromMs(input.receivedAt.getTime());
  const { timeline, events } = build(input, at);
  const name = text(input.envelope.visitor?.name);
  const responsibleAgent = responsibleOf(input.eventName, input.envelope);
  const crmLink = input.eventName === 'chat_assigned' ? assignedCrmLink(input.envelope) : undefined;
  const keys = idempotencyKeysOf(input);
  // Field by field, in the order the literal had: a conditional spread in the middle of a literal
  // took V8's slow path on every webhook (~0.3 µs, src/extend.ts).
  const observation: Observation = {
    channelId: input.channelId,
    vendor: VENDOR,
    at,
    idempotencyKey: keys.key,
  };
  if (keys.former !== undefined) observation.formerIdempotencyKeys = [keys.former];
  if (SNAPSHOT_EVENTS.has(input.eventName)) observation.snapshot = true;
  observation.identifiers = identifiers;
  observation.names = name ? [truncate(name, 200)] : [];
  observation.attributes = attributesOf(input);
  observation.labels = [];
  observation.timeline = timeline;
  observation.events = events;
  // null is an unassignment (responsibleOf): set whenever the event said anything.
  if (responsibleAgent !== undefined) observation.responsibleAgent = responsibleAgent;
  if (crmLink) observation.crmLink = crmLink;
  return { kind: 'observation', observation };
}
