import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { OUTBOX_KEY, type OutboxEntry, storedOutboxEntrySchema } from '../events/outbox.js';
import { wireJson } from '../net/http.js';
import { jittered } from '../net/retry.js';
import { lockRenewed } from '../store/renewal.js';
import type { Store } from '../store/types.js';
import { type DestinationRuntime, parkWaitMs } from './processor.js';
import type { DeliveryJob, DeliveryQueue } from './queue.js';
import {
  type DeliveryPlan,
  type DeliveryRecord,
  type DeliveryRecords,
  deliveryKeys,
  jobIdOf,
  jobOf,
  type LaneLinkPlan,
} from './records.js';
import { type RoutingContext, routeEvent } from './routing.js';

/**
 * Draining the outbox into deliveries. The outbox is a list that the core appends to; several
 * instances may drain it, so one chunk is drained under a short store lock:
 *
 *   read the first N entries -> create their delivery records (idempotent: the delivery id is a
 *   hash of destination and event id) -> queue them -> trim exactly those N entries.
 *
 * Appends go to the tail and the trim cuts the head, so nothing committed meanwhile is touched.
 * A crash before the trim only means the next drain reads the same entries again, finds their
 * records and adds nothing new. The lock is renewed every third of its lifetime while a chunk is
 * drained (src/store/renewal.ts) and once more before the trim; the trim is skipped when the lock
 * was lost: another instance may be draining the same entries, and two trims would cut entries
 * nobody has read. (It was not renewed and the trim was skipped past half its lifetime: on a
 * store slow enough that every chunk took 15 s, no chunk was ever trimmed, and past 30 s a second
 * instance drained the same chunk beside the first.) Entries that do not parse are moved, not
 * dropped, to `outbox:invalid`.
 *
 * The trim is also guarded, in the same atomic step, by what it relies on: the outbox still
 * starts with exactly the entries read, and the delivery record of every one of them exists.
 * During a Sentinel failover the steps of one drain can land on two servers: the slow test saw
 * a chunk read and its records written on the old primary (which was then demoted and lost
 * them) and its trim run on the new one, which had the entries but not the records — those
 * events were never delivered. With the guard, such a trim writes nothing, and the next drain
 * (on the new primary) creates the records there and trims. Once the trim has run on a server,
 * the records are on that server before it, so a replica that has the trim has them too.
 * Queue jobs are not part of the guard (they live in BullMQ's keys, written by another
 * connection); a job lost the same way is queued again from its pending record
 * (index.ts, restoreLostJobs).
 */

export const DRAIN_LOCK = 'delivery:drain';
export const INVALID_OUTBOX_KEY = 'outbox:invalid';
const LOCK_TTL_MS = 30_000;
export const DRAIN_CHUNK = 200;

export function deliveryIdOf(destinationId: string, eventId: string): string {
  const digest = createHash('sha256').update(`${destinationId}\n${eventId}`).digest('base64url');
  return `dlv_${digest.slice(0, 24)}`;
}

export interface DrainDeps {
  store: Store;
  records: DeliveryRecords;
  queue: DeliveryQueue;
  destinations: readonly DestinationRuntime[];
  routing: RoutingContext;
  logger: Logger;
  now(): Date;
  random(): number;
}

/** `busy`: nothing trimmed now (another instance holds the lock, or the trim was refused); look again soon. */
export type DrainResult = { kind: 'drained'; entries: number } | { kind: 'busy' };

export function planDeliveries(
  entry: OutboxEntry,
  destinations: readonly DestinationRuntime[],
  routing: RoutingContext,
): DeliveryPlan[] {
  const plans: DeliveryPlan[] = [];
  for (const { config } of destinations) {
    const body = routeEvent(config, entry.event, routing);
    if (!body) continue;
    plans.push({
      id: deliveryIdOf(config.id, entry.event.id),
      destinationId: config.id,
      eventId: entry.event.id,
      eventType: entry.event.type,
      orderingKey: entry.orderingKey,
      contactId: entry.event.contact?.id ?? null,
      stagedAt: entry.stagedAt,
      body: wireJson(body),
    });
  }
  return plans;
}

export type JobItem = { jobId: string; job: DeliveryJob; delayMs: number };

/**
 * The queue jobs of pending records, by destination: new ones after the schedule's first delay,
 * others when they are due. A record behind another of its lane in the same batch (a chunk often
 * holds several events of one contact: a chat_finished makes three) is queued no earlier than
 * the wait its run would park for behind that one (parkWaitMs: the first's time, its timeout,
 * PARK_MARGIN_MS): it would run at once only to find the first pending and be moved
 * to delayed for that long. The first's leaving the lane wakes it (promotes it) as it woke the
 * parked job, and a wake that never comes is made up by the delay, as the park's was. Ordering
 * is the run's to keep (it reads the lane); this only spares the run that could not go yet.
 */
export function jobsOf(
  records: readonly DeliveryRecord[],
  destinations: ReadonlyMap<string, DestinationRuntime>,
  now: number,
  random: () => number,
): Map<string, JobItem[]> {
  const byDestination = new Map<string, JobItem[]>();
  /** Per lane (destination and ordering key): its first record in the batch, and when that is due. */
  const firsts = new Map<string, { seq: number; delayMs: number }>();
  const laneOf = (record: DeliveryRecord) => `${record.destinationId}\n${record.orderingKey}`;
  const items: Array<{ record: DeliveryRecord; item: JobItem }> = [];
  for (const record of records) {
    const destination = destinations.get(record.destinationId);
    if (!destination) continue;
    const fresh = record.cycle === 0 && record.cycleAttempts === 0;
    const due = record.nextAttemptAt ? Date.parse(record.nextAttemptAt) - now : 0;
    const delayMs = fresh
      ? jittered(destination.config.retrySchedule[0] ?? 0, 0.1, random)
      : Math.max(0, due);
    const item = { jobId: jobIdOf(record), job: jobOf(record), delayMs };
    items.push({ record, item });
    const first = firsts.get(laneOf(record));
    if (first === undefined || record.seq < first.seq)
      firsts.set(laneOf(record), { seq: record.seq, delayMs });
    const list = byDestination.get(record.destinationId) ?? [];
    list.push(item);
    byDestination.set(record.destinationId, list);
  }
  for (const { record, item } of items) {
    const first = firsts.get(laneOf(record))!;
    if (record.seq <= first.seq) continue;
    item.delayMs = Math.max(item.delayMs, parkWaitMs(first.delayMs, destinations.get(record.destinationId)!));
  }
  return byDestination;
}

/** Queue pending records (see jobsOf); a job that exists already is left as it is. */
export async function queueRecords(
  queue: DeliveryQueue,
  records: readonly DeliveryRecord[],
  destinations: ReadonlyMap<string, DestinationRuntime>,
  now: number,
  random: () => number,
): Promise<void> {
  const byDestination = jobsOf(records, destinations, now, random);
  await Promise.all(
    [...byDestination].map(([destinationId, items]) => queue.enqueueMany(destinationId, items)),
  );
}

export function createDrainer(deps: DrainDeps) {
  // deps.queue is read when needed: the delivery builds its queue on first use.
  const { store, records, logger } = deps;
  const byId = new Map(deps.destinations.map((destination) => [destination.config.id, destination]));

  function parse(text: string): OutboxEntry | null {
    try {
      const parsed = storedOutboxEntrySchema.safeParse(JSON.parse(text));
      return parsed.success ? (parsed.data as OutboxEntry) : null;
    } catch {
      return null;
    }
  }

  /** Drain one chunk. */
  async function drainChunk(): Promise<DrainResult> {
    const lock = await lockRenewed(store, DRAIN_LOCK, LOCK_TTL_MS, {
      onRenewError: (error) =>
        logger.warn({ err: error }, 'outbox drain: could not renew the drain lock; trying again'),
    });
    if (!lock) return { kind: 'busy' };
    try {
      // As bytes: the trim below expects the list to start with exactly what was read, and an
      // entry that is not valid UTF-8 (corrupted) would never match its text decoding, leaving
      // the outbox untrimmable for good; it is set aside as the bytes it is.
      const raw = await store.lrangeBuffer(OUTBOX_KEY, 0, DRAIN_CHUNK - 1);
      if (raw.length === 0) return { kind: 'drained', entries: 0 };
      const invalid: Buffer[] = [];
      const plans: DeliveryPlan[] = [];
      const links: LaneLinkPlan[] = [];
      for (const bytes of raw) {
        const entry = parse(bytes.toString('utf8'));
        if (!entry) {
          invalid.push(bytes);
          continue;
        }
        // For every destination, whether it takes this event or not: its later ones of the
        // contact follow as well.
        for (const follows of entry.follows ?? [])
          for (const { config } of deps.destinations)
            links.push({ destinationId: config.id, lane: entry.orderingKey, follows, at: plans.length });
        plans.push(...planDeliveries(entry, deps.destinations, deps.routing));
      }
      const now = deps.now();
      const pending = await records.ensure(plans, now, links);
      await queueRecords(deps.queue, pending, byId, now.getTime(), deps.random);
      // Renewed once more here: the timer's renewals may not have run (an event loop held up).
      if (!(await lock.stillHeld())) {
        logger.warn(
          'outbox drain lost its lock; leaving the entries for the next drain (their deliveries exist already)',
        );
        return { kind: 'busy' };
      }
      const batch = store.batch().expectListHead(OUTBOX_KEY, raw);
      for (const id of new Set(plans.map((plan) => plan.id))) batch.expectExists(deliveryKeys.record(id));
      if (invalid.length > 0) batch.rpush(INVALID_OUTBOX_KEY, ...invalid);
      batch.ltrim(OUTBOX_KEY, raw.length, -1);
      if (!(await batch.exec())) {
        logger.warn(
          { entries: raw.length },
          'outbox drain: the server that would trim the outbox does not hold what this drain read and wrote ' +
            '(a Redis failover in between?); leaving the entries for the next drain',
        );
        return { kind: 'busy' };
      }
      if (invalid.length > 0) {
        logger.error(
          { count: invalid.length },
          `outbox entries that do not parse were moved to ${INVALID_OUTBOX_KEY}`,
        );
      }
      return { kind: 'drained', entries: raw.length };
    } finally {
      await lock.release();
    }
  }

  /** Drain until the outbox is empty or another instance holds the lock (`busy`). */
  async function drainAll(): Promise<{ entries: number; busy: boolean }> {
    let entries = 0;
    for (;;) {
      const result = await drainChunk();
      if (result.kind === 'busy') return { entries, busy: true };
      entries += result.entries;
      if (result.entries < DRAIN_CHUNK) return { entries, busy: false };
    }
  }

  return { drainChunk, drainAll };
}
