import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type ApplicationEvent, type Receiver, startReceiver } from './support/receiver.js';

/**
 * A replay after a merge. A person's events reach a destination in the order they happened; a
 * replayed event cannot go back to where it was (what came after it was delivered meanwhile), so
 * it joins the end of the person's line: after what was pending for that person when it was
 * replayed, before anything recorded after the replay — as it does for a contact that was never
 * merged (README "Order per contact"). After Boris was merged into Anna, Boris's failed delivery
 * replayed went back into Boris's own lane, which nothing of Anna's waits for: Anna's next events
 * overtook it, and a replay of every failed delivery of the destination sent `contact.merged` and
 * the merged person's messages before Boris's own earlier events, while those were retried.
 *
 * End to end, on Redis (BullMQ) and on the in-memory store: the contact engine merges (a chat
 * naming both), the admin API replays, and the stateful receiver refuses the absorbed contact's
 * events (410: failed at once, kept for replay), then fails their replay a few times (503) so the
 * later events have had their chance to overtake; then the order its application got is checked.
 */

const SECRET = `whsec_${Buffer.from('replay-merge-order-secret-012345').toString('base64')}`;
/** Each test takes a second or two; its waits add up to more on a loaded machine. */
const TEST_TIMEOUT_MS = 60_000;

describe.each(['redis', 'memory'] as const)('replay order across a merge (%s store)', (store) => {
  let receiver: Receiver;
  let bridge: TestBridge;
  let seq = 0;
  /** Answers for the events of a contact that is this e-mail alone (before a merge gave it another record). */
  const answers = new Map<string, 410 | 503>();

  const answerOf = (payload: unknown) => {
    const contact = (payload as { contact?: Contact | null } | undefined)?.contact;
    if (contact?.records.length !== 1) return undefined;
    for (const email of contact.emails) {
      const status = answers.get(email);
      if (status !== undefined) return status;
    }
    return undefined;
  };

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
    receiver.respond((request) => {
      const status = answerOf(request.payload);
      return status === undefined ? { kind: 'ok' } : { kind: 'status', status };
    });
    bridge = await startTestBridge({
      store,
      config: {
        channels: [{ id: 'web', vendor: 'jivochat', token: 'replay-order-token-0123456789' }],
        destinations: [
          {
            id: 'crm',
            url: receiver.url,
            secret: SECRET,
            // Retried every 200 ms for as long as any test needs (60 tries); the breaker stays shut.
            retrySchedule: ['0s', ...Array.from({ length: 60 }, () => '200ms')],
            timeoutMs: 2000,
            circuitBreaker: { failureThreshold: 10_000, cooldown: '1s' },
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await receiver?.close();
  });

  /** An observation (through the contact engine, as an adapter's) with these e-mails and messages. */
  async function seen(emails: string[], messages: string[] = []): Promise<Contact> {
    seq += 1;
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: new Date(Date.UTC(2026, 10, 1, 10, 0, seq)).toISOString(),
      idempotencyKey: `replay-order-${store}-${seq}`,
      identifiers: emails.map((value) => ({ kind: 'email', value })),
      events: messages.map((text, index) => ({ type: 'message.received', key: `m${index}`, data: { text } })),
    });
    return contact;
  }

  const text = (event: ApplicationEvent) => event.payload.data.text as string | undefined;
  const delivered = (message: string) => receiver.application.some((event) => text(event) === message);
  const indexOf = (events: ApplicationEvent[], check: (event: ApplicationEvent) => boolean) => {
    const index = events.findIndex(check);
    expect(index, 'event not delivered').toBeGreaterThanOrEqual(0);
    return index;
  };

  interface Summary {
    id: string;
    eventType: string;
    contactId: string | null;
    state: string;
  }
  const failed = async (contactId: string): Promise<Summary[]> => {
    const listed = await bridge.admin<{ deliveries: Summary[] }>(
      'GET',
      '/api/v1/deliveries?state=failed&destination=crm&limit=500',
    );
    return listed.body.deliveries.filter((delivery) => delivery.contactId === contactId);
  };
  /** Until `check` holds for the destination's failed deliveries of a contact (polled). */
  const untilFailed = async (contactId: string, check: (types: string[]) => boolean) => {
    for (let tries = 0; !check((await failed(contactId)).map((delivery) => delivery.eventType)); tries++) {
      if (tries > 500) throw new Error(`failed deliveries of ${contactId}: not as expected`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const messages = (types: string[]) => types.filter((type) => type === 'message.received').length;
  /** Refused for now (503) attempts so far. */
  const refusedAttempts = () => receiver.requests.filter((request) => request.answered === 503).length;
  const retriedMore = async (times: number) => {
    const from = refusedAttempts();
    await receiver.waitFor(() => refusedAttempts() >= from + times, 15_000, `${times} more refused attempts`);
  };

  it(
    'a replayed event of the absorbed contact goes before what the merged person does after the replay',
    async () => {
      const a = `anna.${store}@replay-order.example`;
      const b = `boris.${store}@replay-order.example`;
      const anna = await seen([a], ['anna 1']);
      await receiver.waitFor(() => delivered('anna 1'), 10_000, "anna's first message");

      // Boris's events are refused for good: kept for replay.
      answers.set(b, 410);
      const boris = await seen([b], ['boris 1']);
      await untilFailed(boris.id, (types) => types.length === 2);
      // A chat names both: one person now, Anna (the older) surviving.
      const merged = await seen([a, b], ['both 1']);
      expect(merged.id).toBe(anna.id);
      await receiver.waitFor(() => delivered('both 1'), 10_000, 'the merged person’s message');

      // The operator replays Boris's message; the destination fails it for a while.
      answers.set(b, 503);
      const [message] = (await failed(boris.id)).filter(
        (delivery) => delivery.eventType === 'message.received',
      );
      expect((await bridge.admin('POST', `/api/v1/deliveries/${message!.id}/replay`)).status).toBe(202);
      await retriedMore(1);
      // The merged person writes again, after the replay.
      await seen([a], ['anna 2']);
      await retriedMore(3);
      answers.delete(b);

      await receiver.waitFor(() => delivered('boris 1') && delivered('anna 2'), 15_000, 'both delivered');
      const events = receiver.application;
      expect(indexOf(events, (event) => text(event) === 'boris 1')).toBeLessThan(
        indexOf(events, (event) => text(event) === 'anna 2'),
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'a replay of every failed delivery sends the absorbed contact’s events before contact.merged and the merged person’s',
    async () => {
      const c = `clara.${store}@replay-order.example`;
      const d = `dmitri.${store}@replay-order.example`;
      // Everything about either of them is refused for good while the destination is misconfigured.
      answers.set(c, 410);
      answers.set(d, 410);
      const clara = await seen([c], ['clara 1']);
      const dmitri = await seen([d], ['dmitri 1', 'dmitri 2']);
      await untilFailed(clara.id, (types) => types.length === 2);
      await untilFailed(dmitri.id, (types) => types.length === 3);
      // The merged contact has two records: refused by its id.
      answers.delete(c);
      const refuseMerged = (payload: unknown) =>
        (payload as { contact?: Contact | null }).contact?.id === clara.id &&
        (payload as { contact: Contact }).contact.records.length === 2;
      receiver.respond((request) => {
        if (refuseMerged(request.payload)) return { kind: 'status', status: 410 };
        const status = answerOf(request.payload);
        return status === undefined ? { kind: 'ok' } : { kind: 'status', status };
      });
      const merged = await seen([c, d], ['both 1']);
      expect(merged.id).toBe(clara.id);
      await seen([c], ['clara 2']);
      await untilFailed(clara.id, (types) => types.includes('contact.merged') && messages(types) === 3);

      // Fixed: the operator replays every failed delivery; Dmitri's are failed a few times more.
      answers.set(d, 503);
      receiver.respond((request) => {
        const status = answerOf(request.payload);
        return status === undefined ? { kind: 'ok' } : { kind: 'status', status };
      });
      const from = receiver.application.length;
      const replayed = await bridge.admin('POST', '/api/v1/deliveries/replay?destination=crm');
      expect(replayed.status).toBe(202);
      await retriedMore(4);
      answers.delete(d);

      await receiver.waitFor(
        () => ['dmitri 1', 'dmitri 2', 'both 1', 'clara 2'].every(delivered),
        15_000,
        'everything delivered',
      );
      const events = receiver.application.slice(from);
      const merge = indexOf(events, (event) => event.payload.type === 'contact.merged');
      // Dmitri as he was before the merge: before it, in his own order.
      const his = events.filter((event) => event.payload.contact?.id === dmitri.id);
      expect(his.map(text).filter(Boolean)).toEqual(['dmitri 1', 'dmitri 2']);
      for (const event of his) expect(events.indexOf(event)).toBeLessThan(merge);
      // The merged person's messages after it, in their order.
      const after = events.slice(merge).map(text).filter(Boolean);
      expect(after).toEqual(['both 1', 'clara 2']);
    },
    TEST_TIMEOUT_MS,
  );
});
