import type { Logger } from 'pino';
import type { Contact } from '../../src/contacts/types.js';
import type { AdapterContext } from '../../src/spec/adapter.js';
import type { ChatvisorClient, ParsedPage } from './client.js';
import type { ConversationTracker } from './conversations.js';
import { ChatvisorAuthError, ChatvisorNotFoundError } from './errors.js';
import { isCustomerMessage, toTranscript } from './mapper.js';
import { CONVERSATION_STATUS } from './operations.js';
import type { ChatvisorSettings, Conversation, Customer, Message } from './schemas.js';
import {
  type ConversationState,
  readConversationState,
  storeKeys,
  writeCursor,
  writeStatus,
} from './state.js';

/**
 * Conversation polling (vendors/chatvisor.md §9.2 "Polling rules"): Chatvisor documents no
 * `since` filter, so each run pages through every conversation and diffs it against the stored
 * per-customer state (status, message cursor):
 * - a new status -> a conversation event (started / finished / updated), keyed like the webhook's;
 * - a new last message -> the customer's messages are fetched and each new one observed, keyed
 *   by message id like the Message webhook's.
 * Whatever the webhook already delivered comes back from the contact model as a duplicate and is
 * written once; what only the poller found is counted as a backfill.
 *
 * The first run records a baseline (the state of every conversation) without replaying history:
 * polling reports changes from the moment it is switched on.
 */
const MAX_PAGES = 10_000;
const MAX_MESSAGE_PAGES = 20;

export interface PollReport {
  channelId: string;
  baseline: boolean;
  source: 'conversation' | 'customer';
  startedAt: string;
  finishedAt: string;
  pages: number;
  conversationsSeen: number;
  /** Customers recorded without events by the baseline run. */
  seeded: number;
  conversationEvents: number;
  messageEvents: number;
  /** Events found only by polling (the webhook had not delivered them). */
  backfills: number;
  failed: { customerId: string; reason: string }[];
}

interface PolledItem {
  conversation: Conversation;
  profile: Customer | null;
}

export interface PollerOptions {
  channelId: string;
  context: AdapterContext;
  client: ChatvisorClient;
  tracker: ConversationTracker;
  settings: ChatvisorSettings;
  logger: Logger;
}

export class ConversationPoller {
  /** listConversations is an assumed path; without it, customers (which carry a status) stand in. */
  private source: 'conversation' | 'customer' = 'conversation';
  private readonly backfills;
  private readonly runs;

  constructor(private readonly options: PollerOptions) {
    const { metrics } = options.context;
    this.backfills = metrics.counter(
      'chatbridge_chatvisor_backfills_total',
      'Chatvisor events found only by conversation polling (their webhook never came), by channel and kind',
      ['channel', 'kind'] as const,
    );
    this.runs = metrics.counter(
      'chatbridge_chatvisor_polls_total',
      'Chatvisor conversation poll runs, by channel and outcome (ok, partial, failed)',
      ['channel', 'outcome'] as const,
    );
  }

  async run(signal?: AbortSignal): Promise<PollReport> {
    const { context, channelId, settings, logger } = this.options;
    const keys = storeKeys(channelId);
    const baseline = (await context.store.get(keys.pollBaseline)) === null;
    const state = await readConversationState(context.store, channelId);
    const report: PollReport = {
      channelId,
      baseline,
      source: this.source,
      startedAt: context.now().toISOString(),
      finishedAt: '',
      pages: 0,
      conversationsSeen: 0,
      seeded: 0,
      conversationEvents: 0,
      messageEvents: 0,
      backfills: 0,
      failed: [],
    };
    try {
      let previous: string | undefined;
      for (let pageNumber = 0; pageNumber < MAX_PAGES; pageNumber++) {
        signal?.throwIfAborted();
        const page = await this.fetchPage({ pageNumber, pageSize: settings.pageSize }, signal);
        report.pages++;
        report.source = this.source;
        // A vendor that ignores pageNumber would hand us page 0 forever.
        const fingerprint = JSON.stringify(page.items.map((item) => item.conversation));
        if (page.rawCount > 0 && fingerprint === previous) break;
        previous = fingerprint;
        for (const item of page.items) {
          report.conversationsSeen++;
          try {
            await this.handle(item, state, baseline, report, signal);
          } catch (error) {
            // A revoked token or shutdown fails the whole run; anything else is this customer's
            // problem and the next run tries it again (its state was not advanced).
            if (error instanceof ChatvisorAuthError || signal?.aborted) throw error;
            if ((error as { code?: string }).code === 'store_unavailable') throw error;
            report.failed.push({
              customerId: item.conversation.customerId,
              reason: (error as Error).message,
            });
            logger.warn(
              { customerId: item.conversation.customerId, err: error },
              'chatvisor poll: customer failed',
            );
          }
        }
        if (page.rawCount < settings.pageSize) break;
      }
      if (baseline) await context.store.set(keys.pollBaseline, report.startedAt);
      report.finishedAt = context.now().toISOString();
      this.runs.inc({ channel: channelId, outcome: report.failed.length > 0 ? 'partial' : 'ok' });
      logger.info(
        {
          baseline,
          seen: report.conversationsSeen,
          conversations: report.conversationEvents,
          messages: report.messageEvents,
          backfills: report.backfills,
          failed: report.failed.length,
        },
        'chatvisor conversations polled',
      );
      return report;
    } catch (error) {
      this.runs.inc({ channel: channelId, outcome: 'failed' });
      throw error;
    }
  }

  private async fetchPage(
    page: { pageNumber: number; pageSize: number },
    signal?: AbortSignal,
  ): Promise<ParsedPage<PolledItem>> {
    const { client, logger } = this.options;
    if (this.source === 'conversation') {
      try {
        const result = await client.listConversations(page, { signal });
        return { ...result, items: result.items.map((conversation) => ({ conversation, profile: null })) };
      } catch (error) {
        if (!(error instanceof ChatvisorNotFoundError) || page.pageNumber !== 0) throw error;
        logger.warn(
          'chatvisor: GET /conversation is not served; polling customers instead (see operations.ts)',
        );
        this.source = 'customer';
      }
    }
    const result = await client.listCustomers(page, { signal });
    const items: PolledItem[] = [];
    for (const customer of result.items) {
      // A customer without a status has no conversation to report.
      if (!customer.status) continue;
      items.push({
        conversation: {
          customerId: customer.customerId,
          status: customer.status,
          lastMessageText: customer.lastMessageText,
          url: null,
        },
        profile: customer,
      });
    }
    return { ...result, items };
  }

  private async handle(
    item: PolledItem,
    state: ConversationState,
    baseline: boolean,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { context, channelId, tracker } = this.options;
    const { conversation, profile } = item;
    const customerId = conversation.customerId;
    const previousStatus = state.status.get(customerId) ?? null;
    const cursor = state.cursor.get(customerId);
    const lastText = conversation.lastMessageText ?? null;

    if (baseline && cursor === undefined) {
      await writeCursor(context.store, channelId, customerId, { text: lastText, at: null });
      if (previousStatus === null) {
        await writeStatus(context.store, channelId, customerId, conversation.status);
        report.seeded++;
        return;
      }
    }

    const statusChanged = previousStatus !== conversation.status;
    const messageChanged = !(baseline && cursor === undefined) && lastText !== (cursor?.text ?? null);
    if (!statusChanged && !messageChanged) return;

    let messages: Message[] | undefined;
    if (messageChanged || (statusChanged && conversation.status === CONVERSATION_STATUS.done)) {
      try {
        messages = await this.fetchMessages(customerId, signal);
      } catch (error) {
        if (error instanceof ChatvisorAuthError || signal?.aborted) throw error;
        // The status change is still worth recording; the cursor stays put so the messages are
        // fetched again next run.
        report.failed.push({ customerId, reason: (error as Error).message });
        this.options.logger.warn({ customerId, err: error }, 'chatvisor poll: could not fetch messages');
      }
    }

    let contact: Contact | undefined;
    if (statusChanged) {
      const result = await tracker.conversation(conversation, {
        previousStatus,
        current: true,
        profile,
        transcript:
          conversation.status === CONVERSATION_STATUS.done && messages ? toTranscript(messages) : undefined,
      });
      if (result.observed) {
        report.conversationEvents++;
        if (!result.duplicate) this.backfill(report, 'conversation');
        contact = result.contact;
      }
      if (result.kind === 'started') {
        contact = profile
          ? await tracker.observeProfile(profile)
          : ((await tracker.linkProfile(customerId, signal)) ?? contact);
      }
    }

    if (messageChanged && messages) {
      const since = cursor?.at ?? null;
      let newest = since;
      for (const message of messages) {
        if (message.createdAt && (newest === null || message.createdAt > newest)) newest = message.createdAt;
        if (!isCustomerMessage(message)) continue;
        if (since && message.createdAt && message.createdAt <= since) continue;
        const result = await tracker.message(message);
        report.messageEvents++;
        if (!result.duplicate) this.backfill(report, 'message');
        contact = result.contact ?? contact;
      }
      await writeCursor(context.store, channelId, customerId, { text: lastText, at: newest });
    }

    if (contact) await tracker.pushLabels(customerId, contact, signal);
  }

  private backfill(report: PollReport, kind: 'conversation' | 'message'): void {
    report.backfills++;
    this.backfills.inc({ channel: this.options.channelId, kind });
  }

  /** The customer's messages, oldest page first, as far as MAX_MESSAGE_PAGES. */
  private async fetchMessages(customerId: string, signal?: AbortSignal): Promise<Message[]> {
    const { client, settings } = this.options;
    const messages: Message[] = [];
    for (let pageNumber = 0; pageNumber < MAX_MESSAGE_PAGES; pageNumber++) {
      const page = await client.listMessages(
        customerId,
        { pageNumber, pageSize: settings.pageSize },
        { signal },
      );
      messages.push(...page.items);
      if (page.rawCount < settings.pageSize) break;
    }
    return messages;
  }
}
