import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
});
