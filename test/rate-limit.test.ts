import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { StoreUnavailableError, TooManyRequestsError } from '../src/errors.js';
import { createAuthFailureLimit, SHARED_COOL_DOWN_MS, WindowLimiter } from '../src/http/rate-limit.js';
import { createMemoryStore } from '../src/store/memory.js';
import type { Store } from '../src/store/types.js';
import { capturingLogger } from './support/logs.js';

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

  it('keeps a key counted again as the most recently used: the key forgotten is the one not counted since', () => {
    let now = 5_000;
    const limiter = new WindowLimiter(2, 60_000, 2, () => now);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('b')).toBe(0);
    expect(limiter.take('b')).toBe(0); // 'b' full
    now += 1_000;
    expect(limiter.take('a')).toBe(0); // 'a' full, and now the most recently used
    expect(limiter.take('c')).toBe(0); // a third key: the least recently used goes
    expect(limiter.blockedFor('b')).toBe(0); // forgotten
    expect(limiter.take('a')).toBe(59); // remembered, over its limit
    // The window ends when it began plus windowMs, however often it was counted since.
    now = 5_000 + 60_000;
    expect(limiter.take('a')).toBe(0);
    limiter.hit('a');
    expect(limiter.take('a')).toBe(60);
  });

  it('gives back a take that counted, within the window it counted in only', () => {
    let now = 1_000_000;
    const limiter = new WindowLimiter(2, 60_000, 100, () => now);
    expect(limiter.take('a')).toBe(0);
    const takenAt = limiter.now();
    expect(limiter.take('a')).toBe(0);
    limiter.giveBack('a', takenAt);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(60);
    // A window begun since never counted it: nothing is given back there.
    now += 60_000;
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(0);
    limiter.giveBack('a', takenAt);
    expect(limiter.take('a')).toBe(60);
  });
});

describe('createAuthFailureLimit (failed authentications: per address, and a ceiling that spares known addresses)', () => {
  const wrong = () => false;
  const right = () => true;
  function limitFor(shared: Store | null, now: () => number, logger = pino({ level: 'silent' })) {
    let refused = 0;
    const limit = createAuthFailureLimit({
      scope: 'admin_auth',
      perAddress: 3,
      ceiling: 5,
      windowMs: 48 * 3_600_000,
      ipv6PrefixLength: 64,
      shared,
      logger,
      onRefused: () => refused++,
      now,
    });
    return { limit, refusals: () => refused };
  }
  const outcome = (promise: Promise<boolean>) =>
    promise.then(
      (ok) => (ok ? 'ok' : 'wrong'),
      (error: unknown) => (error instanceof TooManyRequestsError ? 'limited' : `threw ${String(error)}`),
    );

  for (const kind of ['in process', 'with a shared store'] as const) {
    it(`evaluates no more guesses than the limit when they arrive all at once (${kind})`, async () => {
      const now = () => 1_000_000;
      const { limit, refusals } = limitFor(kind === 'in process' ? null : createMemoryStore({ now }), now);
      let compared = 0;
      const results = await Promise.all(
        Array.from({ length: 20 }, () =>
          outcome(
            limit.check('203.0.113.1', () => {
              compared++;
              return false;
            }),
          ),
        ),
      );
      expect(compared).toBe(3);
      expect(results.filter((each) => each === 'wrong')).toHaveLength(3);
      expect(results.filter((each) => each === 'limited')).toHaveLength(17);
      expect(refusals()).toBe(17);
    });
  }

  it('spares an address for a day after it presented the right token, then holds it back like any other', async () => {
    let at = 1_000_000;
    const now = () => at;
    const store = createMemoryStore({ now });
    const { limit } = limitFor(store, now);
    /** Another instance on the same store: it knows only what the store holds. */
    const otherInstance = () => limitFor(store, now).limit;
    expect(await limit.check('198.51.100.1', right)).toBe(true);
    expect(await limit.check('198.51.100.2', right)).toBe(true);
    for (let index = 0; index < 5; index++)
      expect(await outcome(limit.check(`203.0.113.${index}`, wrong))).toBe('wrong');
    // The ceiling (a 48 h window here) holds back an address never seen with the token.
    expect(await outcome(limit.check('192.0.2.1', right))).toBe('limited');
    expect(await outcome(otherInstance().check('192.0.2.1', right))).toBe('limited');
    at += 23 * 3_600_000;
    // Still known (a wrong token from it is compared, not refused: a typo, not a lockout).
    expect(await outcome(otherInstance().check('198.51.100.1', wrong))).toBe('wrong');
    // Used again at 23 h: written to the store again (at most once an hour per instance).
    expect(await outcome(limit.check('198.51.100.2', right))).toBe('ok');
    at += 2 * 3_600_000;
    // 25 h after it last presented the token, an address is held back by the ceiling again.
    expect(await outcome(otherInstance().check('198.51.100.1', right))).toBe('limited');
    expect(await outcome(limit.check('198.51.100.1', right))).toBe('limited');
    expect(await outcome(otherInstance().check('198.51.100.2', right))).toBe('ok');
  });

  it('falls back to its own counters while the store fails, says so once, leaves it alone for a cool-down, and says once when it is back', async () => {
    let at = 1_000_000;
    const now = () => at;
    const store = createMemoryStore({ now });
    let down = false;
    let asked = 0;
    const failing = (name: 'mget' | 'countInWindow' | 'set' | 'pttl') =>
      function (this: unknown, ...args: unknown[]) {
        asked++;
        if (down) return Promise.reject(new StoreUnavailableError(new Error('connection refused')));
        return (store[name] as (...given: unknown[]) => Promise<unknown>).apply(store, args);
      };
    const flaky: Store = Object.create(store, {
      mget: { value: failing('mget') },
      countInWindow: { value: failing('countInWindow') },
      set: { value: failing('set') },
      pttl: { value: failing('pttl') },
    });
    const { logger, lines } = capturingLogger('info');
    const { limit } = limitFor(flaky, now, logger);
    expect(await outcome(limit.check('203.0.113.9', wrong))).toBe('wrong');
    down = true;
    asked = 0;
    const during = [];
    for (let attempt = 0; attempt < 4; attempt++)
      during.push(await outcome(limit.check('203.0.113.9', wrong)));
    expect(during).toEqual(['wrong', 'wrong', 'limited', 'limited']);
    expect(await outcome(limit.check('198.51.100.9', right))).toBe('ok');
    // Asked once: after that failure the store is left alone for the cool-down.
    expect(asked).toBe(1);
    // A cool-down later one authentication tries it again (still down: alone again, not logged again).
    at += SHARED_COOL_DOWN_MS;
    expect(await outcome(limit.check('198.51.100.9', right))).toBe('ok');
    expect(await outcome(limit.check('198.51.100.9', right))).toBe('ok');
    expect(asked).toBe(2);
    down = false;
    // Back, but not asked before the cool-down is over.
    expect(await outcome(limit.check('198.51.100.9', right))).toBe('ok');
    expect(asked).toBe(2);
    at += SHARED_COOL_DOWN_MS;
    expect(await outcome(limit.check('198.51.100.9', right))).toBe('ok');
    expect(asked).toBeGreaterThan(2);
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      expect.stringMatching(/store cannot be reached; counting failed authentications on this instance only/),
    ]);
    expect(lines.filter((line) => line.level === 30).map((line) => line.msg)).toEqual([
      expect.stringMatching(/store answers again/),
    ]);
  });

  it('does not wait for a store that never answers: a deadline of its own, then its own counters', async () => {
    const now = () => 1_000_000;
    const store = createMemoryStore({ now });
    let asked = 0;
    // A hung Redis: every call is taken and never answered.
    const hung = () => {
      asked++;
      return new Promise<never>(() => undefined);
    };
    const frozen: Store = Object.create(store, {
      mget: { value: hung },
      countInWindow: { value: hung },
      set: { value: hung },
      pttl: { value: hung },
    });
    const { logger, lines } = capturingLogger('info');
    const { limit } = limitFor(frozen, now, logger);
    const results = [];
    for (let attempt = 0; attempt < 4; attempt++)
      results.push(await outcome(limit.check('203.0.113.8', wrong)));
    results.push(await outcome(limit.check('198.51.100.8', right)));
    expect(results).toEqual(['wrong', 'wrong', 'wrong', 'limited', 'ok']);
    expect(asked).toBe(1);
    expect(lines.filter((line) => /store cannot be reached/.test(line.msg))).toHaveLength(1);
  });
});
