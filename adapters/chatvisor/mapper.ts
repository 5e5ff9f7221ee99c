import type { Identifier, Observation, TranscriptMessage } from '../../src/contacts/types.js';
import { keyPart, digest as sha256Digest } from '../../src/intake/wire.js';
import { CONVERSATION_STATUS, CUSTOMER_SENDER } from './operations.js';
import type { Conversation, CustomerIdentity, Message } from './schemas.js';

/**
 * Chatvisor objects -> observations for the contact model (pure functions).
 *
 * Idempotency keys (DESIGN §7) are derived so that the webhook and the poller produce the same
 * key for the same vendor event — that is what makes the two paths reconcile:
 * - a conversation event: customer id + status + last message;
 * - a message: customer id + the message id (or, without one, its text and time);
 * - a customer profile: customer id + the identity fields it carries.
 */
export const VENDOR = 'chatvisor';

/** Chatvisor's customer id is vendor-local: it identifies a contact within its channel only. */
export const CUSTOMER_KIND = 'customer';

export type ConversationKind = 'started' | 'finished' | 'updated';

/** Short stable digest for keys (22 base64url characters, as stored keys have): texts can be long. */
export function digest(value: string): string {
  return sha256Digest(value, 22);
}

/** Long vendor values (ids, a status) are digested in keys (keyPart), so no key outgrows 512. */
export function conversationKey(conversation: Conversation): string {
  return `conversation:${keyPart(conversation.customerId)}:${keyPart(conversation.status)}:${digest(conversation.lastMessageText ?? '')}`;
}

/** What tells one of a customer's messages from another: its id, or its text and time without one. */
export function messageIdentity(message: Message): string {
  return message.id ?? `t:${digest(`${message.text ?? ''}\n${message.createdAt ?? ''}`)}`;
}

export function messageKey(message: Message): string {
  // A message without an id keeps its `t:<digest>` identity as it is (keys stored before were
  // made so; it holds the separator, which keyPart would digest, but no vendor text).
  const identity = message.id == null ? messageIdentity(message) : keyPart(message.id);
  return `message:${keyPart(message.customerId)}:${identity}`;
}

/**
 * "New conversation" fires for a new customer and for DONE -> UNREAD [S1]; reaching DONE ends
 * the conversation; anything else (UNREAD <-> UNRESOLVED) is an update.
 */
export function classifyTransition(previousStatus: string | null, status: string): ConversationKind {
  if (status === CONVERSATION_STATUS.done) return 'finished';
  if (previousStatus === null || previousStatus === CONVERSATION_STATUS.done) return 'started';
  return 'updated';
}

export function isCustomerMessage(message: Message): boolean {
  return message.sender === null || message.sender === CUSTOMER_SENDER;
}

export function customerIdentifiers(
  channelId: string,
  customerId: string,
  profile?: CustomerIdentity | null,
): Identifier[] {
  const identifiers: Identifier[] = [{ kind: CUSTOMER_KIND, value: customerId, channelId }];
  // The profile is the customer as the company created or tagged it through the REST API
  // (tagUser), read back over REST with the API token: its e-mail and id are verified (issue 10
  // item 5), not something a visitor typed into the chat.
  if (profile?.email) identifiers.push({ kind: 'email', value: profile.email, provenance: 'verified' });
  // The company's own id for the customer (tagUser's `id`) is the global `person` kind (DESIGN §7).
  if (profile?.externalId)
    identifiers.push({ kind: 'person', value: profile.externalId, provenance: 'verified' });
  return identifiers;
}

function profileNames(profile?: CustomerIdentity | null): string[] {
  const name = [profile?.firstname, profile?.lastname].filter((part) => part && part.trim() !== '').join(' ');
  return name ? [name] : [];
}

function quote(text: string | null, max = 80): string {
  if (!text) return '';
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

const TITLES: Record<ConversationKind, string> = {
  started: 'Chatvisor conversation started',
  finished: 'Chatvisor conversation finished',
  updated: 'Chatvisor conversation updated',
};

/**
 * Who wrote a message, in the one shape's words. The customer is CUSTOMER or no sender (as
 * isCustomerMessage reads it); a word Chatvisor's spec leaves open is `unknown`, not the customer:
 * a CRM note would otherwise show a bot's or autoresponder's line as the customer's.
 */
function authorType(sender: string | null): TranscriptMessage['author']['type'] {
  if (sender === null || sender === CUSTOMER_SENDER) return 'visitor';
  if (sender === 'AGENT') return 'agent';
  if (sender === 'SYSTEM') return 'system';
  if (sender === 'BOT') return 'bot';
  return 'unknown';
}

/** The conversation's messages in the one transcript shape (src/contacts/types.ts). */
export function toTranscript(messages: readonly Message[]): TranscriptMessage[] {
  return messages
    .filter((message) => message.text)
    .map((message) => ({
      at: message.createdAt,
      author: {
        type: authorType(message.sender),
        ...(message.agentEmail ? { email: message.agentEmail } : {}),
      },
      text: message.text ?? '',
    }));
}

/**
 * The id of a customer's current conversation (`data.conversationId`, as JivoChat and LiveTex
 * give theirs): Chatvisor names none and keeps one thread per customer, so it is the customer id
 * and where the customer's finished conversations end (state.ts `ended`), the same for the
 * conversation's start, updates and finish, and another for the next conversation. A CRM keys
 * `deals: per-conversation` on it; without it every event made a deal of its own.
 */
export function conversationIdOf(
  customerId: string,
  ended: { text: string | null; at: string | null } | null | undefined,
): string {
  if (!ended) return customerId;
  return `${customerId}:${ended.at ?? digest(ended.text ?? '')}`;
}

export interface ConversationObservationInput {
  channelId: string;
  conversation: Conversation;
  /** conversationIdOf the customer's current conversation. */
  conversationId: string;
  previousStatus: string | null;
  at: string;
  profile?: CustomerIdentity | null;
  transcript?: TranscriptMessage[] | undefined;
}

export function conversationObservation(input: ConversationObservationInput): Observation {
  const { conversation } = input;
  const kind = classifyTransition(input.previousStatus, conversation.status);
  const data: Record<string, unknown> = {
    conversationId: input.conversationId,
    customerId: conversation.customerId,
    status: conversation.status,
    previousStatus: input.previousStatus,
    lastMessage: conversation.lastMessageText,
    url: conversation.url,
    ...(input.transcript ? { messages: input.transcript } : {}),
  };
  const last = quote(conversation.lastMessageText);
  const outbound =
    kind === 'started' ? 'conversation.started' : kind === 'finished' ? 'conversation.finished' : null;
  return {
    channelId: input.channelId,
    vendor: VENDOR,
    at: input.at,
    idempotencyKey: conversationKey(conversation),
    // The key is the conversation's state (status, last message), which it can return to: an
    // agent reopens a finished conversation and finishes it again with no new message. A repeat
    // only within the vendor's retries (README, Idempotency); the stored status answers the rest.
    snapshot: true,
    identifiers: customerIdentifiers(input.channelId, conversation.customerId, input.profile),
    names: profileNames(input.profile),
    timeline: [
      {
        key: 'conversation',
        at: input.at,
        type: `conversation.${kind}`,
        summary: `${TITLES[kind]} (${conversation.status})${last ? `: ${last}` : ''}`,
        data,
      },
    ],
    events: outbound ? [{ type: outbound, key: 'conversation', data }] : [],
  };
}

export function messageObservation(input: {
  channelId: string;
  message: Message;
  at: string;
  /** The customer's cached profile: the message lands on the person's contact at once. */
  profile?: CustomerIdentity | null;
  /** conversationIdOf the conversation it was written in (the customer's current one). */
  conversationId: string;
}): Observation {
  const { message } = input;
  const at = message.createdAt ?? input.at;
  // A message event's data is the message in the one shape (at, author, text) plus its ids.
  const data = {
    conversationId: input.conversationId,
    customerId: message.customerId,
    messageId: message.id,
    at,
    author: { type: 'visitor' },
    text: message.text ?? '',
  };
  return {
    channelId: input.channelId,
    vendor: VENDOR,
    at,
    idempotencyKey: messageKey(message),
    identifiers: customerIdentifiers(input.channelId, message.customerId, input.profile),
    timeline: [
      {
        key: 'message',
        at,
        type: 'message.received',
        summary: `Chatvisor message: ${quote(message.text) || '(no text)'}`,
        data,
      },
    ],
    events: [{ type: 'message.received', key: 'message', data }],
  };
}

/** Digest of what identifies the customer: a different digest is a changed profile. */
export function profileDigest(customer: CustomerIdentity): string {
  return digest(JSON.stringify([customer.email, customer.externalId, customer.firstname, customer.lastname]));
}

/**
 * Links the Chatvisor customer to the unified contact by e-mail and the company's id. With
 * `assigned` (the agent's e-mail a read found the customer newly assigned to: profiles.ts) it also
 * says who is responsible for them, dated by the read (Chatvisor gives no time for an assignment).
 * Such an observation is made only when the read found a change, so its key has the read's time
 * in it: a customer assigned back to an earlier agent is news again, not a repeat. The profile is
 * a snapshot (README, Idempotency): keyed on its state, which can come back (a name or e-mail
 * changed and changed back), so the same profile is a repeat only within the snapshot window.
 */
export function profileObservation(input: {
  channelId: string;
  customer: CustomerIdentity;
  at: string;
  assigned?: string | undefined;
}): Observation {
  const { customer, assigned } = input;
  const key = `profile:${keyPart(customer.customerId)}:${profileDigest(customer)}`;
  return {
    channelId: input.channelId,
    vendor: VENDOR,
    at: input.at,
    idempotencyKey: assigned === undefined ? key : `${key}:assigned:${digest(assigned)}:${input.at}`,
    snapshot: true,
    identifiers: customerIdentifiers(input.channelId, customer.customerId, customer),
    names: profileNames(customer),
    ...(assigned === undefined ? {} : { responsibleAgent: { email: assigned } }),
  };
}

/** The agent as the bridge wants it in Chatvisor, from the company's directory (config.agents). */
export function desiredAgent(agent: {
  email: string;
  name: string;
  role?: string | undefined;
  teams: string[];
}) {
  return {
    email: agent.email.toLowerCase(),
    displayName: agent.name,
    ...(agent.role === undefined ? {} : { role: agent.role }),
    teams: [...agent.teams].sort(),
    active: true,
  };
}
