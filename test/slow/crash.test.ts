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
 * kill -9 during a burst of 2,000 webhooks, then restart: an answer of 200 is a promise that the
 * event is stored (the observation's atomic batch commits before the answer), so every webhook
 * that got a 200 must be readable after the crash. Then the vendor's retries of the others all
 * land, each exactly once. The real binary (dist/), on a private Redis.
 */
const ADMIN_TOKEN = 'fault-crash-admin-token-0001';
const JIVO_TOKEN = 'fault-crash-jivo-token-00001';
const BURST = 2000;
const KILL_AFTER_OK = 600;

describe('kill -9 during a burst of webhooks', () => {
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
      keyPrefix: 'fault-crash',
      adminToken: ADMIN_TOKEN,
      jivoToken: JIVO_TOKEN,
      livetexToken: 'fault-crash-livetex-token-01',
    });
  }, 120_000);
  afterAll(async () => {
    await bridge?.stop();
    await redis?.stop();
  });

  const webhook = (index: number) => jivo.chatAccepted(personFor('crash', index), 800_000 + index);

  const post = (pool: Pool, index: number) =>
    postWebhook(pool, `/webhooks/jivochat/site/${JIVO_TOKEN}`, webhook(index));

  /** The person's contact and how many conversation.started entries its timeline holds. */
  async function stored(pool: Pool, index: number): Promise<{ contacts: number; started: number }> {
    const { contacts, types } = await timelineOfPerson(pool, ADMIN_TOKEN, personFor('crash', index).person);
    return { contacts, started: types.filter((type) => type === 'conversation.started').length };
  }

  it('every webhook answered 200 before the crash is stored; retries of the rest land exactly once', async () => {
    bridge = await spawnBridge(configFile, port);
    // The kill lands mid-burst: some answered, some refused or cut off.
    const { answered, unanswered } = await burstAndKill(bridge, BURST, KILL_AFTER_OK, post);

    bridge = await spawnBridge(configFile, port);
    const pool = new Pool(bridge.url, { connections: 20 });
    try {
      const missing: number[] = [];
      await inPool(answered.length, 20, async (position) => {
        const index = answered[position]!;
        const found = await stored(pool, index);
        if (found.contacts !== 1 || found.started !== 1) missing.push(index);
      });
      expect(missing, 'answered 200 but not stored exactly once').toEqual([]);

      // The vendor retries what was not answered. A lock the killed process held expires by itself
      // (10 s); meanwhile its webhook is answered 503, which a vendor retries too.
      await retryUntilAccepted(pool, unanswered, post);
      const wrong: number[] = [];
      await inPool(BURST, 20, async (index) => {
        const found = await stored(pool, index);
        if (found.contacts !== 1 || found.started !== 1) wrong.push(index);
      });
      expect(wrong, 'after the retries every webhook is stored exactly once').toEqual([]);
    } finally {
      await pool.close();
    }
  }, 300_000);
});
