import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../src/errors.js';
import { renderLabels } from './labels.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';

const fixture = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8'));

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
  fake.clearFailures();
  fake.resetLog();
});

function runtimeWith(settings: Record<string, unknown> = {}): TestRuntime {
  return buildRuntime({
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    settings: { maxRetries: 0, ...settings },
  });
}

async function timeline(test: TestRuntime, customerId: string) {
  const contact = await test.context.contacts.findByIdentifier({
    kind: 'customer',
    value: customerId,
    channelId: 'cobrowse',
  });
  return contact ? (await test.context.contacts.timeline(contact.id, { limit: 100 })).entries : [];
}

describe('Chatvisor webhooks', () => {
  it('turns a new-conversation body into conversation.started, once, and links the profile afterwards', async () => {
    fake.addCustomer({
      customerId: 'cv-cust-5521',
      email: 'anna@example.org',
      id: 'P-1001',
      firstname: 'Anna',
    });
    const test = runtimeWith();
    const answer = await test.webhook(fixture('webhook-conversation-new.json'));
    expect(answer).toEqual({ body: { ok: true }, event: 'conversation', outcome: 'ok' });
    const repeated = await test.webhook(fixture('webhook-conversation-new.json'));
    expect(repeated).toMatchObject({ body: { ok: true }, outcome: 'duplicate' });
    await test.runtime.idle();

    const entries = await timeline(test, 'cv-cust-5521');
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      type: 'conversation.started',
      vendor: 'chatvisor',
      channelId: 'cobrowse',
      data: {
        customerId: 'cv-cust-5521',
        status: 'UNREAD',
        lastMessage: 'Hello, is my order 7781 shipped yet?',
      },
    });
    expect(fake.calls()).toEqual(['GET /customer/cv-cust-5521']);
    const linked = await test.context.contacts.findByIdentifier({ kind: 'person', value: 'P-1001' });
    expect(linked).toMatchObject({ emails: ['anna@example.org'], name: 'Anna' });
    const events = (await test.outbox()).map((entry) => entry.event.type);
    expect(events.filter((type) => type === 'conversation.started')).toHaveLength(1);
  });

  it('reads the documented misspelling lastMessage.test', async () => {
    const test = runtimeWith();
    await test.webhook(fixture('webhook-conversation-new.json'));
    await test.webhook(fixture('webhook-conversation-status-misspelt.json'));
    await test.runtime.idle();
    const [finished] = await timeline(test, 'cv-cust-5521');
    expect(finished).toMatchObject({
      type: 'conversation.finished',
      data: { status: 'DONE', lastMessage: 'Thanks, that helps!', previousStatus: 'UNREAD' },
    });
  });

  it('turns a Message body into message.received, once; agents’ messages are not received messages', async () => {
    const test = runtimeWith();
    expect(await test.webhook(fixture('webhook-message.json'))).toMatchObject({
      event: 'message',
      outcome: 'ok',
    });
    expect(await test.webhook(fixture('webhook-message.json'))).toMatchObject({ outcome: 'duplicate' });
    await test.webhook({ ...fixture('webhook-message.json'), id: 'msg-90413', sender: 'AGENT' });
    const entries = await timeline(test, 'cv-cust-5521');
    expect(entries.map((entry) => entry.type)).toEqual(['message.received']);
    expect(entries[0]!.data).toMatchObject({
      messageId: 'msg-90412',
      text: 'Can I change the delivery address?',
    });
    expect(entries[0]!.at).toBe('2024-05-14T09:31:12.418Z');
  });

  it('records events with long customer, status and message ids, or a time past the year 9999, instead of a 400', async () => {
    const test = runtimeWith();
    const customerId = `c${'x'.repeat(479)}`;
    const conversation = { customerId, status: `UNREAD${'Y'.repeat(474)}`, lastMessage: 'hi' };
    expect(await test.webhook(conversation)).toMatchObject({ event: 'conversation', outcome: 'ok' });
    const message = {
      id: `m${'z'.repeat(479)}`,
      customerId,
      text: 'Can I change the delivery address?',
      sender: 'CUSTOMER',
      createdAt: '10000-01-01',
    };
    expect(await test.webhook(message)).toMatchObject({ event: 'message', outcome: 'ok' });
    // The same delivery again is a repeat.
    expect(await test.webhook(message)).toMatchObject({ event: 'message', outcome: 'duplicate' });
    await test.runtime.idle();
    const entries = await timeline(test, customerId);
    expect(entries.map((entry) => entry.type).sort()).toEqual(['conversation.started', 'message.received']);
    const received = entries.find((entry) => entry.type === 'message.received');
    // The unreadable time is dropped: the message is dated by its arrival.
    expect(received?.at).toMatch(/^\d{4}-\d\d-\d\dT/);
    // A customer id longer than 512 is no id: the body is kept as unhandled, answered ok.
    expect(await test.webhook({ ...conversation, customerId: 'c'.repeat(513) })).toMatchObject({
      body: { ok: true },
      outcome: 'unhandled',
    });
  });

  it('refuses a body that is not JSON with a 400 error', async () => {
    const test = runtimeWith();
    await expect(test.webhook('{"customerId": ')).rejects.toBeInstanceOf(BadRequestError);
  });

  it('keeps a body of unknown shape in the journal and answers ok', async () => {
    const test = runtimeWith();
    const answer = await test.webhook(fixture('webhook-new-subscriber.json'));
    expect(answer).toEqual({ body: { ok: true }, event: 'unknown', outcome: 'unhandled' });
    const [entry] = (await test.context.journal.list({ limit: 5 })).entries;
    expect(entry).toMatchObject({ kind: 'unhandled', channelId: 'cobrowse', vendor: 'chatvisor' });
    expect(JSON.parse(entry!.body)).toEqual(fixture('webhook-new-subscriber.json'));
    expect(await test.outbox()).toEqual([]);
  });

  it('answers without waiting for Chatvisor: the profile is read afterwards', async () => {
    fake.addCustomer({ customerId: 'cv-cust-5521', email: 'anna@example.org' });
    // The profile read is held until the test releases it: the answer cannot have waited for it.
    let release!: () => void;
    fake.fail({ path: '/customer/cv-cust-5521', until: new Promise<void>((resolve) => (release = resolve)) });
    const test = runtimeWith();
    expect(await test.webhook(fixture('webhook-conversation-new.json'))).toMatchObject({
      body: { ok: true },
      outcome: 'ok',
    });
    expect(
      await test.context.contacts.findByIdentifier({ kind: 'email', value: 'anna@example.org' }),
    ).toBeNull();
    release();
    await test.runtime.idle();
    expect(
      await test.context.contacts.findByIdentifier({ kind: 'email', value: 'anna@example.org' }),
    ).not.toBeNull();
  });

  it('a flood of new customers runs at most backgroundTasks profile reads; the rest are read on their next event', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Every profile read hangs until the test lets go: background work piles up.
    fake.fail({ method: 'GET', path: /^\/customer\//, until: gate, times: 1000 });
    for (let index = 0; index < 12; index++)
      fake.addCustomer({
        customerId: `cv-flood-${index}`,
        id: `P-flood-${index}`,
        email: `flood${index}@example.org`,
      });
    const test = runtimeWith({ backgroundTasks: 3 });
    for (let index = 0; index < 12; index++) {
      const answer = await test.webhook({
        customerId: `cv-flood-${index}`,
        status: 'UNREAD',
        lastMessage: 'hi',
      });
      expect(answer).toMatchObject({ body: { ok: true }, outcome: 'ok' });
    }
    // The 9 not started, and the 3 whose first read is in flight (until it ends: a process that
    // died now would leave them to the next poll).
    expect((await test.runtime.profiles.pending()).size).toBe(12);
    expect(test.runtime.state.background.running).toBe(3);
    const metrics = await test.context.metrics.registry.metrics();
    expect(metrics).toMatch(/chatbridge_chatvisor_background_dropped_total\{channel="cobrowse"\} 9/);
    // Nothing is lost: every event is on its customer's vendor-local contact already.
    expect((await timeline(test, 'cv-flood-11')).map((entry) => entry.type)).toEqual([
      'conversation.started',
    ]);

    release();
    await test.runtime.idle();
    expect(
      await test.context.contacts.findByIdentifier({ kind: 'person', value: 'P-flood-0' }),
    ).not.toBeNull();
    expect((await test.runtime.profiles.pending()).size).toBe(9);
    expect(await test.context.contacts.findByIdentifier({ kind: 'person', value: 'P-flood-11' })).toBeNull();
    // The next event of a customer left pending reads its profile.
    await test.webhook({
      id: 'msg-flood-11',
      customerId: 'cv-flood-11',
      text: 'still there?',
      sender: 'CUSTOMER',
    });
    await test.runtime.idle();
    expect(
      await test.context.contacts.findByIdentifier({ kind: 'person', value: 'P-flood-11' }),
    ).toMatchObject({
      emails: ['flood11@example.org'],
    });
    expect(await test.runtime.profiles.isPending('cv-flood-11')).toBe(false);
  });

  it('shutdown waits for background work only for its grace, and keeps the unfinished work as pending', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Chatvisor never answers the profile reads while the channel closes.
    fake.fail({ method: 'GET', path: /^\/customer\//, until: gate, times: 1000 });
    const test = runtimeWith();
    for (const customerId of ['cv-close-1', 'cv-close-2']) {
      fake.addCustomer({ customerId, id: `P-${customerId}`, email: `${customerId}@example.org` });
      await test.webhook({ customerId, status: 'UNREAD', lastMessage: 'hi' });
    }
    expect(test.runtime.state.background.running).toBe(2);
    try {
      // Before the fix close() waited for the reads, which here never end.
      await test.runtime.close?.(50);
      expect([...(await test.runtime.profiles.pending())].sort()).toEqual(['cv-close-1', 'cv-close-2']);
      expect(test.logLines.join('\n')).toContain('chatvisor background work still running at shutdown');
      // A webhook after close starts no new work: its customer is kept for later too.
      await test.webhook({ customerId: 'cv-close-3', status: 'UNREAD', lastMessage: 'hi' });
      expect(test.runtime.state.background.running).toBe(2);
      expect(await test.runtime.profiles.isPending('cv-close-3')).toBe(true);
    } finally {
      release();
      await test.runtime.idle();
    }
  });
});

describe('customer labels', () => {
  const contactBase = {
    id: 'k1',
    name: 'Anna Example',
    names: ['Anna Example'],
    emails: ['anna@example.org'],
    phones: ['+79990001122'],
    identities: [{ kind: 'person', value: 'P-1001' }],
    labels: [],
    attributes: {
      segment: { value: 'vip', channelId: 'shop-site', at: '2024-05-14T09:00:00.000Z' },
      score: { value: 7, channelId: 'shop-site', at: '2024-05-14T09:00:00.000Z' },
    },
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: ['k1'],
    merges: [],
    createdAt: '2024-05-14T09:00:00.000Z',
    updatedAt: '2024-05-14T09:00:00.000Z',
  };

  it('renders templates, skipping those whose placeholder has no value', () => {
    expect(
      renderLabels(
        [
          '{person}',
          'segment:{attributes.segment}',
          'score-{attributes.score}',
          'tier:{attributes.tier}',
          'static',
          '{person}',
        ],
        contactBase,
      ),
    ).toEqual(['P-1001', 'score-7', 'segment:vip', 'static']);
    expect(
      renderLabels(['{person}', '{email}|{phone}'], { ...contactBase, identities: [], phones: [] }),
    ).toEqual([]);
  });

  it('pushes the labels once the customer is linked, and only when they change', async () => {
    fake.addCustomer({ customerId: 'c1', email: 'anna@example.org' });
    const test = runtimeWith({ labels: ['{person}', 'segment:{attributes.segment}'] });
    // The company knows Anna from another channel: her person id and segment.
    await test.context.contacts.observe({
      channelId: 'shop-site',
      vendor: 'jivochat',
      at: '2024-05-14T08:00:00.000Z',
      idempotencyKey: 'seed-1',
      identifiers: [
        { kind: 'person', value: 'P-1001' },
        { kind: 'email', value: 'anna@example.org' },
      ],
      attributes: { segment: { value: 'vip' } },
    });

    fake.addMessage('c1', 'hello');
    await test.webhook(fake.conversationPayload('c1'));
    await test.runtime.idle();
    const tags = () => fake.requests.filter((request) => request.path === '/customer/c1/tag');
    expect(tags()).toHaveLength(1);
    expect(tags()[0]).toMatchObject({
      method: 'POST',
      body: { id: 'P-1001', labels: ['P-1001', 'segment:vip'] },
    });
    expect(tags()[0]!.headers.authorization).toBe(`Bearer ${fake.token}`);
    expect(fake.customers.get('c1')!.labels).toEqual(['P-1001', 'segment:vip']);

    // Same contact, same labels: no call.
    fake.setStatus('c1', 'UNRESOLVED');
    await test.webhook(fake.conversationPayload('c1'));
    await test.runtime.idle();
    expect(tags()).toHaveLength(1);

    // The segment changes elsewhere; the next Chatvisor event pushes the new set.
    await test.context.contacts.observe({
      channelId: 'shop-site',
      vendor: 'jivochat',
      at: '2024-05-14T10:00:00.000Z',
      idempotencyKey: 'seed-2',
      identifiers: [{ kind: 'person', value: 'P-1001' }],
      attributes: { segment: { value: 'gold' } },
    });
    await test.webhook(fake.addMessage('c1', 'one more thing'));
    await test.runtime.idle();
    expect(tags()).toHaveLength(2);
    expect(tags()[1]!.body).toEqual({ id: 'P-1001', labels: ['P-1001', 'segment:gold'] });
  });

  it('pushes nothing for a customer known only by its Chatvisor id, and retries a failed push next time', async () => {
    fake.addCustomer({ customerId: 'c2' });
    const test = runtimeWith({ labels: ['{email}', 'chatvisor'] });
    await test.webhook(fake.conversationPayload('c2'));
    await test.runtime.idle();
    // The profile says nothing about who the customer is: nothing to label.
    expect(fake.calls()).toEqual(['GET /customer/c2']);

    fake.addCustomer({ customerId: 'c3', id: 'P-3', email: 'linked@example.org' });
    fake.fail({ path: '/customer/c3/tag', status: 500 });
    await test.webhook(fake.conversationPayload('c3'));
    await test.runtime.idle();
    await test.webhook(fake.addMessage('c3', 'are you there?'));
    await test.runtime.idle();
    const tags = fake.requests.filter((request) => request.path === '/customer/c3/tag');
    expect(tags.map((request) => request.body)).toEqual([
      { id: 'P-3', labels: ['chatvisor', 'linked@example.org'] },
      { id: 'P-3', labels: ['chatvisor', 'linked@example.org'] },
    ]);
    expect(fake.customers.get('c3')!.labels).toEqual(['chatvisor', 'linked@example.org']);
  });
});
