import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Issue 10 item 4 over HTTP: a JivoChat webhook whose contact record would pass
 * limits.contactRecordBytes is refused with 413 contact_too_large and writes no contact.
 * The cap counts UTF-8 bytes: JivoChat sends Russian text (2 bytes a letter), and comparing the
 * string length let such a record through at up to twice the cap (answered 200).
 */
const TOKEN = 'jivo-token-000000000001';
const CAP = 20_000;

let bridge: TestBridge;
beforeAll(async () => {
  bridge = await startTestBridge({
    store: 'redis',
    config: {
      limits: { contactRecordBytes: CAP },
      channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN }],
    },
  });
});
afterAll(async () => {
  await bridge?.close();
});

function chatAccepted(chatId: number, email: string, letter: string) {
  return {
    event_name: 'chat_accepted',
    chat_id: chatId,
    widget_id: 'w1',
    visitor: { name: 'Анна', email, number: chatId },
    agent: { id: '1', name: 'Ольга', email: 'olga@example.org' },
    // 50 client attributes of 290 letters: ~15k characters, ~30k UTF-8 bytes in Cyrillic.
    attributes: Object.fromEntries(
      Array.from({ length: 50 }, (_, index) => [`a${index}`, letter.repeat(290)]),
    ),
  };
}

describe('contact record cap over HTTP (JivoChat)', () => {
  it('refuses a Cyrillic payload whose record would be over the cap in bytes: 413, nothing written', async () => {
    const email = 'anna.big@example.org';
    const response = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, chatAccepted(101, email, 'ж'));
    expect(response.status).toBe(413);
    expect(response.body.error.code).toBe('contact_too_large');
    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(email)}`);
    expect(found.status).toBe(200);
    expect(found.body.contacts).toEqual([]);
  });

  it('accepts the same number of characters in ASCII, which stays under the cap', async () => {
    const email = 'anna.small@example.org';
    const response = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, chatAccepted(102, email, 'x'));
    expect(response.status).toBe(200);
    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(email)}`);
    expect(found.body.contacts).toHaveLength(1);
  });
});
