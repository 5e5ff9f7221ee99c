import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatvisorRuntime } from '../adapters/chatvisor/index.js';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { stopOnSignals } from '../src/cli/main.js';
import { startTestBridge } from './support/harness.js';

/**
 * A hung Chatvisor holds both an admin request (the servers drain it for their whole grace) and
 * the channel's background profile reads. The channel's wait for those reads counts from the
 * start of the shutdown, like the other stages: it used to wait a whole grace more after the
 * servers had taken theirs, so the shutdown passed its overall deadline (stopOnSignals) and the
 * process exited 1 before the unfinished reads were marked pending. The deadline here leaves a
 * few seconds beyond one grace (as SHUTDOWN_CLOSE_MS does), less than a second grace.
 */
const HOOK_TOKEN = 'chatvisor-hook-token-0123456789';
const GRACE_MS = 4_000;
const DEADLINE_MS = GRACE_MS + 3_000;

let fake: FakeChatvisor;
beforeAll(async () => {
  fake = await startFakeChatvisor();
});
afterAll(async () => {
  await fake.close();
});

describe('bridge shutdown and the channels', () => {
  it("counts the channels' grace from the start of the shutdown, so a hung Chatvisor does not pass the deadline", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const bridge = await startTestBridge({
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: GRACE_MS },
        channels: [fake.channel('cobrowse', HOOK_TOKEN)],
      },
    });
    const runtime = bridge.bridge.channels.get('cobrowse')!.runtime as ChatvisorRuntime;
    try {
      // Chatvisor answers nothing until the test ends.
      fake.fail({ method: 'GET', path: /^\/customer\//, until: gate, times: 1000 });
      fake.fail({ method: 'GET', path: '/webchat/visible', until: gate, times: 1000 });
      fake.addCustomer({ customerId: 'cv-hung-1', email: 'hung@example.org' });
      const hook = await bridge.post(
        `/webhooks/chatvisor/cobrowse/${HOOK_TOKEN}`,
        fake.conversationPayload('cv-hung-1'),
      );
      expect(hook.status).toBe(200);
      await expect.poll(() => runtime.state.background.running, { timeout: 30_000 }).toBe(1);
      const inFlight = bridge.admin('GET', '/api/v1/channels/cobrowse/visibility').catch(() => null);
      await expect.poll(() => fake.calls().includes('GET /webchat/visible'), { timeout: 30_000 }).toBe(true);

      const exits: number[] = [];
      const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
      const { done, stop } = stopOnSignals(bridge.bridge, logger, (code) => exits.push(code), DEADLINE_MS);
      stop('SIGTERM');
      // Before the fix: the servers' grace, then a whole grace more for the reads, past the deadline.
      expect(await done).toBe(0);
      expect(exits).toEqual([]);
      await inFlight;
    } finally {
      release();
      await bridge.close();
    }
  }, 60_000);
});
