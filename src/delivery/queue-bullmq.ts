import { DelayedError, Job, Queue, Worker } from 'bullmq';
import type { Logger } from 'pino';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import {
  closeRedisClient,
  createRedisClient,
  type RedisClient,
  type RedisTarget,
  settlesWithin,
} from '../store/connection.js';
import { toStoreError } from '../store/redis.js';
import {
  type DeliveryJob,
  type DeliveryQueue,
  infrastructureBackoff,
  type JobHandler,
  type JobOutcome,
  STALL_LIMIT,
} from './queue.js';

/**
 * The Redis-backed queue: one BullMQ queue per destination, so a slow or failing destination has
 * its own workers, its own concurrency (also enforced across instances with BullMQ's global
 * concurrency) and its own pause (BullMQ's queue-wide rate limit, which every instance obeys).
 * BullMQ keeps the jobs durable, runs them after their delay, and brings back jobs whose worker
 * died (stalled jobs).
 *
 * A job only says "attempt delivery X, cycle N": the delivery record in the store is the source
 * of truth, so a job that runs late does no harm. One that runs twice at once (a stalled job
 * taken by another worker while its first run goes on) is one more signed POST for a webhook,
 * which receivers dedupe by webhook-id; a CRM attempt holds the delivery's lease (processor.ts),
 * so the second run attempts nothing.
 */

export interface BullQueueOptions {
  /** One Redis server (shorthand for `target: { kind: 'redis', url }`). */
  redisUrl?: string;
  /** The store's Redis (standalone, Sentinel or Cluster): BullMQ uses the same client factory. */
  target?: RedisTarget;
  /**
   * BullMQ key prefix, e.g. `chatbridge:bull` (derived from the store's key prefix; on a Cluster
   * it carries the prefix's hash tag, `{chatbridge}:bull`, so BullMQ's scripts stay in one slot). */
  prefix: string;
  destinations: ReadonlyArray<{ id: string; concurrency: number }>;
  logger: Logger;
  /** How long close() waits for BullMQ before dropping the connections (server.shutdownTimeoutMs). */
  closeWaitMs?: number;
  /**
   * BullMQ's lockDuration (a job's lock, renewed while its run goes on; default 30 s) and
   * stalledInterval (how often jobs whose lock lapsed are looked for; default 30 s). Tests
   * shorten them to see stalls in seconds.
   */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
}

/** BullMQ queue names may not contain ':'; destination ids are free text. */
export function queueNameOf(destinationId: string): string {
  return `delivery-${destinationId.replace(/[^A-Za-z0-9_-]/g, (char) => `~${char.codePointAt(0)!.toString(16)}`)}`;
}

/**
 * Whether a run that ended got to its delivery (clearStalls): not when it stood back, the
 * delivery's lease held by another run or the destination paused.
 */
function reachedDelivery(outcome: JobOutcome): boolean {
  if (outcome.kind === 'pause') return false;
  return !(outcome.kind === 'later' && outcome.stoodBack);
}

/** Job states in which BullMQ will run the job by itself (restore leaves these alone). */
const LIVE_STATES = new Set(['waiting', 'delayed', 'active', 'prioritized', 'waiting-children']);

/** Infrastructure failures only (the handler threw): delivery retries are decided by the handler. */
const JOB_ATTEMPTS = 1000;

/**
 * How long a wake() mark waits for the run it was meant for (see wake): a run that waits behind
 * an earlier delivery takes a few store reads, so this is ample; a mark left over costs one more
 * look at the lane, nothing else.
 */
const WAKE_MARK_MS = 60_000;

/**
 * What a pause writes into the queue's limiter key (as BullMQ's own Queue.rateLimit does), and the
 * workers' limiter `max`: BullMQ holds jobs back while the key's count is at least `max`.
 */
const PAUSED_COUNT = Number.MAX_SAFE_INTEGER;

/**
 * BullMQ's Worker, except that it does not start a wait once it is closing. A job that pauses
 * the destination (breaker open, Retry-After) makes the worker sleep out the queue's rate limit
 * (in turns of maximumRateLimitDelay, 10 s); close() aborts the sleep in progress, but when
 * the job was still running at close() (BullMQ 5.81), the worker starts that sleep afterwards,
 * with a fresh abort signal nobody aborts, and close() waited for it: a SIGTERM with the breaker
 * open took the queues' whole grace and logged "did not close in time (is Redis reachable?)".
 */
class DeliveryWorker extends Worker<DeliveryJob> {
  override async delay(...args: Parameters<Worker['delay']>): Promise<void> {
    if (this.closing) return;
    await super.delay(...args);
  }
}

export function createBullQueue(options: BullQueueOptions): DeliveryQueue {
  const { logger } = options;
  const connections: RedisClient[] = [];
  const target: RedisTarget = options.target ?? { kind: 'redis', url: options.redisUrl ?? '' };
  const connect = (worker: boolean) => {
    // Workers block on Redis and must wait for it forever (BullMQ requires null); the producer
    // side fails a command after a few seconds so a drain never hangs on a Redis outage.
    const connection = createRedisClient(target, { role: worker ? 'worker' : 'queue', logger });
    connection.on('error', (error) => logger.debug({ err: error }, 'delivery queue connection error'));
    connections.push(connection);
    return connection;
  };
  // BullMQ reports every failed reconnect of every queue and worker (two per destination, several
  // a second) while Redis is away: said once a minute per kind and error code, not per event.
  const repeats = createRepeatGate();
  // Keyed by the message alone, not the error's code: one outage reaches BullMQ as several codes
  // in a row (ECONNRESET as Redis goes, then ECONNREFUSED on every reconnect), which is one thing
  // to say; the next minute's warn names whatever it is then.
  const queueError = (message: string, destination: string, error: Error) =>
    warnOncePerMinute(logger, repeats, message, { err: error, destination }, message);
  const lockDuration = options.lockDurationMs ?? 30_000;
  const producer = connect(false);
  const queues = new Map<string, Queue>();
  const workers: Worker[] = [];
  const concurrency = new Map(
    options.destinations.map((destination) => [destination.id, destination.concurrency]),
  );
  for (const destination of options.destinations) {
    const queue = new Queue(queueNameOf(destination.id), { connection: producer, prefix: options.prefix });
    queue.on('error', (error) => queueError('delivery queue error', destination.id, error));
    queues.set(destination.id, queue);
  }

  const queueOf = (destinationId: string): Queue => {
    const queue = queues.get(destinationId);
    if (!queue) throw new Error(`no queue for destination ${destinationId}`);
    return queue;
  };

  /** wake()'s mark for a job that may be running: `<prefix>:<queue>:wake:<jobId>`. */
  const wakeMarkOf = (queue: Queue, jobId: string) => queue.toKey(`wake:${jobId}`);

  /**
   * Move a delayed job to waiting, by id (BullMQ's promote script: one trip, it needs no read of
   * the job first); false when the job was not delayed (waiting, active, finished or unknown:
   * the script finds nothing to promote) or Redis did not answer.
   */
  const promoted = async (queue: Queue, jobId: string): Promise<boolean> => {
    try {
      await queue.scripts.promote(jobId);
      return true;
    } catch {
      return false;
    }
  };

  /**
   * A job that has just been moved to delayed because it waits behind an earlier delivery: if a
   * wake() came for it while it ran (the mark is there; DEL takes it), run it now. A wake that
   * comes after the DEL finds the job delayed already and promotes it itself.
   */
  const wokenWhileRunning = async (queue: Queue, job: Job<DeliveryJob>) => {
    try {
      if (job.id === undefined || (await producer.del(wakeMarkOf(queue, job.id))) === 0) return;
      await job.promote();
    } catch {
      // It left the delayed state in between (the wake() promoted it, or its delay ran out), or
      // Redis did not answer: then it waits out its delay, as before wakes reached running jobs.
    }
  };

  /**
   * Clear the stall count of a job whose run has ended (returned or thrown) while it still holds
   * the job's lock (`token`). BullMQ counts a job's stalls (`stc`) for the job's whole life and
   * never resets the count; past maxStalledCount it fails the job ("job stalled more than
   * allowable limit") without running it. A delivery's job lives for the delivery's whole retry
   * schedule (days: each retry, each wait behind an earlier delivery, moves the same job to
   * delayed), so stalls of unrelated incidents (a worker restarted mid-attempt, a lock lost while
   * Redis failed over), each followed by a run that ended, added up, and the eleventh failed the
   * job (test/delivery.queue-stalls.test.ts). The limit is for a job whose runs keep dying: a run
   * that ended is not one, so the count starts again, and runs that never end still add up to it.
   * A run whose lock lapsed (it stalled itself) clears nothing: the lock is checked in the same
   * script. Nor does a run that stood back without getting to its delivery (the lease a run that
   * died still holds, the destination paused: reachedDelivery): a CRM delivery whose attempt kills
   * the process comes back while its lease has yet to expire, and clearing there started the
   * count again after every crash, so it never reached the limit. Only for a job that has
   * stalled (its data says so): the common run costs no command.
   */
  const clearStalls = async (queue: Queue, job: Job<DeliveryJob>, token: string | undefined) => {
    if (job.stalledCounter === 0 || job.id === undefined || token === undefined) return;
    const jobKey = queue.toKey(job.id);
    try {
      await producer.eval(
        "if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('HDEL', KEYS[1], 'stc') end return 0",
        2,
        jobKey,
        `${jobKey}:lock`,
        token,
      );
    } catch (error) {
      // Redis did not answer: the count stays, as it was before runs cleared it.
      logger.debug({ err: error, job: job.id }, 'delivery job stall count not cleared');
    }
  };

  /**
   * Make sure a run that is ending holds its job's lock, when that is in doubt. BullMQ moves the
   * job on (completed, delayed, failed) only under the lock, and renews it while the run goes on
   * (every quarter of lockDuration), but a renewal can fail: while a resharding splits the bridge's
   * hash slot, BullMQ's renewal script runs where its one declared key is and finds the lock key
   * gone to the other node ("could not renew lock"), and in an outage nothing gets through. A run
   * that outlived its lock that way (a delivery whose outcome could be written only once the slot
   * was whole again, processor.ts `recorded`) could not move its job ("Missing lock for job …
   * moveToFinished"): the job stayed active, holding one of the destination's concurrency slots,
   * until BullMQ's stalled check took it back 30–60 s later and ran it again. So a run that has
   * gone half a lock without a renewal BullMQ confirmed extends its lock, or takes it again if it
   * lapsed while the job is still active and no one else holds it: then no other run has the job
   * (the stalled check moves a job out of active before another worker can take it). One that the
   * stalled check took back is left alone, and its run clears nothing (clearStalls). The common
   * run, a few milliseconds long, costs no command.
   */
  const holdLock = async (queue: Queue, job: Job<DeliveryJob>, token: string | undefined, since: number) => {
    if (job.id === undefined || token === undefined) return;
    if (performance.now() - since < lockDuration / 2) return;
    try {
      await producer.eval(
        `local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held or not redis.call('LPOS', KEYS[2], ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2`,
        2,
        `${queue.toKey(job.id)}:lock`,
        queue.keys.active!,
        token,
        lockDuration,
        job.id,
      );
    } catch (error) {
      // Redis did not answer: BullMQ's own move will fail the same way, and its stalled check
      // takes the job back, as before.
      logger.debug({ err: error, job: job.id }, 'delivery job lock not confirmed at the end of its run');
    }
  };

  /**
   * Pause the destination (BullMQ's queue-wide rate limit, which every instance obeys) for at
   * least `delayMs`, never shortening a longer pause under way: Queue.rateLimit sets the limiter
   * key outright, so the breaker's 30 s cooldown set after a 503 with Retry-After: 600 (same
   * attempt), or another worker's 429 with Retry-After: 1, cut the receiver's 10 minutes to
   * seconds. The in-process queue keeps the longer pause as well (queue.ts).
   */
  const pauseAtLeast = async (queue: Queue, delayMs: number): Promise<void> => {
    const ms = Math.max(1, Math.round(delayMs));
    await asStoreError(() =>
      producer.eval(
        "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) end",
        1,
        queue.keys.limiter!,
        ms,
        // The value BullMQ's own rateLimit writes (a count at the workers' limiter max).
        PAUSED_COUNT,
      ),
    );
  };

  const jobOptions = (jobId: string, delayMs: number) => ({
    jobId,
    delay: Math.max(0, Math.round(delayMs)),
    attempts: JOB_ATTEMPTS,
    backoff: { type: 'infrastructure' },
    // Completed jobs go at once: a replay adds a job with a new id, and the record dedupes drains.
    removeOnComplete: true,
    removeOnFail: { age: 7 * 24 * 3600 },
  });

  /**
   * BullMQ rejects with ioredis's own errors. Redis's "not now" (READONLY from a primary that was
   * just demoted, NOREPLICAS, a connection that gave up its retries) becomes StoreUnavailableError
   * here, as in the store, so a replay from the admin API or the console during a failover is a
   * 503 to retry rather than a 500.
   */
  const asStoreError = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      throw toStoreError(error);
    }
  };

  return {
    async enqueue(destinationId, jobId, job, delayMs) {
      await asStoreError(() => queueOf(destinationId).add('deliver', job, jobOptions(jobId, delayMs)));
    },

    async enqueueMany(destinationId, items) {
      if (items.length === 0) return;
      await asStoreError(() =>
        queueOf(destinationId).addBulk(
          items.map((item) => ({
            name: 'deliver',
            data: item.job,
            opts: jobOptions(item.jobId, item.delayMs),
          })),
        ),
      );
    },

    async restore(destinationId, items) {
      const queue = queueOf(destinationId);
      // Look all of them up at once (one pipeline on the connection), then fix the few lost ones.
      const found = await Promise.all(
        items.map(async (item) => {
          const job = await Job.fromId<DeliveryJob>(queue, item.jobId);
          return { item, job, state: job ? await job.getState() : 'missing' };
        }),
      );
      let restored = 0;
      for (const { item, job, state } of found) {
        if (LIVE_STATES.has(state)) continue;
        try {
          if (job && state === 'failed') {
            // Failed for BullMQ (attempts or stalls used up) while the record is still pending.
            await job.retry('failed');
          } else {
            // Completed, or in no state at all (its hash survived a failover, its list entry
            // did not): out of the way first, or the add would be a no-op.
            if (job) await job.remove();
            await queue.add('deliver', item.job, jobOptions(item.jobId, item.delayMs));
          }
          restored++;
        } catch (error) {
          // It changed state meanwhile (a worker or another instance got to it): leave it.
          logger.debug(
            { err: error, destination: destinationId, job: item.jobId },
            'delivery job not restored',
          );
        }
      }
      return restored;
    },

    async wake(destinationId, jobId) {
      const queue = queueOf(destinationId);
      // Most jobs woken wait behind the delivery that has just left their lane: delayed, and one
      // script promotes them. Before, each wake read the whole job (HGETALL, its data and options
      // parsed) and its state first: three trips where one does.
      if (await promoted(queue, jobId)) return;
      let state = await queue.getJobState(jobId);
      if (state === 'active') {
        // Running now: it has no delay to cut yet, and it may be about to wait behind the
        // delivery that has just left its lane, having read the lane before it left. The mark
        // tells that run to go again at once (wokenWhileRunning); then its state is read again.
        // A run that moved its job to delayed before that read is promoted here, one that moves
        // it after finds the mark: none sleeps out its wait. (A job waiting to run needs
        // nothing: its run reads the lane as it is then.)
        await asStoreError(() => producer.set(wakeMarkOf(queue, jobId), '1', 'PX', WAKE_MARK_MS));
        state = await queue.getJobState(jobId);
      }
      // Delayed now (its run moved it there after the promote above): promoted as before.
      if (state === 'delayed') await promoted(queue, jobId);
    },

    async pause(destinationId, delayMs) {
      await pauseAtLeast(queueOf(destinationId), delayMs);
    },

    async start(handler: JobHandler) {
      for (const [destinationId, queue] of queues) {
        const limit = concurrency.get(destinationId) ?? 1;
        await queue.setGlobalConcurrency(limit);
        /** When the lock of each job this worker runs was last known to be held (holdLock). */
        const lockHeldAt = new Map<string, number>();
        const worker = new DeliveryWorker(
          queue.name,
          async (job, token) => {
            let outcome: JobOutcome | undefined;
            const key = job.id ?? '';
            lockHeldAt.set(key, performance.now());
            try {
              outcome = await handler(destinationId, job.data, { stalls: job.stalledCounter });
            } finally {
              // Before the job is moved on: the move needs the lock (holdLock re-takes one a
              // long run may have lost while its slot moved), and releases the lock clearStalls
              // checks. A run that threw ended too (the store down: BullMQ retries it with its
              // backoff), except one at the stall limit: it only tried to fail its delivery as
              // stalled (the processor looks at nothing else first), and the next run must try
              // again.
              await holdLock(queue, job, token, lockHeldAt.get(key) ?? 0);
              lockHeldAt.delete(key);
              const reached =
                outcome === undefined ? job.stalledCounter < STALL_LIMIT : reachedDelivery(outcome);
              if (reached) await clearStalls(queue, job, token);
            }
            if (outcome.kind === 'later') {
              await job.moveToDelayed(Date.now() + Math.max(0, Math.round(outcome.delayMs)), token);
              if (outcome.behind) await wokenWhileRunning(queue, job);
              throw new DelayedError();
            }
            if (outcome.kind === 'pause') {
              await pauseAtLeast(queue, outcome.delayMs);
              throw Worker.RateLimitError();
            }
          },
          {
            connection: connect(true),
            prefix: options.prefix,
            concurrency: limit,
            lockDuration,
            stalledInterval: options.stalledIntervalMs ?? 30_000,
            // A worker that knows of a pause sleeps it out in turns of at most this long and
            // starts no job meanwhile; but a slot that finishes a job during the sleep takes the
            // next one with it (BullMQ's fetch-next) when Redis no longer holds the pause (lost
            // in a failover before it reached the replica). That job waits for the sleep to end,
            // locked for lockDuration and not renewed (BullMQ renews the jobs it is running, at
            // its next renewal tick, a quarter of lockDuration later). With BullMQ's default
            // (30 s, as long as the lock) its lock lapsed, the stalled check took it back, and it
            // ran twice (test/delivery.queue-pause-lock.test.ts). A third of the lock leaves the
            // wait, the tick and a slow event loop well inside it; the price is one look at the
            // queue every 10 s per worker while a long pause (Retry-After, up to 10 minutes) lasts.
            maximumRateLimitDelay: Math.floor(lockDuration / 3),
            // A worker that died mid-attempt: its job comes back; the record (and for a CRM
            // attempt the delivery's lease) makes a rerun harmless. Counted per streak of runs
            // that never ended (clearStalls), not over the job's life. The processor fails the
            // delivery as stalled when its job comes back with STALL_LIMIT stalls; BullMQ fails
            // the job one stall later, only when no run got as far as looking (a run that died
            // first, another job's that took the process with it): the restore pass queues it
            // again, and that run fails the delivery.
            maxStalledCount: STALL_LIMIT,
            // BullMQ obeys the limiter key (pauseAtLeast, Queue.rateLimit) when it hands out a job
            // only if the worker has a limiter: without one, the job a pause has just put back to
            // wait (RateLimitError) is taken at once by another slot of this worker that was
            // blocked waiting for work, and left active, locked for lockDuration (30 s) and never
            // renewed (BullMQ renews only jobs being processed), while the worker sleeps out the
            // pause (in turns of maximumRateLimitDelay, then 30 s). Its run then finds its lock
            // gone ("Missing lock for job … moveToDelayed") and the stalled check brings it back
            // (`stalled`).
            // A count no destination reaches in a second: this limiter only makes the pause count.
            limiter: { max: PAUSED_COUNT, duration: 1000 },
            settings: { backoffStrategy: (attemptsMade: number) => infrastructureBackoff(attemptsMade) },
          },
        );
        worker.on('locksRenewed', ({ jobIds }) => {
          const now = performance.now();
          for (const id of jobIds) if (lockHeldAt.has(id)) lockHeldAt.set(id, now);
        });
        worker.on('error', (error) => queueError('delivery worker error', destinationId, error));
        // A job whose run died or lost its lock, taken back by BullMQ's stalled check and run
        // again (for a webhook perhaps a second POST of its event: receivers dedupe by webhook-id).
        worker.on('stalled', (jobId) =>
          warnOncePerMinute(
            logger,
            repeats,
            `stalled:${destinationId}`,
            { destination: destinationId, job: jobId },
            'delivery job stalled (its worker stopped, or its run lost the job lock): running it again',
          ),
        );
        worker.on('failed', (job, error) =>
          logger.warn(
            { err: error, destination: destinationId, job: job?.id },
            // A run that threw (the store down) is retried by BullMQ with its backoff; a job BullMQ
            // failed for good (finishedOn set: "job stalled more than allowable limit", its runs
            // kept dying) is not, and its delivery, still pending, waits for the restore pass,
            // whose run fails it as stalled (the stall count stays on the job).
            job?.finishedOn
              ? 'delivery job failed for good in the queue; the restore pass queues it again (past the stall limit, its delivery then fails as stalled)'
              : 'delivery job failed; retrying',
          ),
        );
        workers.push(worker);
      }
    },

    async counts(destinationId) {
      const counts = await queueOf(destinationId).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
      return {
        waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
        delayed: counts.delayed ?? 0,
        active: counts.active ?? 0,
      };
    },

    async close() {
      // BullMQ's close waits for Redis (its workers' blocking connection, the queues' last
      // commands); with Redis unreachable that is for ever. So it gets `closeWaitMs`, then the
      // connections are dropped: nothing is lost, jobs and records stay in Redis for the next start.
      const graceful = (async () => {
        await Promise.allSettled(workers.map((worker) => worker.close()));
        await Promise.allSettled([...queues.values()].map((queue) => queue.close()));
      })();
      const closed = await settlesWithin(graceful, options.closeWaitMs ?? 10_000);
      if (!closed)
        logger.warn(
          'delivery queues did not close in time (is Redis reachable?): dropping their connections',
        );
      await Promise.allSettled(
        connections.map((connection) => closeRedisClient(connection, closed ? 2000 : 0)),
      );
    },
  };
}
