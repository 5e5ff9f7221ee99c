import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jivo, livetex, personFor } from '../support/fault.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Vendors deliver at least once (DESIGN §7): every webhook delivered three times — the copies
 * arriving at the same moment, and different events of one person racing each other — must leave
 * the same timeline as one delivery, on Redis with real locks.
 */
const JIVO_TOKEN = 'fault-dup-jivo-token-0001';
const LIVETEX_TOKEN = 'fault-dup-livetex-token-01';
const PEOPLE = 30;
const COPIES = 3;

function deliveriesFor(index: number) {
  const who = personFor('dup', index);
  return [
    { path: `/webhooks/jivochat/site/${JIVO_TOKEN}`, body: jivo.chatAccepted(who, 41_000 + index) },
    { path: `/webhooks/jivochat/site/${JIVO_TOKEN}`, body: jivo.chatFinished(who, 41_000 + index) },
    { path: `/webhooks/jivochat/site/${JIVO_TOKEN}`, body: jivo.offlineMessage(who, `17186${index}`) },
    { path: `/webhooks/livetex/app/${LIVETEX_TOKEN}`, body: livetex.dialogClosed(who, 52_000 + index) },
    { path: `/webhooks/livetex/app/${LIVETEX_TOKEN}`, body: livetex.dialogAssigned(who, 53_000 + index) },
  ];
}

describe('every webhook delivered three times gives one timeline entry', () => {
  let bridge: TestBridge;
  let pool: Pool;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'redis',
      config: {
        secrets: { masterKey: Buffer.alloc(32, 3).toString('base64') },
        channels: [
          { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' },
          { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
        ],
      },
    });
    pool = new Pool(bridge.url, { connections: 64 });
  });
  afterAll(async () => {
    await pool?.close();
    await bridge?.close();
  });

  async function post(path: string, body: unknown) {
    const response = await pool.request({
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await response.body.text();
    return { status: response.statusCode, text };
  }

  async function timelineOf(index: number) {
    const person = personFor('dup', index).person;
    const found = await bridge.admin(
      'GET',
      `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
    );
    expect(found.status).toBe(200);
    expect(found.body.contacts, `contacts of ${person}`).toHaveLength(1);
    const page = await bridge.admin(
      'GET',
      `/api/v1/contacts/${found.body.contacts[0].id}/timeline?limit=200`,
    );
    expect(page.status).toBe(200);
    return page.body.entries as Array<{ id: string; type: string }>;
  }

  it('JivoChat and LiveTex webhooks, three concurrent copies each, five events per person racing', async () => {
    // The control: person 0 gets every webhook exactly once, one after the other.
    for (const delivery of deliveriesFor(0))
      expect((await post(delivery.path, delivery.body)).status).toBe(200);
    const expected = (await timelineOf(0)).map((entry) => entry.type).sort();
    expect(expected.length).toBeGreaterThanOrEqual(5);

    // Everyone else: all copies of all events of all people at once.
    const sends: Array<Promise<{ status: number; text: string; key: string }>> = [];
    for (let index = 1; index <= PEOPLE; index++) {
      deliveriesFor(index).forEach((delivery, event) => {
        for (let copy = 0; copy < COPIES; copy++) {
          sends.push(
            post(delivery.path, delivery.body).then((answer) => ({ ...answer, key: `${index}/${event}` })),
          );
        }
      });
    }
    const answers = await Promise.all(sends);
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([]);
    // Every copy is answered in the vendor's protocol (the duplicate too); the contents may differ
    // between copies, because the other events of the same person change the contact meanwhile.
    for (const answer of answers)
      expect(JSON.parse(answer.text), answer.key).toMatchObject(
        answer.key.endsWith('/3') || answer.key.endsWith('/4') ? { ok: true } : { result: 'ok' },
      );

    for (let index = 1; index <= PEOPLE; index++) {
      const entries = await timelineOf(index);
      expect(entries.map((entry) => entry.type).sort(), `timeline of person ${index}`).toEqual(expected);
      expect(new Set(entries.map((entry) => entry.id)).size).toBe(entries.length);
    }
  }, 120_000);
});
