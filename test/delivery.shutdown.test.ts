import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createDelivery } from '../src/delivery/index.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { createMemoryStore } from '../src/store/memory.js';
import type { Store } from '../src/store/types.js';

/**
 * Closing delivery while the store does not answer (Redis hung: every command waits for the
 * client's command timeout before failing). What close() still asks of the store must go out at
 * once, not one destination after the other: with 12 destinations a SIGTERM during a Redis hang
 * took 12 command timeouts (about 24 s) after the queues' own grace, past a platform's grace
 * before SIGKILL. Counted, not timed: the store here never answers until the test lets it.
 */
const SECRET = `whsec_${Buffer.alloc(24, 5).toString('base64')}`;
const DESTINATIONS = 6;

describe('delivery close with the store hung', () => {
  it('removes its served-destination notes all at once, not one command timeout per destination', async () => {
    const memory = createMemoryStore();
    let hung = false;
    const waiting: Array<() => void> = [];
    // The memory store, except that once `hung`, a zrem never answers until released.
    const store = new Proxy(memory, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver);
        if (name !== 'zrem' || typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (!hung) return value.apply(target, args);
          return new Promise((resolve) => waiting.push(() => resolve(value.apply(target, args))));
        };
      },
    }) as Store;
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
      destinations: Array.from({ length: DESTINATIONS }, (_, index) => ({
        id: `crm-${index}`,
        url: 'http://127.0.0.1:9/hook',
        secret: SECRET,
      })),
    });
    const delivery = createDelivery({
      config,
      store,
      redisUrl: undefined,
      keyPrefix: 'shutdown',
      events: createOutboxPublisher(store),
      http: createHttpClient(),
      logger: pino({ level: 'silent' }),
      metrics: new Metrics(),
      now: () => new Date(),
    });
    await delivery.start();
    expect(await store.zrangeByScore('delivery:served:crm-0', 0, Number.POSITIVE_INFINITY, 10)).toHaveLength(
      1,
    );

    hung = true;
    let closed = false;
    const closing = delivery.close().then(() => {
      closed = true;
    });
    // Until every removal is asked for (the old close asked for the next only once the last answered).
    for (let turns = 0; waiting.length < DESTINATIONS && turns < 1000; turns++)
      await new Promise((resolve) => setImmediate(resolve));
    expect(waiting).toHaveLength(DESTINATIONS);
    expect(closed).toBe(false);

    for (const release of waiting.splice(0)) release();
    await closing;
    expect(closed).toBe(true);
    for (let index = 0; index < DESTINATIONS; index++)
      expect(
        await memory.zrangeByScore(`delivery:served:crm-${index}`, 0, Number.POSITIVE_INFINITY, 10),
      ).toEqual([]);
    await memory.close();
  });
});
