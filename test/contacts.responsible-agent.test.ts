import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatvisorRuntime } from '../adapters/chatvisor/index.js';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * What a contact's `responsibleAgent` is (README "How it works", Responsible agent), through a
 * real bridge on loopback as a vendor and an admin see it: the person responsible for the
 * *customer* as the vendor names them (JivoChat's `assigned_agent`, the client card's
 * responsible agent), not whoever took a chat. The agent who accepts a chat is the
 * conversation's agent: on the timeline, in the `agent` attribute, and the CRM responsible of
 * that conversation's events (through `agents[].crmUserId`), while `responsibleAgent` stays as
 * it was (null after the README's Quick start webhook). Events that name no agent (an offline
 * message) go to the contact's responsible agent.
 */

const SECRET = `whsec_${Buffer.from('responsible-test-secret-01234567').toString('base64')}`;
const JIVO_TOKEN = 'example-jivo-token-0001';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function setup(store: 'memory' | 'redis'): Promise<{ bridge: TestBridge; crm: Receiver }> {
  const crm = await startReceiver({ secret: SECRET });
  cleanups.push(() => crm.close());
  const bridge = await startTestBridge({
    store,
    config: {
      // The README example's directory, plus the client's responsible manager.
      agents: [
        { email: 'oleg@shop.example', name: 'Oleg Petrov', crmUserId: '1001', teams: ['support'] },
        { email: 'dmitry@store.example', name: 'Dmitry Volkov', crmUserId: '1002' },
      ],
      channels: [{ id: 'shop-site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
      destinations: [{ id: 'crm', url: crm.url, secret: SECRET, retrySchedule: ['0s'] }],
    },
  });
  cleanups.push(() => bridge.close());
  return { bridge, crm };
}

const jivo = (bridge: TestBridge, payload: unknown) =>
  bridge.post(`/webhooks/jivochat/shop-site/${JIVO_TOKEN}`, payload);

async function maria(bridge: TestBridge): Promise<Contact> {
  const found = await bridge.admin<{ contacts: Contact[] }>(
    'GET',
    '/api/v1/contacts?email=maria@example.org',
  );
  expect(found.status).toBe(200);
  expect(found.body.contacts).toHaveLength(1);
  return found.body.contacts[0]!;
}

/** The routing the CRM receiver got with the event of `type` about chat `chatId` (or of that type alone). */
async function routingOf(crm: Receiver, type: string, chatId?: string) {
  const matches = () =>
    crm.application.filter(
      (event) =>
        event.payload.type === type &&
        (chatId === undefined || String(event.payload.data.conversationId) === chatId),
    );
  await crm.waitFor(() => matches().length === 1, 8000, `${type} ${chatId ?? ''} delivered`);
  return matches()[0]!.payload as unknown as {
    data: Record<string, any>;
    routing: { responsibleCrmUserId: string | null };
  };
}

// The README's Quick start webhook, read from the README (what a newcomer sends first).
const QUICK_START = (() => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const sent = /-d '(\{"event_name":"chat_accepted".*?\})'/.exec(readme);
  if (!sent) throw new Error('README Quick start: no curl -d \'{"event_name":"chat_accepted",…}\' found');
  return JSON.parse(sent[1]!) as Record<string, unknown>;
})();
const DMITRY = { id: 55120, email: 'dmitry@store.example', name: 'Dmitry Volkov' };

describe.each(['memory', 'redis'] as const)('responsibleAgent (%s store)', (store) => {
  it("the agent who accepts a chat is the conversation's (and its CRM responsible), not the contact's responsible agent", async () => {
    const { bridge, crm } = await setup(store);
    expect((await jivo(bridge, QUICK_START)).status).toBe(200);

    const contact = await maria(bridge);
    expect(contact.responsibleAgent).toBeNull();
    expect(QUICK_START.agent).toMatchObject({ email: 'oleg@shop.example' });
    expect(contact.attributes.agent).toMatchObject({ value: 'Oleg', label: 'Agent' });
    const started = await routingOf(crm, 'conversation.started', '1');
    expect(started.data.agent).toMatchObject({ email: 'oleg@shop.example' });
    // The accepting agent, mapped through `agents`, is whom a CRM makes responsible for the chat.
    expect(started.routing.responsibleCrmUserId).toBe('1001');
  });

  it("JivoChat's assigned_agent (the client card's responsible) sets it; a chat another agent accepts does not change it", async () => {
    const { bridge, crm } = await setup(store);
    await jivo(bridge, QUICK_START);
    // The responsible agent set on the client card in JivoChat.
    const updated = await jivo(bridge, {
      event_name: 'client_updated',
      widget_id: 'w1',
      client_id: '17',
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      assigned_agent: DMITRY,
    });
    expect(updated.status).toBe(200);
    expect((await maria(bridge)).responsibleAgent).toEqual({
      id: '55120',
      name: 'Dmitry Volkov',
      email: 'dmitry@store.example',
    });

    // Oleg takes her next chat: the chat is his, the customer stays Dmitry's.
    await jivo(bridge, { ...QUICK_START, chat_id: 2, assigned_agent: DMITRY });
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'dmitry@store.example' });
    expect((await routingOf(crm, 'conversation.started', '2')).routing.responsibleCrmUserId).toBe('1001');

    // No agent was online: the offline message's task goes to the contact's responsible agent.
    await jivo(bridge, {
      event_name: 'offline_message',
      widget_id: 'w1',
      chat_id: 3,
      offline_message_id: 1718620800456,
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      assigned_agent: DMITRY,
      message: 'Call me back, please',
    });
    const offline = await routingOf(crm, 'offline_message.received');
    expect(offline.routing.responsibleCrmUserId).toBe('1002');
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'dmitry@store.example' });
  });
});

/**
 * What JivoChat's `assigned_agent: null` means (adapters/jivochat/README.md, Responsible agent):
 * `client_updated` is the event Jivo sends when the client card's responsible agent was changed
 * (vendors/jivochat.md §3) and carries the card's fields, so its explicit null is the card now
 * having none: it clears. The chat events' and the offline message's null is no news (Jivo's own
 * samples send null there whoever the client belongs to), and a payload without the field says
 * nothing either.
 */
describe.each(['memory', 'redis'] as const)('JivoChat unassignment (%s store)', (store) => {
  const card = (assigned: unknown, extra: Record<string, unknown> = {}) => ({
    event_name: 'client_updated',
    widget_id: 'w1',
    client_id: '17',
    visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
    ...(assigned === undefined ? {} : { assigned_agent: assigned }),
    ...extra,
  });

  it("client_updated with assigned_agent: null clears the card's responsible agent", async () => {
    const { bridge, crm } = await setup(store);
    expect((await jivo(bridge, card(DMITRY))).status).toBe(200);
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'dmitry@store.example' });

    expect((await jivo(bridge, card(null, { status: { id: '4', title: 'contact_later' } }))).status).toBe(
      200,
    );
    expect((await maria(bridge)).responsibleAgent).toBeNull();

    // Nobody is responsible now: the offline message's task goes to the CRM's default, not Dmitry.
    await jivo(bridge, {
      event_name: 'offline_message',
      widget_id: 'w1',
      chat_id: 3,
      offline_message_id: 1718620800457,
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      assigned_agent: null,
      message: 'Anyone there?',
    });
    expect((await routingOf(crm, 'offline_message.received')).routing.responsibleCrmUserId).toBeNull();

    // Assigned again (to Oleg): set again.
    await jivo(bridge, card({ id: 77102, email: 'Oleg@Shop.example', name: 'Oleg Petrov' }));
    expect((await maria(bridge)).responsibleAgent).toEqual({
      id: '77102',
      name: 'Oleg Petrov',
      email: 'oleg@shop.example',
    });
  });

  it('a chat event with assigned_agent: null, or a client_updated without the field, leaves it', async () => {
    const { bridge } = await setup(store);
    await jivo(bridge, card(DMITRY));
    const dmitry = { id: '55120', name: 'Dmitry Volkov', email: 'dmitry@store.example' };

    await jivo(bridge, { ...QUICK_START, chat_id: 5, assigned_agent: null });
    await jivo(bridge, { ...QUICK_START, event_name: 'chat_updated', chat_id: 5, assigned_agent: null });
    await jivo(bridge, {
      event_name: 'chat_finished',
      widget_id: 'w1',
      chat_id: 5,
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      assigned_agent: null,
      agents: [{ id: '1', name: 'Oleg', email: 'oleg@shop.example' }],
      chat: { messages: [{ message: 'Hi', timestamp: 1717401600, type: 'visitor' }] },
    });
    expect((await maria(bridge)).responsibleAgent).toEqual(dmitry);

    // The card's other fields changed; the payload has no assigned_agent at all.
    await jivo(bridge, card(undefined, { organization: { id: '12', name: 'Romashka LLC' } }));
    // Nor does an unusable value (Jivo's field is an object or null) unassign anyone.
    await jivo(bridge, card('nobody', { tags: [{ id: '5', title: 'VIP' }] }));
    await jivo(bridge, card({}, { tags: [{ id: '6', title: 'Wholesale' }] }));
    expect((await maria(bridge)).responsibleAgent).toEqual(dmitry);
  });
});

/**
 * LiveTex (adapters/livetex/README.md, Responsible agent): with no client card, a dialog's operator
 * is the closest it says, and only when the payload names exactly one: an assignment listing
 * several operators (a transfer, or everyone who took part) says no more about who is now
 * responsible than a close with several does, so it leaves the responsible agent as it was.
 */
describe.each(['memory', 'redis'] as const)('LiveTex responsible agent (%s store)', (store) => {
  const LT_TOKEN = 'lt-web-webhook-token-0123456789';
  async function livetex() {
    const bridge = await startTestBridge({
      store,
      config: {
        agents: [
          { email: 'oleg@shop.example', name: 'Oleg Petrov' },
          { email: 'irina@shop.example', name: 'Irina Volkova' },
        ],
        channels: [{ id: 'lt-web', vendor: 'livetex', token: LT_TOKEN }],
        // A LiveTex channel on Redis keeps its keys encrypted with it (never used here).
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
      },
    });
    cleanups.push(() => bridge.close());
    return bridge;
  }
  const dialog = (bridge: TestBridge, event: string, dialogId: string, at: string, operators: string[]) =>
    bridge.post(`/webhooks/livetex/lt-web/${LT_TOKEN}`, {
      event,
      time: at,
      conversation: { dialogId, ...(event === 'dialog_closed' ? { closedAt: at } : {}) },
      discourser: { name: 'Anna', personId: 'p-anna-0001' },
      employee: operators.map((name, index) => ({ id: `${index + 1}`, name })),
    });
  async function anna(bridge: TestBridge): Promise<Contact> {
    const found = await bridge.admin<{ contacts: Contact[] }>(
      'GET',
      '/api/v1/contacts?identity=person:p-anna-0001',
    );
    expect(found.body.contacts).toHaveLength(1);
    return found.body.contacts[0]!;
  }

  it('one operator assigned or closing a dialog sets it; several operators, assigned or closed, leave it', async () => {
    const bridge = await livetex();
    expect(
      (await dialog(bridge, 'dialog_assigned', 'd1', '2026-11-02T09:00:00Z', ['Irina Volkova'])).status,
    ).toBe(200);
    expect((await anna(bridge)).responsibleAgent).toMatchObject({ email: 'irina@shop.example' });

    // Dialog d2 is handed over: the payload lists both operators, in an order LiveTex does not define.
    await dialog(bridge, 'dialog_assigned', 'd2', '2026-11-02T10:00:00Z', ['Oleg Petrov', 'Irina Volkova']);
    expect((await anna(bridge)).responsibleAgent).toMatchObject({ email: 'irina@shop.example' });
    await dialog(bridge, 'dialog_closed', 'd2', '2026-11-02T10:30:00Z', ['Oleg Petrov', 'Irina Volkova']);
    expect((await anna(bridge)).responsibleAgent).toMatchObject({ email: 'irina@shop.example' });

    // A newer dialog Oleg alone closes: the newest statement, so he is responsible now.
    await dialog(bridge, 'dialog_closed', 'd3', '2026-11-02T11:00:00Z', ['Oleg Petrov']);
    expect((await anna(bridge)).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
    // An assignment dated before it, arriving late, changes nothing.
    await dialog(bridge, 'dialog_assigned', 'd4', '2026-11-02T10:45:00Z', ['Irina Volkova']);
    expect((await anna(bridge)).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
  });
});

/**
 * Chatvisor (adapters/chatvisor/README.md, Responsible agent): a customer is assigned to an agent
 * ("Assign customer"; `assignedUser`, the agent's e-mail, on the customer read over REST). The
 * bridge reads the profile after a webhook (again when a conversation starts): an assignee the
 * read finds, different from the one it found before, is a statement, dated by that read. A read
 * that finds the same assignee again says nothing new (so a newer statement of another channel
 * stands), and one that finds none is no unassignment (a customer of a team, or a tenant that does
 * not assign, reads the same).
 */
describe.each(['memory', 'redis'] as const)('Chatvisor responsible agent (%s store)', (store) => {
  const CV_TOKEN = 'cv-responsible-token-0123456789';
  let fake: FakeChatvisor;

  async function chatvisor() {
    fake = await startFakeChatvisor();
    cleanups.push(() => fake.close());
    const bridge = await startTestBridge({
      store,
      config: {
        agents: [
          { email: 'oleg@shop.example', name: 'Oleg Petrov' },
          { email: 'dmitry@store.example', name: 'Dmitry Volkov' },
        ],
        channels: [
          fake.channel('cv', CV_TOKEN),
          { id: 'shop-site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' },
        ],
      },
    });
    cleanups.push(() => bridge.close());
    return bridge;
  }
  /** Conversation `n` of the customer starts (the one before finishes first, so each is a new one). */
  async function starts(bridge: TestBridge, n: number) {
    for (const status of n === 1 ? ['UNREAD'] : ['DONE', 'UNREAD'])
      expect(
        (
          await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
            customerId: 'cv-maria',
            status,
            lastMessage: { text: `conversation ${n} ${status}` },
          })
        ).status,
      ).toBe(200);
  }
  /** Maria's contact once the profile read the webhooks started (after their answer) is done. */
  async function mariaOnceRead(bridge: TestBridge, reads: number): Promise<Contact> {
    await (bridge.bridge.channels.get('cv')!.runtime as ChatvisorRuntime).idle();
    expect(fake.profileReads('cv-maria')).toBe(reads);
    return maria(bridge);
  }

  it("the customer's assignee sets it when the read finds a new one; the same one again, or none, leaves it", async () => {
    const bridge = await chatvisor();
    fake.addCustomer({
      customerId: 'cv-maria',
      email: 'maria@example.org',
      assignedUser: 'Oleg@Shop.example',
    });
    await starts(bridge, 1);
    expect((await mariaOnceRead(bridge, 1)).responsibleAgent).toEqual({ email: 'oleg@shop.example' });

    // Reassigned in Chatvisor: the next conversation's read finds Dmitry.
    fake.customers.get('cv-maria')!.assignedUser = 'dmitry@store.example';
    await starts(bridge, 2);
    expect((await mariaOnceRead(bridge, 2)).responsibleAgent).toEqual({ email: 'dmitry@store.example' });

    // JivoChat's client card names Oleg later: the newest statement.
    await jivo(bridge, {
      event_name: 'client_updated',
      widget_id: 'w1',
      client_id: '17',
      visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
      assigned_agent: { id: 77102, email: 'oleg@shop.example', name: 'Oleg Petrov' },
    });
    // Chatvisor still says Dmitry, as it did: nothing new, Oleg stays.
    await starts(bridge, 3);
    expect((await mariaOnceRead(bridge, 3)).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
    // Chatvisor's customer now has no assignee: no unassignment either.
    fake.customers.get('cv-maria')!.assignedUser = null;
    await starts(bridge, 4);
    expect((await mariaOnceRead(bridge, 4)).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
  });

  it("JivoChat's unassignment clears what JivoChat said, not Chatvisor's assignee", async () => {
    const bridge = await chatvisor();
    fake.addCustomer({
      customerId: 'cv-maria',
      email: 'maria@example.org',
      assignedUser: 'dmitry@store.example',
    });
    await starts(bridge, 1);
    expect((await mariaOnceRead(bridge, 1)).responsibleAgent).toEqual({ email: 'dmitry@store.example' });
    const card = (assigned: unknown, extra: Record<string, unknown> = {}) =>
      jivo(bridge, {
        event_name: 'client_updated',
        widget_id: 'w1',
        client_id: '17',
        visitor: { name: 'Maria', email: 'maria@example.org', number: '17' },
        assigned_agent: assigned,
        ...extra,
      });

    // Maria's JivoChat card has nobody on it: Chatvisor still has her assigned to Dmitry.
    expect((await card(null)).status).toBe(200);
    expect((await maria(bridge)).responsibleAgent).toEqual({ email: 'dmitry@store.example' });
    // The card names Oleg (newest), then nobody again: Chatvisor's Dmitry is what is left.
    await card({ id: 77102, email: 'oleg@shop.example', name: 'Oleg Petrov' });
    expect((await maria(bridge)).responsibleAgent).toMatchObject({ email: 'oleg@shop.example' });
    // (A card that differs from the first one's: the same card again within minutes is a repeat.)
    await card(null, { status: { id: '4', title: 'contact_later' } });
    expect((await maria(bridge)).responsibleAgent).toEqual({ email: 'dmitry@store.example' });
  });
});
