import type { Logger } from 'pino';
import { z } from 'zod';
import type { Decoded, IntakeRoute } from '../../src/contracts/adapter.js';
import type { Metrics } from '../../src/metrics.js';
import type { Store } from '../../src/store/types.js';
import type { ConversationTracker } from './conversations.js';
import type { IdleCustomers } from './idle.js';
import {
  classifyTransition,
  conversationIdOf,
  conversationObservation,
  isCustomerMessage,
  messageObservation,
} from './mapper.js';
import { CONVERSATION_STATUS } from './operations.js';
import type { CachedProfile, CustomerProfiles } from './profiles.js';
import { type Conversation, conversationSchema, type Message, messageSchema } from './schemas.js';
import { type MessageCursor, readEnded, readStatus, storeKeys } from './state.js';

/**
 * `POST /webhooks/chatvisor/:channelId/:token` (DESIGN §4). Chatvisor posts all events to one URL
 * with no event name, so the body's shape decides (§6):
 * - `customerId` + `status`: a Conversation (new conversation, or status change — same shape);
 * - `customerId` + `text` or `sender`: a Message (a new message from the customer);
 * - anything else (e.g. the old "new subscriber" Customer body): kept in the journal, answered ok.
 *
 * The answer is `{"ok":true}` as soon as the event is stored: the timeline entry is written
 * before answering (so a crash after the answer loses nothing), on the person's contact when the
 * customer's profile is already cached (`open` reads it, with the last known status). What needs
 * Chatvisor's API — reading the profile (always for a new conversation, otherwise when not cached
 * or stale), label pushes — is started by `settle` and runs after the answer; if the profile
 * cannot be read, the event stays on the vendor-local contact and the customer is identified
 * later (profiles.ts). The poller (poll.ts) derives the same keys, so an event seen by both is
 * written once.
 */

/** What a Chatvisor channel's intake reads. */
export interface ChatvisorChannel {
  id: string;
  store: Store;
  profiles: CustomerProfiles;
  tracker: ConversationTracker;
  background: Background;
  /** Without a poll schedule: each webhook naming a customer keeps it from being forgotten (idle.ts). */
  idleCustomers: IdleCustomers;
}

/** The body as read, with what the store knows about its customer. */
export type OpenedEvent =
  | {
      kind: 'conversation';
      conversation: Conversation;
      cached: CachedProfile | null;
      previousStatus: string | null;
      /** Where the customer's finished conversations end (state.ts), for the conversation id. */
      ended?: MessageCursor | null;
    }
  | { kind: 'message'; message: Message; cached: CachedProfile | null; ended?: MessageCursor | null }
  | { kind: 'other' };

export function decodeEvent(
  request: { receivedAt: Date; opened: OpenedEvent },
  channel: Pick<ChatvisorChannel, 'id'>,
): Decoded {
  const { opened } = request;
  const at = request.receivedAt.toISOString();
  if (opened.kind === 'conversation') {
    const { conversation, previousStatus, cached } = opened;
    // The status we already know was observed before (a repeated webhook, or the poller was first).
    if (previousStatus === conversation.status)
      return { kind: 'nothing', event: 'conversation', outcome: 'duplicate' };
    const observation = conversationObservation({
      channelId: channel.id,
      conversation,
      conversationId: conversationIdOf(conversation.customerId, opened.ended),
      previousStatus,
      at,
      profile: cached?.identity ?? null,
    });
    return { kind: 'observe', event: 'conversation', observations: [observation] };
  }
  if (opened.kind === 'message') {
    // Agents' messages are not "received": they are in transcripts.
    if (!isCustomerMessage(opened.message)) return { kind: 'nothing', event: 'message', outcome: 'ok' };
    const observation = messageObservation({
      channelId: channel.id,
      message: opened.message,
      conversationId: conversationIdOf(opened.message.customerId, opened.ended),
      at,
      profile: opened.cached?.identity ?? null,
    });
    return { kind: 'observe', event: 'message', observations: [observation] };
  }
  return {
    kind: 'nothing',
    event: 'unknown',
    reason: 'neither a Conversation (customerId + status) nor a Message (customerId + text)',
  };
}

export const chatvisorWebhook: IntakeRoute<ChatvisorChannel, OpenedEvent> = {
  kind: 'webhook',
  body: 'json',
  doc: {
    summary: 'Chatvisor webhook: a Conversation or a Message, told apart by its shape',
    body: z.union([conversationSchema, messageSchema]),
    answer: z.object({ ok: z.literal(true) }),
  },
  async open(request, channel) {
    const conversation = conversationSchema.safeParse(request.body);
    if (conversation.success) {
      const { customerId } = conversation.data;
      const [cached, previousStatus, ended] = await Promise.all([
        channel.profiles.cached(customerId),
        readStatus(channel.store, channel.id, customerId),
        readEnded(channel.store, channel.id, customerId),
      ]);
      return { kind: 'conversation', conversation: conversation.data, cached, previousStatus, ended };
    }
    const message = messageSchema.safeParse(request.body);
    if (message.success) {
      const [cached, ended] = await Promise.all([
        channel.profiles.cached(message.data.customerId),
        readEnded(channel.store, channel.id, message.data.customerId),
      ]);
      return { kind: 'message', message: message.data, cached, ended };
    }
    return { kind: 'other' };
  },
  decode: decodeEvent,
  render: () => ({ body: { ok: true } }),
  async settle(answer, result, channel) {
    const { opened, decoded, contact } = result;
    if (opened.kind === 'other') return answer;
    const customerId =
      opened.kind === 'conversation' ? opened.conversation.customerId : opened.message.customerId;
    // One write: the new status and finish mark (below), and, without a poll schedule, the mark
    // that keeps the customer from being forgotten (idle.ts) — set by every webhook naming it, a
    // repeated one included (its stored status is what answers the next repeat as a duplicate).
    const batch = channel.store.batch();
    channel.idleCustomers.touch(batch, customerId);
    const observed = decoded.kind === 'observe' && contact !== undefined && contact !== null;
    if (observed && opened.kind === 'conversation' && !result.duplicate) {
      // Only after the observation is stored: if that failed, the status is still "unseen" and
      // the next webhook or poll tries again. A late or repeated delivery of an older event (the
      // contact model had its key) leaves the stored status alone: it is newer than the event.
      const keys = storeKeys(channel.id);
      batch.hset(keys.status, customerId, opened.conversation.status);
      // A finish: the customer's messages until now were in this conversation, so the next
      // conversation's transcript (poll.ts) starts after them. Chatvisor's webhook carries no
      // message times; the finish's arrival dates it.
      const at = decoded.observations[0]?.at;
      if (opened.conversation.status === CONVERSATION_STATUS.done && at) {
        const mark: MessageCursor = { text: opened.conversation.lastMessageText ?? null, at, seen: [] };
        batch.hset(keys.ended, customerId, JSON.stringify(mark));
      }
    }
    if (batch.length > 0) await batch.exec();
    channel.idleCustomers.sweepSoon();
    if (!observed) return answer;
    // A new conversation is when a customer most likely logged in or changed details.
    const refresh =
      opened.kind === 'conversation' &&
      classifyTransition(opened.previousStatus, opened.conversation.status) === 'started';
    const { cached } = opened;
    const started = channel.background.run(
      () => channel.tracker.identify(customerId, contact, { refresh, cached }),
      (reason) => channel.profiles.markPending(customerId, reason),
    );
    // Too much already running, or shutting down: nothing queues in memory; the customer is read
    // later instead.
    if (!started) await channel.profiles.markPending(customerId, channel.background.refusal);
    return answer;
  },
};

/**
 * Work started after answering a request; tracked so shutdown and tests can wait for it. At most
 * `limit` tasks run at once: `run` refuses more (logged and counted in
 * chatbridge_chatvisor_background_dropped_total) and the caller keeps the work for later.
 *
 * Shutdown waits for running tasks only for its grace: each is a Chatvisor call with retries
 * (up to timeoutMs × (maxRetries + 1) plus backoff), and with a slow Chatvisor and a full set of
 * tasks waiting for all of them took over a minute. Tasks still running at the end hand their
 * work back (`leftOver`: the customer is marked pending and read on its next event or poll).
 */
export class Background {
  private readonly pending = new Map<Promise<void>, (reason: string) => Promise<void>>();
  private readonly dropped;
  private closing = false;

  constructor(
    private readonly logger: Logger,
    private readonly options: { channelId: string; limit: number; metrics: Metrics },
  ) {
    this.dropped = options.metrics.counter(
      'chatbridge_chatvisor_background_dropped_total',
      'Chatvisor work after a webhook (profile read, label push) not started because the channel had backgroundTasks running; the customer is identified on its next event or poll',
      ['channel'] as const,
    );
  }

  /** Why `run` refused the last task: the reason the caller records with the work it keeps. */
  get refusal(): string {
    return this.closing ? 'shutting down' : 'too many background tasks';
  }

  /**
   * Starts the task; false (nothing started) when `limit` tasks are already running or the
   * channel is closing. `leftOver` keeps the task's work if shutdown ends before the task does.
   */
  run(task: () => Promise<unknown>, leftOver: (reason: string) => Promise<void>): boolean {
    if (this.closing) return false;
    if (this.pending.size >= this.options.limit) {
      this.dropped.inc({ channel: this.options.channelId });
      this.logger.warn(
        { channelId: this.options.channelId, running: this.pending.size },
        'chatvisor background work not started: too many tasks running; the customer is identified later',
      );
      return false;
    }
    const promise: Promise<void> = task()
      .then(
        () => undefined,
        (error: unknown) => this.logger.warn({ err: error }, 'chatvisor background task failed'),
      )
      .finally(() => this.pending.delete(promise));
    this.pending.set(promise, leftOver);
    return true;
  }

  /** Tasks running now. */
  get running(): number {
    return this.pending.size;
  }

  /** Resolves when every task started so far (and any they started) has finished. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending.keys()]);
  }

  /**
   * Refuses new tasks, waits up to `graceMs` for the running ones, then hands the work of those
   * still running back to their `leftOver` (bounded by the same grace, or LEFTOVER_MARK_MS when
   * that is longer: the store may be the thing that hangs, and the bridge passes what is left of
   * the shutdown's grace, which may be nothing). Their Chatvisor calls are not cancelled; the
   * process is about to end.
   */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    if (await within(this.idle(), graceMs)) return;
    const left = [...this.pending.values()];
    this.logger.warn(
      { channelId: this.options.channelId, running: left.length, graceMs },
      'chatvisor background work still running at shutdown; its customers are identified on their next event or poll',
    );
    const kept = await within(
      Promise.allSettled(left.map((leftOver) => leftOver('shutdown before it finished'))),
      Math.max(graceMs, LEFTOVER_MARK_MS),
    );
    if (!kept)
      this.logger.warn(
        { channelId: this.options.channelId, running: left.length },
        'chatvisor background work could not be marked pending at shutdown',
      );
  }
}

/**
 * What Background.close gives the marks of unfinished work at least (a few store writes), when
 * the grace it was handed is shorter or used up. Well inside the shutdown's margin for closing
 * the queues and the store (SHUTDOWN_CLOSE_MS in src/cli/main.ts).
 */
const LEFTOVER_MARK_MS = 2_000;

/** True when `promise` settles within `ms`; false when the time runs out first. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
