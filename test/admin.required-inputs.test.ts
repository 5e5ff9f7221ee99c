import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * An admin call that leaves out a required query parameter or body field is told that it is
 * required, at its name. It read `Invalid input: expected string, received undefined`: zod's
 * words about a value nobody sent.
 */

interface Issue {
  path: string;
  message: string;
}

describe('admin API: a required input left out is named as required', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: allVendorChannels } });
  });
  afterAll(() => bridge?.close());

  it('a query parameter (replay every failed delivery without ?destination=)', async () => {
    const answer = await bridge.admin('POST', '/api/v1/deliveries/replay');
    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('invalid_query');
    expect(answer.body.error.issues as Issue[]).toEqual([{ path: 'destination', message: 'required' }]);
  });

  it('a body field (a manual merge without "with", an agent chat URL without "customerId")', async () => {
    const merge = await bridge.admin('POST', '/api/v1/contacts/c_x/merge', {});
    expect(merge.status).toBe(400);
    expect(merge.body.error.issues as Issue[]).toEqual([{ path: 'with', message: 'required' }]);
    const chatUrl = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {});
    expect(chatUrl.status).toBe(400);
    expect(chatUrl.body.error.issues as Issue[]).toEqual([{ path: 'customerId', message: 'required' }]);
  });

  it('a value of the wrong type keeps saying what it got', async () => {
    const merge = await bridge.admin('POST', '/api/v1/contacts/c_x/merge', { with: 5 });
    expect((merge.body.error.issues as Issue[])[0]!.message).toBe('expected a string, got 5');
  });
});
