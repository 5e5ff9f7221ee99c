import type { Logger } from 'pino';
import type { Contact, TranscriptMessage } from '../../src/contacts/types.js';
import type { AdapterContext } from '../../src/contracts/adapter.js';
import type { LabelPusher } from './labels.js';
import {
  type ConversationKind,
  classifyTransition,
  conversationIdOf,
  conversationObservation,
  isCustomerMessage,
  messageObservation,
  profileObservation,
} from './mapper.js';
import type { CachedProfile, CustomerProfiles, Identification } from './profiles.js';
import type { Conversation, CustomerIdentity, Message } from './schemas.js';
import { type MessageCursor, readEnded, readStatus, writeStatus } from './state.js';

/**
 * Conversations and messages the poller finds, and customer identification for both paths. The
 * webhook goes through the core's intake pipeline (webhook.ts) with the same pure mapping
 * (mapper.ts): both derive the same idempotency key for the same vendor event and compare against
 * the same stored status (state.ts), so an event seen by both paths is written once — by
 * whichever saw it first.
 */
export interface TrackerOptions {
  channelId: string;
  context: AdapterContext;
  labels: LabelPusher;
  profiles: CustomerProfiles;
  logger: Logger;
}

export interface TrackResult {
  /** An observation was handed to the contact model. */
  observed: boolean;
  /** The contact model had seen its idempotency key already (the other path was first). */
  duplicate: boolean;
  contact?: Contact;
  kind?: ConversationKind;
}

export class ConversationTracker {
  constructor(private readonly options: TrackerOptions) {}

  /**
   * A conversation event. Nothing happens when its status is the one we already know: it was
   * observed before (a repeated webhook, or the poller was first).
   * - `previousStatus` may be passed by a caller that has just read it (the poller).
   * - `current`: the conversation was just fetched from Chatvisor, so it is the state now (the
   *   poller). A webhook may be a late or repeated delivery of an older event: when the contact
   *   model already had its key, the stored status is left alone, since it is newer than the event.
   */
  async conversation(
    conversation: Conversation,
    input: {
      previousStatus?: string | null;
      current?: boolean;
      /** The customer's cached identity: the entry lands on the person's contact at once. */
      profile?: CustomerIdentity | null | undefined;
      transcript?: TranscriptMessage[] | undefined;
      /** When it happened, if known better than "now" (a backfilled conversation's updatedAt). */
      at?: string | undefined;
      /** Where the customer's finished conversations end, when the caller read it (else read here). */
      ended?: MessageCursor | null;
    } = {},
  ): Promise<TrackResult> {
    const { context, channelId } = this.options;
    const previousStatus =
      input.previousStatus !== undefined
        ? input.previousStatus
        : await readStatus(context.store, channelId, conversation.customerId);
    if (previousStatus === conversation.status) return { observed: false, duplicate: true };
    const ended =
      input.ended !== undefined
        ? input.ended
        : await readEnded(context.store, channelId, conversation.customerId);
    const result = await context.contacts.observe(
      conversationObservation({
        channelId,
        conversation,
        conversationId: conversationIdOf(conversation.customerId, ended),
        previousStatus,
        at: input.at ?? context.now().toISOString(),
        profile: input.profile ?? null,
        transcript: input.transcript,
      }),
    );
    // Only after the observation is stored: if that failed, the status is still "unseen" and the
    // next webhook or poll tries again.
    if (input.current || !result.duplicate) {
      await writeStatus(context.store, channelId, conversation.customerId, conversation.status);
    }
    return {
      observed: true,
      duplicate: result.duplicate,
      contact: result.contact,
      kind: classifyTransition(previousStatus, conversation.status),
    };
  }

  /** A message from the customer (agents' messages are not "received"; they are in transcripts). */
  async message(
    message: Message,
    profile?: CustomerIdentity | null,
    /** Where the customer's finished conversations end, when the caller read it (else read here). */
    ended?: MessageCursor | null,
  ): Promise<TrackResult> {
    if (!isCustomerMessage(message)) return { observed: false, duplicate: false };
    const { context, channelId } = this.options;
    const endedNow =
      ended !== undefined ? ended : await readEnded(context.store, channelId, message.customerId);
    const result = await context.contacts.observe(
      messageObservation({
        channelId,
        message,
        at: context.now().toISOString(),
        profile: profile ?? null,
        conversationId: conversationIdOf(message.customerId, endedNow),
      }),
    );
    return { observed: true, duplicate: result.duplicate, contact: result.contact };
  }

  /**
   * Identify the customer (profiles.ts: cached, or read from Chatvisor), link a new or changed
   * identity to the contact, then push the channel's labels if they changed. Called after the
   * event itself is stored, so a profile that cannot be read loses nothing: the event stays on the
   * vendor-local contact and the customer is identified later. Returns the contact as it now is,
   * and the identity for the events that follow in the same run.
   */
  async identify(
    customerId: string,
    contact: Contact | undefined,
    input: {
      refresh?: boolean;
      cached?: CachedProfile | null;
      signal?: AbortSignal | undefined;
      labels?: boolean;
    } = {},
  ): Promise<{ contact: Contact | undefined } & Identification> {
    const identification = await this.options.profiles.identify(customerId, input);
    let current = contact;
    // Unchanged and already on the contact (every observation carries the cached identity); a
    // newly found assignee is said once, when the read found it (profiles.ts).
    if (identification.identity && (identification.changed || !current || identification.assigned)) {
      current = await this.observeProfile(identification.identity, identification.assigned);
    }
    if (current && input.labels !== false) await this.pushLabels(customerId, current, input.signal);
    return { contact: current, ...identification };
  }

  /**
   * Link the customer's identity to the contact and, with `assigned` (a new assignee a read found),
   * say who is responsible for them. The assignee is remembered in the profile cache only once
   * saved (profiles.ts, assignmentSaved); when the save fails the customer is also marked pending,
   * so its next event or poll reads it again and says the assignee then.
   */
  async observeProfile(customer: CustomerIdentity, assigned?: string): Promise<Contact> {
    const { context, channelId, profiles } = this.options;
    let result: Awaited<ReturnType<typeof context.contacts.observe>>;
    try {
      result = await context.contacts.observe(
        profileObservation({ channelId, customer, at: context.now().toISOString(), assigned }),
      );
    } catch (error) {
      if (assigned !== undefined) {
        // Best effort: with the store down this fails too, and the assignee, never remembered,
        // is said by the customer's next read whenever that comes (a new conversation, a refresh).
        await profiles
          .markPending(customer.customerId, `assignee not saved: ${(error as Error).message}`)
          .catch(() => undefined);
      }
      throw error;
    }
    if (assigned !== undefined) await profiles.assignmentSaved(customer.customerId, assigned);
    return result.contact;
  }

  /** Push the channel's labels for the contact if they changed. Best effort, logged. */
  async pushLabels(customerId: string, contact: Contact, signal?: AbortSignal): Promise<void> {
    try {
      await this.options.labels.sync(customerId, contact, signal);
    } catch (error) {
      this.options.logger.warn({ customerId, err: error }, 'could not push Chatvisor customer labels');
    }
  }
}
