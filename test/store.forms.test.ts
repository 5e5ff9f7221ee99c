import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReplyError } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { parseConfig } from '../src/config/load.js';
import { ConfigError, StoreUnavailableError } from '../src/errors.js';
import { AdapterRegistry } from '../src/registry.js';
import { describeStore, effectiveKeyPrefix, redisTargetOf } from '../src/store/connection.js';
import { toStoreError } from '../src/store/redis.js';
import { echoAdapter } from './support/echo-adapter.js';
import { jivo, personFor } from './support/fault.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix } from './support/redis.js';

/**
 * DESIGN §3/§12, the fast part: the three store forms in the config, what `config check` says
 * about them (never a password), failover replies mapped to 503, and `durability.replicas` on a
 * Redis that has no replicas (WAIT cannot be satisfied: vendors get 503, /readyz is 503).
 * The real Sentinel and Cluster runs are in test/slow/.
 */
const registry = new AdapterRegistry([echoAdapter]);
const admin = { token: 'a'.repeat(20) };

function storeOf(store: unknown) {
  return parseConfig({ admin, store }, registry, {}).store;
}

function problems(store: unknown): string[] {
  try {
    parseConfig({ admin, store }, registry, {});
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

describe('store forms in the config', () => {
  it('accepts one server, Sentinel and Cluster, each with durability', () => {
    const redis = storeOf({ redis: 'redis://:secret@10.0.0.1:6379/0', durability: { replicas: 1 } });
    expect(redisTargetOf(redis)).toEqual({ kind: 'redis', url: 'redis://:secret@10.0.0.1:6379/0' });
    expect(redis.durability).toEqual({ replicas: 1, timeoutMs: 500 });

    const sentinel = storeOf({
      sentinel: {
        name: 'mymaster',
        nodes: ['10.0.0.1:26379', '[::1]:26379'],
        password: 's3cret',
        sentinelPassword: '',
      },
    });
    expect(redisTargetOf(sentinel)).toMatchObject({
      kind: 'sentinel',
      name: 'mymaster',
      password: 's3cret',
      db: 0,
    });
    expect(sentinel.sentinel?.sentinelPassword).toBeUndefined();

    const cluster = storeOf({ cluster: { nodes: ['10.0.0.1:6379', '10.0.0.2:6379'] }, keyPrefix: 'shop' });
    expect(redisTargetOf(cluster)).toMatchObject({
      kind: 'cluster',
      nodes: ['10.0.0.1:6379', '10.0.0.2:6379'],
    });
    expect(redisTargetOf(storeOf({}))).toBeUndefined();
  });

  it('refuses two forms at once, several hosts in one URL, bad nodes and durability without Redis', () => {
    expect(problems({ redis: 'redis://a:6379', cluster: { nodes: ['b:6379'] } })).toEqual([
      'store.cluster: store.redis is set too: use exactly one of store.redis, store.sentinel, store.cluster',
    ]);
    expect(
      problems({ sentinel: { name: 'm', nodes: ['a:26379'] }, cluster: { nodes: ['b:6379'] } }),
    ).toHaveLength(1);
    expect(problems({ redis: 'redis://a:6379,b:6379' })[0]).toMatch(
      /^store\.redis: one server only; for several nodes use store\.cluster/,
    );
    // ioredis selects the database in the URL and, when SELECT fails, goes on in database 0 (/99)
    // or crashes the process once it listens (/abc): refused here instead.
    for (const url of ['redis://a:6379/99', 'redis://a:6379/abc', 'redis://a:6379/0/', 'redis://a:6379?db=x'])
      expect(problems({ redis: url }), url).toEqual([
        expect.stringMatching(
          /^store\.redis: the database must be a number 0-15, like redis:\/\/host:6379\/0/,
        ),
      ]);
    for (const url of ['redis://a:6379', 'redis://a:6379/', 'redis://:p%23w@a:6379/15', 'rediss://a?db=3'])
      expect(problems({ redis: url }), url).toEqual([]);
    expect(problems({ sentinel: { nodes: ['a'] } })).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^store\.sentinel\.name: /),
        expect.stringMatching(/^store\.sentinel\.nodes\[0\]: host:port/),
      ]),
    );
    expect(problems({ cluster: { nodes: [] } })[0]).toMatch(/^store\.cluster\.nodes: at least one/);
    expect(problems({ durability: { replicas: 1 } })[0]).toMatch(
      /^store\.durability\.replicas: the in-memory store has no replicas/,
    );
    expect(problems({ keyPrefix: '{a}{b}' })[0]).toMatch(/^store\.keyPrefix: at most one hash tag/);
  });

  it('makes the keyPrefix a hash tag on a Cluster only, keeping one that has a tag', () => {
    expect(effectiveKeyPrefix(storeOf({ cluster: { nodes: ['a:1'] }, keyPrefix: 'shop' }))).toBe('{shop}');
    expect(effectiveKeyPrefix(storeOf({ cluster: { nodes: ['a:1'] }, keyPrefix: '{tenant-a}:bridge' }))).toBe(
      '{tenant-a}:bridge',
    );
    expect(effectiveKeyPrefix(storeOf({ redis: 'redis://a:1', keyPrefix: 'shop' }))).toBe('shop');
  });

  it('describes each form without its passwords, and config check prints it', async () => {
    const described = [
      describeStore(storeOf({ redis: 'redis://user:hunter2@10.0.0.1:6379' })),
      // ioredis also takes the password (and the Sentinel's) from the URL's query.
      describeStore(storeOf({ redis: 'redis://10.0.0.1:6379/0?password=hunter2&sentinelPassword=hunter2' })),
      describeStore(
        storeOf({
          sentinel: {
            name: 'mymaster',
            nodes: ['10.0.0.1:26379'],
            password: 'hunter2',
            sentinelPassword: 'hunter2',
          },
        }),
      ),
      describeStore(
        storeOf({ cluster: { nodes: ['10.0.0.1:6379'], password: 'hunter2' }, durability: { replicas: 1 } }),
      ),
    ];
    for (const line of described) expect(line).not.toContain('hunter2');
    expect(described[1]).toContain('redis://10.0.0.1:6379/0?password=***&sentinelPassword=***');
    expect(described[2]).toContain("sentinel master 'mymaster' via 1 sentinel");
    expect(described[3]).toContain('keyPrefix {chatbridge}');
    expect(described[3]).toContain('WAIT 1');

    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-forms-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      'admin: { token: a-long-enough-admin-token }\nstore:\n  sentinel: { name: mymaster, nodes: ["10.0.0.1:26379", "10.0.0.2:26379"], password: hunter2 }\n  durability: { replicas: 2 }\n',
    );
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(['config', 'check', '--config', file], {
      stdout: (line) => out.push(line),
      stderr: (line) => err.push(line),
    });
    expect(code, err.join('\n')).toBe(0);
    expect(out.join('\n')).toContain('store: sentinel');
    expect(out.join('\n')).toContain('WAIT 2');
    expect(out.join('\n')).not.toContain('hunter2');
  });
});

describe('TLS to Sentinel', () => {
  // test/slow/sentinel.tls.test.ts runs these against real TLS servers.
  it('tls: true covers the Sentinels too unless sentinelTls says otherwise, and config check says which', () => {
    const of = (sentinel: Record<string, unknown>) =>
      describeStore(storeOf({ sentinel: { name: 'm', nodes: ['10.0.0.1:26379'], ...sentinel } }));
    expect(of({ tls: true })).toContain('TLS to the Sentinels and the data servers');
    expect(of({ tls: true, sentinelTls: false })).toContain(
      'TLS to the data servers (Sentinels in plain text)',
    );
    expect(of({ sentinelTls: 'true' })).toContain('TLS to the Sentinels (data servers in plain text)');
    expect(of({})).not.toContain('TLS');
    expect(describeStore(storeOf({ cluster: { nodes: ['10.0.0.1:6379'], tls: true } }))).toContain(', TLS');
    expect(problems({ cluster: { nodes: ['10.0.0.1:6379'], sentinelTls: true } })[0]).toMatch(
      /^store\.cluster\.sentinelTls: unknown key/,
    );
  });
});

describe('failover replies', () => {
  it('become StoreUnavailableError (503); genuine command errors stay what they are', () => {
    for (const message of [
      'READONLY You cannot write against a read only replica.',
      'NOREPLICAS Not enough good replicas to write.',
      'MOVED 3999 127.0.0.1:6381',
      'ASK 3999 127.0.0.1:6381',
      'CLUSTERDOWN The cluster is down',
      'UNBLOCKED force unblock from blocking operation',
      // A resharding's new owner refused the EVAL (TRYAGAIN), so it never cached the script.
      'NOSCRIPT No matching script. Please use EVAL.',
    ]) {
      expect(toStoreError(new ReplyError(message)), message).toBeInstanceOf(StoreUnavailableError);
    }
    const aborted = new ReplyError('EXECABORT Transaction discarded because of previous errors.');
    aborted.previousErrors = [new ReplyError('NOREPLICAS Not enough good replicas to write.')];
    expect(toStoreError(aborted)).toBeInstanceOf(StoreUnavailableError);
    const connectionReset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    expect(toStoreError(connectionReset)).toBeInstanceOf(StoreUnavailableError);
    const wrongType = new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value');
    expect(toStoreError(wrongType)).toBe(wrongType);
  });
});

describe('durability.replicas on a Redis without replicas', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    // The second bridge reuses the first one's prefix, so close() leaves its keys: remove them.
    if (bridge?.redisUrl) await cleanupPrefix(bridge.redisUrl, bridge.keyPrefix);
    bridge = undefined;
  });
  const token = 'forms-jivo-token-000000001';

  it('answers a vendor 503 (WAIT could not be satisfied) and /readyz 503; with 0 replicas both are 200', async () => {
    const channels = [{ id: 'site', vendor: 'jivochat', token, personIdFrom: 'user_token' }];
    bridge = await startTestBridge({
      store: 'redis',
      config: { store: { durability: { replicas: 1, timeoutMs: 50 } }, channels },
    });
    const webhook = jivo.chatAccepted(personFor('forms', 1), 31_001);
    const refused = await bridge.post(`/webhooks/jivochat/site/${token}`, webhook);
    expect(refused.status).toBe(503);
    // The body says only "retry later" (5xx bodies carry no internals); the log has the count.
    expect(refused.body.error.code).toBe('store_unavailable');
    expect(refused.headers.get('retry-after')).toBe('5');
    expect((await fetch(`${bridge.url}/readyz`)).status).toBe(503);
    await bridge.close();

    bridge = await startTestBridge({ store: 'redis', keyPrefix: bridge.keyPrefix, config: { channels } });
    // The vendor's retry lands (and the webhook is stored once: intake is idempotent).
    expect((await bridge.post(`/webhooks/jivochat/site/${token}`, webhook)).status).toBe(200);
    expect((await fetch(`${bridge.url}/readyz`)).status).toBe(200);
    const found = await bridge.admin(
      'GET',
      `/api/v1/contacts?identity=${encodeURIComponent('person:forms-p-1')}`,
    );
    expect(found.body.contacts).toHaveLength(1);
  });
});

describe('durability.replicas across a reconnect', () => {
  // WAIT counts the replicas that have this connection's writes: on a connection made after the
  // writes it would pass at once. confirmWrites(since) refuses instead (the vendor retries).
  it('refuses to vouch for writes made before the connection was made again', async () => {
    const { createRedisStore } = await import('../src/store/redis.js');
    const { createLogger } = await import('../src/logger.js');
    const keyPrefix = `forms-epoch-${process.pid}-${Date.now()}`;
    const store = await createRedisStore({
      url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      keyPrefix,
      logger: createLogger('silent'),
      durability: { replicas: 1, timeoutMs: 20 },
    });
    try {
      // Same connection: WAIT runs and, with no replica here, says so.
      const mark = store.writeMark();
      await store.set('x', '1');
      await expect(store.confirmWrites(mark)).rejects.toThrow(/reached 0 of 1 replicas/);

      const before = store.writeMark();
      await store.set('x', '2');
      const ready = new Promise((resolve) => store.client.once('ready', resolve));
      store.client.disconnect(true);
      await ready;
      expect(store.writeMark()).not.toBe(before);
      const refused = store.confirmWrites(before);
      await expect(refused).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(refused).rejects.toThrow(/connection to Redis was made again/);
    } finally {
      await store.del('x');
      await store.close();
    }
  });
});
