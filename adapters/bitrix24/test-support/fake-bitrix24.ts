import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequestBarrier, type RequestBarrier } from '../../../test/support/barrier.js';

/**
 * A stateful fake Bitrix24 portal on loopback, following the documented shapes
 * (../shared/vendors/bitrix24.md §7): `/rest/<user>/<code>/<method>.json`, `{result, time}`
 * envelopes, string ids from legacy methods and integer ids from *.add, multifield append
 * semantics, findbycomm over the multifield index (`[]` when nothing matched), category/stage
 * consistency, `batch` (always HTTP 200, result_error, `$result[key]…` references in the
 * commands' values replaced as the portal does), 401 NO_AUTH_FOUND for a wrong code,
 * 503 QUERY_LIMIT_EXCEEDED from a leaky bucket when `bucket` is set.
 * crm.contact.list / crm.deal.list filter by ORIGIN_ID / ORIGINATOR_ID (what a retry whose
 * create got no answer asks) and refuse filter keys the fake does not know.
 * The webhook's scopes (`scopes`): a method outside them is refused with insufficient_scope.
 * Fault switches: `failNext(n, answer, match?)`, `rejectCode`, `bucket`. A barrier,
 * `hold(n, match)`, keeps the matching requests unanswered until `n` of them have arrived, then
 * answers them all (from the state as it is then): two instances' lookups made to overlap
 * without a sleep.
 */

export interface FakeMultifield {
  ID: string;
  VALUE: string;
  VALUE_TYPE: string;
}
export interface FakeB24Contact {
  ID: string;
  NAME: string;
  ASSIGNED_BY_ID: string;
  PHONE: FakeMultifield[];
  EMAIL: FakeMultifield[];
  SOURCE_ID: string;
  SOURCE_DESCRIPTION: string;
  ORIGINATOR_ID?: string;
  ORIGIN_ID?: string;
}
export interface FakeB24Deal {
  ID: string;
  TITLE: string;
  CATEGORY_ID: string;
  STAGE_ID: string;
  ASSIGNED_BY_ID: string;
  CONTACT_IDS: string[];
  SOURCE_ID: string;
  SOURCE_DESCRIPTION: string;
  CLOSED: 'Y' | 'N';
  UTM: Record<string, string>;
  ORIGINATOR_ID?: string;
  ORIGIN_ID?: string;
}
export interface FakeB24Task {
  id: string;
  title: string;
  description: string;
  responsibleId: string;
  deadline: string;
  crm: string[];
}
export interface FakeB24Comment {
  ID: string;
  ENTITY_TYPE: string;
  ENTITY_ID: string;
  COMMENT: string;
}
export interface FakeAnswer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}
export interface SeenRequest {
  method: string;
  path: string;
  body: string;
}

export interface FakeBitrix24Options {
  userId?: string;
  code: string;
  users?: { ID: string; NAME: string; EMAIL: string; ACTIVE?: boolean }[];
  categories?: { id: number; name: string; stages: string[] }[];
  /**
   * findbycomm phone matching: `digits` compares digits only (the duplicate index as we assume
   * portals keep it [INF]); `exact` compares the stored string as is.
   */
  phoneMatch?: 'digits' | 'exact';
  /**
   * The scopes ticked on the webhook (default crm, user, task). A method outside them answers
   * 403 insufficient_scope [OFF]; under `user_brief` alone user.get shows no EMAIL [OFF]; the
   * `scope` method lists them [OFF: rest_help/general/scope.php].
   */
  scopes?: string[];
}

export interface FakeBitrix24 {
  url: string;
  /** https-less for loopback: http://127.0.0.1:port/rest/<user>/<code>/ */
  webhookUrl: string;
  code: string;
  contacts: FakeB24Contact[];
  deals: FakeB24Deal[];
  tasks: FakeB24Task[];
  comments: FakeB24Comment[];
  requests: SeenRequest[];
  failNext(times: number, answer: FakeAnswer, match?: (method: string) => boolean): void;
  /**
   * A barrier: the next `count` requests whose method name and body match are held, none
   * answered until all `count` have arrived (a batch is matched by its body, which names its
   * commands). `arrived()` says how many did so far.
   */
  hold(count: number, match: (method: string, body: string) => boolean): { arrived(): number };
  rejectCode: boolean;
  /** Leaky bucket (X requests, drains Y/s): over it, 503 QUERY_LIMIT_EXCEEDED. */
  bucket: { size: number; perSecond: number } | null;
  /** How many requests the bucket refused. */
  limited: number;
  close(): Promise<void>;
}

/** PHP-style query string to nested params (batch cmd entries). */
export function parseQuery(query: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [rawKey, value] of new URLSearchParams(query)) {
    const parts = rawKey.split(/[[\]]+/).filter((part) => part !== '');
    let node = out as Record<string, unknown>;
    parts.forEach((part, index) => {
      if (index === parts.length - 1) node[part] = value;
      else {
        node[part] ??= {};
        node = node[part] as Record<string, unknown>;
      }
    });
  }
  const arrays = (value: unknown): unknown => {
    if (!value || typeof value !== 'object') return value;
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length > 0 && entries.every(([key], index) => key === String(index)))
      return entries.map(([, item]) => arrays(item));
    return Object.fromEntries(entries.map(([key, item]) => [key, arrays(item)]));
  };
  return arrays(out) as Record<string, unknown>;
}

/** A PHP TypeError inside the portal: the request fails as a whole (HTTP 500). */
class PhpTypeError extends Error {}

/**
 * What the portal's batch does to each command's parameters after decoding them (rest module,
 * CRestUtil::ParseBatchQuery / processBatchElement): every `$result`, `$next`, `$total`, `$time`
 * or `$error` (any case) followed by `[key]…` in a value is replaced by that earlier answer (the
 * whole value when the reference is all of it; else by str_replace, which PHP 8 refuses with a
 * TypeError when the answer is an array). Percent-encoding does not protect a value: it is
 * undone first (vendors/bitrix24.md §2.11).
 */
export function substituteBatchReferences(params: unknown, answers: Record<string, unknown>): unknown {
  if (Array.isArray(params)) return params.map((item) => substituteBatchReferences(item, answers));
  if (params && typeof params === 'object')
    return Object.fromEntries(
      Object.entries(params).map(([key, item]) => [key, substituteBatchReferences(item, answers)]),
    );
  if (typeof params !== 'string') return params;
  let value: unknown = params;
  for (const match of params.matchAll(/\$(result|next|total|time|error)(\S*)/gi)) {
    const path = [...match[2]!.matchAll(/\[([^\]]+)\]/g)].map((part) => part[1]!);
    if (path.length === 0) continue;
    let found: unknown = answers[match[1]!];
    for (const key of path) {
      if (found && typeof found === 'object' && key in found) found = (found as Record<string, unknown>)[key];
      else break;
    }
    if (match[0] === params) value = found;
    else if (found !== null && typeof found === 'object')
      throw new PhpTypeError(
        'str_replace(): Argument #2 ($replace) must be of type string when argument #1 ($search) is a string',
      );
    else
      value = String(value).replaceAll(match[0], found === undefined || found === null ? '' : String(found));
  }
  return value;
}

/** List methods return at most 50 items, with `total` and, while more remain, `next` [OFF]. */
const PAGE_SIZE = 50;
class Paged {
  constructor(
    readonly items: unknown[],
    readonly total: number,
    readonly next: number | null,
  ) {}
}

class MethodError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    description: string,
  ) {
    super(description);
  }
}

export async function startFakeBitrix24(options: FakeBitrix24Options): Promise<FakeBitrix24> {
  const userId = options.userId ?? '1';
  const users = options.users ?? [{ ID: '1', NAME: 'Portal Admin', EMAIL: 'admin@shop.example' }];
  const categories = options.categories ?? [
    { id: 0, name: 'General', stages: ['NEW', 'PREPARATION', 'WON', 'LOSE'] },
  ];
  const stageIds = (category: number) => {
    const found = categories.find((entry) => entry.id === category);
    return found ? found.stages.map((stage) => (category === 0 ? stage : `C${category}:${stage}`)) : null;
  };
  let nextId = 100;
  let level = 0;
  let levelAt = Date.now();
  const faults: { times: number; answer: FakeAnswer; match: (method: string) => boolean }[] = [];
  const barriers: RequestBarrier<[method: string, body: string]>[] = [];
  const fake: FakeBitrix24 = {
    url: '',
    webhookUrl: '',
    code: options.code,
    contacts: [],
    deals: [],
    tasks: [],
    comments: [],
    requests: [],
    rejectCode: false,
    bucket: null,
    limited: 0,
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

  const digits = (value: string) => value.replace(/\D/g, '');
  const multifield = (items: unknown): FakeMultifield[] =>
    ((items ?? []) as { VALUE?: string; VALUE_TYPE?: string }[])
      .filter((item) => item.VALUE)
      .map((item) => ({
        ID: String(nextId++),
        VALUE: String(item.VALUE),
        VALUE_TYPE: item.VALUE_TYPE ?? 'WORK',
      }));
  const contactOut = (contact: FakeB24Contact) => ({
    ...contact,
    PHONE: contact.PHONE.map((item) => ({ ...item, TYPE_ID: 'PHONE' })),
    EMAIL: contact.EMAIL.map((item) => ({ ...item, TYPE_ID: 'EMAIL' })),
  });
  const userKnown = (id: unknown) => users.some((user) => user.ID === String(id));
  const origin = (fields: Record<string, unknown>) => ({
    ...(fields.ORIGINATOR_ID !== undefined ? { ORIGINATOR_ID: String(fields.ORIGINATOR_ID) } : {}),
    ...(fields.ORIGIN_ID !== undefined ? { ORIGIN_ID: String(fields.ORIGIN_ID) } : {}),
  });
  /**
   * Legacy list filters on the keys the connector uses; any other key is refused, so a test
   * cannot pass on a filter the fake silently ignores. Exact matches only [OFF: multifield
   * filters are exact]; ORIGIN_ID / ORIGINATOR_ID per the note's idempotency check [INF].
   */
  function filtered<T extends { ID: string }>(
    items: T[],
    params: Record<string, unknown>,
    keys: Record<string, (item: T, value: string) => boolean>,
  ): T[] {
    const filter = (params.filter ?? {}) as Record<string, unknown>;
    for (const key of Object.keys(filter))
      if (!keys[key]) throw new MethodError(400, '', `Filter field ${key} is not supported by the fake`);
    const order = ((params.order ?? {}) as Record<string, unknown>).ID;
    return items
      .filter((item) => Object.entries(filter).every(([key, value]) => keys[key]!(item, String(value))))
      .sort((a, b) => (String(order).toUpperCase() === 'DESC' ? -1 : 1) * (Number(a.ID) - Number(b.ID)));
  }
  const byOrigin = {
    ORIGIN_ID: (item: { ORIGIN_ID?: string }, value: string) => item.ORIGIN_ID === value,
    ORIGINATOR_ID: (item: { ORIGINATOR_ID?: string }, value: string) => item.ORIGINATOR_ID === value,
  };

  const scopes = new Set(options.scopes ?? ['crm', 'user', 'task']);
  const userScope = ['user', 'user_basic', 'user_brief'].some((scope) => scopes.has(scope));
  /** The scope a method needs (crm.*, user.get, tasks.*) [OFF]; `scope` needs none. */
  function allowed(name: string): boolean {
    if (name.startsWith('crm.')) return scopes.has('crm');
    if (name === 'user.get') return userScope;
    if (name.startsWith('tasks.')) return scopes.has('task');
    return true;
  }

  function method(name: string, params: Record<string, unknown>): unknown {
    const fields = (params.fields ?? {}) as Record<string, unknown>;
    if (!allowed(name))
      throw new MethodError(
        403,
        'insufficient_scope',
        'The request requires higher privileges than provided by the webhook token',
      );
    switch (name) {
      case 'scope':
        return [...scopes];
      case 'crm.duplicate.findbycomm': {
        const type = String(params.type ?? '');
        if (type !== 'PHONE' && type !== 'EMAIL')
          throw new MethodError(400, '', 'Communication type is not defined.');
        const values = (params.values ?? []) as string[];
        if (!Array.isArray(values) || values.length === 0)
          throw new MethodError(400, '', 'Communication values is not defined.');
        if (values.length > 20) throw new MethodError(400, '', 'Too many communication values.');
        // Extensions are ignored [OFF]; phones by digits or as stored (options.phoneMatch).
        const key = (value: string) => {
          if (type === 'EMAIL') return value.toLowerCase();
          const bare = value.split('#')[0]!;
          return (options.phoneMatch ?? 'digits') === 'digits' ? digits(bare) : bare;
        };
        const wanted = new Set(values.map((value) => key(String(value))));
        const ids = fake.contacts
          .filter((contact) => contact[type].some((item) => wanted.has(key(item.VALUE))))
          .map((contact) => Number(contact.ID));
        return ids.length > 0 ? { CONTACT: ids } : [];
      }
      case 'crm.contact.get': {
        const contact = fake.contacts.find((entry) => entry.ID === String(params.id));
        if (!contact) throw new MethodError(400, '', 'Not found');
        return contactOut(contact);
      }
      case 'crm.contact.add': {
        const assigned = fields.ASSIGNED_BY_ID ?? userId;
        if (!userKnown(assigned)) throw new MethodError(400, 'ERROR_CORE', 'Responsible user not found');
        const contact: FakeB24Contact = {
          ID: String(nextId++),
          NAME: String(fields.NAME ?? ''),
          ASSIGNED_BY_ID: String(assigned),
          PHONE: multifield(fields.PHONE),
          EMAIL: multifield(fields.EMAIL),
          SOURCE_ID: String(fields.SOURCE_ID ?? 'CALL'),
          SOURCE_DESCRIPTION: String(fields.SOURCE_DESCRIPTION ?? ''),
          ...origin(fields),
        };
        fake.contacts.push(contact);
        return Number(contact.ID);
      }
      case 'crm.contact.update': {
        const contact = fake.contacts.find((entry) => entry.ID === String(params.id));
        if (!contact) throw new MethodError(400, '', 'Contact is not found');
        for (const key of ['PHONE', 'EMAIL'] as const) {
          for (const item of (fields[key] ?? []) as {
            ID?: string;
            VALUE?: string;
            VALUE_TYPE?: string;
            DELETE?: string;
          }[]) {
            if (!item.ID)
              contact[key].push(...multifield([item])); // appended
            else {
              const existing = contact[key].find((entry) => entry.ID === String(item.ID));
              if (!existing) continue;
              if (item.DELETE === 'Y' || !item.VALUE)
                contact[key] = contact[key].filter((entry) => entry !== existing);
              else existing.VALUE = item.VALUE;
            }
          }
        }
        return true;
      }
      case 'crm.contact.list':
        return filtered(fake.contacts, params, byOrigin)
          .slice(0, 50)
          .map((contact) => ({ ID: contact.ID }));
      case 'crm.deal.list': {
        const found = filtered(fake.deals, params, {
          ...byOrigin,
          ID: (deal, value) => deal.ID === value,
          // The primary contact only [INF].
          CONTACT_ID: (deal, value) => deal.CONTACT_IDS[0] === value,
          CATEGORY_ID: (deal, value) => deal.CATEGORY_ID === value,
          CLOSED: (deal, value) => deal.CLOSED === value,
        });
        return found
          .slice(0, 50)
          .map((deal) => ({ ID: deal.ID, CATEGORY_ID: deal.CATEGORY_ID, STAGE_ID: deal.STAGE_ID }));
      }
      case 'crm.deal.add': {
        const category = Number(fields.CATEGORY_ID ?? 0);
        const stages = stageIds(category);
        if (!stages) throw new MethodError(400, '', `Category ${category} not found`);
        const stage = fields.STAGE_ID === undefined ? stages[0]! : String(fields.STAGE_ID);
        if (!stages.includes(stage))
          throw new MethodError(400, '', `Stage ${stage} does not belong to category ${category}`);
        const assigned = fields.ASSIGNED_BY_ID ?? userId;
        if (!userKnown(assigned)) throw new MethodError(400, 'ERROR_CORE', 'Responsible user not found');
        const contacts = ((fields.CONTACT_IDS ?? []) as unknown[]).map(String);
        for (const id of contacts)
          if (!fake.contacts.some((entry) => entry.ID === id))
            throw new MethodError(400, '', `Contact ${id} not found`);
        const deal: FakeB24Deal = {
          ID: String(nextId++),
          TITLE: String(fields.TITLE ?? ''),
          CATEGORY_ID: String(category),
          STAGE_ID: stage,
          ASSIGNED_BY_ID: String(assigned),
          CONTACT_IDS: contacts,
          SOURCE_ID: String(fields.SOURCE_ID ?? 'CALL'),
          SOURCE_DESCRIPTION: String(fields.SOURCE_DESCRIPTION ?? ''),
          CLOSED: /WON|LOSE/.test(stage) ? 'Y' : 'N',
          UTM: Object.fromEntries(
            Object.entries(fields)
              .filter(([key]) => key.startsWith('UTM_'))
              .map(([key, value]) => [key, String(value)]),
          ),
          ...origin(fields),
        };
        fake.deals.push(deal);
        return Number(deal.ID);
      }
      case 'tasks.task.add': {
        if (!fields.TITLE) throw new MethodError(400, 'ERROR_CORE', 'Task title is not specified');
        if (!userKnown(fields.RESPONSIBLE_ID))
          throw new MethodError(400, 'ERROR_CORE', "User specified in the 'Responsible' field not found");
        const task: FakeB24Task = {
          id: String(nextId++),
          title: String(fields.TITLE),
          description: String(fields.DESCRIPTION ?? ''),
          responsibleId: String(fields.RESPONSIBLE_ID),
          deadline: String(fields.DEADLINE ?? ''),
          crm: ((fields.UF_CRM_TASK ?? []) as unknown[]).map(String),
        };
        fake.tasks.push(task);
        return { task: { id: task.id, title: task.title, responsibleId: task.responsibleId, status: '2' } };
      }
      case 'crm.timeline.comment.add': {
        if (!params.fields) throw new MethodError(400, '', "Parameter 'fields' must be array");
        if (!fields.COMMENT) throw new MethodError(400, 'INVALID_ARG_VALUE', 'Comment is empty');
        // A comment on a deal or contact the portal does not have: OWNER_NOT_FOUND [OFF].
        const owners: Record<string, { ID: string }[]> = { deal: fake.deals, contact: fake.contacts };
        const owner = owners[String(fields.ENTITY_TYPE)];
        if (owner && !owner.some((item) => item.ID === String(fields.ENTITY_ID)))
          throw new MethodError(400, 'OWNER_NOT_FOUND', 'Owner entity not found');
        const comment: FakeB24Comment = {
          ID: String(nextId++),
          ENTITY_TYPE: String(fields.ENTITY_TYPE),
          ENTITY_ID: String(fields.ENTITY_ID),
          COMMENT: String(fields.COMMENT),
        };
        fake.comments.push(comment);
        return Number(comment.ID);
      }
      case 'user.get': {
        // Sorted by ID, 50 a page from `start`, `next` while more remain [OFF]; FILTER.ACTIVE
        // honoured (the only filter key the connector sends).
        const filter = (params.FILTER ?? {}) as Record<string, unknown>;
        const activeOnly = [true, 'true', 'Y', '1', 1].includes(filter.ACTIVE as never);
        const matching = users
          .filter((user) => !activeOnly || (user.ACTIVE ?? true))
          .sort((a, b) => Number(a.ID) - Number(b.ID));
        const start = Number(params.start ?? 0) || 0;
        return new Paged(
          matching.slice(start, start + PAGE_SIZE).map((user) => ({
            ID: user.ID,
            ACTIVE: user.ACTIVE ?? true,
            NAME: user.NAME,
            LAST_NAME: '',
            // user_brief has no contact details [OFF].
            ...(scopes.has('user') || scopes.has('user_basic') ? { EMAIL: user.EMAIL } : {}),
            USER_TYPE: 'employee',
          })),
          matching.length,
          start + PAGE_SIZE < matching.length ? start + PAGE_SIZE : null,
        );
      }
      case 'crm.category.list':
        return {
          categories: categories.map((category) => ({
            id: category.id,
            name: category.name,
            sort: 100,
            entityTypeId: 2,
            isDefault: category.id === 0 ? 'Y' : 'N',
          })),
        };
      case 'crm.status.list':
        return categories.flatMap((category) =>
          (stageIds(category.id) ?? []).map((stage, index) => ({
            ID: String(nextId + index),
            ENTITY_ID: category.id === 0 ? 'DEAL_STAGE' : `DEAL_STAGE_${category.id}`,
            STATUS_ID: stage,
            NAME: stage.replace(/^C\d+:/, ''),
            SORT: String((index + 1) * 10),
            CATEGORY_ID: String(category.id),
            // Won and lost stages close the deal (CLOSED=Y in crm.deal.add above) [OFF].
            EXTRA: { SEMANTICS: /WON/.test(stage) ? 'success' : /LOSE/.test(stage) ? 'failure' : 'process' },
          })),
        );
      default:
        throw new MethodError(404, 'ERROR_METHOD_NOT_FOUND', 'Method not found!');
    }
  }

  const time = () => ({ start: Date.now() / 1000, finish: Date.now() / 1000, duration: 0, processing: 0 });

  async function handle(request: IncomingMessage, response: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(request.url ?? '/', fake.url);
    fake.requests.push({ method: request.method ?? 'GET', path: url.pathname, body: text });
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    const match = /^\/rest\/(\d+)\/([^/]+)\/([a-z0-9_.]+?)(?:\.json)?$/i.exec(url.pathname);
    if (!match) return send(404, { error: 'NOT_FOUND', error_description: 'Not found' });
    const [, user, code, name] = match as unknown as [string, string, string, string];
    await barriers.find((entry) => entry.takes(name, text))?.wait();
    const fault = faults.find((entry) => entry.times > 0 && entry.match(name));
    if (fault) {
      fault.times -= 1;
      response.writeHead(fault.answer.status, {
        'content-type': 'application/json',
        ...fault.answer.headers,
      });
      response.end(fault.answer.body ?? '');
      return;
    }
    if (fake.bucket) {
      const now = Date.now();
      level = Math.max(0, level - ((now - levelAt) / 1000) * fake.bucket.perSecond);
      levelAt = now;
      if (level + 1 > fake.bucket.size) {
        fake.limited += 1;
        return send(503, { error: 'QUERY_LIMIT_EXCEEDED', error_description: 'Too many requests' });
      }
      level += 1;
    }
    if (fake.rejectCode || user !== userId || code !== fake.code)
      return send(401, { error: 'NO_AUTH_FOUND', error_description: 'Wrong authorization data' });
    let params: Record<string, unknown>;
    try {
      params = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      return send(400, { error: 'INVALID_REQUEST', error_description: 'Invalid JSON' });
    }
    if (name === 'batch') {
      const cmd = (params.cmd ?? {}) as Record<string, string>;
      if (Object.keys(cmd).length > 50)
        return send(400, {
          error: 'ERROR_BATCH_LENGTH_EXCEEDED',
          error_description: 'Max batch length exceeded',
        });
      const result: Record<string, unknown> = {};
      const errors: Record<string, unknown> = {};
      const totals: Record<string, unknown> = {};
      const nexts: Record<string, unknown> = {};
      for (const [key, line] of Object.entries(cmd)) {
        const [sub, query = ''] = line.split('?', 2) as [string, string?];
        if (sub === 'batch')
          return send(405, {
            error: 'ERROR_BATCH_METHOD_NOT_ALLOWED',
            error_description: 'Method is not allowed for batch usage',
          });
        try {
          const answers = { result, error: errors, total: totals, next: nexts, time: {} };
          let parsed: Record<string, unknown>;
          try {
            parsed = substituteBatchReferences(parseQuery(query), answers) as Record<string, unknown>;
          } catch (error) {
            if (!(error instanceof PhpTypeError)) throw error;
            return send(500, { error: 'INTERNAL_SERVER_ERROR', error_description: error.message });
          }
          const answer = method(sub, parsed);
          if (answer instanceof Paged) {
            result[key] = answer.items;
            totals[key] = answer.total;
            if (answer.next !== null) nexts[key] = answer.next;
          } else result[key] = answer;
        } catch (error) {
          if (!(error instanceof MethodError)) throw error;
          errors[key] = { error: error.code, error_description: error.message };
          if (params.halt === 1 || params.halt === '1' || params.halt === true) break;
        }
      }
      const empty = (value: Record<string, unknown>) => (Object.keys(value).length === 0 ? [] : value);
      return send(200, {
        result: {
          result: empty(result),
          result_error: empty(errors),
          result_total: empty(totals),
          result_next: empty(nexts),
          result_time: [],
        },
        time: time(),
      });
    }
    try {
      const answer = method(name, params);
      if (answer instanceof Paged) {
        return send(200, {
          result: answer.items,
          total: answer.total,
          ...(answer.next !== null ? { next: answer.next } : {}),
          time: time(),
        });
      }
      return send(200, { result: answer, time: time() });
    } catch (error) {
      if (!(error instanceof MethodError)) throw error;
      return send(error.status, { error: error.code, error_description: error.message });
    }
  }

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: 'INTERNAL_SERVER_ERROR', error_description: String(error) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.webhookUrl = `${fake.url}/rest/${userId}/${options.code}/`;
  fake.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return fake;
}
