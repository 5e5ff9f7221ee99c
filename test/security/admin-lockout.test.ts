import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { consoleRequest, cookieOf, fieldOf } from '../support/console.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { capturingLogger } from '../support/logs.js';
import {
  cleanupPrefix,
  getTestRedisUrl,
  type PrivateRedis,
  startPrivateRedis,
  uniquePrefix,
} from '../support/redis.js';
import { rawRequest } from './support.js';

/**
 * The limit on failed admin authentications must not be a way to lock staff out. Besides the
 * per-address limit there is a ceiling on failures from all addresses together
 * (`adminAuthFailuresCeiling`); before this fix, once strangers had sent that many wrong
 * tokens from any addresses, every admin request and console sign-in answered 429, the right
 * token included. Now the ceiling only holds back addresses that have not authenticated lately
 * (it still slows guessing spread over many addresses), and with Redis the counts are shared by
 * every instance of the bridge (N instances no longer allow N times the limits).
 */

const STAFF = '198.51.100.50';

async function api(bridge: TestBridge, address: string, token: string) {
  return rawRequest(bridge.url, 'GET', '/api/v1/channels', {
    headers: { 'x-forwarded-for': address, authorization: `Bearer ${token}` },
  });
}

async function signIn(bridge: TestBridge, address: string, token: string) {
  const headers = { 'x-forwarded-for': address };
  const form = await consoleRequest(bridge.url, '/console/sign-in', { headers });
  return consoleRequest(bridge.url, '/console/sign-in', {
    headers,
    cookie: cookieOf(form.headers, 'chatbridge_console_pre') ?? '',
    form: { _pre: fieldOf(form.text, '_pre') ?? '', next: '/console/contacts', token },
  });
}

/** Wrong tokens from `count` different addresses (203.0.113.x), each answered 401 or 429. */
async function strangersGuess(bridge: TestBridge, count: number, from = 1): Promise<number[]> {
  const statuses: number[] = [];
  for (let index = from; index < from + count; index++)
    statuses.push((await api(bridge, `203.0.113.${index}`, `guess-${index}-0000000000000`)).status);
  return statuses;
}

describe('strangers guessing wrong tokens do not lock staff out', () => {
  const bridges: TestBridge[] = [];
  afterEach(async () => {
    for (const bridge of bridges.splice(0)) await bridge.close();
  });
  const limits = { rate: { adminAuthFailuresPerAddress: 3, adminAuthFailuresCeiling: 5, window: '1h' } };

  it('lets an address that authenticated lately in with the right token after the ceiling is reached', async () => {
    const bridge = await startTestBridge({ config: { limits } });
    bridges.push(bridge);
    // Staff worked from their address before the attack (the API, and the console's sign-in).
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect((await signIn(bridge, '198.51.100.51', bridge.adminToken)).status).toBe(302);

    // Five wrong tokens from five addresses reach the ceiling; the sixth stranger is held back.
    expect(await strangersGuess(bridge, 6)).toEqual([401, 401, 401, 401, 401, 429]);

    // Staff with the right token are still let in, at the API and at the sign-in form.
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect((await signIn(bridge, '198.51.100.51', bridge.adminToken)).status).toBe(302);
    expect((await signIn(bridge, STAFF, bridge.adminToken)).status).toBe(302);
    expect((await api(bridge, '198.51.100.51', bridge.adminToken)).status).toBe(200);
  });

  it('keeps the ceiling for addresses it does not know, and the per-address limit for everyone', async () => {
    const bridge = await startTestBridge({ config: { limits } });
    bridges.push(bridge);
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    expect(await strangersGuess(bridge, 5)).toEqual([401, 401, 401, 401, 401]);

    // An address never seen with the right token is refused before its token is looked at, so a
    // guesser with many addresses gets no answer past the ceiling, right or wrong.
    const unknown = await api(bridge, '192.0.2.77', bridge.adminToken);
    expect(unknown.status).toBe(429);
    expect(Number(unknown.headers['retry-after'])).toBeGreaterThan(0);
    expect((await signIn(bridge, '192.0.2.77', bridge.adminToken)).status).toBe(429);

    // A known address past the ceiling gets its wrong tokens answered 401, up to its own limit.
    expect((await api(bridge, STAFF, 'typo-0000000000000000')).status).toBe(401);
    expect((await api(bridge, STAFF, 'typo-0000000000000001')).status).toBe(401);
    expect((await api(bridge, STAFF, 'typo-0000000000000002')).status).toBe(401);
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(429);
  });

  it('does the same for metrics.token on the main port', async () => {
    const METRICS = 'metrics-token-lockout-0123456';
    const bridge = await startTestBridge({ config: { limits, metrics: { token: METRICS } } });
    bridges.push(bridge);
    const scrape = (address: string, token: string) =>
      rawRequest(bridge.url, 'GET', '/metrics', {
        headers: { 'x-forwarded-for': address, authorization: `Bearer ${token}` },
      });
    expect((await scrape('10.1.0.9', METRICS)).status).toBe(200);
    for (let index = 1; index <= 5; index++)
      expect((await scrape(`203.0.113.${index}`, 'wrong-0000000000000000')).status).toBe(401);
    expect((await scrape('203.0.113.99', 'wrong-0000000000000000')).status).toBe(429);
    expect((await scrape('10.1.0.9', METRICS)).status).toBe(200);
    expect((await scrape('10.1.0.10', METRICS)).status).toBe(429);
  });
});

describe('failed admin authentications are counted across instances on one Redis', () => {
  let redisUrl: string;
  const prefixes: string[] = [];
  const bridges: TestBridge[] = [];
  afterEach(async () => {
    for (const bridge of bridges.splice(0)) await bridge.close();
  });
  afterAll(async () => {
    for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
  });

  async function twoInstances(rate: Record<string, unknown>) {
    redisUrl = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('lockout');
    prefixes.push(keyPrefix);
    const config = { limits: { rate: { window: '1h', ...rate } } };
    const one = await startTestBridge({ store: 'redis', keyPrefix, config, start: false });
    bridges.push(one);
    const two = await startTestBridge({ store: 'redis', keyPrefix, config, start: false });
    bridges.push(two);
    return [one, two] as const;
  }

  it('counts failures from one address on one instance on the other', async () => {
    const [one, two] = await twoInstances({
      adminAuthFailuresPerAddress: 3,
      adminAuthFailuresCeiling: 100,
    });
    const from = '203.0.113.40';
    expect((await api(one, from, 'guess-1-0000000000000')).status).toBe(401);
    expect((await api(two, from, 'guess-2-0000000000000')).status).toBe(401);
    expect((await api(one, from, 'guess-3-0000000000000')).status).toBe(401);
    // Three failures across the two: the fourth try is refused on either, the right token too.
    const refused = await api(two, from, 'guess-4-0000000000000');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect((await api(one, from, one.adminToken)).status).toBe(429);
    expect((await api(two, '198.51.100.60', two.adminToken)).status).toBe(200);
  });

  it('shares the ceiling and the addresses staff authenticated from', async () => {
    const [one, two] = await twoInstances({
      adminAuthFailuresPerAddress: 3,
      adminAuthFailuresCeiling: 4,
    });
    // Staff signed in through the first instance; the load balancer sends them to the second later.
    expect((await signIn(one, STAFF, one.adminToken)).status).toBe(302);
    expect(await strangersGuess(one, 2, 1)).toEqual([401, 401]);
    expect(await strangersGuess(two, 2, 3)).toEqual([401, 401]);
    // Four failures in all reach the ceiling of four on both instances.
    expect(await strangersGuess(one, 1, 5)).toEqual([429]);
    expect(await strangersGuess(two, 1, 6)).toEqual([429]);
    expect((await api(two, '192.0.2.78', two.adminToken)).status).toBe(429);
    expect((await api(two, STAFF, two.adminToken)).status).toBe(200);
    expect((await signIn(two, STAFF, two.adminToken)).status).toBe(302);
  });
});

describe('the admin gate while Redis is unavailable', () => {
  let redis: PrivateRedis | undefined;
  let bridge: TestBridge | undefined;
  afterAll(async () => {
    await bridge?.close();
    await redis?.stop();
  });

  it('answers 401 and then 429 from its own counters, never 5xx for a wrong token, and says so once', async () => {
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
    await redis.stop();

    const from = '203.0.113.41';
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 5; attempt++)
      statuses.push((await api(bridge, from, `guess-${attempt}-000000000000`)).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // The right token still passes (GET /api/v1/channels needs no store).
    expect((await api(bridge, STAFF, bridge.adminToken)).status).toBe(200);
    const warnings = lines.filter(
      (line) => /admin-auth/i.test(line.msg) && /in-process|this instance/i.test(line.msg),
    );
    expect(warnings).toHaveLength(1);
  });
});
