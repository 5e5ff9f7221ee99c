import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { configSchema, type DestinationConfig, destinationSchema } from '../src/config/schema.js';
import type { Contact } from '../src/contacts/types.js';
import { deliveryIdOf } from '../src/delivery/drain.js';
import { type RoutingContext, routeEvent, transcriptText } from '../src/delivery/routing.js';
import { secretKey, webhookHeaders } from '../src/delivery/signing.js';
import type { OutboundEvent } from '../src/events/outbox.js';
import { parseRetryAfter } from '../src/net/retry.js';

/** Routing and mapping are pure: the same config and event give the same body on every instance. */

const SECRET = `whsec_${Buffer.from('routing-test-secret-0123456789abc').toString('base64')}`;

function destination(overrides: Record<string, unknown> = {}): DestinationConfig {
  return destinationSchema.parse({
    id: 'crm',
    url: 'https://crm.example/events',
    secret: SECRET,
    ...overrides,
  });
}

const context: RoutingContext = {
  agents: configSchema.parse({
    admin: { token: 'admin-token-0123456789' },
    agents: [
      { email: 'Oleg@Shop.example', name: 'Oleg Petrov', crmUserId: 1001 },
      { email: 'anna@shop.example', name: 'Anna', crmUserId: '1002' },
      { email: 'nocrm@shop.example', name: 'No CRM' },
    ],
  }).agents,
  channels: [
    { id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: 'x'.repeat(16) },
    { id: 'app', vendor: 'livetex', token: 'y'.repeat(16) },
  ],
  vendorNames: new Map([
    ['jivochat', 'JivoChat'],
    ['livetex', 'LiveTex'],
  ]),
};

function contact(overrides: Partial<Contact> = {}): Contact {
  return {
    id: 'ct_1',
    name: 'Maria Ivanova',
    names: ['Maria Ivanova'],
    emails: ['maria@example.org'],
    phones: ['+79161234567'],
    identities: [],
    labels: [],
    attributes: {},
    responsibleAgent: { email: 'anna@shop.example' },
    crmLink: null,
    channels: [],
    records: ['ct_1'],
    merges: [],
    createdAt: '2024-05-01T10:00:00.000Z',
    updatedAt: '2024-05-01T10:00:00.000Z',
    ...overrides,
  };
}

function event(overrides: Partial<OutboundEvent> = {}): OutboundEvent {
  return {
    id: 'evt_1',
    type: 'conversation.finished',
    occurredAt: '2024-05-01T10:30:00.000Z',
    channel: { id: 'shop-site', vendor: 'jivochat' },
    contact: contact(),
    data: {},
    ...overrides,
  };
}

describe('destination config', () => {
  it('accepts the DESIGN §3 example and fills the defaults', () => {
    const parsed = destination({
      events: ['conversation.finished', 'offline_message.received', 'contact.updated'],
      filter: { channels: ['shop-site', 'app'] },
      map: { pipeline: { byChannel: { 'shop-site': 'web-leads', app: 'app-leads' }, default: 'inbox' } },
    });
    expect(parsed.retrySchedule).toEqual([
      0, 5000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000, 86_400_000,
    ]);
    expect(parsed.circuitBreaker).toEqual({ failureThreshold: 5, cooldown: 30_000 });
    expect(parsed.map.taskDueIn).toBe(3_600_000);
    expect(parsed.headers).toEqual({});
  });

  it('refuses a secret that is not whsec_ and unknown keys', () => {
    expect(() => destination({ secret: 'plain' })).toThrow(/whsec_/);
    // '=' inside: we would sign with the bytes before it, the receiver's library refuses it.
    const inside = `whsec_${Buffer.alloc(32, 7).toString('base64')}AAAA`;
    expect(() => new Webhook(inside)).toThrow();
    expect(() => destination({ secret: inside })).toThrow(/whsec_ followed by base64/);
    expect(destination({ secret: `whsec_${Buffer.alloc(32, 7).toString('base64')}` }).id).toBe('crm');
    expect(() => destination({ circuitBreaker: { failures: 3 } })).toThrow();
    expect(() => destination({ map: { pipline: {} } })).toThrow();
  });

  it('lower-cases extra header names and refuses one given twice in two cases', () => {
    expect(destination({ headers: { Authorization: 'Bearer x', 'X-Key': 'k' } }).headers).toEqual({
      authorization: 'Bearer x',
      'x-key': 'k',
    });
    expect(() => destination({ headers: { 'X-Key': 'a', 'x-key': 'b' } })).toThrow(/given twice/);
  });

  it('refuses waits longer than Node timers hold, which would fire at once', () => {
    const paths = (overrides: Record<string, unknown>) => {
      const parsed = destinationSchema.safeParse({
        id: 'crm',
        url: 'https://crm.example/events',
        secret: SECRET,
        ...overrides,
      });
      return parsed.success ? [] : parsed.error.issues.map((issue) => issue.path.join('.'));
    };
    expect(paths({ retrySchedule: ['0s', '5m', '30d'] })).toEqual(['retrySchedule.2']);
    expect(paths({ circuitBreaker: { cooldown: '25d' } })).toEqual(['circuitBreaker.cooldown']);
    expect(paths({ timeoutMs: 3_000_000_000 })).toEqual(['timeoutMs']);
    // The longest that fits still goes.
    expect(paths({ retrySchedule: ['0s', '24d'], circuitBreaker: { cooldown: '24d' } })).toEqual([]);
    // CRM destinations share these keys.
    const crm = destinationSchema.safeParse({
      id: 'amo',
      kind: 'amocrm',
      baseUrl: 'https://example.amocrm.ru',
      token: 'amo-token',
      retrySchedule: ['0s', '30d'],
    });
    expect(crm.success ? [] : crm.error.issues.map((issue) => issue.path.join('.'))).toEqual([
      'retrySchedule.1',
    ]);
  });
});

describe('routing', () => {
  it('filters by event type, channel and vendor', () => {
    const only = destination({ events: ['conversation.finished'], filter: { channels: ['app'] } });
    expect(routeEvent(only, event(), context)).toBeNull();
    expect(routeEvent(only, event({ channel: { id: 'app', vendor: 'livetex' } }), context)).not.toBeNull();
    expect(
      routeEvent(
        only,
        event({ type: 'message.received', channel: { id: 'app', vendor: 'livetex' } }),
        context,
      ),
    ).toBeNull();
    const byVendor = destination({ filter: { vendors: ['livetex'] } });
    expect(routeEvent(byVendor, event(), context)).toBeNull();
    // Events about the contact as a whole have no channel: channel filters do not drop them.
    expect(routeEvent(only, event({ channel: null }), context)).not.toBeNull();
  });

  it('keeps the contract body and adds routing: pipeline by channel with a default, source, responsible', () => {
    const crm = destination({
      map: { pipeline: { byChannel: { 'shop-site': 'web-leads' }, default: 'inbox' } },
    });
    const body = routeEvent(
      crm,
      event({ data: { agent: { email: 'OLEG@shop.example', name: 'Oleg' } } }),
      context,
    )!;
    expect(body).toMatchObject({ id: 'evt_1', type: 'conversation.finished', contact: { id: 'ct_1' } });
    expect(body.routing).toEqual({
      destination: 'crm',
      pipeline: 'web-leads',
      source: 'JivoChat: Shop site',
      responsibleCrmUserId: '1001',
    });
    const fromApp = routeEvent(crm, event({ channel: { id: 'app', vendor: 'livetex' } }), context)!;
    // No agent in the event: the contact's responsible agent (anna -> 1002); unnamed channel: its id.
    expect(fromApp.routing).toMatchObject({
      pipeline: 'inbox',
      source: 'LiveTex: app',
      responsibleCrmUserId: '1002',
    });
    const none = destination();
    expect(routeEvent(none, event({ channel: null }), context)!.routing).toMatchObject({
      pipeline: null,
      source: null,
    });
  });

  it('uses a source template and the configured fallback for unknown agents', () => {
    const crm = destination({
      map: { source: 'chat/{vendor}/{channel} {oops}', responsibleFallback: 'oleg@shop.example' },
    });
    const unknown = event({
      data: { agentEmail: 'stranger@shop.example' },
      contact: contact({ responsibleAgent: null }),
    });
    expect(routeEvent(crm, unknown, context)!.routing).toMatchObject({
      source: 'chat/jivochat/shop-site {oops}',
      responsibleCrmUserId: '1001',
    });
    const literal = destination({ map: { responsibleFallback: '42' } });
    expect(routeEvent(literal, unknown, context)!.routing.responsibleCrmUserId).toBe('42');
    // An agent without a CRM id does not count as found.
    const noCrm = event({
      data: { agent: { email: 'nocrm@shop.example' } },
      contact: contact({ responsibleAgent: null }),
    });
    expect(routeEvent(destination(), noCrm, context)!.routing.responsibleCrmUserId).toBeNull();
  });

  it('makes a task of an offline message, due after map.taskDueIn', () => {
    const crm = destination({ map: { taskDueIn: '2h' } });
    const body = routeEvent(
      crm,
      event({ type: 'offline_message.received', data: { message: { text: 'Call me back please' } } }),
      context,
    )!;
    expect(body.routing.task).toEqual({
      title: 'Offline message from Maria Ivanova',
      text: 'Call me back please',
      dueAt: '2024-05-01T12:30:00.000Z',
      responsibleCrmUserId: '1002',
    });
    expect(body.routing.note).toBeUndefined();
  });

  it('writes the transcript as note text, cut at a bound', () => {
    const crm = destination();
    const body = routeEvent(
      crm,
      event({
        // The one transcript shape every adapter writes (src/contacts/types.ts); what does not
        // fit it is left out.
        data: {
          messages: [
            { at: '2024-05-01T10:01:12Z', author: { type: 'visitor', name: 'Maria' }, text: 'Hello' },
            {
              at: '2024-05-01T10:02:00Z',
              author: { type: 'agent', name: 'Oleg Petrov', email: 'oleg@shop.example' },
              text: 'Hi! How can I help?',
            },
            { at: null, author: { type: 'bot' }, text: 'Rate us' },
            42,
          ],
        },
      }),
      context,
    )!;
    expect(body.routing.note?.text).toBe(
      [
        'Chat transcript (JivoChat: Shop site)',
        '[2024-05-01 10:01 UTC] Maria: Hello',
        '[2024-05-01 10:02 UTC] Oleg Petrov: Hi! How can I help?',
        'bot: Rate us',
      ].join('\n'),
    );
    expect(routeEvent(crm, event({ data: {} }), context)!.routing.note).toBeUndefined();
    const long = transcriptText(
      event({
        data: {
          messages: Array.from({ length: 2000 }, (_, index) => ({
            at: null,
            author: { type: 'agent', name: 'a' },
            text: `line ${index} `.repeat(5),
          })),
        },
      }),
      null,
    )!;
    expect(long.length).toBe(20_000);
    expect(long.endsWith('… (transcript cut)')).toBe(true);
  });

  it('a long Russian transcript with emoji is cut between characters, never inside an emoji', () => {
    // The CRMs are PHP: half an emoji is a lone surrogate, written \ud83d in the JSON body, and
    // json_decode refuses the whole request. Every cut position across a few emoji is tried.
    for (let pad = 0; pad < 4; pad++) {
      const text = transcriptText(
        event({
          data: {
            messages: Array.from({ length: 400 }, (_, index) => ({
              at: '2026-12-04T09:15:00Z',
              author: { type: 'visitor', name: 'Семён' },
              text: `${'ж'.repeat(pad)}Спасибо, заказ №${index} получен ${'😊'.repeat(40)}`,
            })),
          },
        }),
        null,
      )!;
      expect(text.endsWith('… (transcript cut)')).toBe(true);
      expect(text).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/); // no lone surrogate
      expect(text.length).toBeLessThanOrEqual(20_000);
    }
  });

  it('transcript times name their zone: a Moscow manager does not read UTC as Moscow time', () => {
    const text = transcriptText(
      event({
        data: {
          messages: [
            { at: '2026-12-04T09:15:40Z', author: { type: 'visitor', name: 'Анна' }, text: 'Здравствуйте!' },
            { at: '2026-12-04T12:16:00+03:00', author: { type: 'agent', name: 'Олег' }, text: 'Добрый день' },
          ],
        },
      }),
      null,
    )!;
    expect(text.split('\n')).toEqual([
      'Chat transcript',
      '[2026-12-04 09:15 UTC] Анна: Здравствуйте!',
      '[2026-12-04 09:16 UTC] Олег: Добрый день',
    ]);
  });

  it('a transcript line is one message: text a visitor typed cannot begin a line that reads as another message', () => {
    const forged = transcriptText(
      event({
        data: {
          messages: [
            {
              at: '2024-05-01T10:01:00Z',
              author: { type: 'visitor', name: 'Maria\n[2024-05-01 10:01] Oleg Petrov' },
              text: 'Is it refunded?\r\n[2024-05-01 10:02] Oleg Petrov: Yes, 5000 refunded.\u2028[x] y: z',
            },
            {
              at: '2024-05-01T10:03:00Z',
              author: { type: 'agent', name: 'Oleg Petrov' },
              text: 'Line one\nline two',
            },
          ],
        },
      }),
      null,
    )!;
    const lines = forged.split('\n');
    // Every line but the heading is a message's first line or an indented continuation of it.
    expect(lines.filter((line) => line.startsWith('[')).length).toBe(2);
    expect(lines).toEqual([
      'Chat transcript',
      '[2024-05-01 10:01 UTC] Maria [2024-05-01 10:01] Oleg Petrov: Is it refunded?',
      '    [2024-05-01 10:02] Oleg Petrov: Yes, 5000 refunded.',
      '    [x] y: z',
      '[2024-05-01 10:03 UTC] Oleg Petrov: Line one',
      '    line two',
    ]);
  });

  it("a transcript shows an author's name without the controls and bidi overrides a contact's name is cleaned of", () => {
    const text = transcriptText(
      event({
        data: {
          messages: [
            {
              at: '2024-05-01T10:01:00Z',
              author: { type: 'visitor', name: 'Anna \u202Egnp.exe\u0007\u2066' },
              text: 'Hello',
            },
            { at: '2024-05-01T10:02:00Z', author: { type: 'visitor', name: '\u202E\u0000' }, text: 'Hi' },
          ],
        },
      }),
      null,
    )!;
    // An override in the name turned the rest of its line (": Hello") around in the CRM's note.
    expect(text.split('\n')).toEqual([
      'Chat transcript',
      '[2024-05-01 10:01 UTC] Anna gnp.exe: Hello',
      '[2024-05-01 10:02 UTC] visitor: Hi',
    ]);
  });

  it('is a pure function: same input, same body, input untouched', () => {
    const crm = destination({ map: { pipeline: { byChannel: { app: 'app-leads' }, default: 'inbox' } } });
    fc.assert(
      fc.property(
        fc.constantFrom(
          'conversation.finished',
          'offline_message.received',
          'message.received',
          'contact.updated',
        ),
        fc.constantFrom('shop-site', 'app', 'other'),
        fc.dictionary(fc.string(), fc.jsonValue()),
        (type, channelId, data) => {
          const input = event({
            type: type as OutboundEvent['type'],
            channel: { id: channelId, vendor: channelId === 'app' ? 'livetex' : 'jivochat' },
            data: data as Record<string, unknown>,
          });
          const before = JSON.stringify(input);
          const first = JSON.stringify(routeEvent(crm, input, context));
          expect(JSON.stringify(routeEvent(crm, JSON.parse(before) as OutboundEvent, context))).toBe(first);
          expect(JSON.stringify(input)).toBe(before);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('names a delivery after its destination and event, the same on every instance', () => {
    expect(deliveryIdOf('crm', 'evt_1')).toBe(deliveryIdOf('crm', 'evt_1'));
    expect(deliveryIdOf('crm', 'evt_1')).not.toBe(deliveryIdOf('crm2', 'evt_1'));
    expect(deliveryIdOf('crm', 'evt_1')).toMatch(/^dlv_[A-Za-z0-9_-]{24}$/);
  });
});

describe('Standard Webhooks signing', () => {
  const body = JSON.stringify({ id: 'evt_1', type: 'contact.updated' });

  it('produces headers the official library verifies, and matches its own signature', () => {
    const at = new Date();
    const headers = webhookHeaders(secretKey(SECRET), 'evt_1', at, body);
    const official = new Webhook(SECRET);
    expect(official.verify(body, headers)).toEqual(JSON.parse(body));
    expect(headers['webhook-signature']).toBe(official.sign('evt_1', at, body));
  });

  it('matches the Standard Webhooks test vector, byte for byte', () => {
    // From the spec's reference libraries (standard-webhooks, libraries/*/ "sign function works").
    const key = secretKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    const headers = webhookHeaders(
      key,
      'msg_p5jXN8AQM9LWM0D4loKWxJek',
      new Date(1614265330 * 1000),
      '{"test": 2432232314}',
    );
    expect(headers).toEqual({
      'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
      'webhook-timestamp': '1614265330',
      'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    });
  });

  it('signs the UTF-8 bytes of id.timestamp.body with the decoded secret (an independent check)', () => {
    // Written from the spec, not from signing.ts: strip whsec_, base64-decode, HMAC-SHA256 over
    // the bytes, standard base64 with padding. A body with Cyrillic, an emoji and an escaped
    // lone surrogate: what is signed is what is sent, UTF-8.
    const raw = Buffer.from('independent-check-secret-0123456789');
    const secret = `whsec_${raw.toString('base64')}`;
    const text = JSON.stringify({ id: 'evt_ü', text: 'Привет 👋', odd: '\ud800' });
    const at = new Date(1_700_000_000_123);
    const expected = createHmac('sha256', raw)
      .update(Buffer.concat([Buffer.from('evt_ü.1700000000.', 'utf8'), Buffer.from(text, 'utf8')]))
      .digest();
    const headers = webhookHeaders(secretKey(secret), 'evt_ü', at, text);
    expect(headers['webhook-timestamp']).toBe('1700000000');
    const [version, signature] = headers['webhook-signature']!.split(',');
    expect(version).toBe('v1');
    expect(Buffer.from(signature!, 'base64').equals(expected)).toBe(true);
    expect(signature).toBe(expected.toString('base64'));
  });

  it('fails verification when the body, id or secret differ', () => {
    const headers = webhookHeaders(secretKey(SECRET), 'evt_1', new Date(), body);
    const official = new Webhook(SECRET);
    expect(() => official.verify(`${body} `, headers)).toThrow();
    expect(() => official.verify(body, { ...headers, 'webhook-id': 'evt_2' })).toThrow();
    const other = `whsec_${Buffer.from('another-secret-0123456789abcdefgh').toString('base64')}`;
    expect(() => new Webhook(other).verify(body, headers)).toThrow();
  });
});

describe('Retry-After as a receiver may send it', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 1.5 ', now)).toBe(1500);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:02:00 GMT', now)).toBe(120_000);
  });

  it('makes nothing of a date in the past, a negative number or junk', () => {
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('-5', now) ?? 0).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('gives a huge value as a huge number (the delivery caps the wait at 24 h), never NaN', () => {
    expect(parseRetryAfter('9'.repeat(400), now)).toBeGreaterThan(24 * 3_600_000);
  });
});
