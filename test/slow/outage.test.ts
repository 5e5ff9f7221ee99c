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
      try {
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
      } catch (error) {
        // No answer at all (connection reset, ...): recorded, and the test fails on it below.
        return {
          index,
          status: 0,
          retryAfter: undefined,
          code: (error as { code?: string }).code ?? String(error),
        };
      }
    };
    const load = Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (running) outcomes.push(await send(next++));
      }),
    );
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const since = (from: number) => outcomes.slice(from);
    /** Waits for `count` more answers: progress is counted in answers, never in time. */
    const answers = async (count: number, what: string) => {
      const target = outcomes.length + count;
      for (let polls = 0; outcomes.length < target; polls++) {
        if (polls > 2000) throw new Error(`no progress while waiting for ${what}`);
        await sleep(20);
      }
    };
    const PHASE = IN_FLIGHT * 3;

    let after: Outcome[] = [];
    try {
      await answers(PHASE, 'answers before the outage');
      expect(outcomes.filter((outcome) => outcome.status !== 200)).toEqual([]);

      await redis.stop();
      const stoppedAt = outcomes.length;
      await answers(PHASE, 'answers during the outage');
      // While Redis is down the process stays up: health answers, readiness says why not.
      expect((await fetch(`${bridge.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${bridge.url}/readyz`)).status).toBe(503);
      const during = since(stoppedAt);
      // Requests in flight when Redis went may still have committed; the rest are 503s that say why.
      const refused = during.filter((outcome) => outcome.status !== 200);
      expect(during.length - refused.length).toBeLessThanOrEqual(IN_FLIGHT * 2);
      for (const outcome of refused) {
        expect(outcome.status, `webhook ${outcome.index}`).toBe(503);
        expect(outcome.code).toBe('store_unavailable');
        expect(outcome.retryAfter).toBeTruthy();
      }

      await redis.start();
      for (let polls = 0; (await fetch(`${bridge.url}/readyz`)).status !== 200; polls++) {
        if (polls > 300) throw new Error('the bridge did not see Redis come back');
        await sleep(50);
      }
      const recoveredAt = outcomes.length;
      await answers(IN_FLIGHT + PHASE, 'answers after the recovery');
      // Skip what was in flight at the moment readiness came back.
      after = since(recoveredAt + IN_FLIGHT);
      expect(after.filter((outcome) => outcome.status !== 200)).toEqual([]);
    } finally {
      // Whatever happened above, the load stops before the test ends.
      running = false;
      await load;
    }

    // Every request got an answer (none lost, none cut off) and no answer was a 5xx but the 503s.
    expect(outcomes).toHaveLength(next);
    expect(outcomes.filter((outcome) => outcome.status === 0)).toEqual([]);
    expect(outcomes.filter((outcome) => outcome.status >= 500 && outcome.status !== 503)).toEqual([]);

    // What was answered 200 after the recovery is stored (the private Redis keeps nothing on disk,
    // so what came before the outage went with it — that is Redis's durability, not ours).
    for (const outcome of after) {
      const person = personFor('outage', outcome.index).person;
      const found = await bridge.admin(
        'GET',
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
      );
      expect(found.status).toBe(200);
      expect(found.body.contacts, person).toHaveLength(1);
    }
    expect(unhandled).toEqual([]);
  }, 300_000);
});
