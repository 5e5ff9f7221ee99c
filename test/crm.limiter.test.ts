import { describe, expect, it } from 'vitest';
import { createRateLimiter } from '../src/crm/limiter.js';
import { createMemoryStore } from '../src/store/memory.js';

/**
 * The CRM request limiter admits one request per slot of 1000/perSecond ms, so any one-second
 * interval holds at most perSecond + 1 requests (amoCRM's published 7/s with perSecond 6). The
 * test reads what the limiter claimed in the store — one winner per slot — not the clock.
 */
describe('CRM rate limiter', () => {
  it('admits one request per slot, across limiters sharing the store', async () => {
    const store = createMemoryStore();
    const admitted: string[] = [];
    const incr = store.incr.bind(store);
    store.incr = async (key: string) => {
      const value = await incr(key);
      if (value === 1) admitted.push(key);
      return value;
    };
    // Two "instances" of one destination share the store.
    const a = createRateLimiter(store, 'amo', 50);
    const b = createRateLimiter(store, 'amo', 50);
    await Promise.all(Array.from({ length: 12 }, (_, index) => (index % 2 ? a : b).acquire()));
    expect(admitted).toHaveLength(12);
    expect(new Set(admitted).size).toBe(12);
    const slots = admitted.map((key) => Number(key.split(':').at(-1))).sort((x, y) => x - y);
    // Every admission in its own 20 ms slot: at most 51 in any one-second interval.
    for (let index = 1; index < slots.length; index++)
      expect(slots[index]).toBeGreaterThan(slots[index - 1]!);
    await store.close();
  });

  it('stops waiting when its signal aborts', async () => {
    const store = createMemoryStore();
    const limiter = createRateLimiter(store, 'b24', 1, () => 5_000);
    await limiter.acquire();
    const controller = new AbortController();
    const waiting = limiter.acquire(controller.signal);
    controller.abort(new Error('gave up'));
    await expect(waiting).rejects.toThrow('gave up');
    await store.close();
  });
});
