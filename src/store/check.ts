/**
 * How long /readyz and a /metrics scrape wait for the store check (and a scrape for each gauge it
 * reads from the store): well inside Prometheus's default 10 s scrape timeout and the usual
 * readiness-probe timeouts, so a hung store shows as 503 / 0 / NaN rather than as a request
 * that never answers.
 */
export const STORE_CHECK_TIMEOUT_MS = 1500;

export type StoreCheckResult =
  | { ok: true }
  /** `error` is the probe's own error, or a StoreCheckTimeout when it did not end in time. */
  | { ok: false; error: unknown };

export class StoreCheckTimeout extends Error {
  constructor(timeoutMs: number) {
    super(`the store check did not finish within ${timeoutMs} ms (still under way)`);
    this.name = 'StoreCheckTimeout';
  }
}

/**
 * "Does the store accept a write now?" (DESIGN §12), as asked by /readyz and by each scrape of
 * chatbridge_store_up: one implementation, so the two always agree.
 *
 * The probe itself has no overall limit (each Redis command has its timeout, and with
 * durability.replicas its WAIT runs up to durability.timeoutMs, a minute at most), so each
 * caller waits for it at most `timeoutMs` and then reports the store unavailable. Only one probe
 * runs at a time: a caller that comes while one is under way waits for that one instead of
 * starting another, so neither a hung store nor a flood of unauthenticated /readyz requests piles
 * writes onto the store's connection (at most one probe write is in flight, however many ask).
 * No result is kept after the probe ends: the next caller probes again, so readiness never lags
 * the store by a cache window.
 */
export function createStoreCheck(
  probe: () => Promise<void>,
  timeoutMs: number = STORE_CHECK_TIMEOUT_MS,
): () => Promise<StoreCheckResult> {
  let running: Promise<StoreCheckResult> | undefined;
  return async () => {
    if (!running) {
      // Started on the next tick rather than inline, so a probe that throws synchronously is a
      // failed check like any other.
      const check: Promise<StoreCheckResult> = Promise.resolve()
        .then(probe)
        .then(
          (): StoreCheckResult => ({ ok: true }),
          (error: unknown): StoreCheckResult => ({ ok: false, error }),
        );
      running = check;
      void check.finally(() => {
        if (running === check) running = undefined;
      });
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<StoreCheckResult>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, { ok: false, error: new StoreCheckTimeout(timeoutMs) });
      timer.unref();
    });
    try {
      return await Promise.race([running, late]);
    } finally {
      clearTimeout(timer);
    }
  };
}
