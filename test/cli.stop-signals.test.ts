import { EventEmitter } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDeliveriesArgs, runDeliveriesRequest } from '../src/cli/deliveries.js';
import { runCli } from '../src/cli/main.js';
import { configSchema } from '../src/config/schema.js';
import { REINDEX_LOCK } from '../src/contacts/reindex.js';
import { createDelivery, type Delivery } from '../src/delivery/index.js';
import { createOutboxPublisher, type OutboxEntry } from '../src/events/outbox.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { capture } from './support/cli.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Ctrl-C (SIGINT) or SIGTERM during a long CLI command other than `sync agents` (whose own test is
 * test/slow/agent-sync.cli-signal.test.ts): it stops at a safe point of its own and exits 1 saying
 * how far it got, and --help says so. Before, the signal killed the process where it stood: a
 * `contacts reindex` kept its lock for a minute (the next one said "another instance is
 * re-indexing the contacts now"), a `deliveries replay --all-failed` stopped without a word of
 * how many it had replayed. The signal is said on an emitter of the test's own (CliStreams.signals),
 * so the test runner gets none.
 */

/** A signal source that says `signal` as soon as a command listens (a Ctrl-C at once). */
function signalOnListen(signal: NodeJS.Signals) {
  const emitter = new EventEmitter();
  emitter.on('newListener', (event: string) => {
    if (event === signal) queueMicrotask(() => emitter.emit(signal, signal));
  });
  return emitter;
}

describe('contacts reindex stopped by Ctrl-C', () => {
  const prefix = uniquePrefix('cli-stop-reindex');
  let url: string;
  let store: Store;
  let file: string;

  beforeAll(async () => {
    url = await getTestRedisUrl();
    store = await createRedisStore({ url, keyPrefix: prefix, logger: pino({ level: 'silent' }) });
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cli-stop-'));
    file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      `admin: { token: a-long-enough-admin-token }\nstore: { redis: "${url}", keyPrefix: "${prefix}" }\nlog: { level: silent }\n`,
    );
  });
  afterAll(async () => {
    await store?.close();
    if (url) await cleanupPrefix(url, prefix);
  });

  it('stops, lets go of its lock at once, and exits 1 saying so; the next run finishes', async () => {
    const stopped = capture();
    const code = await runCli(['contacts', 'reindex', '--config', file], {
      ...stopped.io,
      signals: signalOnListen('SIGINT'),
    });
    expect({ code, err: stopped.err }).toMatchObject({ code: 1 });
    expect(stopped.err[0]).toBe(
      "chatbridge: SIGINT: stopping 'contacts reindex' at a safe point (SIGINT again exits at once)",
    );
    expect(stopped.err.at(-1)).toMatch(
      /^chatbridge: 'contacts reindex' stopped by SIGINT after 0 records read \(0 changed\); what is done stays done and the lock is let go: run it again to finish$/,
    );
    expect(JSON.parse(stopped.out[0]!)).toMatchObject({ complete: false });
    // The lock is free now, not a minute later.
    const lock = await store.lock([REINDEX_LOCK], { ttlMs: 1_000, waitMs: 0 });
    await lock.release();
    const again = capture();
    expect(await runCli(['contacts', 'reindex', '--config', file], again.io)).toBe(0);
    expect(JSON.parse(again.out[0]!)).toMatchObject({ complete: true });
  });
});

describe('deliveries stopped by Ctrl-C', () => {
  const SECRET = `whsec_${Buffer.from('cli-stop-secret-0123456789abcdefg').toString('base64')}`;
  let crm: Receiver;
  let store: Store;
  let delivery: Delivery;

  const entry = (id: string): OutboxEntry => ({
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
  });

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    crm.respond(() => ({ kind: 'status', status: 410, body: 'gone' }));
    store = createMemoryStore();
    const events = createOutboxPublisher(store);
    delivery = createDelivery({
      config: configSchema.parse({
        admin: { token: 'admin-token-0123456789' },
        destinations: [{ id: 'crm', url: crm.url, secret: SECRET, retrySchedule: ['0s'] }],
      }),
      store,
      redisUrl: undefined,
      keyPrefix: 'cli-stop',
      events,
      http: createHttpClient(),
      logger: pino({ level: 'silent' }),
      metrics: new Metrics(),
      now: () => new Date(),
    });
    await delivery.start();
    await events.publish([entry('evt_a'), entry('evt_b'), entry('evt_c')]);
    for (let tries = 0; (await delivery.list({ state: 'failed' })).length < 3 && tries < 250; tries++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await delivery.list({ state: 'failed' })).toHaveLength(3);
  });
  afterAll(async () => {
    await delivery?.close();
    await store?.close();
    await crm?.close();
  });

  /** Stdout and stderr, and a stop that Ctrl-C asks for once the first result line is out. */
  function stoppedAfterFirstLine() {
    const controller = new AbortController();
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      io: {
        stdout: (line: string) => {
          out.push(line);
          controller.abort();
        },
        stderr: (line: string) => err.push(line),
      },
      stop: {
        signal: controller.signal,
        get by() {
          return controller.signal.aborted ? ('SIGINT' as const) : undefined;
        },
      },
    };
  }

  it('list --all stops between pages and says where to go on from', async () => {
    const run = stoppedAfterFirstLine();
    const request = parseDeliveriesArgs(['list', '--state', 'failed', '--limit', '1', '--all']);
    expect(await runDeliveriesRequest(request, delivery, run.io, run.stop)).toBe(1);
    expect(run.out).toHaveLength(1);
    expect(run.err).toHaveLength(1);
    expect(run.err[0]).toMatch(
      /^chatbridge: 'deliveries list' stopped by SIGINT after 1 delivery; go on with --before \S+$/,
    );
  });

  it('replay --all-failed stops between deliveries: the ones replayed on stdout, how many are left', async () => {
    const run = stoppedAfterFirstLine();
    const request = parseDeliveriesArgs(['replay', '--destination', 'crm', '--all-failed']);
    expect(await runDeliveriesRequest(request, delivery, run.io, run.stop)).toBe(1);
    expect(run.out).toHaveLength(1);
    expect(run.out[0]).toMatch(/^dlv_/);
    expect(run.err).toEqual([
      "chatbridge: 'deliveries replay' stopped by SIGINT: replayed 1 failed delivery to crm, 2 not yet (still failed); run it again for the rest",
    ]);
    // The two it did not get to are still failed (the replayed one may have failed again since).
    const failed = (await delivery.list({ state: 'failed' })).map((item) => item.id);
    expect(failed.filter((id) => id !== run.out[0])).toHaveLength(2);
  });
});

describe('--help of a command Ctrl-C stops at a safe point says what it does', () => {
  for (const [command, words] of [
    [['sync', 'agents'], 'records its run as interrupted'],
    [['contacts', 'reindex'], 'lets go of the re-index lock'],
    [['deliveries', 'replay'], 'stops between deliveries'],
    [['deliveries', 'list'], 'stops between pages'],
  ] as const) {
    it(command.join(' '), async () => {
      const help = capture();
      expect(await runCli([...command, '--help'], help.io)).toBe(0);
      const text = help.out.join('\n');
      expect(text).toContain('Ctrl-C (SIGINT) or SIGTERM: ');
      expect(text).toContain(words);
      expect(text).toContain('a second one exits at once');
    });
  }
});
