import { BadRequestError } from '../../src/errors.js';
/**
 * Every Chatvisor path and wire field name the adapter uses, in one place (DESIGN §4). Most of
 * Chatvisor's REST API is not public (vendors/chatvisor.md §5, §9.2): when the real OpenAPI
 * document is obtained, this file is the one that changes. Nothing else in the adapter spells a
 * Chatvisor path or field name.
 *
 * `status: 'confirmed'` means a public Chatvisor page states it; `'assumed'` means it is the
 * reference's proposal (§9.2), sometimes for an operation whose existence and verb are confirmed
 * but whose path is not — `evidence` says which.
 */
export type Confirmation = 'confirmed' | 'assumed';

export interface OperationSpec {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Below the channel's apiUrl; `{name}` segments are filled from path parameters, URL-encoded. */
  path: string;
  status: Confirmation;
  /** Chatvisor's operationId where the docs show one. */
  operationId?: string;
  /**
   * Whether repeating the call after an ambiguous failure (timeout, 5xx, connection reset after
   * sending) leaves the vendor in the same state. Only these are retried on such failures; a
   * non-idempotent call is retried only when the vendor certainly did not act on it (429, or the
   * connection was refused before anything was sent). See client.ts.
   */
  idempotent: boolean;
  evidence: string;
}

export const OPERATIONS = {
  listCustomers: {
    method: 'GET',
    path: '/customer',
    status: 'confirmed',
    idempotent: true,
    evidence: 'GET /rest/v1/customer with pageNumber/pageSize, answer {page, results} [S1]',
  },
  getCustomer: {
    method: 'GET',
    path: '/customer/{customerId}',
    status: 'assumed',
    idempotent: true,
    evidence: 'proposal (§9.2)',
  },
  tagUser: {
    method: 'POST',
    path: '/customer/{customerId}/tag',
    status: 'assumed',
    operationId: 'tagUser',
    // We always send the whole label set, so sending it twice ends in the same labels.
    idempotent: true,
    evidence: 'operation tagUser and verb POST confirmed [S2][S3-ja]; path is a proposal',
  },
  isVisible: {
    method: 'GET',
    path: '/webchat/visible',
    status: 'assumed',
    operationId: 'isVisible',
    idempotent: true,
    evidence: 'operation isVisible and verb GET confirmed [S3-ja]; path is a proposal',
  },
  listAgents: {
    method: 'GET',
    path: '/user',
    status: 'assumed',
    idempotent: true,
    evidence: 'the "User" tag is confirmed [S3-ja]; path is a proposal',
  },
  createAgent: {
    method: 'POST',
    path: '/user',
    status: 'assumed',
    // A repeated create may make a second agent or fail with a conflict; the next sync run lists
    // the agents again and converges, so an ambiguous create is reported, not repeated.
    idempotent: false,
    evidence: 'proposal (§9.2)',
  },
  updateAgent: {
    method: 'PUT',
    path: '/user/{email}',
    status: 'assumed',
    idempotent: true,
    evidence: 'proposal (§9.2)',
  },
  deleteAgent: {
    method: 'DELETE',
    path: '/user/{email}',
    status: 'assumed',
    idempotent: true,
    evidence: 'proposal (§9.2)',
  },
  listConversations: {
    method: 'GET',
    path: '/conversation',
    status: 'assumed',
    idempotent: true,
    evidence: 'a "Conversation API" is mentioned [S2]; path and paging are a proposal',
  },
  listMessages: {
    method: 'GET',
    path: '/customer/{customerId}/message',
    status: 'assumed',
    idempotent: true,
    evidence: 'proposal (§9.2)',
  },
  publicAgentChatUrl: {
    method: 'GET',
    path: '/customer/{customerId}/publicUrl',
    status: 'assumed',
    idempotent: true,
    evidence:
      'behaviour confirmed (customerId in, unique auto-login URL out) [S2][S3-zh]; path is a proposal',
  },
} as const satisfies Record<string, OperationSpec>;

export type OperationName = keyof typeof OPERATIONS;

/** Query parameter names. */
export const QUERY = {
  /** 0-based [INFERRED from `page: 0`]; confirmed on GET /customer [S1]. */
  pageNumber: 'pageNumber',
  pageSize: 'pageSize',
  /** Filter of listConversations (assumed). */
  status: 'status',
  /** The agent a public chat URL is for (assumed). */
  agent: 'user',
} as const;

/** Wire field names of each object, with how sure we are of them. */
export const WIRE = {
  page: { status: 'confirmed', fields: { page: 'page', results: 'results' } },
  /** The webhook Conversation body [S1]; `test` is the docs' verbatim misspelling of `text`. */
  conversation: {
    status: 'confirmed',
    fields: {
      customerId: 'customerId',
      status: 'status',
      lastMessage: 'lastMessage',
      lastMessageText: 'text',
      lastMessageTextMisspelt: 'test',
      url: 'url',
    },
  },
  /**
   * When a listed conversation or customer last changed (ISO-8601), read by the first poll to pick
   * what to backfill. Not documented: without it, the newest message's `createdAt` is used.
   */
  updatedAt: { status: 'assumed', fields: { updatedAt: 'updatedAt' } },
  /** Only `assignedUser` (create customer) and the tagUser fields are seen publicly [S1][S2]. */
  customer: {
    status: 'assumed',
    fields: {
      customerId: 'customerId',
      /** The company's own id for the customer (tagUser's `id`). */
      externalId: 'id',
      email: 'email',
      firstname: 'firstname',
      lastname: 'lastname',
      labels: 'labels',
      status: 'status',
      /** The assigned agent's e-mail: the contact's responsible agent (profiles.ts assigneeOf). */
      assignedUser: 'assignedUser',
      lastMessage: 'lastMessage',
    },
  },
  message: {
    status: 'assumed',
    fields: {
      id: 'id',
      customerId: 'customerId',
      text: 'text',
      sender: 'sender',
      agentEmail: 'userId',
      createdAt: 'createdAt',
    },
  },
  /** Agents are Chatvisor "users"; fields mirror the admin UI [S9]. `active` is our assumption. */
  agent: {
    status: 'assumed',
    fields: {
      email: 'email',
      displayName: 'displayName',
      role: 'role',
      teams: 'teams',
      active: 'active',
    },
  },
  /** tagUser body: `{email, firstname, id, labels[], lastname}` [S2]. */
  tag: { status: 'confirmed', fields: { externalId: 'id', labels: 'labels' } },
  visibility: { status: 'assumed', fields: { visible: 'visible' } },
  publicUrl: { status: 'assumed', fields: { url: 'url' } },
} as const satisfies Record<string, { status: Confirmation; fields: Record<string, string> }>;

/** Values of Conversation.status [S1]. */
export const CONVERSATION_STATUS = { unread: 'UNREAD', done: 'DONE', unresolved: 'UNRESOLVED' } as const;

/** Message.sender value for a customer's message (assumed). */
export const CUSTOMER_SENDER = 'CUSTOMER';

/** A UTF-16 surrogate without its other half: text that is no Unicode (buildPath). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Fill `{name}` path segments, URL-encoding each value. Ids come from webhooks and API callers:
 * `.` and `..` survive encoding and would move the request (with our API token) to another REST
 * path, so they, empty values and over-long ones are refused (issue 10 item 7). So is a value
 * that is no Unicode text: JSON can carry a lone surrogate (`"\ud800"`), which encodeURIComponent
 * throws on (a URIError, answered 500 on the admin API; found by test/slow/routes.fuzz.test.ts).
 */
export function buildPath(template: string, params: Record<string, string> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_match, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`path parameter ${name} is missing for ${template}`);
    if (value === '' || value === '.' || value === '..' || value.length > 256 || LONE_SURROGATE.test(value)) {
      throw new BadRequestError('invalid_path_parameter', `${name} is not a usable id`);
    }
    return encodeURIComponent(value);
  });
}
