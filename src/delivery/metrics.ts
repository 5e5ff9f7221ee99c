import type { Counter, Gauge, Histogram } from 'prom-client';
import { type Metrics, STORE_SCRAPE_TIMEOUT_MS } from '../metrics.js';
import { STALL_LIMIT } from './queue.js';

/** The delivery side's Prometheus metrics (DESIGN §4 /metrics), created once per Metrics registry. */
export interface DeliveryMetrics {
  /** Finished deliveries: delivered, failed (kept for replay). */
  deliveries: Counter<'destination' | 'outcome'>;
  /** Every HTTP attempt: success, retry, permanent. */
  attempts: Counter<'destination' | 'outcome'>;
  attemptSeconds: Histogram<'destination'>;
  queueDepth: Gauge<'destination'>;
  failedKept: Gauge<'destination'>;
  oldestPendingSeconds: Gauge<'destination'>;
  breakerOpen: Gauge<'destination'>;
  /** When the Retry-After pause this process last set on a destination ends (Unix seconds; 0: none). */
  retryAfterUntil: Gauge<'destination'>;
  outboxDepth: Gauge;
  outboxOldestSeconds: Gauge;
  replays: Counter<'destination'>;
  /**
   * Pending deliveries with no live queue job, queued again by the restore pass: a job lost in a
   * Redis failover, or one BullMQ failed for good (its infrastructure retries, or its stall limit).
   */
  jobsRestored: Counter<'destination'>;
  /** Deliveries failed as stalled: their runs died STALL_LIMIT times in a row (processor.ts). */
  stalled: Counter<'destination'>;
  /** Failed deliveries deleted past their destination's failedRetention. */
  failedPruned: Counter<'destination'>;
}

/** The delivery backlog as the store holds it, read at a scrape (see watchBacklog). */
export interface Backlog {
  destinations: Array<{ id: string; pending: number; failed: number; oldestPendingSeconds: number }>;
  outboxDepth: number;
  outboxOldestSeconds: number;
}

/**
 * How long a scrape waits for the store's answer. ioredis gives up on each command after its own
 * timeout (2 s), but a scrape makes several reads; with a hung Redis the scrape must still answer
 * (chatbridge_store_up 0 says why), well inside Prometheus's default 10 s scrape timeout.
 */
export const BACKLOG_READ_TIMEOUT_MS = STORE_SCRAPE_TIMEOUT_MS;

interface BacklogReader {
  /** The destinations the gauges have a series for, read or not. */
  destinationIds: readonly string[];
  read(): Promise<Backlog>;
}

const backlogReaders = new WeakMap<Metrics, BacklogReader>();
/** The read a scrape has under way: its five gauges are collected together and share it. */
const backlogReads = new WeakMap<Metrics, Promise<Backlog | undefined>>();

/**
 * Where the backlog gauges read from. Set by every delivery, whatever its role: the gauges were
 * set by the worker's own timer only, so a web instance showed an outbox of 0 with events piling
 * up and no failed deliveries at all, and a worker kept the values of its last read (up to 5 s
 * old, or from before its store stopped answering).
 */
export function watchBacklog(metrics: Metrics, reader: BacklogReader): void {
  backlogReaders.set(metrics, reader);
}

/**
 * The backlog now; when the store did not answer in time, NaN for every value: not the last one
 * read, which would look current, nor 0, which would look healthy (chatbridge_store_up says why).
 */
function readBacklog(metrics: Metrics): Promise<Backlog | undefined> {
  const under = backlogReads.get(metrics);
  if (under) return under;
  const reader = backlogReaders.get(metrics);
  if (!reader) return Promise.resolve(undefined);
  const unknown: Backlog = {
    destinations: reader.destinationIds.map((id) => ({
      id,
      pending: Number.NaN,
      failed: Number.NaN,
      oldestPendingSeconds: Number.NaN,
    })),
    outboxDepth: Number.NaN,
    outboxOldestSeconds: Number.NaN,
  };
  let timer: NodeJS.Timeout | undefined;
  const read = Promise.race([
    reader.read(),
    new Promise<Backlog>((resolve) => {
      timer = setTimeout(resolve, BACKLOG_READ_TIMEOUT_MS, unknown);
      timer.unref();
    }),
  ])
    .catch(() => unknown)
    .finally(() => {
      clearTimeout(timer);
      backlogReads.delete(metrics);
    });
  backlogReads.set(metrics, read);
  return read;
}

/** A gauge whose values come from the store at each scrape (readBacklog). */
function backlogGauge<L extends string>(
  metrics: Metrics,
  name: string,
  help: string,
  labelNames: readonly L[],
  fill: (gauge: Gauge<L>, backlog: Backlog) => void,
): Gauge<L> {
  return metrics.gauge(name, help, labelNames, async (gauge) => {
    const backlog = await readBacklog(metrics);
    gauge.reset();
    if (backlog) fill(gauge, backlog);
  });
}

export function deliveryMetrics(metrics: Metrics): DeliveryMetrics {
  return {
    deliveries: metrics.counter(
      'chatbridge_deliveries_total',
      'Outbound deliveries finished, by destination and outcome (delivered, failed)',
      ['destination', 'outcome'],
    ),
    attempts: metrics.counter(
      'chatbridge_delivery_attempts_total',
      'Outbound delivery attempts, by destination and outcome (success, retry, permanent)',
      ['destination', 'outcome'],
    ),
    attemptSeconds: metrics.histogram(
      'chatbridge_delivery_attempt_seconds',
      'Duration of one outbound delivery attempt, by destination',
      ['destination'],
      [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
    queueDepth: backlogGauge(
      metrics,
      'chatbridge_delivery_queue_depth',
      'Deliveries pending (queued, retrying or waiting behind an earlier one), by destination; read from the store at each scrape',
      ['destination'],
      (gauge, backlog) => {
        for (const each of backlog.destinations) gauge.set({ destination: each.id }, each.pending);
      },
    ),
    failedKept: backlogGauge(
      metrics,
      'chatbridge_delivery_failed',
      'Deliveries that failed for good and are kept for replay, by destination; read from the store at each scrape',
      ['destination'],
      (gauge, backlog) => {
        for (const each of backlog.destinations) gauge.set({ destination: each.id }, each.failed);
      },
    ),
    oldestPendingSeconds: backlogGauge(
      metrics,
      'chatbridge_delivery_oldest_pending_seconds',
      'Age of the oldest pending delivery (since its event was recorded), by destination; read from the store at each scrape',
      ['destination'],
      (gauge, backlog) => {
        for (const each of backlog.destinations)
          gauge.set({ destination: each.id }, each.oldestPendingSeconds);
      },
    ),
    breakerOpen: metrics.gauge(
      'chatbridge_delivery_circuit_open',
      '1 while the circuit breaker of a destination is open or half-open in this process',
      ['destination'],
    ),
    retryAfterUntil: metrics.gauge(
      'chatbridge_delivery_retry_after_until_seconds',
      'Unix time (seconds) at which the pause a destination asked for with Retry-After (429, 503; at most 10 minutes, on every instance) ends, as this process last set it; 0 when it set none. Paused while above time(); aggregate across instances with max()',
      ['destination'],
    ),
    outboxDepth: backlogGauge(
      metrics,
      'chatbridge_outbox_depth',
      'Events recorded but not yet routed to destinations; read from the store at each scrape',
      [],
      (gauge, backlog) => gauge.set(backlog.outboxDepth),
    ),
    outboxOldestSeconds: backlogGauge(
      metrics,
      'chatbridge_outbox_oldest_seconds',
      'Age of the oldest event waiting in the outbox; read from the store at each scrape',
      [],
      (gauge, backlog) => gauge.set(backlog.outboxOldestSeconds),
    ),
    replays: metrics.counter('chatbridge_delivery_replays_total', 'Deliveries replayed, by destination', [
      'destination',
    ]),
    jobsRestored: metrics.counter(
      'chatbridge_delivery_jobs_restored_total',
      'Pending deliveries found with no live queue job and queued again, by destination: a job lost in a Redis failover (not confirmed on a replica), or one the queue failed for good (its retries after errors used up, or its stall limit, after which the delivery fails as stalled)',
      ['destination'],
    ),
    stalled: metrics.counter(
      'chatbridge_delivery_stalled_total',
      `Deliveries failed as stalled, by destination: the process delivering them stopped (crashed, killed, out of memory, blocked past the job lock) ${STALL_LIMIT} times in a row before the attempt ended; kept for replay, also counted in chatbridge_deliveries_total{outcome="failed"}`,
      ['destination'],
    ),
    failedPruned: metrics.counter(
      'chatbridge_delivery_failed_pruned_total',
      'Failed deliveries deleted (no longer replayable) past their destination failedRetention, by destination',
      ['destination'],
    ),
  };
}
