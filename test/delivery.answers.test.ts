import { createHmac, timingSafeEqual } from 'node:crypto';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import type { Delivery } from '../src/delivery/index.js';
import { createOutboxPublisher, type EventPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { runDeliveriesCommand } from './support/deliveries-cli.js';
import { testDelivery } from './support/processor-world.js';
import { type Receiver, type ReceiverAnswer, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * What a receiver answers is kept on the delivery record (`lastError.message`, `history`) and
 * shown by the admin API, the console and `chatbridge deliveries list`, which prints it to an
 * operator's terminal. A receiver is another party's server: its error page may hold terminal
 * escapes, bidi overrides or text cut in the middle of an emoji.
 */

const SECRET = `whsec_${Buffer.from('delivery-answers-secret-0123456789').toString('base64')}`;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function entry(contactId: string, n: number): OutboxEntry {
  return {
    event: {
      id: `evt_${contactId}_${n}`,
      type: 'message.received',
      occurredAt: new Date().toISOString(),
      channel: { id: 'site', vendor: 'jivochat' },
      contact: null,
      data: { n },
    },
    orderingKey: contactId,
    stagedAt: Date.now(),
  };
}

async function setup(
  kind: 'memory' | 'redis',
  answer: (request: { webhookId: string }) => ReceiverAnswer,
  destination: {
    timeoutMs?: number;
    concurrency?: number;
    secret?: string;
    previousSecret?: string;
    retrySchedule?: string[];
  } = {},
  receiverSecret = SECRET,
): Promise<{ delivery: Delivery; events: EventPublisher; receiver: Receiver }> {
  const receiver = await startReceiver({ secret: receiverSecret });
  cleanups.push(() => receiver.close());
  receiver.respond(answer);
  const redisUrl = kind === 'redis' ? await getTestRedisUrl() : undefined;
  const keyPrefix = uniquePrefix('delivery-answers');
  const store: Store = redisUrl
    ? await createRedisStore({ url: redisUrl, keyPrefix, logger })
    : createMemoryStore();
  cleanups.push(async () => {
    await store.close();
    if (redisUrl) await cleanupPrefix(redisUrl, keyPrefix);
  });
  const config = configSchema.parse({
    admin: { token: 'admin-token-0123456789' },
    channels: [{ id: 'site', vendor: 'jivochat', token: 'site-token-0123456789' }],
    destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, retrySchedule: ['0s'], ...destination }],
  });
  const events = createOutboxPublisher(store);
  const delivery = testDelivery({
    config,
    store,
    redisUrl,
    keyPrefix,
    events,
    logger,
  });
  cleanups.push(() => delivery.close());
  await delivery.start();
  return { delivery, events, receiver };
}

async function failedOf(delivery: Delivery, count: number) {
  for (let round = 0; ; round++) {
    const failed = await delivery.list({ state: 'failed' });
    if (failed.length >= count) return failed;
    expect(round, `${count} failed deliveries`).toBeLessThan(500);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** C0 and C1 controls (ESC, BEL, CR ...), bidi embeddings/overrides/isolates, lone surrogates. */
const UNSHOWABLE =
  /[\p{Cc}\u202A-\u202E\u2066-\u2069]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/u;

describe.each(['memory', 'redis'] as const)("a receiver's answer kept on the record (%s store)", (kind) => {
  it('holds no terminal escapes, controls or bidi overrides, and is never cut inside a character', async () => {
    // 199 characters, then an emoji (two UTF-16 units) across the 200-character cut.
    const longWithEmoji = `${'x'.repeat(199)}\u{1F600} and more`;
    const { delivery, events } = await setup(kind, (request) =>
      request.webhookId === 'evt_c1_1'
        ? {
            kind: 'status',
            status: 400,
            // Clear the screen, retitle the terminal, then a line reading backwards.
            body: 'bad\u001b[2J\u001b]0;owned\u0007 pipeline \u202Eevil\u202C\u0000\u009b31m end',
          }
        : { kind: 'status', status: 422, body: longWithEmoji },
    );
    await events.publish([entry('c1', 1), entry('c2', 1)]);
    const failed = await failedOf(delivery, 2);
    const message = (eventId: string) => failed.find((item) => item.eventId === eventId)!.lastError!.message;

    expect(message('evt_c1_1')).not.toMatch(UNSHOWABLE);
    // The readable text stays.
    expect(message('evt_c1_1')).toContain('pipeline');
    expect(message('evt_c2_1')).not.toMatch(UNSHOWABLE);
    expect(message('evt_c2_1').startsWith(`HTTP 422: ${'x'.repeat(199)}`)).toBe(true);

    const detail = await delivery.get(failed[0]!.id);
    for (const attempt of detail!.history) expect(attempt.error ?? '').not.toMatch(UNSHOWABLE);

    // What an operator's terminal gets from `chatbridge deliveries list`.
    const out: string[] = [];
    const code = await runDeliveriesCommand(['list', '--state', 'failed'], delivery, {
      stdout: (line: string) => out.push(line),
      stderr: () => {},
    });
    expect(code).toBe(0);
    expect(out).toHaveLength(2);
    for (const line of out) expect(line).not.toMatch(UNSHOWABLE);
  });

  it('is done with a 2xx once its status is in, whatever its body does after', async () => {
    // Each answer is a 200 whose body never ends. The timeout is far longer than the test may
    // take: a delivery that waited for the body held the contact's lane (and the only slot)
    // until it, so the second and third events would not arrive within the test.
    const { delivery, events, receiver } = await setup(kind, () => ({ kind: 'trickle', status: 200 }), {
      timeoutMs: 600_000,
      concurrency: 1,
    });
    await events.publish([entry('c1', 1), entry('c1', 2), entry('c1', 3)]);
    await receiver.waitFor(() => receiver.application.length === 3, 30_000, 'all three events');
    expect(receiver.application.map((event) => event.payload.data.n)).toEqual([1, 2, 3]);
    for (let round = 0; (await delivery.list({ state: 'delivered' })).length < 3; round++) {
      expect(round, 'three deliveries recorded').toBeLessThan(500);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Each was sent once: accepted, not retried as a timeout.
    expect(receiver.requests).toHaveLength(3);
  }, 60_000);
});

describe('chatbridge deliveries list', () => {
  it('prints a record kept from before answers were cleaned without its escapes or line breaks', async () => {
    const at = '2026-12-01T10:00:00.000Z';
    const item = {
      id: 'dlv_old',
      destination: 'crm',
      eventId: 'evt_1',
      eventType: 'message.received',
      contactId: null,
      state: 'failed' as const,
      attempts: 1,
      replays: 0,
      createdAt: at,
      updatedAt: at,
      nextAttemptAt: null,
      deliveredAt: null,
      failedAt: at,
      lastStatus: 400,
      lastError: {
        status: 400,
        message: 'HTTP 400: no\u001b[2J\u001b]0;owned\u0007\nfake line \u202Eevil',
        at,
      },
    };
    // The CLI lists through page() (one page, and the cursor to the next).
    const delivery = {
      page: async () => ({ deliveries: [item], nextCursor: null }),
      paused: async () => [],
    } as unknown as Delivery;
    const out: string[] = [];
    expect(
      await runDeliveriesCommand(['list'], delivery, { stdout: (line) => out.push(line), stderr: () => {} }),
    ).toBe(0);
    expect(out).toHaveLength(1);
    expect(out[0]).not.toMatch(UNSHOWABLE);
    expect(out[0]).toContain('fake line');
  });
});

/**
 * A receiver's check written from the README alone (src/delivery/README.md "Signatures" and the
 * Standard Webhooks text it cites), not from signing.ts: headers webhook-id, webhook-timestamp
 * (Unix seconds, within 5 minutes of now) and webhook-signature, a space-separated list of
 * `v1,<base64 HMAC-SHA256>` over `${id}.${timestamp}.${body bytes}` keyed with the base64 part of
 * the whsec_ secret. Returns which of `secrets` have a matching signature.
 */
function verifiedBy(
  request: { headers: Record<string, string | string[] | undefined>; body: string },
  secrets: Record<string, string>,
): string[] {
  const header = (name: string) => {
    const value = request.headers[name];
    return typeof value === 'string' ? value : '';
  };
  const id = header('webhook-id');
  const timestamp = header('webhook-timestamp');
  if (!id || !/^\d+$/.test(timestamp)) return [];
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return [];
  const sent = header('webhook-signature')
    .split(' ')
    .filter((part) => part.startsWith('v1,'))
    .map((part) => Buffer.from(part.slice(3), 'base64'));
  return Object.entries(secrets)
    .filter(([, secret]) => {
      const expected = createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64'))
        .update(Buffer.concat([Buffer.from(`${id}.${timestamp}.`), Buffer.from(request.body, 'utf8')]))
        .digest();
      return sent.some(
        (signature) => signature.length === expected.length && timingSafeEqual(signature, expected),
      );
    })
    .map(([name]) => name);
}

describe.each(['memory', 'redis'] as const)('rotating a destination secret (%s store)', (kind) => {
  it('signs every attempt, retries and replays too, under the new and the previous secret', async () => {
    const NEW = `whsec_${Buffer.from('delivery-answers-rotated-secret-0123').toString('base64')}`;
    let answers = 0;
    // The receiver still has the old secret (the official library): it must accept every request.
    const { delivery, events, receiver } = await setup(
      kind,
      () => (++answers === 1 ? { kind: 'status', status: 503 } : { kind: 'ok' }),
      { secret: NEW, previousSecret: SECRET, retrySchedule: ['0s', '50ms'] },
      SECRET,
    );
    await events.publish([entry('c1', 1)]);
    await receiver.waitFor(() => receiver.application.length === 1, 10_000, 'the event, after one retry');
    for (let round = 0; (await delivery.list({ state: 'delivered' })).length < 1; round++) {
      expect(round, 'the delivery recorded').toBeLessThan(500);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const [delivered] = await delivery.list({ state: 'delivered' });
    await delivery.replay(delivered!.id);
    await receiver.waitFor(() => receiver.requests.length === 3, 10_000, 'the replay');

    expect(receiver.requests.map((request) => request.verified)).toEqual([true, true, true]);
    expect(new Set(receiver.requests.map((request) => request.webhookId))).toEqual(new Set(['evt_c1_1']));
    for (const request of receiver.requests)
      expect(verifiedBy(request, { new: NEW, old: SECRET })).toEqual(['new', 'old']);
    // The signature header lists the current secret's first.
    const first = receiver.requests[0]!;
    expect(
      verifiedBy(
        {
          ...first,
          headers: {
            ...first.headers,
            'webhook-signature': String(first.headers['webhook-signature']).split(' ')[0],
          },
        },
        { new: NEW, old: SECRET },
      ),
    ).toEqual(['new']);
  });

  it('signs with the one secret when no previous one is set (an empty previousSecret is none)', async () => {
    const { events, receiver } = await setup(kind, () => ({ kind: 'ok' }), { previousSecret: '' });
    await events.publish([entry('c1', 1)]);
    await receiver.waitFor(() => receiver.application.length === 1, 10_000, 'the event');
    const [request] = receiver.requests;
    expect(String(request!.headers['webhook-signature']).split(' ')).toHaveLength(1);
    expect(verifiedBy(request!, { current: SECRET })).toEqual(['current']);
  });
});

describe.each(['memory', 'redis'] as const)('replaying one delivery twice at once (%s store)', (kind) => {
  it('replays it once: the second replay is a 409, and the event is sent once more, not twice', async () => {
    let refuse = true;
    const { delivery, events, receiver } = await setup(kind, () =>
      refuse ? { kind: 'status', status: 400 } : { kind: 'ok' },
    );
    await events.publish([entry('c1', 1)]);
    const [failed] = await failedOf(delivery, 1);
    refuse = false;
    const results = await Promise.allSettled([delivery.replay(failed!.id), delivery.replay(failed!.id)]);
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
    const [refused] = results.filter((result) => result.status === 'rejected');
    expect((refused as PromiseRejectedResult).reason).toMatchObject({ status: 409 });
    await receiver.waitFor(() => receiver.application.length === 1, 10_000, 'the replayed event');
    for (let round = 0; (await delivery.get(failed!.id))?.state !== 'delivered'; round++) {
      expect(round, 'the replay recorded').toBeLessThan(500);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(await delivery.get(failed!.id)).toMatchObject({ state: 'delivered', replays: 1, attempts: 2 });
    expect(receiver.requests).toHaveLength(2);
  });
});
