import type { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import { type ClusterTopology, startClusterTopology } from './support/topology.js';

/**
 * store.durability on a Redis Cluster (DESIGN §12): WAIT has no key, so it is not routed by the
 * slot; it counts the replicas that have the writes of the connection it is sent on. It used to go
 * to whichever node the client's slot map named as the primary for the bridge's slot *when WAIT
 * was sent*. When the slot had moved meanwhile to a node the client was already connected to (no
 * new connection, no lost one: nothing changed the write mark), WAIT went to that node, whose
 * connection carried none of the webhook's writes, and answered at once with its replica count:
 * the bridge vouched for writes that node's replicas had never seen. WAIT must go to the connection
 * that carried the writes, and when that one no longer serves the slot the answer is 503.
 *
 * Real processes: three primaries with one replica each (test/support/topology.ts).
 */
describe('durability.replicas on a Cluster whose slot moved to a node already connected', () => {
  const logger = pino({ level: 'silent' });
  let cluster: ClusterTopology;
  const stores: RedisStore[] = [];

  beforeAll(async () => {
    cluster = await startClusterTopology({ replicas: 1 });
  }, 60_000);
  afterAll(async () => {
    for (const store of stores) await store.close();
    await cluster?.stop();
  });

  async function openStore(keyPrefix: string): Promise<RedisStore> {
    const store = await createRedisStore({
      target: { kind: 'cluster', nodes: cluster.nodes, tls: false },
      keyPrefix,
      logger,
      durability: { replicas: 1, timeoutMs: 1000 },
    });
    stores.push(store);
    // Every node connected beforehand (as a long-running bridge's would be, by keyless commands
    // and earlier failovers), so that a move of the slot makes no new connection.
    const client = store.client as Cluster;
    await Promise.all(client.nodes('all').map((node) => node.ping()));
    return store;
  }

  /** The client's slot map, read again until it names `server` as the owner of `tag`'s slot. */
  async function clientSeesOwner(store: RedisStore, tag: string, server: number): Promise<void> {
    const client = store.client as Cluster;
    const slot = Number(await client.cluster('KEYSLOT', tag));
    const wanted = `127.0.0.1:${cluster.servers[server]!.port}`;
    await expect
      .poll(
        async () => {
          await new Promise<void>((resolve) => client.refreshSlotsCache(() => resolve()));
          return client.slots[slot]?.[0];
        },
        { timeout: 20_000, interval: 100 },
      )
      .toBe(wanted);
  }

  /**
   * A webhook's writes as the vendor retries them: each attempt under its own mark, until one is
   * confirmed. (An attempt whose mark was taken before the first command to the new owner is
   * refused too: its commands changed node connection on the way.)
   */
  async function retriedUntilConfirmed(store: RedisStore): Promise<void> {
    const attempt = async () => {
      const mark = store.writeMark();
      await store.set('webhook', 'retried');
      await store.confirmWrites(mark);
      return 'confirmed';
    };
    await expect
      .poll(() => attempt().catch((error: { code?: string }) => error.code), {
        timeout: 20_000,
        interval: 100,
      })
      .toBe('confirmed');
  }

  it('refuses (503) after the slot was migrated, with its keys, to another primary', async () => {
    const tag = '{cwait-moved}';
    const store = await openStore(tag);
    const from = await cluster.ownerOf(tag);
    const to = [0, 1, 2].find((primary) => primary !== from)!;
    const [toReplica] = await cluster.replicasOf(to);
    expect(toReplica).toBeDefined();

    const mark = store.writeMark();
    await store.set('webhook', 'acknowledged?');
    // The new owner's replica is stopped: nothing can bring it the migrated keys, so a WAIT that
    // vouched for them on the new owner would vouch for data that exists on one server only.
    cluster.servers[toReplica!]!.pause();
    try {
      await cluster.migrateSlot(tag, to);
      await clientSeesOwner(store, tag, to);
      expect(store.writeMark(), 'no connection was made or lost').toBe(mark);
      await expect(store.confirmWrites(mark)).rejects.toMatchObject({
        code: 'store_unavailable',
        status: 503,
      });
    } finally {
      cluster.servers[toReplica!]!.resume();
    }
    // With the replica back, the vendor's retry is stored and confirmed on the new owner.
    await retriedUntilConfirmed(store);
    expect(await store.get('webhook')).toBe('retried');
  });

  it('refuses (503) after CLUSTER FAILOVER made an already connected replica the primary', async () => {
    const tag = '{cwait-failover}';
    const store = await openStore(tag);
    const old = await cluster.ownerOf(tag);
    const mark = store.writeMark();
    await store.set('webhook', 'acknowledged?');
    const promoted = await cluster.failover(tag);
    await clientSeesOwner(store, tag, promoted);
    expect(store.writeMark(), 'no connection was made or lost').toBe(mark);
    // The old primary is the new one's replica now: WAIT on the new one's connection, which wrote
    // nothing, would count it at once, whatever became of the writes.
    await expect(store.confirmWrites(mark)).rejects.toMatchObject({ code: 'store_unavailable', status: 503 });
    await cluster.waitForReplica(old);
    await retriedUntilConfirmed(store);
  });

  it('confirms as before while the slot stays where the writes went', async () => {
    const store = await openStore('{cwait-steady}');
    const mark = store.writeMark();
    const batch = store.batch();
    batch.set('a', '1').set('b', '2');
    expect(await batch.exec()).toBe(true);
    await expect(store.confirmWrites(mark)).resolves.toBeUndefined();
    // Keyless commands go to any node (here: PING to every one); they carry no writes.
    await Promise.all((store.client as Cluster).nodes('all').map((node: Redis) => node.ping()));
    await expect(store.confirmWrites(mark)).resolves.toBeUndefined();
  });
});
