import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createLivetexLookupClient } from '../../adapters/livetex/client.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Issue 10 item 5 end to end: a visitor types another customer's e-mail into a JivoChat chat.
 * Under `identity.mergeOnVisitorTyped` without `email` nothing merges and the agent's answer says
 * the e-mail is not verified; under the default (today's merge) the merge happens and every fact
 * the agent then sees about her is marked as resting on a visitor-typed value — in JivoChat's
 * answer and in the LiveTex lookup.
 */
const JIVO_TOKEN = 'jivo-token-000000000001';
const LIVETEX_TOKEN = 'app-webhook-token-0123456789';
const MARIA = { person: 'cust-maria-0001', email: 'maria@example.org', phone: '+79161234567' };

let bridge: TestBridge | undefined;
afterEach(async () => {
  await bridge?.close();
  bridge = undefined;
});

async function start(identity: Record<string, unknown> = {}) {
  return startTestBridge({
    store: 'redis',
    config: {
      secrets: { masterKey: randomBytes(32).toString('base64') },
      identity,
      channels: [
        { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN },
        { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
      ],
    },
  });
}

/** Maria as the company's app knows her: her customer id, verified e-mail, her phone, a label. */
async function seedMaria(test: TestBridge) {
  const seeded = await test.bridge.context.contacts.observe({
    channelId: 'app',
    vendor: 'livetex',
    at: '2026-11-01T10:00:00.000Z',
    idempotencyKey: 'maria-app-1',
    identifiers: [
      { kind: 'person', value: MARIA.person, provenance: 'verified' },
      { kind: 'email', value: MARIA.email, provenance: 'verified' },
      { kind: 'phone', value: MARIA.phone, provenance: 'visitor' },
    ],
    names: ['Maria Ivanova'],
    labels: ['vip'],
  });
  return seeded.contact;
}

/** A website visitor (no user_token) who types Maria's e-mail into the chat form. */
function strangerTypes(email: string, number = 900) {
  return {
    event_name: 'chat_accepted',
    chat_id: number,
    user_token: null,
    visitor: { name: 'Stranger', email, number },
    agent: { id: '7', name: 'Olga', email: 'olga@example.org' },
  };
}

async function sendJivo(test: TestBridge, body: object) {
  return test.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, JSON.stringify(body), {
    'content-type': 'application/json',
  });
}

type Item = { title: string; content: string };
const titles = (items: Item[] | undefined) => (items ?? []).map((item) => item.title);

describe('answers mark what rests on visitor-typed values', () => {
  it('mergeOnVisitorTyped without email: no merge, and the answer says the e-mail is not verified', async () => {
    bridge = await start({ mergeOnVisitorTyped: ['person', 'phone'] });
    const maria = await seedMaria(bridge);
    const response = await sendJivo(bridge, strangerTypes(MARIA.email));
    expect(response.status).toBe(200);
    // The stranger sees nothing of Maria: no phone, no customer id, no labels, no other channel.
    expect(response.body.contact_info).toEqual({ name: 'Stranger', email: MARIA.email });
    expect(response.body.custom_data).toEqual([
      { title: 'Not verified', content: 'e-mail (typed by a visitor)' },
    ]);
    // Two contacts share the e-mail (the typed one is search-only); Maria's is untouched.
    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(MARIA.email)}`);
    const ids = (found.body.contacts as { id: string }[]).map((contact) => contact.id);
    expect(ids).toHaveLength(2);
    expect(ids).toContain(maria.id);
    const mariaNow = await bridge.admin('GET', `/api/v1/contacts/${maria.id}`);
    expect(mariaNow.body.channels.map((channel: { channelId: string }) => channel.channelId)).toEqual([
      'app',
    ]);
    expect(mariaNow.body.identities).toContainEqual({
      kind: 'email',
      value: MARIA.email,
      provenance: 'verified',
    });
  });

  it('default config: today’s merge is kept, and every fact about Maria is marked not verified', async () => {
    bridge = await start();
    const maria = await seedMaria(bridge);
    const response = await sendJivo(bridge, strangerTypes(MARIA.email));
    expect(response.status).toBe(200);
    // The merge the vendors' docs expect: the typed e-mail joins Maria's contact...
    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(MARIA.email)}`);
    expect((found.body.contacts as { id: string }[]).map((contact) => contact.id)).toEqual([maria.id]);
    // ...so the agent sees her phone and facts, but each says it rests on what the visitor typed.
    expect(response.body.contact_info).toMatchObject({ email: MARIA.email, phone: MARIA.phone });
    const items = response.body.custom_data as Item[];
    expect(items[0]).toEqual({ title: 'Not verified', content: 'phone (typed by a visitor)' });
    expect(titles(items)).toEqual(
      expect.arrayContaining([
        'LiveTex app (not verified)',
        'Labels (not verified)',
        'Customer id (not verified)',
      ]),
    );
    for (const item of items.slice(1)) expect(item.title).toMatch(/ \(not verified\)$/);
  });

  it('default config: the same chat with the site’s user_token is proven, no fact is marked', async () => {
    bridge = await start();
    await seedMaria(bridge);
    const response = await sendJivo(bridge, { ...strangerTypes(MARIA.email), user_token: MARIA.person });
    expect(response.status).toBe(200);
    const items = response.body.custom_data as Item[];
    expect(titles(items)).toEqual(expect.arrayContaining(['LiveTex app', 'Labels', 'Customer id']));
    expect(items.filter((item) => item.title.endsWith('(not verified)'))).toEqual([]);
    // Her phone was typed by a visitor once (in the app's chat form): still said.
    expect(items[0]).toEqual({ title: 'Not verified', content: 'phone (typed by a visitor)' });
  });

  it('LiveTex lookup: after a merge on a typed e-mail, facts carry verified:false and typed values are listed', async () => {
    bridge = await start();
    await seedMaria(bridge);
    // A visitor first chats with only a typed phone (their own record)...
    expect(
      (
        await sendJivo(bridge, {
          event_name: 'chat_accepted',
          chat_id: 901,
          visitor: { name: 'Stranger', phone: '+79990001122', number: 901 },
        })
      ).status,
    ).toBe(200);
    // ...then types Maria's e-mail in the same visitor session: the two groups merge via the e-mail.
    expect((await sendJivo(bridge, strangerTypes(MARIA.email, 901))).status).toBe(200);
    const created = await bridge.admin('POST', '/api/v1/channels/app/keys');
    expect(created.status).toBe(201);
    const client = createLivetexLookupClient({
      url: `${bridge.url}/livetex/app/attributes`,
      kid: created.body.kid,
      key: created.body.key,
    });
    const answer = await client.lookup({ personId: MARIA.person });
    expect(answer.found).toBe(true);
    expect(answer.contact?.notVerified).toEqual(expect.arrayContaining(['+79990001122', MARIA.phone]));
    expect(answer.contact?.notVerified).not.toContain(MARIA.email);
    expect(answer.attributes.length).toBeGreaterThan(0);
    for (const attribute of answer.attributes) expect(attribute.verified).toBe(false);
  });

  it('LiveTex lookup without a merge on a typed value: facts carry no mark', async () => {
    bridge = await start();
    await seedMaria(bridge);
    await sendJivo(bridge, { ...strangerTypes(MARIA.email), user_token: MARIA.person });
    const created = await bridge.admin('POST', '/api/v1/channels/app/keys');
    const client = createLivetexLookupClient({
      url: `${bridge.url}/livetex/app/attributes`,
      kid: created.body.kid,
      key: created.body.key,
    });
    const answer = await client.lookup({ personId: MARIA.person });
    expect(answer.found).toBe(true);
    expect(answer.attributes.length).toBeGreaterThan(0);
    for (const attribute of answer.attributes) expect(attribute.verified).toBeUndefined();
    expect(answer.contact?.notVerified).toEqual([MARIA.phone]);
  });
});
