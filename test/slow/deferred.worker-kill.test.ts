import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDist,
  inPool,
  jivo,
  personFor,
  postWebhook,
  type SpawnedBridge,
  spawnBridge,
  timelineOfPerson,
  writeFaultConfig,
} from '../support/fault.js';
import { freePort, type PrivateRedis, startPrivateRedis } from '../support/redis.js';

/**
 * intake.ackAfterAppend with split roles under kill -9: a `web` process acknowledges events after
 * the append, a `worker` process (which decodes every item from its bytes: no hand-off across
 * processes) is killed mid-drain, another worker starts. Every acknowledged event ends up recorded
 * exactly once: one contact, one conversation.finished entry. The real binary, a private Redis.
 */
const ADMIN_TOKEN = 'fault-wkill-admin-token-0001';
const JIVO_TOKEN = 'fault-wkill-jivo-token-00001';
const EVENTS = 1500;
const LIST = 'fault-wkill:intake:deferred';

describe('kill -9 of a deferred worker mid-drain', () => {
  let redis: PrivateRedis;
  let client: Redis;
  let configFile: string;
  const spawned: SpawnedBridge[] = [];

  beforeAll(async () => {
    buildDist();
    redis = await startPrivateRedis();
    client = new Redis(redis.url);
    configFile = writeFaultConfig({
      port: await freePort(),
      redisUrl: redis.url,
      keyPrefix: 'fault-wkill',
      adminToken: ADMIN_TOKEN,
      jivoToken: JIVO_TOKEN,
      livetexToken: 'fault-wkill-livetex-token-01',
      extra: 'intake: { ackAfterAppend: true }',
    });
  }, 120_000);
  afterAll(async () => {
    for (const bridge of spawned) await bridge.stop();
    client?.disconnect();
    await redis?.stop();
  });

  const webhook = (index: number) => jivo.chatFinished(personFor('wkill', index), 870_000 + index);

  it('every event acknowledged before the kill is recorded exactly once by the next worker', async () => {
    const web = await spawnBridge(configFile, await freePort(), {}, 'web');
    spawned.push(web);
    const pool = new Pool(web.url, { connections: 20 });
    try {
      // No worker yet: every event is acknowledged and waits in the list.
      const statuses = new Array<number | string>(EVENTS);
      await inPool(EVENTS, 20, async (index) => {
        statuses[index] = await postWebhook(pool, `/webhooks/jivochat/site/${JIVO_TOKEN}`, webhook(index));
      });
      expect(statuses.filter((status) => status !== 200)).toEqual([]);
      expect(await client.llen(LIST)).toBe(EVENTS);

      // A worker starts draining; killed once it trimmed a chunk and before it finished the list.
      const first = await spawnBridge(configFile, await freePort(), {}, 'worker');
      spawned.push(first);
      for (let tries = 0; tries < 6000 && (await client.llen(LIST)) === EVENTS; tries++)
        await new Promise((resolve) => setTimeout(resolve, 5));
      await first.kill();
      const left = await client.llen(LIST);
      expect(left, 'the kill landed after the first chunk').toBeLessThan(EVENTS);
      expect(left, 'the kill landed before the list was drained').toBeGreaterThan(0);

      const second = await spawnBridge(configFile, await freePort(), {}, 'worker');
      spawned.push(second);
      // The killed worker's drain lock expires by itself; the new worker then drains the rest.
      for (let tries = 0; tries < 600 && (await client.llen(LIST)) > 0; tries++)
        await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await client.llen(LIST)).toBe(0);

      const wrong: string[] = [];
      await inPool(EVENTS, 20, async (index) => {
        const { contacts, types } = await timelineOfPerson(
          pool,
          ADMIN_TOKEN,
          personFor('wkill', index).person,
        );
        const finished = types.filter((type) => type === 'conversation.finished').length;
        if (contacts !== 1 || finished !== 1)
          wrong.push(`${index}: ${contacts} contacts, ${finished} finished`);
      });
      expect(wrong, 'acknowledged events not recorded exactly once').toEqual([]);
      expect(await client.llen('fault-wkill:intake:deferred:invalid')).toBe(0);
    } finally {
      await pool.close();
    }
  }, 300_000);
});
