/**
 * Retry timing shared by every outbound caller: exponential backoff with full jitter, or an
 * explicit schedule, and the server's Retry-After when it gives one.
 */

/** Which HTTP statuses are worth retrying: timeouts, throttling and server errors. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * The first of several Retry-After values: delta-seconds, or an HTTP date (which has a comma
 * itself). The spaces before the list's comma stay in the value (trimmed below): a `\s*` between
 * the date's `[^,]*` and the comma could split every run of spaces two ways, and a 16 KiB header
 * of `Mon,` and spaces took 0.3 s of the event loop to refuse (quadratic), each time an answer
 * carried it.
 */
const FIRST_OF_LIST = /^\s*(\d+(?:\.\d+)?\s*|[A-Za-z]{3},[^,]*),/;

/** Retry-After as milliseconds (seconds or an HTTP date); undefined when absent or unusable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  // A header sent twice (a proxy adding its own to the server's) reaches us joined with ", "
  // (src/net/http.ts): "120, 120" was no number and no date, and "5, 5" read as a date in 2001,
  // so the wait was ignored. The first value counts.
  const trimmed = (FIRST_OF_LIST.exec(value)?.[1] ?? value).trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(random() * ceiling);
}

/** A scheduled delay with ±`ratio` jitter (the delivery schedule: 5s, 5m, 30m ...). */
export function jittered(delayMs: number, ratio = 0.1, random = Math.random): number {
  if (delayMs <= 0) return 0;
  return Math.max(0, Math.round(delayMs * (1 + (random() * 2 - 1) * ratio)));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
