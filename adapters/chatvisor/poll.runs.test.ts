import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { TimelineEntry } from '../../src/contacts/types.js';
import { UNREADABLE_JOURNALLED_PER_RUN } from './poll.js';
import { readEnded } from './state.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';

/**
 * What a conversation poll run reports and keeps when the run, or what Chatvisor hands it, does
 * not go to plan: runs stopped half way, listings that wrap around or repeat a customer, items
 * that cannot be read, failed runs, vendor error text.
 */
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
  fake.extraListed = [];
  fake.wrapListings = false;
  fake.now = () => new Date();
});

function tickingClock(): () => Date {
  let tick = Date.parse('2024-05-14T09:00:00.000Z');
  return () => new Date(tick++);
}

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
  return [...page.entries].sort((a, b) => a.at.localeCompare(b.at) || a.id.localeCompare(b.id));
}

async function until(check: () => boolean): Promise<void> {
  await expect.poll(check, { timeout: 20_000, interval: 20 }).toBe(true);
}

describe('a run stopped half way', () => {
  it('has written where a finished conversation ends as soon as it recorded the finish', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1', status: 'UNRESOLVED', email: 'ann@example.org' });
    fake.addMessage('c1', 'Where is my parcel?');
    fake.addMessage('c1', 'On its way', 'AGENT');
    await test.runtime.poller.run(); // the first run records c1 as it stands (no profile read)
    fake.setStatus('c1', 'DONE');

    // The run records the finish, then reads the profile: shutdown's grace runs out there.
    let release: (value?: unknown) => void = () => undefined;
    fake.fail({ method: 'GET', path: '/customer/c1', until: new Promise((resolve) => (release = resolve)) });
    const stop = new AbortController();
    const stopped = test.runtime.poller.run(stop.signal);
    await until(() => fake.calls().includes('GET /customer/c1'));
    stop.abort(new Error('shutting down'));
    await expect(stopped).rejects.toThrow();
    release();
    expect((await timelineOf(test, 'c1')).map((entry) => entry.type)).toContain('conversation.finished');
    expect(await readEnded(test.store, 'cobrowse', 'c1')).not.toBeNull();

    // Nothing new for the next run to see in c1, so only that mark keeps the conversations apart.
    await test.runtime.poller.run();
    fake.addMessage('c1', 'Can I change the address?');
    fake.setStatus('c1', 'UNREAD');
    await test.runtime.poller.run();
    fake.addMessage('c1', 'Changed', 'AGENT');
    fake.setStatus('c1', 'DONE');
    await test.runtime.poller.run();
    const finished = (await timelineOf(test, 'c1')).filter((entry) => entry.type === 'conversation.finished');
    expect(finished).toHaveLength(2);
    expect((finished[1]!.data.messages as { text: string }[]).map((message) => message.text)).toEqual([
      'Can I change the address?',
      'Changed',
    ]);
    expect(finished[1]?.data.conversationId).not.toBe(finished[0]?.data.conversationId);
  });
});

describe('listings that do not end as they should', () => {
  it('stops when the listing wraps around to its first page, handles each customer once, and takes it as read to its end', async () => {
    for (const id of ['c1', 'c2', 'c3', 'c4', 'c5']) fake.addCustomer({ customerId: id });
    fake.wrapListings = true;
    const test = runtimeWith({ pageSize: 2 });
    await test.runtime.poller.run();
    for (const id of ['c1', 'c2', 'c3', 'c4']) fake.addMessage(id, `hello from ${id}`);
    // A customer with state that Chatvisor no longer lists; the other four fill two pages.
    fake.customers.delete('c5');
    fake.resetLog();

    const report = await test.runtime.poller.run();
    // The first page again, after every page before it came full: the listing was read to its
    // end (a vendor that wraps never answers a short or empty last page when the customers fill
    // whole pages). It was cut off as listing_wrapped, so "not listed" was never looked at.
    expect(report).toMatchObject({
      pages: 3,
      conversationsSeen: 4,
      messageEvents: 4,
      cutOff: null,
      forgotten: 0,
    });
    expect(fake.calls().filter((call) => call === 'GET /conversation')).toHaveLength(3);
    expect(Object.keys(await test.store.hgetall('chatvisor:cobrowse:poll:unlisted'))).toEqual(['c5']);
  }, 30_000);

  it('a later page of customers listed already that is not the first page again still cuts the listing off', async () => {
    for (const id of ['c1', 'c2', 'c3', 'c4']) fake.addCustomer({ customerId: id });
    const test = runtimeWith({ pageSize: 2 });
    await test.runtime.poller.run();
    // The listing shifted while the run paged: the third page shows c2 and c1 again (not the
    // first page as it was), and there may be more after it. Nothing says the end was reached.
    fake.extraListed = [fake.conversationPayload('c2'), fake.conversationPayload('c1')];
    expect(await test.runtime.poller.run()).toMatchObject({
      pages: 3,
      cutOff: { reason: 'listing_wrapped', afterPages: 2 },
      forgotten: null,
    });
  }, 30_000);

  it('a last, short page of customers listed already ends the listing: not cut off, nothing handled twice', async () => {
    for (const id of ['c1', 'c2']) fake.addCustomer({ customerId: id });
    const test = runtimeWith({ pageSize: 2 });
    await test.runtime.poller.run();
    fake.addMessage('c2', 'hello');
    // The listing shifted while the run paged: c2 again, alone on the last page.
    fake.extraListed = [fake.conversationPayload('c2')];
    expect(await test.runtime.poller.run()).toMatchObject({
      pages: 2,
      repeated: 1,
      messageEvents: 1,
      cutOff: null,
    });
  });

  it('says so when the vendor hands back the same page again', async () => {
    fake.addCustomer({ customerId: 'c1' });
    fake.addCustomer({ customerId: 'c2' });
    const page = { page: 0, results: [fake.conversationPayload('c1'), fake.conversationPayload('c2')] };
    fake.fail({ method: 'GET', path: '/conversation', status: 200, body: page, times: 2 });
    const test = runtimeWith({ pageSize: 2 });
    expect(await test.runtime.poller.run()).toMatchObject({
      pages: 2,
      conversationsSeen: 2,
      cutOff: { reason: 'page_repeated', afterPages: 1 },
    });
    // A listing read to its end has no cut-off.
    expect(await test.runtime.poller.run()).toMatchObject({ cutOff: null });
  });

  it('handles a customer listed twice in one run once: one event, one message read, one label push', async () => {
    const test = runtimeWith({ labels: ['vip'] });
    fake.addCustomer({ customerId: 'c1', email: 'ann@example.org' });
    await test.runtime.poller.run();
    fake.addMessage('c1', 'Hello?');
    fake.setStatus('c1', 'DONE');
    // The listing shifted while the run paged: c1 comes again at the end.
    fake.extraListed = [fake.conversationPayload('c1')];
    fake.resetLog();

    const report = await test.runtime.poller.run();
    expect(report).toMatchObject({
      conversationsSeen: 2,
      repeated: 1,
      conversationEvents: 1,
      messageEvents: 1,
    });
    expect(fake.calls().filter((call) => call === 'GET /customer/c1/message')).toHaveLength(1);
    expect(fake.tagRequests('c1')).toHaveLength(1);
    expect(
      (await timelineOf(test, 'c1')).filter((entry) => entry.type === 'conversation.finished'),
    ).toHaveLength(1);
  });

  it('counts listed items and messages it cannot read as unreadable', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1' });
    await test.runtime.poller.run();
    fake.addMessage('c1', 'readable');
    fake.extraListed = [{ status: 'DONE' }, 'not an object'];
    const messages = {
      page: 0,
      results: [...(fake.messages.get('c1') ?? []), { text: 'no id, no customer' }],
    };
    fake.fail({ method: 'GET', path: '/customer/c1/message', status: 200, body: messages });
    expect(await test.runtime.poller.run()).toMatchObject({
      conversationsSeen: 1,
      messageEvents: 1,
      unreadable: 3,
      forgotten: null,
    });

    // Dropped from the run, not lost: each is in the payload journal with what was wrong with it.
    const { entries } = await test.context.journal.list({ limit: 50, channelId: 'cobrowse' });
    expect(entries).toHaveLength(3);
    expect(entries.every((entry) => entry.kind === 'rejected' && entry.vendor === 'chatvisor')).toBe(true);
    const byBody = new Map(entries.map((entry) => [entry.body, entry.reason]));
    expect(byBody.get('{"status":"DONE"}')).toMatch(
      /GET \/conversation page 0 could not be read \(customerId: /,
    );
    expect(byBody.get('"not an object"')).toMatch(/GET \/conversation page 0 could not be read/);
    expect(byBody.get('{"text":"no id, no customer"}')).toMatch(
      /GET \/customer\/c1\/message page 0 could not be read/,
    );
  });

  it('journals at most UNREADABLE_JOURNALLED_PER_RUN unreadable items a run, and counts them all', async () => {
    const test = runtimeWith({ pageSize: 100 });
    fake.addCustomer({ customerId: 'c1' });
    fake.extraListed = Array.from({ length: UNREADABLE_JOURNALLED_PER_RUN + 5 }, (_, at) => ({ junk: at }));
    expect(await test.runtime.poller.run()).toMatchObject({ unreadable: UNREADABLE_JOURNALLED_PER_RUN + 5 });
    const first = await test.context.journal.list({ limit: 500, channelId: 'cobrowse' });
    expect(first.entries).toHaveLength(UNREADABLE_JOURNALLED_PER_RUN);
    // The same items listed by the next runs are not journalled again: every run lists the whole
    // listing, and journalling them each time filled the channel's ring within minutes, pushing
    // out the webhooks it had rejected. Still counted in each report.
    expect(await test.runtime.poller.run()).toMatchObject({ unreadable: UNREADABLE_JOURNALLED_PER_RUN + 5 });
    expect(await test.runtime.poller.run()).toMatchObject({ unreadable: UNREADABLE_JOURNALLED_PER_RUN + 5 });
    const again = await test.context.journal.list({ limit: 500, channelId: 'cobrowse' });
    expect(again.entries).toHaveLength(UNREADABLE_JOURNALLED_PER_RUN);
    // One not listed before is.
    fake.extraListed = [...fake.extraListed, { junk: 'new' }];
    await test.runtime.poller.run();
    const after = await test.context.journal.list({ limit: 500, channelId: 'cobrowse' });
    expect(after.entries).toHaveLength(UNREADABLE_JOURNALLED_PER_RUN + 1);
    expect(after.entries[0]!.body).toBe('{"junk":"new"}');
  });
});

describe('failed runs', () => {
  it('are kept with the reports, with why they failed', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1' });
    await test.runtime.poller.run();
    fake.fail({ method: 'GET', path: '/conversation', status: 503 });
    await expect(test.runtime.poller.run()).rejects.toMatchObject({ code: 'chatvisor_unavailable' });

    const { recent } = await test.runtime.poller.reports(10);
    expect(recent).toHaveLength(2);
    expect(recent[0]).toMatchObject({ pages: 0, error: expect.stringContaining('503') });
    expect(recent[0]?.finishedAt).not.toBe('');
    expect(recent[1]).not.toHaveProperty('error');
  });

  it('keep control characters from Chatvisor error text out of reports and logs', async () => {
    const test = runtimeWith();
    fake.addCustomer({ customerId: 'c1' });
    await test.runtime.poller.run();
    fake.addMessage('c1', 'hello');
    const detail = 'bad\u001b[2J\u001b[31m request\u0007\u0000 \u202Edetcejer';
    fake.fail({ method: 'GET', path: '/customer/c1/message', status: 400, body: { message: detail } });
    const report = await test.runtime.poller.run();
    expect(report.failed).toHaveLength(1);
    const reason = report.failed[0]?.reason ?? '';
    expect(reason).toContain('bad[2J[31m request detcejer');
    expect(reason).not.toMatch(/[\p{Cc}\u202A-\u202E]/u);

    fake.fail({ method: 'GET', path: '/conversation', status: 400, body: { message: detail } });
    await expect(test.runtime.poller.run()).rejects.toMatchObject({ code: 'chatvisor_rejected' });
    const [failed] = (await test.runtime.poller.reports(1)).recent;
    expect(failed?.error).toContain('bad[2J[31m request detcejer');
    expect(failed?.error).not.toMatch(/[\p{Cc}\u202A-\u202E]/u);
    // pino writes JSON: a control character would show as its \u escape.
    expect(test.logLines.join('\n')).not.toMatch(/\\u001b|\\u0007|\\u0000|\u202E/);
  });
});
