import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isHttpUrl } from '../../src/contacts/links.js';
import type { Contact } from '../../src/contacts/types.js';
import { wellFormed } from '../../src/digest.js';
import { AppError } from '../../src/errors.js';
import { parseIntakeRequest } from '../../src/intake/pipeline.js';
import { ANSWER_LIMITS, buildRichAnswer, fillCrmLink, safeLink, truncate } from './codec.js';
import { httpUrlSchema, jivoAnswerSchema, jivochatSettingsSchema } from './schemas.js';
import { decodeWebhook, jivochatWebhook } from './webhook.js';

/** The core's parse step, then the route's pure decode: what a raw body becomes, or its 400. */
function decodePayload(rawBody: Buffer) {
  const request = parseIntakeRequest(jivochatWebhook, rawBody, undefined, new Date());
  decodeWebhook(request, { id: 'shop-site', settings: jivochatSettingsSchema.parse({}) });
  return { payload: request.body, repaired: request.repaired };
}

function contact(overrides: Partial<Contact> = {}): Contact {
  return {
    id: 'c_123',
    name: 'Svetlana Orlova',
    names: ['Svetlana Orlova'],
    emails: ['s.orlova@example.org', 'old@example.org'],
    phones: ['+79057770123'],
    identities: [{ kind: 'person', value: 'cust 7/d' }],
    labels: [],
    attributes: {
      description: {
        value: 'Prefers calls after 18:00',
        label: 'Description',
        channelId: 'shop-site',
        at: '2024-06-17T08:00:00Z',
      },
    },
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: ['c_123'],
    merges: [],
    createdAt: '2024-06-17T08:00:00Z',
    updatedAt: '2024-06-17T08:00:00Z',
    ...overrides,
  };
}

const reply = jivochatSettingsSchema.parse({}).reply;

function errorOf(fn: () => unknown): AppError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error('expected an AppError');
}

describe('decodePayload', () => {
  it('refuses what is not a JSON object with an event_name, as a 400', () => {
    for (const body of [
      'not json',
      '',
      '[1,2]',
      '42',
      'null',
      '"chat_accepted"',
      '{}',
      '{"event_name": 5}',
      '{"event_name": "  "}',
    ]) {
      const error = errorOf(() => decodePayload(Buffer.from(body)));
      expect(error.status, body).toBe(400);
    }
    expect(errorOf(() => decodePayload(Buffer.from('{'))).code).toBe('invalid_json');
    expect(errorOf(() => decodePayload(Buffer.from('[]'))).code).toBe('invalid_body');
  });

  it('accepts a UTF-8 BOM and keeps unknown fields', () => {
    const { payload, repaired } = decodePayload(
      Buffer.from('\uFEFF{"event_name":"chat_finished","x":{"y":1}}'),
    );
    expect(payload).toEqual({ event_name: 'chat_finished', x: { y: 1 } });
    expect(repaired).toBe(false);
  });

  it('repairs only the documented bracketed attributes of client_attribute_updated', () => {
    const docs = '{"event_name":"client_attribute_updated","client_id":1,"attributes":["a":"x]","b":2]}';
    expect(decodePayload(Buffer.from(docs))).toEqual({
      payload: { event_name: 'client_attribute_updated', client_id: 1, attributes: { a: 'x]', b: 2 } },
      repaired: true,
    });
    // Same trick on another event, or on a body broken elsewhere, stays refused.
    expect(
      errorOf(() => decodePayload(Buffer.from(docs.replace('client_attribute_updated', 'chat_finished'))))
        .status,
    ).toBe(400);
    expect(errorOf(() => decodePayload(Buffer.from(`${docs.slice(0, -1)},}`))).status).toBe(400);
  });
});

describe('answer limits', () => {
  it('truncates by code points, never splitting an emoji', () => {
    expect(truncate('abc', 3)).toBe('abc');
    expect(truncate('abcd', 3)).toBe('ab…');
    expect(truncate('🫖🫖🫖🫖', 3)).toBe('🫖🫖…');
    expect(truncate('Привет, мир', 7)).toBe('Привет…');
  });

  it('keeps only absolute http(s) links of sane length', () => {
    expect(safeLink('https://crm.example/x')).toBe('https://crm.example/x');
    expect(safeLink(' http://localhost:3000/c/1 ')).toBe('http://localhost:3000/c/1');
    for (const bad of [
      'javascript:alert(1)',
      '/relative',
      'ftp://x.example',
      '',
      undefined,
      `https://x.example/${'a'.repeat(3000)}`,
    ]) {
      expect(safeLink(bad)).toBeUndefined();
    }
  });

  it('fills crm_link placeholders (URL-encoded) and leaves the link out when one has no value', () => {
    expect(fillCrmLink('https://crm.example/c/{contactId}?p={person}', contact())).toBe(
      'https://crm.example/c/c_123?p=cust%207%2Fd',
    );
    expect(fillCrmLink('https://crm.example/c/{crmId}', contact())).toBeUndefined();
    expect(
      fillCrmLink('https://crm.example/c/{crmId}', contact({ identities: [{ kind: 'crm', value: '9931' }] })),
    ).toBe('https://crm.example/c/9931');
  });

  it('fills any template as one replace over its placeholders did (the template is cut once and kept)', () => {
    // The fill before the template was cut once: a global replace, every placeholder's value at hand.
    const byReplace = (template: string, who: Contact, links: { consoleUrl?: string }) => {
      const person = who.identities.find((identity) => identity.kind === 'person')?.value;
      const crmIdentity = who.identities.find((identity) => identity.kind === 'crm')?.value;
      const crmAttribute = who.attributes.crmId?.value;
      const values: Record<string, string | undefined> = {
        contactId: who.id,
        person,
        crmId:
          crmIdentity ??
          (crmAttribute === undefined || crmAttribute === '' ? undefined : String(crmAttribute)),
        consoleUrl: links.consoleUrl,
        crmUrl: who.crmLink ?? undefined,
      };
      let missing = false;
      const filled = template.replace(/\{([^{}]*)\}/g, (_match, name: string) => {
        const value = values[name];
        if (value === undefined || value === '' || !wellFormed(value)) {
          missing = true;
          return '';
        }
        return name === 'consoleUrl' || name === 'crmUrl' ? value : encodeURIComponent(value);
      });
      return missing ? undefined : safeLink(filled);
    };
    const piece = fc.oneof(
      fc.constantFrom('{contactId}', '{person}', '{crmId}', '{consoleUrl}', '{crmUrl}', '{nope}', '{}'),
      fc.constantFrom('{', '}', '{{', '}}', '/', '?q=', '#', ' ', '$&', "$'", '%', 'a'),
      fc.string({ maxLength: 4 }),
    );
    const start = fc.constantFrom(
      'https://crm.example/',
      'http://127.0.0.1:3000/c/',
      '',
      '{consoleUrl}',
      ' ',
    );
    const value = fc.option(
      fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('', ' a/b?', '\ud800', 'https://crm.example/x')),
      { nil: undefined },
    );
    fc.assert(
      fc.property(
        start,
        fc.array(piece, { maxLength: 6 }),
        value,
        value,
        value,
        value,
        (head, pieces, person, crm, crmUrl, consoleUrl) => {
          const template = head + pieces.join('');
          const identities: Contact['identities'] = [];
          if (person !== undefined) identities.push({ kind: 'person', value: person });
          if (crm !== undefined) identities.push({ kind: 'crm', value: crm });
          const who = contact({ identities, crmLink: crmUrl ?? null });
          const links = consoleUrl === undefined ? {} : { consoleUrl };
          // Twice: the second fill reads the template kept by the first.
          for (let round = 0; round < 2; round++)
            expect(fillCrmLink(template, who, links), template).toBe(byReplace(template, who, links));
        },
      ),
      { numRuns: 2000, seed: 20261205 },
    );
  });

  it('leaves the link out when a value holds a lone surrogate (encodeURIComponent would throw: a 500)', () => {
    for (const value of ['\ud800', 'a\udc00b', '99\ud83d']) {
      expect(
        fillCrmLink('https://crm.example/c/{crmId}', contact({ identities: [{ kind: 'crm', value }] })),
      ).toBeUndefined();
    }
  });
});

describe('buildRichAnswer', () => {
  it('answers with what the unified contact knows, the facts and the configured link', () => {
    const answer = buildRichAnswer({
      contact: contact(),
      facts: {
        facts: [
          { key: 'channel.app', label: 'LiveTex app', value: '3 conversations, last 20 Nov', type: 'string' },
          { key: 'site', label: 'Site', value: 'https://vesna.example', type: 'url' },
          { key: 'bad', label: 'Bad link', value: 'x', type: 'string', link: 'javascript:alert(1)' },
          { key: 'empty', label: 'Empty', value: '  ', type: 'string' },
        ],
        missing: [],
      },
      reply: { ...reply, crmLink: 'https://crm.example/contacts/{contactId}' },
    });
    expect(answer).toEqual({
      result: 'ok',
      contact_info: {
        name: 'Svetlana Orlova',
        email: 's.orlova@example.org',
        phone: '+79057770123',
        description: 'Prefers calls after 18:00',
      },
      custom_data: [
        { title: 'LiveTex app', content: '3 conversations, last 20 Nov' },
        { title: 'Site', content: 'https://vesna.example', link: 'https://vesna.example' },
        { title: 'Bad link', content: 'x' },
      ],
      crm_link: 'https://crm.example/contacts/c_123',
      enable_assign: false,
    });
  });

  it('lets an attribute source’s crmLink win and falls back to the contact’s own link', () => {
    const template = { ...reply, crmLink: 'https://crm.example/contacts/{contactId}' };
    const withSource = buildRichAnswer({
      contact: contact(),
      facts: { facts: [], crmLink: 'https://crm.example/real/77', missing: [] },
      reply: template,
    });
    expect(withSource.crm_link).toBe('https://crm.example/real/77');
    const fallback = buildRichAnswer({
      contact: contact({ crmLink: 'https://crm.example/linked/5' }),
      facts: null,
      reply: { ...reply, crmLink: 'https://crm.example/c/{crmId}' },
    });
    expect(fallback.crm_link).toBe('https://crm.example/linked/5');
    expect(fallback.custom_data).toBeUndefined();
  });

  it('shows other channels’ labels and values cleaned: no bidi override, control or lone surrogate', () => {
    const answer = buildRichAnswer({
      contact: contact(),
      facts: {
        facts: [
          { key: 'tariff', label: 'Tar\u202Eiff', value: 'gold\u001b[31m \u202Eesu\ud800', type: 'string' },
          { key: 'blank', label: 'Blank', value: '\u202E\u0007', type: 'string' },
        ],
        missing: [],
      },
      reply,
    });
    expect(answer.custom_data).toEqual([{ title: 'Tariff', content: 'gold[31m esu\uFFFD' }]);
  });

  it('keeps within Jivo’s limits: 10 items, cut text, no over-long e-mail, enable_assign per config', () => {
    const long = 'Ж'.repeat(5000);
    const answer = buildRichAnswer({
      contact: contact({
        name: long,
        emails: [`${'a'.repeat(300)}@example.org`],
        phones: [],
        attributes: {},
      }),
      facts: {
        facts: Array.from({ length: 25 }, (_, index) => ({
          key: `k${index}`,
          label: `${long}${index}`,
          value: `${long}🫖`,
          type: 'string' as const,
        })),
        missing: ['slow'],
      },
      reply: { ...reply, enableAssign: true },
    });
    expect(answer.custom_data).toHaveLength(10);
    for (const item of answer.custom_data ?? []) {
      expect(Array.from(item.title)).toHaveLength(ANSWER_LIMITS.title);
      expect(Array.from(item.content)).toHaveLength(ANSWER_LIMITS.content);
    }
    expect(Array.from(answer.contact_info!.name!)).toHaveLength(ANSWER_LIMITS.name);
    expect(answer.contact_info!.email).toBeUndefined();
    expect(answer.enable_assign).toBe(true);
    expect(jivoAnswerSchema.safeParse(answer).success).toBe(true);
  });

  it('omits contact_info when the contact knows nothing to show', () => {
    const answer = buildRichAnswer({
      contact: contact({ name: null, names: [], emails: [], phones: [], attributes: {} }),
      facts: null,
      reply,
    });
    expect(answer).toEqual({ result: 'ok', enable_assign: false });
  });
});

describe('buildRichAnswer, for any contact and facts', () => {
  // The answer is not validated again at run time (issue 12: validate once, at the boundary where
  // data comes in): this property is what holds it to Jivo's shape instead.
  const text = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'grapheme', maxLength: 700 }),
    fc.constantFrom(
      '',
      '   ',
      '<b onclick="x()">Анна</b>',
      'javascript:alert(1)',
      ' https://crm.example/c/1 ',
      'http://a b',
    ),
  );
  const link = fc.oneof(fc.webUrl({ withQueryParameters: true, withFragments: true }), text);
  const template = fc.constantFrom(
    '',
    'https://crm.example/contacts/{contactId}',
    '{crmUrl}',
    '{consoleUrl}',
    'https://crm.example/p/{person}?crm={crmId}',
    'javascript:{person}',
  );
  const fact = fc.record(
    {
      key: text,
      label: text,
      value: text,
      type: fc.constantFrom(
        'string' as const,
        'url' as const,
        'number' as const,
        'boolean' as const,
        'date' as const,
      ),
      link,
      verified: fc.constant(false as const),
    },
    { requiredKeys: ['key', 'label', 'value', 'type'] },
  );
  it('is an answer Jivo accepts (jivoAnswerSchema)', () => {
    fc.assert(
      fc.property(
        fc.record({
          name: fc.option(text, { nil: null }),
          names: fc.array(text, { maxLength: 3 }),
          emails: fc.array(text, { maxLength: 3 }),
          phones: fc.array(text, { maxLength: 3 }),
          crmLink: fc.option(link, { nil: null }),
          description: fc.option(text, { nil: undefined }),
          person: fc.option(text, { nil: undefined }),
        }),
        fc.option(
          fc.record({
            facts: fc.array(fact, { maxLength: 14, size: 'max' }),
            crmLink: fc.option(link, { nil: undefined }),
          }),
          { nil: null },
        ),
        template,
        fc.boolean(),
        (shape, given, crmLink, enableAssign) => {
          const answer = buildRichAnswer({
            contact: contact({
              name: shape.name,
              names: shape.names,
              emails: shape.emails,
              phones: shape.phones,
              crmLink: shape.crmLink,
              identities: shape.person === undefined ? [] : [{ kind: 'person', value: shape.person }],
              attributes:
                shape.description === undefined
                  ? {}
                  : {
                      description: {
                        value: shape.description,
                        label: 'D',
                        channelId: 's',
                        at: '2024-06-17T08:00:00Z',
                      },
                    },
            }),
            facts:
              given === null
                ? null
                : {
                    facts: given.facts,
                    missing: [],
                    ...(given.crmLink === undefined ? {} : { crmLink: given.crmLink }),
                  },
            reply: { ...reply, crmLink, enableAssign },
            consoleLink: (id) => `https://bridge.example/console/contacts/${encodeURIComponent(id)}?sig=abc`,
          });
          const checked = jivoAnswerSchema.safeParse(answer);
          expect(checked.success, JSON.stringify(checked.error?.issues)).toBe(true);
          expect(checked.data).toEqual(answer);
          // The same bytes as when the answer was parsed by the schema (which writes its key order).
          expect(JSON.stringify(answer)).toBe(JSON.stringify(checked.data));
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('isHttpUrl', () => {
  it('accepts exactly what httpUrlSchema (zod) accepts', () => {
    const nearUrl = fc
      .tuple(
        fc.constantFrom('http', 'https', 'HTTPS', 'HtTp', 'ftp', 'javascript', 'data', 'http ', ''),
        fc.constantFrom('://', ':', ':/', ':\\\\', '://\t', ':///', '//'),
        fc.oneof(
          fc.domain(),
          fc.constantFrom(
            '',
            '[::1]',
            '127.0.0.1:8080',
            'exa\nmple.com',
            'a b',
            'xn--80ak6aa92e.com',
            'пример.рф',
            '%zz',
            'h:99999',
          ),
        ),
        fc.oneof(
          fc.constant(''),
          fc.webPath(),
          fc.string({ maxLength: 12 }),
          fc.constantFrom('/?q=1#x', '/%', '/\u0000'),
        ),
      )
      .map(([scheme, separator, host, path]) => `${scheme}${separator}${host}${path}`);
    fc.assert(
      fc.property(
        fc.oneof(nearUrl, fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.string()),
        (raw) => {
          const trimmed = raw.trim();
          expect(isHttpUrl(trimmed)).toBe(httpUrlSchema.safeParse(trimmed).success);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
