import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentSyncProgressText } from '../src/console/ops.js';
import { type AgentSyncWorld, startAgentSyncWorld } from './support/agent-sync-world.js';

/**
 * An instance that shuts down (gracefully) in the middle of a Chatvisor agent sync records the
 * interruption itself, at the time: the run's report (what it had done, where it stopped) is kept
 * and chatbridge_chatvisor_agent_sync_interrupted_total counts it on that instance, and the
 * progress record reads `interrupted` at once, not a lease later. Nothing is left for a later run
 * to take over, so the interruption is not counted or kept twice. Before, the stopped run was kept
 * as a failed run ("This operation was aborted"), and never counted as interrupted.
 *
 * The stopping instance is the world's bridge (its sync started through the admin API, stopped by
 * its close); the world's runner, on the same Redis, is the instance that runs on.
 */
const AGENTS = 5;
const agents = Array.from({ length: AGENTS }, (_, index) => ({
  email: `agent-${index + 1}@shop.example`,
  name: `Agent ${index + 1}`,
}));

const interruptedLines = async (registry: { metrics(): Promise<string> }) =>
  (await registry.metrics())
    .split('\n')
    .filter((line) => line.startsWith('chatbridge_chatvisor_agent_sync_interrupted_total{'));

describe('an agent sync stopped by a graceful shutdown (Redis store)', () => {
  let world: AgentSyncWorld;
  beforeAll(async () => {
    world = await startAgentSyncWorld('sync-shutdown', agents);
  });
  afterAll(async () => {
    await world?.close();
  });

  it('records its interruption itself, once, and leaves nothing for the next run to take over', async () => {
    const { bridge, chatvisor, runner } = world;
    const held = chatvisor.hold({ method: 'POST', path: '/user', when: () => chatvisor.agents.size === 2 });
    const start = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-sync/start');
    expect(start.status).toBe(202);
    const id: string = start.body.progress.id;
    await held.arrived;

    // Graceful: the channel's close stops the run before its next write, and waits for it.
    await bridge.close();
    expect(await interruptedLines(bridge.bridge.metrics.registry)).toEqual([
      'chatbridge_chatvisor_agent_sync_interrupted_total{channel="cobrowse",dry_run="false"} 1',
    ]);

    // Read on the instance that runs on: interrupted now, by a shutdown.
    const sync = runner.runtime.agentSync;
    const progress = await sync.progress();
    expect(progress).toMatchObject({
      id,
      state: 'interrupted',
      step: 'writing',
      planned: AGENTS,
      handled: 2,
      current: 'agent-3@shop.example',
      cause: 'shutdown',
    });
    // What the console's progress view and channel card say of it.
    expect(agentSyncProgressText(progress!)).toBe(
      'Agent sync interrupted after 2 of 5 changes (it was writing agent-3@shop.example): it was asked to stop (the bridge running it shut down, or the CLI command sync agents was stopped by Ctrl-C or SIGTERM). Start it again: a new run lists Chatvisor afresh and finishes the job.',
    );
    const [kept, ...older] = await sync.reports(10);
    expect(older).toEqual([]);
    expect(kept).toMatchObject({
      id,
      dryRun: false,
      created: ['agent-1@shop.example', 'agent-2@shop.example'],
      failed: [],
      interrupted: {
        step: 'writing',
        planned: AGENTS,
        handled: 2,
        current: 'agent-3@shop.example',
        cause: 'shutdown',
      },
    });
    expect(kept!.error).toContain('interrupted after 2 of 5 changes');
    // In plain words, for a CLI user too (Ctrl-C stops `sync agents` the same way): not "its
    // instance stopped it (a graceful shutdown)".
    expect(kept!.error).toContain(
      'it was asked to stop (the bridge running it shut down, or the CLI command sync agents was stopped by Ctrl-C or SIGTERM)',
    );
    expect(kept!.error).not.toMatch(/graceful|instance/);

    // The next run starts at once and takes nothing over: no second report of the stopped run,
    // no count on this instance.
    const lines: string[] = [];
    held.release();
    const report = await sync.run({ onProgress: (line) => lines.push(line) });
    expect(chatvisor.agents.size).toBe(AGENTS);
    expect(lines.filter((line) => line.includes('interrupted'))).toEqual([]);
    expect((await sync.reports(10)).map((item) => item.id)).toEqual([report.id, id]);
    expect(await interruptedLines(runner.context.metrics.registry)).toEqual([]);
  });
});
