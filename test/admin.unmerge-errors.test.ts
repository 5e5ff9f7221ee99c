import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/** The admin API's unmerge refusals name what to change (DESIGN §4: JSON errors naming the problem). */
describe('unmerge refusals', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('says that a vendor-local id needs its channel', async () => {
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'one',
      identifiers: [
        { kind: 'visitor', value: 'v1' },
        { kind: 'email', value: 'one@example.org' },
      ],
    });
    const missing = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'visitor', value: 'v1' },
    });
    expect(missing.status).toBe(400);
    expect(missing.body.error.issues).toEqual([
      {
        path: 'identifier.channelId',
        message: 'vendor-local kind "visitor" needs the channel it belongs to',
      },
    ]);
    const given = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'visitor', value: 'v1', channelId: 'web' },
    });
    expect(given.status).toBe(200);
  });
});
