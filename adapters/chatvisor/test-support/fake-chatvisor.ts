import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

/**
 * A fake Chatvisor REST server for tests: real sockets on 127.0.0.1, state that behaves like the
 * vendor (agents, customers with their profile — the company's id, e-mail, names —, labels and
 * status, messages, chat visibility), every request
 * recorded, and failures on demand (401, 429 with Retry-After, 500, slow answers, dropped
 * connections). Its paths are written out here on purpose rather than read from operations.ts,
 * so a test fails when the adapter calls a path the fake does not serve.
 */
export interface RecordedRequest {
  method: string;
  /** Below /rest/v1, without the query. */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** performance.now() when the request arrived (ms). */
  at: number;
}

export interface FakeAgent {
  email: string;
  displayName?: string;
  role?: string;
  teams?: string[];
  active?: boolean;
  [key: string]: unknown;
}

export interface FakeCustomer {
  customerId: string;
  id?: string;
  email?: string;
  firstname?: string;
  lastname?: string;
  labels: string[];
  status: 'UNREAD' | 'DONE' | 'UNRESOLVED';
  lastMessage?: string;
  /** The agent (e-mail) the customer is assigned to ("Assign customer"); null: nobody. Absent: not sent. */
  assignedUser?: string | null;
  /** When the conversation last changed (ISO); listings carry it unless `reportUpdatedAt` is off. */
  updatedAt?: string;
}

/** The profile fields a customer (or the company, through tagging) can change. */
export type FakeProfile = Partial<Pick<FakeCustomer, 'id' | 'email' | 'firstname' | 'lastname'>>;

export interface FakeMessage {
  id: string;
  customerId: string;
  text: string;
  sender: string;
  userId?: string;
  createdAt: string;
}

export interface FailureRule {
  method?: string;
  /** Matches the path below /rest/v1 (exact string or RegExp). */
  path?: string | RegExp;
  /** Answer this status instead of handling the request. */
  status?: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Wait this long before answering (a slow answer, or the timeout case). */
  delayMs?: number;
  /** Drop the connection without answering. */
  destroy?: boolean;
  /** Do the work, then wait this long before answering (the change happened; the answer is late). */
  lateAnswerMs?: number;
  /** Hold the request until this settles, then handle it (an answer the test releases). */
  until?: Promise<unknown>;
  /** How many matching requests this rule applies to (default 1). */
  times?: number;
  /** Applies only to requests that arrive while this answers true (checked as each arrives). */
  when?: () => boolean;
  /** Called when a request this rule applies to arrives (before it is held or answered). */
  onArrive?: () => void;
}

/** A request held by `hold`: the test knows it arrived, and lets it go when it has looked. */
export interface HeldRequest {
  /** Resolves once the held request has arrived (the client is waiting for its answer). */
  arrived: Promise<void>;
  /** Let it go: it is then handled as usual. */
  release(): void;
}

export interface FakeChatvisorOptions {
  token?: string;
  /** `GET /user` answers a bare array (default) or a `{page, results}` page. */
  agentList?: 'array' | 'page';
  /** Listings say when each conversation last changed (`updatedAt`, assumed field); default true. */
  reportUpdatedAt?: boolean;
}

export class FakeChatvisor {
  readonly token: string;
  readonly requests: RecordedRequest[] = [];
  readonly agents = new Map<string, FakeAgent>();
  readonly customers = new Map<string, FakeCustomer>();
  readonly messages = new Map<string, FakeMessage[]>();
  visible = true;
  /**
   * Raw items appended to the conversation and customer listings, as the vendor would send them:
   * items of a shape the bridge cannot read, or a customer listed a second time.
   */
  extraListed: unknown[] = [];
  /** Listings wrap around: a page past the end answers the first page again instead of nothing. */
  wrapListings = false;
  agentList: 'array' | 'page';
  reportUpdatedAt: boolean;
  /** The fake's clock for `updatedAt` (tests that use their own clock set it). */
  now: () => Date = () => new Date();
  /** Most requests in flight at once, measured at the server. */
  maxInFlight = 0;
  private inFlight = 0;
  private rules: Array<FailureRule & { left: number }> = [];
  private server: Server | undefined;
  private baseUrl = '';
  private messageSeq = 0;

  constructor(options: FakeChatvisorOptions = {}) {
    this.token = options.token ?? `cv-test-${randomBytes(8).toString('hex')}`;
    this.agentList = options.agentList ?? 'array';
    this.reportUpdatedAt = options.reportUpdatedAt ?? true;
  }

  /**
   * A bridge channel on this fake for tests that post webhooks: no scheduled sync or poll (the
   * test drives what happens) and no retries (a failure shows at once).
   */
  channel(id: string, token: string) {
    return {
      id,
      vendor: 'chatvisor',
      token,
      apiUrl: this.apiUrl,
      apiToken: this.token,
      maxRetries: 0,
      schedules: { agentSync: '', conversationPoll: '' },
    };
  }

  /** The apiUrl to configure: http://127.0.0.1:<port>/rest/v1 */
  get apiUrl(): string {
    return this.baseUrl;
  }

  async start(): Promise<this> {
    this.server = createServer((request, response) => {
      void this.handle(request, response);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.baseUrl = `http://127.0.0.1:${port}/rest/v1`;
    return this;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  fail(rule: FailureRule): void {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
  }

  /**
   * Hold the next request that matches (with `when`, e.g. the 11th agent create: `when: () =>
   * fake.agents.size === 10`) until the test releases it: a run that waits on it stands still
   * mid-way, so a test can look at its progress without a sleep.
   */
  hold(rule: Omit<FailureRule, 'until' | 'onArrive' | 'times'>): HeldRequest {
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let arrive!: () => void;
    const arrived = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    this.fail({ ...rule, until: released, onArrive: arrive });
    return { arrived, release };
  }

  clearFailures(): void {
    this.rules = [];
  }

  /** Requests that change state (anything but GET). */
  writes(): RecordedRequest[] {
    return this.requests.filter((request) => request.method !== 'GET');
  }

  /** "METHOD /path" of every request, in order. */
  calls(): string[] {
    return this.requests.map((request) => `${request.method} ${request.path}`);
  }

  resetLog(): void {
    this.requests.length = 0;
    this.maxInFlight = 0;
  }

  addAgent(agent: FakeAgent): void {
    this.agents.set(agent.email.toLowerCase(), { active: true, teams: [], ...agent });
  }

  addCustomer(customer: Partial<FakeCustomer> & { customerId: string }): FakeCustomer {
    const full: FakeCustomer = {
      labels: [],
      status: 'UNREAD',
      updatedAt: this.now().toISOString(),
      ...customer,
    };
    this.customers.set(full.customerId, full);
    return full;
  }

  /** A message arrives: it becomes the customer's last message; a customer's message reopens a DONE chat. */
  addMessage(
    customerId: string,
    text: string,
    /** CUSTOMER, AGENT, SYSTEM, or another word Chatvisor may use (its spec leaves it open). */
    sender: string = 'CUSTOMER',
    at = new Date(),
  ): FakeMessage {
    const customer = this.customers.get(customerId) ?? this.addCustomer({ customerId });
    const message: FakeMessage = {
      id: `m${++this.messageSeq}`,
      customerId,
      text,
      sender,
      ...(sender === 'AGENT' ? { userId: 'agent@example.test' } : {}),
      createdAt: at.toISOString(),
    };
    const list = this.messages.get(customerId) ?? [];
    list.push(message);
    this.messages.set(customerId, list);
    customer.lastMessage = text;
    customer.updatedAt = message.createdAt;
    if (sender === 'CUSTOMER' && customer.status === 'DONE') customer.status = 'UNREAD';
    return message;
  }

  setStatus(customerId: string, status: FakeCustomer['status']): void {
    const customer = this.customers.get(customerId);
    if (!customer) throw new Error(`no customer ${customerId}`);
    customer.status = status;
    customer.updatedAt = this.now().toISOString();
  }

  /** The customer's profile changes in Chatvisor (e.g. they logged in with another account). */
  updateProfile(customerId: string, profile: FakeProfile): void {
    const customer = this.customers.get(customerId);
    if (!customer) throw new Error(`no customer ${customerId}`);
    Object.assign(customer, profile);
  }

  /** How many times the customer's profile was read (GET /customer/{id}). */
  profileReads(customerId: string): number {
    return this.requests.filter(
      (request) => request.method === 'GET' && request.path === `/customer/${encodeURIComponent(customerId)}`,
    ).length;
  }

  /** The tag operations (tagUser) received for the customer, oldest first. */
  tagRequests(customerId: string): RecordedRequest[] {
    return this.requests.filter(
      (request) =>
        request.method === 'POST' && request.path === `/customer/${encodeURIComponent(customerId)}/tag`,
    );
  }

  /** The Conversation object Chatvisor would POST as a webhook for this customer now. */
  conversationPayload(customerId: string, options: { misspelt?: boolean } = {}): Record<string, unknown> {
    const customer = this.customers.get(customerId);
    if (!customer) throw new Error(`no customer ${customerId}`);
    return toConversation(customer, options.misspelt ?? false);
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    response.on('close', () => {
      this.inFlight--;
    });
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = text;
    }
    const url = new URL(request.url ?? '/', 'http://fake');
    const method = request.method ?? 'GET';
    const path = url.pathname.startsWith('/rest/v1') ? url.pathname.slice('/rest/v1'.length) : url.pathname;
    this.requests.push({
      method,
      path,
      query: Object.fromEntries(url.searchParams),
      headers: request.headers,
      body,
      at: performance.now(),
    });

    const rule = this.rules.find(
      (candidate) =>
        candidate.left > 0 &&
        (!candidate.when || candidate.when()) &&
        (!candidate.method || candidate.method === method) &&
        (!candidate.path ||
          (typeof candidate.path === 'string' ? candidate.path === path : candidate.path.test(path))),
    );
    if (rule) {
      rule.left--;
      rule.onArrive?.();
      if (rule.delayMs) await new Promise((resolve) => setTimeout(resolve, rule.delayMs));
      if (rule.until) await rule.until.catch(() => undefined);
      if (rule.destroy) {
        request.socket.destroy();
        return;
      }
      if (rule.status !== undefined) {
        send(response, rule.status, rule.body ?? { message: `injected ${rule.status}` }, rule.headers);
        return;
      }
    }
    if (response.destroyed) return;

    if (!url.pathname.startsWith('/rest/v1/')) return send(response, 404, { message: 'Not Found' });
    if (request.headers.authorization !== `Bearer ${this.token}`) {
      return send(response, 401, { message: 'Authentication failed' });
    }
    const [status, answer] = this.route(method, path, url.searchParams, body);
    if (rule?.lateAnswerMs) await new Promise((resolve) => setTimeout(resolve, rule.lateAnswerMs));
    send(response, status, answer);
  }

  /** A listing item, with `updatedAt` when the fake reports it. */
  private listed(item: Record<string, unknown>, customer: FakeCustomer): Record<string, unknown> {
    return this.reportUpdatedAt && customer.updatedAt ? { ...item, updatedAt: customer.updatedAt } : item;
  }

  private route(method: string, path: string, query: URLSearchParams, body: unknown): [number, unknown] {
    const segments = path.split('/').filter(Boolean).map(decodeURIComponent);
    const pageNumber = Number(query.get('pageNumber') ?? 0);
    const pageSize = Number(query.get('pageSize') ?? 50);
    const paged = <T>(items: T[]): [number, unknown] => [
      200,
      { page: pageNumber, results: items.slice(pageNumber * pageSize, (pageNumber + 1) * pageSize) },
    ];
    const [first, second, third] = segments;
    const listing = (items: unknown[]): [number, unknown] => {
      const all = [...items, ...this.extraListed];
      const pages = Math.max(1, Math.ceil(all.length / pageSize));
      const page = this.wrapListings ? pageNumber % pages : pageNumber;
      return [200, { page: pageNumber, results: all.slice(page * pageSize, (page + 1) * pageSize) }];
    };

    if (first === 'customer') {
      if (segments.length === 1 && method === 'GET') {
        return listing(
          [...this.customers.values()].map((customer) => this.listed(toCustomer(customer), customer)),
        );
      }
      const customer = second ? this.customers.get(second) : undefined;
      if (!customer) return [404, { message: 'Customer not found' }];
      if (segments.length === 2 && method === 'GET') return [200, toCustomer(customer)];
      if (third === 'tag' && method === 'POST') {
        const tag = body as { id?: string | number; labels?: unknown };
        if (!tag || !Array.isArray(tag.labels) || tag.labels.some((label) => typeof label !== 'string')) {
          return [400, { message: 'labels must be an array of strings' }];
        }
        customer.labels = tag.labels as string[];
        if (tag.id !== undefined) customer.id = String(tag.id);
        return [200, toCustomer(customer)];
      }
      if (third === 'message' && method === 'GET') return paged(this.messages.get(customer.customerId) ?? []);
      if (third === 'publicUrl' && method === 'GET') {
        const agent = query.get('user');
        if (agent && !this.agents.has(agent.toLowerCase()))
          return [400, { message: `unknown user ${agent}` }];
        return [
          200,
          {
            url: `https://app.chatvisor.example/agent-chat/${customer.customerId}/${randomBytes(6).toString('hex')}`,
          },
        ];
      }
      return [404, { message: 'Not Found' }];
    }

    if (first === 'conversation' && segments.length === 1 && method === 'GET') {
      return listing(
        [...this.customers.values()].map((customer) =>
          this.listed(toConversation(customer, false), customer),
        ),
      );
    }

    if (first === 'webchat' && second === 'visible' && method === 'GET')
      return [200, { visible: this.visible }];

    if (first === 'user') {
      if (segments.length === 1 && method === 'GET') {
        const all = [...this.agents.values()];
        return this.agentList === 'array' ? [200, all] : paged(all);
      }
      if (segments.length === 1 && method === 'POST') {
        const agent = body as FakeAgent;
        if (!agent || typeof agent.email !== 'string') return [400, { message: 'email is required' }];
        if (this.agents.has(agent.email.toLowerCase())) return [409, { message: 'user exists' }];
        this.addAgent(agent);
        return [201, this.agents.get(agent.email.toLowerCase())];
      }
      const existing = second ? this.agents.get(second.toLowerCase()) : undefined;
      if (!existing) return [404, { message: 'User not found' }];
      if (method === 'PUT') {
        Object.assign(existing, body as object);
        return [200, existing];
      }
      if (method === 'DELETE') {
        this.agents.delete(existing.email.toLowerCase());
        return [204, undefined];
      }
    }
    return [404, { message: 'Not Found' }];
  }
}

function toCustomer(customer: FakeCustomer): Record<string, unknown> {
  return {
    customerId: customer.customerId,
    ...(customer.id === undefined ? {} : { id: customer.id }),
    ...(customer.email === undefined ? {} : { email: customer.email }),
    ...(customer.firstname === undefined ? {} : { firstname: customer.firstname }),
    ...(customer.lastname === undefined ? {} : { lastname: customer.lastname }),
    ...(customer.assignedUser === undefined ? {} : { assignedUser: customer.assignedUser }),
    labels: customer.labels,
    status: customer.status,
    ...(customer.lastMessage === undefined ? {} : { lastMessage: { text: customer.lastMessage } }),
  };
}

function toConversation(customer: FakeCustomer, misspelt: boolean): Record<string, unknown> {
  return {
    customerId: customer.customerId,
    status: customer.status,
    ...(customer.lastMessage === undefined
      ? {}
      : { lastMessage: misspelt ? { test: customer.lastMessage } : { text: customer.lastMessage } }),
    url: `https://app.chatvisor.example/customer/${customer.customerId}`,
  };
}

function send(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (response.destroyed) return;
  const text = body === undefined || status === 204 ? '' : JSON.stringify(body);
  response.writeHead(status, { ...(text ? { 'content-type': 'application/json' } : {}), ...headers });
  response.end(text);
}

export async function startFakeChatvisor(options: FakeChatvisorOptions = {}): Promise<FakeChatvisor> {
  return new FakeChatvisor(options).start();
}
