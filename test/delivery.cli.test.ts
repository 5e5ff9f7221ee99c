import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createDelivery, type Delivery } from '../src/delivery/index.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { createMemoryStore } from '../src/store/memory.js';
import type { Store } from '../src/store/types.js';
import { runDeliveriesCommand } from './support/deliveries-cli.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/** `chatbridge deliveries list|replay`: output, exit codes, and that replay really delivers. */

const SECRET = `whsec_${Buffer.from('cli-test-secret-0123456789abcdefg').toString('base64')}`;

function entry(id: string): OutboxEntry {
  return {
    event: {
      id,
      type: 'contact.updated',
      occurredAt: new Date().toISOString(),
      channel: null,
      contact: null,
      data: {},
    },
    orderingKey: id,
    stagedAt: Date.now(),
  };
}

async function run(delivery: Delivery, ...args: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runDeliveriesCommand(args, delivery, {
    stdout: (text) => stdout.push(text),
    stderr: (text) => stderr.push(text),
  });
  return { code, stdout, stderr };
}

describe('chatbridge deliveries', () => {
  let crm: Receiver;
  let store: Store;
  let delivery: Delivery;
  let refuse = true;

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    crm.respond(() => (refuse ? { kind: 'status', status: 410, body: 'gone' } : { kind: 'ok' }));
    store = createMemoryStore();
    const events = createOutboxPublisher(store);
    delivery = createDelivery({
      config: configSchema.parse({
        admin: { token: 'admin-token-0123456789' },
        destinations: [{ id: 'crm', url: crm.url, secret: SECRET, retrySchedule: ['0s'] }],
      }),
      store,
      redisUrl: undefined,
      keyPrefix: 'cli',
      events,
      http: createHttpClient(),
      logger: pino({ level: 'silent' }),
      metrics: new Metrics(),
      now: () => new Date(),
    });
    await delivery.start();
    await events.publish([entry('evt_a'), entry('evt_b'), entry('evt_c')]);
    await crm.waitFor(() => crm.requests.length === 3, 5000, 'three refusals');
    for (let tries = 0; (await delivery.list({ state: 'failed' })).length < 3 && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
  afterAll(async () => {
    await delivery?.close();
    await store?.close();
    await crm?.close();
  });

  it('lists failed deliveries with their last error, as text or JSON lines', async () => {
    const text = await run(delivery, 'list', '--state', 'failed', '--destination', 'crm');
    expect(text.code).toBe(0);
    expect(text.stdout).toHaveLength(3);
    expect(text.stdout[0]).toMatch(
      /^dlv_\S+ {2}failed {2}crm {2}contact\.updated {2}evt_\w {2}attempts=1 {2}last error: 410 HTTP 410: gone/,
    );
    expect(text.stderr).toEqual(['3 deliveries']);
    const json = await run(delivery, 'list', '--json', '--limit', '2');
    expect(json.stdout.map((row) => JSON.parse(row).state)).toEqual(['failed', 'failed']);
  });

  it('reads on past a page: --before the cursor it printed, or --all pages', async () => {
    const first = await run(delivery, 'list', '--state', 'failed', '--limit', '2');
    expect(first.code).toBe(0);
    expect(first.stdout).toHaveLength(2);
    const cursor = /more with --before (\S+) \(or --all\)$/.exec(first.stderr[0]!)?.[1];
    expect(cursor).toBeDefined();
    const rest = await run(delivery, 'list', '--state', 'failed', '--limit', '2', '--before', cursor!);
    expect(rest).toMatchObject({ code: 0, stderr: ['1 delivery'] });
    const ids = (lines: string[]) => lines.map((text) => text.split(' ')[0]);
    const all = await run(delivery, 'list', '--state', 'failed', '--limit', '1', '--all');
    expect(all).toMatchObject({ code: 0, stderr: ['3 deliveries'] });
    expect(ids(all.stdout)).toEqual([...ids(first.stdout), ...ids(rest.stdout)]);
    const whole = await run(delivery, 'list', '--state', 'failed');
    expect(ids(whole.stdout)).toEqual(ids(all.stdout));
    // Not a cursor, or one of another --state: bad usage, said in one line.
    for (const before of ['nonsense', cursor!]) {
      const bad = await run(
        delivery,
        'list',
        '--state',
        before === cursor ? 'pending' : 'failed',
        '--before',
        before,
      );
      expect(bad.code).toBe(2);
      expect(bad.stderr).toEqual([
        'chatbridge: --before is not a cursor this list gave out (use the one it printed, with the same --state and --destination)',
      ]);
    }
  });

  it('replays one delivery, then all failed of a destination', async () => {
    refuse = false;
    const [first] = await delivery.list({ state: 'failed' });
    const one = await run(delivery, 'replay', '--id', first!.id);
    expect(one).toMatchObject({
      code: 0,
      stdout: [`replayed ${first!.id} (contact.updated ${first!.eventId} to crm)`],
    });
    await crm.waitFor(() => crm.application.length === 1, 5000, 'the replayed one');

    const all = await run(delivery, 'replay', '--destination', 'crm', '--all-failed');
    expect(all.code).toBe(0);
    expect(all.stdout).toHaveLength(2);
    expect(all.stderr).toEqual(['replayed 2 failed deliveries to crm']);
    await crm.waitFor(() => crm.application.length === 3, 5000, 'all replayed');
  });

  it('exits 2 on bad usage and 1 on failures, with a one-line reason', async () => {
    for (const args of [
      [],
      ['frobnicate'],
      ['list', '--state', 'lost'],
      ['list', '--limit', '0'],
      ['list', '--colour'],
      ['replay'],
      ['replay', '--destination', 'crm'],
      ['replay', '--id', 'dlv_x', '--all-failed'],
    ]) {
      const result = await run(delivery, ...args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
    }
    const missing = await run(delivery, 'replay', '--id', 'dlv_missing');
    expect(missing).toMatchObject({ code: 1, stderr: ['chatbridge: no delivery dlv_missing'] });
    const nowhere = await run(delivery, 'replay', '--destination', 'nowhere', '--all-failed');
    expect(nowhere).toMatchObject({ code: 1, stderr: ['chatbridge: no destination nowhere'] });
  });
});
