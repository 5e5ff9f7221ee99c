import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { STORE_CHECK_TIMEOUT_MS, type StoreCheckResult } from './store/check.js';

/**
 * How long a scrape waits for the store, for every gauge it reads there (chatbridge_store_up
 * here, the delivery backlog in src/delivery/metrics.ts): the store check's bound, see
 * src/store/check.ts.
 */
export const STORE_SCRAPE_TIMEOUT_MS = STORE_CHECK_TIMEOUT_MS;

/**
 * Prometheus metrics. One registry per running app (not prom-client's global one), so that
 * several bridges in one test process do not share counters.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly intake = new Counter({
    name: 'chatbridge_intake_total',
    help: 'Vendor requests received, by vendor, event and outcome (ok, duplicate, unhandled, rejected, request_closed, unavailable, error)',
    labelNames: ['vendor', 'event', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly replyLatency = new Histogram({
    name: 'chatbridge_reply_latency_seconds',
    help: 'Time to answer a vendor request, by vendor and event',
    labelNames: ['vendor', 'event'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers: [this.registry],
  });

  readonly merges = new Counter({
    name: 'chatbridge_merges_total',
    help: 'Contact merges, by outcome (merged, refused)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly contactsCreated = new Counter({
    name: 'chatbridge_contacts_created_total',
    help: 'Contacts created',
    registers: [this.registry],
  });

  readonly jobRuns = new Counter({
    name: 'chatbridge_job_runs_total',
    help: 'Scheduled job runs, by channel, job and outcome (ok, failed, skipped_locked)',
    labelNames: ['channel', 'job', 'outcome'] as const,
    registers: [this.registry],
  });

  /** How a scrape checks the store (set by the bridge, see watchStore). */
  private storeCheck: (() => Promise<StoreCheckResult>) | undefined;

  /**
   * Checked at every scrape, not only set by /readyz: a worker, or any instance nobody probes for
   * readiness, showed 0 from its start (and kept whatever the last /readyz saw), so an alert on it
   * fired for a healthy store and missed a lost one.
   */
  readonly storeUp = new Gauge({
    name: 'chatbridge_store_up',
    help: '1 when the store accepted a write at the last check (each scrape of /metrics, each /readyz), else 0',
    registers: [this.registry],
    collect: async () => {
      if (!this.storeCheck) return;
      // Bounded and shared with /readyz (src/store/check.ts): a hung store reads 0 in time.
      this.storeUp.set((await this.storeCheck()).ok ? 1 : 0);
    },
  });

  private readonly extra = new Map<string, Counter | Gauge | Histogram>();

  /**
   * `eventLoopResolutionMs`: metrics.eventLoopResolutionMs, the event-loop delay monitor's
   * resolution (prom-client's own default, 10, when not given).
   */
  constructor(options: { defaultMetrics?: boolean; eventLoopResolutionMs?: number } = {}) {
    if (options.defaultMetrics)
      collectDefaultMetrics({
        register: this.registry,
        ...(options.eventLoopResolutionMs === undefined
          ? {}
          : { eventLoopMonitoringPrecision: options.eventLoopResolutionMs }),
      });
  }

  /** What chatbridge_store_up checks at each scrape: the /readyz check (the store accepts a write). */
  watchStore(check: () => Promise<StoreCheckResult>): void {
    this.storeCheck = check;
  }

  /** Vendor (or attribute-source) data cut or dropped by the size limits, by what was cut. */
  truncated(): Counter<'what'> {
    return this.counter(
      'chatbridge_truncated_total',
      'Vendor data cut or dropped by the size limits, by what (field, attribute, attribute_count, identifier_count, name_count, label_count, agent_count, transcript, timeline_entry, attribute_source)',
      ['what'],
    );
  }

  /** Adapter- or feature-owned metrics, created once by name. */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return this.memo(
      name,
      () => new Counter({ name, help, labelNames, registers: [this.registry] }),
    ) as Counter<L>;
  }

  /** `collect`, when given, runs at every scrape (to read a value that lives in the store). */
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: (gauge: Gauge<L>) => Promise<void>,
  ): Gauge<L> {
    return this.memo(
      name,
      () =>
        new Gauge<L>({
          name,
          help,
          labelNames,
          registers: [this.registry],
          ...(collect
            ? {
                async collect(this: Gauge<L>) {
                  await collect(this);
                },
              }
            : {}),
        }) as Gauge,
    ) as Gauge<L>;
  }

  histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets?: number[],
  ): Histogram<L> {
    return this.memo(
      name,
      () =>
        new Histogram({
          name,
          help,
          labelNames,
          registers: [this.registry],
          ...(buckets ? { buckets } : {}),
        }),
    ) as Histogram<L>;
  }

  private memo(name: string, make: () => Counter | Gauge | Histogram) {
    let metric = this.extra.get(name);
    if (!metric) {
      metric = make();
      this.extra.set(name, metric);
    }
    return metric;
  }
}
