import { readFileSync } from 'node:fs';
import { type FakeAmo, startFakeAmo } from '../../adapters/amocrm/test-support/fake-amocrm.js';
import { type FakeBitrix24, startFakeBitrix24 } from '../../adapters/bitrix24/test-support/fake-bitrix24.js';
import {
  EXAMPLE_AMOCRM_PIPELINES,
  EXAMPLE_BITRIX24_CATEGORIES,
} from '../../adapters/test-support/fake-crms.js';

/**
 * The two fake CRMs behind one shape, so the same scenarios run against amoCRM and Bitrix24:
 * a destination config pointing at the fake, and what the fake holds, in CRM-neutral terms.
 */
export const AMO_TOKEN = 'amo-long-lived-token-0123456789abcdef';
export const B24_CODE = 'b24secretcode0123456789';

export interface CrmWorld {
  name: 'amocrm' | 'bitrix24';
  /** Where the fake listens (http://127.0.0.1:port). */
  url: string;
  destination(overrides?: Record<string, unknown>): Record<string, unknown>;
  /** What the CRM holds, in neutral terms. */
  state(): {
    contacts: { id: string; phones: string[]; emails: string[] }[];
    deals: {
      id: string;
      pipeline: string;
      stage: string;
      responsible: string;
      source: string;
      contacts: string[];
      utmSource: string | undefined;
    }[];
    notes: { on: string; text: string }[];
    tasks: { on: string; text: string; responsible: string }[];
  };
  contactUrl(id: string): string;
  /** Secrets that must never show up anywhere. */
  secrets: string[];
  /** Make the next `times` calls that create something of `what` fail with a 5xx. */
  failCreate(what: 'deal' | 'task' | 'note' | 'contact', times: number): void;
  /**
   * A barrier in the fake: the next `count` contact searches (`search`) or contact reads by id
   * (`read`) are held until all `count` have arrived, then answered at once. Returns how many
   * arrived so far.
   */
  hold(what: 'search' | 'read', count: number): () => number;
  /** Make the next `times` calls answer the CRM's rate-limit answer, with Retry-After 1. */
  rateLimit(times: number): void;
  rejectCredential(on: boolean): void;
  requestCount(): number;
  /** How many times the connector asked whether a deal still exists (dealExists). */
  dealChecks(): number;
  /** A contact made by hand in the CRM, with a phone in a local format; returns its id. */
  seedContact(phone: string, email: string): string;
  /** The contact disappears from the CRM, as a manager's "merge duplicates" or delete does. */
  removeContact(id: string): void;
  /** The deal disappears from the CRM, as a manager's delete does. */
  removeDeal(id: string): void;
  /** Matches the HTTP request that creates one `what` (for a proxy in front of the fake). */
  isCreate(what: 'deal' | 'task' | 'note' | 'contact'): (method: string, path: string) => boolean;
  /** Destination overrides that send the connector's requests to `url` instead of the fake. */
  via(url: string): Record<string, unknown>;
  close(): Promise<void>;
}

/** Pipelines / users the scenarios use: agent dmitry@store.example is a CRM user in both. */
export async function amoWorld(): Promise<CrmWorld & { fake: FakeAmo }> {
  const fake = await startFakeAmo({
    token: AMO_TOKEN,
    users: [
      { id: 501, name: 'Default Manager', email: 'manager@shop.example' },
      { id: 502, name: 'Dmitry Volkov', email: 'Dmitry@Store.example' },
      // In the CRM under another e-mail than in `agents`: found by agents[].crmUserId only.
      { id: 1001, name: 'Nina Sokolova', email: 'n.sokolova@shop.example' },
    ],
    pipelines: EXAMPLE_AMOCRM_PIPELINES,
  });
  const creates: Record<string, string> = {
    deal: '/api/v4/leads',
    task: '/api/v4/tasks',
    note: '/api/v4/leads/notes',
    contact: '/api/v4/contacts',
  };
  return {
    name: 'amocrm',
    fake,
    url: fake.url,
    destination: (overrides = {}) => ({
      id: 'crm',
      kind: 'amocrm',
      baseUrl: fake.url,
      token: AMO_TOKEN,
      crm: {
        pipeline: { byChannel: { 'shop-site': 7001 }, default: 7000 },
        stage: { byChannel: { 'shop-site': 112 } },
        responsible: { default: 501 },
        offlineTask: { text: 'Offline message: {text}', dueIn: '1h' },
        rateLimit: 50,
      },
      ...overrides,
    }),
    state: () => ({
      contacts: fake.contacts.map((contact) => ({
        id: String(contact.id),
        phones: (contact.fields.PHONE ?? []).map((value) => value.value),
        emails: (contact.fields.EMAIL ?? []).map((value) => value.value),
      })),
      deals: fake.leads.map((lead) => ({
        id: String(lead.id),
        pipeline: String(lead.pipeline_id),
        stage: String(lead.status_id),
        responsible: String(lead.responsible_user_id),
        source: lead.tags.join(','),
        contacts: lead.contacts.map(String),
        utmSource: lead.fields.UTM_SOURCE,
      })),
      notes: fake.notes.map((note) => ({
        on: `${note.entity_type === 'leads' ? 'deal' : 'contact'}:${note.entity_id}`,
        text: note.text,
      })),
      tasks: fake.tasks.map((task) => ({
        on: `${task.entity_type === 'leads' ? 'deal' : 'contact'}:${task.entity_id}`,
        text: task.text,
        responsible: String(task.responsible_user_id),
      })),
    }),
    contactUrl: (id) => `${fake.url}/contacts/detail/${id}`,
    secrets: [AMO_TOKEN],
    failCreate(what, times) {
      fake.failNext(
        times,
        { status: 502, body: '<html>Bad gateway</html>' },
        (method, path) => method === 'POST' && path === creates[what],
      );
    },
    hold(what, count) {
      const barrier = fake.hold(
        count,
        (method, path) =>
          method === 'GET' &&
          (what === 'search'
            ? path.startsWith('/api/v4/contacts?query=')
            : /^\/api\/v4\/contacts\/\d+$/.test(path)),
      );
      return barrier.arrived;
    },
    rateLimit(times) {
      fake.failNext(times, { status: 429, body: 'Too Many Requests', headers: { 'retry-after': '1' } });
    },
    rejectCredential(on) {
      fake.rejectToken = on;
    },
    requestCount: () => fake.requests.length,
    dealChecks: () =>
      fake.requests.filter((seen) => seen.method === 'GET' && seen.path.includes('/leads?filter[id][]='))
        .length,
    seedContact(phone, email) {
      fake.contacts.push({
        id: 900,
        name: 'Made by hand',
        responsible_user_id: 501,
        fields: { PHONE: [{ value: phone, enum_code: 'MOB' }], EMAIL: [{ value: email, enum_code: 'PRIV' }] },
        tags: [],
        leads: [],
      });
      return '900';
    },
    removeContact(id) {
      fake.contacts.splice(
        fake.contacts.findIndex((contact) => String(contact.id) === id),
        1,
      );
    },
    removeDeal(id) {
      fake.leads.splice(
        fake.leads.findIndex((lead) => String(lead.id) === id),
        1,
      );
      for (const contact of fake.contacts)
        contact.leads = contact.leads.filter((lead) => String(lead) !== id);
    },
    isCreate: (what) => (method, path) => method === 'POST' && path === creates[what],
    via: (url) => ({ baseUrl: url }),
    close: () => fake.close(),
  };
}

export async function bitrixWorld(): Promise<CrmWorld & { fake: FakeBitrix24 }> {
  const fake = await startFakeBitrix24({
    code: B24_CODE,
    users: [
      { ID: '1', NAME: 'Portal Admin', EMAIL: 'admin@shop.example' },
      { ID: '7', NAME: 'Dmitry', EMAIL: 'DMITRY@store.example' },
      // In the CRM under another e-mail than in `agents`: found by agents[].crmUserId only.
      { ID: '1001', NAME: 'Nina', EMAIL: 'n.sokolova@shop.example' },
    ],
    categories: EXAMPLE_BITRIX24_CATEGORIES,
  });
  const creates: Record<string, string> = {
    deal: 'crm.deal.add',
    task: 'tasks.task.add',
    note: 'crm.timeline.comment.add',
    contact: 'crm.contact.add',
  };
  return {
    name: 'bitrix24',
    fake,
    url: fake.url,
    destination: (overrides = {}) => ({
      id: 'crm',
      kind: 'bitrix24',
      webhookUrl: fake.webhookUrl,
      crm: {
        pipeline: { byChannel: { 'shop-site': 9 }, default: 0 },
        stage: { byChannel: { 'shop-site': 'C9:TALK' } },
        responsible: { default: 1 },
        rateLimit: 50,
      },
      ...overrides,
    }),
    state: () => ({
      contacts: fake.contacts.map((contact) => ({
        id: contact.ID,
        phones: contact.PHONE.map((item) => item.VALUE),
        emails: contact.EMAIL.map((item) => item.VALUE),
      })),
      deals: fake.deals.map((deal) => ({
        id: deal.ID,
        pipeline: deal.CATEGORY_ID,
        stage: deal.STAGE_ID,
        responsible: deal.ASSIGNED_BY_ID,
        source: `${deal.SOURCE_ID}/${deal.SOURCE_DESCRIPTION}`,
        contacts: deal.CONTACT_IDS,
        utmSource: deal.UTM.UTM_SOURCE,
      })),
      notes: fake.comments.map((comment) => ({
        on: `${comment.ENTITY_TYPE}:${comment.ENTITY_ID}`,
        text: comment.COMMENT,
      })),
      tasks: fake.tasks.map((task) => ({
        on: task.crm.map((ref) => ref.replace(/^D_/, 'deal:').replace(/^C_/, 'contact:')).join(','),
        text: task.description,
        responsible: task.responsibleId,
      })),
    }),
    contactUrl: (id) => `${fake.url}/crm/contact/details/${id}/`,
    secrets: [B24_CODE],
    failCreate(what, times) {
      fake.failNext(
        times,
        { status: 500, body: '{"error":"INTERNAL_SERVER_ERROR","error_description":"Internal error"}' },
        (method) => method === creates[what],
      );
    },
    hold(what, count) {
      // Bitrix24 searches through batches of crm.duplicate.findbycomm commands.
      const barrier = fake.hold(count, (method, body) =>
        what === 'search'
          ? method === 'batch' && body.includes('crm.duplicate.findbycomm')
          : method === 'crm.contact.get',
      );
      return barrier.arrived;
    },
    rateLimit(times) {
      fake.failNext(times, {
        status: 503,
        body: '{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}',
        headers: { 'retry-after': '1' },
      });
    },
    rejectCredential(on) {
      fake.rejectCode = on;
    },
    requestCount: () => fake.requests.length,
    dealChecks: () =>
      fake.requests.filter((seen) => seen.path.endsWith('/crm.deal.list.json') && seen.body.includes('"ID"'))
        .length,
    seedContact(phone, email) {
      fake.contacts.push({
        ID: '90',
        NAME: 'Made by hand',
        ASSIGNED_BY_ID: '1',
        PHONE: [{ ID: '91', VALUE: phone, VALUE_TYPE: 'MOBILE' }],
        EMAIL: [{ ID: '92', VALUE: email, VALUE_TYPE: 'HOME' }],
        SOURCE_ID: 'CALL',
        SOURCE_DESCRIPTION: '',
      });
      return '90';
    },
    removeContact(id) {
      fake.contacts.splice(
        fake.contacts.findIndex((contact) => contact.ID === id),
        1,
      );
    },
    removeDeal(id) {
      fake.deals.splice(
        fake.deals.findIndex((deal) => deal.ID === id),
        1,
      );
    },
    isCreate: (what) => (_method, path) => path.endsWith(`/${creates[what]}.json`),
    via: (url) => ({ webhookUrl: fake.webhookUrl.replace(fake.url, url) }),
    close: () => fake.close(),
  };
}

const FIXTURES = new URL('../../adapters/jivochat/__fixtures__/', import.meta.url);

/** JivoChat payloads of one new visitor: a chat, the finished chat, then an offline message. */
export function jivoPayloads(
  visitor = { name: 'Svetlana Orlova', email: 's.orlova@example.org', phone: '+79057770123' },
  chatId = 90320,
) {
  const load = (name: string) =>
    JSON.parse(readFileSync(new URL(name, FIXTURES), 'utf8')) as Record<string, any>;
  // Jivo's visitor number identifies a visitor within the channel: one per person here.
  const number = String(
    [...visitor.email].reduce((hash, char) => (hash * 31 + char.charCodeAt(0)) % 1_000_000, 7),
  );
  const accepted = load('chat_accepted.json');
  accepted.visitor = { ...accepted.visitor, ...visitor, number, phone: '8 (905) 777-01-23' };
  if (visitor.phone !== '+79057770123') accepted.visitor.phone = visitor.phone;
  accepted.chat_id = chatId;
  accepted.user_token = null;
  const finished = load('chat_finished.json');
  finished.visitor = { ...finished.visitor, ...visitor, number };
  finished.chat_id = chatId;
  const offline = load('offline_message.json');
  offline.visitor = { ...offline.visitor, ...visitor, number };
  offline.chat_id = chatId + 1;
  offline.offline_message_id = chatId * 1000 + 1;
  return { accepted, finished, offline };
}
