import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { agentDirectory, chatvisorSyncChannel } from '../support/agent-sync-world.js';
import { buildDist, writeFaultConfig } from '../support/fault.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { cleanupPrefix, freePort, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * `chatbridge sync agents` (the real binary, dist/) asked to stop halfway by SIGINT (Ctrl-C) or
 * SIGTERM. It stops at a safe point: its run records where it stopped (`interrupted`, cause
 * `shutdown`, its report kept and counted), lets go of the channel's lease, and the command exits
 * 1 saying so. Before, the signal killed the process mid-write: the run read `running` until its
 * lease lapsed (a minute), and every other run was refused meanwhile.
 */
const ROOT = join(import.meta.dirname, '..', '..');
const CV_TOKEN = 'cli-signal-cv-token-00000001';
const AGENTS = 8;
const agents = agentDirectory(AGENTS);

describe('chatbridge sync agents stopped by a signal', () => {
  let redisUrl: string;
  let keyPrefix: string;
  let fake: FakeChatvisor;
  let configFile: string;
  let bridge: TestBridge | undefined;

  beforeAll(async () => {
    buildDist();
    redisUrl = await getTestRedisUrl();
    keyPrefix = uniquePrefix('cli-signal');
    fake = await startFakeChatvisor();
    const sync = chatvisorSyncChannel(fake, CV_TOKEN, agents);
    configFile = writeFaultConfig({
      port: await freePort(),
      redisUrl,
      keyPrefix,
      adminToken: 'cli-signal-admin-token-00001',
      jivoToken: 'cli-signal-jivo-token-000001',
      livetexToken: 'cli-signal-livetex-token-001',
      extra: sync.yaml,
    });
    // An instance on the same store, to read the run as the admin API and the console do.
    bridge = await startTestBridge({
      keyPrefix,
      start: false,
      config: {
        store: { redis: redisUrl },
        agents,
        channels: [sync.channel],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
    if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
  });

  for (const [signal, created] of [
    ['SIGINT', 3],
    ['SIGTERM', 5],
  ] as const) {
    it(`${signal}: records where the run stopped, lets go of the lease, exits 1 saying so`, async () => {
      // The run stands still at its (created + 1)th create, in flight.
      const held = fake.hold({ method: 'POST', path: '/user', when: () => fake.agents.size === created });
      const child = spawn(
        process.execPath,
        ['bin/chatbridge.js', 'sync', 'agents', '--channel', 'cv', '--config', configFile],
        {
          cwd: ROOT,
          env: { ...process.env, CHATBRIDGE_CONFIG: '', REDIS_URL: '' },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
      });
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      await Promise.race([
        held.arrived,
        exited.then(() => {
          throw new Error(`exited before the held write: ${stderr}`);
        }),
      ]);
      const running = (await bridge!.admin('GET', '/api/v1/channels/cv/agent-sync/progress')).body.progress;
      expect(running).toMatchObject({ state: 'running', handled: created });

      child.kill(signal);
      const [code, killedBy] = await exited;
      held.release();
      expect({ code, killedBy }, stderr).toEqual({ code: 1, killedBy: null });
      expect(stdout).toBe('');
      expect(stderr).toContain(`chatbridge: ${signal}: stopping 'sync agents' at a safe point`);
      const last = stderr.trim().split('\n').at(-1);
      expect(last).toBe(
        `chatbridge: 'sync agents' stopped by ${signal}: the agent sync ${running.id} stopped after ${created} of ${AGENTS} changes (it was writing agent-0${created + 1}@shop.example), which may or may not have been applied; it is recorded as interrupted and its lease let go, so the next run may start at once: it lists Chatvisor afresh and finishes the job (the report: GET /api/v1/channels/cv/agent-sync)`,
      );

      // Recorded by the run itself, at once (no lease to lapse first).
      const stopped = (await bridge!.admin('GET', '/api/v1/channels/cv/agent-sync/progress')).body.progress;
      expect(stopped).toMatchObject({
        id: running.id,
        state: 'interrupted',
        cause: 'shutdown',
        handled: created,
      });
      const { reports } = (await bridge!.admin('GET', '/api/v1/channels/cv/agent-sync')).body;
      expect(reports[0]).toMatchObject({
        id: running.id,
        interrupted: { cause: 'shutdown', step: 'writing', handled: created },
      });
      // The lease is free: another run starts at once, and finishes the job.
      const again = await bridge!.admin('POST', '/api/v1/channels/cv/agent-sync/start');
      expect(again.status).toBe(202);
      await expect
        .poll(
          async () =>
            (await bridge!.admin('GET', '/api/v1/channels/cv/agent-sync/progress')).body.progress.state,
          {
            timeout: 30_000,
          },
        )
        .toBe('finished');
      expect(fake.agents.size).toBe(AGENTS);
      // The next case starts from an empty Chatvisor directory again: every agent a create.
      fake.agents.clear();
    });
  }
});
