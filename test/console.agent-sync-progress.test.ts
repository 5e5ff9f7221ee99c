import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The console follows a Chatvisor agent sync step by step (DESIGN §11, Channels): the form starts
 * the sync and lands at once on its progress view; the run writes where it stands to the store, so
 * every instance shows it, whichever started it. The fake holds the 11th agent create, so the
 * run stands still mid-way while the test looks (no sleep).
 */
const AGENTS = 40;
const HOOK_TOKEN = 'cv-hook-token-0123456789abcdef';
const CSP_SCRIPT = "script-src 'self'";

describe('console: agent sync progress across instances (Redis store)', () => {
  let chatvisor: FakeChatvisor;
  let first: TestBridge;
  let second: TestBridge;
  let keyPrefix: string;

  beforeAll(async () => {
    chatvisor = await new FakeChatvisor().start();
    keyPrefix = uniquePrefix('sync-progress');
    const config = {
      agents: Array.from({ length: AGENTS }, (_, index) => ({
        email: `agent-${String(index + 1).padStart(2, '0')}@shop.example`,
        name: `Agent ${index + 1}`,
      })),
      // 10 requests a second by default: 40 creates would take seconds.
      channels: [
        { ...chatvisor.channel('cv', HOOK_TOKEN), name: 'Co-browsing', rateLimit: { perSecond: 1000 } },
      ],
    };
    first = await startTestBridge({ store: 'redis', keyPrefix, start: false, config });
    second = await startTestBridge({ store: 'redis', keyPrefix, start: false, config });
  });
  afterAll(async () => {
    await first?.close();
    await second?.close();
    await chatvisor?.close();
    if (keyPrefix) await cleanupPrefix(await getTestRedisUrl(), keyPrefix);
  });

  it('starts the sync and shows its progress mid-way on another instance, then its report', async () => {
    const held = chatvisor.hold({ method: 'POST', path: '/user', when: () => chatvisor.agents.size === 10 });
    const one = await signIn(first.url, TEST_ADMIN_TOKEN);
    const two = await signIn(second.url, TEST_ADMIN_TOKEN);
    const none = await consoleRequest(second.url, '/console/channels/cv/agent-sync', { cookie: two.cookie });
    expect(none.text).toContain('No agent sync has run in the last day');
    expect(none.text).not.toContain('http-equiv="refresh"');

    // Answered while the run is held: the form does not wait for the sync.
    const started = await consoleRequest(first.url, '/console/channels/cv/agent-sync', {
      cookie: one.cookie,
      form: { _csrf: one.csrf, dryRun: 'false' },
    });
    expect(started.status).toBe(302);
    expect(started.location).toBe('/console/channels/cv/agent-sync');
    await held.arrived;

    // The other instance reads where the run stands: 10 of 40 written, the 11th under way.
    const json = await consoleRequest(second.url, '/console/channels/cv/agent-sync/progress', {
      cookie: two.cookie,
    });
    expect(json.status).toBe(200);
    expect(json.headers.get('content-type')).toContain('application/json');
    const progress = JSON.parse(json.text);
    expect(progress).toMatchObject({
      state: 'running',
      fields: { listed: '0', planned: String(AGENTS), handled: '10', created: '10', failed: '0' },
      value: 10,
      max: AGENTS,
    });
    expect(progress.text).toBe('Writing to Chatvisor: 10 of 40 changes done — now agent-11@shop.example.');

    const view = await consoleRequest(second.url, '/console/channels/cv/agent-sync', { cookie: two.cookie });
    expect(view.status).toBe(200);
    expect(view.text).toContain('Writing to Chatvisor: 10 of 40 changes done');
    expect(view.text).toContain(
      `data-poll="/console/channels/cv/agent-sync/progress" data-run="${progress.id}"`,
    );
    expect(view.text).toContain('<progress data-progress-bar max="40" value="10"></progress>');
    // Without script the view reloads itself; with script console.js polls (the meta is inert).
    expect(view.text).toContain('<noscript><meta http-equiv="refresh" content="3"></noscript>');
    expect(view.text).toContain('<a href="/console/channels/cv/agent-sync">Refresh</a>');
    // The same CSP as every console page: only the bridge's own script, nothing inline.
    const csp = view.headers.get('content-security-policy') ?? '';
    expect(csp).toContain(CSP_SCRIPT);
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain('unsafe');
    expect(view.text).not.toMatch(/<script(?![^>]*src="\/console\/assets\/console\.js")/);

    // The channel's card says a sync runs and links its view.
    const channels = await consoleRequest(second.url, '/console/channels', { cookie: two.cookie });
    expect(channels.text).toContain('<a href="/console/channels/cv/agent-sync">Follow its progress</a>');

    // Starting another from the other instance: no second run, the view of the running one.
    const again = await consoleRequest(second.url, '/console/channels/cv/agent-sync', {
      cookie: two.cookie,
      form: { _csrf: two.csrf, dryRun: 'false' },
    });
    expect(again.location).toBe('/console/channels/cv/agent-sync?notice=sync-running');
    const running = await consoleRequest(second.url, again.location!, { cookie: two.cookie });
    expect(running.text).toContain('An agent sync was already running for this channel');

    // The admin API shows the same progress.
    const api = await second.admin('GET', '/api/v1/channels/cv/agent-sync/progress');
    expect(api.status).toBe(200);
    expect(api.body.progress).toMatchObject({ id: progress.id, state: 'running', handled: 10, planned: 40 });

    held.release();
    await expect
      .poll(
        async () =>
          (await second.admin('GET', '/api/v1/channels/cv/agent-sync/progress')).body.progress.state,
        {
          timeout: 20_000,
        },
      )
      .toBe('finished');
    expect(chatvisor.agents.size).toBe(AGENTS);

    // The final report stays visible on the view, which no longer reloads.
    const done = await consoleRequest(second.url, '/console/channels/cv/agent-sync', { cookie: two.cookie });
    expect(done.text).toContain(
      'Agent sync finished: created 40, updated 0, removed 0, failed 0; 0 unchanged.',
    );
    expect(done.text).toContain('Created 40, updated 0, removed 0, unchanged 0, ignored 0, failed 0');
    expect(done.text).not.toContain('data-poll');
    expect(done.text).not.toContain('http-equiv="refresh"');
    const finished = JSON.parse(
      (await consoleRequest(first.url, '/console/channels/cv/agent-sync/progress', { cookie: one.cookie }))
        .text,
    );
    expect(finished).toMatchObject({
      id: progress.id,
      state: 'finished',
      fields: { created: '40', handled: '40' },
    });
  });

  it('a dry run lands on the same view, which shows its plan once it is done', async () => {
    const { cookie, csrf } = await signIn(first.url, TEST_ADMIN_TOKEN);
    chatvisor.agents.get('agent-01@shop.example')!.displayName = 'Someone Else';
    const started = await consoleRequest(first.url, '/console/channels/cv/agent-sync', {
      cookie,
      form: { _csrf: csrf, dryRun: 'true' },
    });
    expect(started.location).toBe('/console/channels/cv/agent-sync');
    await expect
      .poll(async () => (await first.admin('GET', '/api/v1/channels/cv/agent-sync/progress')).body.progress, {
        timeout: 20_000,
      })
      .toMatchObject({ dryRun: true, state: 'finished' });
    const view = await consoleRequest(first.url, '/console/channels/cv/agent-sync', { cookie });
    expect(view.text).toContain('Dry run finished: would create 0, update 1, remove 0; 39 unchanged.');
    expect(view.text).toContain('update: agent-01@shop.example (displayName)');
  });

  it('says so when no sync has run, and needs a session like every page', async () => {
    const anonymous = await consoleRequest(first.url, '/console/channels/cv/agent-sync/progress');
    expect(anonymous.status).toBe(302);
    expect(anonymous.location).toContain('/console/sign-in');
  });
});
