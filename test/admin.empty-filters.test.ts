import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * DESIGN §4 writes the admin API's filters as templates with empty values
 * (`GET /api/v1/contacts?email=&phone=&identity=kind:value`,
 * `GET /api/v1/deliveries?state=failed&destination=`), as a form or a script with an unset
 * variable sends them. An empty filter is a filter not given: the request answers as without
 * it, never 400.
 */

const SECRET = `whsec_${Buffer.from('empty-filters-secret-0123456789ab').toString('base64')}`;
const TOKEN = 'echo-channel-token-empty-01';

describe('DESIGN §4: empty query filters of the admin API are filters not given', () => {
  let crm: Receiver;
  let bridge: TestBridge;

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    crm.respond(() => ({ kind: 'ok' }));
    bridge = await startTestBridge({
      adapters: [echoAdapter],
      config: {
        channels: [{ id: 'site', vendor: 'echo', token: TOKEN }],
        destinations: [
          { id: 'crm', url: crm.url, secret: SECRET, events: ['message.received'], retrySchedule: ['0s'] },
        ],
      },
    });
    const posted = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
      event: 'message',
      visitor: 7,
      email: 'maria@example.org',
      person: 'p-42',
      text: 'Hello',
    });
    expect(posted.status).toBe(200);
    // Wait until its one delivery is delivered (lists stay put then), however long a loaded
    // machine takes: the hook's timeout is the guard, not a count of rounds that ran out silently.
    for (;;) {
      const listed = await bridge.admin('GET', '/api/v1/deliveries?state=delivered&destination=crm');
      if (listed.body.deliveries?.length === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  });
  afterAll(async () => {
    await bridge?.close();
    await crm?.close();
  });

  it('GET /api/v1/deliveries?state=delivered&destination= lists as without destination', async () => {
    const plain = await bridge.admin('GET', '/api/v1/deliveries?state=delivered');
    expect(plain.status).toBe(200);
    expect(plain.body.deliveries).toHaveLength(1);
    for (const query of ['state=delivered&destination=', 'destination=&state=delivered']) {
      const answer = await bridge.admin('GET', `/api/v1/deliveries?${query}`);
      expect(answer.status, query).toBe(200);
      expect(answer.body, query).toEqual(plain.body);
    }
    const all = await bridge.admin('GET', '/api/v1/deliveries');
    const emptyBoth = await bridge.admin('GET', '/api/v1/deliveries?state=&destination=');
    expect(emptyBoth.status).toBe(200);
    expect(emptyBoth.body).toEqual(all.body);
  });

  it('GET /api/v1/contacts?email=&phone=&identity=kind:value finds by the one given', async () => {
    const byIdentity = await bridge.admin('GET', '/api/v1/contacts?identity=person:p-42');
    expect(byIdentity.status).toBe(200);
    expect(byIdentity.body.contacts).toHaveLength(1);
    for (const query of [
      'email=&phone=&identity=person:p-42',
      'email=maria@example.org&phone=&identity=',
      'email=&phone=&identity=visitor:site:7',
    ]) {
      const answer = await bridge.admin('GET', `/api/v1/contacts?${query}`);
      expect(answer.status, query).toBe(200);
      expect(
        answer.body.contacts.map((contact: { id: string }) => contact.id),
        query,
      ).toEqual([byIdentity.body.contacts[0].id]);
    }
    // All of them empty is still "give email, phone or identity".
    const none = await bridge.admin('GET', '/api/v1/contacts?email=&phone=&identity=');
    expect(none.status).toBe(400);
    expect(none.body.error.code).toBe('invalid_query');
  });

  it('GET /api/v1/journal?channel=&kind= (as README writes its filters) lists as without them', async () => {
    const plain = await bridge.admin('GET', '/api/v1/journal');
    expect(plain.status).toBe(200);
    const empty = await bridge.admin('GET', '/api/v1/journal?channel=&kind=');
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual(plain.body);
  });

  it('a bad non-empty filter is still refused', async () => {
    const state = await bridge.admin('GET', '/api/v1/deliveries?state=lost');
    expect(state.status).toBe(400);
    expect(state.body.error.issues[0].path).toBe('state');
    const kind = await bridge.admin('GET', '/api/v1/journal?kind=lost');
    expect(kind.status).toBe(400);
    expect(kind.body.error.issues[0].path).toBe('kind');
    const identity = await bridge.admin('GET', '/api/v1/contacts?identity=nokind');
    expect(identity.status).toBe(400);
    expect(identity.body.error.issues[0].path).toBe('identity');
  });
});
