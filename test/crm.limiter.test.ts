import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRateLimiter } from '../src/crm/limiter.js';
import { createMemoryStore } from '../src/store/memory.js';
import { until } from './support/until.js';

/**
 * The CRM request limiter admits one request per 1000/perSecond ms, shared by every instance
 * through the store, and measured by the store's clock (key expiry), not by the instances'
 * clocks, which may be apart. The tests read the store's clock, not the wall clock.
 */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(() => {
  vi.restoreAllMocks();
});

describe('CRM rate limiter', () => {
  it('admits requests at least 1000/perSecond ms apart on the store clock, across limiters sharing the store', async () => {
    let clock = 1_000_000;
    const store = createMemoryStore({ now: () => clock });
    // Each admission at the store clock's reading when the pace key was set: read inside the
    // store call (the memory store applies it at once), not when the caller's promise settles,
    // by which time the loop below may have moved the clock.
    const admitted: number[] = [];
    const set = store.set.bind(store);
    store.set = async (key, value, options) => {
      const at = clock;
      const done = await set(key, value, options);
      if (done) admitted.push(at);
      return done;
    };
    const a = createRateLimiter(store, 'amo', 50);
    const b = createRateLimiter(store, 'amo', 50);
    const waiting = Array.from({ length: 8 }, (_, index) => (index % 2 ? a : b).acquire());
    // The store's clock moves only when the test moves it.
    const deadline = performance.now() + 5000;
    while (admitted.length < 8 && performance.now() < deadline) {
      clock += 7;
      await sleep(2);
    }
    await Promise.all(waiting);
    for (let index = 1; index < admitted.length; index++)
      expect(admitted[index]! - admitted[index - 1]!).toBeGreaterThanOrEqual(20);
    await store.close();
  });

  it('instances whose clocks are apart still share one pace: while the store clock stands still, only one request is admitted', async () => {
    const store = createMemoryStore({ now: () => 5_000_000 });
    const refused: string[] = [];
    const set = store.set.bind(store);
    store.set = async (key, value, options) => {
      const done = await set(key, value, options);
      if (!done) refused.push(key);
      return done;
    };
    const incr = store.incr.bind(store);
    store.incr = async (key) => {
      const value = await incr(key);
      if (value > 1) refused.push(key);
      return value;
    };
    // Two instances of one destination, their clocks ten seconds apart.
    const behind = createRateLimiter(store, 'amo', 6);
    const ahead = createRateLimiter(store, 'amo', 6);
    const clock = vi.spyOn(Date, 'now').mockReturnValue(5_000_000);
    await behind.acquire();
    clock.mockReturnValue(5_010_000);
    const controller = new AbortController();
    let admitted = false;
    const second = ahead.acquire(controller.signal).then(() => {
      admitted = true;
    });
    await until(() => admitted || refused.length >= 2, 'the second request admitted or refused twice');
    expect(admitted).toBe(false);
    controller.abort(new Error('gave up'));
    await expect(second).rejects.toThrow('gave up');
    await store.close();
  });

  it('stops waiting when its signal aborts', async () => {
    const store = createMemoryStore({ now: () => 5_000 });
    const limiter = createRateLimiter(store, 'b24', 1);
    await limiter.acquire();
    const controller = new AbortController();
    const waiting = limiter.acquire(controller.signal);
    controller.abort(new Error('gave up'));
    await expect(waiting).rejects.toThrow('gave up');
    await store.close();
  });
});
