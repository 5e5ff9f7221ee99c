import type { z } from 'zod';
import { cutText, emailForms } from '../../src/contacts/normalize.js';
import type { CrmApi, CrmTransport, CrmUser } from '../../src/contracts/connector.js';
import { CrmError, excerpt, GATEWAY_TIMEOUT } from '../../src/crm/errors.js';
import { parseRetryAfter } from '../../src/net/retry.js';
import {
  AUTH_ERRORS,
  AUTH_STATUSES,
  BATCH_MAX_COMMANDS,
  batchSchema,
  CLOSED_SEMANTICS,
  categoryListSchema,
  contactPage,
  contactSchema,
  createdFilter,
  dealByIdFilter,
  dealListSchema,
  envelopeSchema,
  errorSchema,
  FINDBYCOMM_MAX_VALUES,
  findByCommSchema,
  idListSchema,
  idSchema,
  isContactNotFound,
  ORIGINATOR_ID,
  openDealFilter,
  phoneVariants,
  RATE_LIMIT_ERRORS,
  RATE_LIMIT_PAUSE_MS,
  SCOPE_HINT,
  SCOPES,
  scopeListSchema,
  stageEntityOf,
  statusSchema,
  taskAddSchema,
  UNCHECKABLE,
  UTM_FIELDS,
  userSchema,
  VALUE_TYPE,
  WEBHOOK_URL,
} from './api.js';

const NAME = 'Bitrix24';

export interface Bitrix24Settings {
  webhookUrl: string;
  sourceId: string;
}

/** PHP-style query string (batch `cmd` entries are method?query strings [OFF]). */
export function toQuery(params: Record<string, unknown>, prefix = ''): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    const name = prefix ? `${prefix}[${key}]` : key;
    if (Array.isArray(value)) out.push(...toQuery(Object.fromEntries(value.entries()), name));
    else if (value && typeof value === 'object') out.push(...toQuery(value as Record<string, unknown>, name));
    else if (value !== undefined && value !== null)
      out.push(`${encodeURIComponent(name)}=${encodeURIComponent(String(value))}`);
  }
  return out;
}

function failure(
  method: string,
  status: number,
  error: string,
  description: string,
  headers: Record<string, string>,
  inBatch = false,
): CrmError {
  // A batch answers HTTP 200 and puts each command's error in result_error; it is classified as
  // the 400 the command alone would have answered, but the message must not claim an HTTP 400.
  const reason = `${inBatch ? 'batch command failed, ' : `HTTP ${status} `}${error ? `${error}: ` : ''}${description || 'no details'}`;
  if (RATE_LIMIT_ERRORS.has(error) || status === 429) {
    // 503 QUERY_LIMIT_EXCEEDED means "slow down", not "down": reported as 429 so the breaker stays shut.
    return new CrmError('retry', 429, `${NAME} rate limit on ${method} (${reason})`, {
      retryAfterMs: parseRetryAfter(headers['retry-after'], Date.now()) ?? RATE_LIMIT_PAUSE_MS,
    });
  }
  if (AUTH_STATUSES.has(status) || AUTH_ERRORS.has(error)) {
    return new CrmError('permanent', status, `webhook rejected by ${NAME} on ${method} (${reason})`, {
      auth: true,
    });
  }
  if (status >= 500) {
    return new CrmError('retry', status, `${NAME} server error on ${method} (${reason})`, {
      retryAfterMs: parseRetryAfter(headers['retry-after'], Date.now()),
      // A proxy in front of the portal gave up waiting: the portal may have done it.
      maybeApplied: status === GATEWAY_TIMEOUT,
    });
  }
  return new CrmError('permanent', status, `${NAME} rejected ${method} (${reason})`);
}

const refuseAll = () => false;

export function createBitrix24Client(settings: Bitrix24Settings, transport: CrmTransport): CrmApi {
  const match = WEBHOOK_URL.exec(settings.webhookUrl);
  if (!match)
    throw new CrmError('permanent', null, `${NAME} webhookUrl is not https://<portal>/rest/<user>/<code>/`);
  const base = settings.webhookUrl.endsWith('/') ? settings.webhookUrl : `${settings.webhookUrl}/`;
  const origin = new URL(base).origin;
  const webhookUser = match[1]!;

  async function call<T>(
    method: string,
    params: Record<string, unknown>,
    schema: z.ZodType<T>,
  ): Promise<{ result: T; next: number | null }> {
    const response = await transport.send({ method: 'POST', url: `${base}${method}.json`, body: params });
    const { status } = response;
    const error = errorSchema.safeParse(response.json);
    if (status < 200 || status >= 300 || (error.success && error.data.error)) {
      const code = error.success ? (error.data.error ?? '') : '';
      const description = error.success ? (error.data.error_description ?? '') : excerpt(response.text);
      throw failure(method, status, code, description, response.headers);
    }
    const envelope = envelopeSchema.safeParse(response.json);
    const parsed = envelope.success ? schema.safeParse(envelope.data.result) : null;
    if (!envelope.success || !parsed?.success) {
      throw new CrmError(
        'retry',
        status,
        `${NAME} answered ${method} with an unexpected body: ${excerpt(response.text, 120)}`,
        // A success status: a create was done even though we cannot read its id.
        { maybeApplied: true },
      );
    }
    return { result: parsed.data, next: envelope.data.next ?? null };
  }

  /**
   * Several calls in one request (counts once for the rate limit [OFF]); a failed one fails all,
   * unless `tolerate` names it (its error is then left to the caller, and the batch runs on).
   */
  async function batchPaged(
    cmd: Record<string, [string, Record<string, unknown>]>,
    tolerate: (key: string, error: string, description: string) => boolean = refuseAll,
  ): Promise<{ results: Record<string, unknown>; next: Record<string, number> }> {
    const commands = Object.fromEntries(
      Object.entries(cmd).map(([key, [method, params]]) => [key, `${method}?${toQuery(params).join('&')}`]),
    );
    // Halted at the first failed command, unless failures are tolerated (then every one runs).
    const halt = tolerate === refuseAll ? 1 : 0;
    const { result } = await call('batch', { halt, cmd: commands }, batchSchema);
    for (const [key, problem] of Object.entries(result.result_error)) {
      if (tolerate(key, problem.error ?? '', problem.error_description ?? '')) continue;
      throw failure(
        cmd[key]?.[0] ?? key,
        400,
        problem.error ?? '',
        problem.error_description ?? '',
        {},
        true,
      );
    }
    return { results: result.result, next: result.result_next ?? {} };
  }
  const batch = async (cmd: Record<string, [string, Record<string, unknown>]>) =>
    (await batchPaged(cmd)).results;

  /** Active users from `start` on, page by page (50 a page, `next` while more remain [OFF]). */
  async function usersFrom(start: number | null): Promise<CrmUser[]> {
    const users: CrmUser[] = [];
    for (let page = 0; page < 100 && start !== null; page++) {
      const answer: { result: z.infer<typeof userSchema>[]; next: number | null } = await call(
        'user.get',
        { FILTER: { ACTIVE: true }, start },
        userSchema.array(),
      );
      for (const user of answer.result) users.push(toUser(user));
      start = answer.next;
    }
    return users;
  }

  const api: CrmApi = {
    async findContacts({ phones, emails }) {
      // Every value is searched: findbycomm takes FINDBYCOMM_MAX_VALUES values per call, so the
      // values go in chunks, as commands of as few batches as BATCH_MAX_COMMANDS allows (one
      // request each for the rate limit [OFF]).
      const commands: [string, Record<string, unknown>][] = [];
      // The portal's batch replaces `$result[key]…` (and $next, $total, $time, $error, any case)
      // in every command's values once it has decoded them (percent-encoding does not protect a
      // value) with an earlier command's answer [OFF: batch.md; rest module ParseBatchQuery]. A
      // visitor-typed e-mail holding one was searched as something else, or, the answer being an
      // array, made PHP refuse the whole batch (500: the delivery retried until it failed, its
      // 5xx counted by the breaker). Values with a `$` (no phone variant has one; few real
      // addresses do) are searched in calls of their own, where nothing is rewritten.
      const alone: [string, Record<string, unknown>][] = [];
      const search = (type: 'PHONE' | 'EMAIL', values: string[]) => {
        const unique = [...new Set(values)];
        for (const [list, chunk] of [
          [commands, unique.filter((value) => !value.includes('$'))],
          [alone, unique.filter((value) => value.includes('$'))],
        ] as const) {
          for (let at = 0; at < chunk.length; at += FINDBYCOMM_MAX_VALUES) {
            list.push([
              'crm.duplicate.findbycomm',
              { entity_type: 'CONTACT', type, values: chunk.slice(at, at + FINDBYCOMM_MAX_VALUES) },
            ]);
          }
        }
      };
      search('PHONE', phones.flatMap(phoneVariants));
      search('EMAIL', emails.flatMap(emailForms));
      const ids = new Set<string>();
      for (const [method, params] of alone) {
        const { result } = await call(method, params, findByCommSchema);
        for (const id of result) ids.add(id);
      }
      for (let at = 0; at < commands.length; at += BATCH_MAX_COMMANDS) {
        const cmd = Object.fromEntries(
          commands.slice(at, at + BATCH_MAX_COMMANDS).map((command, index) => [`c${at + index}`, command]),
        );
        const results = await batch(cmd);
        for (const key of Object.keys(cmd)) {
          const found = findByCommSchema.safeParse(results[key] ?? []);
          for (const id of found.success ? found.data : []) ids.add(id);
        }
      }
      return [...ids].map((id) => ({ id, phones: [], emails: [] }));
    },

    async getContact(id) {
      try {
        const { result } = await call('crm.contact.get', { id: Number(id) }, contactSchema);
        return {
          id: result.ID,
          phones: (result.PHONE ?? []).map((item) => item.VALUE ?? '').filter(Boolean),
          emails: (result.EMAIL ?? []).map((item) => item.VALUE ?? '').filter(Boolean),
        };
      } catch (error) {
        if (
          error instanceof CrmError &&
          error.kind === 'permanent' &&
          isContactNotFound(error.httpStatus, error.message)
        )
          return null;
        throw error;
      }
    },

    async createContact(input) {
      const { result } = await call(
        'crm.contact.add',
        {
          fields: {
            NAME: input.name,
            OPENED: 'Y',
            TYPE_ID: 'CLIENT',
            ...(input.responsibleUserId ? { ASSIGNED_BY_ID: Number(input.responsibleUserId) } : {}),
            SOURCE_ID: settings.sourceId,
            SOURCE_DESCRIPTION: input.source,
            PHONE: input.phones.map((value) => ({ VALUE: value, VALUE_TYPE })),
            EMAIL: input.emails.map((value) => ({ VALUE: value, VALUE_TYPE })),
            ORIGINATOR_ID,
            ORIGIN_ID: input.externalId,
          },
          params: { REGISTER_SONET_EVENT: 'N' },
        },
        idSchema,
      );
      return result;
    },

    async addContactValues(contact, add) {
      // Items without ID are appended; existing values are untouched [OFF].
      await call(
        'crm.contact.update',
        {
          id: Number(contact.id),
          fields: {
            ...(add.phones.length > 0
              ? { PHONE: add.phones.map((value) => ({ VALUE: value, VALUE_TYPE })) }
              : {}),
            ...(add.emails.length > 0
              ? { EMAIL: add.emails.map((value) => ({ VALUE: value, VALUE_TYPE })) }
              : {}),
          },
          params: { REGISTER_SONET_EVENT: 'N' },
        },
        idSchema.or(idSchema.array()).or(envelopeSchema.shape.result),
      );
    },

    async findOpenDeal(contactId, pipelineId) {
      const { result } = await call(
        'crm.deal.list',
        { filter: openDealFilter(contactId, pipelineId), select: ['ID'], order: { ID: 'ASC' } },
        dealListSchema,
      );
      return result[0]?.ID ?? null;
    },

    async dealExists(id) {
      const { result } = await call('crm.deal.list', dealByIdFilter(id), dealListSchema);
      return result.some((deal) => String(deal.ID) === id);
    },

    async createDeal(input) {
      const utm = Object.fromEntries(
        Object.entries(input.utm)
          .filter(([key]) => UTM_FIELDS[key])
          .map(([key, value]) => [UTM_FIELDS[key]!, value]),
      );
      const { result } = await call(
        'crm.deal.add',
        {
          fields: {
            TITLE: input.name,
            ...(input.pipelineId !== null ? { CATEGORY_ID: Number(input.pipelineId) } : {}),
            ...(input.stageId !== null ? { STAGE_ID: input.stageId } : {}),
            ...(input.responsibleUserId ? { ASSIGNED_BY_ID: Number(input.responsibleUserId) } : {}),
            CONTACT_IDS: [Number(input.contactId)],
            SOURCE_ID: settings.sourceId,
            SOURCE_DESCRIPTION: input.source,
            ...utm,
            OPENED: 'Y',
            ORIGINATOR_ID,
            ORIGIN_ID: input.externalId,
          },
          params: { REGISTER_SONET_EVENT: 'N' },
        },
        idSchema,
      );
      return result;
    },

    async createTask(input) {
      const { result } = await call(
        'tasks.task.add',
        {
          fields: {
            // cutText: a plain slice could keep half an emoji, sent as U+FFFD ("�").
            TITLE: cutText(input.text.split('\n')[0]!, 250),
            DESCRIPTION: input.text,
            // RESPONSIBLE_ID is required [OFF]: without one, the webhook's own user.
            RESPONSIBLE_ID: Number(input.responsibleUserId ?? webhookUser),
            DEADLINE: input.dueAt.toISOString(),
            UF_CRM_TASK: [`${input.on.type === 'deal' ? 'D' : 'C'}_${input.on.id}`],
          },
        },
        taskAddSchema,
      );
      return result.task.id;
    },

    async createNote(input) {
      // Lower-case `fields` only since crm 23.100.0 [OFF].
      const { result } = await call(
        'crm.timeline.comment.add',
        { fields: { ENTITY_ID: Number(input.on.id), ENTITY_TYPE: input.on.type, COMMENT: input.text } },
        idSchema,
      );
      return result;
    },

    async findCreated(query) {
      switch (query.kind) {
        case 'contact':
        case 'deal': {
          const { result } = await call(
            query.kind === 'contact' ? 'crm.contact.list' : 'crm.deal.list',
            createdFilter(query.input.externalId),
            idListSchema,
          );
          return result[0] ? { state: 'found', id: result[0].ID } : { state: 'absent' };
        }
        case 'task':
        case 'note':
          return { state: 'unknown', reason: UNCHECKABLE[query.kind] };
      }
    },

    listUsers: () => usersFrom(0),

    async check() {
      // One request: the webhook's scopes, categories, every status list, users' first page [OFF:
      // batch]; then the users' further pages (50 a page): a user past the first page is a user
      // all the same, and the mapping's default or an agent's crmUserId may be one. The scopes
      // are read whatever else fails (the batch runs every command), so that a missing one is said
      // as such (SCOPES): crm is needed for anything, user (or user_basic) only for responsible by
      // e-mail (deliveries go on without, as with amoCRM's non-admin token), task for tasks.
      const failed: Record<string, { error: string; description: string }> = {};
      const { results, next } = await batchPaged(
        {
          scope: ['scope', {}],
          categories: ['crm.category.list', { entityTypeId: 2 }],
          stages: ['crm.status.list', {}],
          users: ['user.get', { FILTER: { ACTIVE: true } }],
        },
        (key, error, description) => {
          failed[key] = { error, description };
          return true;
        },
      );
      const listed = scopeListSchema.safeParse(results.scope);
      // A portal that does not answer `scope` is checked as before: by what the commands answer.
      const granted = listed.success ? new Set(listed.data) : null;
      const has = (scope: string) => granted === null || granted.has(scope);
      const lacking = (scope: string, note = '') =>
        `the webhook lacks the scope ${scope} (${note}it has: ${[...(granted ?? [])].join(', ') || 'none'})`;
      if (!has(SCOPES.crm))
        throw new CrmError(
          'permanent',
          403,
          `webhook rejected by ${NAME}: ${lacking(SCOPES.crm)}: ${SCOPE_HINT}`,
          { auth: true },
        );
      const usersReadable = SCOPES.users.some(has);
      for (const [key, problem] of Object.entries(failed)) {
        // Users listed to no one without a user scope: deliveries then use the fallbacks.
        if (key === 'users' && problem.error === 'insufficient_scope' && !usersReadable) continue;
        if (key === 'scope') continue; // not answered: checked by the other commands' answers
        const method = { scope: 'scope', categories: 'crm.category.list', stages: 'crm.status.list' }[key];
        throw failure(method ?? 'user.get', 400, problem.error, problem.description, {}, true);
      }
      const categories = categoryListSchema.safeParse(results.categories);
      const stages = statusSchema.array().safeParse(results.stages);
      const users = userSchema.array().safeParse(results.users ?? []);
      if (!categories.success || !stages.success || !users.success)
        throw new CrmError('permanent', 200, `${NAME} answered the check with an unexpected body`);
      const usersUnavailable = usersReadable
        ? undefined
        : `${lacking('user or user_basic', 'user_brief shows no e-mails; ')}: ${SCOPE_HINT}`;
      return {
        ...(usersUnavailable !== undefined ? { usersUnavailable } : {}),
        ...(has(SCOPES.tasks)
          ? {}
          : {
              tasksUnavailable: `${lacking(SCOPES.tasks)}: tasks.task.add is refused (insufficient_scope); ${SCOPE_HINT}`,
            }),
        account: `${NAME} portal ${new URL(origin).host}, webhook of user ${webhookUser}`,
        pipelines: categories.data.categories.map((category) => ({
          id: String(category.id),
          name: category.name,
          stages: stages.data
            .filter((stage) => stage.ENTITY_ID === stageEntityOf(category.id))
            .sort((a, b) => Number(a.SORT ?? 0) - Number(b.SORT ?? 0))
            .map((stage) => ({
              id: stage.STATUS_ID,
              name: stage.NAME,
              ...(CLOSED_SEMANTICS.has(stage.EXTRA?.SEMANTICS ?? '') ? { kind: 'closed' as const } : {}),
            })),
        })),
        users: usersUnavailable
          ? []
          : [...users.data.map(toUser), ...(next.users !== undefined ? await usersFrom(next.users) : [])],
      };
    },

    contactUrl: (id) => contactPage(origin, id),
  };
  return api;
}

function toUser(user: z.infer<typeof userSchema>): CrmUser {
  return {
    id: user.ID,
    email: user.EMAIL ? user.EMAIL : null,
    name: [user.NAME, user.LAST_NAME].filter(Boolean).join(' ') || user.ID,
    active: user.ACTIVE === undefined || user.ACTIVE === null || user.ACTIVE === true || user.ACTIVE === 'Y',
  };
}
