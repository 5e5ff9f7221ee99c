import { StoreBusyError } from '../errors.js';
import type { Lock, Store } from './types.js';

/**
 * Keep a store lock alive while work runs under it: `renew` every third of `ttlMs` (so two
 * renewals can fail or be late before the lock expires). When a renewal answers false the lock is
 * gone (it expired and may be someone else's now): `onLost` is called once and renewing stops.
 * A renewal that throws (the store unreachable) goes to `onError` and is tried again next time;
 * when none has held for `ttlMs`, the lock has expired: `onLost`.
 * Returns stop(). The timer does not keep the process alive.
 */
export function renewWhileHeld(options: {
  ttlMs: number;
  renew: () => Promise<boolean>;
  onLost: () => void;
  onError?: (error: unknown) => void;
}): () => void {
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  // When the last renewal that held was sent: the lock lives at most ttlMs past it.
  let heldSince = performance.now();
  const tick = async () => {
    const sentAt = performance.now();
    try {
      const held = await options.renew();
      if (held) heldSince = sentAt;
      else if (!stopped) {
        stop();
        options.onLost();
      }
    } catch (error) {
      if (stopped) return;
      // Renewals that fail (the store unreachable) for a whole ttl: the lock has expired, and
      // once the store is back another holder may take it before a renewal could answer false.
      // Lost now, so the work stops while it is still alone, not after it ran beside another.
      if (performance.now() - heldSince >= options.ttlMs) {
        stop();
        options.onLost();
      } else options.onError?.(error);
    }
  };
  const timer = setInterval(() => void tick(), Math.max(1, Math.floor(options.ttlMs / 3)));
  timer.unref();
  return stop;
}

/** A store lock taken for one unit of work and renewed while it runs (renewWhileHeld). */
export interface RenewedLock {
  /** True once a renewal found the lock gone, or renewals failed for a whole ttl: start no more work. */
  readonly lost: boolean;
  /**
   * True while the lock is still ours: no renewal found it gone and a renewal made now holds.
   * Asked right before a step that only the holder may take (a trim): the timer's renewals may
   * not have run if the event loop was held up.
   */
  stillHeld(): Promise<boolean>;
  /** Stops renewing and releases the lock. */
  release(): Promise<void>;
}

/**
 * Takes `key` without waiting and keeps it renewed; null when another holder has it. Renewal
 * failures go to `onRenewError` and are tried again; `onLost` is told once when the lock is lost
 * (see renewWhileHeld for when).
 */
export async function lockRenewed(
  store: Pick<Store, 'lock'>,
  key: string,
  ttlMs: number,
  handlers: { onRenewError: (error: unknown) => void; onLost?: () => void },
): Promise<RenewedLock | null> {
  let lock: Lock;
  try {
    lock = await store.lock([key], { ttlMs, waitMs: 0 });
  } catch (error) {
    if (error instanceof StoreBusyError) return null;
    throw error;
  }
  let lost = false;
  const stopRenewing = renewWhileHeld({
    ttlMs,
    renew: () => lock.renew(ttlMs),
    onLost: () => {
      lost = true;
      handlers.onLost?.();
    },
    onError: handlers.onRenewError,
  });
  return {
    get lost() {
      return lost;
    },
    stillHeld: async () => !lost && (await lock.renew(ttlMs)),
    release: async () => {
      stopRenewing();
      await lock.release();
    },
  };
}
