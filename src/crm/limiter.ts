import { sleep } from '../net/retry.js';
import type { Store } from '../store/types.js';

/**
 * Per-destination request rate, shared by every instance through the store (DESIGN §10: under
 * the CRM's published limit, amoCRM 7/s, Bitrix24 2/s).
 *
 * Requests are spaced, not counted per second: time is cut into slots of 1000/perSecond ms and
 * each slot admits one request (a counter per slot in the store, so instances share it). A
 * counter per aligned one-second window would let two full windows meet at a boundary — up to
 * 2 × perSecond requests within one second; with one request per slot, any one-second interval
 * holds at most perSecond + 1 requests, and the sustained rate is perSecond. Connectors set
 * perSecond one under the CRM's published figure.
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
  const slotMs = Math.ceil(1000 / perSecond);
  const prefix = `crm:rate:${encodeURIComponent(destinationId)}:${slotMs}`;
  return {
    async acquire(signal) {
      for (;;) {
        signal?.throwIfAborted();
        const at = now();
        const slot = Math.floor(at / slotMs);
        const key = `${prefix}:${slot}`;
        const used = await store.incr(key);
        if (used === 1) {
          await store
            .batch()
            .expire(key, slotMs + 5000)
            .exec();
          return;
        }
        // Spread the waiters over the next slot instead of waking them all at its start.
        const wait = (slot + 1) * slotMs - at + Math.floor(Math.random() * Math.min(50, slotMs / 4));
        await sleep(wait, signal);
      }
    },
  };
}
