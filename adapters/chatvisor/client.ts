import type { Logger } from 'pino';
import type { z } from 'zod';
import { PUBLISHED_TOKENS } from '../../src/config/published.js';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import { type HttpClient, HttpNetworkError, type HttpResponse, scrubSecrets } from '../../src/net/http.js';
import { backoffDelay, parseRetryAfter, sleep } from '../../src/net/retry.js';
import {
  ChatvisorApiError,
  ChatvisorAuthError,
  ChatvisorBadResponseError,
  ChatvisorNotFoundError,
  ChatvisorRateLimitedError,
  ChatvisorRejectedError,
  ChatvisorUnavailableError,
} from './errors.js';
import { buildPath, OPERATIONS, type OperationName, QUERY, WIRE } from './operations.js';
import { RateLimiter, RateLimiterFullError } from './rate-limit.js';
import {
  type Agent,
  type AgentWrite,
  agentSchema,
  type Conversation,
  type Customer,
  conversationSchema,
  customerSchema,
  type Message,
  messageSchema,
  pageSchema,
  publicUrlSchema,
  visibilitySchema,
} from './schemas.js';

/**
 * The Chatvisor REST client (vendors/chatvisor.md §9.2), on the core's one HTTP client.
 * - Auth: `Authorization: Bearer <apiToken>` [CONFIRMED]. The token is only ever put in that
 *   header; logs and errors carry the method and path, never headers or the full URL.
 * - Each attempt has its own timeout and passes the channel's rate limit.
 * - Retries: exponential backoff with full jitter on 429, 408/5xx and network errors, honouring
 *   Retry-After up to `maxRetryAfterMs` (a longer wait fails at once as rate limited, so a sync
 *   or poll never sleeps for minutes inside one run). Idempotent operations are retried on any of
 *   those; a non-idempotent one (createAgent) only when Chatvisor certainly did not act on it: a
 *   429, or a connection refused before the request was sent. After a timeout or a 5xx a create
 *   may have happened, and repeating it could make a second agent — the next sync lists agents
 *   again and converges instead.
 */
export interface ChatvisorClientOptions {
  http: HttpClient;
  apiUrl: string;
  apiToken: string;
  timeoutMs: number;
  maxRetries: number;
  maxRetryAfterMs: number;
  rateLimit: { perSecond: number; concurrency: number; maxWaiting?: number | undefined };
  logger: Logger;
  /** Called when a request is refused because `rateLimit.maxWaiting` requests already wait (a metric). */
  onQueueFull?: () => void;
  /** Backoff base and cap (ms); tests make them small. */
  backoff?: { baseMs: number; capMs: number };
  random?: () => number;
  /** How the client waits before a retry (Retry-After or backoff); tests record the waits. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface PageRequest {
  pageNumber: number;
  pageSize: number;
}

/** A listed item that did not parse, with what was wrong with it. */
export interface Unreadable {
  item: unknown;
  problem: string;
}

/** Unreadable agents a listing hands back for the journal (agent sync journals these). */
const UNREADABLE_KEPT = 20;

export interface ParsedPage<T> {
  items: T[];
  /** Raw result count, before dropping items we could not parse (paging decisions use this). */
  rawCount: number;
  /** Items dropped because they did not parse. */
  skipped: number;
  /** Those items as listed, each with what was wrong with it: for the payload journal. */
  unreadable: Unreadable[];
}

export interface CallOptions {
  signal?: AbortSignal | undefined;
}

interface CallInput {
  params?: Record<string, string>;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  signal?: AbortSignal | undefined;
  /** For a 404 message: what was not found. */
  what?: string;
}

/** Connection errors that happen before a byte is sent: even a create is safe to repeat. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export class ChatvisorClient {
  private readonly limiter: RateLimiter;
  private readonly baseUrl: string;
  private readonly backoff: { baseMs: number; capMs: number };
  private readonly random: () => number;

  constructor(private readonly options: ChatvisorClientOptions) {
    this.limiter = new RateLimiter(options.rateLimit);
    this.baseUrl = options.apiUrl.replace(/\/+$/, '');
    this.backoff = options.backoff ?? { baseMs: 250, capMs: 5_000 };
    this.random = options.random ?? Math.random;
  }

  // ---- Customers -----------------------------------------------------------------------------

  async listCustomers(page: PageRequest, options: CallOptions = {}): Promise<ParsedPage<Customer>> {
    const response = await this.call('listCustomers', {
      query: { [QUERY.pageNumber]: page.pageNumber, [QUERY.pageSize]: page.pageSize },
      signal: options.signal,
    });
    return this.parsePage('listCustomers', response, customerSchema);
  }

  async getCustomer(customerId: string, options: CallOptions = {}): Promise<Customer> {
    const response = await this.call('getCustomer', {
      params: { customerId },
      signal: options.signal,
      what: `customer ${customerId}`,
    });
    return this.parseBody('getCustomer', response, customerSchema);
  }

  /** tagUser: sets the customer's labels (the whole set) and, when known, the company's id for them. */
  async tagUser(
    customerId: string,
    tag: { externalId?: string | undefined; labels: string[] },
    options: CallOptions = {},
  ): Promise<void> {
    const T = WIRE.tag.fields;
    await this.call('tagUser', {
      params: { customerId },
      body: { ...(tag.externalId ? { [T.externalId]: tag.externalId } : {}), [T.labels]: tag.labels },
      signal: options.signal,
      what: `customer ${customerId}`,
    });
  }

  async publicAgentChatUrl(
    customerId: string,
    agentEmail?: string,
    options: CallOptions = {},
  ): Promise<string> {
    const response = await this.call('publicAgentChatUrl', {
      params: { customerId },
      query: { [QUERY.agent]: agentEmail },
      signal: options.signal,
      what: `customer ${customerId}`,
    });
    // The answer may be `{url}`, a JSON string or a bare text URL.
    const value = response.json ?? response.text.trim();
    return this.parseValue('publicAgentChatUrl', value, publicUrlSchema);
  }

  // ---- Conversations ---------------------------------------------------------------------------

  async listConversations(page: PageRequest, options: CallOptions = {}): Promise<ParsedPage<Conversation>> {
    const response = await this.call('listConversations', {
      query: { [QUERY.pageNumber]: page.pageNumber, [QUERY.pageSize]: page.pageSize },
      signal: options.signal,
    });
    return this.parsePage('listConversations', response, conversationSchema);
  }

  async listMessages(
    customerId: string,
    page: PageRequest,
    options: CallOptions = {},
  ): Promise<ParsedPage<Message>> {
    const response = await this.call('listMessages', {
      params: { customerId },
      query: { [QUERY.pageNumber]: page.pageNumber, [QUERY.pageSize]: page.pageSize },
      signal: options.signal,
      what: `customer ${customerId}`,
    });
    return this.parsePage('listMessages', response, messageSchema);
  }

  // ---- Visibility ------------------------------------------------------------------------------

  async isVisible(options: CallOptions = {}): Promise<boolean> {
    const response = await this.call('isVisible', { signal: options.signal });
    return this.parseBody('isVisible', response, visibilitySchema);
  }

  // ---- Agents ------------------------------------------------------------------------------------

  /** Every agent; follows pages when Chatvisor answers `{page, results}` instead of an array. */
  async listAgents(pageSize: number, options: CallOptions = {}): Promise<Agent[]> {
    return (await this.listAgentsCounted(pageSize, options)).items;
  }

  /**
   * listAgents, also saying how many listed agents could not be read (`skipped`) and whether the
   * listing reached its end (`complete`: false when a vendor repeated a full page, i.e. ignores
   * pageNumber, or the page bound was hit): agent sync must not take an agent it could not read,
   * or never got to, for one that is gone.
   */
  async listAgentsCounted(
    pageSize: number,
    options: CallOptions = {},
  ): Promise<{ items: Agent[]; skipped: number; complete: boolean; unreadable: Unreadable[] }> {
    const agents: Agent[] = [];
    let skipped = 0;
    // What could not be read, for the caller to journal; the first UNREADABLE_KEPT are enough.
    const unreadable: Unreadable[] = [];
    const keep = (found: readonly Unreadable[]) =>
      unreadable.push(...found.slice(0, Math.max(0, UNREADABLE_KEPT - unreadable.length)));
    let previous: string | undefined;
    for (let pageNumber = 0; pageNumber < 10_000; pageNumber++) {
      const response = await this.call('listAgents', {
        query: { [QUERY.pageNumber]: pageNumber, [QUERY.pageSize]: pageSize },
        signal: options.signal,
      });
      if (Array.isArray(response.json)) {
        // A bare array is the whole list: there is nothing to page.
        const all = this.parseItems('listAgents', response.json, agentSchema);
        keep(all.unreadable);
        return { items: all.items, skipped: all.skipped, complete: true, unreadable };
      }
      const page = this.parsePage('listAgents', response, agentSchema);
      // A vendor that ignores pageNumber would repeat page 0 forever.
      const fingerprint = JSON.stringify(page.items);
      if (page.rawCount > 0 && fingerprint === previous) break;
      previous = fingerprint;
      agents.push(...page.items);
      skipped += page.skipped;
      keep(page.unreadable);
      if (page.rawCount < pageSize) return { items: agents, skipped, complete: true, unreadable };
    }
    return { items: agents, skipped, complete: false, unreadable };
  }

  async createAgent(agent: AgentWrite, options: CallOptions = {}): Promise<void> {
    await this.call('createAgent', { body: agentBody(agent), signal: options.signal });
  }

  async updateAgent(email: string, agent: AgentWrite, options: CallOptions = {}): Promise<void> {
    await this.call('updateAgent', {
      params: { email },
      body: agentBody(agent),
      signal: options.signal,
      what: `agent ${email}`,
    });
  }

  async deleteAgent(email: string, options: CallOptions = {}): Promise<void> {
    await this.call('deleteAgent', { params: { email }, signal: options.signal, what: `agent ${email}` });
  }

  // ---- Transport -----------------------------------------------------------------------------

  private async call(operation: OperationName, input: CallInput): Promise<HttpResponse> {
    // The example config's token is published and is no Chatvisor token: sent, it reached the
    // real API (the example's apiUrl) and came back as a network error offline or a 401 online,
    // neither saying that the example's placeholder was still in the config.
    if (PUBLISHED_TOKENS.includes(this.options.apiToken))
      throw new ChatvisorAuthError({ operation, exampleToken: true });
    const spec = OPERATIONS[operation];
    const path = buildPath(spec.path, input.params);
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(input.query ?? {})) {
      if (value !== undefined) search.set(name, String(value));
    }
    const url = `${this.baseUrl}${path}${search.size > 0 ? `?${search}` : ''}`;
    const logger = this.options.logger;
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.options.apiToken}`,
      accept: 'application/json',
    };

    for (let attempt = 0; ; attempt++) {
      const canRetry = attempt < this.options.maxRetries;
      let release: () => void;
      try {
        release = await this.limiter.acquire(input.signal);
      } catch (error) {
        if (!(error instanceof RateLimiterFullError)) throw error;
        this.options.onQueueFull?.();
        logger.warn(
          { operation, method: spec.method, path, waiting: error.waiting },
          'chatvisor request refused: too many requests waiting for the client-side rate limit',
        );
        // Nothing was sent: the caller may try again once the limit's 1-second window moved on.
        throw new ChatvisorRateLimitedError({ operation, cause: error, retryAfterMs: 1_000 });
      }
      const started = Date.now();
      let response: HttpResponse;
      try {
        response = await this.options.http.send({
          method: spec.method,
          url,
          headers,
          ...(input.body === undefined ? {} : { body: input.body }),
          timeoutMs: this.options.timeoutMs,
          ...(input.signal ? { signal: input.signal } : {}),
        });
      } catch (error) {
        if (!(error instanceof HttpNetworkError)) throw error;
        const sent = !NOT_SENT_CODES.has(errorCode(error.cause) ?? '');
        // The code and the host say what to fix (an apiUrl that does not resolve, a port that
        // refuses): a bare "network error" sent people to the README's example values blind.
        const reason = error.timedOut
          ? `timed out after ${this.options.timeoutMs} ms`
          : `network error (${errorCode(error.cause) ?? 'no answer'}) reaching ${new URL(url).host}`;
        logger.warn(
          {
            operation,
            method: spec.method,
            path,
            attempt,
            ms: Date.now() - started,
            reason: errorCode(error.cause) ?? reason,
          },
          'chatvisor call failed',
        );
        if (canRetry && (spec.idempotent || !sent)) {
          await this.wait(this.backoffMs(attempt), input.signal);
          continue;
        }
        throw new ChatvisorUnavailableError({ operation, reason, cause: error });
      } finally {
        release();
      }

      const status = response.status;
      logger.debug(
        { operation, method: spec.method, path, status, attempt, ms: Date.now() - started },
        'chatvisor call',
      );
      if (status >= 200 && status < 300) return response;
      if (status === 401 || status === 403) throw new ChatvisorAuthError({ operation, vendorStatus: status });
      if (status === 404) {
        throw new ChatvisorNotFoundError({
          operation,
          vendorStatus: status,
          what: input.what ?? `${spec.method} ${spec.path}`,
          pathAssumed: spec.status === 'assumed',
        });
      }
      const retryAfterMs = parseRetryAfter(response.headers['retry-after']);
      if (status === 429) {
        if (canRetry && (retryAfterMs === undefined || retryAfterMs <= this.options.maxRetryAfterMs)) {
          logger.warn(
            { operation, method: spec.method, path, status, attempt, retryAfterMs },
            'chatvisor rate limit',
          );
          await this.wait(retryAfterMs ?? this.backoffMs(attempt), input.signal);
          continue;
        }
        throw new ChatvisorRateLimitedError({ operation, vendorStatus: status, retryAfterMs });
      }
      if (status === 408 || status >= 500) {
        const waitable = retryAfterMs === undefined || retryAfterMs <= this.options.maxRetryAfterMs;
        if (canRetry && spec.idempotent && waitable) {
          logger.warn(
            { operation, method: spec.method, path, status, attempt },
            'chatvisor server error; retrying',
          );
          await this.wait(retryAfterMs ?? this.backoffMs(attempt), input.signal);
          continue;
        }
        throw new ChatvisorUnavailableError({ operation, vendorStatus: status, reason: `HTTP ${status}` });
      }
      // The detail is shown (admin API, CLI, console): an answer that quotes the request's
      // Authorization header must not carry the token along.
      const detail = vendorDetail(response, [this.options.apiToken]);
      throw new ChatvisorRejectedError({ operation, vendorStatus: status, detail });
    }
  }

  private wait(ms: number, signal?: AbortSignal): Promise<void> {
    return (this.options.sleep ?? sleep)(ms, signal);
  }

  private backoffMs(attempt: number): number {
    return backoffDelay(attempt, this.backoff.baseMs, this.backoff.capMs, this.random);
  }

  private parseValue<T>(operation: OperationName, value: unknown, schema: z.ZodType<T>): T {
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new ChatvisorBadResponseError({
        operation,
        detail: parsed.error.issues[0]?.message ?? 'invalid',
      });
    }
    return parsed.data;
  }

  private parseBody<T>(operation: OperationName, response: HttpResponse, schema: z.ZodType<T>): T {
    if (response.json === undefined) throw new ChatvisorBadResponseError({ operation, detail: 'not JSON' });
    return this.parseValue(operation, response.json, schema);
  }

  private parsePage<T>(
    operation: OperationName,
    response: HttpResponse,
    schema: z.ZodType<T>,
  ): ParsedPage<T> {
    const page = this.parseBody(operation, response, pageSchema);
    return this.parseItems(operation, page[WIRE.page.fields.results], schema);
  }

  private parseItems<T>(operation: OperationName, raw: unknown[], schema: z.ZodType<T>): ParsedPage<T> {
    const items: T[] = [];
    const unreadable: Unreadable[] = [];
    for (const item of raw) {
      const parsed = schema.safeParse(item);
      if (parsed.success) items.push(parsed.data);
      else unreadable.push({ item, problem: issueText(parsed.error.issues[0]) });
    }
    const skipped = unreadable.length;
    if (skipped > 0)
      this.options.logger.warn({ operation, skipped }, 'chatvisor items skipped: unexpected shape');
    return { items, rawCount: raw.length, skipped, unreadable };
  }
}

/** Where an item went wrong and how, e.g. `customerId: Required` (the path is our schema's). */
function issueText(issue: z.core.$ZodIssue | undefined): string {
  if (!issue) return 'invalid';
  return issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message;
}

function agentBody(agent: AgentWrite): Record<string, unknown> {
  const A = WIRE.agent.fields;
  return {
    [A.email]: agent.email,
    [A.displayName]: agent.displayName,
    ...(agent.role === undefined ? {} : { [A.role]: agent.role }),
    [A.teams]: agent.teams,
    [A.active]: agent.active,
  };
}

/** A short, single-line hint from a vendor error body (never echoed whole: it may be large). */
function vendorDetail(response: HttpResponse, secrets: readonly string[]): string {
  const json = response.json as { message?: unknown; error?: unknown } | undefined;
  const message =
    typeof json?.message === 'string' ? json.message : typeof json?.error === 'string' ? json.error : '';
  // Scrubbed before the cut, so a token the cut runs through is not left half shown. The detail
  // lands in messages, reports, logs and the console: control characters (escape sequences, NUL,
  // BEL) and bidi overrides from the vendor's body are dropped, as for any shown text.
  const shown = cleanDisplayText(scrubSecrets(message || response.text || '', secrets)) ?? 'no detail';
  return shown.replace(/\s+/g, ' ').slice(0, 200);
}

export function isChatvisorError(error: unknown): error is ChatvisorApiError {
  return error instanceof ChatvisorApiError;
}
