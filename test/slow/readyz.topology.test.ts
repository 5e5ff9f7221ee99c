import { afterEach, describe, expect, it } from 'vitest';
import { echoAdapter } from '../support/echo-adapter.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { startClusterTopology, startSentinelTopology } from '../support/topology.js';

/**
 * /readyz answered `"store":"redis"` whatever DESIGN §3 store key the config used: Sentinel and
 * Cluster looked like one server. `store` is unchanged (probes and dashboards read it); the
 * added `topology` says which, here on real Sentinel and Cluster processes (test/readyz.test.ts
 * has memory and a standalone server).
 */
const TOKEN = 'readyz-topology-token-0001';
const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (stops.length > 0) await stops.pop()!();
});

async function readyzOf(store: Record<string, unknown>, keyPrefix: string): Promise<unknown> {
  const bridge: TestBridge = await startTestBridge({
    adapters: [echoAdapter],
    keyPrefix,
    config: { store, channels: [{ id: 'site', vendor: 'echo', token: TOKEN }] },
  });
  stops.push(() => bridge.close());
  const answer = await fetch(`${bridge.url}/readyz`, { signal: AbortSignal.timeout(15_000) });
  return answer.json();
}

describe('/readyz topology', () => {
  it('Sentinel: store redis, topology sentinel', async () => {
    const topology = await startSentinelTopology('chatbridge-readyz');
    stops.push(() => topology.stop());
    expect(
      await readyzOf({ sentinel: { name: topology.name, nodes: topology.sentinelNodes } }, 'readyz-sentinel'),
    ).toEqual({ ok: true, store: 'redis', topology: 'sentinel' });
  }, 120_000);

  it('Cluster: store redis, topology cluster', async () => {
    const cluster = await startClusterTopology();
    stops.push(() => cluster.stop());
    expect(await readyzOf({ cluster: { nodes: cluster.nodes } }, 'readyz-cluster')).toEqual({
      ok: true,
      store: 'redis',
      topology: 'cluster',
    });
  }, 120_000);
});
