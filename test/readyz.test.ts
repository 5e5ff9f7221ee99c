import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type PrivateRedis, type ReplicatedRedis, startReplicatedRedis } from './support/redis.js';

/**
 * /readyz is unauthenticated, and each request ran its own store write with no overall limit: a
 * store that stopped confirming writes held every probe as long as the store hung (a minute with
 * durability.replicas), and anyone could make the bridge write to the store at the rate they sent
 * requests. It now runs the same check as chatbridge_store_up: one check in flight at a time,
 * shared by every probe and scrape that asks meanwhile, and waited for at most a bound (then 503
 * store_unavailable, while the check goes on and later probes wait for that same one).
 */

const TOKEN = 'readyz-echo-channel-token-01';

/** A probe that fails the test (not hangs it) when the bridge does not answer. */
async function readyz(bridge: TestBridge): Promise<{ status: number; code: string | undefined }> {
  const answer = await fetch(`${bridge.url}/readyz`, { signal: AbortSignal.timeout(15_000) });
  const body = (await answer.json()) as { error?: { code?: string } };
  return { status: answer.status, code: body.error?.code };
}

describe('/readyz with a store whose write check hangs', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });

  it('answers 503 store_unavailable in bounded time, and concurrent probes share one store write', async () => {
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: { channels: [{ id: 'site', vendor: 'echo', token: TOKEN }] },
    });
    const store = bridge.bridge.store;
    let writes = 0;
    let release: () => void = () => {};
    let hang = true;
    store.probeWrite = () => {
      writes++;
      if (!hang) return Promise.resolve();
      return new Promise<void>((resolve) => {
        release = resolve;
      });
    };

    const answers = await Promise.all(Array.from({ length: 20 }, () => readyz(bridge as TestBridge)));
    for (const answer of answers) expect(answer).toEqual({ status: 503, code: 'store_unavailable' });
    // Twenty probes, one write: the hung check is not started again while it is under way.
    expect(writes).toBe(1);
    expect(await readyz(bridge)).toEqual({ status: 503, code: 'store_unavailable' });
    expect(writes).toBe(1);

    hang = false;
    release();
    // The hung check ended (successfully): the next probe checks again and is ready.
    expect((await readyz(bridge)).status).toBe(200);
    expect(writes).toBe(2);
  }, 60_000);
});

describe('/readyz on a Redis whose replica stops acknowledging (durability.replicas)', () => {
  let pair: ReplicatedRedis;
  let primary: PrivateRedis;
  let replica: PrivateRedis;
  let bridge: TestBridge;

  beforeAll(async () => {
    pair = await startReplicatedRedis('readyz');
    ({ primary, replica } = pair);
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: {
        // The write is confirmed by WAIT for up to a minute: longer than this test may take.
        store: { redis: primary.url, durability: { replicas: 1, timeoutMs: 60_000 } },
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
      },
    });
  }, 30_000);
  afterAll(async () => {
    // Resumed first: the bridge's close must not wait on a frozen replica.
    replica?.resume();
    await bridge?.close();
    await pair?.close();
  });

  it('answers 503 while the WAIT hangs, and 200 again once the replica is back', async () => {
    expect((await readyz(bridge)).status).toBe(200);
    // WAIT counts every replica of the primary: a stranger's would acknowledge for the paused one.
    const probe = new Redis(primary.url);
    try {
      const ports = [...(await probe.info('replication')).matchAll(/^slave\d+:.*?port=(\d+)/gm)].map((m) =>
        Number(m[1]),
      );
      expect(
        ports,
        "the primary has replicas other than this test's (a stray from another run: test/support/redis.ts freePort)",
      ).toEqual([replica.port]);
    } finally {
      probe.disconnect();
    }
    replica.pause();
    try {
      // One probe alone: its WAIT slices go on for the minute of durability.timeoutMs (several
      // probes at once queue their WAITs on the one connection and hit the command timeout).
      expect(await readyz(bridge)).toEqual({ status: 503, code: 'store_unavailable' });
      const during = await Promise.all(Array.from({ length: 5 }, () => readyz(bridge)));
      for (const answer of during) expect(answer).toEqual({ status: 503, code: 'store_unavailable' });
    } finally {
      replica.resume();
    }
    for (;;) {
      if ((await readyz(bridge)).status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }, 45_000);
});

describe('/readyz names the store', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });

  // `store` is `redis` for Sentinel and Cluster too (DESIGN §3 has three store keys): `topology`
  // says which (test/slow/readyz.topology.test.ts has Sentinel and Cluster); memory has none.
  it('memory: store memory and no topology; one Redis server: store redis, topology standalone', async () => {
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: { channels: [{ id: 'site', vendor: 'echo', token: TOKEN }] },
    });
    expect(await (await fetch(`${bridge.url}/readyz`)).json()).toEqual({ ok: true, store: 'memory' });
    await bridge.close();
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      store: 'redis',
      config: { channels: [{ id: 'site', vendor: 'echo', token: TOKEN }] },
    });
    expect(await (await fetch(`${bridge.url}/readyz`)).json()).toEqual({
      ok: true,
      store: 'redis',
      topology: 'standalone',
    });
  }, 30_000);
});
