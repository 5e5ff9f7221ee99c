import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Defects the intake fuzz (test/slow/intake.fuzz.test.ts) found, one small case each, over real
 * HTTP: what a vendor sent must be on the contact read back through the admin API.
 */
const TOKEN = 'fuzz-found-livetex-token-0001';
const CV_TOKEN = 'fuzz-found-chatvisor-token-01';

describe('intake defects found by fuzzing', () => {
  let bridge: TestBridge;
  let fake: FakeChatvisor;

  beforeAll(async () => {
    fake = await startFakeChatvisor();
    bridge = await startTestBridge({
      config: {
        channels: [{ id: 'app', vendor: 'livetex', token: TOKEN }, fake.channel('cv', CV_TOKEN)],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
  });

  async function timelineTypes(identity: string): Promise<string[]> {
    const found = await bridge.admin('GET', `/api/v1/contacts?identity=${encodeURIComponent(identity)}`);
    if (found.body.contacts.length === 0) return [];
    const timeline = await bridge.admin('GET', `/api/v1/contacts/${found.body.contacts[0].id}/timeline`);
    return timeline.body.entries.map((entry: { type: string }) => entry.type);
  }

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

  it('Chatvisor: an optional field of an unexpected type is dropped, not the whole conversation or message', async () => {
    // The vendor doc says to parse leniently; a `url` of 42 or a `lastMessage` of 0 sent the
    // conversation to the journal as unhandled, and it never reached the timeline.
    const conversation = await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
      customerId: 'cv-odd-url',
      status: 'UNREAD',
      lastMessage: 0,
      url: 42,
      updatedAt: {},
    });
    expect(conversation.status).toBe(200);
    expect(await timelineTypes('customer:cv:cv-odd-url')).toContain('conversation.started');

    const message = await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
      id: 'msg-odd-time',
      customerId: 'cv-odd-time',
      text: 'Where is my order?',
      sender: 'CUSTOMER',
      createdAt: 1718620800,
      agentEmail: ['nobody'],
    });
    expect(message.status).toBe(200);
    expect(await timelineTypes('customer:cv:cv-odd-time')).toContain('message.received');
  });
});
