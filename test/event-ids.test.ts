import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INSTALLATION_SALT_KEY } from '../src/contacts/engine.js';
import { jivo, personFor } from './support/fault.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * Event ids (DESIGN §8): unique across installations, stable across retries and replays. Two
 * bridges on one Redis under separate prefixes (two installations) see the same JivoChat chat id
 * on a channel with the same id, for different people: a receiver that dedupes on `webhook-id`
 * (as Standard Webhooks tells it to) must get every event of both.
 */
const SECRET = `whsec_${Buffer.from('event-ids-test-secret-0123456789').toString('base64')}`;
const JIVO_TOKEN = 'event-ids-jivo-token-0001';
const CHAT_ID = 4242;

describe('event ids', () => {
  let receiver: Receiver;
  const bridges: TestBridge[] = [];

  const start = (keyPrefix?: string) =>
    startTestBridge({
      store: 'redis',
      ...(keyPrefix ? { keyPrefix } : {}),
      config: {
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
        destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s', '100ms'] }],
      },
    }).then((bridge) => {
      bridges.push(bridge);
      return bridge;
    });

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
  });
  afterAll(async () => {
    for (const bridge of bridges) await bridge.close();
    await receiver?.close();
  });

  it('differ between installations that see the same chat id, and stay the same on retries and replays', async () => {
    const shop = await start();
    const other = await start();
    const webhook = `/webhooks/jivochat/site/${JIVO_TOKEN}`;
    expect((await shop.post(webhook, jivo.chatAccepted(personFor('shop', 1), CHAT_ID))).status).toBe(200);
    expect((await other.post(webhook, jivo.chatAccepted(personFor('other', 1), CHAT_ID))).status).toBe(200);

    const settled = async (bridge: TestBridge) =>
      (await bridge.bridge.delivery.list({ state: 'pending', limit: 10 })).length === 0 &&
      (await bridge.bridge.delivery.list({ state: 'delivered', limit: 10 })).length > 0;
    for (let round = 0; !((await settled(shop)) && (await settled(other))); round++) {
      expect(round, 'both installations deliver their events').toBeLessThan(300);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const contactOf = (payload: unknown) =>
      (payload as { contact?: { id?: string } } | undefined)?.contact?.id;
    const byContact = new Map<string, Set<string>>();
    for (const request of receiver.requests) {
      const contactId = contactOf(request.payload);
      if (!contactId) continue;
      const ids = byContact.get(contactId) ?? new Set<string>();
      ids.add(request.webhookId);
      byContact.set(contactId, ids);
    }
    expect(byContact.size).toBe(2);
    const [first, second] = [...byContact.values()];
    expect(first!.size).toBeGreaterThan(0);
    expect(second!.size).toBeGreaterThan(0);
    // No id is shared between the two installations' contacts: the receiver's dedupe drops nothing.
    expect([...first!].filter((id) => second!.has(id))).toEqual([]);
    const accepted = receiver.application.length;
    expect(accepted).toBe(first!.size + second!.size);

    // JivoChat retries the same webhook: no new event, so no new id.
    expect((await shop.post(webhook, jivo.chatAccepted(personFor('shop', 1), CHAT_ID))).status).toBe(200);
    // A replay sends the same id again (the receiver's dedupe makes it a no-op there).
    const delivered = await shop.admin('GET', '/api/v1/deliveries?destination=crm');
    const one = delivered.body.deliveries[0];
    const requestsBefore = receiver.requests.length;
    expect((await shop.admin('POST', `/api/v1/deliveries/${one.id}/replay`)).status).toBe(202);
    await receiver.waitFor(() => receiver.requests.length > requestsBefore, 15_000, 'the replay');
    expect(receiver.requests.at(-1)!.webhookId).toBe(one.eventId);
    expect(receiver.application).toHaveLength(accepted);

    // Every instance of one installation (one store prefix) derives ids with the same salt.
    const sibling = await start(shop.keyPrefix);
    expect(await sibling.bridge.store.get(INSTALLATION_SALT_KEY)).toBe(
      await shop.bridge.store.get(INSTALLATION_SALT_KEY),
    );
    expect(await other.bridge.store.get(INSTALLATION_SALT_KEY)).not.toBe(
      await shop.bridge.store.get(INSTALLATION_SALT_KEY),
    );
  });
});
