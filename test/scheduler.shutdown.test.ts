import cron from 'node-cron';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { startTestBridge } from './support/harness.js';

/**
 * Shutdown stops the scheduler first: while the servers drain their in-flight requests (up to
 * server.shutdownTimeoutMs) no scheduled run starts. A run started then would only be cut off by
 * the later stages (its grace, then the store closing under it). Counted by the vendor's requests
 * against ticks of a second node-cron task, never by time.
 */
let fake: FakeChatvisor;
beforeAll(async () => {
  fake = await startFakeChatvisor();
});
afterAll(async () => {
  await fake.close();
});

describe('bridge shutdown and the scheduler', () => {
  it('starts no scheduled run while the bridge closes', async () => {
    const bridge = await startTestBridge({
      config: {
        // A long grace, so the held request keeps the servers draining until the test lets go.
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 60_000 },
        channels: [
          {
            id: 'cobrowse',
            vendor: 'chatvisor',
            token: 'chatvisor-hook-token-0123456789',
            apiUrl: fake.apiUrl,
            apiToken: fake.token,
            maxRetries: 0,
            // Every second.
            schedules: { conversationPoll: '* * * * * *' },
          },
        ],
      },
    });
    const polls = () => fake.calls().filter((call) => call === 'GET /conversation').length;
    let ticks = 0;
    const witness = cron.schedule('* * * * * *', () => {
      ticks++;
    });
    const afterTicks = async (count: number) => {
      const target = ticks + count;
      await expect.poll(() => ticks >= target, { timeout: 60_000, interval: 50 }).toBe(true);
    };
    try {
      await expect.poll(() => polls() >= 2, { timeout: 60_000, interval: 50 }).toBe(true);

      // An admin request that waits on Chatvisor keeps the server draining.
      let release: (value?: unknown) => void = () => undefined;
      fake.fail({
        method: 'GET',
        path: '/webchat/visible',
        until: new Promise((resolve) => (release = resolve)),
      });
      const inFlight = bridge.admin('GET', '/api/v1/channels/cobrowse/visibility');
      await expect.poll(() => fake.calls().includes('GET /webchat/visible'), { timeout: 60_000 }).toBe(true);

      let closed = false;
      const closing = bridge.close().then(() => {
        closed = true;
      });
      // A run already under way when close() began may still list; give it the time of a few ticks.
      await afterTicks(3);
      const before = polls();
      await afterTicks(3);
      expect(closed).toBe(false);
      expect(polls()).toBe(before);

      release();
      expect((await inFlight).status).toBe(200);
      await closing;
    } finally {
      await witness.destroy();
    }
  }, 120_000);
});
