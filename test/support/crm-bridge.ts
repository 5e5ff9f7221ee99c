import { expect } from 'vitest';
import type { CrmWorld } from './crm-worlds.js';
import { startTestBridge, type TestBridge } from './harness.js';

/**
 * A real bridge with one JivoChat channel (`shop-site`) and one CRM destination pointing at a
 * fake CRM (crm-worlds.ts), as test/crm.test.ts sets it up: for CRM scenarios kept in files of
 * their own. Close it with `bridge.close()`.
 */
export const JIVO_TOKEN = 'jivo-token-0123456789abcdef';

export async function startCrmBridge(
  world: CrmWorld,
  destination: Record<string, unknown> = {},
  store: 'memory' | 'redis' = 'memory',
): Promise<TestBridge> {
  return startTestBridge({
    store,
    config: {
      agents: [{ email: 'dmitry@store.example', name: 'Dmitry Volkov', crmUserId: '999' }],
      channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: JIVO_TOKEN }],
      destinations: [
        world.destination({ retrySchedule: ['0s', '50ms', '50ms', '50ms', '50ms', '50ms'], ...destination }),
      ],
    },
  });
}

/** A JivoChat webhook to the `shop-site` channel. */
export const jivo = (bridge: TestBridge, payload: unknown) =>
  bridge.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, payload);

/** Every delivery, once none is pending and at least `expectedAtLeast` exist. */
export async function settled(bridge: TestBridge, expectedAtLeast: number): Promise<any[]> {
  let deliveries: any[] = [];
  await expect
    .poll(
      async () => {
        const pending = await bridge.admin('GET', '/api/v1/deliveries?state=pending&limit=200');
        const all = await bridge.admin('GET', '/api/v1/deliveries?limit=200');
        deliveries = all.body.deliveries;
        // Both lists: a delivery made between the two requests is in the second one only.
        return (
          pending.body.deliveries.length === 0 &&
          deliveries.length >= expectedAtLeast &&
          deliveries.every((delivery) => delivery.state !== 'pending')
        );
      },
      { timeout: 10_000, interval: 25 },
    )
    .toBe(true);
  return deliveries;
}
