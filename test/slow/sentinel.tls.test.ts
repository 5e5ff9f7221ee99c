import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { createRedisStore } from '../../src/store/redis.js';
import {
  buildDist,
  jivo,
  personFor,
  type SpawnedBridge,
  spawnBridge,
  timelineOfPerson,
} from '../support/fault.js';
import { startTlsSentinelTopology, type TlsSentinelTopology } from '../support/topology.js';

/**
 * `store.sentinel.tls` against real TLS servers (DESIGN §3, §12): a primary that serves TLS only
 * on the port the Sentinels name, and Sentinels that serve TLS (and, on another port, plain
 * text). The real binary trusts the test CA through NODE_EXTRA_CA_CERTS, as a deployment with a
 * private CA would. `tls: true` speaks TLS to the Sentinels too (it once did not: ioredis's
 * `sentinelTLS` was never set, so a TLS Sentinel group never answered and the bridge never became
 * ready); `sentinelTls: false` keeps the Sentinels in plain text for a group that serves no TLS.
 */
const ADMIN_TOKEN = 'sentinel-tls-admin-token-01';
const JIVO_TOKEN = 'sentinel-tls-jivo-token-001';

describe('Sentinel with TLS (the real binary)', () => {
  let topology: TlsSentinelTopology;
  const bridges: SpawnedBridge[] = [];

  // A liveness bound, not a speed check: compiling dist/ took close to 3 minutes on a loaded machine.
  beforeAll(async () => {
    buildDist();
    topology = await startTlsSentinelTopology();
  }, 600_000);
  afterAll(async () => {
    for (const bridge of bridges) await bridge.stop();
    await topology?.stop();
  });

  async function start(sentinel: string, keyPrefix: string): Promise<SpawnedBridge> {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-tls-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      `server: { host: 127.0.0.1, shutdownTimeoutMs: 2000 }
store: { sentinel: ${sentinel}, keyPrefix: ${keyPrefix} }
admin: { token: ${ADMIN_TOKEN} }
log: { level: warn }
channels:
  - { id: site, vendor: jivochat, token: ${JIVO_TOKEN}, personIdFrom: user_token }
`,
    );
    const bridge = await spawnBridge(file, undefined, { NODE_EXTRA_CA_CERTS: topology.caFile });
    bridges.push(bridge);
    return bridge;
  }

  async function webhookStored(bridge: SpawnedBridge, tag: string): Promise<void> {
    const pool = new Pool(bridge.url, { connections: 2 });
    try {
      const response = await pool.request({
        method: 'POST',
        path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(jivo.chatAccepted(personFor(tag, 1), 4242)),
      });
      await response.body.text();
      expect(response.statusCode).toBe(200);
      const stored = await timelineOfPerson(pool, ADMIN_TOKEN, personFor(tag, 1).person);
      expect(stored.contacts).toBe(1);
      expect(stored.types).toContain('conversation.started');
    } finally {
      await pool.close();
    }
  }

  it('tls: true reaches TLS Sentinels and the TLS primary they name: ready, and a webhook is stored', async () => {
    const nodes = JSON.stringify(topology.tlsSentinelNodes);
    const bridge = await start(`{ name: ${topology.name}, nodes: ${nodes}, tls: true }`, 'tls-both');
    expect((await fetch(`${bridge.url}/readyz`)).status).toBe(200);
    await webhookStored(bridge, 'tls-both');
  }, 120_000);

  it('sentinelTls: false asks plain-text Sentinels and still speaks TLS to the primary', async () => {
    const nodes = JSON.stringify(topology.plainSentinelNodes);
    const bridge = await start(
      `{ name: ${topology.name}, nodes: ${nodes}, tls: true, sentinelTls: false }`,
      'tls-data-only',
    );
    expect((await fetch(`${bridge.url}/readyz`)).status).toBe(200);
    await webhookStored(bridge, 'tls-data-only');
  }, 120_000);

  /**
   * ioredis keeps its Sentinel connections' errors to itself and says only "Connection is closed.":
   * an untrusted certificate, TLS to a plain-text port and plain text to a TLS port all read the
   * same, and an operator had nothing to go on. This process does not trust the test CA (no
   * NODE_EXTRA_CA_CERTS), as an operator who forgot it.
   */
  async function startFailure(
    sentinel: { nodes: string[]; tls: boolean; sentinelTls?: boolean },
    kind: 'sentinel' | 'cluster' = 'sentinel',
  ): Promise<string> {
    const attempt = createRedisStore({
      target:
        kind === 'sentinel'
          ? { kind: 'sentinel', name: topology.name, db: 0, ...sentinel }
          : { kind: 'cluster', nodes: sentinel.nodes, tls: sentinel.tls },
      keyPrefix: 'tls-failure',
      logger: createLogger('silent'),
    });
    const error = await attempt.then(
      async (store) => {
        await store.close();
        return new Error('connected');
      },
      (failure: Error) => failure,
    );
    return error.message;
  }

  it('a Sentinel certificate the bridge does not trust is named in the start-up error', async () => {
    const message = await startFailure({ nodes: topology.tlsSentinelNodes, tls: true });
    expect(message).toContain('could not connect to Redis');
    expect(message).toContain(
      `Sentinel ${topology.tlsSentinelNodes[0]}: self-signed certificate in certificate chain`,
    );
    expect(message).toContain('NODE_EXTRA_CA_CERTS');
  }, 60_000);

  it('plain text to a Sentinel TLS port, and TLS to a plain-text one, are named in the start-up error', async () => {
    const plainToTls = await startFailure({ nodes: topology.tlsSentinelNodes, tls: false });
    expect(plainToTls).toContain(
      `Sentinel ${topology.tlsSentinelNodes[0]} closed the connection without answering a plain-text PING`,
    );
    const tlsToPlain = await startFailure({ nodes: topology.plainSentinelNodes, tls: true });
    expect(tlsToPlain).toContain(
      'TLS spoken to a port that serves plain text waits like this; check sentinel.tls / sentinelTls',
    );
  }, 60_000);

  it('a Cluster node certificate the bridge does not trust is named too', async () => {
    // ioredis says "Failed to refresh slots cache." over "Connection is closed." there. The
    // topology's TLS primary stands in for a Cluster node: the handshake fails before any command.
    const sentinel = new Redis({
      port: Number(topology.plainSentinelNodes[0]!.split(':')[1]),
      lazyConnect: true,
    });
    const [host, port] = (await sentinel.call(
      'SENTINEL',
      'GET-MASTER-ADDR-BY-NAME',
      topology.name,
    )) as string[];
    sentinel.disconnect();
    const node = `${host}:${port}`;
    const message = await startFailure({ nodes: [node], tls: true }, 'cluster');
    expect(message).toContain('Failed to refresh slots cache');
    expect(message).toContain(`Cluster node ${node}: self-signed certificate in certificate chain`);
    expect(message).toContain('NODE_EXTRA_CA_CERTS');
  }, 60_000);
});
