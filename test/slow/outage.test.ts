import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jivo, personFor } from '../support/fault.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { type PrivateRedis, startPrivateRedis } from '../support/redis.js';

/**
 * Redis stops while JivoChat webhooks keep coming (20 in flight): intake answers 503 with
 * Retry-After (so Jivo retries) and nothing else, the process stays up and keeps answering, and
 * when Redis is back the bridge recovers by itself. test/outage.test.ts checks one request with
 * the echo adapter; this is the same under load with a real vendor adapter.
 */
const JIVO_TOKEN = 'fault-outage-jivo-token-001';
const IN_FLIGHT = 20;

interface Outcome {
  index: number;
  status: number;
  retryAfter: string | undefined;
  code: string | undefined;
}

describe('Redis stops under load', () => {
  let redis: PrivateRedis;
  let bridge: TestBridge;
  let pool: Pool;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    redis = await startPrivateRedis();
    bridge = await startTestBridge({
      config: {
        store: { redis: redis.url },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
      },
    });
    pool = new Pool(bridge.url, { connections: IN_FLIGHT });
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await pool?.close();
    await bridge?.close();
    await redis?.stop();
  });

  it('answers 503 with Retry-After while Redis is down, stays up, and recovers when it returns', async () => {
    let next = 0;
    let running = true;
    const outcomes: Outcome[] = [];
    const send = async (index: number): Promise<Outcome> => {
      const response = await pool.request({
        method: 'POST',
        path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(jivo.chatAccepted(personFor('outage', index), 900_000 + index)),
      });
      const body = (await response.body.json()) as { error?: { code?: string } };
      const retryAfter = response.headers['retry-after'];
      return {
        index,
        status: response.statusCode,
        retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
        code: body.error?.code,
      };
    };
    const load = Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (running) outcomes.push(await send(next++));
      }),
    );
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const since = (from: number) => outcomes.slice(from);

    await sleep(1000);
    const beforeStop = outcomes.length;
    expect(beforeStop).toBeGreaterThan(20);
    expect(outcomes.every((outcome) => outcome.status === 200)).toBe(true);

    await redis.stop();
    const stoppedAt = outcomes.length;
    await sleep(1500);
    // While Redis is down the process stays up: health answers, readiness says why not.
    expect((await fetch(`${bridge.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${bridge.url}/readyz`)).status).toBe(503);
    const during = since(stoppedAt);
    expect(during.length, 'intake keeps answering during the outage').toBeGreaterThan(50);
    const refused = during.filter((outcome) => outcome.status !== 200);
    // Requests in flight when Redis went may still have committed; everything after is a 503.
    expect(refused.length).toBeGreaterThan(during.length - IN_FLIGHT * 2);
    for (const outcome of refused) {
      expect(outcome.status, `webhook ${outcome.index}`).toBe(503);
      expect(outcome.code).toBe('store_unavailable');
      expect(outcome.retryAfter).toBeTruthy();
    }

    await redis.start();
    const deadline = Date.now() + 15_000;
    while ((await fetch(`${bridge.url}/readyz`)).status !== 200) {
      expect(Date.now(), 'the bridge did not see Redis come back within 15 s').toBeLessThan(deadline);
      await sleep(100);
    }
    const recoveredAt = outcomes.length;
    await sleep(1000);
    running = false;
    await load;
    const after = since(recoveredAt + IN_FLIGHT);
    expect(after.length).toBeGreaterThan(20);
    expect(after.filter((outcome) => outcome.status !== 200)).toEqual([]);

    // What was answered 200 after the recovery is stored (the private Redis keeps nothing on disk,
    // so what came before the outage went with it — that is Redis's durability, not ours).
    for (const outcome of after.slice(0, 20)) {
      const person = personFor('outage', outcome.index).person;
      const found = await bridge.admin(
        'GET',
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
      );
      expect(found.status).toBe(200);
      expect(found.body.contacts, person).toHaveLength(1);
    }
    expect(unhandled).toEqual([]);
  }, 40_000);
});
