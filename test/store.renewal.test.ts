import { describe, expect, it } from 'vitest';
import { renewWhileHeld } from '../src/store/renewal.js';

describe('renewWhileHeld', () => {
  it('calls the lock lost once renewals have failed for a whole ttl (the store unreachable)', async () => {
    const errors: unknown[] = [];
    let stop: () => void = () => {};
    await new Promise<void>((resolve) => {
      stop = renewWhileHeld({
        ttlMs: 60,
        renew: () => Promise.reject(new Error('store unreachable')),
        onLost: resolve,
        onError: (error) => errors.push(error),
      });
    });
    stop();
    // The renewals before the ttl ran out were reported as errors, not as a lost lock.
    expect(errors.length).toBeGreaterThan(0);
  });

  it('keeps the lock while renewals hold, and says lost when one answers false', async () => {
    let answers = 3;
    let renewals = 0;
    await new Promise<void>((resolve) => {
      renewWhileHeld({
        ttlMs: 30,
        renew: async () => {
          renewals++;
          return answers-- > 0;
        },
        onLost: resolve,
      });
    });
    expect(renewals).toBe(4);
  });
});
