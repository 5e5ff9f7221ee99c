import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/store/redis.js';
import {
  type PrivateRedis,
  type ReplicatedRedis,
  startPrivateRedis,
  startReplicatedRedis,
} from './support/redis.js';

/**
 * store.durability.timeoutMs is how long a webhook's answer waits for WAIT (DESIGN §12). It used
 * to be cut at the store's command timeout (2 s): any timeoutMs above that answered 503 at 2 s,
 * whatever the replicas did, because the client gave up on the WAIT command itself.
 */
describe('durability.timeoutMs above the command timeout', () => {
  let pair: ReplicatedRedis;
  let primary: PrivateRedis;
  let replica: PrivateRedis;

  beforeAll(async () => {
    pair = await startReplicatedRedis('durability');
    ({ primary, replica } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('waits the configured time for a replica that catches up within it', async () => {
    const store = await createRedisStore({
      url: primary.url,
      keyPrefix: 'durability',
      logger: pino({ level: 'silent' }),
      durability: { replicas: 1, timeoutMs: 15_000 },
    });
    try {
      await store.set('before', '1');
      await store.confirmWrites();
      replica.pause();
      await store.set('k', 'v');
      // The replica comes back well within timeoutMs (but after the 2 s command timeout).
      const resume = setTimeout(() => replica.resume(), 3000);
      try {
        await expect(store.confirmWrites(store.writeMark())).resolves.toBeUndefined();
      } finally {
        clearTimeout(resume);
        replica.resume();
      }
    } finally {
      await store.close();
    }
  }, 30_000);
});

/**
 * A failover demotes the primary the store wrote through; the store's next WAIT goes to that
 * server, a replica now, which answers `ERR WAIT cannot be used with replica instances`. That
 * plain ERR was passed on as it was, and the vendor got 500 instead of 503 (seen on a Cluster
 * after CLUSTER FAILOVER: test/slow/cluster.failover.test.ts). Here the demotion is REPLICAOF on
 * one real server, as Sentinel does it.
 */
describe('WAIT on a primary that a failover demoted', () => {
  let dir: string;
  let first: PrivateRedis;
  let second: PrivateRedis;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatbridge-demoted-'));
    // No 5 s wait before the first sync (repl-diskless-sync-delay's default).
    const args = ['--dir', dir, '--repl-diskless-sync-delay', '0'];
    first = await startPrivateRedis({ args: [...args, '--dbfilename', 'first.rdb'] });
    second = await startPrivateRedis({
      args: [...args, '--dbfilename', 'second.rdb', '--replicaof', '127.0.0.1', String(first.port)],
    });
    const probe = new Redis(first.url);
    try {
      while (!(await probe.info('replication')).includes('state=online'))
        await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      probe.disconnect();
    }
  });
  afterAll(async () => {
    // The replica first: a primary's shutdown waits for lagging replicas (shutdown-timeout).
    await first?.stop();
    await second?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is refused as unavailable (503), not passed on as a command error (500)', async () => {
    const store = await createRedisStore({
      url: first.url,
      keyPrefix: 'demoted',
      logger: pino({ level: 'silent' }),
      durability: { replicas: 1, timeoutMs: 1000 },
    });
    const admin = new Redis(second.url);
    const demote = new Redis(first.url);
    try {
      const mark = store.writeMark();
      await store.set('k', 'v');
      // The failover: the replica is promoted and the old primary follows it.
      await admin.replicaof('NO', 'ONE');
      await demote.replicaof('127.0.0.1', String(second.port));
      await expect(store.confirmWrites(mark)).rejects.toMatchObject({
        code: 'store_unavailable',
        status: 503,
      });
    } finally {
      admin.disconnect();
      demote.disconnect();
      await store.close();
    }
  });
});

/**
 * confirmWrites({ coverReads }) vouches for what the caller read, not only for what it wrote: the
 * state another connection wrote (a vendor's first attempt, on a connection since replaced, or on
 * another instance of the bridge). WAIT alone counts the replicas that have the offset of this
 * connection's last write; on Redis releases after 7.0 a read does not move that offset, and here the
 * connection sends nothing at all after the other one's writes, as on any version. Without a
 * write of its own to wait for, WAIT answered at once for writes the stopped replica never got.
 */
describe('confirmWrites with coverReads', () => {
  let pair: ReplicatedRedis;
  let primary: PrivateRedis;
  let replica: PrivateRedis;

  beforeAll(async () => {
    // No replication PINGs during the test: they would move the primary's offset by themselves.
    pair = await startReplicatedRedis('cover-reads', [
      '--repl-diskless-sync-delay',
      '0',
      '--repl-ping-replica-period',
      '3600',
    ]);
    ({ primary, replica } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('refuses while a replica lacks what another connection wrote; confirms once it has it', async () => {
    const store = await createRedisStore({
      url: primary.url,
      keyPrefix: 'cover-reads',
      logger: pino({ level: 'silent' }),
      durability: { replicas: 1, timeoutMs: 1000 },
    });
    const firstAttempt = new Redis(primary.url);
    try {
      const confirmed = (mark?: number, coverReads?: boolean) =>
        // undefined only without replicas (Store.confirmWrites); this store has one.
        Promise.resolve(store.confirmWrites(mark, { coverReads: coverReads ?? false })).then(
          () => 'confirmed',
          (error: { code?: string }) => error.code,
        );
      await store.set('before', '1');
      // The replica has everything so far (asked until it says so: a loaded machine may take longer).
      await expect.poll(() => confirmed(), { timeout: 15_000, interval: 100 }).toBe('confirmed');
      const mark = store.writeMark();
      replica.pause();
      // Written by another connection (the first attempt), which then answered 503: the replica
      // does not have it.
      await firstAttempt.set('cover-reads:dedupe', 'contact-1');
      await expect(store.confirmWrites(mark, { coverReads: true })).rejects.toMatchObject({
        code: 'store_unavailable',
        status: 503,
      });
      replica.resume();
      await expect.poll(() => confirmed(mark, true), { timeout: 15_000, interval: 100 }).toBe('confirmed');
    } finally {
      replica.resume();
      firstAttempt.disconnect();
      await store.del('before', 'dedupe');
      await store.close();
    }
  });
});
