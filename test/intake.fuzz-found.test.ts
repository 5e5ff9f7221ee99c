import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Defects the intake fuzz (test/slow/intake.fuzz.test.ts) found, one small case each, over real
 * HTTP: what a vendor sent must be on the contact read back through the admin API.
 */
const TOKEN = 'fuzz-found-livetex-token-0001';

describe('intake defects found by fuzzing', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'app', vendor: 'livetex', token: TOKEN }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('LiveTex: a phone or e-mail sent as a number is kept as text, not dropped', async () => {
    // Ids arrive as strings or numbers depending on the serialiser; so do phones (Jivo's too).
    const answer = await bridge.post(`/webhooks/livetex/app/${TOKEN}`, {
      Conversation: { id: 7001, closedAt: '2025-03-14T09:31:40Z' },
      discourser: {
        personId: 'p-number-phone',
        phone: 79161234567,
        contacts: [{ type: 'phone', value: 79057770123 }],
      },
    });
    expect(answer.status).toBe(200);
    const found = await bridge.admin('GET', '/api/v1/contacts?identity=person:p-number-phone');
    expect(found.body.contacts).toHaveLength(1);
    expect(found.body.contacts[0].phones.sort()).toEqual(['+79057770123', '+79161234567']);
  });
});
