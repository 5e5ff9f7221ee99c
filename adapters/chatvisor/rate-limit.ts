/**
 * Client-side rate limit for Chatvisor (whose limits are not documented, §7): at most `perSecond`
 * request starts in any sliding 1-second window and at most `concurrency` requests in flight.
 * A sliding window rather than a token bucket, so that no 1-second window ever sees more than
 * `perSecond` requests (a bucket allows a burst plus its refill in the same second).
 * Waiters are served first come, first served; at most `maxWaiting` of them wait (a flood of
 * callers must not grow the queue without bound): a caller beyond that is refused at once with
 * RateLimiterFullError.
 */
export interface RateLimitOptions {
  perSecond: number;
  concurrency: number;
  /** Callers that may wait for a turn; unbounded when not given. */
  maxWaiting?: number | undefined;
  now?: () => number;
}

interface Waiter {
  resolve(release: () => void): void;
  reject(reason: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

const WINDOW_MS = 1000;

/** Thrown by acquire when `maxWaiting` callers are already waiting. */
export class RateLimiterFullError extends Error {
  constructor(readonly waiting: number) {
    super(`${waiting} requests are already waiting for the client-side rate limit`);
    this.name = 'RateLimiterFullError';
  }
}

export class RateLimiter {
  private readonly perSecond: number;
  private readonly concurrency: number;
  private readonly maxWaiting: number;
  private readonly now: () => number;
  private readonly starts: number[] = [];
  private readonly queue: Waiter[] = [];
  private active = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: RateLimitOptions) {
    this.perSecond = options.perSecond;
    this.concurrency = options.concurrency;
    this.maxWaiting = options.maxWaiting ?? Number.POSITIVE_INFINITY;
    this.now = options.now ?? Date.now;
  }

  /** Resolves with a release function once the request may start. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.queue.length >= this.maxWaiting)
      return Promise.reject(new RateLimiterFullError(this.queue.length));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = () => {
          const index = this.queue.indexOf(waiter);
          if (index >= 0) this.queue.splice(index, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.queue.push(waiter);
      this.pump();
    });
  }

  /** Callers waiting for a turn (for tests and metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Requests in flight (for tests and metrics). */
  get inFlight(): number {
    return this.active;
  }

  private pump(): void {
    while (this.queue.length > 0 && this.active < this.concurrency) {
      const now = this.now();
      while (this.starts.length > 0 && this.starts[0]! <= now - WINDOW_MS) this.starts.shift();
      if (this.starts.length >= this.perSecond) {
        if (!this.timer) {
          const wait = Math.max(1, this.starts[0]! + WINDOW_MS - now);
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.pump();
          }, wait);
        }
        return;
      }
      const waiter = this.queue.shift()!;
      if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort);
      this.active++;
      this.starts.push(now);
      let released = false;
      waiter.resolve(() => {
        if (released) return;
        released = true;
        this.active--;
        this.pump();
      });
    }
  }
}
