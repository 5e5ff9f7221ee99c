import { z } from 'zod';
import { outboundEventTypeSchema } from '../config/schema.js';
import { contactSchema } from '../contacts/types.js';
import type { Store, StoreBatch } from '../store/types.js';

/**
 * The outbox: every outbound event (DESIGN §8) is appended here in the same atomic batch as the
 * change that caused it, before the vendor gets its answer — so a crash right after answering
 * loses nothing. The delivery side (src/delivery) drains the outbox into per-destination queues.
 */
export const OUTBOX_KEY = 'outbox';

/** The body destinations receive (contract: DESIGN §8). */
export const outboundEventSchema = z.object({
  id: z.string(),
  type: outboundEventTypeSchema,
  occurredAt: z.string(),
  channel: z.object({ id: z.string(), vendor: z.string() }).nullable(),
  contact: contactSchema.nullable(),
  data: z.record(z.string(), z.unknown()),
});
export type OutboundEvent = z.infer<typeof outboundEventSchema>;

/** What sits in the outbox: the event plus what the delivery side needs to order it. */
export const outboxEntrySchema = z.object({
  event: outboundEventSchema,
  /** Deliveries with the same ordering key are delivered in order (the contact id). */
  orderingKey: z.string(),
  /**
   * Other ordering keys whose deliveries recorded before this entry go before it and before
   * every later delivery under `orderingKey`: a merge names the contacts it absorbed, an unmerge's
   * split-off contact the one it left (src/delivery/README.md, "Order per contact").
   */
  follows: z.array(z.string()).optional(),
  /** When it was staged (ms since epoch), for the "oldest pending" metric. */
  stagedAt: z.number(),
});
export type OutboxEntry = z.infer<typeof outboxEntrySchema>;

/**
 * What the drain checks when reading the outbox back: the envelope it routes on. The contact
 * snapshot was built by the engine from the contact schema a moment earlier; validating it again
 * for every event was a measurable share of intake CPU (bench/profile.js) and bought nothing.
 */
export const storedOutboxEntrySchema = outboxEntrySchema.extend({
  event: outboundEventSchema.extend({ contact: z.looseObject({ id: z.string() }).nullable() }),
});

export interface EventPublisher {
  /** False when no destination is configured (OutboxOptions.enabled): staging does nothing. */
  readonly enabled: boolean;
  /** Queue the events into `batch`: they are committed together with the change. */
  stage(batch: StoreBatch, entries: OutboxEntry[]): void;
  /** Commit events that belong to no other change (e.g. agents.synced). */
  publish(entries: OutboxEntry[]): Promise<void>;
  /** Called after a batch with staged events committed; the dispatcher uses it to drain at once. */
  onCommitted(listener: () => void): void;
  /** Tell listeners that staged events were committed. */
  committed(): void;
}

export interface OutboxOptions {
  /**
   * False when no destination is configured: nothing would ever deliver the events, so they are
   * not recorded at all (a destination added later receives events from then on).
   */
  enabled?: boolean;
}

export function createOutboxPublisher(store: Store, options: OutboxOptions = {}): EventPublisher {
  const enabled = options.enabled ?? true;
  const listeners: Array<() => void> = [];
  const publisher: EventPublisher = {
    enabled,
    stage(batch, entries) {
      if (enabled && entries.length > 0)
        batch.rpush(OUTBOX_KEY, ...entries.map((entry) => JSON.stringify(entry)));
    },
    async publish(entries) {
      if (!enabled || entries.length === 0) return;
      const batch = store.batch();
      publisher.stage(batch, entries);
      await batch.exec();
      publisher.committed();
    },
    onCommitted(listener) {
      listeners.push(listener);
    },
    committed() {
      // Nothing was written, so there is nothing for the drain to look at.
      if (!enabled) return;
      for (const listener of listeners) listener();
    },
  };
  return publisher;
}
