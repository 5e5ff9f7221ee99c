import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jivo, personFor } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * README "Identity": a busy visitor is not refused. Two bridges on one Redis take 400 JivoChat
 * webhooks of one visitor at once, most of them naming the visitor only by one of their eight
 * JivoChat visitor numbers (no user_token, e-mail or phone): each number is its own queue and
 * identity lock, but all of them write the same contact. Every webhook must be answered 200
 * (a 409 is dropped by JivoChat, which does not resend a 4xx) and land on that one contact.
 */
const JIVO_TOKEN = 'busy-visitor-jivo-token-01';
const NUMBERS = 8;
const WEBHOOKS = 400;

describe('one visitor by many identifiers at two bridges', () => {
  const bridges: TestBridge[] = [];
  const pools: Pool[] = [];
  const keyPrefix = uniquePrefix('busy-visitor');

  beforeAll(async () => {
    for (let i = 0; i < 2; i++) {
      bridges.push(
        await startTestBridge({
          store: 'redis',
          keyPrefix,
          config: {
            channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
          },
        }),
      );
      pools.push(new Pool(bridges[i]!.url, { connections: 64 }));
    }
  });
  afterAll(async () => {
    await Promise.all(pools.map((pool) => pool.close()));
    for (const bridge of bridges) await bridge.close();
    await cleanupPrefix(await getTestRedisUrl(), keyPrefix);
  });

  async function post(pool: Pool, body: unknown) {
    const response = await pool.request({
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: response.statusCode, text: await response.body.text() };
  }

  it('answers every webhook 200 and files them all on one contact', async () => {
    const who = personFor('busy-visitor', 1);
    // The visitor's numbers, each seen once with their user_token: all one contact.
    for (let k = 0; k < NUMBERS; k++) {
      const body = jivo.chatAccepted(who, 990_000 + k);
      body.visitor.number = String(60_000 + k);
      expect((await post(pools[0]!, body)).status).toBe(200);
    }
    const answers = await Promise.all(
      Array.from({ length: WEBHOOKS }, (_, n) => {
        const body = jivo.chatAccepted(who, 991_000 + n);
        body.visitor.number = String(60_000 + (n % NUMBERS));
        if (n % 4 !== 0) {
          body.user_token = undefined;
          body.visitor.email = undefined;
          body.visitor.phone = undefined;
        }
        return post(pools[n % 2]!, body);
      }),
    );
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([]);

    const response = await pools[1]!.request({
      method: 'GET',
      path: `/api/v1/contacts?identity=${encodeURIComponent(`person:${who.person}`)}`,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    const { contacts } = JSON.parse(await response.body.text());
    expect(contacts).toHaveLength(1);
    const site = contacts[0].channels.find((channel: { channelId: string }) => channel.channelId === 'site');
    expect(site.observations).toBe(NUMBERS + WEBHOOKS);
  });
});
