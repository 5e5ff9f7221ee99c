import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { SHARED_COOL_DOWN_MS } from '../../src/http/rate-limit.js';
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
 *
 * The bridge's clock is pinned and moved by hand: the cool-down is the limiter's clock, so the
 * number of tries is exact whatever this machine's speed (with the real clock, a machine that
 * took longer than a cool-down over the requests read one more try).
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

  it('answers from its own counters, asks the hung Redis once per cool-down (not once per request), says so once, and comes back after SIGCONT', async () => {
    redis = await startPrivateRedis();
    const { logger, lines } = capturingLogger('info');
    let clock = Date.parse('2030-03-01T09:00:00Z');
    bridge = await startTestBridge({
      logger,
      start: false,
      now: () => new Date(clock),
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
    // Seven requests within one cool-down: the first asks Redis, misses the deadline, and the
    // limiter answers from its own counters until the cool-down is over.
    const from = '203.0.113.70';
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 5; attempt++)
      statuses.push((await api(bridge, from, `guess-${attempt}-000000000000`)).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect((await api(bridge, '198.51.100.71', bridge.adminToken)).status).toBe(200);
    // A cool-down later (still frozen): one request tries Redis again, the next does not.
    clock += SHARED_COOL_DOWN_MS;
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect((await api(bridge, from, 'guess-5-000000000000')).status).toBe(429);
    const fallback = () =>
      lines.filter((line) => /admin-auth limits: the store cannot be reached/.test(line.msg));
    expect(fallback()).toHaveLength(1);

    redis.resume();
    // Back once a cool-down is over: the next authentication asks Redis again and says so. Each
    // turn here is one cool-down and one read (a read that misses the deadline on a loaded
    // machine is one more turn, not a wrong count).
    const recovered = () => lines.some((line) => /admin-auth limits: the store answers again/.test(line.msg));
    let recoveringReads = 0;
    while (!recovered()) {
      clock += SHARED_COOL_DOWN_MS;
      recoveringReads++;
      expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    }
    // Everything the bridge sent up to its recovering read has been processed (one connection,
    // in order); a marker from another client says MONITOR has passed it all on.
    const marker = new Redis(redis.url);
    clients.push(marker);
    await marker.echo('hung-redis-test-marker');
    while (!seen.some((args) => args.includes('hung-redis-test-marker')))
      await new Promise((resolve) => setTimeout(resolve, 20));
    // While Redis was frozen: exactly one try per cool-down, two for nine requests (it used to be
    // a read per request, and two counts per wrong token).
    expect(authLimit().length - recoveringReads).toBe(2);
    expect(
      authLimit()
        .slice(0, 2)
        .map((args) => args[0]?.toLowerCase()),
    ).toEqual(['mget', 'mget']);
    expect(fallback()).toHaveLength(1);
  }, 60_000);
});
