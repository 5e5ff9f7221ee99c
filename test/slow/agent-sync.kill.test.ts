import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { agentDirectory, chatvisorSyncChannel } from '../support/agent-sync-world.js';
import { consoleRequest, signIn } from '../support/console.js';
import { buildDist, type SpawnedBridge, spawnBridge, writeFaultConfig } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, freePort, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * kill -9 of the real bridge (dist/) in the middle of a Chatvisor agent sync it runs. The killed
 * process renews the sync's lease no more: another instance on the same Redis reads the sync
 * `running` until the lease lapses, then `interrupted` (admin API and console), and starts a new
 * sync at once, which finishes the job, keeping the killed run's report (what it had created,
 * where it stopped) and counting it. It used to read `running`, refusing every other sync,
 * for 15 minutes. The lease is Redis's to expire (60 s after the killed run's last heartbeat), so
 * the test waits for it; the other instance runs in this process with its clock an hour behind,
 * which changes nothing: no instance's clock decides when the lease lapses.
 */
const ADMIN_TOKEN = 'fault-sync-admin-token-000001';
const CV_TOKEN = 'fault-sync-cv-token-00000001';
const AGENTS = 12;
const agents = agentDirectory(AGENTS);

describe('kill -9 during a Chatvisor agent sync', () => {
  let redisUrl: string;
  let keyPrefix: string;
  let fake: FakeChatvisor;
  let killed: SpawnedBridge | undefined;
  let survivor: TestBridge | undefined;

  beforeAll(async () => {
    buildDist();
    redisUrl = await getTestRedisUrl();
    keyPrefix = uniquePrefix('fault-sync');
    fake = await startFakeChatvisor();
    const sync = chatvisorSyncChannel(fake, CV_TOKEN, agents);
    const configFile = writeFaultConfig({
      port: await freePort(),
      redisUrl,
      keyPrefix,
      adminToken: ADMIN_TOKEN,
      jivoToken: 'fault-sync-jivo-token-000001',
      livetexToken: 'fault-sync-livetex-token-001',
      // The channels list goes on, then the agent directory.
      extra: sync.yaml,
    });
    killed = await spawnBridge(configFile);
    survivor = await startTestBridge({
      keyPrefix,
      start: false,
      now: () => new Date(Date.now() - 3_600_000),
      config: {
        store: { redis: redisUrl },
        agents,
        channels: [sync.channel],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await killed?.stop();
    await survivor?.close();
    await fake?.close();
    if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
  });

  it('reads interrupted once the killed run’s lease lapses, and a new sync starts at once and finishes the job', {
    timeout: 300_000,
  }, async () => {
    const progressOf = async () => {
      const answer = await survivor!.admin('GET', '/api/v1/channels/cv/agent-sync/progress');
      expect(answer.status).toBe(200);
      return answer.body.progress;
    };
    // The killed process's run stands still at its 5th create.
    const held = fake.hold({ method: 'POST', path: '/user', when: () => fake.agents.size === 4 });
    const start = await fetch(`${killed!.url}/api/v1/channels/cv/agent-sync/start`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(start.status).toBe(202);
    const { progress: started } = (await start.json()) as { progress: { id: string } };
    await held.arrived;

    const running = await progressOf();
    expect(running).toMatchObject({ id: started.id, state: 'running', handled: 4, planned: AGENTS });
    await killed!.kill();
    // Until the lease lapses in Redis: still the killed run's.
    expect(await progressOf()).toMatchObject({ id: started.id, state: 'running' });
    const busy = await survivor!.admin('POST', '/api/v1/channels/cv/agent-sync/start');
    expect(busy.status).toBe(409);

    await expect
      .poll(async () => (await progressOf()).state, { timeout: 150_000, interval: 500 })
      .toBe('interrupted');
    expect(await progressOf()).toMatchObject({
      id: started.id,
      state: 'interrupted',
      handled: 4,
      current: 'agent-05@shop.example',
    });
    const { cookie } = await signIn(survivor!.url, TEST_ADMIN_TOKEN);
    const view = await consoleRequest(survivor!.url, '/console/channels/cv/agent-sync', { cookie });
    expect(view.text).toContain('<span class="tag">interrupted</span>');
    expect(view.text).toContain('Agent sync interrupted after 4 of 12 changes');

    // At once, not 15 minutes later.
    const again = await survivor!.admin('POST', '/api/v1/channels/cv/agent-sync/start');
    expect(again.status).toBe(202);
    await expect.poll(async () => (await progressOf()).state, { timeout: 60_000 }).toBe('finished');
    expect((await progressOf()).id).toBe(again.body.progress.id);
    expect(fake.agents.size).toBe(AGENTS);
    // The killed run's report, kept by the run that took over (its own process kept none), and
    // counted once by the survivor.
    const { reports } = (await survivor!.admin('GET', '/api/v1/channels/cv/agent-sync')).body;
    expect(reports.map((report: { id: string }) => report.id)).toEqual([again.body.progress.id, started.id]);
    expect(reports[1]).toMatchObject({
      created: agents.slice(0, 4).map((agent) => agent.email),
      failed: [],
      interrupted: { step: 'writing', planned: AGENTS, handled: 4, current: 'agent-05@shop.example' },
    });
    expect(await survivor!.bridge.metrics.registry.metrics()).toContain(
      'chatbridge_chatvisor_agent_sync_interrupted_total{channel="cv",dry_run="false"} 1',
    );
    held.release();
  });
});
