import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createHttpClient, type HttpClient } from '../../src/net/http.js';
import { ChatvisorClient, type ChatvisorClientOptions } from './client.js';
import {
  ChatvisorAuthError,
  ChatvisorBadResponseError,
  ChatvisorNotFoundError,
  ChatvisorRateLimitedError,
  ChatvisorRejectedError,
  ChatvisorUnavailableError,
} from './errors.js';
import { RateLimiter } from './rate-limit.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';
import { memoryLogger } from './test-support/logs.js';

let fake: FakeChatvisor;
let logs: ReturnType<typeof memoryLogger>;

beforeEach(async () => {
  fake = await startFakeChatvisor();
  logs = memoryLogger();
});
afterEach(async () => {
  await fake.close();
});

function client(overrides: Partial<ChatvisorClientOptions> = {}): ChatvisorClient {
  return new ChatvisorClient({
    http: createHttpClient(),
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    timeoutMs: 2_000,
    maxRetries: 3,
    maxRetryAfterMs: 5_000,
    rateLimit: { perSecond: 1000, concurrency: 50 },
    logger: logs.logger,
    backoff: { baseMs: 10, capMs: 40 },
    ...overrides,
  });
}

const agent = { email: 'ann@shop.example', displayName: 'Ann', teams: ['support'], active: true };

describe('ChatvisorClient requests', () => {
  it('sends the Bearer token and the confirmed paging parameters, and parses the page', async () => {
    fake.addCustomer({ customerId: 'c1', email: 'a@example.test', status: 'UNRESOLVED', lastMessage: 'hi' });
    fake.addCustomer({ customerId: 'c2' });
    const page = await client().listCustomers({ pageNumber: 0, pageSize: 50 });
    expect(page.items.map((customer) => customer.customerId)).toEqual(['c1', 'c2']);
    expect(page.items[0]).toMatchObject({
      email: 'a@example.test',
      status: 'UNRESOLVED',
      lastMessageText: 'hi',
    });
    const [request] = fake.requests;
    expect(request).toMatchObject({
      method: 'GET',
      path: '/customer',
      query: { pageNumber: '0', pageSize: '50' },
    });
    expect(request!.headers.authorization).toBe(`Bearer ${fake.token}`);
    expect(request!.headers.accept).toBe('application/json');
  });

  it('writes agents with the table methods and paths, and encodes path parameters', async () => {
    const api = client();
    await api.createAgent(agent);
    await api.updateAgent('ann@shop.example', { ...agent, displayName: 'Ann B.' });
    await api.deleteAgent('ann@shop.example');
    expect(fake.calls()).toEqual([
      'POST /user',
      'PUT /user/ann%40shop.example',
      'DELETE /user/ann%40shop.example',
    ]);
    expect(fake.requests[0]!.body).toEqual({
      email: 'ann@shop.example',
      displayName: 'Ann',
      teams: ['support'],
      active: true,
    });
    expect(fake.requests[0]!.headers['content-type']).toBe('application/json');
    expect(fake.agents.size).toBe(0);
  });

  it('tags a customer with the whole label set and the external id', async () => {
    fake.addCustomer({ customerId: 'c 1/x' });
    await client().tagUser('c 1/x', { externalId: 'P-7', labels: ['P-7', 'segment:vip'] });
    expect(fake.requests[0]).toMatchObject({
      method: 'POST',
      path: '/customer/c%201%2Fx/tag',
      body: { id: 'P-7', labels: ['P-7', 'segment:vip'] },
    });
    expect(fake.customers.get('c 1/x')!.labels).toEqual(['P-7', 'segment:vip']);
  });

  it('reads visibility and public agent chat URLs', async () => {
    fake.visible = false;
    fake.addCustomer({ customerId: 'c1' });
    fake.addAgent(agent);
    const api = client();
    expect(await api.isVisible()).toBe(false);
    const url = await api.publicAgentChatUrl('c1', 'ann@shop.example');
    expect(url).toMatch(/^https:\/\/app\.chatvisor\.example\/agent-chat\/c1\//);
    expect(fake.requests[1]).toMatchObject({
      method: 'GET',
      path: '/customer/c1/publicUrl',
      query: { user: 'ann@shop.example' },
    });
    await expect(api.publicAgentChatUrl('nobody')).rejects.toBeInstanceOf(ChatvisorNotFoundError);
    await expect(api.publicAgentChatUrl('c1', 'ghost@shop.example')).rejects.toBeInstanceOf(
      ChatvisorRejectedError,
    );
  });

  it('pages through agents when Chatvisor answers pages, and reads a bare array in one call', async () => {
    for (let index = 0; index < 5; index++)
      fake.addAgent({ email: `a${index}@shop.example`, displayName: `A${index}` });
    fake.agentList = 'page';
    const paged = await client().listAgents(2);
    expect(paged.map((item) => item.email)).toEqual(
      ['a0', 'a1', 'a2', 'a3', 'a4'].map((name) => `${name}@shop.example`),
    );
    expect(fake.requests.map((request) => request.query.pageNumber)).toEqual(['0', '1', '2']);
    fake.resetLog();
    fake.agentList = 'array';
    expect(await client().listAgents(2)).toHaveLength(5);
    expect(fake.requests).toHaveLength(1);
  });

  it('keeps the items that parse and drops the odd ones', async () => {
    fake.addAgent({ email: 'ok@shop.example' });
    fake.agents.set('broken', { email: 42 as unknown as string });
    const agents = await client().listAgents(50);
    expect(agents.map((item) => item.email)).toEqual(['ok@shop.example']);
    expect(logs.lines.some((line) => line.includes('"skipped":1'))).toBe(true);
  });

  it('reports a body of the wrong shape as a bad response', async () => {
    fake.fail({ path: '/webchat/visible', status: 200, body: { shown: 'yes' } });
    await expect(client().isVisible()).rejects.toBeInstanceOf(ChatvisorBadResponseError);
  });
});

describe('ChatvisorClient errors and retries', () => {
  it('does not retry a rejected token', async () => {
    const api = new ChatvisorClient({ ...optionsFor(), apiToken: 'wrong-token' });
    const error = await api.isVisible().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorAuthError);
    expect(error).toMatchObject({ retryable: false, status: 502, vendorStatus: 401 });
    expect(fake.requests).toHaveLength(1);
  });

  it("refuses the example config's placeholder token without calling Chatvisor, and says what to set", async () => {
    // README Console step 7: *Dry run* on the example's co-browsing channel sent the published
    // `example-api-token` to the real api.chatvisor.com: "Chatvisor is unavailable: network error
    // (ENOTFOUND)" offline, a 401 online; neither said the token was the example's.
    const api = new ChatvisorClient({ ...optionsFor(), apiToken: 'example-api-token' });
    const error = await api.listAgents(100).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorAuthError);
    // The bridge's own config, not an upstream failure: a 4xx whose message the caller sees.
    expect(error).toMatchObject({
      retryable: false,
      status: 409,
      code: 'chatvisor_example_token',
      vendorStatus: undefined,
    });
    expect((error as Error).message).toBe(
      "the channel's apiToken is the example config's placeholder, not a Chatvisor API token (nothing was sent): set your account's apiToken and apiUrl (CHATVISOR_API_TOKEN and CHATVISOR_API_URL in the example)",
    );
    expect(fake.requests).toHaveLength(0);
  });

  it('waits for Retry-After on 429 and then succeeds', async () => {
    fake.fail({ path: '/webchat/visible', status: 429, headers: { 'retry-after': '1' } });
    // The waits the client asks for, recorded instead of measured: the retry goes out only once
    // the wait the vendor asked for is over.
    const waits: { ms: number; requestsBefore: number }[] = [];
    const sleep = async (ms: number) => {
      waits.push({ ms, requestsBefore: fake.requests.length });
    };
    expect(await client({ sleep }).isVisible()).toBe(true);
    expect(fake.requests).toHaveLength(2);
    expect(waits).toEqual([{ ms: 1000, requestsBefore: 1 }]);
  });

  it('does not wait for a Retry-After beyond the cap: fails as rate limited at once', async () => {
    fake.fail({ path: '/webchat/visible', status: 429, headers: { 'retry-after': '120' } });
    const error = await client()
      .isVisible()
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorRateLimitedError);
    expect(error).toMatchObject({ retryAfterMs: 120_000, status: 429, headers: { 'retry-after': '120' } });
    expect(fake.requests).toHaveLength(1);
  });

  it('retries 5xx on reads with backoff and gives up after maxRetries', async () => {
    fake.fail({ path: '/customer', status: 500, times: 2 });
    const page = await client().listCustomers({ pageNumber: 0, pageSize: 10 });
    expect(page.items).toEqual([]);
    expect(fake.requests).toHaveLength(3);

    fake.resetLog();
    fake.fail({ path: '/customer', status: 503, times: 10 });
    const error = await client({ maxRetries: 2 })
      .listCustomers({ pageNumber: 0, pageSize: 10 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorUnavailableError);
    expect(error).toMatchObject({ retryable: true, vendorStatus: 503, status: 502 });
    expect(fake.requests).toHaveLength(3);
  });

  it('never repeats a create after a 5xx or a dropped connection (it may have happened)', async () => {
    fake.fail({ method: 'POST', path: '/user', status: 500 });
    await expect(client().createAgent(agent)).rejects.toBeInstanceOf(ChatvisorUnavailableError);
    expect(fake.requests).toHaveLength(1);

    fake.resetLog();
    fake.fail({ method: 'POST', path: '/user', destroy: true });
    await expect(client().createAgent(agent)).rejects.toBeInstanceOf(ChatvisorUnavailableError);
    expect(fake.requests).toHaveLength(1);
  });

  it('repeats a create after 429: Chatvisor did not act on it', async () => {
    fake.fail({ method: 'POST', path: '/user', status: 429, headers: { 'retry-after': '0' } });
    await client().createAgent(agent);
    expect(fake.calls()).toEqual(['POST /user', 'POST /user']);
    expect(fake.agents.has(agent.email)).toBe(true);
  });

  it('repeats a create when the connection was refused before sending', async () => {
    const port = await closedPort();
    let sends = 0;
    const real = createHttpClient();
    const counting: HttpClient = {
      send: (request) => {
        sends++;
        return real.send(request);
      },
    };
    const api = new ChatvisorClient({
      ...optionsFor(),
      http: counting,
      apiUrl: `http://127.0.0.1:${port}/rest/v1`,
    });
    await expect(api.createAgent(agent)).rejects.toBeInstanceOf(ChatvisorUnavailableError);
    expect(sends).toBe(4);
    // The error says what failed and where: the console and the CLI show this sentence.
    await expect(api.createAgent(agent)).rejects.toThrow(
      `Chatvisor is unavailable: network error (ECONNREFUSED) reaching 127.0.0.1:${port}`,
    );
  });

  it('times out slow answers and retries idempotent calls', async () => {
    // 1 s attempts against 5 s delays: a loaded machine's prompt answer still comes within the
    // timeout (with 200 ms the retry itself could time out), and a delayed one never does.
    fake.fail({ path: '/webchat/visible', delayMs: 5000 });
    expect(await client({ timeoutMs: 1000 }).isVisible()).toBe(true);
    expect(fake.requests).toHaveLength(2);

    fake.resetLog();
    fake.fail({ path: '/webchat/visible', delayMs: 5000, times: 3 });
    const error = await client({ timeoutMs: 1000, maxRetries: 2 })
      .isVisible()
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorUnavailableError);
    expect((error as Error).message).toContain('timed out after 1000 ms');
  });

  it('maps a 404 on an assumed path to a not-found error that names the table', async () => {
    const error = await client()
      .getCustomer('nope')
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorNotFoundError);
    expect((error as Error).message).toContain('customer nope');
    expect((error as Error).message).toContain('operations.ts');
    expect(error).toMatchObject({ status: 404, code: 'chatvisor_not_found' });
  });

  it('never writes the token into logs or errors', async () => {
    fake.fail({ path: '/webchat/visible', status: 500 });
    fake.fail({ path: '/customer', status: 429, headers: { 'retry-after': '0' } });
    fake.fail({ method: 'POST', path: '/user', destroy: true });
    const api = client();
    await api.isVisible();
    await api.listCustomers({ pageNumber: 0, pageSize: 5 });
    const error = await api.createAgent(agent).catch((caught: unknown) => caught);
    const bad = new ChatvisorClient({ ...optionsFor(), apiToken: `${fake.token}-revoked` });
    const authError = await bad.isVisible().catch((caught: unknown) => caught);
    expect(logs.lines.length).toBeGreaterThan(3);
    const everything = [
      ...logs.lines,
      JSON.stringify(error),
      String(error),
      JSON.stringify(authError),
      String(authError),
    ].join('\n');
    expect(everything).not.toContain(fake.token);
    expect(logs.lines.some((line) => line.includes('"path":"/webchat/visible"'))).toBe(true);
  });

  it('keeps the token out of a refusal whose body echoes it', async () => {
    // An API that refuses a request often quotes what it got; the detail is shown by the admin
    // API, the CLI and the console (agent sync's failures), so the token is hidden in it.
    fake.fail({
      method: 'POST',
      path: '/user',
      status: 400,
      body: { message: `header Authorization: Bearer ${fake.token} may not create agents` },
    });
    const error = await client()
      .createAgent(agent)
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatvisorRejectedError);
    expect(String((error as Error).message)).toContain('may not create agents');
    expect(`${JSON.stringify(error)} ${(error as Error).message}`).not.toContain(fake.token);
  });
});

describe('ChatvisorClient rate limit', () => {
  it('keeps to the concurrency cap at the server, and every request gets through', async () => {
    fake.fail({ path: '/webchat/visible', delayMs: 80, times: 100 });
    const api = client({ rateLimit: { perSecond: 5, concurrency: 2 } });
    await Promise.all(Array.from({ length: 12 }, () => api.isVisible()));
    expect(fake.requests).toHaveLength(12);
    expect(fake.maxInFlight).toBe(2);
  });

  // The per-second limit, judged on the limiter's own clock (what it promises), not on arrival
  // times at a server. The clock is vitest's fake one: the limiter's waits and the requests'
  // 20 ms run on it, so a loaded machine cannot shift one start against another (with the real
  // clock, a continuation that ran a few ms late made two windows look like one).
  it('starts at most perSecond requests in any one-second window of its clock', async () => {
    vi.useFakeTimers();
    try {
      const starts: number[] = [];
      let inFlight = 0;
      let maxInFlight = 0;
      const limiter = new RateLimiter({ perSecond: 5, concurrency: 2, now: () => Date.now() });
      const all = Promise.all(
        Array.from({ length: 12 }, async () => {
          const release = await limiter.acquire();
          starts.push(Date.now());
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await new Promise((resolve) => setTimeout(resolve, 20));
          inFlight--;
          release();
        }),
      );
      await vi.runAllTimersAsync();
      await all;
      expect(starts).toHaveLength(12);
      expect(maxInFlight).toBe(2);
      const sorted = [...starts].sort((a, b) => a - b);
      for (const start of sorted) {
        expect(sorted.filter((time) => time >= start && time < start + 1000).length).toBeLessThanOrEqual(5);
      }
      // 12 starts at 5 a second need at least two full windows after the first.
      expect(sorted.at(-1)! - sorted[0]!).toBeGreaterThanOrEqual(2000);
    } finally {
      vi.useRealTimers();
    }
  });

  it('lets at most maxWaiting callers wait; the next ones are refused at once, and the waiters still run', () => {
    const limiter = new RateLimiter({ perSecond: 1000, concurrency: 1, maxWaiting: 3 });
    const outcomes: string[] = [];
    const releases: (() => void)[] = [];
    const calls = Array.from({ length: 6 }, () =>
      limiter.acquire().then(
        (release) => {
          outcomes.push('started');
          releases.push(release);
        },
        (error: Error) => outcomes.push(error.name),
      ),
    );
    return (async () => {
      // The first starts, three wait, two are refused without waiting: all of that settles in
      // microtasks, so one turn of the event loop is enough to see it (not a timed wait).
      await calls[0];
      await new Promise((resolve) => setImmediate(resolve));
      expect(outcomes.sort()).toEqual(['RateLimiterFullError', 'RateLimiterFullError', 'started']);
      expect(limiter.waiting).toBe(3);
      // The waiters get their turns as requests finish.
      for (let turn = 0; turn < 3; turn++) {
        releases[turn]!();
        await calls[turn + 1];
      }
      releases[3]!();
      expect(outcomes.filter((outcome) => outcome === 'started')).toHaveLength(4);
      expect(limiter.waiting).toBe(0);
    })();
  });

  it('a request refused by a full queue is a ChatvisorRateLimitedError (429), logged, counted', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    fake.fail({ method: 'GET', path: /^\/customer\//, until: gate, times: 10 });
    fake.addCustomer({ customerId: 'c1' });
    let refused = 0;
    const limited = client({
      maxRetries: 0,
      rateLimit: { perSecond: 1000, concurrency: 1, maxWaiting: 1 },
      onQueueFull: () => refused++,
    });
    const first = limited.getCustomer('c1');
    const second = limited.getCustomer('c1');
    const third = limited.getCustomer('c1');
    // The admin API answers it 429 with Retry-After, as the README says: the limit's window is 1 s.
    await expect(third).rejects.toMatchObject({
      code: 'chatvisor_rate_limited',
      status: 429,
      headers: { 'retry-after': '1' },
    });
    expect(refused).toBe(1);
    expect(logs.lines.join('\n')).toContain('too many requests waiting');
    release();
    await expect(first).resolves.toMatchObject({ customerId: 'c1' });
    await expect(second).resolves.toMatchObject({ customerId: 'c1' });
  });
});

function optionsFor(): ChatvisorClientOptions {
  return {
    http: createHttpClient(),
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    timeoutMs: 2_000,
    maxRetries: 3,
    maxRetryAfterMs: 5_000,
    rateLimit: { perSecond: 1000, concurrency: 50 },
    logger: logs.logger,
    backoff: { baseMs: 10, capMs: 40 },
  };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
