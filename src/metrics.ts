import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * How long a scrape waits for the store, for every gauge it reads there (chatbridge_store_up
 * here, the delivery backlog in src/delivery/metrics.ts): well inside Prometheus's default 10 s
 * scrape timeout, so a hung store shows as 0 / NaN rather than as a scrape that never answers.
 */
export const STORE_SCRAPE_TIMEOUT_MS = 1500;

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
  private storeProbe: (() => Promise<void>) | undefined;

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
      if (!this.storeProbe) return;
      this.storeUp.set(await this.checkStore());
    },
  });

  /** The check a scrape has under way: a later scrape waits for it instead of starting another. */
  private storeCheck: Promise<boolean> | undefined;

  /**
   * 1 when the store passed the check within STORE_SCRAPE_TIMEOUT_MS, else 0. The check itself
   * has no overall limit (each Redis command has its timeout, and with durability.replicas its
   * WAIT runs up to durability.timeoutMs, a minute at most): unbounded, a store that stopped
   * confirming writes held every scrape past Prometheus's timeout, losing every series rather
   * than reporting 0. A check that outlives its scrape is not started again until it ends, so
   * scrapes of a hung store do not pile up checks on its connection.
   */
  private async checkStore(): Promise<0 | 1> {
    const probe = this.storeProbe;
    if (!probe) return 0;
    if (!this.storeCheck) {
      const check = probe().then(
        () => true,
        () => false,
      );
      this.storeCheck = check;
      void check.finally(() => {
        if (this.storeCheck === check) this.storeCheck = undefined;
      });
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => {
      timer = setTimeout(resolve, STORE_SCRAPE_TIMEOUT_MS, false);
      timer.unref();
    });
    try {
      return (await Promise.race([this.storeCheck, late])) ? 1 : 0;
    } finally {
      clearTimeout(timer);
    }
  }

  private readonly extra = new Map<string, Counter | Gauge | Histogram>();

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** What chatbridge_store_up checks at each scrape: the same as /readyz (the store accepts a write). */
  watchStore(probe: () => Promise<void>): void {
    this.storeProbe = probe;
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
