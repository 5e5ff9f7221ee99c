/**
 * Circuit breaker for one destination, in this process. After `failureThreshold` failed attempts
 * in a row (network error, timeout, 408, 5xx) it opens: nothing is sent for `cooldownMs` (the
 * queue is paused for every instance). Then it is half-open: one trial attempt goes; its success
 * closes the breaker, its failure opens it again. A 4xx answer counts as "reachable" (the CRM is
 * up, it just refused this one event); so does a 429, whose pause comes from Retry-After, not
 * from here.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** What a state change tells its watcher (breaker-state.ts records an opening from it). */
export interface BreakerChange {
  /** Failed attempts in a row (the trials' included). */
  failures: number;
  /** When it first opened in this run of failures (ms, Date.now), or undefined when closed. */
  openedAt: number | undefined;
  /** When an open breaker lets its trial through (ms). */
  openUntil: number;
  /** The reason given with the last failure. */
  lastFailure: string | undefined;
}

/** How long other jobs wait while the half-open trial is in flight (short: the trial may succeed at once). */
export const TRIAL_WAIT_MS = 250;

export class CircuitBreaker {
  private state: BreakerState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private openedAt: number | undefined;
  private lastFailure: string | undefined;
  private trialInFlight = false;

  constructor(
    private readonly threshold: number,
    private readonly cooldownMs: number,
    private readonly onChange: (state: BreakerState, change: BreakerChange) => void = () => {},
  ) {}

  get current(): BreakerState {
    return this.state;
  }

  /** Milliseconds to hold off before attempting, or 0 when an attempt may go now. */
  blockedFor(now: number): number {
    if (this.state === 'open') {
      if (now < this.openUntil) return this.openUntil - now;
      this.set('half-open');
    }
    if (this.state === 'half-open' && this.trialInFlight) return TRIAL_WAIT_MS;
    return 0;
  }

  /** Claim the right to attempt (the trial slot when half-open); false when blocked. */
  begin(now: number): boolean {
    if (this.blockedFor(now) > 0) return false;
    if (this.state === 'half-open') this.trialInFlight = true;
    return true;
  }

  /** The destination answered (2xx, or a 4xx refusal). */
  reachable(): void {
    this.trialInFlight = false;
    this.failures = 0;
    if (this.state !== 'closed') this.set('closed');
  }

  /** A failed attempt (`reason`: its error); returns the pause to apply when this failure opened the breaker. */
  failed(now: number, reason?: string): number | null {
    this.trialInFlight = false;
    this.failures += 1;
    this.lastFailure = reason;
    if (this.state === 'half-open' || (this.state === 'closed' && this.failures >= this.threshold)) {
      this.openUntil = now + this.cooldownMs;
      this.openedAt ??= now;
      this.set('open');
      return this.cooldownMs;
    }
    return null;
  }

  /** The attempt ended without an answer we can judge (our own error): free the trial slot. */
  abandon(): void {
    this.trialInFlight = false;
  }

  private set(state: BreakerState) {
    this.state = state;
    const change: BreakerChange = {
      failures: this.failures,
      openedAt: this.openedAt,
      openUntil: this.openUntil,
      lastFailure: this.lastFailure,
    };
    if (state === 'closed') {
      this.openedAt = undefined;
      this.lastFailure = undefined;
    }
    this.onChange(state, change);
  }
}
