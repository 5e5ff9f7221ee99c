import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { renewWhileHeld } from '../src/store/renewal.js';

// Fake timers and a fake performance clock: with real ones, a loaded machine can run the first
// renewal after the whole ttl has passed, and the test would see a lost lock with no error first.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('renewWhileHeld', () => {
  it('calls the lock lost once renewals have failed for a whole ttl (the store unreachable)', async () => {
    const errors: unknown[] = [];
    let lost = 0;
    const stop = renewWhileHeld({
      ttlMs: 60,
      renew: () => Promise.reject(new Error('store unreachable')),
      onLost: () => lost++,
      onError: (error) => errors.push(error),
    });
    // Renewals every 20 ms: the ones at 20 and 40 ms fail within the ttl and are reported as errors.
    await vi.advanceTimersByTimeAsync(40);
    expect(errors).toHaveLength(2);
    expect(lost).toBe(0);
    // The one at 60 ms has seen no renewal hold for a whole ttl: lost, once, and renewing stops.
    await vi.advanceTimersByTimeAsync(20);
    expect(lost).toBe(1);
    await vi.advanceTimersByTimeAsync(200);
    expect(lost).toBe(1);
    expect(errors).toHaveLength(2);
    stop();
  });

  it('keeps the lock while renewals hold, and says lost when one answers false', async () => {
    let answers = 3;
    let renewals = 0;
    let lost = 0;
    renewWhileHeld({
      ttlMs: 30,
      renew: async () => {
        renewals++;
        return answers-- > 0;
      },
      onLost: () => lost++,
    });
    await vi.advanceTimersByTimeAsync(30);
    expect(renewals).toBe(3);
    expect(lost).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(renewals).toBe(4);
    expect(lost).toBe(1);
  });
});
