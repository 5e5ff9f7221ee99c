import { z } from 'zod';
import { ConflictError, StoreBusyError } from '../errors.js';
import { LOCK_KEY_PREFIX } from '../store/memory.js';
import type { Lock, Store, StoreBatch } from '../store/types.js';
import type { DeliveryJob } from './queue.js';

/**
 * Delivery records: one per (destination, event), in the store, whatever the queue behind them.
 * They hold the exact body sent, the state (pending, delivered, failed), attempts and the last
 * error, and they carry the per-contact ordering (lanes). The queue (BullMQ or in-process) only
 * decides *when* a delivery is attempted; the record decides *whether* it may be.
 *
 * Keys (without the store prefix):
 * - `delivery:rec:<id>`                       the record (JSON); delivered ones expire, failed
 *                                               ones are deleted past their destination's
 *                                               `failedRetention` when it has one (pruneFailed)
 * - `delivery:lane:<destination>:<orderingKey>` sorted set of pending ids by sequence: the head
 *                                               is the only one of the lane that may be attempted
 * - `delivery:idx:<state>[:<destination>]`    sorted sets by time, for listing and metrics
 * - `delivery:seq`                            counter for lane sequence numbers
 * - `delivery:follows:<destination>:<lane>`   lanes this lane follows (a merge, an unmerge), each
 *                                               scored by the sequence from which on it waits for
 *                                               the other lane's pending deliveries before that
 * - `delivery:followed:<destination>:<lane>`  the same links from the other end (who to wake)
 */

export const deliveryStates = ['pending', 'delivered', 'failed'] as const;
export const deliveryStateSchema = z.enum(deliveryStates);
export type DeliveryState = z.infer<typeof deliveryStateSchema>;

export const deliveryErrorSchema = z.object({
  /** The HTTP status, or null for a network error or timeout. */
  status: z.number().int().nullable(),
  message: z.string(),
  at: z.string(),
});
export type DeliveryError = z.infer<typeof deliveryErrorSchema>;

/** One attempt as the console shows it; the record keeps the last MAX_HISTORY. */
export const deliveryAttemptSchema = z.object({
  at: z.string(),
  cycle: z.number().int().nonnegative(),
  /** The HTTP status, or null for a network error or timeout. */
  status: z.number().int().nullable(),
  error: z.string().nullable(),
});
export type DeliveryAttempt = z.infer<typeof deliveryAttemptSchema>;
const MAX_HISTORY = 20;

function withAttempt(
  record: { history: DeliveryAttempt[]; cycle: number },
  attempt: Omit<DeliveryAttempt, 'cycle'>,
) {
  return [...record.history, { ...attempt, cycle: record.cycle }].slice(-MAX_HISTORY);
}

export const deliveryRecordSchema = z.object({
  id: z.string(),
  destinationId: z.string(),
  eventId: z.string(),
  eventType: z.string(),
  orderingKey: z.string(),
  contactId: z.string().nullable(),
  state: deliveryStateSchema,
  /** Bumped by each replay; queue jobs are named `<id>.<cycle>` so a replay never meets an old job. */
  cycle: z.number().int().nonnegative(),
  /** Position in the lane (drain order = outbox commit order). */
  seq: z.number(),
  /** Attempts ever made, and attempts in the current cycle (the retry schedule's index). */
  attempts: z.number().int().nonnegative(),
  cycleAttempts: z.number().int().nonnegative(),
  stagedAt: z.number(),
  /** Score in the pending index: stagedAt, or the replay time (drives the oldest-pending metric). */
  pendingSince: z.number(),
  createdAt: z.string(),
  updatedAt: z.string(),
  nextAttemptAt: z.string().nullable(),
  deliveredAt: z.string().nullable(),
  failedAt: z.string().nullable(),
  lastStatus: z.number().int().nullable(),
  lastError: deliveryErrorSchema.nullable(),
  /** The exact JSON body sent (signatures are over these bytes). */
  body: z.string(),
  /** The last attempts, oldest first (records written before this field have none). */
  history: z.array(deliveryAttemptSchema).default([]),
  /**
   * CRM destinations: the objects this delivery created so far (contact, deal, task, note ids),
   * so a retry or a replay resumes instead of creating them again (DESIGN §10).
   */
  crm: z.record(z.string(), z.string()).optional(),
});
export type DeliveryRecord = z.infer<typeof deliveryRecordSchema>;

/** What the drain decides: one delivery of one event to one destination. */
export interface DeliveryPlan {
  id: string;
  destinationId: string;
  eventId: string;
  eventType: string;
  orderingKey: string;
  contactId: string | null;
  stagedAt: number;
  body: string;
}

/**
 * A lane link the drain asks for: from the outbox entry at `at` (its index in the plans given to
 * ensure()) on, the deliveries of `lane` go after those of `follows` recorded before it.
 */
export interface LaneLinkPlan {
  destinationId: string;
  lane: string;
  follows: string;
  at: number;
}

/** A link as stored: the other lane, and the sequence from which on the link holds. */
export interface LaneLink {
  lane: string;
  from: number;
}

/** prune(): ids forgotten per store batch, and batches per index key in one call (100 000 ids). */
const PRUNE_SLICE = 1000;
const PRUNE_ROUNDS = 100;

/** Sequence numbers: one counter step per drained chunk, the position inside the chunk below it. */
const SEQ_SPAN = 1_000_000;

const enc = (destinationId: string) => encodeURIComponent(destinationId);

export const deliveryKeys = {
  record: (id: string) => `delivery:rec:${id}`,
  seq: 'delivery:seq',
  lane: (destinationId: string, orderingKey: string) => `delivery:lane:${enc(destinationId)}:${orderingKey}`,
  /** Sorted set: instances running with this destination in their config, scored by when that lapses. */
  served: (destinationId: string) => `delivery:served:${enc(destinationId)}`,
  /** The lease a CRM attempt holds while it runs (a store lock on this key): one run at a time. */
  lease: (id: string) => `delivery:lease:${id}`,
  follows: (destinationId: string, lane: string) => `delivery:follows:${enc(destinationId)}:${lane}`,
  followed: (destinationId: string, lane: string) => `delivery:followed:${enc(destinationId)}:${lane}`,
  index: (state: DeliveryState, destinationId?: string) =>
    destinationId === undefined ? `delivery:idx:${state}` : `delivery:idx:${state}:${enc(destinationId)}`,
};

export function jobIdOf(record: Pick<DeliveryRecord, 'id' | 'cycle'>): string {
  return `${record.id}.${record.cycle}`;
}

/** What a queue job of this record carries (queue.ts DeliveryJob). */
export function jobOf(record: Pick<DeliveryRecord, 'id' | 'cycle' | 'orderingKey'>): DeliveryJob {
  return { deliveryId: record.id, cycle: record.cycle, orderingKey: record.orderingKey };
}

export interface DeliveryRecords {
  /**
   * Create the records that do not exist yet (a drain repeated after a crash finds them) and
   * return every planned delivery that is pending, new or not, so the caller (re)queues it.
   * In the same write, the lane links asked for (a merge's, an unmerge's) where the lane followed
   * has deliveries pending before the link and none is stored yet (a repeated drain adds none).
   */
  ensure(
    plans: readonly DeliveryPlan[],
    now: Date,
    links?: readonly LaneLinkPlan[],
  ): Promise<DeliveryRecord[]>;
  get(id: string): Promise<DeliveryRecord | null>;
  laneHead(destinationId: string, orderingKey: string): Promise<string | null>;
  /** The lanes this lane follows (ensure's links), with the sequence each holds from. */
  follows(destinationId: string, lane: string): Promise<LaneLink[]>;
  /** The lanes that follow this lane, with the sequence each link holds from. */
  followers(destinationId: string, lane: string): Promise<LaneLink[]>;
  /** Drop the link of `lane` to `followed`: nothing it waited for is pending any more. */
  unfollow(destinationId: string, lane: string, followed: string): Promise<void>;
  /** Drop an id from a lane without touching its record (healing a lane whose head is gone). */
  leaveLane(destinationId: string, orderingKey: string, id: string): Promise<void>;
  /**
   * An attempt's outcome, written over `record` only if the stored record is still the one
   * `record` was read as (get, ensure, inState, or an earlier mark): a compare-and-set. null when
   * it changed meanwhile (a replay, another run of the same delivery, a failure as stalled):
   * then nothing is written and the newer state stands.
   */
  markDelivered(record: DeliveryRecord, status: number, now: Date): Promise<DeliveryRecord | null>;
  /** As markDelivered: only over `record` as read; null (nothing written) when it changed. */
  markRetry(
    record: DeliveryRecord,
    error: DeliveryError,
    nextAttemptAt: Date,
    now: Date,
  ): Promise<DeliveryRecord | null>;
  /** As markDelivered: only over `record` as read; null (nothing written) when it changed. */
  markFailed(
    record: DeliveryRecord,
    error: DeliveryError,
    now: Date,
    countsAsAttempt: boolean,
  ): Promise<DeliveryRecord | null>;
  /**
   * Fail a pending delivery without an attempt (its destination left the config), unless the
   * record changed since it was read (another instance attempted it meanwhile): false then.
   */
  abandon(id: string, error: DeliveryError, now: Date): Promise<boolean>;
  /**
   * Every delivery in `state` for a destination, as id and lane sequence, in sequence order (the
   * order of their lanes). Read whole, in slices: the index is by time and orders deliveries of
   * one millisecond by id, which a page boundary would cut through.
   */
  inSeqOrder(
    state: DeliveryState,
    destinationId?: string,
  ): Promise<Array<{ id: string; seq: number; destinationId: string }>>;
  /**
   * Merge a CRM step's result into the record's `crm` progress, the record as it is now, by
   * compare-and-set: a replay or a failure as stalled written meanwhile stands (the step with it).
   */
  saveProgress(id: string, patch: Record<string, string>): Promise<void>;
  /**
   * Take the delivery's lease for `ttlMs` (renew it while the run goes on); null when another
   * run holds it. A run that dies leaves it to expire, so the delivery is not lost with it.
   */
  lease(id: string, ttlMs: number): Promise<Lock | null>;
  /** How long the lease another run holds lasts at most (ms, by the store's clock); 0 when none. */
  leaseLeft(id: string): Promise<number>;
  /**
   * Back to pending at the end of its lane — of `lane` when given (the lane of the contact its
   * own was merged into since) —; ConflictError when it is pending already.
   */
  replay(id: string, now: Date, lane?: string): Promise<DeliveryRecord | null>;
  /**
   * Move a pending delivery to the end of `lane` (a replay's, when the contact was merged or
   * split meanwhile): only before its job is queued, when no attempt can be writing the record.
   * The record as it is then (unchanged when it is not pending, or in that lane already).
   */
  relane(id: string, lane: string): Promise<DeliveryRecord | null>;
  /** Oldest first (by the time they entered the state); `from` is an inclusive minimum score. */
  list(options: {
    state: DeliveryState;
    destinationId?: string;
    limit: number;
    from?: number;
  }): Promise<DeliveryRecord[]>;
  /**
   * Index entries of `state` strictly after `after` in the index's own order (score, then id),
   * at most `limit`, with their scores: a position that deliveries added meanwhile do not shift,
   * so a listing paged by it neither skips nor repeats one.
   */
  indexAfter(options: {
    state: DeliveryState;
    destinationId?: string | undefined;
    limit: number;
    after?: { score: number; id: string } | undefined;
  }): Promise<Array<{ id: string; score: number }>>;
  /** The records of these ids still in `state`, in the order given (others are left out). */
  inState(state: DeliveryState, ids: readonly string[]): Promise<DeliveryRecord[]>;
  count(state: DeliveryState, destinationId?: string): Promise<number>;
  /** Age basis of the oldest pending delivery (ms since epoch), or null when none is pending. */
  oldestPending(destinationId: string): Promise<number | null>;
  /** Forget delivered ones older than the retention from the indexes (their records expire by TTL). */
  prune(now: Date, destinationIds: readonly string[]): Promise<number>;
  /**
   * Delete failed records older than their destination's retention (ms; destinations absent or
   * at 0 keep theirs for good) and forget them from the failed indexes. A record that is no
   * longer failed when the delete runs (replayed meanwhile) is left as it is. Returns how many
   * records were deleted, per destination (only destinations with at least one).
   */
  pruneFailed(now: Date, retentions: ReadonlyMap<string, number>): Promise<Map<string, number>>;
}

export function createDeliveryRecords(
  store: Store,
  options: {
    deliveredRetentionMs: number;
    /**
     * A stored record that is not a delivery record (damaged by hand, or written by a version
     * whose records this one cannot read). It is passed over like a missing one — its job ends,
     * its lane moves on — so this says so, where it used to go unseen.
     */
    onUnreadable?: (id: string, reason: string) => void;
  },
): DeliveryRecords {
  const retention = options.deliveredRetentionMs;
  /**
   * The stored text each record was read as (or written as): an attempt's outcome is written only
   * over that text (markWrite), as the contact engine does with its records. Weak: a record
   * nobody holds any more takes its text with it.
   */
  const readAs = new WeakMap<DeliveryRecord, string>();

  function parse(raw: string | null, id: string): DeliveryRecord | null {
    if (raw === null) return null;
    let reason: string;
    try {
      const parsed = deliveryRecordSchema.safeParse(JSON.parse(raw));
      if (parsed.success) {
        readAs.set(parsed.data, raw);
        return parsed.data;
      }
      const issue = parsed.error.issues[0];
      reason = `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`;
    } catch {
      reason = 'not JSON';
    }
    options.onUnreadable?.(id, reason);
    return null;
  }

  function moveIndex(
    batch: ReturnType<Store['batch']>,
    record: DeliveryRecord,
    from: DeliveryState | null,
    to: DeliveryState,
    score: number,
  ) {
    if (from !== null) {
      batch.zrem(deliveryKeys.index(from), record.id);
      batch.zrem(deliveryKeys.index(from, record.destinationId), record.id);
    }
    batch.zadd(deliveryKeys.index(to), score, record.id);
    batch.zadd(deliveryKeys.index(to, record.destinationId), score, record.id);
  }

  /**
   * Write an attempt's outcome `next` over `record`, only if the stored record is still the text
   * `record` was read as. An attempt runs for up to its timeout, and meanwhile the record may have
   * moved on: another run of the same delivery (BullMQ gives a job whose lock lapsed to another
   * worker) recorded its outcome, the delivery failed as stalled, and an operator replayed it (a
   * new cycle, its job queued). A plain write put the attempt's outcome over all that: the replay
   * showed delivered with its own attempt still to come (whose job then found the cycle gone and
   * did nothing), or lost the attempts and history written meanwhile. `extra` adds the lane and
   * index changes. null when the record changed: nothing is written. A try whose answer was lost
   * but which did land (the store tried again after a failover) finds its own text: written.
   */
  async function markWrite(
    record: DeliveryRecord,
    next: DeliveryRecord,
    ttlMs: number | undefined,
    extra: (batch: StoreBatch) => void,
  ): Promise<DeliveryRecord | null> {
    const key = deliveryKeys.record(record.id);
    const text = JSON.stringify(next);
    // A record built by hand (not read through here) is compared as it would have been written.
    const batch = store.batch().expect(key, readAs.get(record) ?? JSON.stringify(record));
    batch.set(key, text, ttlMs);
    extra(batch);
    if (!(await batch.exec()) && (await store.get(key)) !== text) return null;
    readAs.set(next, text);
    return next;
  }

  const records: DeliveryRecords = {
    async ensure(plans, now, links = []) {
      const unique = [...new Map(plans.map((plan) => [plan.id, plan])).values()];
      if (unique.length === 0 && links.length === 0) return [];
      if (unique.length >= SEQ_SPAN) throw new Error(`too many deliveries in one chunk (${unique.length})`);
      const existing = await store.mget(unique.map((plan) => deliveryKeys.record(plan.id)));
      const pending: DeliveryRecord[] = [];
      const fresh: DeliveryPlan[] = [];
      unique.forEach((plan, index) => {
        const raw = existing[index] ?? null;
        if (raw === null) {
          fresh.push(plan);
          return;
        }
        const record = parse(raw, plan.id);
        if (record?.state === 'pending') pending.push(record);
      });
      const linking = await linksToWrite(plans, fresh, links);
      if (fresh.length === 0 && linking.length === 0) return pending;
      const chunk = await store.incr(deliveryKeys.seq);
      const at = now.toISOString();
      const batch = store.batch();
      for (const link of linking) {
        // The sequence the entry's own deliveries get (or would: one a destination does not
        // want still starts the link there): every fresh one planned before it is below.
        const from = chunk * SEQ_SPAN + link.freshBefore;
        batch.zadd(deliveryKeys.follows(link.destinationId, link.lane), from, link.follows);
        batch.zadd(deliveryKeys.followed(link.destinationId, link.follows), from, link.lane);
      }
      fresh.forEach((plan, index) => {
        const record: DeliveryRecord = {
          id: plan.id,
          destinationId: plan.destinationId,
          eventId: plan.eventId,
          eventType: plan.eventType,
          orderingKey: plan.orderingKey,
          contactId: plan.contactId,
          state: 'pending',
          cycle: 0,
          seq: chunk * SEQ_SPAN + index,
          attempts: 0,
          cycleAttempts: 0,
          stagedAt: plan.stagedAt,
          pendingSince: plan.stagedAt,
          createdAt: at,
          updatedAt: at,
          nextAttemptAt: at,
          deliveredAt: null,
          failedAt: null,
          lastStatus: null,
          lastError: null,
          body: plan.body,
          history: [],
        };
        const text = JSON.stringify(record);
        readAs.set(record, text);
        batch.set(deliveryKeys.record(record.id), text);
        batch.zadd(deliveryKeys.lane(record.destinationId, record.orderingKey), record.seq, record.id);
        moveIndex(batch, record, null, 'pending', record.pendingSince);
        pending.push(record);
      });
      await batch.exec();
      return pending;
    },

    async get(id) {
      return parse(await store.get(deliveryKeys.record(id)), id);
    },

    async follows(destinationId, lane) {
      const found = await store.zrangeByScoreWithScores(
        deliveryKeys.follows(destinationId, lane),
        Number.NEGATIVE_INFINITY,
        Number.POSITIVE_INFINITY,
      );
      return found.map(({ member, score }) => ({ lane: member, from: score }));
    },

    async followers(destinationId, lane) {
      const found = await store.zrangeByScoreWithScores(
        deliveryKeys.followed(destinationId, lane),
        Number.NEGATIVE_INFINITY,
        Number.POSITIVE_INFINITY,
      );
      return found.map(({ member, score }) => ({ lane: member, from: score }));
    },

    async unfollow(destinationId, lane, followed) {
      const batch = store.batch();
      batch.zrem(deliveryKeys.follows(destinationId, lane), followed);
      batch.zrem(deliveryKeys.followed(destinationId, followed), lane);
      await batch.exec();
    },

    async laneHead(destinationId, orderingKey) {
      const [head] = await store.zrangeByScore(
        deliveryKeys.lane(destinationId, orderingKey),
        Number.NEGATIVE_INFINITY,
        Number.POSITIVE_INFINITY,
        1,
      );
      return head ?? null;
    },

    async leaveLane(destinationId, orderingKey, id) {
      await store.zrem(deliveryKeys.lane(destinationId, orderingKey), id);
    },

    async markDelivered(record, status, now) {
      const at = now.toISOString();
      const next: DeliveryRecord = {
        ...record,
        state: 'delivered',
        attempts: record.attempts + 1,
        cycleAttempts: record.cycleAttempts + 1,
        updatedAt: at,
        nextAttemptAt: null,
        deliveredAt: at,
        lastStatus: status,
        history: withAttempt(record, { at, status, error: null }),
      };
      return markWrite(record, next, retention, (batch) => {
        batch.zrem(deliveryKeys.lane(record.destinationId, record.orderingKey), record.id);
        moveIndex(batch, next, 'pending', 'delivered', now.getTime());
      });
    },

    async markRetry(record, error, nextAttemptAt, now) {
      const next: DeliveryRecord = {
        ...record,
        attempts: record.attempts + 1,
        cycleAttempts: record.cycleAttempts + 1,
        updatedAt: now.toISOString(),
        nextAttemptAt: nextAttemptAt.toISOString(),
        lastStatus: error.status,
        lastError: error,
        history: withAttempt(record, { at: error.at, status: error.status, error: error.message }),
      };
      return markWrite(record, next, undefined, () => {});
    },

    async markFailed(record, error, now, countsAsAttempt) {
      const at = now.toISOString();
      const step = countsAsAttempt ? 1 : 0;
      const next: DeliveryRecord = {
        ...record,
        state: 'failed',
        attempts: record.attempts + step,
        cycleAttempts: record.cycleAttempts + step,
        updatedAt: at,
        nextAttemptAt: null,
        failedAt: at,
        lastStatus: error.status,
        lastError: error,
        history: countsAsAttempt
          ? withAttempt(record, { at: error.at, status: error.status, error: error.message })
          : record.history,
      };
      return markWrite(record, next, undefined, (batch) => {
        batch.zrem(deliveryKeys.lane(record.destinationId, record.orderingKey), record.id);
        moveIndex(batch, next, 'pending', 'failed', now.getTime());
      });
    },

    async abandon(id, error, now) {
      const raw = await store.get(deliveryKeys.record(id));
      const record = parse(raw, id);
      if (raw === null || record?.state !== 'pending') return false;
      const at = now.toISOString();
      const next: DeliveryRecord = {
        ...record,
        state: 'failed',
        updatedAt: at,
        nextAttemptAt: null,
        failedAt: at,
        lastError: error,
      };
      const batch = store.batch().expect(deliveryKeys.record(id), raw);
      batch.set(deliveryKeys.record(id), JSON.stringify(next));
      batch.zrem(deliveryKeys.lane(record.destinationId, record.orderingKey), id);
      moveIndex(batch, next, 'pending', 'failed', now.getTime());
      return batch.exec();
    },

    async saveProgress(id, patch) {
      // Only the delivery's own attempt writes here, holding the delivery's lease (processor.ts),
      // but the lease keeps out other attempts, not every writer: another run of the job fails it
      // as stalled (abandon) and an operator replays it without the lease. A plain write of the
      // record as read undid such a write landing between the read and the write (the replay
      // back to failed, its job finding its cycle gone; the stalled failure back to pending), so
      // the step is merged into the record only as read (compare-and-set), read again when it
      // changed. Whatever the record became, the step stands on it: it names what this attempt
      // made in the CRM, which a replay's attempt must not make again.
      const key = deliveryKeys.record(id);
      // Each round follows one write by another writer: a handful at most.
      for (let round = 0; round < 10; round++) {
        const raw = await store.get(key);
        const record = parse(raw, id);
        // Gone, or delivered by another run (its retention TTL is not to be dropped): nothing to resume.
        if (raw === null || !record || record.state === 'delivered') return;
        const next: DeliveryRecord = { ...record, crm: { ...record.crm, ...patch } };
        const text = JSON.stringify(next);
        if (await store.batch().expect(key, raw).set(key, text).exec()) return;
        // A try whose answer was lost but which did land (the store tried again) finds its own text.
        if ((await store.get(key)) === text) return;
      }
      // Unreachable in practice (ten writers in a row between a read and a write): the attempt
      // fails as an error and its job runs again, rather than going on with its step unrecorded.
      throw new Error(`delivery ${id} kept changing while a CRM step was recorded on it`);
    },

    async lease(id, ttlMs) {
      try {
        return await store.lock([deliveryKeys.lease(id)], { ttlMs, waitMs: 0 });
      } catch (error) {
        if (error instanceof StoreBusyError) return null;
        throw error;
      }
    },

    async leaseLeft(id) {
      return Math.max(0, await store.pttl(LOCK_KEY_PREFIX + deliveryKeys.lease(id)));
    },

    async replay(id, now, lane) {
      const raw = await store.get(deliveryKeys.record(id));
      const record = parse(raw, id);
      if (raw === null || !record) return null;
      if (record.state === 'pending') {
        throw new ConflictError(
          'delivery_pending',
          `delivery ${id} is pending already; it will be attempted`,
        );
      }
      const chunk = await store.incr(deliveryKeys.seq);
      const at = now.toISOString();
      const next: DeliveryRecord = {
        ...record,
        orderingKey: lane ?? record.orderingKey,
        state: 'pending',
        cycle: record.cycle + 1,
        seq: chunk * SEQ_SPAN,
        cycleAttempts: 0,
        pendingSince: now.getTime(),
        updatedAt: at,
        nextAttemptAt: at,
      };
      // Only over the record as read: two replays at once (a double click, the console and the
      // CLI) both read it failed, both answered 202 and counted, and the later write could put
      // back, over the first replay's delivered attempt, the failed record it had read.
      const batch = store.batch().expect(deliveryKeys.record(id), raw);
      // A plain SET also drops the TTL a delivered record had: a pending record must not expire.
      batch.set(deliveryKeys.record(id), JSON.stringify(next));
      // Not in its old lane any more (it left it when it was delivered or failed): moved, it
      // must not be found there by whatever comes to that lane later either.
      if (next.orderingKey !== record.orderingKey)
        batch.zrem(deliveryKeys.lane(record.destinationId, record.orderingKey), id);
      batch.zadd(deliveryKeys.lane(next.destinationId, next.orderingKey), next.seq, id);
      moveIndex(batch, next, record.state, 'pending', next.pendingSince);
      if (!(await batch.exec())) {
        // Deleted meanwhile (past its destination's failed retention, pruneFailed): unknown now.
        if ((await store.get(deliveryKeys.record(id))) === null) return null;
        throw new ConflictError(
          'delivery_pending',
          `delivery ${id} was replayed by someone else meanwhile; it will be attempted`,
        );
      }
      return next;
    },

    async relane(id, lane) {
      const raw = await store.get(deliveryKeys.record(id));
      const record = parse(raw, id);
      if (raw === null || record?.state !== 'pending' || record.orderingKey === lane) return record;
      const chunk = await store.incr(deliveryKeys.seq);
      const next: DeliveryRecord = { ...record, orderingKey: lane, seq: chunk * SEQ_SPAN };
      const batch = store.batch().expect(deliveryKeys.record(id), raw);
      batch.set(deliveryKeys.record(id), JSON.stringify(next));
      batch.zrem(deliveryKeys.lane(record.destinationId, record.orderingKey), id);
      batch.zadd(deliveryKeys.lane(next.destinationId, lane), next.seq, id);
      return (await batch.exec()) ? next : records.get(id);
    },

    async list({ state, destinationId, limit, from }) {
      const ids = await store.zrangeByScore(
        deliveryKeys.index(state, destinationId),
        from ?? Number.NEGATIVE_INFINITY,
        Number.POSITIVE_INFINITY,
        limit,
      );
      return records.inState(state, ids);
    },

    async indexAfter({ state, destinationId, limit, after }) {
      const key = deliveryKeys.index(state, destinationId);
      const top = Number.POSITIVE_INFINITY;
      if (!after) {
        const found = await store.zrangeByScoreWithScores(key, Number.NEGATIVE_INFINITY, top, limit);
        return found.map(({ member, score }) => ({ id: member, score }));
      }
      // Ties at the cursor's score are ordered by id (byte order; delivery ids are ASCII, where
      // JS string order is byte order): the ones past the cursor's id, then what scores higher.
      // Read whole: they are the deliveries of one millisecond.
      const ties = await store.zrangeByScoreWithScores(key, after.score, after.score);
      const out = ties
        .filter(({ member }) => member > after.id)
        .slice(0, limit)
        .map(({ member, score }) => ({ id: member, score }));
      if (out.length >= limit) return out;
      // From the cursor's score again (the store's range has no exclusive bound), past the ties
      // just read. Ties added meanwhile take room in that read: read again past them then.
      const need = limit - out.length;
      let skip = ties.length;
      for (;;) {
        const rest = await store.zrangeByScoreWithScores(key, after.score, top, skip + need);
        const above = rest.filter(({ score }) => score > after.score);
        if (above.length < need && rest.length === skip + need) {
          skip = rest.length - above.length; // more ties than `skip`: grows every round
          continue;
        }
        for (const { member, score } of above.slice(0, need)) out.push({ id: member, score });
        return out;
      }
    },

    async inState(state, ids) {
      if (ids.length === 0) return [];
      const raws = await store.mget(ids.map((id) => deliveryKeys.record(id)));
      // A delivered record may have expired before prune() dropped it from the index, and one
      // may have changed state since the index was read.
      return raws
        .map((raw, index) => parse(raw, ids[index]!))
        .filter((record): record is DeliveryRecord => record !== null && record.state === state);
    },

    async inSeqOrder(state, destinationId) {
      const ids = await store.zrangeByScore(
        deliveryKeys.index(state, destinationId),
        Number.NEGATIVE_INFINITY,
        Number.POSITIVE_INFINITY,
      );
      const found: Array<{ id: string; seq: number; destinationId: string }> = [];
      for (let start = 0; start < ids.length; start += 500) {
        const slice = ids.slice(start, start + 500);
        const raws = await store.mget(slice.map((id) => deliveryKeys.record(id)));
        for (const record of raws.map((raw, index) => parse(raw, slice[index]!)))
          if (record !== null && record.state === state)
            found.push({ id: record.id, seq: record.seq, destinationId: record.destinationId });
      }
      return found.sort((a, b) => a.seq - b.seq);
    },

    count(state, destinationId) {
      return store.zcard(deliveryKeys.index(state, destinationId));
    },

    async oldestPending(destinationId) {
      const key = deliveryKeys.index('pending', destinationId);
      const [id] = await store.zrangeByScore(key, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, 1);
      if (id === undefined) return null;
      return store.zscore(key, id);
    },

    async prune(now, destinationIds) {
      const cutoff = now.getTime() - retention;
      let pruned = 0;
      for (const key of [
        deliveryKeys.index('delivered'),
        ...destinationIds.map((id) => deliveryKeys.index('delivered', id)),
      ]) {
        // Until the key holds nothing past the retention (within a bound per call): one slice of
        // PRUNE_SLICE per key per call (every 5 s) forgot at most 200 deliveries a second, fewer
        // than a bridge delivers (400/s in the README's CPU bench), and the indexes grew for good.
        await staleSlices(key, cutoff, async (stale) => {
          const batch = store.batch();
          for (const id of stale) batch.zrem(key, id);
          await batch.exec();
          pruned += stale.length;
          return true;
        });
      }
      return pruned;
    },

    async pruneFailed(now, retentions) {
      const dropped = new Map<string, number>();
      for (const [destinationId, retentionMs] of retentions) {
        if (!(retentionMs > 0)) continue;
        const key = deliveryKeys.index('failed', destinationId);
        const cutoff = now.getTime() - retentionMs;
        let count = 0;
        // Bounded like prune(): what is left goes at the next run.
        await staleSlices(key, cutoff, async (stale) => {
          const raws = await store.mget(stale.map((id) => deliveryKeys.record(id)));
          const slice = await dropFailed(destinationId, stale, raws);
          count += slice.deleted;
          // Nothing of the slice could go (records in another state or unreadable, left for a
          // person to look at): the same ids would come back first in every round.
          return slice.forgotten > 0;
        });
        if (count > 0) dropped.set(destinationId, count);
      }
      return dropped;
    },
  };

  /**
   * The links of ensure() to write: one per (destination, lane, lane followed), at its first
   * place; only where the lane followed has a delivery pending before it (stored, or fresh in
   * this chunk) — a merge of a contact with nothing in flight needs none — and none is stored yet
   * (a drain repeated after a crash: its links went with its records, in one write).
   */
  async function linksToWrite(
    plans: readonly DeliveryPlan[],
    fresh: readonly DeliveryPlan[],
    links: readonly LaneLinkPlan[],
  ) {
    const seen = new Set<string>();
    const wanted = links.filter((link) => {
      const id = JSON.stringify([link.destinationId, link.lane, link.follows]);
      if (link.lane === link.follows || seen.has(id)) return false;
      seen.add(id);
      return true;
    });
    if (wanted.length === 0) return [];
    const firstIndex = new Map<string, number>();
    plans.forEach((plan, index) => {
      if (!firstIndex.has(plan.id)) firstIndex.set(plan.id, index);
    });
    const out: Array<LaneLinkPlan & { freshBefore: number }> = [];
    for (const link of wanted) {
      const before = fresh.filter((plan) => firstIndex.get(plan.id)! < link.at);
      const [stored, head] = await Promise.all([
        store.zscore(deliveryKeys.follows(link.destinationId, link.lane), link.follows),
        records.laneHead(link.destinationId, link.follows),
      ]);
      if (stored !== null) continue;
      const inChunk = before.some(
        (plan) => plan.destinationId === link.destinationId && plan.orderingKey === link.follows,
      );
      if (head === null && !inChunk) continue;
      out.push({ ...link, freshBefore: before.length });
    }
    return out;
  }

  /**
   * The ids of an index scored at or below `cutoff`, oldest first, PRUNE_SLICE at a time and at
   * most PRUNE_ROUNDS slices per call, each handed to `handle` (which takes them out of the index,
   * so the next read starts past them). Ends at a short slice, or when `handle` says no slice
   * would go further (false).
   */
  async function staleSlices(
    key: string,
    cutoff: number,
    handle: (ids: string[]) => Promise<boolean>,
  ): Promise<void> {
    for (let round = 0; round < PRUNE_ROUNDS; round++) {
      const stale = await store.zrangeByScore(key, Number.NEGATIVE_INFINITY, cutoff, PRUNE_SLICE);
      if (stale.length === 0) return;
      if (!(await handle(stale)) || stale.length < PRUNE_SLICE) return;
    }
  }

  /**
   * One slice of pruneFailed: each failed record is deleted only as it was read (expect), so a
   * replay that lands between the read and the delete wins and its record, pending again, stays
   * whole. An id whose record is gone already is only forgotten from the indexes.
   */
  async function dropFailed(
    destinationId: string,
    ids: readonly string[],
    raws: ReadonlyArray<string | null>,
  ): Promise<{ deleted: number; forgotten: number }> {
    const doomed: Array<{ id: string; raw: string | null }> = [];
    ids.forEach((id, index) => {
      const raw = raws[index] ?? null;
      if (raw === null) {
        doomed.push({ id, raw });
        return;
      }
      const record = parse(raw, id);
      // Unreadable, or not failed (replayed since the index was read): not ours to delete.
      if (record?.state === 'failed' && record.destinationId === destinationId) doomed.push({ id, raw });
    });
    if (doomed.length === 0) return { deleted: 0, forgotten: 0 };
    const drop = (batch: StoreBatch, { id, raw }: { id: string; raw: string | null }) => {
      batch.expect(deliveryKeys.record(id), raw);
      if (raw !== null) batch.del(deliveryKeys.record(id));
      batch.zrem(deliveryKeys.index('failed'), id);
      batch.zrem(deliveryKeys.index('failed', destinationId), id);
    };
    const deletedOf = (items: typeof doomed) => items.filter((item) => item.raw !== null).length;
    const all = store.batch();
    for (const item of doomed) drop(all, item);
    if (await all.exec()) return { deleted: deletedOf(doomed), forgotten: doomed.length };
    // One of them changed meanwhile (a replay): one at a time, so the others still go.
    const done: typeof doomed = [];
    for (const item of doomed) {
      const one = store.batch();
      drop(one, item);
      if (await one.exec()) done.push(item);
    }
    return { deleted: deletedOf(done), forgotten: done.length };
  }

  return records;
}
