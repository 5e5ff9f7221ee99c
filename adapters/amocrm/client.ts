import type { z } from 'zod';
import { emailForms, normalizeEmail, samePhone, splitPhones } from '../../src/contacts/normalize.js';
import type { CrmApi, CrmContact, CrmTransport, CrmUser } from '../../src/contracts/connector.js';
import { CrmError, excerpt, GATEWAY_TIMEOUT } from '../../src/crm/errors.js';
import { parseRetryAfter } from '../../src/net/retry.js';
import {
  type AmoContact,
  API_PREFIX,
  accountSchema,
  addedSchema,
  CLOSED_STATUSES,
  CREATED_SKEW_S,
  contactListSchema,
  contactPage,
  contactSchema,
  customFieldsSchema,
  EMAIL_ENUM,
  EMAIL_FIELD,
  EMPTY_SEARCH_STATUS,
  FOLLOW_UP_TASK_TYPE,
  INCOMING_STATUS_TYPE,
  leadListSchema,
  NO_ANSWER_HINT,
  noteListSchema,
  PAGE_LIMIT,
  PHONE_ENUM,
  PHONE_FIELD,
  PHONE_QUERY_DIGITS,
  pipelinesSchema,
  problemSchema,
  RATE_LIMIT_PAUSE_MS,
  taskListSchema,
  tokenExpiry,
  UNAUTHORIZED_HINT,
  UTM_FIELD_CODES,
  usersPageSchema,
} from './api.js';

const NAME = 'amoCRM';

export interface AmoSettings {
  baseUrl: string;
  token: string;
}

const digits = (value: string) => value.replace(/\D/g, '');
const tail = (value: string) => digits(value).slice(-PHONE_QUERY_DIGITS);

function valuesOf(contact: AmoContact, code: string): { value: string; enum_code?: string }[] {
  const field = contact.custom_fields_values?.find((item) => item.field_code === code);
  return (field?.values ?? []).map((item) => ({
    value: item.value,
    ...(item.enum_code ? { enum_code: item.enum_code } : {}),
  }));
}

function toContact(contact: AmoContact): CrmContact {
  return {
    id: String(contact.id),
    phones: valuesOf(contact, PHONE_FIELD).map((item) => item.value),
    emails: valuesOf(contact, EMAIL_FIELD).map((item) => item.value),
  };
}

/** The CRM's own reason, without echoing a credential (amoCRM never echoes the token). */
function reasonOf(json: unknown, text: string): string {
  const problem = problemSchema.safeParse(json);
  if (!problem.success) return excerpt(text) || 'no details';
  const { title, detail, hint } = problem.data;
  const fields = (problem.data['validation-errors'] ?? [])
    .flatMap((item) => item.errors)
    .map((error) => `${error.path ?? '?'}: ${error.code ?? ''} ${error.detail ?? ''}`.trim());
  return [detail ?? title, hint, ...fields].filter(Boolean).join('; ') || 'no details';
}

export function createAmoClient(settings: AmoSettings, transport: CrmTransport): CrmApi {
  const origin = new URL(settings.baseUrl).origin;
  const headers = { authorization: `Bearer ${settings.token}` };
  const expiry = tokenExpiry(settings.token);
  const raw = new Map<string, AmoContact>();

  async function call<T>(
    what: string,
    method: 'GET' | 'POST' | 'PATCH',
    path: string,
    schema: z.ZodType<T> | null,
    body?: unknown,
    /** An answer is required (every create; the account read): 204/404 is then an error. */
    required = method === 'POST',
  ): Promise<T | null> {
    const response = await transport.send({
      method,
      url: `${origin}${API_PREFIX}${path}`,
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const { status } = response;
    if (required && (status === EMPTY_SEARCH_STATUS || status === 404)) {
      // A create always answers 200 with the new ids, the account read with the account [OFF]:
      // no content, or no such route, is the account refusing it or a baseUrl that is not the
      // account (NO_ANSWER_HINT).
      throw new CrmError(
        'permanent',
        status,
        `${NAME} answered ${what} with HTTP ${status} (${status === 404 ? 'not found' : 'no content'})${method === 'POST' ? ' instead of the new id' : ''}: ${NO_ANSWER_HINT}`,
        // A create answered with a success status may have been made: a replay looks it up first.
        { maybeApplied: method === 'POST' && status === EMPTY_SEARCH_STATUS },
      );
    }
    if (status === EMPTY_SEARCH_STATUS) return null;
    if (status >= 200 && status < 300) {
      if (!schema) return null;
      const parsed = schema.safeParse(response.json);
      if (!parsed.success) {
        throw new CrmError(
          'retry',
          status,
          `${NAME} answered ${what} with an unexpected body: ${excerpt(response.text, 120)}`,
          // A success status: a create was done even though we cannot read its id.
          { maybeApplied: true },
        );
      }
      return parsed.data;
    }
    const reason = reasonOf(response.json, response.text);
    if (status === 401) {
      // A long-lived token that has run out says so (its exp claim): the operator's next step
      // is a new token, not a look at the account.
      const expired = expiry !== null && expiry.getTime() <= Date.now();
      throw new CrmError(
        'permanent',
        401,
        `token rejected by ${NAME} (HTTP 401: ${reason})${expired ? `: the long-lived token expired at ${expiry.toISOString()}; generate a new one (the integration's Keys and scopes), put it in the config and replay the failed deliveries` : `: ${UNAUTHORIZED_HINT}`}`,
        { auth: true },
      );
    }
    if (status === 403) {
      throw new CrmError(
        'permanent',
        403,
        `access refused by ${NAME} for ${what} (HTTP 403: ${reason}): the token's user lacks the right, the IP is not allowed, or the account's API is blocked`,
        { auth: true },
      );
    }
    if (status === 429 || status >= 500) {
      const retryAfterMs =
        parseRetryAfter(response.headers['retry-after'], Date.now()) ??
        (status === 429 ? RATE_LIMIT_PAUSE_MS : undefined);
      throw new CrmError(
        'retry',
        status,
        `${NAME} ${status === 429 ? 'rate limit' : 'server error'} on ${what} (HTTP ${status}${status === 429 ? '' : `: ${reason}`})`,
        // 504 on heavy requests [INF]: a gateway gave up waiting, the account may have done it.
        { retryAfterMs, maybeApplied: status === GATEWAY_TIMEOUT },
      );
    }
    if (status === 402)
      throw new CrmError('permanent', 402, `${NAME} account is not paid (HTTP 402: ${reason})`);
    if (status === 404) return null;
    throw new CrmError('permanent', status, `${NAME} rejected ${what} (HTTP ${status}: ${reason})`);
  }

  /** `newest`: the newest page (250, newest first) rather than the default first 50. */
  async function search(query: string, newest = false): Promise<AmoContact[]> {
    const found = await call(
      'contact search',
      'GET',
      `/contacts?query=${encodeURIComponent(query)}${newest ? `&order[id]=desc&limit=${PAGE_LIMIT}` : '&limit=50'}`,
      contactListSchema,
    );
    return found?._embedded.contacts ?? [];
  }

  async function fetchContact(id: string): Promise<AmoContact | null> {
    const contact = await call('contact read', 'GET', `/contacts/${encodeURIComponent(id)}`, contactSchema);
    if (contact) raw.set(id, contact);
    return contact;
  }

  /** The contact's leads: ids via `?with=leads`, then the leads by id (§2.9 [INF]). */
  async function leadsOf(contactId: string) {
    const contact = await call(
      'contact read',
      'GET',
      `/contacts/${encodeURIComponent(contactId)}?with=leads`,
      contactSchema,
    );
    const ids = (contact?._embedded?.leads ?? []).map((lead) => lead.id);
    if (ids.length === 0) return [];
    const query = ids.map((id) => `filter[id][]=${id}`).join('&');
    const leads = await call('lead search', 'GET', `/leads?${query}&limit=${PAGE_LIMIT}`, leadListSchema);
    return leads?._embedded.leads ?? [];
  }

  const api: CrmApi = {
    async findContacts({ phones, emails }) {
      const out = new Map<number, AmoContact>();
      for (const phone of phones) {
        // Searched by the last 10 digits (phones are stored in any format), then each stored value
        // compared as a number: the tail alone would match the same digits in another country.
        if (tail(phone).length === 0) continue;
        for (const contact of await search(tail(phone))) {
          // A value may hold several numbers ("+7 916 …, 8 926 …"): each is compared.
          if (
            valuesOf(contact, PHONE_FIELD).some((item) =>
              splitPhones(item.value).some((stored) => samePhone(stored, phone)),
            )
          )
            out.set(contact.id, contact);
        }
      }
      for (const email of emails) {
        // Each form the CRM may hold it in (a punycode domain), compared as the bridge keys it.
        for (const form of emailForms(email)) {
          for (const contact of await search(form)) {
            if (valuesOf(contact, EMAIL_FIELD).some((item) => normalizeEmail(item.value) === email))
              out.set(contact.id, contact);
          }
        }
      }
      return [...out.values()].map(toContact);
    },

    async getContact(id) {
      const contact = await fetchContact(id);
      return contact ? toContact(contact) : null;
    },

    async createContact(input) {
      const fields = [
        ...(input.phones.length > 0
          ? [
              {
                field_code: PHONE_FIELD,
                values: input.phones.map((value) => ({ value, enum_code: PHONE_ENUM })),
              },
            ]
          : []),
        ...(input.emails.length > 0
          ? [
              {
                field_code: EMAIL_FIELD,
                values: input.emails.map((value) => ({ value, enum_code: EMAIL_ENUM })),
              },
            ]
          : []),
      ];
      const added = await call('contact create', 'POST', '/contacts', addedSchema('contacts'), [
        {
          name: input.name,
          ...(input.responsibleUserId ? { responsible_user_id: Number(input.responsibleUserId) } : {}),
          ...(fields.length > 0 ? { custom_fields_values: fields } : {}),
          _embedded: { tags: [{ name: input.source }] },
          request_id: input.externalId,
        },
      ]);
      return String((added as { _embedded: Record<string, { id: number }[]> })._embedded.contacts![0]!.id);
    },

    async addContactValues(contact, add) {
      // PATCH replaces a multitext field's values [3P]: send what it has plus what is new.
      const current = raw.get(contact.id) ?? (await fetchContact(contact.id));
      if (!current) return;
      const fields = [];
      if (add.phones.length > 0) {
        fields.push({
          field_code: PHONE_FIELD,
          values: [
            ...valuesOf(current, PHONE_FIELD),
            ...add.phones.map((value) => ({ value, enum_code: PHONE_ENUM })),
          ],
        });
      }
      if (add.emails.length > 0) {
        fields.push({
          field_code: EMAIL_FIELD,
          values: [
            ...valuesOf(current, EMAIL_FIELD),
            ...add.emails.map((value) => ({ value, enum_code: EMAIL_ENUM })),
          ],
        });
      }
      await call('contact update', 'PATCH', `/contacts/${encodeURIComponent(contact.id)}`, null, {
        custom_fields_values: fields,
      });
      raw.delete(contact.id);
    },

    async findOpenDeal(contactId, pipelineId) {
      const open = (await leadsOf(contactId))
        .filter((lead) => !lead.is_deleted && !CLOSED_STATUSES.has(lead.status_id))
        .filter((lead) => pipelineId === null || String(lead.pipeline_id) === pipelineId)
        .sort((a, b) => a.id - b.id);
      return open[0] ? String(open[0].id) : null;
    },

    async dealExists(id) {
      // By id among the leads, as leadsOf reads them (§2.9 [INF]): a deleted lead is not listed
      // (204), or is listed with is_deleted.
      const found = await call(
        'lead read',
        'GET',
        `/leads?filter[id][]=${encodeURIComponent(id)}&limit=${PAGE_LIMIT}`,
        leadListSchema,
      );
      return (found?._embedded.leads ?? []).some((lead) => String(lead.id) === id && !lead.is_deleted);
    },

    async createDeal(input) {
      let custom: { field_code: string; values: { value: string }[] }[] = [];
      const utm = Object.entries(input.utm).filter(([key]) => UTM_FIELD_CODES[key]);
      if (utm.length > 0) {
        const fields = await call(
          'lead fields',
          'GET',
          `/leads/custom_fields?limit=${PAGE_LIMIT}`,
          customFieldsSchema,
        );
        const codes = new Set((fields?._embedded.custom_fields ?? []).map((field) => field.code));
        custom = utm
          .filter(([key]) => codes.has(UTM_FIELD_CODES[key]!))
          .map(([key, value]) => ({ field_code: UTM_FIELD_CODES[key]!, values: [{ value }] }));
      }
      const added = await call('lead create', 'POST', '/leads', addedSchema('leads'), [
        {
          name: input.name,
          ...(input.pipelineId !== null ? { pipeline_id: Number(input.pipelineId) } : {}),
          ...(input.stageId !== null ? { status_id: Number(input.stageId) } : {}),
          ...(input.responsibleUserId ? { responsible_user_id: Number(input.responsibleUserId) } : {}),
          ...(custom.length > 0 ? { custom_fields_values: custom } : {}),
          // The source as a tag [OFF: tags by name]; the deal name carries it too (crm.dealName).
          _embedded: {
            contacts: [{ id: Number(input.contactId), is_main: true }],
            tags: [{ name: input.source }],
          },
          request_id: input.externalId,
        },
      ]);
      return String((added as { _embedded: Record<string, { id: number }[]> })._embedded.leads![0]!.id);
    },

    async createTask(input) {
      const added = await call('task create', 'POST', '/tasks', addedSchema('tasks'), [
        {
          text: input.text,
          complete_till: Math.floor(input.dueAt.getTime() / 1000),
          entity_id: Number(input.on.id),
          entity_type: input.on.type === 'deal' ? 'leads' : 'contacts',
          task_type_id: FOLLOW_UP_TASK_TYPE,
          ...(input.responsibleUserId ? { responsible_user_id: Number(input.responsibleUserId) } : {}),
          request_id: input.externalId,
        },
      ]);
      return String((added as { _embedded: Record<string, { id: number }[]> })._embedded.tasks![0]!.id);
    },

    async createNote(input) {
      const entity = input.on.type === 'deal' ? 'leads' : 'contacts';
      const added = await call('note create', 'POST', `/${entity}/notes`, addedSchema('notes'), [
        {
          entity_id: Number(input.on.id),
          note_type: 'common',
          params: { text: input.text },
          request_id: input.externalId,
        },
      ]);
      return String((added as { _embedded: Record<string, { id: number }[]> })._embedded.notes![0]!.id);
    },

    async findCreated(query) {
      // Recognised by what was sent, among objects made since the first send (api.ts,
      // CREATED_SKEW_S): amoCRM keeps no idempotency key or external id.
      const since = Math.floor(query.since.getTime() / 1000) - CREATED_SKEW_S;
      const recent = (createdAt: number | null | undefined) =>
        createdAt === null || createdAt === undefined || createdAt >= since;
      const newest = <T extends { id: number }>(items: T[]) => [...items].sort((a, b) => b.id - a.id)[0];
      const answer = (item: { id: number } | undefined) =>
        item ? ({ state: 'found', id: String(item.id) } as const) : ({ state: 'absent' } as const);
      switch (query.kind) {
        case 'contact': {
          const { input } = query;
          const sameSet = (stored: string[], sent: string[], same: (a: string, b: string) => boolean) =>
            stored.length === sent.length && sent.every((value) => stored.some((item) => same(item, value)));
          // The newest page: a common name finds more than a page of older namesakes, and the
          // one made minutes ago was not among the first 50 (made again: a duplicate).
          const candidates = (await search(input.name, true)).filter(
            (contact) =>
              (contact.name ?? '').trim() === input.name.trim() &&
              recent(contact.created_at) &&
              (contact._embedded?.tags ?? []).some((tag) => tag.name === input.source) &&
              sameSet(
                valuesOf(contact, PHONE_FIELD).map((item) => item.value),
                input.phones,
                samePhone,
              ) &&
              sameSet(
                valuesOf(contact, EMAIL_FIELD).map((item) => item.value),
                input.emails,
                (stored, sent) => stored.trim().toLowerCase() === sent,
              ),
          );
          if (candidates.length > 1) {
            return {
              state: 'unknown',
              reason: `${candidates.length} ${NAME} contacts made since then have its name, phones and e-mails, and amoCRM keeps no id of ours to tell them apart`,
            };
          }
          return answer(candidates[0]);
        }
        case 'deal': {
          const { input } = query;
          const leads = (await leadsOf(input.contactId)).filter(
            (lead) =>
              !lead.is_deleted &&
              (lead.name ?? '') === input.name &&
              (input.pipelineId === null || String(lead.pipeline_id) === input.pipelineId) &&
              recent(lead.created_at),
          );
          return answer(newest(leads));
        }
        case 'task': {
          const { input } = query;
          const entity = input.on.type === 'deal' ? 'leads' : 'contacts';
          const found = await call(
            'task search',
            'GET',
            `/tasks?filter[entity_type]=${entity}&filter[entity_id][]=${encodeURIComponent(input.on.id)}&order[id]=desc&limit=${PAGE_LIMIT}`,
            taskListSchema,
          );
          const tasks = (found?._embedded.tasks ?? []).filter(
            (task) =>
              task.entity_type === entity &&
              String(task.entity_id) === input.on.id &&
              task.text === input.text &&
              recent(task.created_at),
          );
          return answer(newest(tasks));
        }
        case 'note': {
          const { input } = query;
          const entity = input.on.type === 'deal' ? 'leads' : 'contacts';
          const found = await call(
            'note search',
            'GET',
            `/${entity}/${encodeURIComponent(input.on.id)}/notes?order[id]=desc&limit=${PAGE_LIMIT}`,
            noteListSchema,
          );
          const notes = (found?._embedded.notes ?? []).filter(
            (note) =>
              (note.entity_id === null ||
                note.entity_id === undefined ||
                String(note.entity_id) === input.on.id) &&
              note.note_type === 'common' &&
              note.params?.text === input.text &&
              recent(note.created_at),
          );
          return answer(newest(notes));
        }
      }
    },

    async listUsers() {
      const users: CrmUser[] = [];
      for (let page = 1; page <= 100; page++) {
        const found = await call(
          'users list',
          'GET',
          `/users?page=${page}&limit=${PAGE_LIMIT}`,
          usersPageSchema,
        );
        if (!found) break;
        for (const user of found._embedded.users) {
          users.push({
            id: String(user.id),
            email: user.email ?? null,
            name: user.name ?? String(user.id),
            active: user.rights?.is_active ?? true,
          });
        }
        if (!found._links?.next) break;
      }
      return users;
    },

    async check() {
      const account = await call('account read', 'GET', '/account', accountSchema, undefined, true);
      const pipelines = await call('pipelines list', 'GET', '/leads/pipelines', pipelinesSchema);
      // Users are listed to admins only [OFF]: a token without the right still delivers (the
      // crmUserId / default fallbacks, src/crm/users.ts), so the check says so instead of failing.
      let users: CrmUser[] = [];
      let usersUnavailable: string | undefined;
      try {
        users = await api.listUsers();
      } catch (error) {
        if (!(error instanceof CrmError && error.httpStatus === 403)) throw error;
        usersUnavailable = error.message;
      }
      return {
        ...(usersUnavailable !== undefined ? { usersUnavailable } : {}),
        account: `${NAME} account ${account?.name ?? account?.subdomain ?? '?'} (id ${account?.id ?? '?'}) at ${origin}`,
        pipelines: (pipelines?._embedded.pipelines ?? []).map((pipeline) => ({
          id: String(pipeline.id),
          name: pipeline.name,
          stages: (pipeline._embedded?.statuses ?? []).map((status) => ({
            id: String(status.id),
            name: status.name,
            ...(CLOSED_STATUSES.has(status.id)
              ? { kind: 'closed' as const }
              : status.type === INCOMING_STATUS_TYPE
                ? { kind: 'incoming' as const }
                : {}),
          })),
        })),
        users,
      };
    },

    contactUrl: (id) => contactPage(origin, id),
  };
  return api;
}
