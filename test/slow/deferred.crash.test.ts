import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDist,
  burstAndKill,
  inPool,
  jivo,
  personFor,
  postWebhook,
  retryUntilAccepted,
  type SpawnedBridge,
  spawnBridge,
  timelineOfPerson,
  writeFaultConfig,
} from '../support/fault.js';
import { freePort, type PrivateRedis, startPrivateRedis } from '../support/redis.js';

/**
 * intake.ackAfterAppend under kill -9 (issue 12 item 2): a chat_finished answered 200 was only
 * appended, not yet recorded, when the process died. Every one of them must be recorded after a
 * restart (the worker finds them in the store), each exactly once, and the vendor's retries of
 * the unanswered ones land exactly once too. The real binary (dist/), on a private Redis.
 */
const ADMIN_TOKEN = 'fault-deferred-admin-token-01';
const JIVO_TOKEN = 'fault-deferred-jivo-token-001';
const BURST = 1500;
const KILL_AFTER_OK = 500;

describe('kill -9 with acknowledge-after-append', () => {
  let redis: PrivateRedis;
  let bridge: SpawnedBridge | undefined;
  let configFile: string;
  let port: number;

  beforeAll(async () => {
    buildDist();
    redis = await startPrivateRedis();
    port = await freePort();
    configFile = writeFaultConfig({
      port,
      redisUrl: redis.url,
      keyPrefix: 'fault-deferred',
      adminToken: ADMIN_TOKEN,
      jivoToken: JIVO_TOKEN,
      livetexToken: 'fault-deferred-livetex-tok-1',
      extra: 'intake: { ackAfterAppend: true }',
    });
  }, 120_000);
  afterAll(async () => {
    await bridge?.stop();
    await redis?.stop();
  });

  const webhook = (index: number) => jivo.chatFinished(personFor('deferred', index), 850_000 + index);

  const post = (pool: Pool, index: number) =>
    postWebhook(pool, `/webhooks/jivochat/site/${JIVO_TOKEN}`, webhook(index));

  /** How many conversation.finished entries the person's contact holds (-1: not exactly one contact). */
  async function finishedCount(pool: Pool, index: number): Promise<number> {
    const { contacts, types } = await timelineOfPerson(
      pool,
      ADMIN_TOKEN,
      personFor('deferred', index).person,
    );
    return contacts === 1 ? types.filter((type) => type === 'conversation.finished').length : -1;
  }

  /** Every index recorded exactly once; waits for the worker (bounded by rounds, not timed). */
  async function unrecorded(pool: Pool, indexes: number[]): Promise<number[]> {
    let left = indexes;
    for (let round = 0; round < 120 && left.length > 0; round++) {
      if (round > 0) await new Promise((resolve) => setTimeout(resolve, 500));
      const still: number[] = [];
      await inPool(left.length, 20, async (position) => {
        const index = left[position]!;
        const count = await finishedCount(pool, index);
        expect(count, `webhook ${index} recorded more than once`).toBeLessThanOrEqual(1);
        if (count !== 1) still.push(index);
      });
      left = still;
    }
    return left;
  }

  it('every chat_finished answered 200 before the crash is recorded after a restart; retries land once', async () => {
    bridge = await spawnBridge(configFile, port);
    const { answered, unanswered } = await burstAndKill(bridge, BURST, KILL_AFTER_OK, post);

    // The crash left acknowledged items unrecorded in the store (the point of this test).
    const client = new Redis(redis.url);
    const waiting = await client.llen('fault-deferred:intake:deferred');
    expect(waiting, 'acknowledged items were waiting for the worker at the crash').toBeGreaterThan(0);

    bridge = await spawnBridge(configFile, port);
    const pool = new Pool(bridge.url, { connections: 20 });
    try {
      expect(await unrecorded(pool, answered), 'answered 200 but not recorded exactly once').toEqual([]);
      await retryUntilAccepted(pool, unanswered, post);
      const all = Array.from({ length: BURST }, (_, index) => index);
      expect(await unrecorded(pool, all), 'after the retries every webhook is recorded exactly once').toEqual(
        [],
      );
      expect(await client.llen('fault-deferred:intake:deferred')).toBe(0);
    } finally {
      client.disconnect();
      await pool.close();
    }
  }, 240_000);
});
