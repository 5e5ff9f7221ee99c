import type { Store } from '../store/types.js';

/**
 * Per-destination request rate, shared by every instance through the store (DESIGN §10: under
 * the CRM's published limit, amoCRM 7/s, Bitrix24 2/s). A counter per one-second window: a
 * caller over the budget waits for the next window. Windows are aligned to wall-clock seconds,
 * so the budget is `perSecond` per window; connectors set it one under the published figure
 * where bursts across a window boundary matter.
 */
export interface RateLimiter {
  acquire(signal?: AbortSignal): Promise<void>;
}

export function createRateLimiter(
  store: Store,
  destinationId: string,
  perSecond: number,
  now: () => number = Date.now,
): RateLimiter {
  return {
    async acquire(signal) {
      for (;;) {
        signal?.throwIfAborted();
        const at = now();
        const window = Math.floor(at / 1000);
        const key = `crm:rate:${encodeURIComponent(destinationId)}:${window}`;
        const used = await store.incr(key);
        if (used === 1) await store.batch().expire(key, 5000).exec();
        if (used <= perSecond) return;
        // Spread the waiters over the next window instead of waking them all at its start.
        const wait = (window + 1) * 1000 - at + Math.floor(Math.random() * 50);
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, wait);
          signal?.addEventListener(
            'abort',
            () => {
              clearTimeout(timer);
              reject(signal.reason);
            },
            { once: true },
          );
        });
      }
    },
  };
}
