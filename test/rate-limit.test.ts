import { describe, expect, it } from 'vitest';
import { WindowLimiter } from '../src/http/rate-limit.js';

describe('WindowLimiter, on a clock the test moves', () => {
  it('admits `limit` per window and key, says how long to wait, and starts afresh when the window is over', () => {
    let now = 1_000_000;
    const limiter = new WindowLimiter(2, 60_000, 100, () => now);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(60);
    // Another key has its own window.
    expect(limiter.take('b')).toBe(0);
    now += 45_000;
    expect(limiter.blockedFor('a')).toBe(15);
    now += 15_000;
    expect(limiter.blockedFor('a')).toBe(0);
    expect(limiter.take('a')).toBe(0);
  });

  it('remembers at most maxKeys keys: rotating addresses cannot grow it, and the oldest is forgotten', () => {
    const now = 5_000;
    const limiter = new WindowLimiter(1, 60_000, 3, () => now);
    for (const key of ['a', 'b', 'c', 'd']) limiter.hit(key);
    // 'a' was the least recently used: forgotten, so it may try again.
    expect(limiter.blockedFor('a')).toBe(0);
    expect(limiter.blockedFor('d')).toBeGreaterThan(0);
  });
});
