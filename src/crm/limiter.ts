import { sleep } from '../net/retry.js';
import type { Store } from '../store/types.js';

/**
 * Per-destination request rate, shared by every instance through the store (DESIGN §10: under
 * the CRM's published limit, amoCRM 7/s, Bitrix24 2/s).
 *
 * Requests are spaced, not counted per second: a request is admitted only when it can create the
 * destination's pace key (SET NX) with a lifetime of 1000/perSecond ms, so two admissions are at
 * least that far apart, any one-second interval holds at most perSecond of them (one more only
 * if the interval's ends both land on one), and the sustained rate is perSecond. Connectors set
 * perSecond one under the CRM's published figure.
 *
 * The spacing is measured by the store's clock (the key's expiry, kept by Redis), never by the
 * instances' clocks: slots computed from each instance's own clock let two instances whose clocks
 * are apart by a slot admit one request each at the same moment, and by more than a key's
 * lifetime, each its own full rate (twice the CRM's limit with two instances).
 */
export interface RateLimiter {
  acquire(signal?: AbortSignal): Promise<void>;
}

export function createRateLimiter(store: Store, destinationId: string, perSecond: number): RateLimiter {
  const spacingMs = Math.ceil(1000 / perSecond);
  const key = `crm:pace:${encodeURIComponent(destinationId)}`;
  return {
    async acquire(signal) {
      for (;;) {
        signal?.throwIfAborted();
        if (await store.set(key, '1', { nx: true, ttlMs: spacingMs })) return;
        // Wait out what is left of the key's lifetime (by the store's clock; -2: it just went,
        // -1: no expiry, which this code never writes), spread over a few ms so that the waiters
        // do not all come back at once.
        const left = await store.pttl(key);
        const wait = (left >= 0 ? left : left === -2 ? 0 : spacingMs) + 1;
        await sleep(wait + Math.floor(Math.random() * Math.min(50, spacingMs / 4)), signal);
      }
    },
  };
}
