import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { jivochatAdapter } from '../../adapters/jivochat/index.js';
import { configSchema } from '../../src/config/schema.js';
import { createContactEngine } from '../../src/contacts/engine.js';
import type { Observation } from '../../src/contacts/types.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createDeferredIntake, DEFERRED_KEY } from '../../src/intake/deferred.js';
import { createPayloadJournal } from '../../src/intake/journal.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * The deferred intake's drain lock outlives a slow chunk (renewed while it is recorded). It had
 * a fixed 30 s lifetime: a chunk recorded more slowly than that let a second worker take the lock
 * and record the same items beside the first. Two instances (two Redis connections) on a real
 * Redis; the first one's chunk is held for over 40 s, far past the lock's ttl, old or new.
 */
const ROOT = join(import.meta.dirname, '..', '..');
const JIVO_TOKEN = 'site-token-0123456789abcdef';
const finished = (n: number) => ({
  ...JSON.parse(
    readFileSync(join(ROOT, 'adapters', 'jivochat', '__fixtures__', 'chat_finished.json'), 'utf8'),
  ),
  chat_id: 9_200_000 + n,
  visitor: { name: `Visitor ${n}`, email: `deferred-lock-${n}@example.org`, number: String(n) },
});
const emailOf = (observation: Observation) =>
  (observation.identifiers ?? []).find((identifier) => identifier.kind === 'email')?.value ?? '';

describe('the deferred drain lock', () => {
  const prefix = uniquePrefix('deferred-lock');
  const stores: RedisStore[] = [];
  afterAll(async () => {
    for (const store of stores) await store.close();
    await cleanupPrefix(await getTestRedisUrl(), prefix);
  });

  it('two workers never record the same item while one chunk outlasts the lock ttl', async () => {
    const url = await getTestRedisUrl();
    const logger = createLogger('silent');
    /** Every observe call, by email, across both workers. */
    const calls = new Map<string, number>();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const holding = new Promise<void>((resolve) => {
      started = resolve;
    });

    async function instance(holds: boolean) {
      const store = await createRedisStore({ url, keyPrefix: prefix, logger });
      stores.push(store);
      const metrics = new Metrics({ defaultMetrics: false });
      const engine = createContactEngine({
        store,
        identity: configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
        events: createOutboxPublisher(store, { enabled: false }),
        metrics,
        logger,
      });
      const state = jivochatAdapter.create(
        {} as never,
        { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN } as never,
      ).state;
      const contacts = new Proxy(engine, {
        get(target, property, receiver) {
          if (property !== 'observe') return Reflect.get(target, property, receiver);
          return async (observation: Observation) => {
            const email = emailOf(observation);
            calls.set(email, (calls.get(email) ?? 0) + 1);
            // The first worker's chunk is slow: item 0 is recorded only when the test says so.
            if (holds && email === 'deferred-lock-0@example.org') {
              started();
              await released;
            }
            return target.observe(observation);
          };
        },
      });
      const deferred = createDeferredIntake({
        store,
        routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
        contacts,
        journal: createPayloadJournal(store),
        logger,
        metrics,
        maxBacklog: 1000,
      });
      return { store, engine, deferred };
    }

    const first = await instance(true);
    const second = await instance(false);
    for (let n = 0; n < 3; n++) {
      await first.deferred.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(n))),
        contentType: 'application/json',
        receivedAt: new Date('2026-11-01T12:00:00.000Z'),
      });
    }
    const firstDrain = first.deferred.drain();
    await holding;

    // The second worker tries once a second for over 40 s (past 10 s and past the old 30 s).
    const rounds: Array<{ recorded: number; busy: boolean }> = [];
    for (let round = 0; round < 42; round++) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      rounds.push(await second.deferred.drain());
      expect(
        [...calls.values()].every((count) => count === 1),
        JSON.stringify([...calls]),
      ).toBe(true);
    }
    expect(rounds.every((round) => round.busy && round.recorded === 0)).toBe(true);

    release();
    expect(await firstDrain).toEqual({ recorded: 3, busy: false });
    expect(await second.deferred.drain()).toEqual({ recorded: 0, busy: false });
    expect(await first.store.llen(DEFERRED_KEY)).toBe(0);
    expect(Object.fromEntries(calls)).toEqual({
      'deferred-lock-0@example.org': 1,
      'deferred-lock-1@example.org': 1,
      'deferred-lock-2@example.org': 1,
    });
    for (let n = 0; n < 3; n++) {
      const found = await first.engine.find({ email: `deferred-lock-${n}@example.org` });
      expect(found).toHaveLength(1);
      expect(found[0]!.channels[0]?.observations).toBe(1);
    }
  }, 150_000);
});
