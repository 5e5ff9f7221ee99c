import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { AdapterRegistry } from '../../src/registry.js';
import { createRedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../../test/support/redis.js';
import { chatvisorAdapter } from './index.js';
import { customerHashes, idleAliveKey, storeKeys } from './state.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';
import { memoryLogger } from './test-support/logs.js';

/**
 * Without a poll schedule nothing forgot a Chatvisor customer's state (status, finish mark,
 * cached profile, pending read, pushed labels): every customer id a webhook named, made-up ones
 * included, stayed in the store for good. Now each webhook that names a customer marks it alive
 * for `idleCustomerTtl` (default 30 days, never less than the contact model's dedupe time) and a
 * customer idle longer is forgotten. With a poll schedule the poller forgets customers Chatvisor
 * no longer lists, as before, and nothing here runs.
 */
const DAY = 24 * 3_600_000;
const conversation = (customerId: string, status = 'UNREAD', text = 'Hello') => ({
  customerId,
  status,
  lastMessage: { text },
});

let fake: FakeChatvisor;
let url: string;
const prefix = uniquePrefix('chatvisor-idle');
const stores: Store[] = [];
beforeAll(async () => {
  fake = await startFakeChatvisor();
  url = await getTestRedisUrl();
});
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  await fake.close();
  await cleanupPrefix(url, prefix);
});
beforeEach(() => {
  fake.customers.clear();
  fake.clearFailures();
  fake.resetLog();
});

let clock = Date.parse('2026-01-10T09:00:00.000Z');
async function runtimeOnRedis(name: string, settings: Record<string, unknown> = {}): Promise<TestRuntime> {
  const { logger } = memoryLogger('silent');
  const store = await createRedisStore({ url, keyPrefix: `${prefix}:${name}`, logger });
  stores.push(store);
  return buildRuntime({
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    settings: { maxRetries: 0, ...settings },
    store,
    now: () => new Date(clock),
  });
}

/** Every per-customer hash field the channel holds for this customer. */
async function stateOf(test: TestRuntime, customerId: string): Promise<string[]> {
  const held: string[] = [];
  for (const key of customerHashes('cobrowse'))
    if ((await test.store.hget(key, customerId)) !== null) held.push(key.split(':').slice(2).join(':'));
  return held;
}

describe('Chatvisor customers idle without a poll schedule', () => {
  it('marks a webhook-only customer alive with an expiry, refreshed by each webhook, and forgets it once idle', async () => {
    const test = await runtimeOnRedis('webhook-only');
    fake.addCustomer({ customerId: 'real-1', id: 'P-1', email: 'real@example.org' });
    expect((await test.webhook(conversation('real-1'))).outcome).toBe('ok');
    // A made-up customer: Chatvisor does not know it (its profile read fails, it is marked pending).
    expect((await test.webhook(conversation('made-up-1'))).outcome).toBe('ok');
    await test.runtime.idle();
    expect(await stateOf(test, 'real-1')).toEqual(['status', 'profiles']);
    expect(await stateOf(test, 'made-up-1')).toEqual(['status', 'profiles:pending']);
    for (const customerId of ['real-1', 'made-up-1']) {
      const ttl = await test.store.pttl(idleAliveKey('cobrowse', customerId));
      expect(ttl, customerId).toBeGreaterThan(30 * DAY - 60_000);
      expect(ttl, customerId).toBeLessThanOrEqual(30 * DAY);
    }

    // 20 days on, the real customer writes again (a repeated status counts too): alive 30 more days.
    clock += 20 * DAY;
    await test.store.set(idleAliveKey('cobrowse', 'real-1'), '1', { ttlMs: 10 * DAY });
    expect((await test.webhook(conversation('real-1'))).outcome).toBe('duplicate');
    await test.runtime.idle(); // the sweep that webhook started (nothing is idle yet)
    expect(await test.store.pttl(idleAliveKey('cobrowse', 'real-1'))).toBeGreaterThan(30 * DAY - 60_000);
    expect(await stateOf(test, 'made-up-1')).toEqual(['status', 'profiles:pending']);

    // 31 days after the made-up customer's only webhook: Redis has expired its mark (done here by
    // hand: a test cannot wait a month).
    clock += 11 * DAY;
    await test.store.del(idleAliveKey('cobrowse', 'made-up-1'));
    expect(await test.runtime.idleCustomers.sweep()).toBe(1);
    expect(await stateOf(test, 'made-up-1')).toEqual([]);
    expect(await test.store.zscore(storeKeys('cobrowse').idleTouched, 'made-up-1')).toBeNull();
    // The real customer is kept, and its flow goes on: a repeat is still a duplicate, a finish is new.
    expect(await stateOf(test, 'real-1')).toEqual(['status', 'profiles']);
    expect((await test.webhook(conversation('real-1'))).outcome).toBe('duplicate');
    expect((await test.webhook(conversation('real-1', 'DONE'))).outcome).toBe('ok');
    expect((await test.webhook(conversation('real-1', 'DONE'))).outcome).toBe('duplicate');
    await test.runtime.idle();
    expect(await stateOf(test, 'real-1')).toEqual(['status', 'ended', 'profiles']);
    expect(await test.runtime.idleCustomers.sweep()).toBe(0);
    const types = (await test.outbox()).map((entry) => entry.event.type);
    expect(types.filter((type) => type === 'conversation.finished')).toHaveLength(1);
  });

  it('sweeps by itself after webhooks, and takes in customers stored before it existed', async () => {
    const test = await runtimeOnRedis('adopt');
    // State an older version left: no alive mark, no entry in the index.
    const keys = storeKeys('cobrowse');
    await test.store.hset(keys.status, 'left-over', 'DONE');
    await test.store.hset(keys.profilePending, 'left-over', '{"reason":"x"}');
    expect((await test.webhook(conversation('someone'))).outcome).toBe('ok');
    await test.runtime.idle();
    // The first sweep (after that webhook) adopted it: forgotten once idle for the TTL from now.
    expect(await test.store.zscore(keys.idleTouched, 'left-over')).toBe(clock);
    expect(await stateOf(test, 'left-over')).toEqual(['status', 'profiles:pending']);
    clock += 31 * DAY;
    await test.store.del(idleAliveKey('cobrowse', 'someone'));
    // The next webhook (another customer's) starts the sweep; idle() waits for it.
    await test.webhook(conversation('another'));
    await test.runtime.idle();
    expect(await stateOf(test, 'left-over')).toEqual([]);
    expect(await stateOf(test, 'someone')).toEqual([]);
    expect(await stateOf(test, 'another')).toEqual(['status', 'profiles:pending']);
    expect(
      await test.context.metrics.registry.getSingleMetricAsString(
        'chatbridge_chatvisor_idle_customers_forgotten_total',
      ),
    ).toContain('chatbridge_chatvisor_idle_customers_forgotten_total{channel="cobrowse"} 2');
  });

  it('takes in many stored customers a page at a time, reading their ids only', async () => {
    const { logger } = memoryLogger('silent');
    const redis = await createRedisStore({ url, keyPrefix: `${prefix}:adopt-many`, logger });
    stores.push(redis);
    // What the sweep reads of the per-customer hashes: whole hashes (HGETALL), or pages of ids.
    const wholeReads: string[] = [];
    const pages: Array<{ key: string; count: number; fields: number }> = [];
    const store = new Proxy(redis, {
      get(target, property, receiver) {
        if (property === 'hgetall')
          return (key: string) => {
            wholeReads.push(key);
            return target.hgetall(key);
          };
        if (property === 'hscanFields')
          return async (key: string, cursor: string, count: number) => {
            const page = await target.hscanFields(key, cursor, count);
            pages.push({ key, count, fields: page.fields.length });
            return page;
          };
        return Reflect.get(target, property, receiver);
      },
    }) as Store;
    const test = buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0 },
      store,
      now: () => new Date(clock),
    });
    // An older version's state: 1,500 customers' statuses, 400 of them (and 100 others) with a
    // cached profile of some size. No alive marks, no index.
    const keys = storeKeys('cobrowse');
    const profile = JSON.stringify({ name: 'x'.repeat(2000) });
    for (let start = 0; start < 1500; start += 250) {
      const batch = redis.batch();
      for (let index = start; index < start + 250; index++) batch.hset(keys.status, `c${index}`, 'DONE');
      await batch.exec();
    }
    for (let start = 1100; start < 1600; start += 250) {
      const batch = redis.batch();
      for (let index = start; index < start + 250; index++) batch.hset(keys.profiles, `c${index}`, profile);
      await batch.exec();
    }

    expect(await test.runtime.idleCustomers.sweep()).toBe(0);
    // Every one of the 1,600 customers indexed, touched now.
    expect(await redis.zcard(keys.idleTouched)).toBe(1600);
    expect(await redis.zscore(keys.idleTouched, 'c0')).toBe(clock);
    expect(await redis.zscore(keys.idleTouched, 'c1599')).toBe(clock);
    // No hash read whole; the big one in several bounded pages.
    expect(wholeReads.filter((key) => customerHashes('cobrowse').includes(key))).toEqual([]);
    expect(pages.filter((page) => page.key === keys.status).length).toBeGreaterThan(1);
    for (const page of pages) expect(page.count).toBeLessThanOrEqual(500);
    // Their state is as it was: taken in, not forgotten.
    expect(await redis.hget(keys.status, 'c0')).toBe('DONE');
    expect(await redis.hget(keys.profiles, 'c1599')).toBe(profile);
  });

  it('keeps state as before with a poll schedule, or with idleCustomerTtl 0s', async () => {
    for (const [name, settings] of [
      ['polled', { schedules: { conversationPoll: '0 0 1 1 *' } }],
      ['never', { idleCustomerTtl: '0s' }],
    ] as const) {
      const test = await runtimeOnRedis(name, settings);
      expect((await test.webhook(conversation('made-up-2'))).outcome, name).toBe('ok');
      await test.runtime.idle();
      expect(await stateOf(test, 'made-up-2'), name).toEqual(['status', 'profiles:pending']);
      expect(await test.store.pttl(idleAliveKey('cobrowse', 'made-up-2')), name).toBe(-2);
      expect(await test.store.zcard(storeKeys('cobrowse').idleTouched), name).toBe(0);
      clock += 40 * DAY;
      expect(await test.runtime.idleCustomers.sweep(), name).toBe(0);
      expect(await stateOf(test, 'made-up-2'), name).toEqual(['status', 'profiles:pending']);
    }
  });

  it('refuses an idleCustomerTtl shorter than the contact model’s dedupe time', () => {
    const registry = new AdapterRegistry([chatvisorAdapter]);
    const check = (idleCustomerTtl: string, dedupeTtlSeconds?: number) => {
      try {
        parseConfig(
          {
            admin: { token: 'a'.repeat(20) },
            ...(dedupeTtlSeconds ? { identity: { dedupeTtlSeconds } } : {}),
            channels: [
              {
                id: 'cobrowse',
                vendor: 'chatvisor',
                token: 'chatvisor-hook-token-0123456789',
                apiToken: 'x',
                idleCustomerTtl,
              },
            ],
          },
          registry,
          {},
        );
        return [];
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
      }
    };
    expect(check('7d')).toEqual([]);
    expect(check('0s')).toEqual([]);
    expect(check('6d')).toEqual([
      expect.stringMatching(/^channels\[0\]\.idleCustomerTtl: at least identity\.dedupeTtlSeconds \(7d\)/),
    ]);
    expect(check('10d', 14 * 24 * 3600)).toHaveLength(1);
  });
});
