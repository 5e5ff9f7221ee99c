import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { observationSchema } from '../../src/contacts/types.js';
import { parseIntakeRequest } from '../../src/intake/pipeline.js';
import { digest, isRecord } from '../../src/intake/wire.js';
import { hashOf, idempotencyKeyOf, type MapInput, readPath, toObservation } from './mapper.js';
import { isKnownEvent, jivochatSettingsSchema, jivoEnvelopeSchema } from './schemas.js';
import { jivochatWebhook } from './webhook.js';

/** The body as the core's parse step hands it to the adapter. */
function decodePayload(rawBody: Buffer) {
  const request = parseIntakeRequest(jivochatWebhook, rawBody, undefined, RECEIVED);
  if (!isRecord(request.body) || typeof request.body.event_name !== 'string') throw new Error('not an event');
  return {
    payload: request.body as Record<string, unknown> & { event_name: string },
    repaired: request.repaired,
  };
}

const RECEIVED = new Date('2024-06-17T08:00:00.000Z');
const settings = jivochatSettingsSchema.parse({});

function fixtureText(name: string): string {
  return readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8');
}

function input(
  name: string,
  overrides: Partial<MapInput> = {},
  change?: (raw: Record<string, unknown>) => void,
): MapInput {
  const { payload, repaired } = decodePayload(Buffer.from(fixtureText(name)));
  change?.(payload);
  if (!isKnownEvent(payload.event_name)) throw new Error(`fixture ${name} is not a known event`);
  return {
    eventName: payload.event_name,
    envelope: jivoEnvelopeSchema.parse(payload),
    raw: payload,
    channelId: 'shop-site',
    settings,
    receivedAt: RECEIVED,
    repaired,
    ...overrides,
  };
}

function observe(name: string, overrides: Partial<MapInput> = {}) {
  const result = toObservation(input(name, overrides));
  if (result.kind !== 'observation') throw new Error(`no observation: ${result.reason}`);
  // Whatever we build must be what the engine accepts.
  return observationSchema.parse(result.observation);
}

describe('jivochat mapper', () => {
  it('maps chat_accepted: identifiers, names, compact attributes, responsible agent, conversation.started', () => {
    const observation = observe('chat_accepted.json');
    expect(observation.identifiers).toEqual([
      // Provenance (issue 10 item 5): the site's user_token is verified, the form's values are not.
      { kind: 'person', value: 'cust_7d41e9b2c0', provenance: 'verified' },
      { kind: 'email', value: 'S.Orlova@Example.org', provenance: 'visitor' },
      { kind: 'phone', value: '8 (905) 777-01-23', provenance: 'visitor' },
      { kind: 'visitor', value: '31507', channelId: 'shop-site' },
    ]);
    expect(observation.names).toEqual(['Svetlana Orlova']);
    expect(observation.at).toBe(RECEIVED.toISOString());
    expect(observation.attributes).toMatchObject({
      organization: { value: 'Vesna Trading', label: 'Organization' },
      status: { value: 'wholesale', label: 'Client status' },
      tags: { value: 'VIP, Returns', label: 'Tags' },
      department: { value: 'Returns desk', label: 'Department' },
      topic: { value: 'Returns', label: 'Topic' },
      agent: { value: 'Dmitry Volkov', label: 'Agent' },
      utm: { value: 'source=google, medium=organic', label: 'UTM' },
      location: { value: 'Novosibirsk, Novosibirsk Oblast, Russia', label: 'Location' },
      page: { value: 'https://store.example/orders/5521', label: 'Page', type: 'url' },
      chatsCount: { value: 3, type: 'number' },
    });
    // An empty description is no description.
    expect(observation.attributes.description).toBeUndefined();
    expect(observation.responsibleAgent).toEqual({
      id: '55120',
      name: 'Dmitry Volkov',
      email: 'dmitry@store.example',
    });
    expect(observation.timeline).toHaveLength(1);
    const [entry] = observation.timeline;
    expect(entry).toMatchObject({
      type: 'conversation.started',
      summary: 'Chat 90320 accepted by Dmitry Volkov',
      data: { conversationId: '90320', agent: { id: '55120' }, department: 'Returns desk', topic: 'Returns' },
    });
    // Unknown fields survive in the raw payload kept on the entry.
    expect((entry!.data.raw as Record<string, unknown>).crm_hint).toEqual({ future_field: true });
    expect(observation.events).toEqual([expect.objectContaining({ type: 'conversation.started' })]);
  });

  it('tolerates nulls, empty objects, numeric visitor number, string chat id and Cyrillic/emoji names', () => {
    const observation = observe('chat_accepted.anonymous.json');
    // user_token null -> no person id; only the channel-scoped visitor number identifies them.
    expect(observation.identifiers).toEqual([{ kind: 'visitor', value: '31600', channelId: 'shop-site' }]);
    expect(observation.names).toEqual([]);
    expect(observation.responsibleAgent).toBeUndefined();
    expect(observation.attributes.agent).toEqual({ value: 'Алёна Кузнецова 🌷', label: 'Agent' });
    expect(observation.attributes.utm).toBeUndefined();
    expect(observation.attributes.location).toBeUndefined();
    expect(observation.timeline[0]!.summary).toBe('Chat 90330 accepted by Алёна Кузнецова 🌷');
  });

  it('names each place of the location once, in the order city, region, country', () => {
    const location = (geoip: Record<string, unknown>) => {
      const mapped = toObservation(
        input('chat_accepted.json', {}, (raw) => {
          (raw.session as Record<string, unknown>).geoip = geoip;
        }),
      );
      if (mapped.kind !== 'observation') throw new Error('no observation');
      return mapped.observation.attributes?.location?.value;
    };
    expect(location({ city: 'Moscow', region: 'Moscow', country: 'Russia' })).toBe('Moscow, Russia');
    expect(location({ city: 'Singapore', region: ' ', country: 'Singapore ' })).toBe('Singapore');
    expect(location({ city: 'Kazan', region: 'Tatarstan', country: 'Tatarstan' })).toBe('Kazan, Tatarstan');
    expect(location({ region: 'Bavaria', country: 'Bavaria' })).toBe('Bavaria');
    expect(location({ city: 'Monaco', country: 'Monaco', region: 'Monaco' })).toBe('Monaco');
    expect(location({ country: 'Russia' })).toBe('Russia');
    expect(location({})).toBeUndefined();
  });

  it('joins tags, UTM values and places with each one cleaned, so no bidi override reaches the next', () => {
    const RLO = '\u202E';
    const PDF = '\u202C';
    const observation = toObservation(
      input('chat_accepted.json', {}, (raw) => {
        raw.tags = [
          { id: 1, title: `${RLO}PIV` },
          { id: 2, title: 'Returns' },
          { id: 3, title: `\u2067${PDF}` },
        ];
        const session = raw.session as Record<string, unknown>;
        session.utm_json = { source: `google${RLO}`, medium: 'organic\nline' };
        session.geoip = { city: `\u202BNovosibirsk`, country: 'Russia' };
      }),
    );
    if (observation.kind !== 'observation') throw new Error('no observation');
    const attributes = observation.observation.attributes ?? {};
    // A tag with nothing showable left is no tag.
    expect(attributes.tags).toEqual({ value: 'PIV, Returns', label: 'Tags' });
    expect(attributes.utm).toEqual({ value: 'source=google, medium=organic line', label: 'UTM' });
    expect(attributes.location).toEqual({ value: 'Novosibirsk, Russia', label: 'Location' });

    // The `a=b|c=d` fallback is split and cleaned the same way.
    const fallback = toObservation(
      input('chat_accepted.json', {}, (raw) => {
        const session = raw.session as Record<string, unknown>;
        session.utm_json = undefined;
        session.utm = `source=${RLO}google||medium=organic`;
      }),
    );
    if (fallback.kind !== 'observation') throw new Error('no observation');
    expect(fallback.observation.attributes?.utm).toEqual({
      value: 'source=google, medium=organic',
      label: 'UTM',
    });
  });

  it('takes the person id from the field personIdFrom names, including dotted paths and numbers', () => {
    const custom = jivochatSettingsSchema.parse({ personIdFrom: 'visitor.number' });
    const observation = observe('chat_accepted.json', { settings: custom });
    expect(observation.identifiers[0]).toEqual({ kind: 'person', provenance: 'verified', value: '31507' });
    expect(readPath({ a: { b: 12 } }, 'a.b')).toBe('12');
    expect(readPath({ a: { b: '  ' } }, 'a.b')).toBeUndefined();
    expect(readPath({ a: null }, 'a.b')).toBeUndefined();
    expect(readPath({ a: { b: { c: 1 } } }, 'a.b')).toBeUndefined();
  });

  it('maps chat_finished: the whole transcript with ISO times and authors, plus the rating', () => {
    const observation = observe('chat_finished.json');
    const [finished, rated] = observation.timeline;
    expect(finished!.type).toBe('conversation.finished');
    expect(finished!.summary).toBe('Chat 90320 finished: 3 messages with Dmitry Volkov');
    expect(finished!.data.messages).toEqual([
      {
        at: '2024-06-17T07:40:00.000Z',
        author: { type: 'visitor', name: 'Svetlana Orlova' },
        text: 'Добрый день! Хочу вернуть чайник 🫖',
      },
      {
        at: '2024-06-17T07:40:45.000Z',
        // agent_id is a number, agents[].id a string: they still meet.
        author: { type: 'agent', id: '55120', name: 'Dmitry Volkov', email: 'dmitry@store.example' },
        text: 'Здравствуйте! Оформим возврат, пришлите номер заказа.',
      },
      {
        at: '2024-06-17T07:41:30.000Z',
        author: { type: 'visitor', name: 'Svetlana Orlova' },
        text: 'Заказ 5521',
      },
    ]);
    expect(finished!.data).toMatchObject({
      rating: 'positive',
      blacklisted: false,
      invitation: 'Нужна помощь с заказом?',
    });
    expect(rated).toMatchObject({
      type: 'conversation.rated',
      data: { conversationId: '90320', rating: 'positive' },
    });
    expect(observation.events.map((event) => event.type)).toEqual([
      'conversation.finished',
      'conversation.rated',
    ]);
    expect(observation.attributes.agent).toEqual({ value: 'Dmitry Volkov', label: 'Agent' });
  });

  it('maps offline_message as a task, keeping the 13-digit id as a string', () => {
    const observation = observe('offline_message.json');
    expect(observation.timeline[0]).toMatchObject({
      type: 'offline_message.received',
      summary: 'Offline message: Перезвоните, пожалуйста, по оптовому заказу 📦',
      data: {
        offlineMessageId: '1718620800456',
        task: true,
        message: 'Перезвоните, пожалуйста, по оптовому заказу 📦',
      },
    });
    expect(observation.events[0]).toMatchObject({ type: 'offline_message.received', data: { task: true } });
    // The default channel has no widgetId: the payload's widget ends the key.
    expect(observation.idempotencyKey).toBe('jivochat:shop-site:offline_message:1718620800456:Qw7eR9tY2u');
    expect(observe('offline_message.string-id.json').idempotencyKey).toBe(
      'jivochat:shop-site:offline_message:2931:Qw7eR9tY2u',
    );
  });

  it('maps each call status to call.updated, with record_url when present, and the call phone as an identifier', () => {
    const start = observe('call_event.start.json');
    const end = observe('call_event.end.json');
    const error = observe('call_event.error.json');
    expect(start.timeline[0]).toMatchObject({
      type: 'call.updated',
      summary: 'Call (callback +79057770123): start',
      data: { conversationId: '90311', call: { type: 'callback', status: 'start' } },
    });
    expect(end.timeline[0]!.data.call).toEqual({
      type: 'callback',
      phone: '+79057770123',
      status: 'end',
      recordUrl: 'https://records.store.example/calls/90311.mp3',
    });
    expect(error.timeline[0]!.summary).toBe('Call (outgoing +79057770123): error (busy)');
    expect(new Set([start.idempotencyKey, end.idempotencyKey, error.idempotencyKey]).size).toBe(3);
    expect(start.events[0]!.type).toBe('call.updated');
  });

  it('maps chat_assigned to conversation.assigned and the CRM link', () => {
    const observation = observe('chat_assigned.json');
    expect(observation.timeline[0]).toMatchObject({
      type: 'conversation.assigned',
      data: { assignTo: 'https://crm.store.example/clients/7731' },
    });
    expect(observation.crmLink).toBe('https://crm.store.example/clients/7731');
    expect(observation.events[0]).toMatchObject({
      type: 'conversation.assigned',
      data: { crmLink: 'https://crm.store.example/clients/7731' },
    });
  });

  it('maps client_updated (numeric visitor number, client id) to contact.updated', () => {
    const observation = observe('client_updated.json');
    expect(observation.identifiers).toEqual(
      expect.arrayContaining([
        { kind: 'visitor', value: '31507', channelId: 'shop-site' },
        { kind: 'client', value: '31507', channelId: 'shop-site' },
      ]),
    );
    expect(observation.attributes.description).toEqual({
      value: 'Prefers calls after 18:00',
      label: 'Description',
    });
    expect(observation.timeline[0]).toMatchObject({
      type: 'contact.updated',
      data: { clientId: '31507', status: 'contact_later' },
    });
    // The engine emits contact.updated itself when something changed.
    expect(observation.events).toEqual([]);
  });

  it('maps client_attribute_updated, numeric client id included, and reads the docs’ invalid sample as an object', () => {
    const observation = observe('client_attribute_updated.json');
    expect(observation.identifiers).toEqual([{ kind: 'client', value: '31507', channelId: 'shop-site' }]);
    expect(observation.attributes).toEqual({
      'client.company_site': { value: 'https://vesna.example', label: 'company_site', type: 'url' },
      'client.orders_total': { value: 17, label: 'orders_total', type: 'number' },
      'client.segment': { value: 'опт', label: 'segment' },
    });
    expect(observation.timeline[0]).toMatchObject({
      type: 'attributes.updated',
      summary: 'Client attributes updated: company_site, orders_total, segment',
    });
    const repaired = observe('client_attribute_updated.docs-invalid.txt');
    expect(repaired.attributes['client.orders_total']).toEqual({
      value: 18,
      label: 'orders_total',
      type: 'number',
    });
    expect(repaired.timeline[0]!.data.raw).toMatchObject({ _repairedFromInvalidJson: true });
  });

  it('accepts attributes as an array of pairs too', () => {
    const envelope = jivoEnvelopeSchema.parse({
      event_name: 'client_attribute_updated',
      attributes: [
        { key: 'age', value: 42 },
        { city: 'Омск' },
        { name: 'vip', value: true },
        'junk',
        { key: 'x', value: {} },
      ],
    });
    expect(envelope.attributes).toEqual({ age: 42, city: 'Омск', vip: true });
  });

  it('reports an event that names nobody instead of inventing a contact', () => {
    const raw = { event_name: 'call_event', chat_id: 5, user_token: null, call: { status: 'start' } };
    const result = toObservation({
      eventName: 'call_event',
      envelope: jivoEnvelopeSchema.parse(raw),
      raw,
      channelId: 'shop-site',
      settings,
      receivedAt: RECEIVED,
    });
    expect(result).toEqual({ kind: 'unattached', reason: expect.stringContaining('call_event') });
  });
});

describe('jivochat idempotency keys', () => {
  // The key shapes below are those of a channel with `widgetId` (the fixtures' widget): without
  // it the widget is part of every key (the last test of this block).
  const pinned = jivochatSettingsSchema.parse({ widgetId: 'Qw7eR9tY2u' });
  const keyed = (...[name, overrides, change]: Parameters<typeof input>) =>
    input(name, { settings: pinned, ...overrides }, change);
  it('is stable for the same payload and changes with what distinguishes deliveries', () => {
    const first = keyed('chat_updated.json');
    expect(idempotencyKeyOf(first)).toBe(idempotencyKeyOf(keyed('chat_updated.json')));
    // A different receipt time does not matter.
    expect(idempotencyKeyOf(first)).toBe(
      idempotencyKeyOf(keyed('chat_updated.json', { receivedAt: new Date() })),
    );
    const changed = keyed('chat_updated.json');
    changed.envelope = {
      ...changed.envelope,
      visitor: { ...changed.envelope.visitor, phone: '+79135554434' },
    };
    expect(idempotencyKeyOf(changed)).not.toBe(idempotencyKeyOf(first));
    expect(idempotencyKeyOf(keyed('chat_finished.json'))).toBe('jivochat:shop-site:chat_finished:90320');
    expect(idempotencyKeyOf(keyed('chat_finished.json', { channelId: 'other' }))).toBe(
      'jivochat:other:chat_finished:90320',
    );
    const attributes = keyed('client_attribute_updated.json');
    expect(idempotencyKeyOf(attributes)).toBe(
      `jivochat:shop-site:client_attribute_updated:31507:${hashOf(attributes.envelope.attributes)}`,
    );
  });

  it('digests a chat id longer than the kit keeps (keyPart); shorter ones and long keys as before', () => {
    const withChat = (chat: string) => {
      const finished = keyed('chat_finished.json');
      finished.envelope = { ...finished.envelope, chat_id: chat };
      return idempotencyKeyOf(finished);
    };
    expect(withChat('c'.repeat(200))).toBe(`jivochat:shop-site:chat_finished:${'c'.repeat(200)}`);
    expect(withChat('c'.repeat(201))).toBe(`jivochat:shop-site:chat_finished:~${digest('c'.repeat(201))}`);
    // Two parts of 200 make a key over 400: hashed whole, as keys were made before.
    const transfer = keyed('chat_accepted.json');
    transfer.envelope = {
      ...transfer.envelope,
      chat_id: 'c'.repeat(200),
      agent: { ...transfer.envelope.agent, id: 'a'.repeat(200) },
    };
    expect(idempotencyKeyOf(transfer)).toBe(
      `jivochat:shop-site:chat_accepted:${hashOf(['c'.repeat(200), 'a'.repeat(200)])}`,
    );
  });

  it('keys a chat and agent id holding the separator apart (77:1 + 2 is not 77 + 1:2)', () => {
    const accepted = (chat: string, agent: string) => {
      const event = keyed('chat_accepted.json');
      event.envelope = { ...event.envelope, chat_id: chat, agent: { ...event.envelope.agent, id: agent } };
      return idempotencyKeyOf(event);
    };
    expect(accepted('77:1', '2')).not.toBe(accepted('77', '1:2'));
    expect(accepted('77', '2')).toBe('jivochat:shop-site:chat_accepted:77:2');
  });

  it('keys an event without its chat or client id on the whole payload, so two people never share a key', () => {
    const withoutChat = (name: string, change: (raw: Record<string, unknown>) => void) =>
      idempotencyKeyOf(
        keyed(name, {}, (raw) => {
          delete raw.chat_id;
          delete raw.client_id;
          change(raw);
        }),
      );
    const other = (raw: Record<string, unknown>) => {
      raw.user_token = 'cust_other_1';
      raw.visitor = { name: 'Other Person', email: 'other@example.net', number: '99999' };
    };
    // The same agent accepting two visitors' chats (no chat_id): two acceptances, not one repeat.
    expect(withoutChat('chat_accepted.json', other)).not.toBe(withoutChat('chat_accepted.json', () => {}));
    // Two clients given the same attributes (no client_id): two events.
    expect(withoutChat('client_attribute_updated.json', other)).not.toBe(
      withoutChat('client_attribute_updated.json', () => {}),
    );
    // A redelivery still has the same key.
    expect(withoutChat('chat_accepted.json', other)).toBe(withoutChat('chat_accepted.json', other));
  });

  it('hashes objects independently of key order', () => {
    expect(hashOf({ a: 1, b: [1, { c: 2, d: 3 }] })).toBe(hashOf({ b: [1, { d: 3, c: 2 }], a: 1 }));
    expect(hashOf({ a: 1 })).not.toBe(hashOf({ a: '1' }));
  });
  it("ends with the payload's widget when the channel has no widgetId: two widgets' chat ids never share a key", () => {
    const open = (widget: string) =>
      idempotencyKeyOf(input('chat_finished.json', {}, (raw) => Object.assign(raw, { widget_id: widget })));
    expect(open('Qw7eR9tY2u')).toBe('jivochat:shop-site:chat_finished:90320:Qw7eR9tY2u');
    expect(open('aB3dE5fG7h')).not.toBe(open('Qw7eR9tY2u'));
    expect(idempotencyKeyOf(keyed('chat_finished.json'))).toBe('jivochat:shop-site:chat_finished:90320');
  });
});
