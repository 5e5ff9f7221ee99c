import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { capturingLogger } from '../support/logs.js';
import { type PrivateRedis, startPrivateRedis } from '../support/redis.js';
import { rawRequest } from './support.js';

/**
 * A hung Redis (frozen, not refusing connections) used to cost every admin authentication the
 * client's command timeout (2 s) before the limiter fell back to its own counters, two of them
 * for a wrong token (the read, then the count): staff using the console on a degraded Redis
 * waited on every request. The limiter's Redis calls now have a short deadline of their own, and
 * after a failure it leaves Redis alone for a cool-down, so a hung Redis is asked once per
 * cool-down, not once per request. What Redis was asked is read from MONITOR once it runs again
 * (commands sent to a frozen server wait in its socket and are processed, in order, on SIGCONT).
 */

const STAFF = '198.51.100.70';

async function api(bridge: TestBridge, address: string, token: string) {
  return rawRequest(bridge.url, 'GET', '/api/v1/channels', {
    headers: { 'x-forwarded-for': address, authorization: `Bearer ${token}` },
  });
}

describe('the admin gate while Redis hangs', () => {
  let redis: PrivateRedis | undefined;
  let bridge: TestBridge | undefined;
  const clients: Redis[] = [];
  afterAll(async () => {
    redis?.resume();
    for (const client of clients) client.disconnect();
    await bridge?.close();
    await redis?.stop();
  });

  it('answers from its own counters without asking the hung Redis on every request, says so once, and comes back after SIGCONT', async () => {
    redis = await startPrivateRedis();
    const { logger, lines } = capturingLogger('info');
    bridge = await startTestBridge({
      logger,
      start: false,
      config: {
        store: { redis: redis.url },
        limits: { rate: { adminAuthFailuresPerAddress: 3, window: '1h' } },
      },
    });
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);

    // Every command Redis processes from here on, in order (after the freeze, too).
    const watcher = new Redis(redis.url, { lazyConnect: true });
    clients.push(watcher);
    await watcher.connect();
    const monitor = await watcher.monitor();
    clients.push(monitor);
    const seen: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[]) => seen.push(args));
    const authLimit = () => seen.filter((args) => args.some((arg) => arg.includes('auth-limit:')));

    redis.pause();
    const from = '203.0.113.70';
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 5; attempt++)
      statuses.push((await api(bridge, from, `guess-${attempt}-000000000000`)).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect((await api(bridge, '198.51.100.71', bridge.adminToken)).status).toBe(200);
    const fallback = lines.filter((line) => /admin-auth limits: the store cannot be reached/.test(line.msg));
    expect(fallback).toHaveLength(1);

    redis.resume();
    // Back once a cool-down is over: the next authentication asks Redis again and says so.
    const recovered = () => lines.some((line) => /admin-auth limits: the store answers again/.test(line.msg));
    while (!recovered()) {
      expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // Everything the bridge sent before its recovering read has been processed (one connection,
    // in order); a marker from another client says MONITOR has passed it all on.
    const marker = new Redis(redis.url);
    clients.push(marker);
    await marker.echo('hung-redis-test-marker');
    while (!seen.some((args) => args.includes('hung-redis-test-marker')))
      await new Promise((resolve) => setTimeout(resolve, 20));
    // The last is the read that found Redis back. Before it: one try per cool-down while Redis
    // was frozen (1; 2 if this machine took longer than a cool-down over the requests above),
    // where every request asked before (a read, and two counts per wrong token).
    const whileFrozen = authLimit().length - 1;
    expect(whileFrozen).toBeGreaterThanOrEqual(1);
    expect(whileFrozen).toBeLessThanOrEqual(2);
    expect(fallback).toHaveLength(1);
  }, 60_000);
});
