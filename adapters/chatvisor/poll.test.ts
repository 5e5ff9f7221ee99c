import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { TimelineEntry } from '../../src/contacts/types.js';
import { StoreUnavailableError } from '../../src/errors.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { FORGET_CHECKS_PER_RUN, FORGET_UNLISTED_AFTER_MS } from './poll.js';
import { customerHashes, storeKeys } from './state.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, type FakeCustomer, startFakeChatvisor } from './test-support/fake-chatvisor.js';

let fake: FakeChatvisor;
beforeAll(async () => {
  fake = await startFakeChatvisor();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  fake.customers.clear();
  fake.messages.clear();
  fake.agents.clear();
  fake.clearFailures();
  fake.resetLog();
  fake.now = () => new Date();
  fake.reportUpdatedAt = true;
});

/** A clock that moves 1 ms per reading, so timeline entries have a strict order. */
function tickingClock(): () => Date {
  let tick = Date.parse('2024-05-14T09:00:00.000Z');
  return () => new Date(tick++);
}

/**
 * Incremental polling: these tests start from "the first run records where things stand"
 * (backfillWindow 0s); the first run's backfill window has its own tests (identity.test.ts).
 */
function runtimeWith(settings: Record<string, unknown> = {}): TestRuntime {
  return buildRuntime({
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    settings: { maxRetries: 0, backfillWindow: '0s', ...settings },
    now: tickingClock(),
  });
}

async function timelineOf(test: TestRuntime, customerId: string): Promise<TimelineEntry[]> {
  const contact = await test.context.contacts.findByIdentifier({
    kind: 'customer',
    value: customerId,
    channelId: 'cobrowse',
  });
  if (!contact) return [];
  const page = await test.context.contacts.timeline(contact.id, { limit: 1000 });
  // Oldest first.
  return [...page.entries].sort((a, b) => a.at.localeCompare(b.at) || a.id.localeCompare(b.id));
}

const conversationEntries = (entries: TimelineEntry[]) =>
  entries.filter((entry) => entry.type.startsWith('conversation.'));
const messageEntries = (entries: TimelineEntry[]) =>
  entries.filter((entry) => entry.type === 'message.received');

describe('conversation polling', () => {
  it('records a baseline on its first run, paging through, without replaying history', async () => {
    fake.addCustomer({ customerId: 'c1', status: 'UNRESOLVED' });
    fake.addMessage('c1', 'old question');
    fake.addCustomer({ customerId: 'c2', status: 'DONE' });
    fake.addCustomer({ customerId: 'c3', status: 'UNREAD' });
    const test = runtimeWith({ pageSize: 2 });
    const report = await test.runtime.poller.run();
    expect(report).toMatchObject({
      baseline: true,
      seeded: 3,
      conversationEvents: 0,
      messageEvents: 0,
      backfills: 0,
      pages: 2,
    });
    expect(fake.calls()).toEqual(['GET /conversation', 'GET /conversation']);
    expect(fake.requests.map((request) => request.query)).toEqual([
      { pageNumber: '0', pageSize: '2' },
      { pageNumber: '1', pageSize: '2' },
    ]);
    expect(await test.outbox()).toEqual([]);

    fake.resetLog();
    const quiet = await test.runtime.poller.run();
    expect(quiet).toMatchObject({ baseline: false, conversationEvents: 0, messageEvents: 0 });
    expect(fake.calls()).toEqual(['GET /conversation', 'GET /conversation']);
  });

  it('emits a new conversation, its messages and the finish (with transcript), each once', async () => {
    const test = runtimeWith();
    await test.runtime.poller.run(); // baseline: nothing yet
    fake.resetLog();
    fake.addCustomer({ customerId: 'c9', email: 'Vera@Example.org', id: 'P-77', firstname: 'Vera' });
    fake.addMessage('c9', 'Hi, where is my parcel?');
    fake.addMessage('c9', 'It left the warehouse today', 'AGENT');
    fake.addMessage('c9', 'Thanks!');

    const found = await test.runtime.poller.run();
    expect(found).toMatchObject({ conversationEvents: 1, messageEvents: 2, backfills: 3, failed: [] });
    expect(fake.calls()).toEqual(['GET /conversation', 'GET /customer/c9/message', 'GET /customer/c9']);
    let entries = await timelineOf(test, 'c9');
    expect(entries.map((entry) => entry.type)).toEqual([
      'conversation.started',
      'message.received',
      'message.received',
    ]);
    expect(entries.slice(1).map((entry) => entry.data.text)).toEqual(['Hi, where is my parcel?', 'Thanks!']);
    // The profile linked the customer to the company's id and e-mail.
    const contact = await test.context.contacts.findByIdentifier({ kind: 'person', value: 'P-77' });
    expect(contact).toMatchObject({ emails: ['vera@example.org'], name: 'Vera' });

    fake.resetLog();
    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 0, messageEvents: 0 });
    expect(fake.calls()).toEqual(['GET /conversation']);

    fake.setStatus('c9', 'DONE');
    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 1, backfills: 1 });
    entries = await timelineOf(test, 'c9');
    const finished = entries.find((entry) => entry.type === 'conversation.finished')!;
    expect(conversationEntries(entries).map((entry) => entry.type)).toEqual([
      'conversation.started',
      'conversation.finished',
    ]);
    // The one transcript shape every vendor writes (src/contacts/types.ts).
    expect(finished.data.messages).toEqual([
      { at: expect.any(String), author: { type: 'visitor' }, text: 'Hi, where is my parcel?' },
      {
        at: expect.any(String),
        author: { type: 'agent', email: 'agent@example.test' },
        text: 'It left the warehouse today',
      },
      { at: expect.any(String), author: { type: 'visitor' }, text: 'Thanks!' },
    ]);
    const events = (await test.outbox()).map((entry) => entry.event.type);
    expect(events.filter((type) => type === 'conversation.started')).toHaveLength(1);
    expect(events.filter((type) => type === 'message.received')).toHaveLength(2);
    expect(events.filter((type) => type === 'conversation.finished')).toHaveLength(1);
    const metrics = await test.context.metrics.registry.metrics();
    expect(metrics).toContain(
      'chatbridge_chatvisor_backfills_total{channel="cobrowse",kind="conversation"} 2',
    );
    expect(metrics).toContain('chatbridge_chatvisor_backfills_total{channel="cobrowse",kind="message"} 2');
  });

  it("a customer's second conversation is finished with its own messages, not the first one's again", async () => {
    const test = runtimeWith();
    await test.runtime.poller.run(); // baseline: nothing yet
    fake.addCustomer({ customerId: 'c4' });
    fake.addMessage('c4', 'Where is my parcel?');
    fake.addMessage('c4', 'It arrives tomorrow', 'AGENT');
    await test.runtime.poller.run();
    fake.setStatus('c4', 'DONE');
    await test.runtime.poller.run();
    // A week later, the same customer (one Chatvisor thread) asks again.
    fake.addMessage('c4', 'Can I change the address?');
    fake.setStatus('c4', 'UNREAD');
    await test.runtime.poller.run();
    fake.addMessage('c4', 'Done, it is changed', 'AGENT');
    fake.setStatus('c4', 'DONE');
    await test.runtime.poller.run();

    const finished = (await timelineOf(test, 'c4')).filter((entry) => entry.type === 'conversation.finished');
    expect(finished.map((entry) => (entry.data.messages as { text: string }[]).map((m) => m.text))).toEqual([
      ['Where is my parcel?', 'It arrives tomorrow'],
      ['Can I change the address?', 'Done, it is changed'],
    ]);
    // The CRM reads the outbound event: the same two transcripts.
    const events = (await test.outbox()).filter((entry) => entry.event.type === 'conversation.finished');
    expect(
      events.map((entry) => (entry.event.data.messages as { text: string }[]).map((m) => m.text)),
    ).toEqual([
      ['Where is my parcel?', 'It arrives tomorrow'],
      ['Can I change the address?', 'Done, it is changed'],
    ]);
  });

  it("a conversation whose finish a webhook delivered first is not in the customer's next transcript", async () => {
    // The webhook's arrival dates the finish (its body has no time): a clock Chatvisor shares.
    const test = buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0, backfillWindow: '0s' },
      now: () => new Date(),
    });
    await test.runtime.poller.run();
    fake.addCustomer({ customerId: 'c5' });
    const earlier = new Date('2024-05-01T09:00:00.000Z');
    fake.addMessage('c5', 'Is it in stock?', 'CUSTOMER', earlier);
    fake.addMessage('c5', 'Yes', 'AGENT', earlier);
    await test.runtime.poller.run();
    fake.setStatus('c5', 'DONE');
    await test.webhook(fake.conversationPayload('c5'));
    await test.runtime.idle();
    await test.runtime.poller.run();
    fake.addMessage('c5', 'And in blue?');
    fake.setStatus('c5', 'UNREAD');
    await test.runtime.poller.run();
    fake.addMessage('c5', 'Blue too', 'AGENT');
    fake.setStatus('c5', 'DONE');
    await test.runtime.poller.run();

    const finished = (await timelineOf(test, 'c5')).filter((entry) => entry.type === 'conversation.finished');
    expect(
      finished.map((entry) => (entry.data.messages as { text: string }[] | undefined)?.map((m) => m.text)),
    ).toEqual([undefined, ['And in blue?', 'Blue too']]);
  });

  it('a poll run that listed a finished conversation does not move where it ends past the next one a webhook started meanwhile', async () => {
    // The bridge's clock: the webhook finish is dated by its arrival.
    let clock = new Date('2024-05-02T10:00:00.000Z');
    const test = buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0, backfillWindow: '0s' },
      now: () => clock,
    });
    await test.runtime.poller.run();
    fake.addCustomer({ customerId: 'c9' });
    fake.addMessage('c9', 'Is it in stock?', 'CUSTOMER', new Date('2024-05-02T10:01:00.000Z'));
    clock = new Date('2024-05-02T10:01:30.000Z');
    await test.runtime.poller.run(); // started (poll)
    fake.addMessage('c9', 'Yes', 'AGENT', new Date('2024-05-02T10:02:00.000Z'));
    fake.setStatus('c9', 'DONE');
    clock = new Date('2024-05-02T10:03:00.000Z');
    await test.webhook(fake.conversationPayload('c9')); // finished (webhook)
    await test.runtime.idle();

    // A poll run lists c9 as DONE; while it reads c9's messages, the customer writes again and
    // the webhooks of the message and the new conversation arrive.
    let release!: () => void;
    fake.resetLog();
    fake.fail({
      method: 'GET',
      path: /^\/customer\/c9\/message/,
      until: new Promise<void>((r) => (release = r)),
    });
    const running = test.runtime.poller.run();
    await expect.poll(() => fake.calls().some((call) => call.includes('/customer/c9/message'))).toBe(true);
    const again = fake.addMessage('c9', 'And in blue?', 'CUSTOMER', new Date('2024-05-02T10:10:00.000Z'));
    fake.setStatus('c9', 'UNREAD');
    clock = new Date('2024-05-02T10:10:01.000Z');
    await test.webhook(again);
    await test.webhook(fake.conversationPayload('c9')); // started (webhook)
    await test.runtime.idle();
    release();
    await running;

    fake.addMessage('c9', 'Blue too', 'AGENT', new Date('2024-05-02T10:11:00.000Z'));
    fake.setStatus('c9', 'DONE');
    clock = new Date('2024-05-02T10:12:00.000Z');
    await test.runtime.poller.run(); // finished (poll)

    const events = (await test.outbox())
      .filter(
        (entry) => entry.event.type.startsWith('conversation.') || entry.event.type === 'message.received',
      )
      .map((entry) => [entry.event.type, entry.event.data.conversationId]);
    const [first, second] = [events[0]![1], events.at(-1)![1]];
    expect(second).not.toBe(first);
    // Started, "Is it in stock?", finished; "And in blue?", started (webhooks), finished (poll).
    expect(events).toEqual([
      ['conversation.started', first],
      ['message.received', first],
      ['conversation.finished', first],
      ['message.received', second],
      ['conversation.started', second],
      ['conversation.finished', second],
    ]);
    const finished = (await timelineOf(test, 'c9')).filter((entry) => entry.type === 'conversation.finished');
    expect(
      finished.map((entry) => (entry.data.messages as { text: string }[] | undefined)?.map((m) => m.text)),
    ).toEqual([undefined, ['And in blue?', 'Blue too']]);
  });

  it("the first run's backfill finishes a conversation with its own messages, after those of one a webhook finished before", async () => {
    // Webhooks first; polling turned on later, its first run replaying the last week.
    let clock = new Date('2024-05-03T10:00:00.000Z');
    fake.now = () => clock;
    const test = buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0, backfillWindow: '7d' },
      now: () => clock,
    });
    fake.addCustomer({ customerId: 'c10' });
    fake.addMessage('c10', 'Is it in stock?', 'CUSTOMER', new Date('2024-05-03T10:01:00.000Z'));
    clock = new Date('2024-05-03T10:01:30.000Z');
    await test.webhook(fake.conversationPayload('c10')); // started (webhook)
    fake.addMessage('c10', 'Yes', 'AGENT', new Date('2024-05-03T10:02:00.000Z'));
    fake.setStatus('c10', 'DONE');
    clock = new Date('2024-05-03T10:03:00.000Z');
    await test.webhook(fake.conversationPayload('c10')); // finished (webhook)
    fake.addMessage('c10', 'And in blue?', 'CUSTOMER', new Date('2024-05-03T10:10:00.000Z'));
    fake.setStatus('c10', 'UNREAD');
    clock = new Date('2024-05-03T10:10:01.000Z');
    await test.webhook(fake.conversationPayload('c10')); // started (webhook)
    await test.runtime.idle();
    fake.addMessage('c10', 'Blue too', 'AGENT', new Date('2024-05-03T10:11:00.000Z'));
    fake.setStatus('c10', 'DONE'); // its finish webhook is lost
    clock = new Date('2024-05-03T10:12:00.000Z');
    await test.runtime.poller.run(); // the first run: finished (replayed)

    const finished = (await timelineOf(test, 'c10')).filter(
      (entry) => entry.type === 'conversation.finished',
    );
    expect(
      finished.map((entry) => (entry.data.messages as { text: string }[] | undefined)?.map((m) => m.text)),
    ).toEqual([undefined, ['And in blue?', 'Blue too']]);
    const ids = (await test.outbox())
      .filter((entry) => entry.event.type.startsWith('conversation.'))
      .map((entry) => entry.event.data.conversationId);
    expect(ids).toEqual([ids[0], ids[0], ids[2], ids[2]]);
    expect(ids[2]).not.toBe(ids[0]);
  });

  it('a transcript names a sender it does not know as such, not as the customer', async () => {
    const test = runtimeWith();
    await test.runtime.poller.run();
    fake.addCustomer({ customerId: 'c6' });
    fake.addMessage('c6', 'Hello');
    fake.addMessage('c6', 'Our bot can help: pick a topic', 'BOT');
    fake.addMessage('c6', 'Away until Monday', 'AUTORESPONDER');
    fake.addMessage('c6', 'Closed by the system', 'SYSTEM');
    await test.runtime.poller.run();
    fake.setStatus('c6', 'DONE');
    await test.runtime.poller.run();
    const finished = (await timelineOf(test, 'c6')).find((entry) => entry.type === 'conversation.finished')!;
    expect((finished.data.messages as { author: { type: string } }[]).map((m) => m.author.type)).toEqual([
      'visitor',
      'bot',
      'unknown',
      'system',
    ]);
    // Only the customer's own message was "received".
    expect(messageEntries(await timelineOf(test, 'c6')).map((entry) => entry.data.text)).toEqual(['Hello']);
  });

  it('the events of one conversation share its conversationId, which a CRM keys per-conversation deals on', async () => {
    const test = runtimeWith();
    await test.runtime.poller.run();
    fake.addCustomer({ customerId: 'c7' });
    fake.addMessage('c7', 'Hello');
    await test.runtime.poller.run(); // started (poll)
    fake.setStatus('c7', 'UNRESOLVED');
    await test.webhook(fake.conversationPayload('c7')); // updated (webhook)
    await test.runtime.idle();
    fake.addMessage('c7', 'Bye', 'AGENT');
    fake.setStatus('c7', 'DONE');
    await test.runtime.poller.run(); // finished (poll)
    await test.webhook(fake.addMessage('c7', 'Me again')); // its message (webhook)
    await test.webhook(fake.conversationPayload('c7')); // the next one started (webhook)
    await test.runtime.idle();
    fake.setStatus('c7', 'DONE');
    await test.webhook(fake.conversationPayload('c7')); // and finished (webhook)
    await test.runtime.idle();

    const events = (await test.outbox())
      .filter((entry) => entry.event.type.startsWith('conversation.'))
      .map((entry) => [entry.event.type, entry.event.data.conversationId]);
    const [first, second] = [events[0]![1], events[2]![1]];
    expect(events).toEqual([
      ['conversation.started', first],
      ['conversation.finished', first],
      ['conversation.started', second],
      ['conversation.finished', second],
    ]);
    expect(first).toEqual(expect.stringMatching(/^c7/));
    expect(second).not.toBe(first);
    // Customer messages are deal events too: each names the conversation it was written in,
    // whether the poller (Hello) or a webhook (Me again) recorded it.
    const messages = (await test.outbox())
      .filter((entry) => entry.event.type === 'message.received')
      .map((entry) => [entry.event.data.text, entry.event.data.conversationId]);
    expect(messages).toEqual([
      ['Hello', first],
      ['Me again', second],
    ]);
    // The timeline entries carry it too.
    const entries = conversationEntries(await timelineOf(test, 'c7'));
    expect(entries.map((entry) => entry.data.conversationId)).toEqual([first, first, first, second, second]);
  });

  it('writes an event the webhook already delivered once, and does not count it as a backfill', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD' });
    await test.runtime.poller.run();

    fake.setStatus('c1', 'UNRESOLVED');
    expect(await test.webhook(fake.conversationPayload('c1'))).toMatchObject({
      body: { ok: true },
      outcome: 'ok',
    });
    const message = fake.addMessage('c1', 'any news?');
    await test.webhook(message);
    await test.runtime.idle();

    const report = await test.runtime.poller.run();
    expect(report).toMatchObject({ conversationEvents: 0, messageEvents: 1, backfills: 0 });
    const entries = await timelineOf(test, 'c1');
    expect(entries.map((entry) => entry.type)).toEqual(['conversation.updated', 'message.received']);
    expect(await test.context.metrics.registry.metrics()).not.toContain(
      'chatbridge_chatvisor_backfills_total{',
    );
  });

  it('answers a webhook that comes after the poller found the event as a duplicate', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD', lastMessage: 'hello' });
    await test.runtime.poller.run();
    fake.setStatus('c1', 'DONE');
    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 1, backfills: 1 });
    const late = await test.webhook(fake.conversationPayload('c1', { misspelt: true }));
    expect(late).toMatchObject({ body: { ok: true }, outcome: 'duplicate' });
    expect(conversationEntries(await timelineOf(test, 'c1'))).toHaveLength(1);
  });

  it('falls back to listing customers when GET /conversation is not served', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD', email: 'x@example.org' });
    fake.fail({ path: '/conversation', status: 404, times: 100 });
    expect(await test.runtime.poller.run()).toMatchObject({ baseline: true, source: 'customer', seeded: 1 });
    fake.setStatus('c1', 'UNRESOLVED');
    fake.resetLog();
    expect(await test.runtime.poller.run()).toMatchObject({ source: 'customer', conversationEvents: 1 });
    expect(fake.calls()).toEqual(['GET /customer']);
  });

  it("polling by customers: a listed customer's new assignee becomes the contact's responsible agent, once", async () => {
    const test = runtimeWith();
    fake.addCustomer({
      customerId: 'c1',
      status: 'UNREAD',
      email: 'x@example.org',
      assignedUser: 'Oleg@Shop.example',
    });
    fake.fail({ path: '/conversation', status: 404, times: 100 });
    const responsible = async () =>
      (await test.context.contacts.findByIdentifier({ kind: 'customer', value: 'c1', channelId: 'cobrowse' }))
        ?.responsibleAgent;
    await test.runtime.poller.run();
    expect(await responsible()).toEqual({ email: 'oleg@shop.example' });
    // Another channel names someone else later; Chatvisor's listing still says Oleg: no news.
    await test.context.contacts.observe({
      channelId: 'shop-site',
      vendor: 'jivochat',
      at: test.context.now().toISOString(),
      idempotencyKey: 'card-anna',
      identifiers: [{ kind: 'customer', value: 'c1', channelId: 'cobrowse' }],
      responsibleAgent: { email: 'anna@shop.example' },
    });
    fake.setStatus('c1', 'UNRESOLVED');
    await test.runtime.poller.run();
    expect(await responsible()).toEqual({ email: 'anna@shop.example' });
    // Reassigned in Chatvisor: the listing's new assignee is the newest statement.
    fake.customers.get('c1')!.assignedUser = 'dmitry@store.example';
    fake.setStatus('c1', 'UNREAD');
    await test.runtime.poller.run();
    expect(await responsible()).toEqual({ email: 'dmitry@store.example' });
  });

  it('polling by customers: a new assignee whose save failed is said on the next run', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD', email: 'x@example.org' });
    fake.fail({ path: '/conversation', status: 404, times: 100 });
    // None yet: no contact (the first run records a baseline), or one nobody is responsible for.
    const responsible = async () =>
      (await test.context.contacts.findByIdentifier({ kind: 'customer', value: 'c1', channelId: 'cobrowse' }))
        ?.responsibleAgent ?? null;
    await test.runtime.poller.run();
    expect(await responsible()).toBeNull();

    // Assigned in Chatvisor; the run that lists it finds the store failing every checked write.
    fake.customers.get('c1')!.assignedUser = 'oleg@shop.example';
    fake.setStatus('c1', 'UNRESOLVED');
    const store = test.context.store;
    const batch = store.batch;
    store.batch = () => {
      const failing = batch.call(store);
      failing.exec = () => Promise.reject(new StoreUnavailableError(new Error('connection lost')));
      return failing;
    };
    // The store down stops the run (the next one starts over).
    await expect(test.runtime.poller.run()).rejects.toBeInstanceOf(StoreUnavailableError);
    store.batch = batch;
    expect(await responsible()).toBeNull();

    // The next run: the assignee was not remembered, so it is news still, and said.
    expect(await test.runtime.poller.run()).toMatchObject({ failed: [] });
    expect(await responsible()).toEqual({ email: 'oleg@shop.example' });
  });

  it('keeps going when one customer fails, and catches up on the next run', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1' });
    fake.addCustomer({ customerId: 'c2' });
    await test.runtime.poller.run();
    fake.addMessage('c1', 'first');
    fake.addMessage('c2', 'second');
    fake.fail({ path: '/customer/c1/message', status: 500 });
    const report = await test.runtime.poller.run();
    expect(report.failed).toEqual([{ customerId: 'c1', reason: expect.stringContaining('HTTP 500') }]);
    expect(messageEntries(await timelineOf(test, 'c2'))).toHaveLength(1);
    expect(messageEntries(await timelineOf(test, 'c1'))).toHaveLength(0);
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, failed: [] });
    expect(messageEntries(await timelineOf(test, 'c1'))).toHaveLength(1);
  });

  // Chatvisor's times have millisecond resolution: two messages, or a message and the change the
  // first run recorded, can share one. A message in that millisecond is still new.
  it('finds a message created in the same millisecond as the first run recorded, its webhook lost', async () => {
    const at = new Date('2024-05-14T08:00:00.000Z');
    fake.now = () => at;
    fake.addCustomer({ customerId: 'c1', status: 'UNRESOLVED' });
    fake.addMessage('c1', 'existed before polling', 'CUSTOMER', at);
    const test = runtimeWith();
    expect(await test.runtime.poller.run()).toMatchObject({ baseline: true, seeded: 1 });
    const lost = fake.addMessage('c1', 'sent in the same millisecond', 'CUSTOMER', at);

    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, backfills: 1 });
    expect(messageEntries(await timelineOf(test, 'c1')).map((entry) => entry.data.messageId)).toEqual([
      lost.id,
    ]);
  });

  it('finds a message created in the same millisecond as the newest one the last run fetched', async () => {
    const at = new Date('2024-05-14T08:00:00.000Z');
    fake.now = () => new Date(at.getTime() - 60_000);
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1' });
    await test.runtime.poller.run();
    const first = fake.addMessage('c1', 'first', 'CUSTOMER', at);
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1 });
    const second = fake.addMessage('c1', 'second', 'CUSTOMER', at);
    fake.addMessage('c1', 'an agent answers, same millisecond', 'AGENT', at);

    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, backfills: 1 });
    fake.addMessage('c1', 'third', 'CUSTOMER', new Date(at.getTime() + 1));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1 });
    // Each once (the two in one millisecond in either order).
    const seen = messageEntries(await timelineOf(test, 'c1')).map((entry) => entry.data.text as string);
    expect(seen.sort()).toEqual(['first', 'second', 'third']);
    expect(first.createdAt).toBe(second.createdAt);
  });

  it('fails the run on a revoked token', async () => {
    const test = buildRuntime({ apiUrl: fake.apiUrl, apiToken: 'revoked' });
    await expect(test.runtime.poller.run()).rejects.toMatchObject({ code: 'chatvisor_auth_failed' });
  });
});

/** The ticking clock's start: the vendor's times in these tests are dated against it. */
const T0 = Date.parse('2024-05-14T09:00:00.000Z');
const DAY = 86_400_000;
const messageTexts = (entries: TimelineEntry[]) => messageEntries(entries).map((entry) => entry.data.text);

describe('what the first run recorded stays recorded', () => {
  it('with backfillWindow 0s and no updatedAt on the listing, a new message does not replay the history', async () => {
    fake.reportUpdatedAt = false;
    fake.now = () => new Date(T0 - 30 * DAY);
    fake.addCustomer({ customerId: 'a1', status: 'UNRESOLVED' });
    fake.addMessage('a1', 'old 1', 'CUSTOMER', new Date(T0 - 30 * DAY));
    fake.addMessage('a1', 'old 2', 'CUSTOMER', new Date(T0 - 30 * DAY + 1000));
    const test = runtimeWith();
    expect(await test.runtime.poller.run()).toMatchObject({ baseline: true, seeded: 1, messageEvents: 0 });

    fake.addMessage('a1', 'new one', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, failed: [] });
    expect(messageTexts(await timelineOf(test, 'a1'))).toEqual(['new one']);
  });

  it('reads a cursor an earlier version stored without a time: the messages it had seen are not replayed', async () => {
    fake.reportUpdatedAt = false;
    fake.addCustomer({ customerId: 'a3', status: 'UNRESOLVED' });
    fake.addMessage('a3', 'old 1', 'CUSTOMER', new Date(T0 - 30 * DAY));
    fake.addMessage('a3', 'old 2', 'CUSTOMER', new Date(T0 - 30 * DAY + 1000));
    const test = runtimeWith();
    await test.runtime.poller.run();
    // What the first run stored before the fix when nothing dated the conversation.
    await test.store.hset(storeKeys('cobrowse').cursor, 'a3', JSON.stringify({ text: 'old 2', at: null }));

    fake.addMessage('a3', 'new one', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, failed: [] });
    expect(messageTexts(await timelineOf(test, 'a3'))).toEqual(['new one']);
  });

  it('a customer whose webhook came before the first poll is seeded like the others: its history is not replayed later', async () => {
    const old = new Date(T0 - 30 * DAY);
    fake.now = () => old;
    fake.addCustomer({ customerId: 'a2', status: 'UNRESOLVED' });
    fake.addMessage('a2', 'ancient', 'CUSTOMER', old);
    const test = runtimeWith({ backfillWindow: '24h' });
    expect(await test.webhook(fake.conversationPayload('a2'))).toMatchObject({ outcome: 'ok' });
    await test.runtime.idle();
    const first = await test.runtime.poller.run();
    expect(first).toMatchObject({ baseline: true, messageEvents: 0, failed: [] });
    expect(first.backfill).toMatchObject({ conversations: 0, messages: 0, olderThanWindow: 1 });

    fake.addMessage('a2', 'fresh', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, failed: [] });
    expect(messageTexts(await timelineOf(test, 'a2'))).toEqual(['fresh']);
  });

  it('a customer that failed during the first run is recorded, not replayed, by the next run', async () => {
    fake.reportUpdatedAt = false;
    const old = new Date(T0 - 60 * DAY);
    fake.now = () => old;
    fake.addCustomer({ customerId: 'd1' });
    fake.addMessage('d1', 'two months ago', 'CUSTOMER', old);
    fake.setStatus('d1', 'DONE');
    const test = runtimeWith({ backfillWindow: '24h' });
    fake.fail({ method: 'GET', path: '/customer/d1/message', status: 503 });
    const first = await test.runtime.poller.run();
    expect(first.failed).toEqual([{ customerId: 'd1', reason: expect.stringContaining('503') }]);

    expect(await test.runtime.poller.run()).toMatchObject({
      baseline: false,
      seeded: 1,
      conversationEvents: 0,
      messageEvents: 0,
      failed: [],
    });
    expect(await timelineOf(test, 'd1')).toEqual([]);
    expect(await test.outbox()).toEqual([]);

    // From then on it is polled incrementally.
    fake.addMessage('d1', 'back again', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 1, messageEvents: 1 });
    expect(messageTexts(await timelineOf(test, 'd1'))).toEqual(['back again']);
  });

  it('a customer that failed during the first run is replayed by the next run when it changed within the window', async () => {
    fake.reportUpdatedAt = false;
    fake.now = () => new Date(T0 - 3_600_000);
    fake.addCustomer({ customerId: 'd2', status: 'UNRESOLVED' });
    fake.addMessage('d2', 'two days ago', 'CUSTOMER', new Date(T0 - 2 * DAY));
    fake.addMessage('d2', 'an hour ago', 'CUSTOMER', new Date(T0 - 3_600_000));
    const test = runtimeWith({ backfillWindow: '24h' });
    fake.fail({ method: 'GET', path: '/customer/d2/message', status: 503 });
    expect((await test.runtime.poller.run()).failed).toHaveLength(1);

    expect(await test.runtime.poller.run()).toMatchObject({
      conversationEvents: 1,
      messageEvents: 1,
      failed: [],
    });
    expect(messageTexts(await timelineOf(test, 'd2'))).toEqual(['an hour ago']);
    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 0, messageEvents: 0 });
  });
});

describe('customers Chatvisor no longer knows', () => {
  /** A clock the test moves (1 ms per reading besides, as tickingClock). */
  function movableClock() {
    let at = T0;
    return {
      now: () => new Date(at++),
      pass(ms: number) {
        at += ms;
      },
    };
  }
  function runtimeOn(clock: { now: () => Date }, settings: Record<string, unknown> = {}): TestRuntime {
    return buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0, backfillWindow: '0s', ...settings },
      now: clock.now,
    });
  }
  async function stateOf(test: TestRuntime, customerId: string): Promise<string[]> {
    const keys = storeKeys('cobrowse');
    const held: string[] = [];
    for (const [name, key] of Object.entries({
      status: keys.status,
      cursor: keys.cursor,
      labels: keys.pushedLabels,
      profiles: keys.profiles,
      pending: keys.profilePending,
      left: keys.pollFirstRunLeft,
      unlisted: keys.pollUnlisted,
    })) {
      if ((await test.store.hget(key, customerId)) !== null) held.push(name);
    }
    return held;
  }

  it('forgets the state a webhook left for a made-up customer id, and keeps real customers', async () => {
    const clock = movableClock();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD', email: 'c1@example.test' });
    const test = runtimeOn(clock);
    await test.webhook({ customerId: 'ghost-1', status: 'UNREAD', lastMessage: { text: 'hi' } });
    await test.webhook(fake.conversationPayload('c1'));
    await test.runtime.idle();
    // The profile read found no such customer: marked pending, status kept.
    expect(await stateOf(test, 'ghost-1')).toEqual(['status', 'pending']);

    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 0 });
    clock.pass(FORGET_UNLISTED_AFTER_MS + 60_000);
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 1, failed: [] });
    expect(await stateOf(test, 'ghost-1')).toEqual([]);
    expect(await stateOf(test, 'c1')).toEqual(expect.arrayContaining(['status', 'cursor', 'profiles']));
    expect(await stateOf(test, 'c1')).not.toContain('unlisted');
    // The conversation the webhook recorded is still in the timeline: only the adapter's state goes.
    expect(conversationEntries(await timelineOf(test, 'ghost-1'))).toHaveLength(1);
  });

  it('forgets a customer the first run failed on and that was never listed again', async () => {
    const clock = movableClock();
    fake.addCustomer({ customerId: 'd1', status: 'UNREAD' });
    fake.addMessage('d1', 'hello', 'CUSTOMER', new Date(T0 - 3_600_000));
    fake.addCustomer({ customerId: 'd2', status: 'UNREAD' });
    const test = runtimeOn(clock, { backfillWindow: '24h' });
    fake.fail({ method: 'GET', path: '/customer/d1/message', status: 503 });
    expect((await test.runtime.poller.run()).failed).toHaveLength(1);
    expect(await stateOf(test, 'd1')).toEqual(['left']);

    // Deleted in Chatvisor before the next run.
    fake.customers.delete('d1');
    await test.runtime.poller.run();
    clock.pass(FORGET_UNLISTED_AFTER_MS + 60_000);
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 1 });
    expect(await stateOf(test, 'd1')).toEqual([]);
    expect(await test.store.hgetall(storeKeys('cobrowse').pollFirstRunLeft)).toEqual({});
  });

  it('keeps a customer the listing leaves out while Chatvisor still knows it, and forgets nothing after an incomplete listing', async () => {
    const clock = movableClock();
    fake.addCustomer({ customerId: 'c1', status: 'UNREAD' });
    fake.addCustomer({ customerId: 'c2', status: 'UNREAD' });
    const test = runtimeOn(clock);
    await test.runtime.poller.run();
    const onlyC1 = { page: 0, results: [fake.conversationPayload('c1')] };
    fake.fail({ method: 'GET', path: '/conversation', status: 200, body: onlyC1, times: 2 });
    await test.runtime.poller.run();
    clock.pass(FORGET_UNLISTED_AFTER_MS + 60_000);
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 0 });
    expect(fake.profileReads('c2')).toBe(1);
    expect(await stateOf(test, 'c2')).toEqual(['status', 'cursor', 'unlisted']);

    // c2 is gone from Chatvisor, but the listing has an item it cannot read: not complete.
    fake.customers.delete('c2');
    clock.pass(FORGET_UNLISTED_AFTER_MS + 60_000);
    const odd = { page: 0, results: [fake.conversationPayload('c1'), { customerId: 42.5e300 }] };
    fake.fail({ method: 'GET', path: '/conversation', status: 200, body: odd });
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: null });
    expect(await stateOf(test, 'c2')).toEqual(['status', 'cursor', 'unlisted']);
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 1 });
    expect(await stateOf(test, 'c2')).toEqual([]);
  });
  it('walks the customers a page of ids at a time: over several pages each is timed once and asked for once, at most FORGET_CHECKS_PER_RUN a run', async () => {
    const clock = movableClock();
    // The checks are the vendor calls of the test: not held to the default pace.
    const test = runtimeOn(clock, { rateLimit: { perSecond: 1000 } });
    const keys = storeKeys('cobrowse');
    // Earlier customers none of which is listed now, more than two pages of ids (FIELDS_PAGE),
    // half of them in two hashes.
    const count = 1_200;
    const batch = test.store.batch();
    for (let index = 0; index < count; index++) {
      batch.hset(keys.status, `gone${index}`, 'DONE');
      if (index % 2 === 0) batch.hset(keys.profiles, `gone${index}`, '{}');
    }
    await batch.exec();
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: 0 });
    expect(Object.keys(await test.store.hgetall(keys.pollUnlisted))).toHaveLength(count);

    clock.pass(FORGET_UNLISTED_AFTER_MS + 60_000);
    fake.resetLog();
    expect(await test.runtime.poller.run()).toMatchObject({ forgotten: FORGET_CHECKS_PER_RUN });
    const asked = fake.calls().filter((call) => call.startsWith('GET /customer/gone'));
    expect(asked).toHaveLength(FORGET_CHECKS_PER_RUN);
    expect(new Set(asked).size).toBe(FORGET_CHECKS_PER_RUN);
    expect(Object.keys(await test.store.hgetall(keys.status))).toHaveLength(count - FORGET_CHECKS_PER_RUN);
    expect(Object.keys(await test.store.hgetall(keys.pollUnlisted))).toHaveLength(
      count - FORGET_CHECKS_PER_RUN,
    );
  });
});

describe('what a run reads of the per-customer state', () => {
  it("reads the listed customers' fields only, never a per-customer hash whole", async () => {
    // Each run read the status, cursor, profile, pending and first-run hashes whole (one field per
    // customer ever seen, cached profiles included), and forgetUnlisted every one of them again:
    // a run's reads grew with every customer the channel ever had, not with the listing.
    const memory = createMemoryStore();
    const wholeReads: string[] = [];
    const store = new Proxy(memory, {
      get(target, property, receiver) {
        if (property === 'hgetall')
          return (key: string) => {
            wholeReads.push(key);
            return target.hgetall(key);
          };
        return Reflect.get(target, property, receiver);
      },
    }) as Store;
    const keys = storeKeys('cobrowse');
    // Earlier customers' state (none of them listed now), a cached profile of some size each.
    const profile = JSON.stringify({ fetchedAt: '2024-05-14T08:00:00.000Z', name: 'x'.repeat(2000) });
    const batch = memory.batch();
    for (let index = 0; index < 300; index++) {
      batch.hset(keys.status, `old${index}`, 'DONE');
      batch.hset(keys.profiles, `old${index}`, profile);
    }
    await batch.exec();
    const test = buildRuntime({
      apiUrl: fake.apiUrl,
      apiToken: fake.token,
      settings: { maxRetries: 0, backfillWindow: '0s' },
      now: tickingClock(),
      store,
    });
    fake.addCustomer({ customerId: 'c1', email: 'c1@example.org' });
    fake.addMessage('c1', 'first');
    expect(await test.runtime.poller.run()).toMatchObject({ baseline: true, failed: [] });
    fake.addMessage('c1', 'second');
    fake.setStatus('c1', 'DONE');
    expect(await test.runtime.poller.run()).toMatchObject({
      conversationEvents: 1,
      messageEvents: 1,
      failed: [],
      forgotten: 0,
    });
    const hashes = [...customerHashes('cobrowse'), keys.pollUnlisted];
    expect(wholeReads.filter((key) => hashes.includes(key))).toEqual([]);
    // What the runs did with it is as before: c1's state kept, the unlisted ones counted as such.
    expect(await memory.hget(keys.status, 'c1')).toBe('DONE');
    expect(await memory.hget(keys.pollUnlisted, 'old0')).not.toBeNull();
    expect(await memory.hget(keys.profiles, 'old299')).toBe(profile);
  });
});

describe('paging', () => {
  it('reads every page of a long conversation: the message after 45 others is found', async () => {
    fake.addCustomer({ customerId: 'b1', status: 'UNRESOLVED' });
    for (let index = 0; index < 45; index++) {
      fake.addMessage('b1', `m${index}`, 'CUSTOMER', new Date(T0 - 3_600_000 + index * 1000));
    }
    const test = runtimeWith({ pageSize: 2 });
    await test.runtime.poller.run();
    fake.addMessage('b1', 'the new one', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, failed: [] });
    expect(messageTexts(await timelineOf(test, 'b1'))).toEqual(['the new one']);
  });

  it('polling by customers pages on past pages that hold no conversation', async () => {
    fake.fail({ method: 'GET', path: '/conversation', status: 404, times: 1000 });
    for (let index = 0; index < 4; index++) {
      // A customer who never chatted has no status.
      delete (fake.addCustomer({ customerId: `s${index}` }) as Partial<FakeCustomer>).status;
    }
    const test = runtimeWith({ pageSize: 2 });
    expect(await test.runtime.poller.run()).toMatchObject({ source: 'customer', pages: 3 });
    fake.addCustomer({ customerId: 'z9', status: 'UNREAD' });
    fake.addMessage('z9', 'hello');
    expect(await test.runtime.poller.run()).toMatchObject({
      source: 'customer',
      conversationEvents: 1,
      messageEvents: 1,
    });
  });
});

type Delivery = 'now' | 'lost' | 'late' | 'twice';
type Step =
  | { kind: 'status'; customer: number; status: 'UNREAD' | 'DONE' | 'UNRESOLVED'; delivery: Delivery }
  | { kind: 'message'; customer: number; delivery: Delivery }
  | { kind: 'poll' }
  | { kind: 'flush' }
  | { kind: 'tick' };

const delivery = fc.constantFrom<Delivery>('now', 'lost', 'late', 'twice');
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('status' as const),
    customer: fc.integer({ min: 0, max: 1 }),
    status: fc.constantFrom('UNREAD' as const, 'DONE' as const, 'UNRESOLVED' as const),
    delivery,
  }),
  fc.record({ kind: fc.constant('message' as const), customer: fc.integer({ min: 0, max: 1 }), delivery }),
  fc.record({ kind: fc.constant('poll' as const) }),
  fc.record({ kind: fc.constant('flush' as const) }),
  fc.record({ kind: fc.constant('tick' as const) }),
);

describe('polling and webhooks together', () => {
  it('never duplicate or lose a conversation event, whatever webhooks arrive, twice, late or never', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
        fake.customers.clear();
        fake.messages.clear();
        fake.resetLog();
        // Chatvisor's clock, moved only by 'tick' steps: changes between two ticks share a
        // millisecond, as they can for real, and the seed alone decides the case (not how fast
        // the machine happens to be).
        let clock = Date.parse('2024-05-14T08:00:00.000Z');
        fake.now = () => new Date(clock);
        const test = runtimeWith();
        const ids = ['k1', 'k2'];
        for (const id of ids) fake.addCustomer({ customerId: id, status: 'UNREAD' });
        await test.runtime.poller.run(); // baseline

        let late: unknown[] = [];
        // Conversation states (status and last message) whose webhook came late: their entry is
        // placed by when it arrived (the payload has no time), after newer states.
        const lateStates = new Set<string>();
        const deliver = async (payload: Record<string, unknown>, mode: Delivery) => {
          if (mode === 'lost') return;
          if (mode === 'late') {
            late.push(payload);
            const last = payload.lastMessage as { text?: string } | undefined;
            if (typeof payload.status === 'string') lateStates.add(`${payload.status} ${last?.text}`);
            return;
          }
          await test.webhook(payload);
          if (mode === 'twice') await test.webhook(payload);
        };
        let text = 0;
        for (const action of steps) {
          if (action.kind === 'poll') {
            await test.runtime.poller.run();
            // What a poll sees is never lost: once a customer has conversation entries, the
            // status the poller just saw is among them.
            for (const id of ids) {
              const statuses = conversationEntries(await timelineOf(test, id)).map(
                (entry) => entry.data.status,
              );
              if (statuses.length > 0) expect(statuses).toContain(fake.customers.get(id)!.status);
            }
          } else if (action.kind === 'tick') {
            clock++;
          } else if (action.kind === 'flush') {
            for (const payload of late) await test.webhook(payload);
            late = [];
          } else if (action.kind === 'status') {
            const id = ids[action.customer]!;
            if (fake.customers.get(id)!.status === action.status) continue;
            // An agent's reply first, so each state's (status, last message) is unique: identical
            // states are indistinguishable by design (the key is customer + status + last message).
            fake.addMessage(id, `agent reply ${++text}`, 'AGENT', fake.now());
            fake.setStatus(id, action.status);
            await deliver(fake.conversationPayload(id), action.delivery);
          } else {
            const id = ids[action.customer]!;
            const reopened = fake.customers.get(id)!.status === 'DONE';
            const message = fake.addMessage(id, `customer says ${++text}`, 'CUSTOMER', fake.now());
            await deliver({ ...message }, action.delivery);
            if (reopened) await deliver(fake.conversationPayload(id), action.delivery);
          }
          await test.runtime.idle();
        }
        for (const payload of late) await test.webhook(payload);
        await test.runtime.idle();
        await test.runtime.poller.run();

        for (const id of ids) {
          const entries = await timelineOf(test, id);
          // Every customer message exactly once.
          const customerMessages = (fake.messages.get(id) ?? []).filter(
            (message) => message.sender === 'CUSTOMER',
          );
          const seen = messageEntries(entries).map((entry) => entry.data.messageId);
          expect(seen.sort()).toEqual(customerMessages.map((message) => message.id).sort());
          // No state twice: a state is its status and last message (the event's key; each state
          // here has its own agent reply or customer message, so none repeats at the vendor).
          const conversations = conversationEntries(entries);
          const states = conversations.map((entry) => `${entry.data.status} ${entry.data.lastMessage}`);
          expect(new Set(states).size).toBe(states.length);
          // No transition twice: consecutive conversation entries differ in status — except next
          // to a late webhook's entry, which is out of order by design (seed 1618275117 found a
          // late UNRESOLVED landing after DONE and before the next, newer UNRESOLVED).
          const statuses = conversations.map((entry) => entry.data.status as string);
          for (let index = 1; index < statuses.length; index++)
            if (!lateStates.has(states[index]!) && !lateStates.has(states[index - 1]!))
              expect(statuses[index]).not.toBe(statuses[index - 1]);
          // Nothing lost: the vendor's status now is on the timeline, unless it is still the
          // baseline's. (Late webhooks are older events arriving last, so the newest entry is not
          // necessarily the current status.)
          const now = fake.customers.get(id)!.status;
          if (statuses.length > 0) expect(statuses).toContain(now);
          else expect(now).toBe('UNREAD');
        }
      }),
      { numRuns: 25 },
    );
  }, 60_000);
});
