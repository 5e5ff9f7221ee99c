import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatvisorRuntime } from '../adapters/chatvisor/index.js';
import { type AgentSyncWorld, startAgentSyncWorld } from './support/agent-sync-world.js';
import { consoleRequest, signIn } from './support/console.js';
import { TEST_ADMIN_TOKEN } from './support/harness.js';

/**
 * What an interrupted Chatvisor agent sync did is kept, and counted. The dying runner is a second
 * instance on the same Redis whose store connection is cut while its run waits on its third
 * agent create (held by the fake), as in console.agent-sync-interrupted.test.ts. Once its lease
 * has lapsed (`world.lapseLease`), `chatbridge sync agents` on the other instance takes
 * the channel over: it says so on stderr, the interrupted run's report (the agents it had
 * created, where it stopped) is kept beside the others — admin API and console — and
 * chatbridge_chatvisor_agent_sync_interrupted_total counts it, once. Before, the new run's record
 * replaced the interrupted one's and nothing of it was left.
 */
const AGENTS = 5;
const agents = Array.from({ length: AGENTS }, (_, index) => ({
  email: `agent-${index + 1}@shop.example`,
  name: `Agent ${index + 1}`,
}));

describe('an interrupted agent sync leaves a report and a count (Redis store)', () => {
  let world: AgentSyncWorld;
  beforeAll(async () => {
    world = await startAgentSyncWorld('sync-interrupted-report', agents);
  });
  afterAll(async () => {
    await world?.close();
  });

  it('keeps the interrupted run’s report when the next run takes over, and counts it once', async () => {
    const { bridge, chatvisor, runner, runnerStore } = world;
    const interruptedCount = async () =>
      (await bridge.bridge.metrics.registry.metrics())
        .split('\n')
        .filter((line) => line.startsWith('chatbridge_chatvisor_agent_sync_interrupted_total{'));
    const held = chatvisor.hold({ method: 'POST', path: '/user', when: () => chatvisor.agents.size === 2 });
    const started = await runner.runtime.agentSync.start();
    const dead = started.done.catch((error: unknown) => error);
    await held.arrived;
    const running = (await bridge.admin('GET', '/api/v1/channels/cobrowse/agent-sync/progress')).body
      .progress;
    await runnerStore.close();
    await world.lapseLease(running.leaseExpiresAt);

    // `chatbridge sync agents` on the surviving instance (the command the CLI runs).
    const runtime = bridge.bridge.channels.get('cobrowse')!.runtime as ChatvisorRuntime;
    const command = runtime.commands!.find((item) => item.name === 'sync agents')!;
    const stderr: string[] = [];
    const stdout: string[] = [];
    await command.run({}, { stdout: (line) => stdout.push(line), stderr: (line) => stderr.push(line) });
    expect(chatvisor.agents.size).toBe(AGENTS);
    expect(stderr[0]).toBe(
      `the last agent sync (${started.progress.id}) was interrupted after 2 of 5 changes (it was writing agent-3@shop.example): its lease lapsed without a heartbeat; this run takes over, and the interrupted run's report is kept (GET /api/v1/channels/cobrowse/agent-sync)`,
    );

    // Admin API: the interrupted run's report, between the new run's and nothing else.
    const { reports } = (await bridge.admin('GET', '/api/v1/channels/cobrowse/agent-sync')).body;
    expect(reports).toHaveLength(2);
    expect(reports[0]).toMatchObject({
      dryRun: false,
      created: ['agent-3@shop.example', 'agent-4@shop.example', 'agent-5@shop.example'],
    });
    expect(reports[1]).toMatchObject({
      id: started.progress.id,
      dryRun: false,
      startedAt: started.progress.startedAt,
      finishedAt: running.leaseExpiresAt,
      created: ['agent-1@shop.example', 'agent-2@shop.example'],
      updated: [],
      removed: [],
      failed: [],
      writes: 2,
      interrupted: {
        step: 'writing',
        listed: 0,
        planned: 5,
        handled: 2,
        current: 'agent-3@shop.example',
        leaseExpiredAt: running.leaseExpiresAt,
        takenOverBy: reports[0].id,
      },
    });
    expect(reports[1].error).toContain('interrupted');

    // The console's channel card lists it as interrupted, with what it had done.
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const card = await consoleRequest(bridge.url, '/console/channels', { cookie });
    expect(card.text).toContain('<span class="tag">interrupted</span>');
    expect(card.text).toContain(
      'Interrupted after 2 of 5 changes (it was writing agent-3@shop.example; that write may or may not have been applied)',
    );
    expect(card.text).toContain('<li>create: agent-1@shop.example, agent-2@shop.example</li>');

    // Counted once, by the instance that took over.
    expect(await interruptedCount()).toEqual([
      'chatbridge_chatvisor_agent_sync_interrupted_total{channel="cobrowse",dry_run="false"} 1',
    ]);
    // A run after a finished one takes nothing over: no report, no count.
    await command.run({}, { stdout: () => {}, stderr: (line) => stderr.push(line) });
    expect(stderr.filter((line) => line.includes('interrupted'))).toHaveLength(1);
    expect((await bridge.admin('GET', '/api/v1/channels/cobrowse/agent-sync')).body.reports).toHaveLength(3);
    expect(await interruptedCount()).toEqual([
      'chatbridge_chatvisor_agent_sync_interrupted_total{channel="cobrowse",dry_run="false"} 1',
    ]);

    held.release();
    expect(await dead).toMatchObject({ code: 'agent_sync_lock_lost' });
  });
});
