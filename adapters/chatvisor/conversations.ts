import type { Logger } from 'pino';
import type { Contact } from '../../src/contacts/types.js';
import type { AdapterContext } from '../../src/spec/adapter.js';
import type { ChatvisorClient } from './client.js';
import type { LabelPusher } from './labels.js';
import {
  type ConversationKind,
  classifyTransition,
  conversationObservation,
  isCustomerMessage,
  messageObservation,
  profileObservation,
  type TranscriptMessage,
} from './mapper.js';
import type { Conversation, Customer, Message } from './schemas.js';
import { readStatus, writeStatus } from './state.js';

/**
 * The one place that turns a Chatvisor conversation or message into timeline entries, used by
 * both the webhook and the poller. Both derive the same idempotency key for the same vendor event
 * (mapper.ts), and both compare against the same stored status, so an event seen by both paths is
 * written once — by whichever saw it first.
 */
export interface TrackerOptions {
  channelId: string;
  context: AdapterContext;
  client: ChatvisorClient;
  labels: LabelPusher;
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
      profile?: Customer | null;
      transcript?: TranscriptMessage[] | undefined;
    } = {},
  ): Promise<TrackResult> {
    const { context, channelId } = this.options;
    const previousStatus =
      input.previousStatus !== undefined
        ? input.previousStatus
        : await readStatus(context.store, channelId, conversation.customerId);
    if (previousStatus === conversation.status) return { observed: false, duplicate: true };
    const result = await context.contacts.observe(
      conversationObservation({
        channelId,
        conversation,
        previousStatus,
        at: context.now().toISOString(),
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
  async message(message: Message): Promise<TrackResult> {
    if (!isCustomerMessage(message)) return { observed: false, duplicate: false };
    const { context, channelId } = this.options;
    const result = await context.contacts.observe(
      messageObservation({ channelId, message, at: context.now().toISOString() }),
    );
    return { observed: true, duplicate: result.duplicate, contact: result.contact };
  }

  /**
   * Fetch the customer's profile (e-mail, the company's id, name) and link it to the contact.
   * Best effort: a failure is logged and the conversation stays as observed.
   */
  async linkProfile(customerId: string, signal?: AbortSignal): Promise<Contact | undefined> {
    const { client, logger } = this.options;
    let customer: Customer;
    try {
      customer = await client.getCustomer(customerId, { signal });
    } catch (error) {
      logger.warn({ customerId, err: error }, 'could not fetch the Chatvisor customer profile');
      return undefined;
    }
    return this.observeProfile(customer);
  }

  async observeProfile(customer: Customer): Promise<Contact> {
    const { context, channelId } = this.options;
    const result = await context.contacts.observe(
      profileObservation({ channelId, customer, at: context.now().toISOString() }),
    );
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
