import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jivo, personFor } from './support/fault.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * One chatbridge channel without `widgetId` takes the payloads of every Jivo widget whose
 * webhook URL it is (a company with two Jivo accounts, or two channels pasted the same URL), and
 * Jivo's chat ids are not known to be unique across widgets. The dedupe key of a chat_accepted
 * was the chat id and the agent: a second widget's chat that reused both was taken for a
 * redelivery of the first, its visitor never recorded, and its agent shown the first visitor's
 * name, e-mail and phone.
 */
const TOKEN = 'jivo-widgets-token-0123456789';

describe('JivoChat: two widgets on one channel', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it("keeps apart two widgets' chats with the same chat id and agent", async () => {
    const alice = personFor('widget-a', 1);
    const bob = personFor('widget-b', 2);
    const webhook = `/webhooks/jivochat/site/${TOKEN}`;
    const first = await bridge.post(webhook, { ...jivo.chatAccepted(alice, 77), widget_id: 'widgetAAAA' });
    expect(first.status).toBe(200);
    const second = await bridge.post(webhook, { ...jivo.chatAccepted(bob, 77), widget_id: 'widgetBBBB' });
    expect(second.status).toBe(200);
    expect(JSON.stringify(second.body)).not.toContain(alice.email);

    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(bob.email)}`);
    expect(found.body.contacts).toHaveLength(1);

    // A redelivery of the same widget's chat is still a repeat: nothing new is recorded.
    const again = await bridge.post(webhook, { ...jivo.chatAccepted(bob, 77), widget_id: 'widgetBBBB' });
    expect(again.status).toBe(200);
    const contactId = found.body.contacts[0].id;
    const timeline = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline`);
    expect(
      timeline.body.entries.filter((entry: { type: string }) => entry.type === 'conversation.started'),
    ).toHaveLength(1);
  });
});
