import type { Logger } from 'pino';
import type { Contact } from '../../src/contacts/types.js';
import type { AdapterContext, InboundRequest, RouteResult } from '../../src/contracts/adapter.js';
import type { ConversationTracker } from './conversations.js';
import { VENDOR } from './mapper.js';
import type { CachedProfile } from './profiles.js';
import { conversationSchema, messageSchema } from './schemas.js';

/**
 * `POST /webhooks/chatvisor/:channelId/:token` (DESIGN §4; the core checked channel and token).
 * Chatvisor posts all events to one URL with no event name, so the body's shape decides (§6):
 * - `customerId` + `status`: a Conversation (new conversation, or status change — same shape);
 * - `customerId` + `text` or `sender`: a Message (a new message from the customer);
 * - anything else (e.g. the old "new subscriber" Customer body): kept in the journal, answered ok.
 *
 * The answer is `{"ok":true}` as soon as the event is stored: the timeline entry is written
 * before answering (so a crash after the answer loses nothing), on the person's contact when the
 * customer's profile is already cached. What needs Chatvisor's API — reading the profile (always
 * for a new conversation, otherwise when not cached or stale), label pushes — runs in the
 * background afterwards; if the profile cannot be read, the event stays on the vendor-local
 * contact and the customer is identified later (profiles.ts).
 */
const OK = { ok: true } as const;

export interface WebhookDeps {
  channelId: string;
  context: AdapterContext;
  tracker: ConversationTracker;
  background: Background;
  logger: Logger;
}

export function createWebhookHandler(deps: WebhookDeps): (request: InboundRequest) => Promise<RouteResult> {
  const { channelId, context, tracker, background } = deps;

  function followUp(
    customerId: string,
    contact: Contact | undefined,
    cached: CachedProfile | null,
    refresh: boolean,
  ): void {
    background.run(async () => {
      await tracker.identify(customerId, contact, { refresh, cached });
    });
  }

  return async (request) => {
    // Throws BadRequestError for a body that is not JSON; the core answers 400 and journals it.
    const body = request.json();

    const conversation = conversationSchema.safeParse(body);
    if (conversation.success) {
      const cached = await tracker.cachedProfile(conversation.data.customerId);
      const result = await tracker.conversation(conversation.data, { profile: cached?.identity });
      if (result.observed) {
        followUp(conversation.data.customerId, result.contact, cached, result.kind === 'started');
      }
      return {
        body: OK,
        event: 'conversation',
        outcome: result.observed && !result.duplicate ? 'ok' : 'duplicate',
      };
    }

    const message = messageSchema.safeParse(body);
    if (message.success) {
      const cached = await tracker.cachedProfile(message.data.customerId);
      const result = await tracker.message(message.data, cached?.identity);
      if (result.observed) followUp(message.data.customerId, result.contact, cached, false);
      return { body: OK, event: 'message', outcome: result.duplicate ? 'duplicate' : 'ok' };
    }

    await context.journal.record({
      channelId,
      vendor: VENDOR,
      kind: 'unhandled',
      reason: 'neither a Conversation (customerId + status) nor a Message (customerId + text)',
      rawBody: request.rawBody,
      contentType: request.contentType,
    });
    return { body: OK, event: 'unknown', outcome: 'unhandled' };
  };
}

/** Work started after answering a request; tracked so shutdown and tests can wait for it. */
export class Background {
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly logger: Logger) {}

  run(task: () => Promise<void>): void {
    const promise = task()
      .catch((error: unknown) => this.logger.warn({ err: error }, 'chatvisor background task failed'))
      .finally(() => this.pending.delete(promise));
    this.pending.add(promise);
  }

  /** Resolves when every task started so far (and any they started) has finished. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}
