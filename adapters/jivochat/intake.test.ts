import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { FactAnswer } from '../../src/contacts/facts.js';
import type { Contact } from '../../src/contacts/types.js';
import type { Decoded, IntakeResult } from '../../src/contracts/adapter.js';
import { AppError } from '../../src/errors.js';
import { parseIntakeRequest } from '../../src/intake/pipeline.js';
import { jivochatSettingsSchema } from './schemas.js';
import { decodeWebhook, type JivoChannel, jivochatWebhook } from './webhook.js';

/**
 * The JivoChat intake route as pure functions: the body (as the core's parse step hands it over)
 * → what to record, and the stored contact plus its facts → the answer Jivo shows. No store, no
 * HTTP: the pipeline around them is tested in test/intake.pipeline.test.ts and webhook.test.ts.
 */

const RECEIVED = new Date('2024-06-17T08:00:00.000Z');
const channel = (settings: Record<string, unknown> = {}): JivoChannel => ({
  id: 'shop-site',
  settings: jivochatSettingsSchema.parse(settings),
});
const fixture = (name: string) => readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url));

function decode(body: Buffer | string | object, on: JivoChannel = channel()): Decoded {
  const raw = Buffer.isBuffer(body)
    ? body
    : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return decodeWebhook(parseIntakeRequest(jivochatWebhook, raw, undefined, RECEIVED), on);
}

function refusal(body: string | object, on?: JivoChannel): AppError {
  try {
    decode(body, on);
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

const contact: Contact = {
  id: 'c_1',
  name: 'Svetlana Orlova',
  names: ['Svetlana Orlova'],
  emails: ['s.orlova@example.org'],
  phones: ['+79057770123'],
  identities: [
    { kind: 'person', value: 'cust_7d41e9b2c0', provenance: 'verified' },
    { kind: 'email', value: 's.orlova@example.org', provenance: 'verified' },
    { kind: 'phone', value: '+79057770123', provenance: 'verified' },
  ],
  labels: [],
  attributes: {},
  responsibleAgent: null,
  crmLink: null,
  channels: [],
  records: ['c_1'],
  merges: [],
  createdAt: RECEIVED.toISOString(),
  updatedAt: RECEIVED.toISOString(),
};

function result(decoded: Decoded, overrides: Partial<IntakeResult<undefined>> = {}): IntakeResult<undefined> {
  return {
    decoded,
    opened: undefined,
    contact,
    duplicate: false,
    facts: null,
    consoleLink: () => undefined,
    ...overrides,
  };
}

describe('jivochat decode', () => {
  it('asks for facts (within reply.deadlineMs, with a send reserve) only for chat_accepted and chat_updated', () => {
    const accepted = decode(fixture('chat_accepted.json'), channel({ reply: { deadlineMs: 1500 } }));
    expect(accepted).toMatchObject({
      kind: 'observe',
      event: 'chat_accepted',
      facts: { deadlineMs: 1500, max: 10, reserve: true },
    });
    expect(decode(fixture('chat_updated.json'))).toMatchObject({ kind: 'observe', facts: { max: 10 } });
    for (const name of ['chat_finished.json', 'offline_message.json', 'call_event.start.json']) {
      const decoded = decode(fixture(name));
      expect(decoded.kind, name).toBe('observe');
      expect(decoded, name).not.toHaveProperty('facts');
    }
  });

  it('makes one observation per event, stamped with the time of receipt', () => {
    const decoded = decode(fixture('chat_finished.json'));
    if (decoded.kind !== 'observe') throw new Error('expected observe');
    expect(decoded.observations).toHaveLength(1);
    expect(decoded.observations[0]).toMatchObject({
      channelId: 'shop-site',
      vendor: 'jivochat',
      at: RECEIVED.toISOString(),
      idempotencyKey: expect.stringMatching(/^jivochat:shop-site:chat_finished:/),
    });
  });

  it('says "nothing" with a reason for unknown event names and for events that name nobody', () => {
    expect(decode(fixture('unknown_event.json'))).toEqual({
      kind: 'nothing',
      event: 'unknown',
      reason: 'unknown event_name "chat_transferred"',
    });
    expect(decode({ event_name: 'call_event', chat_id: 1, call: { status: 'start' } })).toMatchObject({
      kind: 'nothing',
      event: 'call_event',
      reason: expect.stringContaining('names no visitor'),
    });
  });

  it('refuses a payload of another widget when widgetId is set (400), and lets the rest through', () => {
    const guarded = channel({ widgetId: 'w-1' });
    const error = refusal({ event_name: 'chat_accepted', widget_id: 'w-2', visitor: { number: 1 } }, guarded);
    expect(error).toMatchObject({ status: 400, issues: [{ path: 'widget_id' }] });
    expect(
      decode({ event_name: 'chat_accepted', widget_id: 'w-1', visitor: { number: 1 } }, guarded).kind,
    ).toBe('observe');
    expect(decode({ event_name: 'chat_accepted', visitor: { number: 1 } }, guarded).kind).toBe('observe');
  });

  it('accepts the docs’ bracketed attributes only for client_attribute_updated', () => {
    const decoded = decode(fixture('client_attribute_updated.docs-invalid.txt'));
    expect(decoded).toMatchObject({ kind: 'observe', event: 'client_attribute_updated' });
    const text = fixture('client_attribute_updated.docs-invalid.txt')
      .toString('utf8')
      .replace('client_attribute_updated', 'chat_finished');
    expect(refusal(text)).toMatchObject({ status: 400, code: 'invalid_json' });
  });
});

describe('jivochat render', () => {
  const facts: FactAnswer = {
    facts: [{ key: 'orders', label: 'Orders', value: '3', type: 'string' }],
    crmLink: 'https://crm.example/c/1',
    missing: [],
  };

  it('answers chat_accepted richly from the contact and its facts', () => {
    const decoded = decode(fixture('chat_accepted.json'));
    const answer = jivochatWebhook.render(result(decoded, { facts }), channel());
    expect(answer).toEqual({
      body: {
        result: 'ok',
        contact_info: { name: 'Svetlana Orlova', email: 's.orlova@example.org', phone: '+79057770123' },
        custom_data: [{ title: 'Orders', content: '3' }],
        crm_link: 'https://crm.example/c/1',
        enable_assign: false,
      },
      contentType: 'application/json; charset=utf-8',
    });
    // Facts that did not come in time: the agent still gets the contact.
    expect(jivochatWebhook.render(result(decoded), channel()).body).toMatchObject({
      result: 'ok',
      contact_info: { name: 'Svetlana Orlova' },
    });
  });

  it('answers {"result":"ok"} to every other event and to what it could not use', () => {
    const ok = { body: { result: 'ok' }, contentType: 'application/json; charset=utf-8' };
    expect(
      jivochatWebhook.render(result(decode(fixture('chat_finished.json')), { facts }), channel()),
    ).toEqual(ok);
    expect(
      jivochatWebhook.render(result(decode(fixture('unknown_event.json')), { contact: null }), channel()),
    ).toEqual(ok);
  });
});
