import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupLayout } from '../src/contacts/keys.js';
import { createRedisStore, type RedisStore } from '../src/store/redis.js';
import type { GroupRead } from '../src/store/types.js';
import { type ClusterTopology, startClusterTopology } from './support/topology.js';

/**
 * Store.readGroups on a Redis Cluster while the bridge's hash slot is being resharded (DESIGN
 * §12): between two MIGRATEs the slot's keys are split between the old owner (MIGRATING) and the
 * new one (IMPORTING). The readGroups script reads keys it computes from the values it read (a
 * record's root pointer, its group's member set, the group's records), which Redis cannot route:
 * such a key that already moved was read as absent (GET through pcall: a contact's record
 * "missing"), or failed the script with "non local key" (SMEMBERS: a 500); and on the new owner,
 * reached through ASK, a key not moved yet reads as absent without any error at all. A read that
 * cannot see the whole group must be "not now" (503, the vendor retries), never a partial group,
 * and a claim (the LiveTex lookup's one-time jti) must not be spent by a read that failed.
 *
 * Each case splits a slot by hand: chosen keys are moved first, the case reads while the slot is
 * split, then the rest is moved and the read must see everything.
 */
describe('readGroups on a Cluster whose slot is split by a resharding', () => {
  const logger = pino({ level: 'silent' });
  let cluster: ClusterTopology;
  const stores: RedisStore[] = [];

  beforeAll(async () => {
    cluster = await startClusterTopology();
  }, 60_000);
  afterAll(async () => {
    for (const store of stores) await store.close();
    await cluster?.stop();
  });

  /** A store on its own hash tag, holding one group of two records (r1 the root, r2 its member). */
  async function groupOf(tag: string): Promise<RedisStore> {
    const store = await createRedisStore({
      target: { kind: 'cluster', nodes: cluster.nodes, tls: false },
      keyPrefix: tag,
      logger,
    });
    stores.push(store);
    await store.set('idx:person:*:p1', 'r1');
    await store.set('root:r2', 'r1');
    await store.sadd('members:r1', 'r2');
    await store.set('rec:r1', 'record one');
    await store.set('rec:r2', 'record two');
    return store;
  }

  const read = (store: RedisStore, extra: Partial<GroupRead> = {}) =>
    store.readGroups({ keys: ['idx:person:*:p1'], layout: groupLayout, maxRecords: 10, ...extra });

  const whole = {
    claimed: true,
    values: ['r1'],
    records: new Map([
      ['r1', 'record one'],
      ['r2', 'record two'],
    ]),
  };

  /** Move `first` (keys without the tag) to another primary, run `whileSplit`, then the rest. */
  async function reshard(tag: string, first: string[], whileSplit: () => Promise<void>): Promise<void> {
    const from = await cluster.ownerOf(tag);
    const to = [0, 1, 2].find((primary) => primary !== from)!;
    let checked = false;
    await cluster.migrateSlot(tag, to, {
      firstKeys: first.map((name) => `${tag}:${name}`),
      keysPerBatch: 100,
      betweenBatches: async () => {
        if (checked) return;
        checked = true;
        await whileSplit();
      },
    });
    expect(checked).toBe(true);
  }

  it.each([
    {
      name: 'on the old owner: a record of the group already moved is "not now" (503), not read as missing',
      tag: '{reshard-read-a}',
      first: ['rec:r2'],
    },
    {
      name: 'on the old owner: a member set already moved is "not now" (503), not a 500',
      tag: '{reshard-read-b}',
      first: ['members:r1'],
    },
    {
      name: 'on the new owner (through ASK): a record not moved yet is "not now" (503), not read as missing',
      tag: '{reshard-read-c}',
      // The key read is on the new owner (the old one answers ASK), the root record is not.
      first: ['idx:person:*:p1', 'members:r1', 'rec:r2'],
    },
  ])('$name', async ({ tag, first }) => {
    const store = await groupOf(tag);
    await reshard(tag, first, async () => {
      await expect(read(store)).rejects.toMatchObject({ code: 'store_unavailable', status: 503 });
    });
    expect(await read(store)).toMatchObject(whole);
  });

  it('a claimed read refused while the slot is split leaves the claim unspent', async () => {
    const tag = '{reshard-read-d}';
    const store = await groupOf(tag);
    // By ids alone, the claim is the only key: the old owner does not have it and answers ASK, and
    // the new owner sets it, but the records are still on the old one.
    const claimed = () => read(store, { keys: [], ids: ['r1'], claim: { key: 'jti:one', ttlMs: 60_000 } });
    await reshard(tag, ['members:r1'], async () => {
      await expect(claimed()).rejects.toMatchObject({ code: 'store_unavailable', status: 503 });
    });
    expect(await store.get('jti:one')).toBeNull();
    expect(await claimed()).toMatchObject({ ...whole, values: [] });
    expect((await claimed()).claimed).toBe(false);
  });

  it('a claim onlyIf a hash field holds a value (the LiveTex key record): one slot, and unspent while the slot is split', async () => {
    const tag = '{reshard-read-e}';
    const store = await groupOf(tag);
    await store.hset('livetex:app:keys', 'k1', 'record v1');
    const onlyIf = { hash: 'livetex:app:keys', field: 'k1', value: 'record v1' };
    const claimed = (jti: string, value = onlyIf.value) =>
      read(store, { claim: { key: `jti:${jti}`, ttlMs: 60_000, onlyIf: { ...onlyIf, value } } });
    // The hash, the claim and the index are declared keys of one hash tag: one slot, one node.
    expect(await claimed('one')).toMatchObject(whole);
    expect(await claimed('two', 'record v0')).toMatchObject({ claimed: false, instead: 'record v1' });
    expect(await store.get('jti:two')).toBeNull();
    // The hash moved first: the old owner has the index but neither the hash nor the claim.
    await reshard(tag, ['livetex:app:keys'], async () => {
      await expect(claimed('three')).rejects.toMatchObject({ code: 'store_unavailable', status: 503 });
    });
    expect(await store.get('jti:three')).toBeNull();
    expect(await claimed('three')).toMatchObject(whole);
    expect((await claimed('three')).claimed).toBe(false);
  });

  it('a lock of keys that do not exist yet, while the slot is split, is "not now" (503), and taken after the move', async () => {
    // Two keys missing on both nodes: the old owner answers ASK, the new one TRYAGAIN (it cannot
    // know the keys are not on the old one), and the client gives up after its redirections.
    const tag = '{reshard-lock}';
    const store = await groupOf(tag);
    await reshard(tag, ['rec:r2'], async () => {
      await expect(store.lock(['one', 'two'], { ttlMs: 60_000, waitMs: 0 })).rejects.toMatchObject({
        code: 'store_unavailable',
        status: 503,
      });
    });
    const lock = await store.lock(['one', 'two'], { ttlMs: 60_000, waitMs: 0 });
    await lock.release();
  });
});
