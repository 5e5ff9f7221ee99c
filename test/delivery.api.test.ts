import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * Through a whole bridge: a vendor webhook becomes events, the events reach the CRM receiver
 * signed, and the admin API lists and replays deliveries (DESIGN §4).
 */

const SECRET = `whsec_${Buffer.from('api-test-secret-0123456789abcdefg').toString('base64')}`;
const TOKEN = 'echo-channel-token-000001';

async function eventually<T>(
  read: () => Promise<T>,
  check: (value: T) => boolean,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('deliveries through the bridge and the admin API', () => {
  let crm: Receiver;
  let bridge: TestBridge;
  let refuse = true;

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    crm.respond(() => (refuse ? { kind: 'status', status: 422, body: 'no such pipeline' } : { kind: 'ok' }));
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: {
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        destinations: [
          {
            id: 'crm',
            url: crm.url,
            secret: SECRET,
            events: ['message.received'],
            retrySchedule: ['0s', '100ms'],
            timeoutMs: 1000,
            map: { pipeline: { default: 'inbox' } },
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await crm?.close();
  });

  it('delivers what a vendor sent, lists the refusal, and replays it', async () => {
    const posted = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'message',
      visitor: 7,
      email: 'maria@example.org',
      text: 'Hello',
    });
    expect(posted.status).toBe(200);

    const failed = await eventually(
      () => bridge.admin('GET', '/api/v1/deliveries?state=failed&destination=crm'),
      (response) => response.body.deliveries?.length === 1,
    );
    const [item] = failed.body.deliveries;
    expect(item).toMatchObject({
      destination: 'crm',
      eventType: 'message.received',
      state: 'failed',
      attempts: 1,
      lastError: { status: 422, message: 'HTTP 422: no such pipeline' },
    });
    expect(crm.requests).toHaveLength(1);
    expect(crm.requests[0]!.verified).toBe(true);

    const detail = await bridge.admin('GET', `/api/v1/deliveries/${item.id}`);
    expect(detail.status).toBe(200);
    expect(detail.body.body).toMatchObject({
      type: 'message.received',
      channel: { id: 'site', vendor: 'echo' },
      data: { text: 'Hello' },
      // The vendor part of `source` is the display name once the bridge passes vendorNames.
      routing: {
        destination: 'crm',
        pipeline: 'inbox',
        source: 'Echo: site',
      },
    });

    refuse = false;
    const replay = await bridge.admin('POST', `/api/v1/deliveries/${item.id}/replay`);
    expect(replay.status).toBe(202);
    expect(replay.body).toMatchObject({ id: item.id, state: 'pending', replays: 1 });
    await crm.waitFor(() => crm.application.length === 1, 5000, 'the replayed event');
    expect(crm.application[0]!.payload).toMatchObject({
      type: 'message.received',
      contact: { emails: ['maria@example.org'] },
    });

    const delivered = await eventually(
      () => bridge.admin('GET', '/api/v1/deliveries?state=delivered'),
      (response) => response.body.deliveries?.length === 1,
    );
    expect(delivered.body.deliveries[0]).toMatchObject({ id: item.id, attempts: 2, lastStatus: 200 });

    const metrics = await bridge.bridge.metrics.registry.metrics();
    expect(metrics).toContain('chatbridge_deliveries_total{destination="crm",outcome="failed"} 1');
    expect(metrics).toContain('chatbridge_deliveries_total{destination="crm",outcome="delivered"} 1');
  });

  it('replays every failed delivery of a destination', async () => {
    refuse = true;
    for (const visitor of [21, 22]) {
      await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
        event: 'message',
        visitor,
        text: `from ${visitor}`,
      });
    }
    await eventually(
      () => bridge.admin('GET', '/api/v1/deliveries?state=failed'),
      (response) => response.body.deliveries?.length === 2,
    );
    refuse = false;
    const replay = await bridge.admin('POST', '/api/v1/deliveries/replay?destination=crm');
    expect(replay.status).toBe(202);
    expect(replay.body.replayed).toBe(2);
    await crm.waitFor(() => crm.application.length === 3, 5000, 'both replayed events');
  });

  it('answers bad queries with 400, unknown ids with 404, and needs the admin token', async () => {
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/api/v1/deliveries?state=lost', 400, 'invalid_query'],
      ['GET', '/api/v1/deliveries?limit=0', 400, 'invalid_query'],
      ['GET', '/api/v1/deliveries?limit=many', 400, 'invalid_query'],
      ['GET', '/api/v1/deliveries?state=failed&state=pending', 400, 'invalid_query'],
      ['GET', '/api/v1/deliveries?color=red', 400, 'invalid_query'],
      ['GET', '/api/v1/deliveries/not-a-delivery', 400, 'invalid_params'],
      ['GET', '/api/v1/deliveries/dlv_unknown', 404, 'delivery_not_found'],
      ['POST', '/api/v1/deliveries/dlv_unknown/replay', 404, 'delivery_not_found'],
      ['POST', '/api/v1/deliveries/replay', 400, 'invalid_query'],
      ['POST', '/api/v1/deliveries/replay?destination=nowhere', 404, 'destination_not_found'],
    ];
    for (const [method, path, status, code] of cases) {
      const response = await bridge.admin(method, path);
      expect({ path, status: response.status, code: response.body?.error?.code }).toEqual({
        path,
        status,
        code,
      });
    }
    const anonymous = await fetch(`${bridge.url}/api/v1/deliveries`);
    expect(anonymous.status).toBe(401);
  });
});
