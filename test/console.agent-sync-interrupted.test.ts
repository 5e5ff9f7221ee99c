import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AgentSyncWorld, startAgentSyncWorld } from './support/agent-sync-world.js';
import { consoleRequest, signIn } from './support/console.js';
import { TEST_ADMIN_TOKEN } from './support/harness.js';

/**
 * A Chatvisor agent sync whose process dies mid-run (kill -9, OOM, a crashed instance) renews its
 * lease no more: once the lease has lapsed, the admin API and the console say `interrupted`, and a
 * new sync starts at once. It used to read `running`, and refuse every other run, for 15 minutes.
 *
 * The dying runner is a second instance on the same Redis whose connection to the store is cut
 * while its run waits on an agent create (held by the fake): no heartbeat of its can land again.
 * Its lease lapses when the test says (`world.lapseLease`), not after a sleep.
 * test/slow/agent-sync.kill.test.ts does the same with a real process killed by SIGKILL.
 */
const AGENTS = 5;
const agents = Array.from({ length: AGENTS }, (_, index) => ({
  email: `agent-${index + 1}@shop.example`,
  name: `Agent ${index + 1}`,
}));

describe('console and admin API: an agent sync whose process died (Redis store)', () => {
  let world: AgentSyncWorld;
  beforeAll(async () => {
    world = await startAgentSyncWorld('sync-interrupted', agents);
  });
  afterAll(async () => {
    await world?.close();
  });

  it('reads running while the lease holds, interrupted once it lapsed, and lets a new sync start at once', async () => {
    const { bridge, chatvisor, runner, runnerStore, clock } = world;
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const progressOf = async () =>
      (await bridge.admin('GET', '/api/v1/channels/cobrowse/agent-sync/progress')).body.progress;
    const held = chatvisor.hold({ method: 'POST', path: '/user', when: () => chatvisor.agents.size === 2 });
    const started = await runner.runtime.agentSync.start();
    const dead = started.done.catch((error: unknown) => error);
    await held.arrived;

    const running = await progressOf();
    expect(running).toMatchObject({ id: started.progress.id, state: 'running', handled: 2, planned: AGENTS });
    expect(Date.parse(running.leaseExpiresAt)).toBeGreaterThan(clock.now);
    const refused = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync/start');
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('agent_sync_running');

    // The runner is gone: its store connection is cut, no heartbeat can renew the lease.
    await runnerStore.close();
    expect(await progressOf()).toMatchObject({ state: 'running' });
    await world.lapseLease(running.leaseExpiresAt);
    const interrupted = await progressOf();
    expect(interrupted).toMatchObject({
      id: started.progress.id,
      state: 'interrupted',
      handled: 2,
      current: 'agent-3@shop.example',
      leaseExpiresAt: running.leaseExpiresAt,
    });

    // The console says so: on the progress view (which no longer follows a run), in its JSON,
    // and on the channel's card.
    const view = await consoleRequest(bridge.url, '/console/channels/cobrowse/agent-sync', { cookie });
    expect(view.status).toBe(200);
    expect(view.text).toContain('<span class="tag">interrupted</span>');
    expect(view.text).toContain(
      'Agent sync interrupted after 2 of 5 changes (it was writing agent-3@shop.example): the process running it stopped',
    );
    expect(view.text).toContain('<dt>Lease lapsed</dt>');
    expect(view.text).not.toContain('data-poll');
    expect(view.text).not.toContain('http-equiv="refresh"');
    expect(view.text).toContain('Run agent sync again</button>');
    const json = JSON.parse(
      (await consoleRequest(bridge.url, '/console/channels/cobrowse/agent-sync/progress', { cookie })).text,
    );
    expect(json).toMatchObject({ id: started.progress.id, state: 'interrupted' });
    const card = await consoleRequest(bridge.url, '/console/channels', { cookie });
    expect(card.text).toContain('Agent sync interrupted after 2 of 5 changes');
    expect(card.text).toContain('<a href="/console/channels/cobrowse/agent-sync">Where it stopped</a>');
    expect(card.text).not.toContain('Follow its progress');

    // A new sync starts at once, from the console, and does the whole job.
    const again = await consoleRequest(bridge.url, '/console/channels/cobrowse/agent-sync', {
      cookie,
      form: { _csrf: csrf, dryRun: 'false' },
    });
    expect(again.status).toBe(302);
    expect(again.location).toBe('/console/channels/cobrowse/agent-sync');
    await expect.poll(async () => (await progressOf()).state, { timeout: 20_000 }).toBe('finished');
    const finished = await progressOf();
    expect(finished.id).not.toBe(started.progress.id);
    expect(chatvisor.agents.size).toBe(AGENTS);

    // The dead run's create lands at last: the run stops there (it cannot know it holds the
    // lease), writes no other agent, and leaves the new run's record as it is.
    held.release();
    expect(await dead).toMatchObject({ code: 'agent_sync_lock_lost' });
    expect(chatvisor.calls().filter((call) => call === 'POST /user')).toHaveLength(2 + 1 + (AGENTS - 2));
    expect(await progressOf()).toEqual(finished);
  });
});
