import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from '../../test/support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../../test/support/harness.js';
import type { ChatvisorRuntime } from './index.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';

/** The adapter inside a real bridge: vendor webhooks and admin routes over HTTP on 127.0.0.1. */
const HOOK_TOKEN = 'chatvisor-hook-token-0123456789';

let fake: FakeChatvisor;
let bridge: TestBridge;

beforeAll(async () => {
  fake = await startFakeChatvisor();
  bridge = await startTestBridge({
    start: false,
    config: {
      agents: [
        { email: 'oleg@shop.example', name: 'Oleg Petrov', teams: ['support'] },
        { email: 'irina@shop.example', name: 'Irina Sokolova' },
      ],
      channels: [
        {
          id: 'cobrowse',
          name: 'co-browsing',
          vendor: 'chatvisor',
          token: HOOK_TOKEN,
          apiUrl: fake.apiUrl,
          apiToken: fake.token,
          maxRetries: 0,
          schedules: { agentSync: '*/15 * * * *', conversationPoll: '' },
          offerAgentChatUrl: true,
        },
        {
          id: 'revoked',
          vendor: 'chatvisor',
          token: 'another-hook-token-0123456789',
          apiUrl: fake.apiUrl,
          apiToken: 'revoked-token',
        },
      ],
    },
  });
});
afterAll(async () => {
  await bridge.close();
  await fake.close();
});
afterEach(() => {
  fake.clearFailures();
  fake.resetLog();
});

const runtime = () => bridge.bridge.channels.get('cobrowse')!.runtime as ChatvisorRuntime;

describe('Chatvisor in the bridge', () => {
  it('takes webhooks on its channel URL and answers {"ok":true}; a wrong token is a 404', async () => {
    fake.addCustomer({ customerId: 'h1', email: 'hook@example.org' });
    fake.addMessage('h1', 'hi there');
    const answer = await bridge.post(
      `/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`,
      fake.conversationPayload('h1'),
    );
    expect(answer).toMatchObject({ status: 200, body: { ok: true } });
    await runtime().idle();
    const found = await bridge.admin('GET', '/api/v1/contacts?email=hook@example.org');
    expect(found.body.contacts).toHaveLength(1);
    const timeline = await bridge.admin('GET', `/api/v1/contacts/${found.body.contacts[0].id}/timeline`);
    expect(timeline.body.entries.map((entry: { type: string }) => entry.type)).toEqual([
      'conversation.started',
    ]);

    const wrong = await bridge.post(
      '/webhooks/chatvisor/cobrowse/not-the-token-0000000',
      fake.conversationPayload('h1'),
    );
    expect(wrong.status).toBe(404);
  });

  it('answers 400 to a body that is not JSON and journals it; unknown shapes are journaled and answered ok', async () => {
    const bad = await bridge.post(`/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`, '{"customerId":', {
      'content-type': 'application/json',
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_json');
    const odd = await bridge.post(`/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`, { hello: 'world' });
    expect(odd).toMatchObject({ status: 200, body: { ok: true } });
    const journal = await bridge.admin('GET', '/api/v1/journal?channel=cobrowse');
    expect(journal.body.entries.map((entry: { kind: string }) => entry.kind)).toEqual([
      'unhandled',
      'rejected',
    ]);
  });

  it('runs an agent sync on demand: dry run first, then for real; reports are kept', async () => {
    const dry = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync?dryRun=true');
    expect(dry).toMatchObject({
      status: 200,
      body: { dryRun: true, created: ['oleg@shop.example', 'irina@shop.example'], writes: 0 },
    });
    expect(fake.writes()).toEqual([]);

    const real = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync');
    expect(real).toMatchObject({ status: 200, body: { dryRun: false, writes: 2, failed: [] } });
    expect(fake.agents.size).toBe(2);

    const reports = await bridge.admin('GET', '/api/v1/channels/cobrowse/agent-sync');
    expect(reports.body.reports.map((report: { dryRun: boolean }) => report.dryRun)).toEqual([false, true]);

    const invalid = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync?dryRun=perhaps');
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.issues[0].path).toBe('dryRun');
  });

  it('runs the scheduled job under the scheduler, and never beside an on-demand run', async () => {
    fake.agents.clear();
    // The scheduled run's listing is held until the on-demand request has been answered: no head
    // start to guess (a 50 ms one could pass on a loaded machine before the run took its lock).
    let release: (value?: unknown) => void = () => undefined;
    fake.fail({ method: 'GET', path: '/user', until: new Promise((resolve) => (release = resolve)) });
    const scheduled = bridge.bridge.scheduler.runNow('cobrowse', 'agent-sync');
    await expect.poll(() => fake.calls().includes('GET /user'), { timeout: 20_000 }).toBe(true);
    const onDemand = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync');
    release();
    expect(await scheduled).toBe('ok');
    expect(onDemand).toMatchObject({ status: 409, body: { error: { code: 'agent_sync_running' } } });
    expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(2);
  });

  it('counts a scheduled run that finds an on-demand sync running as skipped_locked, not failed', async () => {
    let release: (value?: unknown) => void = () => undefined;
    fake.fail({ method: 'GET', path: '/user', until: new Promise((resolve) => (release = resolve)) });
    const onDemand = bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync');
    await expect.poll(() => fake.calls().includes('GET /user'), { timeout: 20_000 }).toBe(true);
    expect(await bridge.bridge.scheduler.runNow('cobrowse', 'agent-sync')).toBe('skipped_locked');
    release();
    expect((await onDemand).status).toBe(200);
    const metrics = await bridge.bridge.metrics.registry.metrics();
    expect(metrics).toMatch(
      /chatbridge_job_runs_total\{channel="cobrowse",job="agent-sync",outcome="skipped_locked"\} 1/,
    );
  });

  // Found by test/slow/routes.fuzz.test.ts: JSON can carry a lone surrogate (\ud800), which
  // encodeURIComponent refuses with a URIError, answered 500 instead of naming the id.
  it('refuses an id that is no Unicode text (a lone surrogate) with a 400 naming it, not a 500', async () => {
    const requestsBefore = fake.requests.length;
    for (const customerId of ['\ud800', 'a\udc00', 'x\ud83d']) {
      const answer = await bridge.admin(
        'POST',
        '/api/v1/channels/cobrowse/agent-chat-url',
        JSON.stringify({ customerId }),
      );
      expect(answer.status, JSON.stringify(customerId)).toBe(400);
      expect(answer.body.error).toEqual({
        code: 'invalid_path_parameter',
        message: 'customerId is not a usable id',
      });
    }
    expect(fake.requests.length).toBe(requestsBefore);
  });

  it('makes public agent chat URLs, with clear errors', async () => {
    fake.addCustomer({ customerId: 'u1' });
    fake.addAgent({ email: 'oleg@shop.example' });
    const made = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {
      customerId: 'u1',
      agentEmail: 'oleg@shop.example',
    });
    expect(made.status).toBe(200);
    expect(made.body.url).toMatch(/^https:\/\/app\.chatvisor\.example\/agent-chat\/u1\//);
    expect(fake.requests.at(-1)).toMatchObject({
      path: '/customer/u1/publicUrl',
      query: { user: 'oleg@shop.example' },
    });

    const numeric = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId: 7 });
    expect(numeric).toMatchObject({ status: 404, body: { error: { code: 'chatvisor_not_found' } } });

    const invalid = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {
      agentEmail: 'not-an-email',
      extra: 1,
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.issues.map((issue: { path: string }) => issue.path).sort()).toEqual([
      'agentEmail',
      'customerId',
      'extra',
    ]);
    expect((await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', 'nope')).status).toBe(400);
    expect((await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url')).status).toBe(400);

    fake.fail({ path: '/customer/u1/publicUrl', status: 500 });
    const down = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId: 'u1' });
    expect(down).toMatchObject({ status: 502, body: { error: { code: 'chatvisor_unavailable' } } });
    fake.fail({ path: '/customer/u1/publicUrl', status: 429, headers: { 'retry-after': '600' } });
    const throttled = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {
      customerId: 'u1',
    });
    expect(throttled).toMatchObject({ status: 429, body: { error: { code: 'chatvisor_rate_limited' } } });
    expect(throttled.headers.get('retry-after')).toBe('600');
    const refused = await bridge.admin('POST', '/api/v1/channels/revoked/agent-chat-url', {
      customerId: 'u1',
    });
    expect(refused).toMatchObject({ status: 502, body: { error: { code: 'chatvisor_auth_failed' } } });

    const anonymous = await fetch(`${bridge.url}/api/v1/channels/cobrowse/agent-chat-url`, {
      method: 'POST',
      body: '{"customerId":"u1"}',
    });
    expect(anonymous.status).toBe(401);
  });

  it('refuses an agent chat URL that is not http(s), and ids no Chatvisor path can name', async () => {
    fake.addCustomer({ customerId: 'u2' });
    for (const url of ['javascript:alert(document.cookie)', 'data:text/html,<script>1</script>']) {
      fake.fail({ path: '/customer/u2/publicUrl', status: 200, body: { url } });
      const answer = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {
        customerId: 'u2',
      });
      expect(answer).toMatchObject({ status: 502, body: { error: { code: 'chatvisor_bad_response' } } });
      expect(JSON.stringify(answer.body)).not.toContain('script');
    }
    fake.resetLog();
    for (const customerId of ['..', '.']) {
      const answer = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId });
      expect(answer).toMatchObject({ status: 400, body: { error: { code: 'invalid_path_parameter' } } });
    }
    expect(fake.requests).toEqual([]);
  });

  it('shows chat visibility in the admin API', async () => {
    fake.visible = false;
    const answer = await bridge.admin('GET', '/api/v1/channels/cobrowse/visibility');
    expect(answer).toMatchObject({ status: 200, body: { visible: false, checkedAt: expect.any(String) } });
    fake.visible = true;
    expect((await bridge.admin('GET', '/api/v1/channels/cobrowse/visibility')).body.visible).toBe(true);
  });

  it('offers the agent chat URL as a fact in other channels when configured', async () => {
    fake.addCustomer({ customerId: 'f1', email: 'facts@example.org' });
    await bridge.post(`/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`, fake.conversationPayload('f1'));
    await runtime().idle();
    const contact = (await bridge.bridge.context.contacts.findByIdentifier({
      kind: 'email',
      value: 'facts@example.org',
    }))!;
    const answer = await bridge.bridge.context.facts.forContact(contact, {
      channelId: 'shop-site',
      deadlineMs: 2_000,
    });
    const fact = answer.facts.find((candidate) => candidate.key === 'chatvisor.cobrowse.agentChatUrl');
    expect(fact).toMatchObject({
      label: 'Chatvisor chat (co-browsing)',
      type: 'url',
      link: expect.stringContaining('/agent-chat/f1/'),
    });
  });

  it('DESIGN §11: the console says polling is off, and how to turn it on, for a channel without a poll schedule', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/channels', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h3>Conversation polling</h3>');
    // No conversation-poll job is listed above, so the page must not point at one.
    expect(page.text).not.toContain('Job conversation-poll');
    expect(page.text).not.toContain('the job above');
    expect(page.text).toContain('Polling is off');
    expect(page.text).toContain('schedules.conversationPoll');
  });

  it('lists its routes, jobs and the CLI command', () => {
    const cobrowse = runtime();
    expect(cobrowse.routes!.map((route) => `${route.method} ${route.path}`)).toEqual([
      'POST agent-sync',
      'POST agent-sync/start',
      'GET agent-sync/progress',
      'GET agent-sync',
      'GET conversation-poll',
      'POST agent-chat-url',
      'GET visibility',
    ]);
    expect(cobrowse.jobs!.map((job) => [job.name, job.schedule])).toEqual([['agent-sync', '*/15 * * * *']]);
    expect(cobrowse.commands!.map((command) => command.name)).toEqual(['sync agents']);
    const revoked = bridge.bridge.channels.get('revoked')!.runtime;
    expect(revoked.jobs).toEqual([]);
  });
});

describe('a Chatvisor customer in the person’s unified timeline (real bridge, Redis store)', () => {
  const JIVO_TOKEN = 'jivo-hook-token-0123456789abcdef';
  let identityFake: FakeChatvisor;
  let identityBridge: TestBridge;

  beforeAll(async () => {
    identityFake = await startFakeChatvisor();
    identityBridge = await startTestBridge({
      store: 'redis',
      start: false,
      config: {
        channels: [
          { id: 'shop-site', vendor: 'jivochat', token: JIVO_TOKEN },
          {
            id: 'cobrowse',
            vendor: 'chatvisor',
            token: HOOK_TOKEN,
            apiUrl: identityFake.apiUrl,
            apiToken: identityFake.token,
            maxRetries: 0,
            labels: ['{person}'],
            // Registered so the test can run it now; it never fires during the test.
            schedules: { conversationPoll: '0 0 1 1 *' },
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await identityBridge.close();
    await identityFake.close();
  });

  const cobrowse = () => identityBridge.bridge.channels.get('cobrowse')!.runtime as ChatvisorRuntime;

  async function contactsBy(query: string) {
    const answer = await identityBridge.admin('GET', `/api/v1/contacts?${query}`);
    expect(answer.status).toBe(200);
    return answer.body.contacts as { id: string }[];
  }

  async function timelineOf(contactId: string) {
    const answer = await identityBridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?limit=50`);
    return (answer.body.entries as { vendor: string; type: string }[])
      .filter((entry) => !entry.type.startsWith('contact.'))
      .map((entry) => `${entry.vendor} ${entry.type}`)
      .sort();
  }

  it('webhook: GET /api/v1/contacts?email= finds the contact with the Chatvisor conversation and the JivoChat chat', async () => {
    const jivo = JSON.parse(
      readFileSync(new URL('../jivochat/__fixtures__/chat_finished.json', import.meta.url), 'utf8'),
    ) as Record<string, unknown>;
    const site = await identityBridge.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, {
      ...jivo,
      user_token: 'P-5521',
    });
    expect(site.status).toBe(200);

    identityFake.addCustomer({ customerId: 'cv-77', id: 'P-5521', email: 'S.Orlova@example.org' });
    identityFake.addMessage('cv-77', 'The kettle again, sorry');
    const hook = `/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`;
    expect(await identityBridge.post(hook, identityFake.conversationPayload('cv-77'))).toMatchObject({
      status: 200,
      body: { ok: true },
    });
    await cobrowse().idle();
    expect(await identityBridge.post(hook, identityFake.addMessage('cv-77', 'Order 5521'))).toMatchObject({
      status: 200,
    });
    await cobrowse().idle();

    const [contact, ...others] = await contactsBy('email=s.orlova@example.org');
    expect(others).toEqual([]);
    expect((await contactsBy('identity=person:P-5521')).map((found) => found.id)).toEqual([contact!.id]);
    expect(await timelineOf(contact!.id)).toEqual([
      'chatvisor conversation.started',
      'chatvisor message.received',
      'jivochat conversation.finished',
      'jivochat conversation.rated',
    ]);
    // Identified: the channel's labels went to Chatvisor once.
    expect(identityFake.tagRequests('cv-77').map((request) => request.body)).toEqual([
      { id: 'P-5521', labels: ['P-5521'] },
    ]);
    expect(identityFake.profileReads('cv-77')).toBe(1);
  });

  it('poll: the first poll backfills a recent conversation into the timeline found by person id', async () => {
    identityFake.addCustomer({ customerId: 'cv-88', id: 'P-8800', email: 'polled@example.org' });
    identityFake.addMessage('cv-88', 'Found only by polling');
    expect(await identityBridge.bridge.scheduler.runNow('cobrowse', 'conversation-poll')).toBe('ok');
    const [contact] = await contactsBy('identity=person:P-8800');
    expect((await contactsBy('email=polled@example.org')).map((found) => found.id)).toEqual([contact!.id]);
    expect(await timelineOf(contact!.id)).toEqual([
      'chatvisor conversation.started',
      'chatvisor message.received',
    ]);
    expect(identityFake.tagRequests('cv-88')).toHaveLength(1);

    // What the first poll backfilled stays readable in the admin API.
    const reports = await identityBridge.admin('GET', '/api/v1/channels/cobrowse/conversation-poll');
    expect(reports.status).toBe(200);
    expect(reports.body.first).toMatchObject({
      baseline: true,
      conversationsSeen: 2,
      // cv-77's conversation came by webhook already: only cv-88's was backfilled. Its first
      // message (sent before the conversation's webhook, never delivered) is within the window
      // and backfilled with cv-88's one.
      backfill: { windowMs: 86_400_000, conversations: 1, messages: 2, olderThanWindow: 0 },
    });
    expect(reports.body.recent).toHaveLength(1);

    // And in the console's Channels page (DESIGN §11: "polling state").
    const { cookie } = await signIn(identityBridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(identityBridge.url, '/console/channels', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h3>Conversation polling</h3>');
    expect(page.text).toContain('replayed 1 conversation and 2 messages changed in the backfill window');
    expect(page.text).toContain('2 conversations seen on 1 page');
  });
});

describe('the console shows what an agent sync left alone', () => {
  let keptFake: FakeChatvisor;
  let kept: TestBridge;
  beforeAll(async () => {
    keptFake = await startFakeChatvisor();
    kept = await startTestBridge({
      start: false,
      config: {
        agents: [{ email: 'oleg@shop.example', name: 'Oleg Petrov' }],
        channels: [
          {
            id: 'kept',
            vendor: 'chatvisor',
            token: HOOK_TOKEN,
            apiUrl: keptFake.apiUrl,
            apiToken: keptFake.token,
            maxRetries: 0,
            onRemovedAgent: 'ignore',
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await kept.close();
    await keptFake.close();
  });

  it('lists the ignored agents, and why they were left, in the sync report', async () => {
    // An agent an earlier directory had, since removed from it: the sync leaves it (ignore).
    await kept.bridge.store.sadd('chatvisor:kept:agents:managed', 'gone@shop.example');
    keptFake.addAgent({ email: 'gone@shop.example', displayName: 'Gone Agent', active: true });
    const run = await kept.admin('POST', '/api/v1/channels/kept/agent-sync');
    expect(run).toMatchObject({ status: 200, body: { ignored: ['gone@shop.example'] } });

    const { cookie } = await signIn(kept.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(kept.url, '/console/channels', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('unchanged 0, ignored 1, failed 0');
    expect(page.text).toMatch(
      /<li>ignored \(gone from the directory, left as they are in Chatvisor: onRemovedAgent ignore\): gone@shop\.example<\/li>/,
    );
  });

  it("shows a poll run's unreadable items and a failed run's error", async () => {
    const poller = (kept.bridge.channels.get('kept')!.runtime as ChatvisorRuntime).poller;
    keptFake.addCustomer({ customerId: 'k1' });
    keptFake.extraListed = [{ status: 'DONE' }];
    expect(await poller.run()).toMatchObject({ unreadable: 1 });
    keptFake.fail({ method: 'GET', path: '/conversation', status: 503 });
    await expect(poller.run()).rejects.toMatchObject({ code: 'chatvisor_unavailable' });

    const { cookie } = await signIn(kept.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(kept.url, '/console/channels', { cookie });
    expect(page.text).toContain('1 unreadable');
    expect(page.text).toContain('— failed: Chatvisor');
    // The unreadable item itself is in the payload journal, under its channel.
    const journal = await kept.bridge.context.journal.list({ limit: 10, channelId: 'kept' });
    expect(journal.entries).toEqual([
      expect.objectContaining({
        channelId: 'kept',
        vendor: 'chatvisor',
        kind: 'rejected',
        body: '{"status":"DONE"}',
      }),
    ]);
  });
});
