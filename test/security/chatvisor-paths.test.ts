import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/** Issue 10 item 7: a customerId of `.` or `..` must not move the API token to another REST path. */
describe('Chatvisor ids used in REST paths', () => {
  let fake: FakeChatvisor;
  let bridge: TestBridge;
  beforeAll(async () => {
    fake = await startFakeChatvisor();
    bridge = await startTestBridge({
      config: {
        channels: [fake.channel('cobrowse', 'chatvisor-hook-token-000001')],
      },
    });
  });
  afterAll(async () => {
    await bridge.close();
    await fake.close();
  });

  it('refuses . and .. with a 400 and sends nothing to Chatvisor', async () => {
    fake.resetLog();
    for (const customerId of ['.', '..', '']) {
      const answer = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId });
      expect(answer.status).toBe(400);
    }
    expect(fake.calls()).toEqual([]);
    // A slash or a question mark is encoded, not interpreted.
    fake.addCustomer({ customerId: 'a/b?c' });
    await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId: 'a/b?c' });
    expect(fake.requests.map((request) => request.path)).toEqual(['/customer/a%2Fb%3Fc/publicUrl']);
  });
});
