import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Contact, TimelineEntry } from '../../src/contacts/types.js';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { startTestBridge, type TestBridge } from '../../test/support/harness.js';
import { jivochatAdapter } from './index.js';
import { knownEvents } from './schemas.js';

/**
 * From the HTTP request Jivo would send, through the real bridge (127.0.0.1, real Koa app,
 * contact engine, store), to the stored contact, its timeline and the answer body.
 */

const TOKEN = 'jivo-test-token-0123456789';
const HOOK = `/webhooks/jivochat/shop-site/${TOKEN}`;

/** Stands in for the LiveTex adapter: only its channel needs to exist for the cross-channel facts. */
const otherVendor: AdapterDefinition = {
  vendor: 'livetex',
  displayName: 'LiveTex',
  channelSettings: z.object({}),
  intake: [],
  create: () => ({ state: {} }),
};

function channels(reply: Record<string, unknown> = {}) {
  return [
    {
      id: 'shop-site',
      name: 'website',
      vendor: 'jivochat',
      token: TOKEN,
      personIdFrom: 'user_token',
      reply: {
        crmLink: 'http://localhost:3000/contacts/{contactId}',
        enableAssign: false,
        deadlineMs: 2000,
        ...reply,
      },
    },
    { id: 'app', name: 'app', vendor: 'livetex', token: 'livetex-test-token-012345' },
  ];
}

function fixture(name: string): string {
  return readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8');
}

async function start(options: { store?: 'memory' | 'redis'; reply?: Record<string, unknown> } = {}) {
  return startTestBridge({
    store: options.store ?? 'memory',
    adapters: [jivochatAdapter, otherVendor],
    config: { channels: channels(options.reply) },
  });
}

async function send(bridge: TestBridge, body: string | object) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return bridge.post(HOOK, text, { 'content-type': 'application/json' });
}

async function contactBy(bridge: TestBridge, query: string): Promise<Contact> {
  const found = await bridge.admin('GET', `/api/v1/contacts?${query}`);
  expect(found.status).toBe(200);
  expect(found.body.contacts).toHaveLength(1);
  return found.body.contacts[0] as Contact;
}

async function timelineOf(bridge: TestBridge, contactId: string): Promise<TimelineEntry[]> {
  const page = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?limit=200`);
  expect(page.status).toBe(200);
  return page.body.entries as TimelineEntry[];
}

const countBy = (entries: TimelineEntry[]) =>
  entries.reduce<Record<string, number>>((counts, entry) => {
    counts[entry.type] = (counts[entry.type] ?? 0) + 1;
    return counts;
  }, {});

describe.each(['memory', 'redis'] as const)('jivochat webhook over HTTP (%s store)', (store) => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await start({ store });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('accepts every event of one client and shows them in one timeline through the admin API', async () => {
    const sequence = [
      'call_event.start.json',
      'call_event.end.json',
      'call_event.error.json',
      'chat_accepted.json',
      'chat_assigned.json',
      'chat_finished.json',
      'client_updated.json',
      'client_attribute_updated.json',
    ];
    for (const name of sequence) {
      const response = await send(bridge, fixture(name));
      expect(response.status, name).toBe(200);
      expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(response.body.result, name).toBe('ok');
    }

    // The e-mail was sent as S.Orlova@Example.org and the phone as "8 (905) 777-01-23": one contact.
    const contact = await contactBy(bridge, 'email=s.orlova%40example.org');
    expect(contact.emails).toEqual(['s.orlova@example.org']);
    expect(contact.phones).toEqual(['+79057770123']);
    expect(contact.identities).toEqual(
      expect.arrayContaining([
        { kind: 'person', value: 'cust_7d41e9b2c0', provenance: 'verified' },
        { kind: 'visitor', value: '31507', channelId: 'shop-site' },
        { kind: 'client', value: '31507', channelId: 'shop-site' },
      ]),
    );
    expect(contact.responsibleAgent).toMatchObject({ email: 'dmitry@store.example', name: 'Dmitry Volkov' });
    expect(contact.crmLink).toBe('https://crm.store.example/clients/7731');
    expect(contact.attributes).toMatchObject({
      description: { value: 'Prefers calls after 18:00' },
      status: { value: 'contact_later' },
      'client.orders_total': { value: 17, type: 'number' },
    });

    const entries = await timelineOf(bridge, contact.id);
    expect(countBy(entries)).toMatchObject({
      'call.updated': 3,
      'conversation.started': 1,
      'conversation.assigned': 1,
      'conversation.finished': 1,
      'conversation.rated': 1,
      'contact.updated': 1,
      'attributes.updated': 1,
    });
    expect(entries.every((entry) => entry.channelId === 'shop-site' && entry.vendor === 'jivochat')).toBe(
      true,
    );
    const finished = entries.find((entry) => entry.type === 'conversation.finished')!;
    expect(finished.data.messages).toHaveLength(3);
    expect((finished.data.messages as { at: string; author: { type: string } }[])[1]).toMatchObject({
      at: '2024-06-17T07:40:45.000Z',
      author: { type: 'agent', name: 'Dmitry Volkov' },
    });
    const ended = entries.find((entry) => entry.type === 'call.updated' && entry.summary.includes(': end'))!;
    expect(ended.data.call).toMatchObject({ recordUrl: 'https://records.store.example/calls/90311.mp3' });
  });

  it('records chat_updated and offline_message (Cyrillic, emoji, 13-digit id) on their own contacts', async () => {
    const updated = await send(bridge, fixture('chat_updated.json'));
    expect(updated.status).toBe(200);
    // The rich answer echoes what the contact now knows.
    expect(updated.body.contact_info).toEqual({
      name: 'Григорий Соколов 🚀',
      email: 'grisha.sokolov@example.net',
      phone: '+79135554433',
      description: 'Хочет оптовую скидку',
    });
    const grisha = await contactBy(bridge, 'email=grisha.sokolov%40example.net');
    expect(countBy(await timelineOf(bridge, grisha.id))).toEqual({ 'conversation.updated': 1 });

    expect((await send(bridge, fixture('offline_message.json'))).body).toEqual({ result: 'ok' });
    const pavel = await contactBy(bridge, 'phone=%2B79260001122');
    const [offline] = await timelineOf(bridge, pavel.id);
    expect(offline).toMatchObject({
      type: 'offline_message.received',
      data: {
        offlineMessageId: '1718620800456',
        task: true,
        message: 'Перезвоните, пожалуйста, по оптовому заказу 📦',
      },
    });
    expect((await send(bridge, fixture('offline_message.string-id.json'))).status).toBe(200);
  });

  it('is idempotent: three deliveries give one set of entries and the same answer; each call status once', async () => {
    const accepted = JSON.parse(fixture('chat_accepted.json'));
    accepted.chat_id = 70001;
    accepted.user_token = 'cust_idem_1';
    accepted.visitor = {
      ...accepted.visitor,
      email: 'idem@example.org',
      phone: '+79990000001',
      number: '70001',
    };
    const finished = { ...JSON.parse(fixture('chat_finished.json')), chat_id: 70001 };
    finished.visitor = {
      ...finished.visitor,
      email: 'idem@example.org',
      phone: '+79990000001',
      number: '70001',
    };
    const call = (status: string) => ({
      ...JSON.parse(fixture('call_event.start.json')),
      chat_id: 70001,
      visitor: { number: '70001' },
      call: { type: 'incoming', phone: '+79990000001', status },
    });

    const answers = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      answers.push((await send(bridge, accepted)).body);
      expect((await send(bridge, finished)).status).toBe(200);
    }
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
    for (const status of [
      'start',
      'start',
      'agent_connected',
      'client_connected',
      'agent_connected',
      'end',
      'end',
      'end',
    ]) {
      expect((await send(bridge, call(status))).status).toBe(200);
    }

    const contact = await contactBy(bridge, 'email=idem%40example.org');
    const entries = await timelineOf(bridge, contact.id);
    expect(countBy(entries)).toEqual({
      'conversation.started': 1,
      'conversation.finished': 1,
      'conversation.rated': 1,
      'call.updated': 4,
    });
    const jivo = contact.channels.find((channel) => channel.channelId === 'shop-site')!;
    expect(jivo.conversations).toBe(1);
  });

  it('answers each visitor with their own contact when chat_accepted carries no chat_id', async () => {
    const first = JSON.parse(fixture('chat_accepted.json'));
    delete first.chat_id;
    first.user_token = 'cust_nochat_a';
    first.visitor = {
      ...first.visitor,
      email: 'nochat.a@example.org',
      phone: '+79990000101',
      number: '70101',
    };
    // Another visitor, the same agent, no chat_id either.
    const second = {
      ...first,
      user_token: 'cust_nochat_b',
      visitor: { name: 'Boris Nochat', email: 'nochat.b@example.org', number: '70102' },
    };
    expect((await send(bridge, first)).body.contact_info.email).toBe('nochat.a@example.org');
    const answer = await send(bridge, second);
    expect(answer.status).toBe(200);
    expect(answer.body.contact_info).toEqual({ name: 'Boris Nochat', email: 'nochat.b@example.org' });
    const contact = await contactBy(bridge, 'email=nochat.b%40example.org');
    expect(countBy(await timelineOf(bridge, contact.id))).toEqual({ 'conversation.started': 1 });
  });

  it('reads the docs’ invalid-JSON client_attribute_updated as an object', async () => {
    const response = await send(bridge, fixture('client_attribute_updated.docs-invalid.txt'));
    expect(response.status).toBe(200);
    const found = await bridge.admin('GET', '/api/v1/contacts?identity=client:shop-site:31507');
    expect(found.body.contacts[0].attributes['client.orders_total']).toMatchObject({ value: 18 });
  });
});

describe('jivochat webhook: refusals, unknown events, random input', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await start();
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('answers an unknown event {"result":"ok"} and journals it as unhandled', async () => {
    const response = await send(bridge, fixture('unknown_event.json'));
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ result: 'ok' });
    const journal = await bridge.admin('GET', '/api/v1/journal?kind=unhandled&channel=shop-site');
    expect(journal.body.entries[0]).toMatchObject({
      vendor: 'jivochat',
      kind: 'unhandled',
      reason: 'unknown event_name "chat_transferred"',
    });
    expect(JSON.parse(journal.body.entries[0].body)).toEqual(JSON.parse(fixture('unknown_event.json')));
  });

  it('answers a known event that names nobody ok, and journals it', async () => {
    const response = await send(bridge, {
      event_name: 'call_event',
      chat_id: 1,
      user_token: 'null',
      call: { status: 'start' },
    });
    expect(response.body).toEqual({ result: 'ok' });
    const journal = await bridge.admin('GET', '/api/v1/journal?kind=unhandled&channel=shop-site');
    expect(journal.body.entries[0].reason).toContain('no usable identifier');
  });

  it('refuses a body that is not a JSON object with an event_name: 400 JSON error, payload journalled', async () => {
    for (const body of ['this is not json', '[{"event_name":"chat_accepted"}]', '{"chat_id": 5}', '7']) {
      const response = await send(bridge, body);
      expect(response.status, body).toBe(400);
      expect(response.body.error.code, body).toMatch(/^invalid_/);
    }
    const journal = await bridge.admin('GET', '/api/v1/journal?kind=rejected&channel=shop-site');
    expect(journal.body.entries.map((entry: { body: string }) => entry.body)).toContain('this is not json');
  });

  it('never answers 5xx, whatever JSON arrives (property test)', async () => {
    const envelopeKeys = [
      'widget_id',
      'user_token',
      'chat_id',
      'visitor',
      'organization',
      'status',
      'assigned_agent',
      'tags',
      'topic',
      'department',
      'session',
      'page',
      'analytics',
      'agent',
      'agents',
      'call',
      'chat',
      'message',
      'offline_message_id',
      'client_id',
      'attributes',
      'assign_to',
      'plain_messages',
    ];
    const anyValue = fc.jsonValue({ maxDepth: 3 });
    const visitor = fc.record(
      {
        name: fc.oneof(fc.string(), anyValue),
        email: fc.oneof(fc.emailAddress(), anyValue),
        phone: fc.oneof(fc.string(), anyValue),
        number: fc.oneof(fc.integer(), fc.string(), anyValue),
      },
      { requiredKeys: [] },
    );
    const payload = fc.record({
      event_name: fc.oneof(fc.constantFrom(...knownEvents), fc.string()),
      fields: fc.dictionary(fc.constantFrom(...envelopeKeys), anyValue),
      visitor,
      messages: fc.array(
        fc.record({
          message: anyValue,
          timestamp: fc.oneof(fc.integer(), fc.double(), anyValue),
          type: fc.constantFrom('agent', 'visitor', 'bot'),
          agent_id: anyValue,
        }),
        { maxLength: 3 },
      ),
    });
    const body = fc.oneof(
      { weight: 1, arbitrary: fc.jsonValue().map((value) => JSON.stringify(value)) },
      { weight: 1, arbitrary: fc.string() },
      {
        weight: 6,
        arbitrary: payload.map(({ event_name, fields, visitor: v, messages }) =>
          JSON.stringify({ event_name, visitor: v, chat: { messages }, ...fields }),
        ),
      },
    );
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const response = await send(bridge, text);
        expect(response.status).toBeLessThan(500);
        if (response.status === 200) expect(response.body.result).toBe('ok');
      }),
      { numRuns: 250 },
    );
  });
});

describe('jivochat rich answer across channels and under a deadline', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });

  async function seenInApp(test: TestBridge, identifiers: { kind: string; value: string }[]) {
    return test.bridge.context.contacts.observe({
      channelId: 'app',
      vendor: 'livetex',
      at: '2024-06-10T09:00:00.000Z',
      idempotencyKey: `livetex:app:dialog-1:${identifiers[0]!.value}`,
      identifiers,
      names: ['Svetlana O.'],
      labels: ['loyal'],
      timeline: [
        {
          key: 'finished',
          at: '2024-06-10T09:00:00.000Z',
          type: 'conversation.finished',
          summary: 'Dialog closed',
          data: {},
        },
      ],
    });
  }

  it.each([
    ['person id', { kind: 'person', value: 'cust_7d41e9b2c0' }],
    ['e-mail', { kind: 'email', value: 's.orlova@example.org' }],
    ['phone', { kind: 'phone', value: '+7 905 777 01 23' }],
  ])(
    'recognises a person first seen in another channel by %s and answers with the cross-channel facts',
    async (_label, identifier) => {
      bridge = await start();
      const first = await seenInApp(bridge, [identifier]);

      const response = await send(bridge, fixture('chat_accepted.json'));
      expect(response.status).toBe(200);
      expect(response.body).toEqual({
        result: 'ok',
        contact_info: { name: 'Svetlana Orlova', email: 's.orlova@example.org', phone: '+79057770123' },
        custom_data: expect.arrayContaining([
          { title: 'LiveTex app', content: '1 conversation, last 10 Jun' },
          { title: 'Labels', content: 'loyal' },
          { title: 'Responsible', content: 'Dmitry Volkov' },
        ]),
        // The oldest contact survives the merge: the link points at the one the app created.
        crm_link: `http://localhost:3000/contacts/${first.contact.id}`,
        enable_assign: false,
      });
      // The e-mail and phone in contact_info were typed by a visitor: said first (issue 10 item 5).
      expect(response.body.custom_data[0]).toEqual({
        title: 'Not verified',
        content: 'e-mail, phone (typed by a visitor)',
      });
      // Then most useful first: what the other channel knows leads. The chat names the contact
      // by the site's user_token (verified), so the facts carry no mark.
      expect(response.body.custom_data[1]).toEqual({
        title: 'LiveTex app',
        content: '1 conversation, last 10 Jun',
      });
      expect(response.body.custom_data.length).toBeLessThanOrEqual(10);
      const contact = await contactBy(bridge, 'email=s.orlova%40example.org');
      expect(contact.id).toBe(first.contact.id);
      expect(contact.channels.map((channel) => channel.channelId).sort()).toEqual(['app', 'shop-site']);
    },
  );

  it('fills contact_info from the unified contact when the visitor typed nothing', async () => {
    bridge = await start();
    await seenInApp(bridge, [
      { kind: 'email', value: 'quiet@example.org' },
      { kind: 'phone', value: '+79031112233' },
    ]);
    // Jivo's client card links visitor 31600 to that e-mail...
    expect(
      (
        await send(bridge, {
          event_name: 'client_updated',
          client_id: 31600,
          visitor: { number: 31600, email: 'quiet@example.org' },
        })
      ).status,
    ).toBe(200);
    // ...so the anonymous chat of visitor 31600 gets the name, e-mail and phone the agent has not been told.
    const response = await send(bridge, fixture('chat_accepted.anonymous.json'));
    expect(response.body.contact_info).toEqual({
      name: 'Svetlana O.',
      email: 'quiet@example.org',
      phone: '+79031112233',
    });
  });

  it('answers within deadlineMs although an attribute source never answers; a fast source still counts', async () => {
    bridge = await start({ reply: { deadlineMs: 400 } });
    bridge.bridge.context.facts.addSource({ id: 'stuck-crm', lookup: () => new Promise(() => {}) });
    bridge.bridge.context.facts.addSource({
      id: 'fast-crm',
      lookup: async () => ({
        facts: [{ key: 'orders', label: 'Orders', value: '3 orders, last on 2024-05-30', type: 'string' }],
        crmLink: 'https://crm.store.example/clients/7731',
      }),
    });
    // Warm the client and the server path first: the first fetch of a process spends tens of
    // milliseconds setting itself up, which is the test's cost, not the bridge's.
    expect((await send(bridge, fixture('chat_finished.json'))).status).toBe(200);
    for (const [body, title] of [
      [fixture('chat_accepted.json'), 'Orders'],
      // chat_updated carries no user_token: the chat names the contact only by what the visitor
      // typed and its visitor number, so the CRM's facts are marked (issue 10 item 5).
      [fixture('chat_updated.json'), 'Orders (not verified)'],
    ] as const) {
      // The outcome, not a stopwatch (a loaded machine stretches any duration): without the
      // deadline this request would never be answered, as the stuck source never answers.
      const response = await send(bridge, body);
      expect(response.status).toBe(200);
      expect(response.body.custom_data).toContainEqual({
        title,
        content: '3 orders, last on 2024-05-30',
      });
      // The attribute source's link wins over the channel's template.
      expect(response.body.crm_link).toBe('https://crm.store.example/clients/7731');
    }
  });

  it('sends enable_assign and leaves out a crm_link whose placeholder has no value', async () => {
    bridge = await start({ reply: { enableAssign: true, crmLink: 'https://crm.example/c/{crmId}' } });
    const response = await send(bridge, fixture('chat_accepted.json'));
    expect(response.body.enable_assign).toBe(true);
    expect(response.body).not.toHaveProperty('crm_link');
  });
});

describe('jivochat chat_assigned echoing the bridge’s own agent link', () => {
  let bridge: TestBridge | undefined;
  afterAll(async () => {
    await bridge?.close();
  });

  it('does not take a {consoleUrl} crm_link Jivo sends back as assign_to for the contact’s CRM link', async () => {
    bridge = await startTestBridge({
      store: 'memory',
      adapters: [jivochatAdapter, otherVendor],
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: 'https://bridge.example' },
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        channels: channels({ crmLink: '{consoleUrl}', enableAssign: true }),
      },
    });
    // A CRM destination linked the contact to its record (DESIGN §10).
    await bridge.bridge.context.contacts.observe({
      channelId: 'app',
      vendor: 'livetex',
      at: '2024-06-10T09:00:00.000Z',
      idempotencyKey: 'livetex:app:dialog-crm-link',
      identifiers: [{ kind: 'person', value: 'cust_7d41e9b2c0' }],
      crmLink: 'https://crm.store.example/clients/7731',
    });
    const accepted = await send(bridge, fixture('chat_accepted.json'));
    expect(accepted.body.crm_link).toMatch(/^https:\/\/bridge\.example\/console\/c\//);

    // The agent pressed Jivo's "link to CRM card" button: assign_to is the crm_link we answered.
    const assigned = JSON.parse(fixture('chat_assigned.json'));
    assigned.assign_to = accepted.body.crm_link;
    expect((await send(bridge, assigned)).status).toBe(200);

    const contact = await contactBy(bridge, 'email=s.orlova%40example.org');
    // The signed console link expires (console.linkTtl); the CRM record's page stays the link.
    expect(contact.crmLink).toBe('https://crm.store.example/clients/7731');
    const entries = await timelineOf(bridge, contact.id);
    const assignedEntries = entries.filter((entry) => entry.type === 'conversation.assigned');
    expect(assignedEntries).toHaveLength(1);
    // The bearer link stays in the raw payload only; it is not handed on as data.
    expect(assignedEntries[0]!.data.assignTo).toBeUndefined();
  });
});
