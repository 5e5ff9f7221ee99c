import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { key, storedId } from '../../src/contacts/keys.js';
import { encodeRecord, newRecord } from '../../src/contacts/record.js';
import { NORMALIZATION_KEY, NORMALIZATION_VERSION, reindexContacts } from '../../src/contacts/reindex.js';
import { inPool, jivo, personFor } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { type Receiver, startReceiver } from '../support/receiver.js';
import { type ClusterTopology, startClusterTopology, topologyDestination } from '../support/topology.js';

/**
 * DESIGN §12 on a real Redis Cluster of three primaries, with two bridge instances sharing one
 * keyPrefix: the lock script, the MULTI batches and BullMQ all run (no CROSSSLOT, no MOVED 500s)
 * because the prefix is a hash tag; the same person arriving at both instances at once gives one
 * contact; each outbound event reaches the CRM once; and all of the bridge's keys sit on the one
 * primary that serves its tag.
 */
const JIVO_TOKEN = 'ha-cluster-jivo-token-0001';
const SECRET = `whsec_${Buffer.from('cluster-test-secret-0123456789ab').toString('base64')}`;
const PEOPLE = 40;
const TAG = 'cluster';

describe('two bridges on a 3-primary Redis Cluster', () => {
  let cluster: ClusterTopology;
  let receiver: Receiver;
  const bridges: TestBridge[] = [];
  const pools: Pool[] = [];

  beforeAll(async () => {
    cluster = await startClusterTopology();
    receiver = await startReceiver({ secret: SECRET });
    for (let i = 0; i < 2; i++) {
      const bridge = await startTestBridge({
        keyPrefix: 'ha-cluster',
        config: {
          store: { cluster: { nodes: cluster.nodes } },
          channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
          destinations: [
            topologyDestination(receiver.url, SECRET, [
              'contact.created',
              'conversation.started',
              'conversation.finished',
            ]),
          ],
        },
      });
      bridges.push(bridge);
      pools.push(new Pool(bridge.url, { connections: 8 }));
    }
  });
  afterAll(async () => {
    await Promise.all(pools.map((pool) => pool.close()));
    for (const bridge of bridges) await bridge.close();
    await receiver?.close();
    await cluster?.stop();
  });

  /** POST like a vendor: 503 (a lock held by the other instance, a redirection) is retried. */
  async function post(pool: Pool, body: unknown): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const response = await pool.request({
        method: 'POST',
        path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      await response.body.text();
      if (response.statusCode !== 503 || attempt >= 50) return response.statusCode;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function admin(pool: Pool, path: string): Promise<any> {
    const response = await pool.request({
      method: 'GET',
      path,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    const text = await response.body.text();
    expect(response.statusCode, `${path}: ${text}`).toBe(200);
    return JSON.parse(text);
  }

  it('the same person at both instances at once gives one contact, and every event is delivered once', async () => {
    const statuses: number[] = [];
    await inPool(PEOPLE, 8, async (index) => {
      const who = personFor(TAG, index);
      const chatId = 600_000 + index;
      // The same chat at both instances (a vendor's duplicate), and its end, all at once.
      const results = await Promise.all([
        post(pools[0]!, jivo.chatAccepted(who, chatId)),
        post(pools[1]!, jivo.chatAccepted(who, chatId)),
        post(pools[1]!, jivo.chatFinished(who, chatId)),
      ]);
      statuses.push(...results);
    });
    expect(statuses.filter((status) => status !== 200)).toEqual([]);

    for (let index = 0; index < PEOPLE; index++) {
      const person = personFor(TAG, index).person;
      const found = await admin(
        pools[index % 2]!,
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
      );
      expect(found.contacts, person).toHaveLength(1);
      const page = await admin(
        pools[(index + 1) % 2]!,
        `/api/v1/contacts/${found.contacts[0].id}/timeline?limit=50`,
      );
      const types = (page.entries as Array<{ type: string }>).map((entry) => entry.type);
      expect(
        types.filter((type) => type === 'conversation.started'),
        person,
      ).toHaveLength(1);
    }

    // Every contact's created/started/finished events reach the CRM, each exactly once.
    const ofType = (type: string) => receiver.application.filter((event) => event.payload.type === type);
    await receiver.waitFor(
      () =>
        ofType('contact.created').length >= PEOPLE &&
        ofType('conversation.started').length >= PEOPLE &&
        ofType('conversation.finished').length >= PEOPLE,
      60_000,
      'all events delivered',
    );
    expect(ofType('contact.created')).toHaveLength(PEOPLE);
    expect(ofType('conversation.started')).toHaveLength(PEOPLE);
    expect(ofType('conversation.finished')).toHaveLength(PEOPLE);
    expect(receiver.requests.every((request) => request.verified)).toBe(true);
    // No webhook-id was sent twice.
    expect(receiver.acceptedCount).toBe(receiver.application.length);
  });

  it('sends WAIT to the primary serving the hash tag (here without replicas: 503, never 500)', async () => {
    const strict = await startTestBridge({
      keyPrefix: 'ha-cluster',
      config: {
        store: { cluster: { nodes: cluster.nodes }, durability: { replicas: 1, timeoutMs: 50 } },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
      },
      start: false,
    });
    try {
      const refused = await strict.post(
        `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        jivo.chatAccepted(personFor(TAG, 0), 600_000),
      );
      expect(refused.status).toBe(503);
      // The body says only "retry later" (5xx bodies carry no internals); the log has the count.
      expect(refused.body.error.code).toBe('store_unavailable');
      expect((await fetch(`${strict.url}/readyz`)).status).toBe(503);
    } finally {
      await strict.close();
    }
  });

  it('intersects name sets on the Cluster (Store.sinterScan: several keys, one hash tag)', async () => {
    const store = bridges[0]!.bridge.store;
    await store.sadd('sidx:name:cluster-a', ...Array.from({ length: 600 }, (_, i) => String(i + 1)));
    await store.sadd('sidx:name:cluster-b', '7', '300', '9999');
    const found: string[] = [];
    let cursor = '0';
    do {
      const page = await store.sinterScan(['sidx:name:cluster-a', 'sidx:name:cluster-b'], cursor, {
        count: 10,
        scan: 100,
      });
      cursor = page.cursor;
      found.push(...page.members);
    } while (cursor !== '0');
    expect(found.sort()).toEqual(['300', '7']);
  });

  it('walks its own keys on the Cluster (Store.scanKeys: the primary of its hash tag), and has re-indexed its contacts once', async () => {
    const store = bridges[0]!.bridge.store;
    const written = Array.from({ length: 30 }, (_, i) => `scan-cluster:${i}`);
    for (const name of written) await store.set(name, 'v');
    const found = new Set<string>();
    let cursor = '0';
    do {
      const page = await store.scanKeys('scan-cluster:', cursor, 10);
      cursor = page.cursor;
      for (const name of page.keys) found.add(name);
    } while (cursor !== '0');
    expect([...found].sort()).toEqual([...written].sort());
    // The start-up pass (src/contacts/reindex.ts) walked the records the same way, once.
    await expect
      .poll(() => store.get(NORMALIZATION_KEY), { timeout: 10_000 })
      .toBe(String(NORMALIZATION_VERSION));
  });

  it('counts failed admin authentications across both instances (Store.countInWindow, one MGET per hash tag)', async () => {
    const attempt = async (pool: Pool, address: string, token: string) => {
      const response = await pool.request({
        method: 'GET',
        path: '/api/v1/channels',
        headers: { 'x-forwarded-for': address, authorization: `Bearer ${token}` },
      });
      await response.body.text();
      return response.statusCode;
    };
    // The default of 10 per address, spent alternately at the two instances.
    const statuses: number[] = [];
    for (let index = 0; index < 10; index++)
      statuses.push(await attempt(pools[index % 2]!, '203.0.113.70', `guess-${index}-00000000000`));
    expect(statuses).toEqual(Array(10).fill(401));
    expect(await attempt(pools[0]!, '203.0.113.70', 'guess-10-0000000000')).toBe(429);
    expect(await attempt(pools[1]!, '203.0.113.70', TEST_ADMIN_TOKEN)).toBe(429);
    expect(await attempt(pools[1]!, '198.51.100.70', TEST_ADMIN_TOKEN)).toBe(200);
  });

  it('re-keys the name index on the Cluster: a name an older version never indexed is found after a pass', async () => {
    const store = bridges[0]!.bridge.store;
    const at = '2026-10-01T10:00:00.000Z';
    // A Latin o in the surname. As an older version left it: the record, its surname indexed as
    // typed (a key no query reaches), its first name not at all.
    const record = { ...newRecord(at), names: [{ v: 'Зинаида Кластерoва', at }] };
    await store.set(key.record(record.id), encodeRecord(record));
    await store.sadd(key.name('кластерoва'), storedId(record.id));
    const find = () => bridges[1]!.bridge.context.contacts.findByName('Зинаида Кластерова', { limit: 5 });
    expect((await find()).contacts).toEqual([]);
    const report = await reindexContacts({ store, identity: bridges[0]!.bridge.config.identity });
    expect(report).toMatchObject({ complete: true, busy: 0 });
    expect(report.nameEntriesAdded).toBeGreaterThanOrEqual(2);
    expect((await find()).contacts.map((contact) => contact.id)).toEqual([record.id]);
    expect(await store.smembers(key.name('кластерoва'))).toEqual([]);
  });

  it('keeps all of the bridge keys on the one primary serving its hash tag', async () => {
    const owner = await cluster.ownerOf('{ha-cluster}');
    const sizes = await Promise.all(
      cluster.servers.map(async (server) => {
        const client = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
        try {
          await client.connect();
          return await client.dbsize();
        } finally {
          client.disconnect();
        }
      }),
    );
    expect(sizes[owner]).toBeGreaterThan(0);
    expect(sizes.filter((_, index) => index !== owner)).toEqual([0, 0]);
  });
});
