import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { ANSWER_LIMITS } from '../../adapters/jivochat/codec.js';
import { jivoAnswerSchema } from '../../adapters/jivochat/schemas.js';
import { normalizeEmail, normalizePhone } from '../../src/contacts/normalize.js';
import { consoleRequest, signIn } from '../support/console.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Property-based fuzzing of the vendor intake routes with *valid* payloads, mutated, in
 * sequences, and the invariants checked after every request (hostile.test.ts throws junk at the
 * routes and checks only "no 5xx"):
 * - never a 5xx; a 4xx names its problem (error.code and a message) and is in the journal;
 * - an answer a vendor gets is JSON a strict parser accepts (no lone surrogate, no bad UTF-8);
 * - a contact read back through the admin API holds every identifier that was sent and could be
 *   one, each identifier index points to the contact that has it, and two people who share no
 *   identifier never end up in one contact.
 * Seeded and bounded: a failure prints the seed and the path to replay it.
 */
const ROOT = join(import.meta.dirname, '..', '..');
const TOKENS = {
  jivochat: 'fuzz-jivo-token-000000001',
  livetex: 'fuzz-livetex-token-00001',
  chatvisor: 'fuzz-chatvisor-token-001',
};
const SEED = Number(process.env.FUZZ_SEED ?? 20261204);
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
const fixture = (path: string): Record<string, Json> =>
  JSON.parse(readFileSync(join(ROOT, path), 'utf8')) as Record<string, Json>;

const JIVO = {
  accepted: fixture('adapters/jivochat/__fixtures__/chat_accepted.json'),
  finished: fixture('adapters/jivochat/__fixtures__/chat_finished.json'),
  updated: fixture('adapters/jivochat/__fixtures__/chat_updated.json'),
  offline: fixture('adapters/jivochat/__fixtures__/offline_message.json'),
};
const LIVETEX = {
  closed: fixture('adapters/livetex/__fixtures__/dialog_closed.web.json'),
  assigned: fixture('adapters/livetex/__fixtures__/dialog_assigned.json'),
};
const CHATVISOR = {
  conversation: fixture('adapters/chatvisor/__fixtures__/webhook-conversation-new.json'),
  message: fixture('adapters/chatvisor/__fixtures__/webhook-message.json'),
};

/** Text that has broken parsers, stores and screens before. */
const EDGE_TEXT = [
  '\ud83d', // lone high surrogate
  'a\udc00b', // lone low surrogate
  'line\u2028sep\u2029',
  'nul\u0000byte',
  '\u202egnp.exe',
  'e\u0301\u0301\u0301', // combining marks
  '🫖'.repeat(40),
  `${'x'.repeat(99)}🫖`, // an emoji across a 100-unit cut
  `${'x'.repeat(255)}🫖`,
  `${'я'.repeat(1023)}🫖`,
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '',
  ' ',
  'null',
  '0',
];
const edgeText = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_TEXT) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.integer({ min: 2_000, max: 70_000 }).map((n) => '🫖x'.repeat(n).slice(0, n)) },
);
/** Values a field of another type may get instead. */
const wrongType: fc.Arbitrary<Json> = fc.oneof(
  edgeText,
  fc.constantFrom<Json>(-0, 1e308, -1, 0, 1.5, true, false, null, [], {}, ['a'], { a: 1 }),
  fc.constantFrom<Json>('1e400', '-0', '9007199254740993', '12'),
  fc.constantFrom<Json>(
    JSON.parse('{"__proto__":{"x":1}}') as Json,
    JSON.parse('{"constructor":"c","toString":"t"}') as Json,
  ),
);

/** A person: ids that are valid everywhere, so a read-back knows what must be there. */
interface Person {
  token: string;
  numeric: boolean;
  email: string;
  phone: string;
  name: string;
}
const person: fc.Arbitrary<Person> = fc.record({
  token: fc.stringMatching(/^[a-z][a-z0-9]{5,12}$/),
  /** Sites that use their numeric customer ids as person ids (Jivo's user_token, LiveTex's personId). */
  numeric: fc.boolean(),
  email: fc
    .tuple(fc.stringMatching(/^[a-z][a-z0-9.]{2,10}[a-z]$/), fc.constantFrom('', ' ', '\t'), fc.boolean())
    .map(([local, pad, upper]) => `${pad}${upper ? local.toUpperCase() : local}@Example.org${pad}`),
  phone: fc
    .tuple(fc.integer({ min: 900, max: 999 }), fc.integer({ min: 1_000_000, max: 9_999_999 }))
    .map(([code, rest]) => `+7 ${code} ${rest}`),
  name: edgeText,
});

type Vendor = 'jivochat' | 'livetex' | 'chatvisor';
/** One request of a sequence: who, which event, which chat, and mutations of other fields. */
interface Step {
  vendor: Vendor;
  who: number;
  event: string;
  chat: number;
  mutations: Array<[string, Json]>;
  /** The raw JSON text gets a duplicate key, a 1e400 or a -0 spliced in. */
  splice: 'none' | 'duplicate' | 'inf' | 'neg0';
  /** How this event spells the person's ids: the same person, as different systems write them. */
  spelling: { token: 'plain' | 'padded' | 'nfd' | 'number'; phone: 'plain' | 'trunk' | 'number' | 'digits' };
}

const JIVO_MUTABLE = [
  'visitor.name',
  'visitor.description',
  'visitor.number',
  'visitor.chats_count',
  'visitor.social',
  'organization',
  'organization.name',
  'status.title',
  'tags',
  'tags.0.title',
  'topic.title',
  'department.name',
  'session.utm',
  'session.utm_json',
  'session.geoip.city',
  'page.url',
  'page.title',
  'agent.name',
  'agent.id',
  'assigned_agent',
  'chat_id',
  'widget_id',
  'attributes',
  'crm_hint',
  'message',
  'plain_messages',
  'chat',
  'chat.messages',
];
const LIVETEX_MUTABLE = [
  'Conversation.id',
  'Conversation.topic',
  'Conversation.createdAt',
  'Conversation.closedAt',
  'Conversation.rate',
  'Conversation.rate.value',
  'Conversation.messages',
  'Conversation.messages.0.text',
  'Conversation.messages.0.createdAt',
  'Conversation.messages.1.author',
  'discourser.name',
  'discourser.attributes',
  'discourser.contacts.0',
  'discourser.contacts.0.type',
  'employee',
  'employee.0.name',
];
const CHATVISOR_MUTABLE = [
  'text',
  'sender',
  'createdAt',
  'status',
  'lastMessage',
  'lastMessage.text',
  'labels',
];

function set(document: Json, path: string, value: Json): Json {
  const [head, ...rest] = path.split('.') as [string, ...string[]];
  const container: Record<string, Json> =
    document !== null && typeof document === 'object'
      ? Array.isArray(document)
        ? ([...document] as never)
        : { ...document }
      : {};
  const next = rest.length === 0 ? value : set(container[head] ?? null, rest.join('.'), value);
  Object.defineProperty(container, head, {
    value: next,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return container;
}

const step = (people: number): fc.Arbitrary<Step> =>
  fc.constantFrom<Vendor>('jivochat', 'livetex', 'chatvisor').chain((vendor) =>
    fc.record({
      vendor: fc.constant(vendor),
      who: fc.integer({ min: 0, max: people - 1 }),
      event: fc.constantFrom(
        ...Object.keys(vendor === 'jivochat' ? JIVO : vendor === 'livetex' ? LIVETEX : CHATVISOR),
      ),
      chat: fc.integer({ min: 1, max: 3 }),
      mutations: fc.array(
        fc.tuple(
          fc.constantFrom(
            ...(vendor === 'jivochat'
              ? JIVO_MUTABLE
              : vendor === 'livetex'
                ? LIVETEX_MUTABLE
                : CHATVISOR_MUTABLE),
          ),
          wrongType,
        ),
        { maxLength: 3 },
      ),
      splice: fc.constantFrom<Step['splice']>('none', 'none', 'none', 'duplicate', 'inf', 'neg0'),
      spelling: fc.record({
        token: fc.constantFrom<Step['spelling']['token']>('plain', 'padded', 'nfd', 'number'),
        phone: fc.constantFrom<Step['spelling']['phone']>('plain', 'trunk', 'number', 'digits'),
      }),
    }),
  );

/** The body for a step, and the identifiers it must leave on the person's contact. */
function build(s: Step, p: Person, run: number): { path: string; text: string; ids: string[] } {
  const key = `${run}-${s.who}`;
  // Each person's own chats: a chat id is the vendor's dedupe key (a reuse is a redelivery).
  const chatId = run * 100 + s.who * 10 + s.chat;
  // The person id: é (NFC) in every spelling but `number`, which is digits only.
  const tokenValue = `${p.token}-${key}-\u00e9`;
  const numericToken = 9_000_000_000 + run * 10 + s.who;
  // A redelivery of a dialog's event is deduplicated: a person's id must be one id in every
  // spelling, so a numeric one stays numeric (as a number or as text).
  const token: Json = p.numeric
    ? { plain: numericToken, padded: ` ${numericToken} `, nfd: String(numericToken), number: numericToken }[
        s.spelling.token
      ]
    : { plain: tokenValue, padded: ` ${tokenValue}\n`, nfd: tokenValue.normalize('NFD'), number: tokenValue }[
        s.spelling.token
      ];
  const tokenId = p.numeric ? `person:${numericToken}` : `person:${tokenValue}`;
  const digits = p.phone.replace(/\D/g, '');
  const phone: Json = {
    plain: p.phone,
    trunk: `8 (${digits.slice(1, 4)}) ${digits.slice(4, 7)}-${digits.slice(7, 9)}-${digits.slice(9)}`,
    number: Number(digits),
    digits,
  }[s.spelling.phone];
  let document: Json;
  let path: string;
  const ids: string[] = [];
  if (s.vendor === 'jivochat') {
    const base = JIVO[s.event as keyof typeof JIVO];
    document = set(base, 'user_token', token);
    document = set(document, 'chat_id', chatId);
    document = set(document, 'visitor.email', p.email.replace('@', `.${key}@`));
    document = set(document, 'visitor.phone', phone);
    document = set(document, 'visitor.name', p.name);
    // The fixtures' visitor number and offline message id would make every person one visitor.
    document = set(document, 'visitor.number', String(run * 10 + s.who));
    if (s.event === 'offline') document = set(document, 'offline_message_id', chatId);
    path = `/webhooks/jivochat/site/${TOKENS.jivochat}`;
    ids.push(
      tokenId,
      `email:${normalizeEmail(p.email.replace('@', `.${key}@`))}`,
      `phone:${normalizePhone(p.phone, 'RU')}`,
    );
  } else if (s.vendor === 'livetex') {
    const base = LIVETEX[s.event as keyof typeof LIVETEX];
    document = set(base, 'Conversation' in base ? 'Conversation.id' : 'conversation.id', chatId);
    document = set(document, 'discourser.personId', token);
    document = set(document, 'discourser.id', `lt-${p.token}-${key}`);
    document = set(document, 'discourser.visitorToken', `vt-${p.token}-${key}`);
    document = set(document, 'discourser.name', p.name);
    document = set(document, 'discourser.contacts', [
      { type: 'email', value: p.email.replace('@', `.${key}@`) },
      { type: 'phone', value: phone },
    ]);
    path = `/webhooks/livetex/app/${TOKENS.livetex}`;
    ids.push(
      tokenId,
      `email:${normalizeEmail(p.email.replace('@', `.${key}@`))}`,
      `phone:${normalizePhone(p.phone, 'RU')}`,
    );
  } else {
    const base = CHATVISOR[s.event as keyof typeof CHATVISOR];
    document = set(base, 'customerId', `cv-${p.token}-${key}`);
    path = `/webhooks/chatvisor/cv/${TOKENS.chatvisor}`;
    ids.push(`customer:cv:cv-${p.token}-${key}`);
  }
  // Mutations that would take the ids away are not applied: those ids are what is checked.
  for (const [at, value] of s.mutations) document = set(document, at, value);
  let text = JSON.stringify(document);
  if (s.splice === 'duplicate')
    text = text.replace(/^\{/, '{"widget_id":"dup","text":1,"Conversation":null,');
  if (s.splice === 'inf') text = text.replace(/\}$/, ',"extra":1e400}');
  if (s.splice === 'neg0') text = text.replace(/\}$/, ',"extra":-0}');
  // A mutation can make the payload one the vendor would not send (a chat_id of {}): then only
  // the general invariants hold, not the read-back.
  // A duplicate key or a new chat id can make the event another's: then only the general
  // invariants hold, not the read-back. Other fields do not change who it is about.
  // A Chatvisor message of another sender, or a body that is neither a conversation nor a
  // message, is rightly not on the customer's timeline.
  const changesWho = s.mutations.some(([at]) =>
    /^(chat_id|Conversation\.id|visitor\.number|Conversation|sender|text|status|discourser\.contacts.*)$/.test(
      at,
    ),
  );
  return { path, text, ids: changesWho || s.splice === 'duplicate' ? [] : ids };
}

/** A UTF-16 surrogate without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const wellFormed = (value: string) => value.replace(new RegExp(LONE_SURROGATE.source, 'g'), '\uFFFD');

/** JSON a strict reader (PHP's json_decode, serde_json) accepts: valid UTF-8, no lone surrogate. */
function strictJson(bytes: Buffer): string | null {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return 'not UTF-8';
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return `not JSON: ${(error as Error).message}`;
  }
  // A lone surrogate written as an escape (\ud83d) parses in JavaScript, not in strict readers.
  return LONE_SURROGATE.test(JSON.stringify(parsed)) ? 'a lone surrogate escape' : null;
}

describe('intake fuzz: mutated valid payloads in sequences, invariants after each', () => {
  let bridge: TestBridge;
  let fake: FakeChatvisor;

  beforeAll(async () => {
    fake = await startFakeChatvisor();
    bridge = await startTestBridge({
      store: 'memory',
      config: {
        console: { linkTtl: '1h' },
        channels: [
          { id: 'site', vendor: 'jivochat', token: TOKENS.jivochat, personIdFrom: 'user_token' },
          { id: 'app', vendor: 'livetex', token: TOKENS.livetex },
          fake.channel('cv', TOKENS.chatvisor),
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
  });

  async function send(path: string, text: string) {
    const response = await fetch(bridge.url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: text,
    });
    return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()) };
  }

  /** The newest journal entry, to tell whether a refusal added one. */
  async function newestJournalEntry(): Promise<string> {
    const answer = await bridge.admin('GET', '/api/v1/journal?limit=1');
    return JSON.stringify(answer.body.entries[0] ?? null);
  }

  it('never a 5xx, named 4xx journalled, strict JSON answers, contacts read back whole', async () => {
    let run = 0;
    const result = await fc.check(
      fc.asyncProperty(
        fc
          .array(person, { minLength: 2, maxLength: 3 })
          .chain((people) =>
            fc.tuple(fc.constant(people), fc.array(step(people.length), { minLength: 1, maxLength: 6 })),
          ),
        async ([people, steps]) => {
          run += 1;
          const expected = new Map<number, Set<string>>();
          const trace: string[] = [];
          // The same event of the same chat again is a redelivery, deduplicated as one: what it
          // adds is not expected on the contact (vendors resend the same payload).
          const delivered = new Set<string>();
          for (const s of steps) {
            const p = people[s.who]!;
            const { path, text, ids } = build(s, p, run);
            const journalBefore = await newestJournalEntry();
            const { status, bytes } = await send(path, text);
            trace.push(
              `${s.vendor} ${s.event} who=${s.who} chat=${s.chat} ${JSON.stringify(s.spelling)} splice=${s.splice} mutated=${JSON.stringify(s.mutations).slice(0, 200)} → ${status} ${bytes.toString().slice(0, 120)}`,
            );
            const shown = `${s.vendor} ${s.event} ${text.slice(0, 400)}`;
            expect(status, `${bytes.toString().slice(0, 300)} for ${shown}`).toBeLessThan(500);
            const problem = strictJson(bytes);
            expect(problem, `answer ${bytes.toString().slice(0, 200)} for ${shown}`).toBeNull();
            if (status === 200 && s.vendor === 'jivochat') {
              // What Jivo shows the agent: our documented answer shape, within our own limits.
              const answer = jivoAnswerSchema.safeParse(JSON.parse(bytes.toString()));
              expect(answer.success, `Jivo answer ${bytes.toString().slice(0, 300)} for ${shown}`).toBe(true);
              const info = answer.data?.contact_info;
              expect([...(info?.name ?? '')].length, shown).toBeLessThanOrEqual(ANSWER_LIMITS.name);
              expect([...(info?.phone ?? '')].length, shown).toBeLessThanOrEqual(ANSWER_LIMITS.phone);
              for (const item of answer.data?.custom_data ?? []) {
                expect([...item.title].length, shown).toBeLessThanOrEqual(ANSWER_LIMITS.title);
                expect([...item.content].length, shown).toBeLessThanOrEqual(ANSWER_LIMITS.content);
              }
            }
            if (status >= 400) {
              const body = JSON.parse(bytes.toString());
              expect(body.error?.code, shown).toEqual(expect.any(String));
              expect(body.error?.message, shown).toEqual(expect.any(String));
              expect(await newestJournalEntry(), `journal for ${status} ${shown}`).not.toBe(journalBefore);
            } else if (ids.length > 0 && !delivered.has(`${s.vendor} ${s.event} ${s.who} ${s.chat}`)) {
              // A Chatvisor customer joins the person only through a profile read from the API
              // (the fake knows none of these customers): a contact of its own.
              const slot = s.vendor === 'chatvisor' ? 100 + s.who : s.who;
              const set = expected.get(slot) ?? new Set<string>();
              for (const id of ids) set.add(id);
              expected.set(slot, set);
            }
            if (status === 200) delivered.add(`${s.vendor} ${s.event} ${s.who} ${s.chat}`);
          }
          // Read back: every identifier on one contact per person, indexes consistent, no merge
          // of two people (their ids are disjoint by construction).
          const owner = new Map<string, number>();
          for (const [who, ids] of expected) {
            const contactIds = new Set<string>();
            for (const id of ids) {
              const found = await bridge.admin('GET', `/api/v1/contacts?identity=${encodeURIComponent(id)}`);
              expect(found.status, `${id}: ${JSON.stringify(found.body)}`).toBe(200);
              expect(found.body.contacts.length, `contacts with ${id} after\n${trace.join('\n')}`).toBe(1);
              const contact = found.body.contacts[0];
              contactIds.add(contact.id);
              const previous = owner.get(contact.id);
              if (previous !== undefined && previous !== who) {
                throw new Error(
                  `people ${previous} and ${who} share no id but are one contact ${contact.id}`,
                );
              }
              owner.set(contact.id, who);
              // Every identifier of the contact leads back to it.
              for (const identity of contact.identities) {
                const label = identity.channelId
                  ? `${identity.kind}:${identity.channelId}:${identity.value}`
                  : `${identity.kind}:${identity.value}`;
                const back = await bridge.admin(
                  'GET',
                  `/api/v1/contacts?identity=${encodeURIComponent(label)}`,
                );
                expect(back.status, label).toBe(200);
                expect(
                  back.body.contacts.map((each: { id: string }) => each.id),
                  `index of ${label}`,
                ).toContain(contact.id);
              }
              // As the bytes come: a reader of the admin API may be a strict one.
              for (const path of [
                `/api/v1/contacts/${contact.id}`,
                `/api/v1/contacts/${contact.id}/timeline`,
              ]) {
                const read = await fetch(bridge.url + path, {
                  headers: { authorization: `Bearer ${bridge.adminToken}` },
                });
                const bytes = Buffer.from(await read.arrayBuffer());
                expect(read.status, path).toBe(200);
                expect(strictJson(bytes), `${path}: ${bytes.toString().slice(0, 300)}`).toBeNull();
              }
            }
            expect(contactIds.size, `person ${who}: ${[...ids].join(', ')}`).toBe(1);
          }
        },
      ),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    if (result.failed) {
      throw new Error(
        `${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}\n` +
          `(replay: FUZZ_SEED=${result.seed} fast-check path "${result.counterexamplePath}")`,
      );
    }
  }, 120_000);

  it('admin API: fuzzed query parameters, path ids and bodies get 200 or a named 4xx, never a 5xx', async () => {
    // One contact to aim at, with a timeline.
    const seeded = await send(
      `/webhooks/jivochat/site/${TOKENS.jivochat}`,
      JSON.stringify(set(JIVO.accepted, 'user_token', 'admin-fuzz-person')),
    );
    expect(seeded.status).toBe(200);
    const found = await bridge.admin('GET', '/api/v1/contacts?identity=person:admin-fuzz-person');
    const contactId: string = found.body.contacts[0].id;

    /** A query value as it goes on the wire: percent-encoded text, or raw escapes that decode to junk. */
    const queryValue = fc.oneof(
      edgeText.map((value) => encodeURIComponent(wellFormed(value))),
      fc.constantFrom(
        '%FF',
        '%ED%A0%80', // a UTF-8-encoded lone surrogate
        '%C0%80',
        '%',
        '%%',
        '%2',
        '%00',
        '1e400',
        '-0',
        '0x10',
        '__proto__',
        'constructor',
        'toString',
        'hasOwnProperty',
        'email:',
        'person:',
        'person:%20',
        'visitor:site:',
        'visitor::x',
        ':',
        '::',
        'a'.repeat(5000),
        '9'.repeat(20),
        '1',
        '200',
        '201',
        '50',
      ),
    );
    const queryKey = fc.constantFrom(
      'email',
      'phone',
      'identity',
      'limit',
      'before',
      'channel',
      'kind',
      'type',
      'state',
      'destination',
      '__proto__',
      'constructor',
      'toString',
      'limit[]',
      'a[b]',
      '',
    );
    const query = fc
      .array(fc.tuple(queryKey, queryValue), { maxLength: 4 })
      .map((pairs) =>
        pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${v}`).join('&')}`,
      );
    const idSegment = fc.oneof(
      fc.constant(encodeURIComponent(contactId)),
      queryValue,
      fc.constantFrom('%2F', '..', '%2e%2e', 'c_1', `${encodeURIComponent(contactId)}%00`),
    );
    const body = fc.oneof(
      fc.jsonValue().map((value) => JSON.stringify(value)),
      wrongType.map((value) => JSON.stringify({ recordId: value })),
      wrongType.map((value) => JSON.stringify({ identifier: { kind: value, value: 'x' } })),
      wrongType.map((value) => JSON.stringify({ identifier: { kind: 'person', value } })),
      wrongType.map((value) =>
        JSON.stringify({ identifier: { kind: 'visitor', value: 'x', channelId: value } }),
      ),
      fc.constantFrom(
        '',
        '{',
        '{"recordId":"a","recordId":"b"}',
        '{"__proto__":{"recordId":"x"}}',
        '[]',
        'null',
      ),
    );
    const request: fc.Arbitrary<{ method: string; path: string; body?: string }> = fc.oneof(
      query.map((q) => ({ method: 'GET', path: `/api/v1/contacts${q}` })),
      fc.tuple(idSegment, query).map(([id, q]) => ({ method: 'GET', path: `/api/v1/contacts/${id}${q}` })),
      fc
        .tuple(idSegment, query)
        .map(([id, q]) => ({ method: 'GET', path: `/api/v1/contacts/${id}/timeline${q}` })),
      fc
        .tuple(idSegment, body)
        .map(([id, b]) => ({ method: 'POST', path: `/api/v1/contacts/${id}/unmerge`, body: b })),
      query.map((q) => ({ method: 'GET', path: `/api/v1/journal${q}` })),
      query.map((q) => ({ method: 'GET', path: `/api/v1/identity/conflicts${q}` })),
      query.map((q) => ({ method: 'GET', path: `/api/v1/deliveries${q}` })),
      query.map((q) => ({ method: 'GET', path: `/api/v1/channels${q}` })),
    );
    const statuses = new Map<number, number>();
    const result = await fc.check(
      fc.asyncProperty(request, async (each) => {
        const response = await fetch(bridge.url + each.path, {
          method: each.method,
          headers: {
            authorization: `Bearer ${bridge.adminToken}`,
            ...(each.body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(each.body === undefined ? {} : { body: each.body }),
        });
        const bytes = Buffer.from(await response.arrayBuffer());
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        const shown = `${each.method} ${each.path.slice(0, 300)} ${each.body?.slice(0, 200) ?? ''}`;
        expect(response.status, `${bytes.toString().slice(0, 300)} for ${shown}`).toBeLessThan(500);
        expect(strictJson(bytes), `answer ${bytes.toString().slice(0, 200)} for ${shown}`).toBeNull();
        if (response.status >= 400) {
          const answer = JSON.parse(bytes.toString());
          expect(answer.error?.code, shown).toEqual(expect.any(String));
          expect(answer.error?.message, shown).toEqual(expect.any(String));
        }
      }),
      { numRuns: RUNS * 4, seed: SEED, endOnFailure: true },
    );
    if (result.failed) {
      throw new Error(
        `${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}\n` +
          `(replay: FUZZ_SEED=${result.seed} fast-check path "${result.counterexamplePath}")`,
      );
    }
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(0);
  }, 120_000);

  it('console: fuzzed filters, ids and forms of a signed-in browser never get a 5xx', async () => {
    const { cookie, csrf } = await signIn(bridge.url, bridge.adminToken);
    const consoleStatuses = new Map<number, number>();
    const value = fc.oneof(
      edgeText.map((text) => wellFormed(text)),
      fc.constantFrom('__proto__', 'constructor', '1e400', '-0', '', 'site', 'failed', 'rejected', 'c_1'),
    );
    const raw = fc.constantFrom('%FF', '%ED%A0%80', '%', '%%', '%00', '..', '%2F');
    const param = fc.oneof(
      value.map((text) => encodeURIComponent(text)),
      raw,
    );
    const key = fc.constantFrom(
      'q',
      'email',
      'phone',
      'identity',
      'channel',
      'kind',
      'state',
      'destination',
      'type',
      'before',
      'notice',
      'replayed',
      'next',
      '__proto__',
    );
    const query = fc
      .array(fc.tuple(key, param), { maxLength: 3 })
      .map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`));
    const form = fc.dictionary(
      fc.constantFrom('recordId', 'destination', 'ttl', 'dryRun', 'token', 'next', '__proto__'),
      value,
      { maxKeys: 3 },
    );
    const request: fc.Arbitrary<{ path: string; form?: Record<string, string> }> = fc.oneof(
      fc
        .tuple(fc.constantFrom('contacts', 'journal', 'deliveries', 'channels', 'status'), query)
        .map(([page, q]) => ({
          path: `/console/${page}${q}`,
        })),
      fc.tuple(param, query).map(([id, q]) => ({ path: `/console/contacts/${id}${q}` })),
      fc.tuple(param, query).map(([id, q]) => ({ path: `/console/deliveries/${id}${q}` })),
      fc.tuple(param, form).map(([id, f]) => ({ path: `/console/contacts/${id}/unmerge`, form: f })),
      form.map((f) => ({ path: '/console/deliveries/replay', form: f })),
      fc.tuple(param, form).map(([id, f]) => ({ path: `/console/deliveries/${id}/replay`, form: f })),
      fc.tuple(fc.constantFrom('site', 'app', 'cv'), param, form).map(([channel, kid, f]) => ({
        path: `/console/channels/${channel}/keys/${kid}/revoke`,
        form: f,
      })),
    );
    const result = await fc.check(
      fc.asyncProperty(request, async (each) => {
        const page = await consoleRequest(bridge.url, each.path, {
          cookie,
          ...(each.form ? { form: { _csrf: csrf, ...each.form } } : {}),
        });
        consoleStatuses.set(page.status, (consoleStatuses.get(page.status) ?? 0) + 1);
        // Still signed in: a page or a redirect within the console, never back to the sign-in.
        expect(page.location ?? '', each.path).not.toMatch(/sign-in/);
        expect(
          page.status,
          `${page.text.slice(0, 300)} for ${each.path} ${JSON.stringify(each.form ?? {})}`,
        ).toBeLessThan(500);
      }),
      { numRuns: RUNS * 2, seed: SEED, endOnFailure: true },
    );
    if (result.failed) {
      throw new Error(
        `${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}\n` +
          `(replay: FUZZ_SEED=${result.seed} fast-check path "${result.counterexamplePath}")`,
      );
    }
    expect(consoleStatuses.get(200) ?? 0, JSON.stringify([...consoleStatuses])).toBeGreaterThan(0);
  }, 120_000);
});
