import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact, TimelineEntry } from '../../src/contacts/types.js';
import { startTestBridge, type TestBridge } from '../../test/support/harness.js';
import { createLivetexLookupClient } from './client.js';
import { createDialogMemory } from './webhook.js';

/**
 * The dialog webhook over real HTTP, and what it does to the contact model: closed / assigned /
 * rated, dedupe, a rating after the close, and the web + mobile merge (DESIGN §6, §7).
 */

const PERSON = 'p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10';
const fixture = (name: string) => readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8');
const tokenOf = (channelId: string) => `${channelId}-webhook-token-0123456789`;
const livetexChannel = (id: string, name: string) => ({ id, name, vendor: 'livetex', token: tokenOf(id) });

async function deliver(bridge: TestBridge, channelId: string, body: string) {
  return bridge.post(`/webhooks/livetex/${channelId}/${tokenOf(channelId)}`, body, {
    'content-type': 'application/json',
  });
}

async function contactOf(bridge: TestBridge, identity: string): Promise<Contact> {
  const found = await bridge.admin<{ contacts: Contact[] }>(
    'GET',
    `/api/v1/contacts?identity=${encodeURIComponent(identity)}`,
  );
  expect(found.status).toBe(200);
  expect(found.body.contacts).toHaveLength(1);
  return found.body.contacts[0]!;
}

async function timelineOf(bridge: TestBridge, contactId: string): Promise<TimelineEntry[]> {
  const page = await bridge.admin<{ entries: TimelineEntry[] }>(
    'GET',
    `/api/v1/contacts/${contactId}/timeline?limit=200`,
  );
  expect(page.status).toBe(200);
  return page.body.entries;
}

describe('livetex dialog webhook', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        agents: [{ email: 'oleg@shop.example', name: 'Oleg Petrov' }],
        channels: [livetexChannel('web', 'website'), livetexChannel('mobile', 'app')],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('records a closed dialog with transcript, operators and raw payload; a repeat changes nothing', async () => {
    const first = await deliver(bridge, 'web', fixture('dialog_closed.web.json'));
    expect(first).toMatchObject({ status: 200, body: { ok: true } });
    const again = await deliver(bridge, 'web', fixture('dialog_closed.web.json'));
    expect(again).toMatchObject({ status: 200, body: { ok: true } });

    const contact = await contactOf(bridge, `person:${PERSON}`);
    expect(contact).toMatchObject({
      name: 'Anna Smirnova',
      emails: ['anna.smirnova@mail.example'],
      phones: ['+79123456789'],
      responsibleAgent: { name: 'Oleg Petrov', email: 'oleg@shop.example' },
    });
    expect(contact.identities).toEqual(
      expect.arrayContaining([
        { kind: 'person', value: PERSON, provenance: 'verified' },
        { kind: 'visitor', value: 'vt-a81e5c0f', channelId: 'web' },
      ]),
    );
    const timeline = await timelineOf(bridge, contact.id);
    const finished = timeline.filter((entry) => entry.type === 'conversation.finished');
    expect(finished).toHaveLength(1);
    expect(finished[0]).toMatchObject({
      channelId: 'web',
      vendor: 'livetex',
      at: '2025-03-14T09:31:40.000Z',
      data: {
        conversationId: '884213-2',
        topic: 'Delivery of order 5521',
        agents: [{ name: 'Oleg Petrov', email: 'oleg@shop.example' }],
        messages: [
          {
            at: '2025-03-14T09:12:05.000Z',
            author: { type: 'visitor' },
            text: 'Hello, where is my order 5521?',
          },
          { author: { type: 'agent', name: 'Oleg Petrov' } },
        ],
        raw: JSON.parse(fixture('dialog_closed.web.json')),
      },
    });
    // The rating inside the close is recorded once, as its own entry on the same dialog.
    const rated = timeline.filter((entry) => entry.type === 'conversation.rated');
    expect(rated).toHaveLength(1);
    expect(rated[0]?.data).toMatchObject({
      conversationId: '884213-2',
      rating: { scale: 'fivePoint', value: 4 },
    });
  });

  it('a rating delivered alone after the close attaches to the same contact and dialog', async () => {
    const closed = JSON.parse(fixture('dialog_closed.mobile.json')) as Record<string, unknown>;
    closed.conversation = { ...(closed.conversation as object), conversationId: 'c-rated-later' };
    expect((await deliver(bridge, 'mobile', JSON.stringify(closed))).status).toBe(200);
    const rating = {
      event: 'dialog_rated',
      conversation: { conversationId: 'c-rated-later' },
      rate: { type: 'fivePoint', value: '2' },
    };
    expect(await deliver(bridge, 'mobile', JSON.stringify(rating))).toMatchObject({
      status: 200,
      body: { ok: true },
    });
    // The same rating again: deduped.
    expect((await deliver(bridge, 'mobile', JSON.stringify(rating))).status).toBe(200);

    const contact = await contactOf(bridge, `person:${PERSON}`);
    const timeline = await timelineOf(bridge, contact.id);
    const ratedLater = timeline.filter(
      (entry) => entry.type === 'conversation.rated' && entry.data.conversationId === 'c-rated-later',
    );
    expect(ratedLater).toHaveLength(1);
    expect(ratedLater[0]).toMatchObject({
      channelId: 'mobile',
      data: { rating: { scale: 'fivePoint', value: 2 } },
    });
    expect(
      timeline.some(
        (entry) => entry.type === 'conversation.finished' && entry.data.conversationId === 'c-rated-later',
      ),
    ).toBe(true);
  });

  it('records an assignment, and keeps a lone rating of an unknown dialog on a dialog-scoped contact', async () => {
    expect((await deliver(bridge, 'web', fixture('dialog_assigned.json'))).status).toBe(200);
    const contact = await contactOf(bridge, `person:${PERSON}`);
    const timeline = await timelineOf(bridge, contact.id);
    expect(timeline.find((entry) => entry.type === 'conversation.assigned')).toMatchObject({
      channelId: 'web',
      summary: 'Dialog 884213-2 assigned to Oleg Petrov',
    });

    const orphan = {
      event: 'rated',
      conversation: { id: 'never-seen' },
      rate: { type: 'doublePoint', value: '0' },
    };
    expect((await deliver(bridge, 'web', JSON.stringify(orphan))).status).toBe(200);
    const anonymous = await contactOf(bridge, 'dialog:web:never-seen');
    expect((await timelineOf(bridge, anonymous.id))[0]).toMatchObject({ type: 'conversation.rated' });
  });

  it('a client known only by phones (two in one field, or one with an extension) is kept with them', async () => {
    // "a, b" was no phone at all, so the dialog made no contact; a number with an extension is
    // search-only (colleagues share the switchboard) and merges nothing, so the dialog's own
    // id keeps such a client's events together.
    const closed = (id: number, phone: string) =>
      JSON.stringify({
        Conversation: {
          id,
          dialogNumber: 1,
          createdAt: '2025-03-14T09:12:05Z',
          closedAt: '2025-03-14T09:31:40Z',
        },
        discourser: { name: 'Office visitor', contacts: [{ type: 'phone', value: phone }] },
      });
    expect((await deliver(bridge, 'web', closed(990001, '+7 916 123-45-67, +7 926 765-43-21'))).status).toBe(
      200,
    );
    const both = await bridge.admin<{ contacts: Contact[] }>('GET', '/api/v1/contacts?phone=%2B79267654321');
    expect(both.body.contacts.map((contact) => contact.phones.sort())).toEqual([
      ['+79161234567', '+79267654321'],
    ]);
    for (const id of [990002, 990003]) {
      const sent = await deliver(bridge, 'web', closed(id, `+7 495 123-45-67 доб. ${id - 989900}`));
      expect(sent).toMatchObject({ status: 200, body: { ok: true } });
    }
    const at102 = await bridge.admin<{ contacts: Contact[] }>(
      'GET',
      `/api/v1/contacts?phone=${encodeURIComponent('+7 495 123-45-67 доб. 102')}`,
    );
    expect(at102.body.contacts).toHaveLength(1);
    expect(at102.body.contacts[0]!.phones).toEqual(['+74951234567']);
    expect(at102.body.contacts[0]!.names).toEqual(['Office visitor']);
  });

  it('web personId and mobile customVisitorToken with the same value are one contact with one timeline', async () => {
    expect((await deliver(bridge, 'mobile', fixture('dialog_closed.mobile.json'))).status).toBe(200);
    const contact = await contactOf(bridge, `person:${PERSON}`);
    expect(contact.channels.map((channel) => channel.channelId).sort()).toEqual(['mobile', 'web']);
    expect(contact.identities).toEqual(
      expect.arrayContaining([
        { kind: 'visitor', value: 'vt-a81e5c0f', channelId: 'web' },
        { kind: 'visitor', value: 'vt-mobile-0c44', channelId: 'mobile' },
      ]),
    );
    const finished = (await timelineOf(bridge, contact.id)).filter(
      (entry) => entry.type === 'conversation.finished',
    );
    expect(new Set(finished.map((entry) => entry.channelId))).toEqual(new Set(['web', 'mobile']));

    // The mobile operator's card tells about the website: the shared facts, from the other channel.
    const key = (await bridge.admin('POST', '/api/v1/channels/mobile/keys')).body as {
      kid: string;
      key: string;
    };
    const client = createLivetexLookupClient({
      url: `${bridge.url}/livetex/mobile/attributes`,
      kid: key.kid,
      key: key.key,
    });
    const answer = await client.lookup({ customVisitorToken: PERSON });
    expect(answer.contact?.id).toBe(contact.id);
    expect(answer.attributes.find((attribute) => attribute.key === 'channel.web')).toMatchObject({
      label: 'LiveTex website',
      value: expect.stringContaining('conversation'),
    });
    // What the website's LiveTex reported (discourser.attributes) is news to the app's operator.
    expect(answer.attributes).toContainEqual({
      key: 'attr.tariff',
      label: 'tariff',
      value: 'gold',
      type: 'string',
    });
  });

  it('keeps attributes named __proto__, constructor or toString as ordinary attributes', async () => {
    // JSON text: `__proto__` is an own key of the parsed body, as a vendor's JSON makes it.
    const body =
      '{"Conversation":{"id":"proto-attrs"},"discourser":{"personId":"p-proto-attrs","attributes":' +
      '{"__proto__":"x","constructor":"c","toString":"t","plan":"gold"}}}';
    expect(await deliver(bridge, 'web', body)).toMatchObject({ status: 200, body: { ok: true } });
    const contact = await contactOf(bridge, 'person:p-proto-attrs');
    expect(Object.keys(contact.attributes).sort()).toEqual(['__proto__', 'constructor', 'plan', 'toString']);
    expect(Object.getOwnPropertyDescriptor(contact.attributes, '__proto__')?.value).toMatchObject({
      value: 'x',
      channelId: 'web',
    });
    expect(contact.attributes.constructor).toMatchObject({ value: 'c' });
  });

  it('answers bad JSON with 400 and keeps it as rejected; unknown events are kept as unhandled and answered ok', async () => {
    const bad = await deliver(bridge, 'web', '{"Conversation": ');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_json');

    expect(await deliver(bridge, 'web', fixture('unknown_event.json'))).toMatchObject({
      status: 200,
      body: { ok: true },
    });
    expect(await deliver(bridge, 'web', fixture('not_a_dialog.json'))).toMatchObject({
      status: 200,
      body: { ok: true },
    });

    const journal = await bridge.admin<{ entries: { kind: string; reason: string; body: string }[] }>(
      'GET',
      '/api/v1/journal?channel=web',
    );
    const kinds = journal.body.entries.map((entry) => [entry.kind, entry.reason]);
    expect(kinds).toEqual(
      expect.arrayContaining([
        ['unhandled', 'unknown event "operator_typing"'],
        ['unhandled', expect.stringContaining('neither Conversation')],
        ['rejected', expect.stringContaining('not valid JSON')],
      ]),
    );
    expect(journal.body.entries.find((entry) => entry.reason.includes('operator_typing'))?.body).toBe(
      fixture('unknown_event.json'),
    );
  });

  it('a rating that arrives before its close ends on the same contact once the close names the client', async () => {
    const rating = {
      event: 'rated',
      conversation: { conversationId: 'c-early' },
      rate: { type: 'fivePoint', value: '5' },
    };
    expect((await deliver(bridge, 'mobile', JSON.stringify(rating))).status).toBe(200);
    const closed = JSON.parse(fixture('dialog_closed.mobile.json')) as Record<string, unknown>;
    closed.conversation = { ...(closed.conversation as object), conversationId: 'c-early' };
    expect((await deliver(bridge, 'mobile', JSON.stringify(closed))).status).toBe(200);

    const person = await contactOf(bridge, `person:${PERSON}`);
    expect((await contactOf(bridge, 'dialog:mobile:c-early')).id).toBe(person.id);
    const early = (await timelineOf(bridge, person.id)).filter(
      (entry) => entry.data.conversationId === 'c-early',
    );
    expect(early.map((entry) => entry.type).sort()).toEqual(['conversation.finished', 'conversation.rated']);
  });

  it('records a dialog whose id is long or whose times are past the year 9999, instead of a 400', async () => {
    // The kit reads ids of up to 512 characters; the idempotency key holds at most 512 in all.
    for (const length of [493, 494, 512]) {
      const id = 'd'.repeat(length);
      const body = { Conversation: { id }, discourser: { personId: `p-long-${length}` } };
      const answer = await deliver(bridge, 'web', JSON.stringify(body));
      expect(answer, String(length)).toMatchObject({ status: 200, body: { ok: true } });
      const contact = await contactOf(bridge, `person:p-long-${length}`);
      const entries = await timelineOf(bridge, contact.id);
      expect(entries.map((entry) => entry.type)).toEqual(['conversation.finished']);
      expect(entries[0]!.data.conversationId).toBe(id);
      // A repeat is the same delivery: nothing new.
      expect((await deliver(bridge, 'web', JSON.stringify(body))).status).toBe(200);
      expect(await timelineOf(bridge, contact.id)).toHaveLength(1);
    }
    // A dialog id and its ordinal (512 characters each) name no client: the dialog does.
    const rating = {
      event: 'rated',
      Conversation: { id: 'e'.repeat(512), dialogNumber: 'n'.repeat(512) },
      rate: { type: 'fivePoint', value: '5' },
    };
    expect(await deliver(bridge, 'web', JSON.stringify(rating))).toMatchObject({
      status: 200,
      body: { ok: true },
    });
    const odd = {
      Conversation: { id: 'odd-times', closedAt: '10000-01-01' },
      discourser: { personId: 'p-odd-times' },
      time: '10000-01-01',
    };
    expect(await deliver(bridge, 'web', JSON.stringify(odd))).toMatchObject({
      status: 200,
      body: { ok: true },
    });
    const [entry] = await timelineOf(bridge, (await contactOf(bridge, 'person:p-odd-times')).id);
    // The time is dropped as unreadable: the event is dated by its arrival.
    expect(entry?.at).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(entry?.data.endedAt).toBe(entry?.at);
  });

  it('remembers at most limits.identifiersPerKind values of a kind per dialog, however many events add more', async () => {
    for (let event = 0; event < 4; event++) {
      const answer = await bridge.post(`/webhooks/livetex/web/${tokenOf('web')}`, {
        event: 'dialog_assigned',
        conversation: { dialogId: 'd-many-ids' },
        discourser: {
          personId: 'p-many-ids',
          contacts: Array.from({ length: 300 }, (_, index) => ({
            type: 'email',
            value: `e${event}-${index}@mail.example`,
          })),
        },
      });
      expect(answer).toMatchObject({ status: 200, body: { ok: true } });
    }
    const remembered = await createDialogMemory(bridge.bridge.store, 'web').recall('d-many-ids');
    const count = (kind: string) => remembered.filter((identifier) => identifier.kind === kind).length;
    expect(count('person')).toBe(1);
    expect(count('email')).toBe(20);
    const contact = await contactOf(bridge, 'person:p-many-ids');
    expect(contact.emails).toHaveLength(20);
  });

  it('reads at most 20 operators of one payload, and counts the cut', async () => {
    const answer = await bridge.post(`/webhooks/livetex/web/${tokenOf('web')}`, {
      event: 'dialog_assigned',
      conversation: { dialogId: 'd-many-operators' },
      discourser: { personId: 'p-many-operators' },
      employee: Array.from({ length: 3000 }, (_, index) => ({ id: `${index}`, name: `Operator ${index}` })),
    });
    expect(answer).toMatchObject({ status: 200, body: { ok: true } });
    const metrics = await bridge.bridge.metrics.registry.metrics();
    expect(metrics).toMatch(/chatbridge_truncated_total\{what="agent_count"\} 1/);
  });

  it('404s a wrong token', async () => {
    const response = await bridge.post(
      '/webhooks/livetex/web/wrong-token-0123456789',
      fixture('dialog_closed.web.json'),
    );
    expect(response.status).toBe(404);
  });
});
