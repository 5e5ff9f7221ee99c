import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger } from './support/logs.js';
import { type PrivateRedis, startPrivateRedis } from './support/redis.js';

/**
 * What an operator's log shows while Redis is away: the outage said once, at warn, and not one
 * warn line per webhook answered 503, per probe, per background retry (once a second) and per
 * BullMQ reconnect (several a second) — thousands of lines a minute in production, which buried
 * the one that said what to do.
 */
const TOKEN = 'echo-channel-token-000001';

describe('the log while Redis is down', () => {
  let redis: PrivateRedis;
  let bridge: TestBridge;
  const { logger, lines } = capturingLogger('debug');

  beforeAll(async () => {
    redis = await startPrivateRedis();
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      logger,
      config: {
        store: { redis: redis.url },
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        // Two destinations: BullMQ's queues and workers are running and see the outage too.
        destinations: ['crm', 'dwh'].map((id) => ({
          id,
          url: 'http://127.0.0.1:9/hook',
          secret: `whsec_${Buffer.alloc(24, 5).toString('base64')}`,
        })),
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await redis?.stop();
  });

  it('says the outage once, and each repeating failure at most once, at warn', async () => {
    expect((await bridge.post(`/webhooks/echo/site/${TOKEN}`, { event: 'before', visitor: 1 })).status).toBe(
      200,
    );
    const from = lines.length;
    await redis.stop();
    for (let i = 0; i < 10; i++) {
      const answer = await bridge.post(`/webhooks/echo/site/${TOKEN}`, { event: 'during', visitor: i + 2 });
      expect(answer.status).toBe(503);
      expect((await fetch(`${bridge.url}/readyz`)).status).toBe(503);
    }
    // Let the background retries come round several times (the deferred drain retries each second).
    const during = () => lines.slice(from);
    await expect
      .poll(() => during().filter((line) => line.msg === 'deferred intake drain failed; retrying').length, {
        timeout: 20_000,
        interval: 100,
      })
      .toBeGreaterThanOrEqual(3);

    const warned = during().filter((line) => line.level >= 40);
    expect(warned.filter((line) => line.msg.startsWith('Redis connection lost'))).toHaveLength(1);
    const perMessage = new Map<string, number>();
    for (const line of warned) perMessage.set(line.msg, (perMessage.get(line.msg) ?? 0) + 1);
    // Each failure said once; the repeats are still there, at debug.
    expect(Object.fromEntries([...perMessage].filter(([, count]) => count > 1))).toEqual({});
    expect(
      during().filter((line) => line.level === 20 && line.msg === 'readiness check failed').length,
    ).toBeGreaterThan(0);

    await redis.start();
    await expect
      .poll(async () => (await fetch(`${bridge.url}/readyz`)).status, { timeout: 15_000, interval: 100 })
      .toBe(200);
    expect(lines.slice(from).some((line) => line.msg === 'Redis connection is back up')).toBe(true);
  }, 60_000);
});
