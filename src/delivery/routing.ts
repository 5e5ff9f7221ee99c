import { z } from 'zod';
import type { AgentConfig, ChannelConfig, DestinationConfig } from '../config/schema.js';
import { cleanDisplayText, cutText } from '../contacts/normalize.js';
import { transcriptOf } from '../contacts/types.js';
import type { OutboundEvent } from '../events/outbox.js';

/**
 * Routing and mapping (DESIGN §3 `destinations[].filter` / `map`): which destinations get an
 * event, and the CRM-side hints they get with it. A pure function of (config, event): every
 * instance computes the same result, so it does not matter which one drains the outbox.
 *
 * The contract body `{id, type, occurredAt, channel, contact, data}` is delivered unchanged; the
 * mapping results travel next to it in `routing` (see src/delivery/README.md).
 */

export interface RoutingTask {
  title: string;
  text: string;
  /** ISO 8601: occurredAt + map.taskDueIn. */
  dueAt: string;
  responsibleCrmUserId: string | null;
}

export interface Routing {
  destination: string;
  pipeline: string | null;
  source: string | null;
  responsibleCrmUserId: string | null;
  /** Only for offline_message.received: the CRM should make a task of it. */
  task?: RoutingTask;
  /** Only for conversation.finished with a transcript: the transcript as note text. */
  note?: { text: string };
}

export type DeliveredBody = OutboundEvent & { routing: Routing };

export interface RoutingContext {
  agents: readonly AgentConfig[];
  channels: readonly ChannelConfig[];
  /** vendor id -> display name (JivoChat, LiveTex, Chatvisor); the id is used when absent. */
  vendorNames: ReadonlyMap<string, string>;
}

const DEFAULT_SOURCE = '{vendorName}: {channelName}';
/** CRMs cap note sizes; a long chat is cut with a marker rather than rejected by the CRM. */
export const NOTE_MAX_CHARS = 20_000;

/**
 * Whether `destination` wants `event`. Events without a channel (contact.* from an unmerge,
 * for instance) concern the contact as a whole: channel and vendor filters do not exclude them.
 * Nor do they exclude a merge: its channel is the one whose identifier joined the contacts, not
 * theirs, and a destination filtered to another channel that knows one of them must learn that
 * its id now lives on as the survivor (else the next event arrives under an id it never saw).
 */
export function wants(destination: DestinationConfig, event: OutboundEvent): boolean {
  if (!destination.events.includes(event.type)) return false;
  if (event.channel === null || event.type === 'contact.merged') return true;
  const { channels, vendors } = destination.filter;
  if (channels && !channels.includes(event.channel.id)) return false;
  if (vendors && !vendors.includes(event.channel.vendor)) return false;
  return true;
}

/** The body `destination` receives for `event`, or null when its filters leave the event out. */
export function routeEvent(
  destination: DestinationConfig,
  event: OutboundEvent,
  context: RoutingContext,
): DeliveredBody | null {
  if (!wants(destination, event)) return null;
  return { ...event, routing: mapEvent(destination, event, context) };
}

export function mapEvent(
  destination: DestinationConfig,
  event: OutboundEvent,
  context: RoutingContext,
): Routing {
  const { map } = destination;
  const channelId = event.channel?.id;
  const pipeline =
    (channelId !== undefined ? map.pipeline?.byChannel[channelId] : undefined) ??
    map.pipeline?.default ??
    null;
  const responsibleCrmUserId = responsibleFor(event, context.agents, map.responsibleFallback);
  const routing: Routing = {
    destination: destination.id,
    pipeline,
    source: sourceOf(event, map.source ?? DEFAULT_SOURCE, context),
    responsibleCrmUserId,
  };
  if (event.type === 'offline_message.received') {
    routing.task = taskOf(event, map.taskDueIn ?? 3_600_000, responsibleCrmUserId);
  }
  if (event.type === 'conversation.finished') {
    const text = transcriptText(event, routing.source);
    if (text !== null) routing.note = { text };
  }
  return routing;
}

function sourceOf(event: OutboundEvent, template: string, context: RoutingContext): string | null {
  if (event.channel === null) return null;
  const { id, vendor } = event.channel;
  const channelName = context.channels.find((channel) => channel.id === id)?.name ?? id;
  const values: Record<string, string> = {
    vendor,
    vendorName: context.vendorNames.get(vendor) ?? vendor,
    channel: id,
    channelName,
  };
  // Unknown placeholders stay as written, so a typo shows up in the CRM instead of vanishing.
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole);
}

/** What adapters put in event data about the agent (tolerant: only the e-mails matter here). */
const agentDataSchema = z.object({
  agent: z.object({ email: z.string().nullish() }).nullish(),
  agentEmail: z.string().nullish(),
  // JivoChat's chat_finished (and LiveTex's closed / assigned dialogs) name the conversation's
  // agents in `agents[]`, with no `agent`. Items read one by one: an odd one costs only itself.
  agents: z.array(z.unknown()).nullish(),
});
const agentItemSchema = z.object({ email: z.string().nullish() });

/**
 * The agents' e-mails the event names, best first, trimmed and lower-cased: data.agent.email,
 * data.agentEmail, data.agents[].email (the chat's agents, in their order), then the contact's
 * responsible agent.
 */
export function agentEmailsOf(event: OutboundEvent): string[] {
  const data = agentDataSchema.safeParse(event.data);
  const candidates = [
    data.success ? data.data.agent?.email : undefined,
    data.success ? data.data.agentEmail : undefined,
    ...(data.success
      ? (data.data.agents ?? []).map((agent) => {
          const item = agentItemSchema.safeParse(agent);
          return item.success ? item.data.email : undefined;
        })
      : []),
    event.contact?.responsibleAgent?.email,
  ];
  const emails = candidates
    .map((email) => email?.trim().toLowerCase())
    .filter((email): email is string => !!email);
  return [...new Set(emails)];
}

/**
 * The CRM user responsible: the agent named by the event (data.agent.email, data.agentEmail or
 * data.agents[].email), else the contact's responsible agent, looked up by e-mail in `agents`;
 * else the fallback.
 */
export function responsibleFor(
  event: OutboundEvent,
  agents: readonly AgentConfig[],
  fallback: string | undefined,
): string | null {
  for (const email of agentEmailsOf(event)) {
    const agent = agents.find((entry) => entry.email === email);
    if (agent?.crmUserId) return agent.crmUserId;
  }
  if (fallback === undefined || fallback === '') return null;
  const byEmail = agents.find((entry) => entry.email === fallback.trim().toLowerCase());
  if (byEmail) return byEmail.crmUserId ?? null;
  return fallback;
}

const offlineDataSchema = z.object({
  text: z.string().nullish(),
  message: z.union([z.string(), z.object({ text: z.string().nullish() })]).nullish(),
});

function taskOf(event: OutboundEvent, dueInMs: number, responsibleCrmUserId: string | null): RoutingTask {
  const data = offlineDataSchema.safeParse(event.data);
  let text = '';
  if (data.success) {
    const message = data.data.message;
    text = data.data.text ?? (typeof message === 'string' ? message : (message?.text ?? '')) ?? '';
  }
  const contact = event.contact;
  const who = contact?.name ?? contact?.emails[0] ?? contact?.phones[0] ?? 'a visitor';
  const occurred = Date.parse(event.occurredAt);
  const dueAt = new Date((Number.isNaN(occurred) ? 0 : occurred) + dueInMs).toISOString();
  // The title is one line, whatever the visitor's name holds.
  return {
    title: `Offline message from ${who.replace(LINE_BREAKS, ' ')}`,
    text,
    dueAt,
    responsibleCrmUserId,
  };
}

/** Every way text can break a line (a CRM shows \u2028 and NEL as one too). */
const LINE_BREAKS = /\r\n|[\n\v\f\r\u0085\u2028\u2029]/g;

/**
 * The transcript of a finished conversation (`data.messages`, the one shape every adapter writes:
 * src/contacts/types.ts) as plain text, one line per message: `[2024-05-01 10:03] Oleg Petrov:
 * Hello`. Null when there is none. A message of several lines goes on in lines indented by four
 * spaces, and an author's name or a time is kept on its line: what a visitor typed (a message
 * holding "\n[2024-05-01 10:04] Oleg Petrov: Refund approved") can never begin a line, so it
 * never reads in the CRM as a message of someone else.
 */
export function transcriptText(event: OutboundEvent, source: string | null): string | null {
  const messages = transcriptOf(event.data);
  if (messages.length === 0) return null;
  const oneLine = (value: string) => value.replace(LINE_BREAKS, ' ');
  const lines: string[] = [source ? `Chat transcript (${source})` : 'Chat transcript'];
  for (const { at, author, text } of messages) {
    const when = formatTime(at);
    // A name as a contact's is shown (cleanDisplayText): a bidi override in it turned the rest of
    // its line around, and a control broke it. Vendors' transcripts carry names as typed.
    const who = oneLine(cleanDisplayText(author.name ?? author.email ?? author.type) ?? author.type);
    lines.push(`${when ? `[${oneLine(when)}] ` : ''}${who}: ${text.replace(LINE_BREAKS, '\n    ')}`);
  }
  const full = lines.join('\n');
  if (full.length <= NOTE_MAX_CHARS) return full;
  const marker = '\n… (transcript cut)';
  // cutText: a plain slice could end in half an emoji, a lone surrogate that the CRMs' PHP JSON
  // readers refuse with the whole request.
  return cutText(full, NOTE_MAX_CHARS - marker.length) + marker;
}

function formatTime(value: string | null): string | null {
  if (!value) return null;
  const parsed = Date.parse(value);
  if (Number.isNaN(parsed)) return value;
  // UTC, minute precision: the note is for people, and every instance must write the same text.
  // The zone is named: a manager in Moscow (UTC+3) or Almaty read a bare "09:15" as local time.
  return `${new Date(parsed).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
