import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../src/store/redis.js';
import { jivo, personFor } from './support/fault.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type PrivateRedis, type ReplicatedRedis, startReplicatedRedis } from './support/redis.js';

/**
 * store.durability and a vendor's retry (DESIGN §12). The retry of a webhook the bridge answered
 * 503 finds its idempotency key and writes nothing. Its WAIT counted the replicas that have the
 * writes of the connection it ran on — none, on a connection made since (a reconnect, a
 * failover, another instance) — so it answered 200 at once, while the replica still lacked the
 * first attempt's writes: a failover then lost a webhook the vendor had been told was stored.
 * A retry must establish that the state it answers from is on the replicas.
 *
 * Real processes: a private primary and its replica; the replica is stopped (SIGSTOP) to lag.
 */
describe('durability.replicas for a repeated webhook (the idempotency key exists)', () => {
  const token = 'dup-durability-jivo-token-0001';
  let pair: ReplicatedRedis;
  let primary: PrivateRedis;
  let replica: PrivateRedis;
  let bridge: TestBridge | undefined;

  beforeAll(async () => {
    pair = await startReplicatedRedis('dup-durability', ['--repl-diskless-sync-delay', '0']);
    ({ primary, replica } = pair);
  });
  afterEach(async () => {
    replica.resume();
    await bridge?.close();
    bridge = undefined;
  });
  afterAll(async () => {
    await pair?.close();
  });

  async function open(keyPrefix: string): Promise<TestBridge> {
    bridge = await startTestBridge({
      store: 'redis',
      keyPrefix,
      start: false,
      config: {
        store: { redis: primary.url, durability: { replicas: 1, timeoutMs: 300 } },
        channels: [{ id: 'site', vendor: 'jivochat', token, personIdFrom: 'user_token' }],
      },
    });
    return bridge;
  }

  /**
   * How many changes the primary's data took (INFO's count since the last save; reads and WAIT's
   * own traffic to the replicas do not count).
   */
  async function changesOnPrimary(): Promise<number> {
    const admin = new Redis(primary.url);
    try {
      return Number(/rdb_changes_since_last_save:(\d+)/.exec(await admin.info('persistence'))?.[1]);
    } finally {
      admin.disconnect();
    }
  }

  async function contactsOf(opened: TestBridge, person: string): Promise<number> {
    const found = await opened.admin(
      'GET',
      `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
    );
    expect(found.status).toBe(200);
    return found.body.contacts.length;
  }

  it('is answered 503 while the replica lacks the first attempt, on a new connection too; 200 once it has it', async () => {
    const opened = await open(`dup-durability-${process.pid}-reconnect`);
    const who = personFor('dupdur', 1);
    const webhook = jivo.chatAccepted(who, 41_001);
    const path = `/webhooks/jivochat/site/${token}`;

    replica.pause();
    // The first attempt is stored on the primary only: WAIT cannot be satisfied, the vendor is
    // told to retry.
    expect((await opened.post(path, webhook)).status).toBe(503);
    // The store's connection is made again (a network blip; a failover or another instance of
    // the bridge gives the retry a connection that wrote nothing too).
    const store = opened.bridge.store as RedisStore;
    const ready = new Promise((resolve) => store.client.once('ready', resolve));
    store.client.disconnect(true);
    await ready;
    // The retry finds its idempotency key on the primary. The replica still lacks it: a failover
    // now would lose the webhook, so this answer must not be 200.
    const changesBefore = await changesOnPrimary();
    const retried = await opened.post(path, webhook);
    expect(retried.status).toBe(503);
    expect(retried.body.error.code).toBe('store_unavailable');
    // ... and it is refused for the right reason on every Redis version: the retry wrote, after
    // its read, something for its WAIT to wait for. (Redis 7.0, here, also counts a read as the
    // connection's mark, so WAIT after the read alone refused too; later releases do not,
    // and WAIT then answered at once.)
    expect(await changesOnPrimary()).toBeGreaterThan(changesBefore);

    replica.resume();
    await expect
      .poll(async () => (await opened.post(path, webhook)).status, { timeout: 15_000, interval: 100 })
      .toBe(200);
    expect(await contactsOf(opened, who.person)).toBe(1);
  });

  it('is answered 200 at once when the first attempt already reached the replica', async () => {
    const opened = await open(`dup-durability-${process.pid}-steady`);
    const who = personFor('dupdur', 2);
    const webhook = jivo.chatAccepted(who, 41_002);
    const path = `/webhooks/jivochat/site/${token}`;
    expect((await opened.post(path, webhook)).status).toBe(200);
    const store = opened.bridge.store as RedisStore;
    const ready = new Promise((resolve) => store.client.once('ready', resolve));
    store.client.disconnect(true);
    await ready;
    expect((await opened.post(path, webhook)).status).toBe(200);
    expect(await contactsOf(opened, who.person)).toBe(1);
  });
});
