import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Contact, TimelineEntry } from '../../src/contacts/types.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { storeKeys } from './state.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';

/**
 * Who a Chatvisor customer is (DESIGN §7): the profile read over REST puts the customer's
 * conversations on the person's contact (found by person id or e-mail), it is cached and read
 * again when a new conversation starts or it is stale, labels are pushed as soon as the customer
 * is identified and whenever they change, and the first poll backfills its window.
 */
const HOUR = 3_600_000;
const T0 = Date.parse('2024-05-14T09:00:00.000Z');

/** A clock the test moves; every reading is 1 ms later, so timeline entries keep their order. */
function testClock() {
  let now = T0;
  return {
    now: () => new Date(now++),
    advance(ms: number) {
      now += ms;
    },
  };
}

let fake: FakeChatvisor;
let clock: ReturnType<typeof testClock>;
beforeAll(async () => {
  fake = await startFakeChatvisor();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  fake.customers.clear();
  fake.messages.clear();
  fake.clearFailures();
  fake.resetLog();
  fake.reportUpdatedAt = true;
  clock = testClock();
  fake.now = () => new Date(clock.now().getTime());
});

function runtimeWith(settings: Record<string, unknown> = {}): TestRuntime {
  return buildRuntime({
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    settings: { maxRetries: 0, ...settings },
    now: clock.now,
  });
}

async function byEmail(test: TestRuntime, email: string): Promise<Contact> {
  const found = await test.context.contacts.find({ email });
  expect(found).toHaveLength(1);
  return found[0]!;
}

async function byPerson(test: TestRuntime, person: string): Promise<Contact> {
  const contact = await test.context.contacts.findByIdentifier({ kind: 'person', value: person });
  expect(contact).not.toBeNull();
  return contact!;
}

async function timeline(test: TestRuntime, contact: Contact): Promise<TimelineEntry[]> {
  return (await test.context.contacts.timeline(contact.id, { limit: 100 })).entries;
}

/** Chatvisor's conversation and message entries (merges are entries too, of type contact.merged). */
const chatvisorTypes = (entries: TimelineEntry[]) =>
  entries
    .filter((entry) => entry.vendor === 'chatvisor' && !entry.type.startsWith('contact.'))
    .map((entry) => entry.type)
    .sort();

/** The same person, known from the website chat: their person id, e-mail and a segment. */
async function seedFromWebsite(test: TestRuntime, segment = 'vip') {
  await test.context.contacts.observe({
    channelId: 'shop-site',
    vendor: 'jivochat',
    at: segment === 'vip' ? '2024-05-14T08:00:00.000Z' : '2024-05-14T08:30:00.000Z',
    idempotencyKey: `seed-${segment}`,
    identifiers: [
      { kind: 'person', value: 'P-1001' },
      { kind: 'email', value: 'anna@example.org' },
    ],
    attributes: { segment: { value: segment } },
    timeline: [
      { key: 'chat', at: '2024-05-14T08:00:00.000Z', type: 'conversation.finished', summary: 'website chat' },
    ],
  });
}

describe('a Chatvisor customer lands on the person’s contact', () => {
  it('webhook: the conversation and later messages are in the timeline found by e-mail and by person id', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'Anna@Example.org', firstname: 'Anna' });
    fake.addMessage('cv-1', 'Hello, is my order shipped?');
    const test = runtimeWith();
    await seedFromWebsite(test);

    expect(await test.webhook(fake.conversationPayload('cv-1'))).toMatchObject({ body: { ok: true } });
    await test.runtime.idle();
    // The profile is cached now: the message lands on the person's contact when it is stored.
    await test.webhook(fake.addMessage('cv-1', 'Any news?'));

    const contact = await byEmail(test, 'anna@example.org');
    expect((await byPerson(test, 'P-1001')).id).toBe(contact.id);
    expect(contact.identities).toEqual(
      expect.arrayContaining([{ kind: 'customer', value: 'cv-1', channelId: 'cobrowse' }]),
    );
    const entries = await timeline(test, contact);
    expect(chatvisorTypes(entries)).toEqual(['conversation.started', 'message.received']);
    // Merged with the same person's activity elsewhere.
    expect(entries.some((entry) => entry.vendor === 'jivochat')).toBe(true);
    expect(fake.profileReads('cv-1')).toBe(1);
  });

  it('poll: a conversation found by polling is in the timeline found by e-mail and by person id', async () => {
    const test = runtimeWith();
    await test.runtime.poller.run(); // nothing yet
    fake.addCustomer({ customerId: 'cv-2', id: 'P-2002', email: 'boris@example.org', lastname: 'Bor' });
    fake.addMessage('cv-2', 'Where is my refund?');
    const report = await test.runtime.poller.run();
    expect(report).toMatchObject({ conversationEvents: 1, messageEvents: 1, identified: 1, failed: [] });

    const contact = await byEmail(test, 'boris@example.org');
    expect((await byPerson(test, 'P-2002')).id).toBe(contact.id);
    expect(contact.name).toBe('Bor');
    expect(chatvisorTypes(await timeline(test, contact))).toEqual([
      'conversation.started',
      'message.received',
    ]);
  });

  it('poll by customers (no GET /conversation): the listed profile identifies the customer without a read', async () => {
    fake.fail({ path: '/conversation', status: 404, times: 100 });
    const test = runtimeWith();
    await test.runtime.poller.run();
    fake.addCustomer({ customerId: 'cv-3', id: 'P-3003', email: 'vera@example.org' });
    expect(await test.runtime.poller.run()).toMatchObject({ source: 'customer', conversationEvents: 1 });
    const contact = await byPerson(test, 'P-3003');
    expect((await byEmail(test, 'vera@example.org')).id).toBe(contact.id);
    expect(chatvisorTypes(await timeline(test, contact))).toEqual(['conversation.started']);
    expect(fake.profileReads('cv-3')).toBe(0);
  });
});

describe('profile cache', () => {
  it('reads the profile once per conversation, again when a new one starts, and links what changed', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'anna@example.org' });
    const test = runtimeWith({ labels: ['{email}'] });
    await test.webhook(fake.conversationPayload('cv-1'));
    await test.runtime.idle();
    for (const text of ['one', 'two', 'three']) {
      await test.webhook(fake.addMessage('cv-1', text));
      await test.runtime.idle();
    }
    fake.setStatus('cv-1', 'UNRESOLVED');
    await test.webhook(fake.conversationPayload('cv-1'));
    await test.runtime.idle();
    expect(fake.profileReads('cv-1')).toBe(1);
    expect(fake.tagRequests('cv-1').map((request) => request.body)).toEqual([
      { id: 'P-1001', labels: ['anna@example.org'] },
    ]);

    // The customer changes their e-mail in Chatvisor; the conversation ends and a new one starts.
    fake.updateProfile('cv-1', { email: 'anna.new@example.org', firstname: 'Anna' });
    fake.setStatus('cv-1', 'DONE');
    await test.webhook(fake.conversationPayload('cv-1'));
    await test.runtime.idle();
    expect(fake.profileReads('cv-1')).toBe(1);
    await test.webhook(fake.addMessage('cv-1', 'me again'));
    fake.resetLog();
    await test.webhook(fake.conversationPayload('cv-1')); // DONE -> UNREAD: a new conversation
    await test.runtime.idle();
    expect(fake.profileReads('cv-1')).toBe(1);

    const contact = await byPerson(test, 'P-1001');
    expect(contact.emails).toEqual(expect.arrayContaining(['anna@example.org', 'anna.new@example.org']));
    expect(contact.name).toBe('Anna');
    expect((await byEmail(test, 'anna.new@example.org')).id).toBe(contact.id);
    const metrics = await test.context.metrics.registry.metrics();
    expect(metrics).toContain(
      'chatbridge_chatvisor_profile_reads_total{channel="cobrowse",outcome="changed"} 2',
    );
  });

  it('reads a cached profile again on the next event once it is older than profileRefresh', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001' });
    const test = runtimeWith({ profileRefresh: '1h' });
    await test.webhook(fake.conversationPayload('cv-1'));
    await test.runtime.idle();
    await test.webhook(fake.addMessage('cv-1', 'still fresh'));
    await test.runtime.idle();
    expect(fake.profileReads('cv-1')).toBe(1);

    clock.advance(2 * HOUR);
    fake.updateProfile('cv-1', { email: 'late@example.org' });
    await test.webhook(fake.addMessage('cv-1', 'two hours later'));
    await test.runtime.idle();
    expect(fake.profileReads('cv-1')).toBe(2);
    expect((await byEmail(test, 'late@example.org')).id).toBe((await byPerson(test, 'P-1001')).id);
  });
});

describe('labels', () => {
  it('are pushed as soon as the customer is identified, and again when they change — counted at Chatvisor', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'anna@example.org' });
    const test = runtimeWith({
      labels: ['{person}', 'segment:{attributes.segment}'],
      schedules: { conversationPoll: '* * * * *' },
    });
    await seedFromWebsite(test, 'vip');
    await test.runtime.poller.run(); // first poll: the conversation is backfilled and identified
    expect(fake.tagRequests('cv-1').map((request) => request.body)).toEqual([
      { id: 'P-1001', labels: ['P-1001', 'segment:vip'] },
    ]);
    expect(fake.customers.get('cv-1')!.labels).toEqual(['P-1001', 'segment:vip']);

    // Nothing changed: no call.
    await test.runtime.poller.run();
    expect(fake.tagRequests('cv-1')).toHaveLength(1);

    // The website chat changes the segment; nothing happens in Chatvisor, the next poll pushes.
    await seedFromWebsite(test, 'gold');
    await test.runtime.poller.run();
    expect(fake.tagRequests('cv-1').map((request) => request.body)).toEqual([
      { id: 'P-1001', labels: ['P-1001', 'segment:vip'] },
      { id: 'P-1001', labels: ['P-1001', 'segment:gold'] },
    ]);
    await test.runtime.poller.run();
    expect(fake.tagRequests('cv-1')).toHaveLength(2);
  });

  it('webhook: pushed once the profile identifies the customer', async () => {
    fake.addCustomer({ customerId: 'cv-9', id: 'P-9' });
    const test = runtimeWith({ labels: ['{person}', 'chatvisor'] });
    await test.webhook(fake.conversationPayload('cv-9'));
    await test.runtime.idle();
    expect(fake.tagRequests('cv-9').map((request) => request.body)).toEqual([
      { id: 'P-9', labels: ['P-9', 'chatvisor'] },
    ]);
  });
});

describe('the id sent with labels', () => {
  it('is the customer’s own id in Chatvisor, not another person id its merged contact holds', async () => {
    // The website knows P-1001 with anna@example.org; in Chatvisor, P-2002 has the same e-mail.
    // The contact merges on the e-mail and holds both person ids.
    fake.addCustomer({ customerId: 'cv-7', id: 'P-2002', email: 'anna@example.org' });
    const test = runtimeWith({ labels: ['chatvisor'] });
    await seedFromWebsite(test, 'vip');
    await test.webhook(fake.conversationPayload('cv-7'));
    await test.runtime.idle();
    const contact = await byEmail(test, 'anna@example.org');
    expect(
      contact.identities.filter((identity) => identity.kind === 'person').map((identity) => identity.value),
    ).toEqual(expect.arrayContaining(['P-1001', 'P-2002']));
    expect(fake.tagRequests('cv-7').map((request) => request.body)).toEqual([
      { id: 'P-2002', labels: ['chatvisor'] },
    ]);
    expect(fake.customers.get('cv-7')!.id).toBe('P-2002');
  });

  it('is left out when the customer has none of its own and its contact holds several', async () => {
    fake.addCustomer({ customerId: 'cv-8', email: 'anna@example.org' });
    const test = runtimeWith({ labels: ['chatvisor'] });
    await seedFromWebsite(test, 'vip');
    await test.context.contacts.observe({
      channelId: 'shop-site',
      vendor: 'jivochat',
      at: '2024-05-14T08:40:00.000Z',
      idempotencyKey: 'seed-second-person',
      identifiers: [
        { kind: 'person', value: 'P-3003' },
        { kind: 'email', value: 'anna@example.org' },
      ],
    });
    await test.webhook(fake.conversationPayload('cv-8'));
    await test.runtime.idle();
    expect(fake.tagRequests('cv-8').map((request) => request.body)).toEqual([{ labels: ['chatvisor'] }]);
    expect(fake.customers.get('cv-8')!.id).toBeUndefined();
  });
});

describe('profile read failures', () => {
  it('keep the conversation on the vendor-local contact, answer the webhook, and identify later', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'anna@example.org' });
    fake.fail({ path: '/customer/cv-1', status: 500 });
    const test = runtimeWith({ labels: ['{person}'] });
    expect(await test.webhook(fake.conversationPayload('cv-1'))).toEqual({
      body: { ok: true },
      event: 'conversation',
      outcome: 'ok',
    });
    await test.runtime.idle();
    const local = await test.context.contacts.findByIdentifier({
      kind: 'customer',
      value: 'cv-1',
      channelId: 'cobrowse',
    });
    expect(chatvisorTypes(await timeline(test, local!))).toEqual(['conversation.started']);
    expect(await test.context.contacts.find({ email: 'anna@example.org' })).toEqual([]);
    expect(await test.store.hget(storeKeys('cobrowse').profilePending, 'cv-1')).toContain('HTTP 500');
    expect(fake.tagRequests('cv-1')).toHaveLength(0);

    // The next event of that customer tries again.
    await test.webhook(fake.addMessage('cv-1', 'hello?'));
    await test.runtime.idle();
    const contact = await byEmail(test, 'anna@example.org');
    expect(contact.id).toBe((await byPerson(test, 'P-1001')).id);
    expect(chatvisorTypes(await timeline(test, contact))).toEqual([
      'conversation.started',
      'message.received',
    ]);
    expect(await test.store.hget(storeKeys('cobrowse').profilePending, 'cv-1')).toBeNull();
    expect(fake.tagRequests('cv-1')).toHaveLength(1);
  });

  it('are retried by the next poll even when the customer is quiet', async () => {
    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'anna@example.org' });
    fake.fail({ path: '/customer/cv-1', status: 503 });
    const test = runtimeWith({ backfillWindow: '0s' });
    await test.runtime.poller.run();
    await test.webhook(fake.conversationPayload('cv-1', {})); // status known: nothing new
    fake.setStatus('cv-1', 'UNRESOLVED');
    await test.webhook(fake.conversationPayload('cv-1'));
    await test.runtime.idle();
    expect(await test.context.contacts.find({ email: 'anna@example.org' })).toEqual([]);

    expect(await test.runtime.poller.run()).toMatchObject({ conversationEvents: 0, identified: 1 });
    const contact = await byEmail(test, 'anna@example.org');
    expect(chatvisorTypes(await timeline(test, contact))).toEqual(['conversation.updated']);
  });
});

describe('a process that dies while a first profile read is in flight', () => {
  it('leaves the customer for the next poll to identify', async () => {
    const store = createMemoryStore();
    const build = () =>
      buildRuntime({
        apiUrl: fake.apiUrl,
        apiToken: fake.token,
        // The read must still be in flight when the process "dies": no client timeout marks it.
        settings: { maxRetries: 0, backfillWindow: '0s', timeoutMs: 120_000 },
        now: clock.now,
        store,
      });
    const dying = build();
    await dying.runtime.poller.run(); // the first run, with no customer yet

    fake.addCustomer({ customerId: 'cv-1', id: 'P-1001', email: 'anna@example.org' });
    let release = () => {};
    fake.fail({ path: '/customer/cv-1', until: new Promise<void>((resolve) => (release = resolve)) });
    try {
      await dying.webhook(fake.conversationPayload('cv-1'));
      await expect
        .poll(() => fake.calls().includes('GET /customer/cv-1'), { timeout: 20_000, interval: 20 })
        .toBe(true);

      // The process dies here (no close): a new one starts on the same store and polls. The
      // conversation's status is recorded already, so only a pending mark makes it read the profile.
      const next = build();
      expect(await next.runtime.poller.run()).toMatchObject({ conversationEvents: 0, identified: 1 });
      const contact = await byEmail(next, 'anna@example.org');
      expect(contact.id).toBe((await byPerson(next, 'P-1001')).id);
      expect(await store.hget(storeKeys('cobrowse').profilePending, 'cv-1')).toBeNull();
    } finally {
      release();
    }
  });
});

describe('first poll backfill', () => {
  function seedHistory() {
    // Changed an hour ago: an old message (3 days ago) and a recent one.
    fake.addCustomer({ customerId: 'recent', id: 'P-1', email: 'recent@example.org' });
    fake.addMessage('recent', 'three days ago', 'CUSTOMER', new Date(T0 - 72 * HOUR));
    fake.addMessage('recent', 'an hour ago', 'CUSTOMER', new Date(T0 - HOUR));
    // Finished two hours ago.
    fake.addCustomer({ customerId: 'done', email: 'done@example.org' });
    fake.addMessage('done', 'thanks, bye', 'CUSTOMER', new Date(T0 - 3 * HOUR));
    fake.addMessage('done', 'you are welcome', 'AGENT', new Date(T0 - 2 * HOUR));
    fake.setStatus('done', 'DONE');
    fake.customers.get('done')!.updatedAt = new Date(T0 - 2 * HOUR).toISOString();
    // Last changed three days ago: outside the default window.
    fake.addCustomer({ customerId: 'old', status: 'UNRESOLVED', email: 'old@example.org' });
    fake.addMessage('old', 'ancient question', 'CUSTOMER', new Date(T0 - 72 * HOUR));
  }

  it('replays what changed within 24 h, records older conversations without events, then goes on incrementally', async () => {
    seedHistory();
    const test = runtimeWith();
    const first = await test.runtime.poller.run();
    expect(first).toMatchObject({
      baseline: true,
      seeded: 1,
      conversationEvents: 2,
      messageEvents: 2,
      backfill: {
        windowMs: 24 * HOUR,
        since: expect.stringMatching(/^2024-05-13T09:00:00\.\d{3}Z$/),
        conversations: 2,
        messages: 2,
        olderThanWindow: 1,
        unknownAge: 0,
      },
      failed: [],
    });
    const recent = await byEmail(test, 'recent@example.org');
    const recentEntries = await timeline(test, recent);
    expect(chatvisorTypes(recentEntries)).toEqual(['conversation.started', 'message.received']);
    expect(recentEntries.find((entry) => entry.type === 'message.received')!.data.text).toBe('an hour ago');
    const done = await timeline(test, await byEmail(test, 'done@example.org'));
    expect(chatvisorTypes(done)).toEqual(['conversation.finished', 'message.received']);
    const finished = done.find((entry) => entry.type === 'conversation.finished')!;
    expect(finished.at).toBe(new Date(T0 - 2 * HOUR).toISOString());
    expect(finished.data.messages).toHaveLength(2);
    // The old conversation is not replayed (and its customer not even read).
    expect(await test.context.contacts.find({ email: 'old@example.org' })).toEqual([]);
    expect(fake.profileReads('old')).toBe(0);

    const metrics = await test.context.metrics.registry.metrics();
    expect(metrics).toContain(
      'chatbridge_chatvisor_first_poll_total{channel="cobrowse",kind="conversation"} 2',
    );
    expect(metrics).toContain('chatbridge_chatvisor_first_poll_total{channel="cobrowse",kind="message"} 2');
    expect(metrics).toContain('chatbridge_chatvisor_first_poll_total{channel="cobrowse",kind="older"} 1');

    // Nothing is replayed twice; what happens next is picked up incrementally.
    expect(await test.runtime.poller.run()).toMatchObject({
      baseline: false,
      backfill: null,
      conversationEvents: 0,
      messageEvents: 0,
    });
    fake.addMessage('old', 'back again', 'CUSTOMER', new Date(T0));
    expect(await test.runtime.poller.run()).toMatchObject({ messageEvents: 1, conversationEvents: 0 });
    const old = await timeline(test, await byEmail(test, 'old@example.org'));
    expect(old.map((entry) => entry.data.text)).toEqual(['back again']);
  });

  it('takes its window from the channel setting, and dates conversations by their newest message when the listing does not', async () => {
    seedHistory();
    fake.addCustomer({ customerId: 'silent', updatedAt: new Date(T0 - HOUR).toISOString() });
    fake.reportUpdatedAt = false;
    const test = runtimeWith({ backfillWindow: '7d' });
    const first = await test.runtime.poller.run();
    expect(first.backfill).toMatchObject({
      windowMs: 7 * 24 * HOUR,
      conversations: 3,
      messages: 4,
      olderThanWindow: 0,
      // No updatedAt and no message: nothing says when it changed.
      unknownAge: 1,
    });
    expect(first.seeded).toBe(1);
    expect(chatvisorTypes(await timeline(test, await byEmail(test, 'old@example.org')))).toEqual([
      'conversation.started',
      'message.received',
    ]);
  });

  it('replays nothing with backfillWindow 0s', async () => {
    seedHistory();
    const test = runtimeWith({ backfillWindow: '0s' });
    expect(await test.runtime.poller.run()).toMatchObject({
      seeded: 3,
      conversationEvents: 0,
      backfill: { windowMs: 0, conversations: 0, messages: 0 },
    });
  });
});
