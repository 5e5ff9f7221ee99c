import type { Logger } from 'pino';
import { cliCommand, shellOption } from '../cli/named.js';
import { type DestinationConfig, isCrmDestination } from '../config/schema.js';
import type { CrmRuntime } from '../crm/runtime.js';
import { StoreUnavailableError } from '../errors.js';
import type { HttpClient } from '../net/http.js';
import { jittered, sleep } from '../net/retry.js';
import { renewWhileHeld } from '../store/renewal.js';
import { attemptDelivery } from './attempt.js';
import type { CircuitBreaker } from './breaker.js';
import type { DeliveryMetrics } from './metrics.js';
import { type DeliveryQueue, type JobHandler, type JobOutcome, STALL_LIMIT } from './queue.js';
import {
  type DeliveryError,
  type DeliveryRecord,
  type DeliveryRecords,
  jobIdOf,
  jobOf,
  type LaneLink,
} from './records.js';
import { webhookHeaders } from './signing.js';

/**
 * One job = one look at one delivery:
 * 1. stale job (record gone, no longer pending, or an older replay cycle)   -> done
 *    its last STALL_LIMIT runs in a row died (the process crashed, was killed, or held the job
 *    past its lock: its attempt is what kills it)                           -> failed as stalled
 * 2. breaker open                                                            -> pause the destination
 * 3. not the head of its lane (an earlier event for this contact is pending), or its lane follows
 *    another (a merge, an unmerge) that still has a delivery pending from before the link
 *                                                                            -> wait behind it
 * 4. CRM destinations: the delivery's lease is held by another run           -> look again later
 * 5. attempt: 2xx -> delivered; 408/429/5xx/network -> retry on the schedule (Retry-After
 *    honoured) until the schedule is used up -> failed; other statuses -> failed at once.
 * Whenever a delivery leaves its lane, the next one of the lane is woken, and so is the head of
 * every lane that followed it up to there.
 *
 * A queue may run one delivery twice at once: BullMQ gives a job whose lock lapsed (the event
 * loop stalled past its lock duration, the worker lost Redis for a while) to another worker as
 * stalled while the first run still goes on. For a signed webhook that is one more POST, which
 * receivers dedupe by webhook-id. A CRM attempt creates step by step from the progress it read
 * when it began, so two runs would both make the task or note (or deal): a CRM attempt runs under
 * the delivery's lease (a store lock, renewed while it runs). A run that finds it taken attempts
 * nothing and looks again later, which is no attempt; a run whose process died leaves the lease
 * to expire, and the delivery is attempted then. A run that loses its lease (renewals failed for
 * a whole ttl: the store unreachable) writes no further step and marks nothing.
 */

export interface DestinationRuntime {
  config: DestinationConfig;
  key: Buffer;
  /** The secret being rotated out (previousSecret): requests are signed with both while it is set. */
  previousKey?: Buffer;
  /** The configured header values (headerSecrets), hidden in what is kept of an answer: made once. */
  secrets: readonly string[];
  breaker: CircuitBreaker;
  /** CRM destinations (DESIGN §10): the attempt writes into the CRM instead of POSTing. */
  crm?: CrmRuntime;
}

/** Retry-After beyond this is treated as this: a receiver must not park a delivery for weeks. */
export const MAX_RETRY_AFTER_MS = 24 * 3_600_000;
/** Pause the whole destination for at most this long on a Retry-After. */
export const MAX_DESTINATION_PAUSE_MS = 10 * 60_000;
/** Extra wait behind the head of a lane, beyond its next attempt plus timeout. */
export const PARK_MARGIN_MS = 1000;

/**
 * How long a delivery waits behind its lane's head whose attempt starts in `aheadMs`: that
 * attempt, its timeout, PARK_MARGIN_MS. The run that finds the head pending parks for it
 * (parkBehind); the drain queues a delivery behind an earlier one of its chunk with it (jobsOf).
 */
export function parkWaitMs(aheadMs: number, destination: DestinationRuntime): number {
  return Math.max(0, aheadMs) + destination.config.timeoutMs + PARK_MARGIN_MS;
}
/** A lane head whose attempt is this overdue has lost its job (crash): it is queued again. */
export const STUCK_GRACE_MS = 60_000;
/** A CRM attempt's lease on its delivery: renewed every third of this while the attempt runs. */
export const LEASE_TTL_MS = 60_000;
/** A run that found the lease taken looks again after at most this long (at least LEASE_MIN_WAIT_MS). */
export const LEASE_RECHECK_MS = 5_000;
const LEASE_MIN_WAIT_MS = 100;

/**
 * An attempt's outcome whose write the store refused as "not now" is written again, from this
 * pause on, doubling up to RECORD_RETRY_MAX_MS, for up to RECORD_RETRY_FOR_MS (see recorded()).
 */
const RECORD_RETRY_FIRST_MS = 100;
const RECORD_RETRY_MAX_MS = 1000;
export const RECORD_RETRY_FOR_MS = 10 * 60_000;

/** The run's lease on its delivery was lost: it must write nothing more. */
class LeaseLostError extends Error {
  constructor(id: string) {
    super(
      `the lease on delivery ${id} was lost (the store was unreachable for its whole ttl); stopped before the next step`,
    );
  }
}

export interface ProcessorDeps {
  records: DeliveryRecords;
  queue: DeliveryQueue;
  destinations: ReadonlyMap<string, DestinationRuntime>;
  http: HttpClient;
  logger: Logger;
  metrics: DeliveryMetrics;
  now(): Date;
  random(): number;
  /** Aborted when the delivery shuts down: attempts in flight stop and are not counted. */
  signal: AbortSignal;
  /** A CRM attempt's lease ttl (default LEASE_TTL_MS; tests shorten it). */
  leaseTtlMs?: number;
  /**
   * The destination was paused at its own request (Retry-After) until `until` (ms since epoch),
   * for people to see (breaker-state.ts) and the gauge; called after the pause is set. Must not
   * throw or wait: it is on the attempt's path.
   */
  onRetryAfterPause?(destinationId: string, pause: { since: number; until: number; lastError: string }): void;
}

export function createProcessor(deps: ProcessorDeps): JobHandler {
  const { records, queue, logger, metrics } = deps;

  /**
   * Write what an attempt came to (a delivery marked delivered or failed, a retry's time) and try
   * again while the store answers "not now" (StoreUnavailableError), rather than fail the job:
   * a job that failed after a 2xx ran again and POSTed the event a second time, its record still
   * pending. Seen while a resharding moved the bridge's hash slot (the record's batch touches
   * several keys, and Redis refuses such a write with TRYAGAIN until the last key has moved):
   * every delivery answered during the move went out twice (test/slow/cluster.reshard.test.ts).
   * The same holds in a failover. Up to RECORD_RETRY_FOR_MS, and not past a shutdown: then the
   * job fails as before and runs again later.
   */
  async function recorded<T>(write: () => Promise<T>, what: { delivery: string }): Promise<T> {
    const giveUpAt = performance.now() + RECORD_RETRY_FOR_MS;
    for (let pause = RECORD_RETRY_FIRST_MS; ; pause = Math.min(2 * pause, RECORD_RETRY_MAX_MS)) {
      try {
        return await write();
      } catch (error) {
        if (!(error instanceof StoreUnavailableError) || performance.now() + pause > giveUpAt) throw error;
        logger.debug(
          { err: error, ...what },
          'delivery outcome not written yet (the store is unavailable); trying again',
        );
        await sleep(pause, deps.signal).catch(() => {
          throw error;
        });
      }
    }
  }

  /**
   * Write an attempt's outcome over the record it started from (`write(over)`: a compare-and-set
   * in records.ts, null when the record changed meanwhile; tried again while the store is
   * unavailable, see recorded). What changed it decides: a record still pending in the same cycle
   * was written by another run of the same delivery (BullMQ gives a job whose lock lapsed to
   * another worker while the first run goes on), and this outcome goes on top of it, so neither
   * run's attempt is lost (its 2xx is a delivery even when the other run scheduled a retry). A
   * record in another state or cycle (delivered or failed by another run, failed as stalled,
   * replayed since: a new cycle with its own job) is newer than this attempt: it stands, and null
   * says nothing was written. Before, the outcome was written over it as it was when the attempt
   * began: a replay made meanwhile showed delivered while its own attempt was still queued (that
   * job then found its cycle gone and did nothing), its attempts and history lost.
   */
  async function recordOutcome(
    start: DeliveryRecord,
    write: (over: DeliveryRecord) => Promise<DeliveryRecord | null>,
  ): Promise<DeliveryRecord | null> {
    let over = start;
    // Each round follows a write by another run of the same cycle: a handful at most.
    for (let round = 0; round < 10; round++) {
      const written = await recorded(() => write(over), { delivery: start.id });
      if (written) return written;
      const current = await recorded(() => records.get(start.id), { delivery: start.id });
      if (current?.state !== 'pending' || current.cycle !== start.cycle) break;
      over = current;
    }
    logger.info(
      { destination: start.destinationId, delivery: start.id, event: start.eventId },
      'delivery attempt outcome not recorded: the delivery changed while it was attempted (recorded by another run, failed as stalled, or replayed); its newer state stands',
    );
    return null;
  }

  /**
   * Mark the record (`mark`: a write that takes it out of its lane, false when it was not written
   * because the record changed meanwhile, see recordOutcome), then `marked()`, then wake the next
   * delivery of its lane. The
   * lane's head is asked for in the same tick as the write, so both reach Redis in one socket
   * write (the store coalesces the commands of one event-loop iteration); it is answered after
   * the write has run (StoreBatch.exec), except when Redis had lost the script and the write went
   * again behind the read: then it is read once more. So is a read that failed (the write went
   * through on a later try). The wake is a shortcut: a delivery that waits behind this one looks
   * at its lane again by itself (parkBehind), so a wake the store refuses is left out, not a
   * reason to run the job again. Nothing is woken when nothing was written: the newer state's own
   * run (or the run that wrote it) does that.
   */
  async function markAndWake(record: DeliveryRecord, mark: () => Promise<boolean>, marked: () => void) {
    const writing = mark();
    const reading = records.laneHead(record.destinationId, record.orderingKey);
    // The lanes that follow this one (a merge's, an unmerge's): the write does not change them.
    const following = records.followers(record.destinationId, record.orderingKey);
    // A failed read is tried again below, after the write's own outcome (which comes first).
    reading.catch(() => {});
    following.catch(() => {});
    if (!(await writing)) return;
    marked();
    try {
      await wakeNext(
        record,
        reading.catch(() => records.laneHead(record.destinationId, record.orderingKey)),
        following.catch(() => records.followers(record.destinationId, record.orderingKey)),
      );
    } catch (error) {
      logger.debug(
        { err: error, destination: record.destinationId, delivery: record.id },
        'the next delivery of the lane was not woken; it looks again by itself',
      );
    }
  }

  async function wakeNext(
    record: DeliveryRecord,
    reading: Promise<string | null>,
    following: Promise<readonly LaneLink[]>,
  ) {
    let nextId = await reading;
    // Still the marked record: the read ran before the write after all (Redis had lost the batch
    // script, NOSCRIPT, and the write was sent again, as EVAL, behind the read): read again.
    if (nextId === record.id) nextId = await records.laneHead(record.destinationId, record.orderingKey);
    const next = nextId === null ? null : await records.get(nextId);
    if (next?.state === 'pending') await queue.wake(record.destinationId, jobIdOf(next));
    for (const link of await following) {
      // Only a delivery from before the link was waited for.
      if (record.seq >= link.from) continue;
      // Another one from before the link is still pending here: that one wakes them.
      if (next?.state === 'pending' && next.seq < link.from) continue;
      if (nextId === null || next?.state === 'pending') {
        // Nothing the link waits for is left in this lane: it has done its work.
        await records.unfollow(record.destinationId, link.lane, record.orderingKey);
      }
      const headId = await records.laneHead(record.destinationId, link.lane);
      const head = headId === null ? null : await records.get(headId);
      // Only a head the link held (from its place on): one before it may be waiting for its retry.
      if (head?.state === 'pending' && head.seq >= link.from)
        await queue.wake(record.destinationId, jobIdOf(head));
    }
  }

  /** How long to wait behind `head` (pending): its next attempt and timeout; re-queued if overdue. */
  async function parkBehind(head: DeliveryRecord, destination: DestinationRuntime, now: number) {
    const headNext = head.nextAttemptAt ? Date.parse(head.nextAttemptAt) : now;
    if (headNext < now - (destination.config.timeoutMs + STUCK_GRACE_MS)) {
      // The head's job is overdue: re-add it (a no-op when it still exists, only late).
      await queue.enqueue(head.destinationId, jobIdOf(head), jobOf(head), 0);
    }
    return parkWaitMs(headNext - now, destination);
  }

  /**
   * null when no lane that `record`'s lane follows has a delivery pending from before the link;
   * otherwise how long to wait behind the first such. `read`: the links as read with the record.
   */
  async function waitFollowed(
    record: DeliveryRecord,
    destination: DestinationRuntime,
    now: number,
    read: readonly LaneLink[] | undefined,
  ) {
    const links = read ?? (await records.follows(record.destinationId, record.orderingKey));
    for (const link of links) {
      // A delivery of the lane from before the link (the survivor's own earlier events) is not held.
      if (record.seq < link.from) continue;
      for (let round = 0; round < 5; round++) {
        const headId = await records.laneHead(record.destinationId, link.lane);
        const head = headId === null ? null : await records.get(headId);
        if (headId !== null && head?.state !== 'pending') {
          await records.leaveLane(record.destinationId, link.lane, headId);
          continue;
        }
        if (head !== null && head.seq < link.from) return parkBehind(head, destination, now);
        // Nothing from before the link is pending there any more: it has done its work.
        await records.unfollow(record.destinationId, record.orderingKey, link.lane);
        break;
      }
    }
    return null;
  }

  /**
   * null when `record` heads its lane; otherwise how long to wait behind the head. `read` is the
   * lane's head as read with the record (undefined: not read yet).
   */
  async function waitBehind(
    record: DeliveryRecord,
    destination: DestinationRuntime,
    now: number,
    read: { head: string | null; links: readonly LaneLink[] } | undefined,
  ) {
    for (let round = 0; round < 5; round++) {
      const headId =
        round === 0 && read !== undefined
          ? read.head
          : await records.laneHead(record.destinationId, record.orderingKey);
      // Not in its lane at all (should not happen): ordering cannot be kept, delivering can.
      if (headId === null || headId === record.id) break;
      const head = await records.get(headId);
      if (head?.state !== 'pending') {
        await records.leaveLane(record.destinationId, record.orderingKey, headId);
        continue;
      }
      return parkBehind(head, destination, now);
    }
    return waitFollowed(record, destination, now, read?.links);
  }

  /** How long until the retry an earlier attempt scheduled is due (ms; 0 or less: due now). */
  function retryDueIn(record: DeliveryRecord): number {
    const at = record.nextAttemptAt ? Date.parse(record.nextAttemptAt) : Number.NaN;
    return Number.isFinite(at) ? at - deps.now().getTime() : 0;
  }

  /** The run's hold on its delivery's lease: `check` renews it and throws once it is lost. */
  interface Held {
    lost: boolean;
    check(): Promise<void>;
  }

  /**
   * Fail a delivery whose job came back from STALL_LIMIT runs in a row that died: attempting it
   * again would kill the process again (its body or destination makes the process crash, run out
   * of memory or block past the job's lock). BullMQ failed such a job at its own limit and left
   * the record pending; the restore pass queued the job again, its next run crashed the process
   * again, and the next pickup failed it at once, for good, with the contact's later deliveries
   * waiting behind it in the lane. Failed like the others instead: kept for replay (a new job,
   * with no stall on it), counted, said once at error, and its lane goes on. No attempt is
   * counted: none was recorded. Only over the record as read (abandon): if it changed meanwhile
   * (a run that lost its lock recorded an outcome after all), that run's outcome stands; the
   * job ends, and the restore pass queues it again if the delivery is still pending.
   */
  async function failStalled(destinationId: string, record: DeliveryRecord, stalls: number) {
    const now = deps.now();
    const reason: DeliveryError = {
      status: null,
      message: `stalled: the process delivering it stopped ${stalls} times in a row before the attempt ended (crashed, killed, e.g. out of memory, or blocked past the job lock); not attempted again, replay it once the cause is found`,
      at: now.toISOString(),
    };
    if (!(await records.abandon(record.id, reason, now))) return;
    // Marked already (abandon): only the lane's next delivery is to wake.
    await markAndWake(
      record,
      async () => true,
      () => {
        metrics.deliveries.inc({ destination: destinationId, outcome: 'failed' });
        metrics.stalled.inc({ destination: destinationId });
        logger.error(
          {
            destination: destinationId,
            delivery: record.id,
            event: record.eventId,
            ...(record.contactId ? { contact: record.contactId } : {}),
            stalls,
          },
          `delivery failed as stalled: the process delivering it stopped ${stalls} times in a row before the attempt ended (crashed, killed, out of memory, or its event loop blocked); it is not attempted again and the contact's later deliveries go on. Look at its body and destination (${cliCommand(`deliveries list ${shellOption('destination', destinationId)} --state failed`)}), then replay it: ${cliCommand(`deliveries replay ${shellOption('id', record.id)}`)}`,
        );
      },
    );
  }

  return async (destinationId, job, run): Promise<JobOutcome> => {
    const destination = deps.destinations.get(destinationId);
    if (!destination) return { kind: 'done' };
    // A job that names its lane: the record and the lane's head are read in the same tick, so in
    // one trip (one socket write). The head read is used only if the record agrees on the lane.
    const lane = job.orderingKey;
    const [record, laneHead, links] = await Promise.all([
      records.get(job.deliveryId),
      lane === undefined ? undefined : records.laneHead(destinationId, lane),
      lane === undefined ? undefined : records.follows(destinationId, lane),
    ]);
    if (record?.state !== 'pending' || record.cycle !== job.cycle) return { kind: 'done' };
    // First, before anything that may take the process down again.
    const stalls = run?.stalls ?? 0;
    if (stalls >= STALL_LIMIT) {
      await failStalled(destinationId, record, stalls);
      return { kind: 'done' };
    }

    const blocked = destination.breaker.blockedFor(Date.now());
    if (blocked > 0) return { kind: 'pause', delayMs: blocked };
    const sameLane = record.destinationId === destinationId && record.orderingKey === lane;
    const read = sameLane && laneHead !== undefined && links ? { head: laneHead, links } : undefined;
    const wait = await waitBehind(record, destination, deps.now().getTime(), read);
    if (wait !== null) return { kind: 'later', delayMs: wait, behind: true };
    if (!destination.crm) {
      // A retry an earlier attempt scheduled (its backoff, or the destination's Retry-After) is
      // not made before its time. The job's delay normally sees to that, but a run that recorded
      // the retry and then died (or lost its job lock) before the job was moved to delayed leaves
      // the job to BullMQ's stalled check, which runs it again at once: it POSTed then, early,
      // against the destination's Retry-After. Put back until the recorded time instead.
      const due = record.cycleAttempts > 0 ? retryDueIn(record) : 0;
      if (due > PARK_MARGIN_MS) return { kind: 'later', delayMs: due };
      return attempt(destinationId, destination, record, null);
    }

    const ttlMs = deps.leaseTtlMs ?? LEASE_TTL_MS;
    const lease = await records.lease(record.id, ttlMs);
    if (!lease) {
      // Another run is at work on it (or died and its lease has yet to expire): not an attempt.
      // Stood back: a run that died mid-attempt holds the lease until it expires, and this run is
      // no sign that the runs stopped dying (the stall count stays).
      const left = await records.leaseLeft(record.id);
      return {
        kind: 'later',
        delayMs: Math.min(Math.max(left, LEASE_MIN_WAIT_MS), LEASE_RECHECK_MS),
        stoodBack: true,
      };
    }
    const held: Held = {
      lost: false,
      async check() {
        if (!held.lost && (await lease.renew(ttlMs))) return;
        held.lost = true;
        throw new LeaseLostError(record.id);
      },
    };
    const stopRenewing = renewWhileHeld({
      ttlMs,
      renew: () => lease.renew(ttlMs),
      onLost: () => {
        held.lost = true;
      },
      onError: (error) => logger.debug({ err: error, delivery: record.id }, 'delivery lease not renewed'),
    });
    try {
      // As it is now: the run that held the lease before may have finished it, or made steps.
      const current = await records.get(job.deliveryId);
      if (current?.state !== 'pending' || current.cycle !== job.cycle) return { kind: 'done' };
      // A run that stood back (the lease taken) is looked at again within LEASE_RECHECK_MS, and
      // with BullMQ its move is the one that counts: the first run's own move to its retry time
      // fails, its job lock being gone. So a retry that run scheduled would be attempted seconds
      // later instead of on the schedule (or past Retry-After), and counted: its time stands.
      const due = current.cycleAttempts > 0 ? retryDueIn(current) : 0;
      if (due > PARK_MARGIN_MS) return { kind: 'later', delayMs: due };
      return await attempt(destinationId, destination, current, held);
    } finally {
      stopRenewing();
      await lease.release();
    }
  };

  async function attempt(
    destinationId: string,
    destination: DestinationRuntime,
    start: DeliveryRecord,
    held: Held | null,
  ): Promise<JobOutcome> {
    let record = start;
    const job = { deliveryId: record.id };
    const { config, breaker } = destination;
    const labels = { destination: destinationId };
    if (!breaker.begin(Date.now())) return { kind: 'pause', delayMs: breaker.blockedFor(Date.now()) };

    const attemptAt = deps.now();
    const started = performance.now();
    let result: Awaited<ReturnType<typeof attemptDelivery>>;
    try {
      result = destination.crm
        ? await destination.crm.attempt({
            body: record.body,
            progress: record.crm ?? {},
            // Each step is recorded (and each create marked) only while the lease still holds.
            checkpoint: async (patch) => {
              await held?.check();
              await records.saveProgress(job.deliveryId, patch);
            },
            signal: deps.signal,
          })
        : !isCrmDestination(config)
          ? await attemptDelivery(
              deps.http,
              {
                url: config.url,
                headers: {
                  ...config.headers,
                  'content-type': 'application/json',
                  ...webhookHeaders(
                    destination.previousKey ? [destination.key, destination.previousKey] : destination.key,
                    record.eventId,
                    attemptAt,
                    record.body,
                  ),
                },
                body: record.body,
                timeoutMs: config.timeoutMs,
                signal: deps.signal,
                secrets: destination.secrets,
              },
              attemptAt.getTime(),
            )
          : { kind: 'permanent', status: 0, message: `no connector for kind ${config.kind}` };
    } catch (error) {
      breaker.abandon();
      // Shutting down: the answer never came, so this was no attempt; another instance (or this
      // one after the restart) takes the delivery up again.
      if (deps.signal.aborted) return { kind: 'later', delayMs: 0 };
      throw error;
    } finally {
      metrics.attemptSeconds.observe(labels, (performance.now() - started) / 1000);
    }
    if (held?.lost) {
      // Another run may own the delivery now: it is the one to record the outcome.
      breaker.abandon();
      logger.warn(
        { destination: destinationId, delivery: record.id },
        'delivery lease lost during a CRM attempt (the store was unreachable?); its outcome is left to the next run',
      );
      return { kind: 'later', delayMs: LEASE_RECHECK_MS };
    }
    const now = deps.now();
    // The contact too: it is what an operator looks up (console, admin API) to see whose event failed.
    const log = logger.child({
      destination: destinationId,
      delivery: record.id,
      event: record.eventId,
      ...(record.contactId ? { contact: record.contactId } : {}),
    });
    // A CRM attempt recorded its steps on the record meanwhile: mark the record as it is now,
    // if it is still this attempt's (pending, this cycle); otherwise the outcome is written over
    // the record as the attempt began, and that compare-and-set fails (recordOutcome): the
    // delivery was failed as stalled, or replayed, while this attempt ran.
    if (destination.crm) {
      const now = await recorded(() => records.get(start.id), { delivery: start.id });
      if (now?.state === 'pending' && now.cycle === start.cycle) record = now;
    }

    if (result.kind === 'delivered') {
      breaker.reachable();
      const marked = record;
      await markAndWake(
        marked,
        async () =>
          (await recordOutcome(marked, (over) => records.markDelivered(over, result.status, now))) !== null,
        () => {
          metrics.attempts.inc({ ...labels, outcome: 'success' });
          metrics.deliveries.inc({ ...labels, outcome: 'delivered' });
        },
      );
      return { kind: 'done' };
    }

    const error: DeliveryError = { status: result.status, message: result.message, at: now.toISOString() };
    if (result.kind === 'permanent') {
      breaker.reachable();
      const marked = record;
      await markAndWake(
        marked,
        async () =>
          (await recordOutcome(marked, (over) => records.markFailed(over, error, now, true))) !== null,
        () => {
          metrics.attempts.inc({ ...labels, outcome: 'permanent' });
          metrics.deliveries.inc({ ...labels, outcome: 'failed' });
          log.warn(
            { status: result.status },
            `delivery refused by the destination (${result.message}); kept for replay`,
          );
        },
      );
      return { kind: 'done' };
    }

    metrics.attempts.inc({ ...labels, outcome: 'retry' });
    // A 429 says "slow down", not "I am down": the destination answered, so it counts as reachable
    // (which also frees a half-open trial slot: left taken, it would block every later attempt
    // for good) and the pause comes from Retry-After, not from the breaker.
    let opened: number | null = null;
    if (result.status === 429) breaker.reachable();
    else opened = breaker.failed(Date.now(), result.message);
    const schedule = config.retrySchedule;
    const attemptsSoFar = record.cycleAttempts + 1;
    if (attemptsSoFar >= schedule.length) {
      const gaveUp = {
        ...error,
        message: `gave up after ${attemptsSoFar} attempt${attemptsSoFar === 1 ? '' : 's'}; last: ${error.message}`,
      };
      const marked = record;
      await markAndWake(
        marked,
        async () =>
          (await recordOutcome(marked, (over) => records.markFailed(over, gaveUp, now, true))) !== null,
        () => {
          metrics.deliveries.inc({ ...labels, outcome: 'failed' });
          log.warn(`delivery failed after ${attemptsSoFar} attempts (${result.message}); kept for replay`);
        },
      );
    } else {
      let delayMs = jittered(schedule[attemptsSoFar]!, 0.1, deps.random);
      if (result.retryAfterMs !== undefined)
        delayMs = Math.max(delayMs, Math.min(result.retryAfterMs, MAX_RETRY_AFTER_MS));
      const nextAt = new Date(now.getTime() + delayMs);
      const retried = await recordOutcome(record, (over) => records.markRetry(over, error, nextAt, now));
      if (retried)
        log.info(`delivery attempt ${attemptsSoFar} failed (${result.message}); next in ${delayMs} ms`);
      // The destination's answer holds whatever became of the record.
      if (result.retryAfterMs !== undefined && result.retryAfterMs > 0) {
        const pauseMs = Math.min(result.retryAfterMs, MAX_DESTINATION_PAUSE_MS);
        await queue.pause(destinationId, pauseMs);
        const at = Date.now();
        deps.onRetryAfterPause?.(destinationId, { since: at, until: at + pauseMs, lastError: error.message });
      }
      // The breaker's opening is logged where its state changes (breakerWatch in index.ts).
      if (opened !== null) await queue.pause(destinationId, opened);
      // Not written: the record is newer than this attempt (another run's, a replay's new cycle
      // with its own job), and this job has nothing left to do.
      return retried ? { kind: 'later', delayMs } : { kind: 'done' };
    }
    if (opened !== null) await queue.pause(destinationId, opened);
    return { kind: 'done' };
  }
}
