import type { Counter, Gauge, Histogram } from 'prom-client';
import type { Metrics } from '../metrics.js';

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
  outboxDepth: Gauge;
  outboxOldestSeconds: Gauge;
  replays: Counter<'destination'>;
  /** Pending deliveries whose queue job was missing (lost in a Redis failover) and was queued again. */
  jobsRestored: Counter<'destination'>;
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
    queueDepth: metrics.gauge(
      'chatbridge_delivery_queue_depth',
      'Deliveries pending (queued, retrying or waiting behind an earlier one), by destination',
      ['destination'],
    ),
    failedKept: metrics.gauge(
      'chatbridge_delivery_failed',
      'Deliveries that failed for good and are kept for replay, by destination',
      ['destination'],
    ),
    oldestPendingSeconds: metrics.gauge(
      'chatbridge_delivery_oldest_pending_seconds',
      'Age of the oldest pending delivery (since its event was recorded), by destination',
      ['destination'],
    ),
    breakerOpen: metrics.gauge(
      'chatbridge_delivery_circuit_open',
      '1 while the circuit breaker of a destination is open or half-open in this process',
      ['destination'],
    ),
    outboxDepth: metrics.gauge(
      'chatbridge_outbox_depth',
      'Events recorded but not yet routed to destinations',
    ),
    outboxOldestSeconds: metrics.gauge(
      'chatbridge_outbox_oldest_seconds',
      'Age of the oldest event waiting in the outbox',
    ),
    replays: metrics.counter('chatbridge_delivery_replays_total', 'Deliveries replayed, by destination', [
      'destination',
    ]),
    jobsRestored: metrics.counter(
      'chatbridge_delivery_jobs_restored_total',
      'Pending deliveries found without a queue job (lost in a Redis failover) and queued again, by destination',
      ['destination'],
    ),
  };
}
