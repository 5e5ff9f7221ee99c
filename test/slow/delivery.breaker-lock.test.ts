import { Writable } from 'node:stream';
import { QueueEvents } from 'bullmq';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { queueNameOf } from '../../src/delivery/queue-bullmq.js';
import { jivo, personFor } from '../support/fault.js';
import { startTestBridge } from '../support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * A destination whose circuit breaker stays open (nothing listens on 127.0.0.1:9), one bridge on
 * real Redis, BullMQ's own defaults (lockDuration 30 s, stalledInterval 30 s). A job that finds
 * the breaker open pauses the destination and goes back to wait (Worker.RateLimitError); the
 * worker then sleeps out the pause (up to 30 s). Another of its slots, blocked waiting for work,
 * must not take that job meanwhile and leave it active, locked for 30 s and unrenewed, until the
 * sleep ends: its lock then lapses, its run's move fails ("Missing lock for job … moveToDelayed"),
 * and BullMQ's stalled check brings it back (`stalled`). Outcomes only: no stalled job, no
 * missing-lock error, every delivery that ended ended after its two attempts.
 */

const TOKEN = 'breaker-lock-jivo-token-0001';
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

it('an open breaker leaves no delivery job without its lock (no stalled job, no missing lock)', async () => {
  const keyPrefix = uniquePrefix('breaker-lock');
  // Popped last: after the bridge has closed, so nothing writes under the prefix after it.
  cleanups.push(async () => cleanupPrefix(await getTestRedisUrl(), keyPrefix));
  const lines: string[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    }),
  );
  const bridge = await startTestBridge({
    store: 'redis',
    keyPrefix,
    logger,
    config: {
      channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN, personIdFrom: 'user_token' }],
      // The example destination (config/bridge.example.yaml) with nothing listening.
      destinations: [
        {
          id: 'example-crm',
          url: 'http://127.0.0.1:9/chatbridge-events',
          secret: 'whsec_ZXhhbXBsZS1zZWNyZXQtY2hhbmdlLW1lLTAx',
          retrySchedule: ['0s', '5s'],
        },
      ],
    },
  });
  cleanups.push(() => bridge.close());
  const events = new QueueEvents(queueNameOf('example-crm'), {
    connection: { url: bridge.redisUrl! },
    prefix: `${keyPrefix}:bull`,
  });
  cleanups.push(() => events.close());
  const stalled: string[] = [];
  events.on('stalled', ({ jobId }) => stalled.push(jobId));
  await events.waitUntilReady();

  for (let index = 0; index < 4; index++) {
    const who = personFor('breaker-lock', index);
    for (const body of [
      jivo.chatAccepted(who, 61_000 + index),
      jivo.chatFinished(who, 61_000 + index),
      jivo.offlineMessage(who, `6100${index}`),
    ])
      expect((await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, body)).status).toBe(200);
  }

  // Three deliveries ended: the breaker has opened, and two of its trials have gone (each one
  // cooldown, 30 s, apart), so BullMQ's stalled check has run a few times meanwhile.
  let failed: Array<{ id: string }> = [];
  for (;;) {
    const answer = await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=200');
    failed = answer.body.deliveries;
    if (failed.length >= 3) break;
    await sleep(500);
  }
  // One more stalled check (stalledInterval) after the last trial.
  await sleep(31_000);

  const missingLock = lines.filter((line) => line.includes('Missing lock'));
  expect(missingLock).toEqual([]);
  expect(stalled).toEqual([]);
  for (const { id } of failed) {
    const one = await bridge.admin('GET', `/api/v1/deliveries/${id}`);
    expect(JSON.stringify(one.body), id).toContain('after 2 attempts');
  }
}, 300_000);
