import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { jivochatAdapter } from '../adapters/jivochat/index.js';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';

type ContactEngine = ReturnType<typeof createContactEngine>;

import { IdentityContentionError } from '../src/errors.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import {
  createDeferredIntake,
  DEFERRED_CHUNK,
  DEFERRED_INVALID_KEY,
  DEFERRED_KEY,
  DEFERRED_MAX_BODY_BYTES,
  RECORD_CONCURRENCY,
  WORKER_RECORD_CONCURRENCY,
} from '../src/intake/deferred.js';
import { createPayloadJournal } from '../src/intake/journal.js';
import { parseIntakeRequest } from '../src/intake/pipeline.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { defaultRegistry } from '../src/registry.js';
import { createMemoryStore } from '../src/store/memory.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger } from './support/logs.js';
import { getTestRedisUrl } from './support/redis.js';

/**
 * intake.ackAfterAppend (issue 12 item 2): events whose answer carries no contact data are
 * answered after one durable append and recorded by the worker. Through real HTTP, on both
 * stores; what is answered must end up recorded, and what must be refused still is.
 */
const ROOT = join(import.meta.dirname, '..');
const JIVO_TOKEN = 'site-token-0123456789abcdef';
const LIVETEX_TOKEN = 'app-token-0123456789abcdef';

const fixture = (vendor: string, name: string, patch: Record<string, unknown> = {}) => ({
  ...JSON.parse(readFileSync(join(ROOT, 'adapters', vendor, '__fixtures__', name), 'utf8')),
  ...patch,
});
const finished = (n: number) =>
  fixture('jivochat', 'chat_finished.json', {
    chat_id: 9_100_000 + n,
    visitor: { name: `Visitor ${n}`, email: `deferred-${n}@example.org`, number: String(n) },
  });

const bridges: TestBridge[] = [];
afterEach(async () => {
  for (const bridge of bridges.splice(0)) await bridge.close();
});

async function start(
  store: 'memory' | 'redis',
  options: { start?: boolean; intake?: object; keyPrefix?: string } = {},
) {
  const bridge = await startTestBridge({
    store,
    start: options.start ?? true,
    ...(options.keyPrefix ? { keyPrefix: options.keyPrefix } : {}),
    config: {
      secrets: { masterKey: Buffer.alloc(32, 9).toString('base64') },
      intake: { ackAfterAppend: true, ...options.intake },
      channels: [
        { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, widgetId: 'Qw7eR9tY2u' },
        { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
      ],
    },
  });
  bridges.push(bridge);
  return bridge;
}

async function contactsByEmail(bridge: TestBridge, email: string) {
  const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(email)}`);
  expect(found.status).toBe(200);
  return found.body.contacts as Array<{ id: string }>;
}

/** Waits for the worker's outcome (bounded by tries, not asserted as a duration). */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let tries = 0; tries < 200 && !done(value); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    value = await read();
  }
  return value;
}

async function timelineTypes(bridge: TestBridge, contactId: string) {
  const page = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?limit=50`);
  return (page.body.entries as Array<{ type: string }>).map((entry) => entry.type);
}

describe.each(['memory', 'redis'] as const)('acknowledge after append (%s store)', (store) => {
  it('answers {"result":"ok"} and records the event once the worker ran', async () => {
    const bridge = await start(store);
    const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(1));
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ result: 'ok' });
    const contacts = await eventually(
      () => contactsByEmail(bridge, 'deferred-1@example.org'),
      (list) => list.length === 1,
    );
    expect(contacts).toHaveLength(1);
    expect(await timelineTypes(bridge, contacts[0]!.id)).toContain('conversation.finished');
  });

  it('a body that is not valid UTF-8 is kept as its bytes and recorded as the web path read it', async () => {
    const bridge = await start(store);
    // A visitor name in Windows-1251 (not UTF-8): the web path reads it with U+FFFD in place of
    // each bad byte; the worker must read the very same text from the stored bytes.
    const body = JSON.stringify(finished(30)).replace('Visitor 30', '@@NAME@@');
    const [before, after] = body.split('@@NAME@@') as [string, string];
    const bytes = Buffer.concat([
      Buffer.from(before, 'utf8'),
      Buffer.from([0xc8, 0xe2, 0xe0, 0xed]), // "Иван" in Windows-1251
      Buffer.from(after, 'utf8'),
    ]);
    const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, bytes, {
      'content-type': 'application/json',
    });
    expect(answer.status).toBe(200);
    const [found] = await eventually(
      () => contactsByEmail(bridge, 'deferred-30@example.org'),
      (list) => list.length === 1,
    );
    expect(found).toBeDefined();
    const contact = await bridge.admin('GET', `/api/v1/contacts/${found!.id}`);
    expect(contact.body.names).toEqual(['\ufffd\ufffd\ufffd\ufffd']);
  });

  it('keeps acknowledged events in the store while no worker runs, and records them when one starts', async () => {
    const bridge = await start(store, { start: false });
    for (let n = 10; n < 15; n++) {
      const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n));
      expect(answer.status).toBe(200);
    }
    // Not recorded yet: the answer did not wait for the contact.
    expect(await contactsByEmail(bridge, 'deferred-10@example.org')).toHaveLength(0);
    if (bridge.redisUrl) {
      const redis = new Redis(bridge.redisUrl);
      try {
        expect(await redis.llen(`${bridge.keyPrefix}:intake:deferred`)).toBe(5);
      } finally {
        redis.disconnect();
      }
    }
    await bridge.bridge.start();
    for (let n = 10; n < 15; n++) {
      const contacts = await eventually(
        () => contactsByEmail(bridge, `deferred-${n}@example.org`),
        (list) => list.length === 1,
      );
      expect(contacts, `deferred-${n}`).toHaveLength(1);
    }
  });

  it('still records rich events before answering, and still refuses a payload for another widget', async () => {
    const bridge = await start(store, { start: false });
    const accepted = await bridge.post(
      `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      fixture('jivochat', 'chat_accepted.json', {
        chat_id: 9_200_001,
        visitor: { name: 'Rich', email: 'rich@example.org', number: '7' },
      }),
    );
    expect(accepted.status).toBe(200);
    expect(accepted.body.contact_info).toBeDefined();
    expect(await contactsByEmail(bridge, 'rich@example.org')).toHaveLength(1);

    const other = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, {
      ...finished(20),
      widget_id: 'another-widget',
    });
    expect(other.status).toBe(400);
  });

  it('records inline once the backlog is full, so a stalled worker slows vendors instead of filling the store', async () => {
    const bridge = await start(store, { start: false, intake: { maxBacklog: 1 } });
    expect((await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(30))).status).toBe(200);
    expect((await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(31))).status).toBe(200);
    expect(await contactsByEmail(bridge, 'deferred-30@example.org')).toHaveLength(0);
    expect(await contactsByEmail(bridge, 'deferred-31@example.org')).toHaveLength(1);
  });

  it('records an event larger than 64 KB before answering: the backlog is bounded in bytes too', async () => {
    // maxBacklog counts items: with 1 MB bodies a stalled worker let the list reach 10 GB
    // (10,000 of them) before it counted as full. No worker runs here.
    const bridge = await start(store, { start: false });
    const body = { ...finished(40), padding: 'p'.repeat(DEFERRED_MAX_BODY_BYTES) };
    const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, body);
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ result: 'ok' });
    expect(await contactsByEmail(bridge, 'deferred-40@example.org')).toHaveLength(1);
    // One just under the bound is still deferred.
    const small = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(41));
    expect(small.status).toBe(200);
    expect(await contactsByEmail(bridge, 'deferred-41@example.org')).toHaveLength(0);
  });

  it('records LiveTex dialog webhooks before answering: their open step reads and writes the dialog memory', async () => {
    // No worker runs: an event that was only appended would not be on a contact yet.
    const bridge = await start(store, { start: false });
    const answer = await bridge.post(
      `/webhooks/livetex/app/${LIVETEX_TOKEN}`,
      fixture('livetex', 'dialog_closed.mobile.json'),
    );
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ ok: true });
    const found = await bridge.admin(
      'GET',
      `/api/v1/contacts?identity=${encodeURIComponent('person:p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10')}`,
    );
    expect(found.body.contacts).toHaveLength(1);
  });
});

describe('which routes acknowledge after append', () => {
  it('defers only routes that read nothing before decode: no built-in route asks for both', () => {
    // The worker decodes an appended item again without `open`: a route with an `open` step
    // marked ackAfterAppend would be recorded inline anyway, and its promise would be wrong.
    const marked = defaultRegistry().list.flatMap((adapter) =>
      adapter.intake
        .filter((route) => route.ackAfterAppend === true)
        .map((route) => ({
          vendor: adapter.vendor,
          kind: route.kind,
          path: route.path,
          open: route.open !== undefined,
        })),
    );
    expect(marked.length).toBeGreaterThan(0);
    expect(marked.filter((route) => route.open)).toEqual([]);
    expect(marked.map((route) => route.vendor)).not.toContain('livetex');
  });
});

describe('acknowledge after append: what the web path builds', () => {
  /** JivoChat, with its webhook's decode counted (its check is the route's own). */
  function countingJivo() {
    const route = jivochatAdapter.intake[0]!;
    const counted = { decodes: 0 };
    const adapter = {
      ...jivochatAdapter,
      intake: [
        {
          ...route,
          decode(...args: Parameters<typeof route.decode>) {
            counted.decodes++;
            return route.decode(...args);
          },
        },
      ],
    };
    return { adapter, counted };
  }
  async function startWith(
    adapter: typeof jivochatAdapter,
    options: { start: boolean; maxBacklog?: number },
  ) {
    const bridge = await startTestBridge({
      store: 'memory',
      start: options.start,
      adapters: [adapter, ...defaultRegistry().list.filter((each) => each.vendor !== 'jivochat')],
      config: {
        secrets: { masterKey: Buffer.alloc(32, 9).toString('base64') },
        intake: { ackAfterAppend: true, ...(options.maxBacklog ? { maxBacklog: options.maxBacklog } : {}) },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, widgetId: 'Qw7eR9tY2u' }],
      },
    });
    bridges.push(bridge);
    return bridge;
  }

  it('builds no observations that nobody takes: a process without a worker only checks the payload', async () => {
    // A `web` instance (or a full hand-off) threw the decoded observations away: the worker
    // decodes the stored body. Building them was the largest part of the decode.
    const { adapter, counted } = countingJivo();
    const bridge = await startWith(adapter, { start: false, maxBacklog: 2 });
    for (const n of [50, 51]) {
      const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n));
      expect(answer.status).toBe(200);
      expect(answer.body).toEqual({ result: 'ok' });
    }
    expect(counted.decodes).toBe(0);
    expect(await contactsByEmail(bridge, 'deferred-50@example.org')).toHaveLength(0);
    // Refused as decode refuses: another widget's payload is a 400, and nothing is appended.
    const other = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, {
      ...finished(52),
      widget_id: 'another-widget',
    });
    expect(other.status).toBe(400);
    // The backlog full (maxBacklog 2): recorded before the answer, for which it is decoded.
    const inline = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(53));
    expect(inline.status).toBe(200);
    expect(counted.decodes).toBe(1);
    expect(await contactsByEmail(bridge, 'deferred-53@example.org')).toHaveLength(1);
    // A worker started later records what was appended, decoding each stored body.
    await bridge.bridge.start();
    for (const n of [50, 51]) {
      const found = await eventually(
        () => contactsByEmail(bridge, `deferred-${n}@example.org`),
        (list) => list.length === 1,
      );
      expect(found, `deferred-${n}`).toHaveLength(1);
    }
    expect(counted.decodes).toBe(3);
  });

  it('builds them once where this process records them: the worker takes the hand-off', async () => {
    const { adapter, counted } = countingJivo();
    const bridge = await startWith(adapter, { start: true });
    const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(60));
    expect(answer.status).toBe(200);
    const found = await eventually(
      () => contactsByEmail(bridge, 'deferred-60@example.org'),
      (list) => list.length === 1,
    );
    expect(found).toHaveLength(1);
    expect(counted.decodes).toBe(1);
  });
});

describe('acknowledge after append (two instances on one Redis)', () => {
  it('a web instance appends, a worker instance records, each event once', async () => {
    const keyPrefix = `deferred-two-${process.pid}-${Date.now()}`;
    const web = await startTestBridge({
      store: 'redis',
      keyPrefix,
      role: 'web',
      config: {
        intake: { ackAfterAppend: true },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
      },
    });
    bridges.push(web);
    for (let n = 40; n < 60; n++) {
      expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n))).status).toBe(200);
    }
    expect(await contactsByEmail(web, 'deferred-40@example.org')).toHaveLength(0);
    const worker = await startTestBridge({
      store: 'redis',
      keyPrefix,
      config: {
        intake: { ackAfterAppend: true },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
      },
    });
    bridges.push(worker);
    for (let n = 40; n < 60; n++) {
      const contacts = await eventually(
        () => contactsByEmail(web, `deferred-${n}@example.org`),
        (list) => list.length === 1,
      );
      expect(contacts, `deferred-${n}`).toHaveLength(1);
      const types = await timelineTypes(web, contacts[0]!.id);
      expect(types.filter((type) => type === 'conversation.finished')).toHaveLength(1);
    }
    const redis = new Redis(web.redisUrl!);
    try {
      expect(await redis.llen(`${keyPrefix}:intake:deferred`)).toBe(0);
      const keys = await redis.keys(`${keyPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });
});

describe('acknowledge after append, then turned off', () => {
  it('a worker whose config has the option off still records what was acknowledged while it was on', async () => {
    // Turning the option off (or a rolling deploy where only the web instances have it) left the
    // acknowledged events in the list for good: only a worker with the option on drained it.
    const keyPrefix = `deferred-off-${process.pid}-${Date.now()}`;
    const channels = [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }];
    const web = await startTestBridge({
      store: 'redis',
      keyPrefix,
      role: 'web',
      config: { intake: { ackAfterAppend: true }, channels },
    });
    bridges.push(web);
    const redis = new Redis(web.redisUrl!);
    try {
      for (let n = 620; n < 623; n++) {
        expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n))).status).toBe(200);
      }
      expect(await redis.llen(`${keyPrefix}:intake:deferred`)).toBe(3);
      const worker = await startTestBridge({
        store: 'redis',
        keyPrefix,
        role: 'worker',
        config: { intake: { ackAfterAppend: false }, channels },
      });
      bridges.push(worker);
      for (let n = 620; n < 623; n++) {
        const contacts = await eventually(
          () => contactsByEmail(web, `deferred-${n}@example.org`),
          (list) => list.length === 1,
        );
        expect(contacts, `deferred-${n}`).toHaveLength(1);
      }
      expect(await redis.llen(`${keyPrefix}:intake:deferred`)).toBe(0);
    } finally {
      // Closed before the keys go, or a worker's re-index or recording writes after the delete.
      for (const bridge of bridges.splice(0)) await bridge.close();
      const keys = await redis.keys(`${keyPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });
});

describe('acknowledge after append: the backlog metric', () => {
  it('shows the waiting events on every instance: a worker that never appended, a web instance after the drain', async () => {
    // It was each instance's own count: the worker showed 0 with events waiting, and the web
    // instance kept its last append's count after the worker had drained the list.
    const keyPrefix = `deferred-gauge-${process.pid}-${Date.now()}`;
    const config = {
      intake: { ackAfterAppend: true },
      channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
    };
    const backlog = async (bridge: TestBridge) => {
      const gauge = bridge.bridge.metrics.registry.getSingleMetric('chatbridge_intake_deferred_backlog');
      return (await gauge!.get()).values[0]?.value;
    };
    const redis = new Redis(await getTestRedisUrl());
    try {
      const web = await startTestBridge({ store: 'redis', keyPrefix, role: 'web', config });
      bridges.push(web);
      for (let n = 640; n < 643; n++) {
        expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n))).status).toBe(200);
      }
      const worker = await startTestBridge({
        store: 'redis',
        keyPrefix,
        role: 'worker',
        start: false,
        config,
      });
      bridges.push(worker);
      expect(await backlog(web)).toBe(3);
      expect(await backlog(worker)).toBe(3);
      await worker.bridge.start();
      expect(
        await eventually(
          () => redis.llen(`${keyPrefix}:intake:deferred`),
          (length) => length === 0,
        ),
      ).toBe(0);
      expect(await backlog(web)).toBe(0);
      expect(await backlog(worker)).toBe(0);
    } finally {
      // Closed before the keys go, or a worker's re-index or recording writes after the delete.
      for (const bridge of bridges.splice(0)) await bridge.close();
      const keys = await redis.keys(`${keyPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });
});

describe('acknowledge after append: a full backlog on a web instance', () => {
  it('defers again once a worker instance drained the backlog', async () => {
    const keyPrefix = `deferred-refill-${process.pid}-${Date.now()}`;
    const config = {
      intake: { ackAfterAppend: true, maxBacklog: 2 },
      channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
    };
    const web = await startTestBridge({ store: 'redis', keyPrefix, role: 'web', config });
    bridges.push(web);
    const redis = new Redis(web.redisUrl!);
    const waiting = () => redis.llen(`${keyPrefix}:intake:deferred`);
    const post = async (n: number) =>
      expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(n))).status).toBe(200);
    try {
      for (let n = 600; n < 603; n++) await post(n);
      expect(await waiting()).toBe(2); // the third was recorded inline
      const worker = await startTestBridge({ store: 'redis', keyPrefix, role: 'worker', config });
      bridges.push(worker);
      expect(await eventually(waiting, (length) => length === 0)).toBe(0);
      bridges.splice(bridges.indexOf(worker), 1);
      await worker.close();
      // Recorded inline until the web instance reads the length again; then deferred again.
      let n = 610;
      await eventually(
        async () => {
          await post(n++);
          return waiting();
        },
        (length) => length > 0,
      );
      expect(await waiting()).toBe(1);
      expect(await contactsByEmail(web, `deferred-${n - 1}@example.org`)).toHaveLength(0);
    } finally {
      // Closed before the keys go, or a worker's re-index or recording writes after the delete.
      for (const bridge of bridges.splice(0)) await bridge.close();
      const keys = await redis.keys(`${keyPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });
});

describe('acknowledge after append: what the worker finds in the list', () => {
  const prefixes: string[] = [];
  afterEach(async () => {
    // This hook runs before the file's own (which closes the bridges): closed here first, or a
    // worker's re-index writes its progress key after the keys were deleted, and it stays.
    for (const bridge of bridges.splice(0)) await bridge.close();
    const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    try {
      for (const prefix of prefixes.splice(0)) {
        const keys = await redis.keys(`${prefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
      }
    } finally {
      redis.disconnect();
    }
  });
  const jivoOnly = {
    intake: { ackAfterAppend: true },
    channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
  };

  it('stores the request as received (a header line and the body), not the decoded observation', async () => {
    const keyPrefix = `deferred-item-${process.pid}-${Date.now()}`;
    prefixes.push(keyPrefix);
    const web = await startTestBridge({ store: 'redis', keyPrefix, role: 'web', config: jivoOnly });
    bridges.push(web);
    // Byte for byte, even where the body is not valid UTF-8 (a Windows-1251 name here).
    const [before, after] = JSON.stringify(finished(80)).split('Visitor 80') as [string, string];
    const body = Buffer.concat([
      Buffer.from(before, 'utf8'),
      Buffer.from([0xc8, 0xe2, 0xe0, 0xed]),
      Buffer.from(after, 'utf8'),
    ]);
    const answer = await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, body, {
      'content-type': 'application/json',
    });
    expect(answer.status).toBe(200);
    const redis = new Redis(web.redisUrl!);
    try {
      const [item] = await redis.lrangeBuffer(`${keyPrefix}:intake:deferred`, 0, -1);
      const newline = item!.indexOf(0x0a);
      expect(JSON.parse(item!.toString('utf8', 0, newline))).toMatchObject({
        v: 2,
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
      });
      expect(item!.subarray(newline + 1).equals(body)).toBe(true);
    } finally {
      redis.disconnect();
    }
  });

  it('records an item the release before appended (one decoded observation)', async () => {
    const keyPrefix = `deferred-v1-${process.pid}-${Date.now()}`;
    prefixes.push(keyPrefix);
    const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    try {
      await redis.rpush(
        `${keyPrefix}:intake:deferred`,
        JSON.stringify({
          v: 1,
          channelId: 'site',
          vendor: 'jivochat',
          event: 'chat_finished',
          observation: {
            channelId: 'site',
            vendor: 'jivochat',
            at: '2026-11-30T10:00:00.000Z',
            idempotencyKey: 'legacy-item-1',
            identifiers: [{ kind: 'email', value: 'legacy-item@example.org' }],
            names: ['Legacy Item'],
          },
          raw: '{"event_name":"chat_finished"}',
          contentType: null,
          acceptedAt: Date.parse('2026-11-30T10:00:00.000Z'),
        }),
      );
    } finally {
      redis.disconnect();
    }
    const worker = await startTestBridge({ store: 'redis', keyPrefix, config: jivoOnly });
    bridges.push(worker);
    const contacts = await eventually(
      () => contactsByEmail(worker, 'legacy-item@example.org'),
      (list) => list.length === 1,
    );
    expect(contacts).toHaveLength(1);
  });

  it('journals, with its payload, an item whose channel is no longer configured', async () => {
    const keyPrefix = `deferred-gone-${process.pid}-${Date.now()}`;
    prefixes.push(keyPrefix);
    const web = await startTestBridge({ store: 'redis', keyPrefix, role: 'web', config: jivoOnly });
    bridges.push(web);
    expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(81))).status).toBe(200);
    const worker = await startTestBridge({
      store: 'redis',
      keyPrefix,
      config: {
        intake: { ackAfterAppend: true },
        channels: [{ id: 'other', vendor: 'jivochat', token: JIVO_TOKEN }],
      },
    });
    bridges.push(worker);
    const journal = await eventually(
      () => worker.admin('GET', '/api/v1/journal?channel=site'),
      (response) => (response.body.entries ?? []).length === 1,
    );
    const [entry] = journal.body.entries as Array<{
      kind: string;
      reason: string;
      body?: string;
      rawBody?: string;
    }>;
    expect(entry!.kind).toBe('rejected');
    expect(entry!.reason).toContain('no longer configured');
    expect(JSON.stringify(entry)).toContain('deferred-81@example.org');
    expect(await contactsByEmail(worker, 'deferred-81@example.org')).toHaveLength(0);
  });

  it('journals an item whose channel is configured again under another vendor, saying so', async () => {
    // The worker finds the route by channel id and the item's route path; when the id now names
    // a channel of another vendor, the journal said "no longer configured" of a configured channel.
    const keyPrefix = `deferred-vendor-${process.pid}-${Date.now()}`;
    prefixes.push(keyPrefix);
    const web = await startTestBridge({ store: 'redis', keyPrefix, role: 'web', config: jivoOnly });
    bridges.push(web);
    expect((await web.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished(82))).status).toBe(200);
    const worker = await startTestBridge({
      store: 'redis',
      keyPrefix,
      config: {
        secrets: { masterKey: Buffer.alloc(32, 9).toString('base64') },
        intake: { ackAfterAppend: true },
        channels: [{ id: 'site', vendor: 'livetex', token: LIVETEX_TOKEN }],
      },
    });
    bridges.push(worker);
    const journal = await eventually(
      () => worker.admin('GET', '/api/v1/journal?channel=site'),
      (response) => (response.body.entries ?? []).length === 1,
    );
    const [entry] = journal.body.entries as Array<{ kind: string; reason: string }>;
    expect(entry).toMatchObject({
      kind: 'rejected',
      reason: 'channel site was jivochat when the event was acknowledged and is livetex now',
    });
    expect(JSON.stringify(entry)).toContain('deferred-82@example.org');
  });
});

/** A worker's parts on a memory store: the engine it records through and a JivoChat channel's state. */
function workerParts() {
  const store = createMemoryStore();
  const logger = createLogger('silent');
  const metrics = new Metrics({ defaultMetrics: false });
  const engine = createContactEngine({
    store,
    identity: configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
    events: createOutboxPublisher(store, { enabled: false }),
    metrics,
    logger,
  });
  const state = jivochatAdapter.create(
    {} as never,
    { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN } as never,
  ).state;
  return { store, logger, metrics, engine, state };
}

/**
 * The engine with each observe going through `around`, which calls `observe` to record it (or
 * throws, holds or counts first): the worker's view of a flaky, slow or watched engine.
 */
function aroundObserve(
  engine: ContactEngine,
  around: (
    observe: () => ReturnType<ContactEngine['observe']>,
    args: Parameters<ContactEngine['observe']>,
  ) => ReturnType<ContactEngine['observe']>,
): ContactEngine {
  return new Proxy(engine, {
    get(target, property, receiver) {
      if (property !== 'observe') return Reflect.get(target, property, receiver);
      return (...args: Parameters<ContactEngine['observe']>) => around(() => target.observe(...args), args);
    },
  });
}

describe('the deferred worker', () => {
  it('records the observations its own process decoded, without decoding again; an item from elsewhere, or retried, is decoded from its bytes', async () => {
    // Decoding a 50-message chat_finished twice (web path, then worker) made an acknowledged
    // event dearer than an inline one; in one process the web path hands its decode over.
    const { store, logger, metrics, engine, state } = workerParts();
    const flaky = new Set(['deferred-720@example.org']);
    const contacts = aroundObserve(engine, async (observe, args) => {
      const email = (args[0].identifiers ?? []).find((identifier) => identifier.kind === 'email')?.value;
      // Not a refusal: the worker keeps the chunk and tries again (RETRY_MS later).
      if (email && flaky.delete(email)) throw new Error('flaky once');
      return observe();
    });
    const route = jivochatAdapter.intake[0]!;
    const decoded: string[] = [];
    const counting = {
      ...route,
      decode(request: Parameters<typeof route.decode>[0], channel: Parameters<typeof route.decode>[1]) {
        const out = route.decode(request, channel);
        if (out.kind === 'observe') decoded.push(String(out.observations[0]!.idempotencyKey));
        return out;
      },
    };
    const intake = (name: string) =>
      createDeferredIntake({
        store,
        routeFor: () => ({ route: counting as never, state }),
        contacts,
        journal: createPayloadJournal(store),
        logger: logger.child({ name }),
        metrics: name === 'here' ? metrics : new Metrics({ defaultMetrics: false }),
        maxBacklog: 1000,
        pollMs: 20,
      });
    const here = intake('here');
    const elsewhere = intake('elsewhere'); // never started: it only appends, as a `web` instance
    const receivedAt = new Date('2026-11-01T12:00:00.000Z');
    const request = (n: number) => {
      const rawBody = Buffer.from(JSON.stringify(finished(n)));
      const parsed = parseIntakeRequest(route, rawBody, 'application/json', receivedAt);
      const out = route.decode({ ...parsed, opened: undefined }, state as never);
      if (out.kind !== 'observe') throw new Error('expected an observation');
      return {
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody,
        contentType: 'application/json',
        receivedAt,
        observations: out.observations,
      };
    };
    const recorded = async (n: number) => {
      const found = await eventually(
        () => engine.find({ email: `deferred-${n}@example.org` }),
        (list) => list.length === 1,
      );
      expect(found, `deferred-${n}`).toHaveLength(1);
      expect(found[0]!.channels[0]?.observations).toBe(1);
    };
    here.start();
    try {
      for (let n = 700; n < 710; n++) expect(await here.append(request(n))).toBe(true);
      for (let n = 700; n < 710; n++) await recorded(n);
      expect(decoded).toEqual([]);

      // Appended by another instance: the bytes are all there is.
      expect(await elsewhere.append(request(711))).toBe(true);
      await recorded(711);
      expect(decoded).toHaveLength(1);

      // Handed over, but its first recording failed: the retry decodes the bytes.
      expect(await here.append(request(720))).toBe(true);
      await recorded(720);
      expect(flaky.size).toBe(0);
      expect(decoded).toHaveLength(2);
      expect(decoded[1]).toContain(String(9_100_000 + 720));

      // Bounded by the bodies' bytes too (4 MB): as many ~60 KB bodies as fit are handed over,
      // the next is not. Appended at once, so that no drain frees room in between.
      const big = (n: number) => {
        const item = request(n);
        const padded = { ...finished(n), padding: 'p'.repeat(60_000) };
        return { ...item, rawBody: Buffer.from(JSON.stringify(padded)) };
      };
      const bodyBytes = big(730).rawBody.length;
      expect(bodyBytes).toBeLessThanOrEqual(DEFERRED_MAX_BODY_BYTES);
      const last = 730 + Math.floor((4 * 1024 * 1024) / bodyBytes);
      const bigOnes = Array.from({ length: last - 730 + 1 }, (_, index) => big(730 + index));
      expect(await Promise.all(bigOnes.map((item) => here.append(item)))).not.toContain(false);
      await eventually(
        () => store.lrangeBuffer(DEFERRED_KEY, 0, -1),
        (items) => items.length === 0,
      );
      expect(decoded).toHaveLength(3);
      expect(decoded[2]).toContain(String(9_100_000 + last));
    } finally {
      await here.stop();
    }
  });

  /** A chunk of DEFERRED_CHUNK items drained by a worker made with `options`: the most observes in flight at once. */
  async function mostAtOnce(
    options: { recordConcurrency?: number; quietRecordConcurrency?: number; now?: () => number },
    beforeDrain: () => void = () => {},
  ): Promise<number> {
    const { store, logger, metrics, engine, state } = workerParts();
    let inFlight = 0;
    let most = 0;
    const contacts = aroundObserve(engine, async (observe) => {
      most = Math.max(most, ++inFlight);
      try {
        return await observe();
      } finally {
        inFlight--;
      }
    });
    const deferred = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts,
      journal: createPayloadJournal(store),
      logger,
      metrics,
      maxBacklog: 1000,
      ...options,
    });
    for (let n = 0; n < DEFERRED_CHUNK; n++) {
      expect(
        await deferred.append({
          channelId: 'site',
          vendor: 'jivochat',
          event: 'chat_finished',
          rawBody: Buffer.from(JSON.stringify(finished(500 + n))),
          contentType: 'application/json',
          receivedAt: new Date('2026-11-01T12:00:00.000Z'),
        }),
      ).toBe(true);
    }
    beforeDrain();
    expect(await deferred.drain()).toEqual({ recorded: DEFERRED_CHUNK, busy: false });
    for (let n = 0; n < DEFERRED_CHUNK; n++) {
      const found = await engine.find({ email: `deferred-${500 + n}@example.org` });
      expect(found, `deferred-${500 + n}`).toHaveLength(1);
      expect(found[0]!.channels[0]?.observations).toBe(1);
    }
    expect(await deferred.drain()).toEqual({ recorded: 0, busy: false });
    return most;
  }

  it('records a chunk a few items at a time, not all of its decodes at once, and each item once', async () => {
    // All at once, a chunk's 100 decodes ran back to back before the first write and held the
    // event loop while vendors waited for their answers (src/intake/deferred.ts, recordAll).
    const most = await mostAtOnce({});
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(8);
  });

  it('a worker that answers no vendor records more of a chunk at once, still each item once', async () => {
    // Role `worker` (src/bridge.ts): nothing waits behind its decodes, and with 8 in flight a
    // backlog's drain was bound by the store's round trips (bench/deferred-drain.js).
    const most = await mostAtOnce({ recordConcurrency: WORKER_RECORD_CONCURRENCY });
    expect(most).toBeGreaterThan(RECORD_CONCURRENCY);
    expect(most).toBeLessThanOrEqual(WORKER_RECORD_CONCURRENCY);
  });

  /** mostAtOnce for an `all` process whose clock moves `stepMs` between appends. */
  async function mostAtOnceAllRole(stepMs: number): Promise<number> {
    let clock = 1_000_000;
    return mostAtOnce(
      {
        recordConcurrency: RECORD_CONCURRENCY,
        quietRecordConcurrency: WORKER_RECORD_CONCURRENCY,
        now: () => clock,
      },
      () => {
        clock += stepMs;
      },
    );
  }

  it('a process that also answers vendors records as widely as a worker once it has appended nothing for a second', async () => {
    // Role `all` (src/bridge.ts): the backlog a burst leaves is drained after it, with no vendor
    // waiting behind the decodes; at 8 in flight that drain was bound by the store's round trips.
    const most = await mostAtOnceAllRole(1000);
    expect(most).toBeGreaterThan(RECORD_CONCURRENCY);
    expect(most).toBeLessThanOrEqual(WORKER_RECORD_CONCURRENCY);
  });

  it('a process that also answers vendors keeps to a few items at once while it appends', async () => {
    const most = await mostAtOnceAllRole(999);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(RECORD_CONCURRENCY);
  });

  it("a drain that loses its lock mid-chunk starts none of the chunk's other items", async () => {
    // The lock was renewed, but when a renewal found it gone (another instance took it after
    // renewals failed for a whole ttl) the chunk went on: every item not started yet was recorded
    // beside the instance that now held the lock. Only the trim was skipped.
    const { store, logger, metrics, engine, state } = workerParts();
    const calls = new Map<string, number>();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const contacts = aroundObserve(engine, async (observe, args) => {
      const email =
        (args[0].identifiers ?? []).find((identifier) => identifier.kind === 'email')?.value ?? '';
      calls.set(email, (calls.get(email) ?? 0) + 1);
      // The first items (every lane of the chunk) are held until the lock is known lost.
      await released;
      return observe();
    });
    /** Whether a renewal of the drain lock answered that it is gone. */
    let renewalRefused = false;
    const watched = new Proxy(store, {
      get(target, property, receiver) {
        if (property !== 'lock') return Reflect.get(target, property, receiver);
        return async (...args: Parameters<typeof store.lock>) => {
          const lock = await target.lock(...args);
          return {
            ...lock,
            release: () => lock.release(),
            async renew(ttlMs?: number) {
              const held = await lock.renew(ttlMs);
              if (!held) renewalRefused = true;
              return held;
            },
          };
        };
      },
    });
    const deferred = createDeferredIntake({
      store: watched,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts,
      journal: createPayloadJournal(store),
      logger,
      metrics,
      maxBacklog: 1000,
    });
    for (let n = 0; n < 20; n++) {
      await deferred.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(400 + n))),
        contentType: 'application/json',
        receivedAt: new Date('2026-11-01T12:00:00.000Z'),
      });
    }
    const drained = deferred.drain();
    const started = [...Array(8).keys()].map((n) => `deferred-${400 + n}@example.org`);
    for (let wait = 0; wait < 400 && !started.every((email) => calls.has(email)); wait++)
      await new Promise((resolve) => setTimeout(resolve, 25));
    expect([...calls.keys()].sort()).toEqual([...started].sort());
    // Another instance took the lock after ours lapsed; ours notices at its next renewal.
    await store.set('lock:intake:deferred:drain', 'another-instance', { ttlMs: 60_000 });
    for (let wait = 0; wait < 800 && !renewalRefused; wait++)
      await new Promise((resolve) => setTimeout(resolve, 25));
    expect(renewalRefused).toBe(true);
    release();

    expect(await drained).toEqual({ recorded: 0, busy: true });
    // The items in hand finished; none of the other twelve was started by the instance that lost.
    expect([...calls.keys()].sort()).toEqual([...started].sort());
    expect(await store.get('lock:intake:deferred:drain')).toBe('another-instance');
    expect(await store.llen(DEFERRED_KEY)).toBe(20);
  }, 60_000);

  it('an item done in a chunk kept for the retry of another is not done again: journalled, set aside and counted once', async () => {
    // The chunk stays in the list until all of it is recorded, and each round recorded all of it
    // again: a refused item went to the journal once per round (a ring: copies pushed real
    // entries out), an unreadable one to the invalid list once per round, and the outcome
    // counter counted every item of the chunk again.
    const { store, logger, metrics, engine, state } = workerParts();
    let failures = 2;
    const contacts = aroundObserve(engine, async (observe, args) => {
      const email = (args[0].identifiers ?? []).find((identifier) => identifier.kind === 'email')?.value;
      // Passing (one person written too often at once): the chunk is kept and tried again.
      if (email === 'deferred-1@example.org' && failures-- > 0) throw new IdentityContentionError();
      return observe();
    });
    const journal = createPayloadJournal(store);
    const deferred = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts,
      journal,
      logger,
      metrics,
      maxBacklog: 1000,
    });
    const append = (body: unknown) =>
      deferred.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(body)),
        contentType: 'application/json',
        receivedAt: new Date('2026-11-01T12:00:00.000Z'),
      });
    // Identifiers that are all junk (blocklisted): refused by the engine, kept in the journal.
    const { user_token: _token, ...junk } = finished(0) as Record<string, unknown>;
    expect(await append({ ...junk, visitor: { name: 'Nobody', email: 'null', number: '0' } })).toBe(true);
    expect(await append(finished(1))).toBe(true);
    expect(await append(finished(2))).toBe(true);
    await store.rpush(DEFERRED_KEY, Buffer.from('not an item'));

    expect(await deferred.drain()).toEqual({ recorded: 0, busy: true });
    expect(await deferred.drain()).toEqual({ recorded: 0, busy: true });
    expect(await deferred.drain()).toEqual({ recorded: 4, busy: false });

    // The refused item and the unreadable one, each once.
    expect((await journal.list({ limit: 10 })).entries).toHaveLength(2);
    expect(await store.llen(DEFERRED_INVALID_KEY)).toBe(1);
    for (const n of [1, 2]) {
      const found = await engine.find({ email: `deferred-${n}@example.org` });
      expect(found, `deferred-${n}`).toHaveLength(1);
      expect(found[0]!.channels[0]?.observations).toBe(1);
    }
    const counted = (await metrics.registry.getSingleMetric('chatbridge_intake_deferred_total')!.get())
      .values;
    const count = (outcome: string) => counted.find((value) => value.labels.outcome === outcome)?.value ?? 0;
    expect({
      recorded: count('recorded'),
      journalled: count('journalled'),
      retried: count('retried'),
    }).toEqual({
      recorded: 2,
      journalled: 2,
      retried: 2,
    });
  });

  it('journals an item it cannot read (one of a newer release, after a rollback), besides setting it aside', async () => {
    // It went to the invalid list only, which no API, console page or metric shows: an event
    // answered 200 that nobody could find without reading Redis.
    const { store, logger, metrics, engine, state } = workerParts();
    const journal = createPayloadJournal(store);
    const deferred = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts: engine,
      journal,
      logger,
      metrics,
      maxBacklog: 1000,
    });
    const body = JSON.stringify(finished(60));
    const header = { v: 3, channelId: 'site', vendor: 'jivochat', event: 'chat_finished', contentType: null };
    await store.rpush(DEFERRED_KEY, Buffer.from(`${JSON.stringify(header)}\n${body}`));
    expect(await deferred.drain()).toEqual({ recorded: 1, busy: false });
    expect(await store.llen(DEFERRED_INVALID_KEY)).toBe(1);
    const { entries } = await journal.list({ limit: 10, channelId: 'site' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ kind: 'rejected', vendor: 'jivochat', body });
    expect(entries[0]!.reason).toContain('not readable');
  });

  /** Drain rounds until one finishes (a round that throws counts as busy); bounded by rounds. */
  async function drainUntilDone(deferred: { drain(): Promise<{ busy: boolean }> }) {
    for (let round = 0; round < 20; round++) {
      const result = await deferred.drain().catch(() => ({ busy: true }));
      if (!result.busy) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error('the drain never finished');
  }

  it('a journal write that fails is retried for its item alone: every item is journalled exactly once', async () => {
    // The failure rejected the whole chunk: the outcomes of the items beside it were dropped, so
    // the next round journalled (and set aside) those again.
    const { store, logger, metrics, engine } = workerParts();
    const real = createPayloadJournal(store);
    let failures = 1;
    const journal = {
      list: real.list,
      async record(entry: Parameters<typeof real.record>[0]) {
        if (failures-- > 0) throw new Error('journal write failed');
        return real.record(entry);
      },
    };
    const deferred = createDeferredIntake({
      store,
      routeFor: () => null, // the channel is no longer configured: each item is journalled
      contacts: engine,
      journal,
      logger,
      metrics,
      maxBacklog: 1000,
    });
    for (const n of [0, 1, 2]) {
      await deferred.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(1300 + n))),
        contentType: 'application/json',
        receivedAt: new Date('2026-11-01T12:00:00.000Z'),
      });
    }
    await store.rpush(DEFERRED_KEY, Buffer.from('not an item'));
    await drainUntilDone(deferred);
    // Anything still running from a round that threw has finished (it would journal again).
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await store.llen(DEFERRED_KEY)).toBe(0);
    const { entries } = await real.list({ limit: 20 });
    expect(entries.map((entry) => entry.body).sort()).toEqual(
      [...[0, 1, 2].map((n) => JSON.stringify(finished(1300 + n))), 'not an item'].sort(),
    );
    expect(await store.llen(DEFERRED_INVALID_KEY)).toBe(1);
  });

  it('an entry is journalled once when the store fails right after writing it (the ring trim)', async () => {
    // The journal's write held, its trim failed: record() threw, the worker retried, and the
    // entry was in the journal twice.
    const { store, logger, metrics, engine } = workerParts();
    let failures = 1;
    const flaky = new Proxy(store, {
      get(target, property, receiver) {
        if (property !== 'zcard') return Reflect.get(target, property, receiver);
        return async (key: string) => {
          if (failures-- > 0) throw new Error('connection lost');
          return target.zcard(key);
        };
      },
    });
    const journal = createPayloadJournal(flaky);
    const deferred = createDeferredIntake({
      store,
      routeFor: () => null,
      contacts: engine,
      journal,
      logger,
      metrics,
      maxBacklog: 1000,
    });
    await deferred.append({
      channelId: 'site',
      vendor: 'jivochat',
      event: 'chat_finished',
      rawBody: Buffer.from(JSON.stringify(finished(1400))),
      contentType: 'application/json',
      receivedAt: new Date('2026-11-01T12:00:00.000Z'),
    });
    await drainUntilDone(deferred);
    expect(failures).toBeLessThan(1);
    expect((await journal.list({ limit: 10 })).entries).toHaveLength(1);
  });

  it('each item names its append first; a chunk whose list changed under the drain (a failover) is not trimmed, id or not', async () => {
    // The trim checks each item's id (the first bytes of its header), not all its bytes: an id is
    // made for one append, so this is as exact as the bytes. A chunk's first and last items alone
    // would not be: a new primary that lacks an item of the chunk can hold another in its place
    // (an append made after the failover) with the chunk's own items around it (ioredis sends a
    // command again after a reconnection), and trimming it would lose an acknowledged event.
    const { store, logger, metrics, engine, state } = workerParts();
    let gate: Promise<void> | undefined;
    let entered!: () => void;
    let observing = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const contacts = aroundObserve(engine, async (observe) => {
      entered();
      if (gate) await gate;
      return observe();
    });
    const intake = () =>
      createDeferredIntake({
        store,
        routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
        contacts,
        journal: createPayloadJournal(store),
        logger,
        metrics,
        maxBacklog: 1000,
      });
    const here = intake();
    const elsewhere = intake();
    const receivedAt = new Date('2026-11-01T12:00:00.000Z');
    const rawBodyOf = (n: number) => Buffer.from(JSON.stringify(finished(n)));
    const request = (n: number) => ({
      channelId: 'site',
      vendor: 'jivochat',
      event: 'chat_finished',
      rawBody: rawBodyOf(n),
      contentType: 'application/json',
      receivedAt,
    });
    for (let n = 500; n < 504; n++) expect(await here.append(request(n))).toBe(true);
    // The same request appended again (a vendor's retry): the same body, an id of its own.
    expect(await elsewhere.append(request(501))).toBe(true);
    const items = await store.lrangeBuffer(DEFERRED_KEY, 0, -1);
    const headers = items.map((item) => item.toString('utf8', 0, item.indexOf(0x0a)));
    for (const header of headers) expect(header).toMatch(/^\{"v":2,"id":"[A-Za-z0-9_-]+\.\d+","/);
    expect(new Set(headers.map((header) => JSON.parse(header).id)).size).toBe(5);

    /** One drain whose chunk is read, then the list replaced by `list` while its first item is recorded. */
    const drainWhileReplaced = async (list: Buffer[]) => {
      let open!: () => void;
      gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      observing = new Promise<void>((resolve) => {
        entered = resolve;
      });
      const drained = here.drain();
      await observing;
      await store.del(DEFERRED_KEY);
      await store.rpush(DEFERRED_KEY, ...list);
      open();
      const result = await drained;
      gate = undefined;
      return result;
    };
    // The third item lost, another appended after the failover in its place: same first and last.
    await elsewhere.append(request(505));
    const [foreign] = await store.lrangeBuffer(DEFERRED_KEY, 5, 5);
    const replaced = [items[0]!, items[1]!, foreign!, items[3]!, items[4]!];
    expect(await drainWhileReplaced(replaced)).toEqual({ recorded: 0, busy: true });
    expect(await store.lrangeBuffer(DEFERRED_KEY, 0, -1)).toEqual(replaced);
    expect(await here.drain()).toEqual({ recorded: 5, busy: false });
    expect(await engine.find({ email: 'deferred-505@example.org' })).toHaveLength(1);

    // Items of a release whose headers carry no id are compared whole: another body under the
    // same header is another item.
    const withoutId = (n: number) =>
      Buffer.concat([
        Buffer.from(
          `${JSON.stringify({ v: 2, channelId: 'site', vendor: 'jivochat', event: 'chat_finished', contentType: 'application/json', receivedAt: receivedAt.getTime() })}\n`,
        ),
        rawBodyOf(n),
      ]);
    await store.rpush(DEFERRED_KEY, withoutId(510), withoutId(511));
    const swapped = [withoutId(510), withoutId(512)];
    expect(await drainWhileReplaced(swapped)).toEqual({ recorded: 0, busy: true });
    expect(await store.lrangeBuffer(DEFERRED_KEY, 0, -1)).toEqual(swapped);
    expect(await here.drain()).toEqual({ recorded: 2, busy: false });
    expect(await engine.find({ email: 'deferred-512@example.org' })).toHaveLength(1);
    expect(await store.llen(DEFERRED_KEY)).toBe(0);
  });

  it('stops after the chunk in hand: a shutdown does not wait for the whole backlog', async () => {
    // stop() awaited a drain that went on chunk after chunk until the list was empty: a SIGTERM
    // with a backlog waited for all of it (10,000 items by default), far past the grace period.
    const { store, logger, metrics, engine, state } = workerParts();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const first = new Promise<void>((resolve) => {
      started = resolve;
    });
    const contacts = aroundObserve(engine, async (observe) => {
      started();
      await released;
      return observe();
    });
    const deferred = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts,
      journal: createPayloadJournal(store),
      logger,
      metrics,
      maxBacklog: 10_000,
    });
    const items = 3 * DEFERRED_CHUNK;
    for (let n = 0; n < items; n++) {
      await deferred.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(1000 + n))),
        contentType: 'application/json',
        receivedAt: new Date('2026-11-01T12:00:00.000Z'),
      });
    }
    deferred.start();
    await first;
    const stopped = deferred.stop();
    release();
    await stopped;
    // The chunk in hand was recorded and trimmed; the other two wait for the next worker.
    expect(await store.llen(DEFERRED_KEY)).toBe(items - DEFERRED_CHUNK);
    expect(await engine.find({ email: 'deferred-1000@example.org' })).toHaveLength(1);
    expect(await engine.find({ email: `deferred-${1000 + items - 1}@example.org` })).toHaveLength(0);
  });

  it('stop(grace) returns once the grace is over when the chunk in hand never finishes; the chunk stays', async () => {
    // stop() awaited the drain however long it took: with Redis hung (or a recording that never
    // answers) a shutdown waited for good, past the platform's grace and with no line saying why.
    const { store, logger, metrics, engine, state } = workerParts();
    let started!: () => void;
    const first = new Promise<void>((resolve) => {
      started = resolve;
    });
    const contacts = new Proxy(engine, {
      get(target, property, receiver) {
        if (property !== 'observe') return Reflect.get(target, property, receiver);
        return () => {
          started();
          return new Promise<never>(() => {}); // hung
        };
      },
    });
    const deferred = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts,
      journal: createPayloadJournal(store),
      logger,
      metrics,
      maxBacklog: 100,
    });
    await deferred.append({
      channelId: 'site',
      vendor: 'jivochat',
      event: 'chat_finished',
      rawBody: Buffer.from(JSON.stringify(finished(1500))),
      contentType: 'application/json',
      receivedAt: new Date('2026-11-01T12:00:00.000Z'),
    });
    deferred.start();
    await first;
    const outcome = await Promise.race([
      deferred.stop(50).then(() => 'stopped'),
      new Promise((resolve) => setTimeout(() => resolve('still waiting'), 10_000)),
    ]);
    expect(outcome).toBe('stopped');
    expect(await store.llen(DEFERRED_KEY)).toBe(1);
  });

  it('a full backlog is logged: one warning with its size and cap, not one per event', async () => {
    // Events past intake.maxBacklog were recorded inline with nothing logged: vendors waited
    // longer and the only trace was a gauge nobody might watch.
    const { store, metrics, engine, state } = workerParts();
    const { logger, lines } = capturingLogger('info');
    let clock = Date.parse('2026-11-01T12:00:00.000Z');
    const web = createDeferredIntake({
      store,
      routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
      contacts: engine,
      journal: createPayloadJournal(store),
      logger,
      metrics,
      maxBacklog: 2,
      now: () => clock,
    });
    const append = (n: number) =>
      web.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(1600 + n))),
        contentType: 'application/json',
        receivedAt: new Date(clock),
      });
    const full = () => lines.filter((line) => /backlog is full/.test(line.msg));
    expect([await append(0), await append(1)]).toEqual([true, true]);
    expect(full()).toHaveLength(0);
    for (let n = 2; n < 30; n++) expect(await append(n)).toBe(false);
    expect(full()).toHaveLength(1);
    expect(full()[0]).toMatchObject({ backlog: 2, maxBacklog: 2 });
    clock += 10 * 60_000;
    expect(await append(30)).toBe(false);
    expect(full()).toHaveLength(2);
  });

  it('a web instance defers again once another instance drained a full backlog', async () => {
    // A `web` instance neither drains nor appends while the backlog is full, so it only learns
    // of a drain by reading the list's length again (at most once per second of its clock).
    const { store, logger, metrics, engine, state } = workerParts();
    let lengthReads = 0;
    const counted = new Proxy(store, {
      get(target, property, receiver) {
        if (property !== 'llen') return Reflect.get(target, property, receiver);
        return (key: string) => {
          lengthReads++;
          return target.llen(key);
        };
      },
    });
    let clock = Date.parse('2026-11-01T12:00:00.000Z');
    const intake = (name: string) =>
      createDeferredIntake({
        store: counted,
        routeFor: () => ({ route: jivochatAdapter.intake[0] as never, state }),
        contacts: engine,
        journal: createPayloadJournal(store),
        logger: logger.child({ name }),
        metrics: name === 'web' ? metrics : new Metrics({ defaultMetrics: false }),
        maxBacklog: 2,
        now: () => clock,
      });
    const web = intake('web'); // never started: it only appends
    const worker = intake('worker');
    const append = (n: number) =>
      web.append({
        channelId: 'site',
        vendor: 'jivochat',
        event: 'chat_finished',
        rawBody: Buffer.from(JSON.stringify(finished(900 + n))),
        contentType: 'application/json',
        receivedAt: new Date(clock),
      });
    expect([await append(0), await append(1), await append(2)]).toEqual([true, true, false]);
    expect(await worker.drain()).toEqual({ recorded: 2, busy: false });
    expect(await store.llen(DEFERRED_KEY)).toBe(0);
    // Refused appends read the length at most once per second, not once per event.
    const before = lengthReads;
    for (let n = 3; n < 50; n++) await append(n);
    expect(lengthReads - before).toBeLessThanOrEqual(1);
    clock += 1000;
    const later = [];
    for (let n = 50; n < 55; n++) later.push(await append(n));
    expect(later).toEqual([true, true, false, false, false]);
    expect(await store.llen(DEFERRED_KEY)).toBe(2);
    expect(web.backlog()).toBe(2);
  });
});
