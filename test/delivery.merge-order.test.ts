import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type ApplicationEvent, type Receiver, startReceiver } from './support/receiver.js';

/**
 * A merge is a line in each destination's stream of a person's events: what was recorded about
 * either contact before it reaches the CRM before `contact.merged`, and what is recorded after
 * it (under the survivor's id) after. The absorbed contact's deliveries used to keep their own
 * lane: while they were pending (the receiver failing, slow, or the destination paused), the
 * survivor's lane went on, and the CRM got `contact.merged` and the merged person's next
 * messages before the absorbed contact's own earlier events — which then named a contact id the
 * CRM had just been told no longer exists. The same after an unmerge: the split-off contact's
 * `contact.created` (and its events after it) came before the events of the merged contact
 * recorded before the split.
 *
 * End to end: a real bridge on Redis (BullMQ) and on the in-memory store, the contact engine
 * (a chat naming both contacts), the admin API's merge and unmerge, and the stateful receiver,
 * which fails the absorbed contact's deliveries until the later events exist and have had their
 * chance to overtake; then the order the receiver's application got is checked.
 */

const SECRET = `whsec_${Buffer.from('merge-order-secret-0123456789abcd').toString('base64')}`;
/** Each test takes a second or two; its waits add up to more on a loaded machine. */
const TEST_TIMEOUT_MS = 60_000;

describe.each(['redis', 'memory'] as const)('delivery order across a merge (%s store)', (store) => {
  let receiver: Receiver;
  /** A second destination that takes messages only: it gets no contact.merged to wait behind. */
  let messagesOnly: Receiver;
  let bridge: TestBridge;
  let seq = 0;
  /** Requests of these contacts (by the contact's id in the body, or an e-mail of it) fail with 503. */
  const failing = { ids: new Set<string>(), emails: new Set<string>() };

  const fails = (payload: unknown) => {
    const contact = (payload as { contact?: Contact | null } | undefined)?.contact;
    if (!contact) return false;
    if (failing.ids.has(contact.id)) return true;
    // Only a contact that is this e-mail alone (before a merge gave it another record).
    return contact.records.length === 1 && contact.emails.some((email) => failing.emails.has(email));
  };

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
    messagesOnly = await startReceiver({ secret: SECRET });
    for (const each of [receiver, messagesOnly])
      each.respond((request) => (fails(request.payload) ? { kind: 'status', status: 503 } : { kind: 'ok' }));
    const destination = {
      secret: SECRET,
      // Retried every 200 ms for as long as any test needs (60 tries); the breaker stays shut.
      retrySchedule: ['0s', ...Array.from({ length: 60 }, () => '200ms')],
      timeoutMs: 2000,
      circuitBreaker: { failureThreshold: 10_000, cooldown: '1s' },
    };
    bridge = await startTestBridge({
      store,
      config: {
        channels: [{ id: 'web', vendor: 'jivochat', token: 'merge-order-token-0123456789' }],
        destinations: [
          { id: 'crm', url: receiver.url, ...destination },
          { id: 'messages', url: messagesOnly.url, events: ['message.received'], ...destination },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await receiver?.close();
    await messagesOnly?.close();
  });

  /** An observation (through the contact engine, as an adapter's) with these e-mails and messages. */
  async function seen(emails: string[], messages: string[] = []): Promise<Contact> {
    seq += 1;
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: new Date(Date.UTC(2026, 10, 1, 10, 0, seq)).toISOString(),
      idempotencyKey: `merge-order-${store}-${seq}`,
      identifiers: emails.map((value) => ({ kind: 'email', value })),
      events: messages.map((text, index) => ({
        type: 'message.received',
        key: `m${index}`,
        data: { text },
      })),
    });
    return contact;
  }

  /** Failed attempts so far (503s). */
  const failedAttempts = () => receiver.requests.filter((request) => request.answered === 503).length;

  /** Let the failing contact's deliveries be retried a few times more: the rest had their chance to overtake. */
  async function retriedMore(times: number) {
    const from = failedAttempts();
    await receiver.waitFor(() => failedAttempts() >= from + times, 15_000, `${times} more failed attempts`);
  }

  const text = (event: ApplicationEvent) => event.payload.data.text as string | undefined;
  /** Wait until both receivers' applications have a message with each of these texts. */
  const allDelivered = async (
    texts: string[],
    also: (events: ApplicationEvent[]) => boolean = () => true,
  ) => {
    const hasAll = (events: ApplicationEvent[]) => {
      const got = new Set(events.map(text));
      return texts.every((wanted) => got.has(wanted));
    };
    await receiver.waitFor(
      () => hasAll(receiver.application) && also(receiver.application),
      15_000,
      'everything delivered',
    );
    await messagesOnly.waitFor(() => hasAll(messagesOnly.application), 15_000, 'every message delivered');
  };
  /** The texts of the messages a receiver got, in the order it got them. */
  const texts = (events: ApplicationEvent[]) =>
    events.map(text).filter((value): value is string => value !== undefined);
  const indexOf = (events: ApplicationEvent[], check: (event: ApplicationEvent) => boolean) => {
    const index = events.findIndex(check);
    expect(index, 'event not delivered').toBeGreaterThanOrEqual(0);
    return index;
  };

  it(
    'delivers the absorbed contact’s pending events before contact.merged, and the survivor’s later events after it (a chat merges them)',
    async () => {
      const a = `anna.${store}@merge-order.example`;
      const b = `boris.${store}@merge-order.example`;
      const anna = await seen([a], ['anna 1']);
      await receiver.waitFor(
        () => receiver.application.some((event) => text(event) === 'anna 1'),
        10_000,
        "anna's first message",
      );

      failing.emails.add(b);
      const boris = await seen([b], ['boris 1', 'boris 2']);
      await retriedMore(2);
      // A chat names both: one person now, Anna (the older) surviving.
      const merged = await seen([a, b], ['both 1']);
      expect(merged.id).toBe(anna.id);
      expect(merged.records).toEqual([anna.id, boris.id]);
      await seen([a], ['anna 2']);
      await retriedMore(3);
      failing.emails.delete(b);

      await allDelivered(['boris 1', 'boris 2', 'both 1', 'anna 2']);
      const events = receiver.application;
      const merge = indexOf(events, (event) => event.payload.type === 'contact.merged');
      expect(events[merge]!.payload.data).toMatchObject({ survivor: anna.id, absorbed: [boris.id] });
      // Everything about Boris as he was before the merge: before it, in its own order.
      const before = events.filter((event) => event.payload.contact?.id === boris.id);
      expect(before.map((event) => event.payload.type)).toContain('contact.created');
      expect(before.map(text).filter(Boolean)).toEqual(['boris 1', 'boris 2']);
      for (const event of before) expect(events.indexOf(event)).toBeLessThan(merge);
      // Everything recorded after it (the merged person): after it.
      for (const message of ['both 1', 'anna 2'])
        expect(indexOf(events, (event) => text(event) === message)).toBeGreaterThan(merge);
      // Without contact.merged, the merged person's messages still come after Boris's.
      expect(
        texts(messagesOnly.application).filter((message) => /^(boris|both|anna 2)/.test(message)),
      ).toEqual(['boris 1', 'boris 2', 'both 1', 'anna 2']);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'does the same for a merge by hand (POST /api/v1/contacts/:id/merge)',
    async () => {
      const c = `clara.${store}@merge-order.example`;
      const d = `dmitri.${store}@merge-order.example`;
      const clara = await seen([c], ['clara 1']);
      await receiver.waitFor(
        () => receiver.application.some((event) => text(event) === 'clara 1'),
        10_000,
        "clara's first message",
      );
      failing.emails.add(d);
      const dmitri = await seen([d], ['dmitri 1', 'dmitri 2']);
      await retriedMore(2);
      const merged = await bridge.admin('POST', `/api/v1/contacts/${dmitri.id}/merge`, { with: clara.id });
      expect(merged.status).toBe(200);
      expect(merged.body.contact.id).toBe(clara.id);
      await seen([c], ['clara 2']);
      await retriedMore(3);
      failing.emails.delete(d);

      await allDelivered(['dmitri 1', 'dmitri 2', 'clara 2']);
      const events = receiver.application;
      const merge = indexOf(
        events,
        (event) =>
          event.payload.type === 'contact.merged' &&
          (event.payload.data.absorbed as string[]).includes(dmitri.id),
      );
      const before = events.filter((event) => event.payload.contact?.id === dmitri.id);
      expect(before.map(text).filter(Boolean)).toEqual(['dmitri 1', 'dmitri 2']);
      for (const event of before) expect(events.indexOf(event)).toBeLessThan(merge);
      expect(indexOf(events, (event) => text(event) === 'clara 2')).toBeGreaterThan(merge);
      expect(texts(messagesOnly.application).filter((message) => /^(dmitri|clara 2)/.test(message))).toEqual([
        'dmitri 1',
        'dmitri 2',
        'clara 2',
      ]);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'delivers the split-off contact’s events after those of the merged contact recorded before the unmerge',
    async () => {
      const e = `elena.${store}@merge-order.example`;
      const f = `fyodor.${store}@merge-order.example`;
      const elena = await seen([e]);
      const fyodor = await seen([f]);
      await seen([e, f], ['both 1']);
      await receiver.waitFor(
        () => receiver.application.some((event) => text(event) === 'both 1'),
        10_000,
        'the merged contact’s message',
      );
      const from = receiver.application.length;

      // The merged contact's deliveries fail: its next message stays pending.
      failing.ids.add(elena.id);
      await seen([e], ['both 2']);
      await retriedMore(2);
      const unmerged = await bridge.admin('POST', `/api/v1/contacts/${elena.id}/unmerge`, {
        recordId: fyodor.id,
      });
      expect(unmerged.status).toBe(200);
      expect(unmerged.body.split.id).toBe(fyodor.id);
      await seen([f], ['fyodor alone 1']);
      await retriedMore(3);
      failing.ids.delete(elena.id);

      const isSplit = (event: ApplicationEvent) =>
        event.payload.type === 'contact.created' && event.payload.data.unmergedFrom === elena.id;
      const isUpdate = (event: ApplicationEvent) =>
        event.payload.type === 'contact.updated' && event.payload.data.unmerged !== undefined;
      await allDelivered(
        ['both 2', 'fyodor alone 1'],
        (events) => events.some(isSplit) && events.some(isUpdate),
      );
      const events = receiver.application.slice(from);
      const pendingBefore = indexOf(events, (event) => text(event) === 'both 2');
      const created = indexOf(events, isSplit);
      expect(events[created]!.payload.contact?.id).toBe(fyodor.id);
      expect(created).toBeGreaterThan(pendingBefore);
      // Elena's own unmerge update came first as well (recorded before the split's creation).
      const update = indexOf(events, isUpdate);
      expect(events[update]!.payload.contact?.id).toBe(elena.id);
      expect(update).toBeLessThan(created);
      expect(indexOf(events, (event) => text(event) === 'fyodor alone 1')).toBeGreaterThan(created);
      expect(texts(messagesOnly.application).filter((message) => /^(both 2|fyodor)/.test(message))).toEqual([
        'both 2',
        'fyodor alone 1',
      ]);
    },
    TEST_TIMEOUT_MS,
  );
});
