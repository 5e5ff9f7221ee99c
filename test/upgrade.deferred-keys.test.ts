import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFERRED_KEY } from '../src/intake/deferred.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * An event acknowledged after the append (intake.ackAfterAppend) that a worker of an older
 * version recorded but had not yet trimmed from the list when it died (kill -9 mid-chunk) is
 * drained again by today's worker. Since b168a00 a JivoChat channel without `widgetId` keys each
 * event with the payload's widget too, so today's decode gives the event another idempotency key
 * than the one the older worker recorded it under: it was recorded a second time (a second
 * conversation.finished in the timeline, a second outbound event). Measured with the real build
 * of 032facb, 600 events, the old worker killed mid-drain: 68 events recorded twice.
 *
 * The older worker is stood in for by a bridge whose channel sets `widgetId` to the payload's
 * widget: with it the keys are those of before b168a00 (adapters/jivochat/mapper.ts).
 */
const ROOT = join(import.meta.dirname, '..');
const JIVO_TOKEN = 'upgrade-keys-jivo-token-0001';
const finished = JSON.parse(
  readFileSync(join(ROOT, 'adapters/jivochat/__fixtures__/chat_finished.json'), 'utf8'),
) as { widget_id: string; chat_id: number; visitor: Record<string, unknown> };
const body = {
  ...finished,
  chat_id: 4_400_001,
  visitor: {
    ...finished.visitor,
    name: 'Upgrade Keys',
    email: 'upgrade-keys@example.org',
    number: '4400001',
  },
};

describe('the deferred backlog across the JivoChat key change (b168a00)', () => {
  const keyPrefix = uniquePrefix('upgrade-keys');
  const bridges: TestBridge[] = [];
  afterAll(async () => {
    for (const bridge of bridges) await bridge.close();
    await cleanupPrefix(await getTestRedisUrl(), keyPrefix);
  });
  const start = async (role: 'web' | 'all', channel: Record<string, unknown>, ackAfterAppend: boolean) => {
    const bridge = await startTestBridge({
      store: 'redis',
      keyPrefix,
      role,
      config: {
        intake: { ackAfterAppend },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, ...channel }],
      },
    });
    bridges.push(bridge);
    return bridge;
  };
  const finishedEntries = async (bridge: TestBridge) => {
    const found = await bridge.admin(
      'GET',
      `/api/v1/contacts?email=${encodeURIComponent('upgrade-keys@example.org')}`,
    );
    expect(found.body.contacts).toHaveLength(1);
    const timeline = await bridge.admin(
      'GET',
      `/api/v1/contacts/${found.body.contacts[0].id}/timeline?limit=50`,
    );
    return (timeline.body.entries as Array<{ type: string }>).filter(
      (entry) => entry.type === 'conversation.finished',
    ).length;
  };

  it('an event an older worker recorded before it died is not recorded again by today’s worker', async () => {
    const redis = new Redis(await getTestRedisUrl());
    const list = `${keyPrefix}:${DEFERRED_KEY}`;
    try {
      // Acknowledged after the append; no worker yet.
      const web = await start('web', {}, true);
      expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, body)).status).toBe(200);
      expect(await redis.llen(list)).toBe(1);
      // The older worker records it under the key of before (no widget in it) and dies before
      // trimming the list: recorded, still listed. Stood in for by an inline recording.
      const older = await start('web', { widgetId: finished.widget_id }, false);
      expect((await older.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, body)).status).toBe(200);
      expect(await finishedEntries(older)).toBe(1);
      expect(await redis.llen(list)).toBe(1);
      // Today's worker drains the list.
      const today = await start('all', {}, true);
      for (let tries = 0; (await redis.llen(list)) > 0; tries++) {
        if (tries > 1000) throw new Error('the list was not drained');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(await finishedEntries(today)).toBe(1);
    } finally {
      redis.disconnect();
    }
  });
});
