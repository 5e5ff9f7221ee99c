import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { jivochatSettingsSchema, jivoEnvelopeSchema } from './schemas.js';

describe('jivochat channel settings', () => {
  it('validates the example config’s jivochat channel as the loader does (strict)', () => {
    const document = parse(
      readFileSync(new URL('../../config/bridge.example.yaml', import.meta.url), 'utf8'),
    ) as {
      channels: Record<string, unknown>[];
    };
    const channel = document.channels.find((item) => item.vendor === 'jivochat');
    const { id: _id, vendor: _vendor, name: _name, token: _token, ...settings } = channel!;
    expect(jivochatSettingsSchema.strict().parse(settings)).toEqual({
      personIdFrom: 'user_token',
      reply: { crmLink: 'https://crm.example/contacts/{contactId}', enableAssign: false, deadlineMs: 2000 },
    });
  });

  it('defaults everything, and reads values substituted from the environment as strings', () => {
    expect(jivochatSettingsSchema.parse({})).toEqual({
      personIdFrom: 'user_token',
      reply: { enableAssign: false, deadlineMs: 2000 },
    });
    expect(
      jivochatSettingsSchema.parse({
        widgetId: '',
        reply: { crmLink: '', enableAssign: 'true', deadlineMs: '1500' },
      }),
    ).toEqual({ personIdFrom: 'user_token', reply: { enableAssign: true, deadlineMs: 1500 } });
  });

  it('reports mistakes with their paths', () => {
    const result = jivochatSettingsSchema.strict().safeParse({
      personIdFrom: 'user token',
      reply: { crmLink: 'https://crm.example/{contact}', deadlineMs: 10, extra: 1 },
      typo: true,
    });
    expect(result.success).toBe(false);
    const paths = result.error!.issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(
      expect.arrayContaining(['personIdFrom', 'reply.crmLink', 'reply.deadlineMs', 'reply', '']),
    );
    expect(jivochatSettingsSchema.safeParse({ reply: { crmLink: 'crm.example/{contactId}' } }).success).toBe(
      false,
    );
    expect(jivochatSettingsSchema.safeParse({ reply: { crmLink: 'javascript:{contactId}' } }).success).toBe(
      false,
    );
  });
});

describe('jivochat envelope', () => {
  it('normalises ids to strings and drops fields of an unusable shape instead of failing', () => {
    const envelope = jivoEnvelopeSchema.parse({
      event_name: 'chat_accepted',
      chat_id: 7636,
      visitor: { number: 2198, email: ['x'], name: 'Мария 🌸', chats_count: '3' },
      organization: 'not an object',
      tags: [{ id: 17, title: 'VIP' }, 'junk', null],
      agents: 'nope',
      offline_message_id: 1665399500726,
      extra: { kept: true },
    });
    expect(envelope).toMatchObject({
      chat_id: '7636',
      visitor: { number: '2198', name: 'Мария 🌸' },
      tags: [{ id: '17', title: 'VIP' }],
      offline_message_id: '1665399500726',
      extra: { kept: true },
    });
    expect(envelope.visitor?.email).toBeUndefined();
    expect(envelope.visitor?.chats_count).toBeUndefined();
    expect(envelope.organization).toBeUndefined();
    expect(envelope.agents).toBeUndefined();
  });

  it('keeps an attribute called __proto__ as an attribute', () => {
    const envelope = jivoEnvelopeSchema.parse(
      JSON.parse('{"event_name":"client_attribute_updated","attributes":{"__proto__":"x","a":1}}'),
    );
    expect(Object.entries(envelope.attributes ?? {})).toEqual([
      ['__proto__', 'x'],
      ['a', 1],
    ]);
  });
});
