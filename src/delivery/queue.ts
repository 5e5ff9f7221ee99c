import type { Logger } from 'pino';

/**
 * The job queue behind deliveries: decides *when* a delivery is attempted, with a concurrency
 * limit per destination, delays, early wake-ups and a per-destination pause. Two
 * implementations: BullMQ on Redis (queue-bullmq.ts) and the small in-process one below for the
 * in-memory store. Everything else (records, ordering, retries, breaker) is shared above it.
 */

export interface DeliveryJob {
  deliveryId: string;
  cycle: number;
  /**
   * The delivery's lane (its record's orderingKey), so that the worker reads the record and the
   * lane's head in one trip. Jobs queued by an older version have none: the worker reads the
   * record first, then its lane's head. The record stays the source of truth either way.
   */
  orderingKey?: string;
}

export type JobOutcome =
  /** Finished (delivered or failed for good): the job goes away. */
  | { kind: 'done' }
  /**
   * Try again after `delayMs` (a retry, or waiting behind an earlier delivery of the same contact).
   * `behind`: it is the wait behind an earlier delivery, which wakes this job when it leaves the
   * lane; a wake() that came while this run was going on cuts the wait (it runs again at once).
   * A retry's wait is not cut that way: it is the receiver's time, not the lane's.
   * `stoodBack`: the run did not get to its delivery (another run holds the delivery's lease, as
   * a run that died mid-attempt does until the lease expires), so it says nothing about whether
   * the job's runs stop dying: the runs that died before it stay counted (JobRun.stalls).
   */
  | { kind: 'later'; delayMs: number; behind?: boolean; stoodBack?: boolean }
  /**
   * Not attempted: put the job back and send nothing to this destination for `delayMs`. Like
   * `stoodBack`, the runs that died before it stay counted.
   */
  | { kind: 'pause'; delayMs: number };

/**
 * How many runs of a delivery's job in a row may die (the process crashed, was killed, or held
 * the job past its lock) before the delivery fails as stalled: when the job comes back with this
 * many stalls, it is not attempted again (processor.ts), since its attempt is what kills the
 * process (a pathological body or destination, a process out of memory). BullMQ's own
 * maxStalledCount is the same number, and fails the job one stall later (queue-bullmq.ts).
 */
export const STALL_LIMIT = 10;

/** What the queue knows of this run of a job. */
export interface JobRun {
  /**
   * The runs of this job in a row that died before this one (BullMQ's stall count, which a run
   * that ends clears; always 0 in process, where nothing outlives a crash).
   */
  stalls: number;
}

/** `run` is given by the queues; a caller that runs a job by hand (a test) may leave it out: no stalls. */
export type JobHandler = (destinationId: string, job: DeliveryJob, run?: JobRun) => Promise<JobOutcome>;

export interface QueueCounts {
  waiting: number;
  delayed: number;
  active: number;
}

export interface DeliveryQueue {
  /** Queue a job unless one with this id exists (idempotent: a repeated drain adds nothing). */
  enqueue(destinationId: string, jobId: string, job: DeliveryJob, delayMs: number): Promise<void>;
  /** The same for several jobs of one destination, in order (BullMQ: one round trip). */
  enqueueMany(
    destinationId: string,
    items: ReadonlyArray<{ jobId: string; job: DeliveryJob; delayMs: number }>,
  ): Promise<void>;
  /**
   * Queue these jobs again unless they are live (waiting, delayed or running): a job that is
   * missing, or that BullMQ failed or lost track of, is queued anew. Returns how many were.
   * For pending deliveries whose job was lost: BullMQ's writes are not confirmed on replicas,
   * so a Redis failover can lose a job while its record (in the store) survives.
   */
  restore(
    destinationId: string,
    items: ReadonlyArray<{ jobId: string; job: DeliveryJob; delayMs: number }>,
  ): Promise<number>;
  /**
   * Its predecessor in the lane finished: run a delayed job now; a job running at this moment
   * that then waits behind that predecessor (outcome `later` with `behind`) runs again at once
   * instead of sleeping out its wait. No-op otherwise.
   */
  wake(destinationId: string, jobId: string): Promise<void>;
  /** Send nothing to this destination for `delayMs` (breaker open, Retry-After), on every instance. */
  pause(destinationId: string, delayMs: number): Promise<void>;
  /** Start processing (worker role). Before that, jobs only accumulate. */
  start(handler: JobHandler): Promise<void>;
  counts(destinationId: string): Promise<QueueCounts>;
  close(): Promise<void>;
}

/** An unexpected error inside the handler (store down): retried with this backoff, capped. */
export function infrastructureBackoff(failures: number): number {
  return Math.min(60_000, 500 * 2 ** Math.min(failures, 10));
}

/** The longest wait a Node timer holds (2^31-1 ms, 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface MemoryJob {
  id: string;
  job: DeliveryJob;
  failures: number;
  timer?: NodeJS.Timeout;
  running: boolean;
  /** wake() came while it ran: a wait behind an earlier delivery is cut (JobOutcome `behind`). */
  woken: boolean;
}

interface Lane {
  concurrency: number;
  jobs: Map<string, MemoryJob>;
  ready: MemoryJob[];
  active: Set<Promise<void>>;
  pausedUntil: number;
  pauseTimer?: NodeJS.Timeout;
}

/**
 * In-process queue for the in-memory store: nothing survives a restart here either, and on
 * start the delivery re-queues every pending record, so restarting within one process loses
 * nothing that the store still has.
 */
export function createMemoryQueue(options: {
  destinations: ReadonlyArray<{ id: string; concurrency: number }>;
  logger: Logger;
}): DeliveryQueue {
  const lanes = new Map<string, Lane>();
  for (const destination of options.destinations) {
    lanes.set(destination.id, {
      concurrency: destination.concurrency,
      jobs: new Map(),
      ready: [],
      active: new Set(),
      pausedUntil: 0,
    });
  }
  let handler: JobHandler | undefined;
  let closed = false;

  const laneOf = (destinationId: string): Lane => {
    const lane = lanes.get(destinationId);
    if (!lane) throw new Error(`no queue for destination ${destinationId}`);
    return lane;
  };

  function delay(destinationId: string, lane: Lane, item: MemoryJob, ms: number) {
    // In steps a Node timer holds: a longer one fires after 1 ms. A 24d retry (the longest the
    // config takes) jittered up by 10% is past it, and went at once.
    const step = Math.min(ms, MAX_TIMER_MS);
    item.timer = setTimeout(() => {
      if (ms > step) return delay(destinationId, lane, item, ms - step);
      item.timer = undefined;
      lane.ready.push(item);
      pump(destinationId, lane);
    }, step);
    item.timer.unref();
  }

  function pump(destinationId: string, lane: Lane) {
    if (!handler || closed) return;
    const wait = lane.pausedUntil - Date.now();
    if (wait > 0) {
      if (!lane.pauseTimer) {
        // pump() measures the pause again, so a step that ends early only sets the next one.
        lane.pauseTimer = setTimeout(
          () => {
            lane.pauseTimer = undefined;
            pump(destinationId, lane);
          },
          Math.min(wait, MAX_TIMER_MS),
        );
        lane.pauseTimer.unref();
      }
      return;
    }
    while (lane.active.size < lane.concurrency && lane.ready.length > 0) {
      const item = lane.ready.shift()!;
      const run = runJob(destinationId, lane, item, handler).finally(() => {
        lane.active.delete(run);
        pump(destinationId, lane);
      });
      lane.active.add(run);
    }
  }

  async function runJob(destinationId: string, lane: Lane, item: MemoryJob, run: JobHandler) {
    let outcome: JobOutcome;
    // A wake before this run is seen by the run itself (it reads the lane afresh).
    item.woken = false;
    item.running = true;
    try {
      outcome = await run(destinationId, item.job, { stalls: 0 });
      item.failures = 0;
    } catch (error) {
      item.failures += 1;
      options.logger.warn(
        { err: error, destination: destinationId, job: item.id },
        'delivery job failed; retrying',
      );
      outcome = { kind: 'later', delayMs: infrastructureBackoff(item.failures) };
    } finally {
      item.running = false;
    }
    if (closed) return;
    if (outcome.kind === 'done') lane.jobs.delete(item.id);
    else if (outcome.kind === 'later' && outcome.behind && item.woken) {
      // What it waits behind left the lane while it ran (wake() found no timer to cut): look again now.
      item.woken = false;
      lane.ready.push(item);
    } else if (outcome.kind === 'later') delay(destinationId, lane, item, outcome.delayMs);
    else {
      lane.pausedUntil = Math.max(lane.pausedUntil, Date.now() + outcome.delayMs);
      lane.ready.unshift(item);
    }
  }

  const queue: DeliveryQueue = {
    async enqueue(destinationId, jobId, job, delayMs) {
      const lane = laneOf(destinationId);
      if (closed || lane.jobs.has(jobId)) return;
      const item: MemoryJob = { id: jobId, job, failures: 0, running: false, woken: false };
      lane.jobs.set(jobId, item);
      if (delayMs > 0) delay(destinationId, lane, item, delayMs);
      else {
        lane.ready.push(item);
        pump(destinationId, lane);
      }
    },
    async enqueueMany(destinationId, items) {
      for (const item of items) await queue.enqueue(destinationId, item.jobId, item.job, item.delayMs);
    },
    async restore(destinationId, items) {
      const lane = laneOf(destinationId);
      const lost = items.filter((item) => !lane.jobs.has(item.jobId));
      await queue.enqueueMany(destinationId, lost);
      return closed ? 0 : lost.length;
    },
    async wake(destinationId, jobId) {
      const lane = lanes.get(destinationId);
      const item = lane?.jobs.get(jobId);
      if (!lane || !item) return;
      if (item.running) item.woken = true;
      if (!item.timer) return;
      clearTimeout(item.timer);
      item.timer = undefined;
      lane.ready.push(item);
      pump(destinationId, lane);
    },
    async pause(destinationId, delayMs) {
      const lane = laneOf(destinationId);
      lane.pausedUntil = Math.max(lane.pausedUntil, Date.now() + delayMs);
    },
    async start(next) {
      handler = next;
      for (const [id, lane] of lanes) pump(id, lane);
    },
    async counts(destinationId) {
      const lane = laneOf(destinationId);
      let delayed = 0;
      for (const item of lane.jobs.values()) if (item.timer) delayed++;
      return { waiting: lane.ready.length, delayed, active: lane.active.size };
    },
    async close() {
      closed = true;
      for (const lane of lanes.values()) {
        for (const item of lane.jobs.values()) if (item.timer) clearTimeout(item.timer);
        if (lane.pauseTimer) clearTimeout(lane.pauseTimer);
      }
      await Promise.allSettled([...lanes.values()].flatMap((lane) => [...lane.active]));
    },
  };
  return queue;
}
