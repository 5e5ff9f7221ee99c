import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequestBarrier, type RequestBarrier } from '../../../test/support/barrier.js';
import { tokenExpiry } from '../api.js';

/**
 * A stateful fake amoCRM account on loopback, following the documented shapes
 * (../shared/vendors/amocrm.md §7): Bearer token, HAL `_embedded` wrappers, 204 on an empty
 * search, replace semantics for multitext PATCH, `/leads/complex` as a bare array, 400
 * `validation-errors` with dot paths, 403 users for a non-admin token, non-JSON 429.
 * Lists of a lead's or contact's tasks and notes (newest first on `order[id]=desc`), and
 * `created_at` on what it makes, let a retry find what a create whose answer was lost made.
 * Fault switches: `failNext(n, answer, match?)`, `rejectToken`, `nonAdminToken`. A barrier,
 * `hold(n, match)`, keeps the matching requests unanswered until `n` of them have arrived, then
 * answers them all (from the state as it is then): two instances' lookups made to overlap
 * without a sleep.
 */

export interface FakeValue {
  value: string;
  enum_code?: string;
}
export interface FakeAmoContact {
  id: number;
  name: string;
  responsible_user_id: number;
  fields: Record<string, FakeValue[]>;
  tags: string[];
  leads: number[];
  /** Unix seconds; contacts seeded by tests may leave it out. */
  created_at?: number;
}
export interface FakeAmoLead {
  id: number;
  name: string;
  pipeline_id: number;
  status_id: number;
  responsible_user_id: number;
  contacts: number[];
  tags: string[];
  fields: Record<string, string>;
  created_at: number;
}
export interface FakeAmoTask {
  id: number;
  text: string;
  complete_till: number;
  entity_id: number;
  entity_type: string;
  responsible_user_id: number;
  created_at: number;
}
export interface FakeAmoNote {
  id: number;
  entity_type: string;
  entity_id: number;
  note_type: string;
  text: string;
  created_at: number;
}
export interface FakeAnswer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}
export interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  body: string;
}

export interface FakeAmoOptions {
  token: string;
  users?: { id: number; name: string; email: string; active?: boolean }[];
  pipelines?: { id: number; name: string; statuses: { id: number; name: string; type?: number }[] }[];
  /** Lead custom-field codes the account has (UTM tracking fields). */
  leadFieldCodes?: string[];
}

export interface FakeAmo {
  url: string;
  token: string;
  contacts: FakeAmoContact[];
  leads: FakeAmoLead[];
  tasks: FakeAmoTask[];
  notes: FakeAmoNote[];
  requests: SeenRequest[];
  /** The next `times` requests (matching `match`, default any) get `answer` instead. */
  failNext(times: number, answer: FakeAnswer, match?: (method: string, path: string) => boolean): void;
  /**
   * A barrier: the next `count` requests matching `match` (path with its query) are held, none
   * answered until all `count` have arrived. `arrived()` says how many did so far.
   */
  hold(count: number, match: (method: string, path: string) => boolean): { arrived(): number };
  /** Every request is refused with 401 while true. */
  rejectToken: boolean;
  /** The users list is refused with 403 (amoCRM: admins only) while true. */
  nonAdminToken: boolean;
  close(): Promise<void>;
}

const hal = (embedded: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  _links: { self: { href: '/api/v4' } },
  ...extra,
  _embedded: embedded,
});

/**
 * A list answer as amoCRM gives it: ordered by id (`order[id]=desc` newest first), at most
 * `limit` (≤ 250), and 204 with no body when nothing matches [SDK].
 */
function listed<T extends { id: number }>(
  url: URL,
  name: string,
  found: T[],
  shape: (item: T) => Record<string, unknown>,
): { status: number; json?: unknown } {
  if (found.length === 0) return { status: 204 };
  const desc = url.searchParams.get('order[id]') === 'desc';
  const sorted = [...found].sort((a, b) => (desc ? b.id - a.id : a.id - b.id));
  const limit = Math.min(250, Number(url.searchParams.get('limit') ?? 50));
  return { status: 200, json: hal({ [name]: sorted.slice(0, limit).map(shape) }) };
}

/** Multitext enum codes of the built-in fields [SDK]/[3P] (vendors/amocrm.md §2.3). */
const MULTITEXT_ENUMS: Record<'PHONE' | 'EMAIL', readonly string[]> = {
  PHONE: ['WORK', 'WORKDD', 'MOB', 'FAX', 'HOME', 'OTHER'],
  EMAIL: ['WORK', 'PRIV', 'OTHER'],
};

export async function startFakeAmo(options: FakeAmoOptions): Promise<FakeAmo> {
  const users = options.users ?? [{ id: 501, name: 'Default Manager', email: 'manager@shop.example' }];
  const pipelines = options.pipelines ?? [
    {
      id: 7000,
      name: 'Main',
      statuses: [
        { id: 100, name: 'Incoming', type: 1 },
        { id: 101, name: 'New' },
        { id: 142, name: 'Won' },
        { id: 143, name: 'Lost' },
      ],
    },
  ];
  const leadFieldCodes = options.leadFieldCodes ?? [
    'UTM_SOURCE',
    'UTM_MEDIUM',
    'UTM_CAMPAIGN',
    'UTM_CONTENT',
    'UTM_TERM',
  ];
  let nextId = 1000;
  const faults: { times: number; answer: FakeAnswer; match: (method: string, path: string) => boolean }[] =
    [];
  const barriers: RequestBarrier<[method: string, path: string]>[] = [];

  const fake: FakeAmo = {
    url: '',
    token: options.token,
    contacts: [],
    leads: [],
    tasks: [],
    notes: [],
    requests: [],
    rejectToken: false,
    nonAdminToken: false,
    failNext(times, answer, match = () => true) {
      faults.push({ times, answer, match });
    },
    hold(count, match) {
      const barrier = createRequestBarrier(count, match);
      barriers.push(barrier);
      return { arrived: barrier.arrived };
    },
    close: async () => {},
  };

  const now = () => Math.floor(Date.now() / 1000);
  const contactView = (contact: FakeAmoContact, withLeads: boolean) => ({
    id: contact.id,
    name: contact.name,
    responsible_user_id: contact.responsible_user_id,
    ...(contact.created_at !== undefined ? { created_at: contact.created_at } : {}),
    custom_fields_values: Object.entries(contact.fields)
      .filter(([, values]) => values.length > 0)
      .map(([code, values]) => ({
        field_id: code === 'PHONE' ? 264911 : 264913,
        field_code: code,
        field_type: 'multitext',
        values,
      })),
    _links: { self: { href: `${fake.url}/api/v4/contacts/${contact.id}` } },
    _embedded: {
      tags: contact.tags.map((name) => ({ name })),
      ...(withLeads ? { leads: contact.leads.map((id) => ({ id })) } : {}),
    },
  });

  function validation(requestId: string, path: string, code: string, detail: string) {
    return {
      status: 400,
      json: {
        'validation-errors': [{ request_id: requestId, errors: [{ code, path, detail }] }],
        title: 'Bad Request',
        type: 'https://httpstatus.es/400',
        status: 400,
        detail: 'Request validation failed',
      },
    };
  }

  type Result = { status: number; json?: unknown; text?: string; headers?: Record<string, string> };

  function multitext(item: Record<string, unknown>, index: number): Record<string, FakeValue[]> | Result {
    const out: Record<string, FakeValue[]> = {};
    const fields = (item.custom_fields_values ?? []) as { field_code?: string; values?: FakeValue[] }[];
    for (const [position, field] of fields.entries()) {
      if (field.field_code !== 'PHONE' && field.field_code !== 'EMAIL')
        return validation(
          String(item.request_id ?? index),
          `custom_fields_values.${position}.field_code`,
          'NotSupportedChoice',
          'The value you selected is not a valid choice.',
        );
      // A multitext value's type must be one of the field's enums (vendors/amocrm.md §2.3, §7):
      // the real API refuses an unknown enum_code, so the fake does too.
      const enums = MULTITEXT_ENUMS[field.field_code];
      for (const [at, value] of (field.values ?? []).entries()) {
        if (value.enum_code !== undefined && !enums.includes(value.enum_code))
          return validation(
            String(item.request_id ?? index),
            `custom_fields_values.${position}.values.${at}.enum_code`,
            'NotSupportedChoice',
            'The value you selected is not a valid choice.',
          );
      }
      out[field.field_code] = (field.values ?? []).map((value) => ({
        value: String(value.value),
        ...(value.enum_code ? { enum_code: value.enum_code } : {}),
      }));
    }
    return out;
  }

  function createLead(item: Record<string, unknown>, index: number): FakeAmoLead | Result {
    const pipelineId = item.pipeline_id === undefined ? pipelines[0]!.id : Number(item.pipeline_id);
    const pipeline = pipelines.find((entry) => entry.id === pipelineId);
    if (!pipeline)
      return validation(
        String(item.request_id ?? index),
        'pipeline_id',
        'NotSupportedChoice',
        'The value you selected is not a valid choice.',
      );
    let statusId = item.status_id === undefined ? undefined : Number(item.status_id);
    if (statusId === undefined) statusId = pipeline.statuses.find((status) => (status.type ?? 0) === 0)!.id;
    else if (!pipeline.statuses.some((status) => status.id === statusId))
      return validation(
        String(item.request_id ?? index),
        'status_id',
        'NotSupportedChoice',
        'The value you selected is not a valid choice.',
      );
    const responsible =
      item.responsible_user_id === undefined ? users[0]!.id : Number(item.responsible_user_id);
    if (!users.some((user) => user.id === responsible))
      return validation(
        String(item.request_id ?? index),
        'responsible_user_id',
        'NotSupportedChoice',
        'The value you selected is not a valid choice.',
      );
    const fields: Record<string, string> = {};
    for (const [position, field] of (
      (item.custom_fields_values ?? []) as { field_code?: string; values?: { value: unknown }[] }[]
    ).entries()) {
      if (!field.field_code || !leadFieldCodes.includes(field.field_code))
        return validation(
          String(item.request_id ?? index),
          `custom_fields_values.${position}.field_code`,
          'NotSupportedChoice',
          'The value you selected is not a valid choice.',
        );
      fields[field.field_code] = String(field.values?.[0]?.value ?? '');
    }
    const embedded = (item._embedded ?? {}) as { contacts?: { id: number }[]; tags?: { name: string }[] };
    const lead: FakeAmoLead = {
      id: nextId++,
      name: String(item.name ?? `Lead #${nextId}`),
      pipeline_id: pipelineId,
      status_id: statusId,
      responsible_user_id: responsible,
      contacts: (embedded.contacts ?? []).map((contact) => Number(contact.id)),
      tags: (embedded.tags ?? []).map((tag) => tag.name),
      fields,
      created_at: now(),
    };
    for (const contactId of lead.contacts) {
      const contact = fake.contacts.find((entry) => entry.id === contactId);
      if (!contact)
        return validation(
          String(item.request_id ?? index),
          '_embedded.contacts.0.id',
          'NotFound',
          'Contact not found',
        );
    }
    for (const contactId of lead.contacts)
      fake.contacts.find((entry) => entry.id === contactId)!.leads.push(lead.id);
    fake.leads.push(lead);
    return lead;
  }

  function createContact(item: Record<string, unknown>, index: number): FakeAmoContact | Result {
    const fields = multitext(item, index);
    if ('status' in fields && typeof fields.status === 'number') return fields as Result;
    const embedded = (item._embedded ?? {}) as { tags?: { name: string }[] };
    const contact: FakeAmoContact = {
      id: nextId++,
      name: String(item.name ?? [item.first_name, item.last_name].filter(Boolean).join(' ')),
      responsible_user_id:
        item.responsible_user_id === undefined ? users[0]!.id : Number(item.responsible_user_id),
      fields: fields as Record<string, FakeValue[]>,
      tags: (embedded.tags ?? []).map((tag) => tag.name),
      leads: [],
      created_at: now(),
    };
    fake.contacts.push(contact);
    return contact;
  }

  const isResult = (value: unknown): value is Result =>
    typeof (value as Result).status === 'number' && !('id' in (value as object));

  function route(method: string, url: URL, body: unknown): Result {
    const path = url.pathname.replace(/\/$/, '');
    const items = Array.isArray(body) ? (body as Record<string, unknown>[]) : [];
    if (method === 'GET' && path === '/api/v4/account')
      return {
        status: 200,
        json: { id: 31361463, name: 'Fake shop', subdomain: 'fake', current_user_id: users[0]!.id },
      };
    if (method === 'GET' && path === '/api/v4/users') {
      if (fake.nonAdminToken)
        return { status: 403, json: { title: 'Forbidden', status: 403, detail: 'Access denied' } };
      const page = Number(url.searchParams.get('page') ?? 1);
      const limit = Math.min(250, Number(url.searchParams.get('limit') ?? 50));
      const slice = users.slice((page - 1) * limit, page * limit);
      if (slice.length === 0) return { status: 204 };
      const more = page * limit < users.length;
      return {
        status: 200,
        json: {
          _page: page,
          _page_count: Math.ceil(users.length / limit),
          _links: {
            self: { href: url.href },
            ...(more ? { next: { href: `${fake.url}/api/v4/users?page=${page + 1}&limit=${limit}` } } : {}),
          },
          _embedded: {
            users: slice.map((user) => ({
              id: user.id,
              name: user.name,
              email: user.email,
              lang: 'ru',
              rights: { is_admin: false, is_active: user.active ?? true },
            })),
          },
        },
      };
    }
    if (method === 'GET' && path === '/api/v4/leads/pipelines') {
      return {
        status: 200,
        json: hal({
          pipelines: pipelines.map((pipeline, sort) => ({
            id: pipeline.id,
            name: pipeline.name,
            sort,
            is_main: sort === 0,
            _embedded: {
              statuses: pipeline.statuses.map((status) => ({
                ...status,
                pipeline_id: pipeline.id,
                type: status.type ?? 0,
              })),
            },
          })),
        }),
      };
    }
    if (method === 'GET' && path === '/api/v4/leads/custom_fields')
      return {
        status: 200,
        json: hal({
          custom_fields: leadFieldCodes.map((code, index) => ({
            id: 900 + index,
            name: code,
            code,
            type: 'tracking_data',
          })),
        }),
      };
    if (method === 'GET' && path === '/api/v4/contacts') {
      const query = (url.searchParams.get('query') ?? '').toLowerCase();
      // A digits-only query also matches phones stored with formatting ("8 (916) 123-45-67") [INF].
      const digitsOnly = /^\d+$/.test(query);
      const found = fake.contacts.filter(
        (contact) =>
          (digitsOnly &&
            (contact.fields.PHONE ?? []).some((value) => value.value.replace(/\D/g, '').includes(query))) ||
          [
            contact.name,
            ...Object.values(contact.fields)
              .flat()
              .map((value) => value.value),
          ].some((text) => text.toLowerCase().includes(query)),
      );
      // Ordered by id (order[id]=desc: newest first), at most `limit` (≤ 250), as every list [OFF].
      const listedContacts = listed(url, 'contacts', found, (contact) => contactView(contact, false));
      return listedContacts.status === 204
        ? listedContacts
        : { ...listedContacts, json: { ...(listedContacts.json as object), _page: 1 } };
    }
    const contactPath = /^\/api\/v4\/contacts\/(\d+)$/.exec(path);
    if (contactPath) {
      const contact = fake.contacts.find((entry) => entry.id === Number(contactPath[1]));
      if (!contact) return { status: 204 };
      if (method === 'GET')
        return { status: 200, json: contactView(contact, url.searchParams.get('with') === 'leads') };
      if (method === 'PATCH') {
        const fields = multitext(body as Record<string, unknown>, 0);
        if (isResult(fields)) return fields;
        Object.assign(contact.fields, fields); // replace semantics per field sent
        return {
          status: 200,
          json: hal({ contacts: [{ id: contact.id, updated_at: Math.floor(Date.now() / 1000) }] }),
        };
      }
    }
    if (method === 'GET' && path === '/api/v4/leads') {
      const ids = url.searchParams.getAll('filter[id][]').map(Number);
      const found = fake.leads.filter((lead) => ids.length === 0 || ids.includes(lead.id));
      if (found.length === 0) return { status: 204 };
      return {
        status: 200,
        json: hal({
          leads: found.map((lead) => ({
            id: lead.id,
            name: lead.name,
            pipeline_id: lead.pipeline_id,
            status_id: lead.status_id,
            responsible_user_id: lead.responsible_user_id,
            created_at: lead.created_at,
            is_deleted: false,
          })),
        }),
      };
    }
    if (method === 'GET' && path === '/api/v4/tasks') {
      // filter[entity_type], filter[entity_id][] and order[id] (asc|desc), as the connector asks [INF].
      const type = url.searchParams.get('filter[entity_type]');
      const ids = url.searchParams.getAll('filter[entity_id][]').map(Number);
      const found = fake.tasks.filter(
        (task) =>
          (type === null || task.entity_type === type) && (ids.length === 0 || ids.includes(task.entity_id)),
      );
      return listed(url, 'tasks', found, (task) => ({
        ...task,
        task_type_id: 1,
        is_completed: false,
        account_id: 31361463,
      }));
    }
    const entityNotes = /^\/api\/v4\/(leads|contacts)\/(\d+)\/notes$/.exec(path);
    if (method === 'GET' && entityNotes) {
      const found = fake.notes.filter(
        (note) => note.entity_type === entityNotes[1] && note.entity_id === Number(entityNotes[2]),
      );
      return listed(url, 'notes', found, (note) => ({
        id: note.id,
        entity_id: note.entity_id,
        note_type: note.note_type,
        params: { text: note.text },
        created_at: note.created_at,
      }));
    }
    if (method === 'POST' && path === '/api/v4/contacts') {
      const created = [];
      for (const [index, item] of items.entries()) {
        const contact = createContact(item, index);
        if (isResult(contact)) return contact;
        created.push({
          id: contact.id,
          request_id: String(item.request_id ?? index),
          is_deleted: false,
          _links: { self: { href: `${fake.url}/api/v4/contacts/${contact.id}` } },
        });
      }
      return { status: 200, json: hal({ contacts: created }) };
    }
    if (method === 'POST' && path === '/api/v4/leads') {
      const created = [];
      for (const [index, item] of items.entries()) {
        const lead = createLead(item, index);
        if (isResult(lead)) return lead;
        created.push({
          id: lead.id,
          request_id: String(item.request_id ?? index),
          _links: { self: { href: `${fake.url}/api/v4/leads/${lead.id}` } },
        });
      }
      return { status: 200, json: hal({ leads: created }) };
    }
    if (method === 'POST' && path === '/api/v4/leads/complex') {
      // A bare array, not HAL [OFF]; one contact per lead; no duplicate control in the fake.
      const out = [];
      for (const [index, item] of items.entries()) {
        const embedded = (item._embedded ?? {}) as { contacts?: Record<string, unknown>[] };
        let contactId: number | null = null;
        if (embedded.contacts?.[0]) {
          const contact = createContact(embedded.contacts[0], index);
          if (isResult(contact)) return contact;
          contactId = contact.id;
        }
        const lead = createLead(
          { ...item, _embedded: { ...embedded, contacts: contactId ? [{ id: contactId }] : [] } },
          index,
        );
        if (isResult(lead)) return lead;
        out.push({
          id: lead.id,
          contact_id: contactId,
          company_id: null,
          request_id: [String(item.request_id ?? index)],
          merged: false,
        });
      }
      return { status: 200, json: out };
    }
    if (method === 'POST' && path === '/api/v4/tasks') {
      const created = [];
      for (const [index, item] of items.entries()) {
        if (!item.text || !item.complete_till)
          return validation(
            String(item.request_id ?? index),
            item.text ? 'complete_till' : 'text',
            'NotBlank',
            'This value should not be blank.',
          );
        const task: FakeAmoTask = {
          id: nextId++,
          text: String(item.text),
          complete_till: Number(item.complete_till),
          entity_id: Number(item.entity_id),
          entity_type: String(item.entity_type),
          responsible_user_id:
            item.responsible_user_id === undefined ? users[0]!.id : Number(item.responsible_user_id),
          created_at: now(),
        };
        fake.tasks.push(task);
        created.push({ id: task.id, request_id: String(item.request_id ?? index) });
      }
      return { status: 200, json: hal({ tasks: created }) };
    }
    const notesPath = /^\/api\/v4\/(leads|contacts)\/notes$/.exec(path);
    if (method === 'POST' && notesPath) {
      const created = [];
      for (const [index, item] of items.entries()) {
        const note: FakeAmoNote = {
          id: nextId++,
          entity_type: notesPath[1]!,
          entity_id: Number(item.entity_id),
          note_type: String(item.note_type),
          text: String((item.params as { text?: string } | undefined)?.text ?? ''),
          created_at: now(),
        };
        fake.notes.push(note);
        created.push({
          id: note.id,
          entity_id: note.entity_id,
          request_id: String(item.request_id ?? index),
        });
      }
      return { status: 200, json: hal({ notes: created }) };
    }
    return { status: 404, json: { title: 'Not Found', status: 404, detail: `no route ${method} ${path}` } };
  }

  async function handle(request: IncomingMessage, response: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(request.url ?? '/', fake.url);
    const method = request.method ?? 'GET';
    fake.requests.push({
      method,
      path: `${url.pathname}${url.search}`,
      authorization: request.headers.authorization,
      body: text,
    });
    await barriers.find((entry) => entry.takes(method, `${url.pathname}${url.search}`))?.wait();
    const send = (
      status: number,
      body?: string,
      headers: Record<string, string> = {},
      type = 'application/hal+json',
    ) => {
      response.writeHead(status, { ...(body ? { 'content-type': type } : {}), ...headers });
      response.end(body);
    };
    const fault = faults.find((entry) => entry.times > 0 && entry.match(method, url.pathname));
    if (fault) {
      fault.times -= 1;
      send(fault.answer.status, fault.answer.body, fault.answer.headers, 'text/plain');
      return;
    }
    // A long-lived token is a JWT that stops working at its exp [OFF]/[SDK] (api.ts tokenExpiry).
    const expiry = tokenExpiry(fake.token);
    const expired = expiry !== null && expiry.getTime() <= Date.now();
    if (fake.rejectToken || expired || request.headers.authorization !== `Bearer ${fake.token}`) {
      send(
        401,
        JSON.stringify({
          title: 'Unauthorized',
          type: 'https://httpstatus.es/401',
          status: 401,
          detail: 'Authorization failed',
        }),
        {},
        'application/problem+json',
      );
      return;
    }
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      send(
        400,
        JSON.stringify({ title: 'Bad Request', status: 400, detail: 'Invalid JSON' }),
        {},
        'application/problem+json',
      );
      return;
    }
    const result = route(method, url, body);
    if (result.status >= 400)
      send(result.status, JSON.stringify(result.json), result.headers, 'application/problem+json');
    else
      send(
        result.status,
        result.json === undefined ? undefined : JSON.stringify(result.json),
        result.headers,
      );
  }

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      response.writeHead(500);
      response.end(String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return fake;
}
