import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inPool, jivo, personFor } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { type Receiver, startReceiver } from '../support/receiver.js';
import { type SentinelTopology, startSentinelTopology } from '../support/topology.js';

/**
 * DESIGN §12 on Redis Sentinel (one primary, two replicas, three Sentinels, all real processes):
 * a stream of webhooks runs while the primary is failed over twice — once by `SENTINEL FAILOVER`,
 * once by kill -9 (the killed server is restarted and rejoins as a replica) — and with
 * `durability.replicas: 2` (all replicas) every webhook the bridge answered 200 must
 * be stored afterwards. Failover errors answer 503 (never 500), the vendor retries them, and the
 * bridge recovers by itself: in the end every webhook is stored exactly once, every conversation
 * reached the CRM through BullMQ on the same Sentinel group, and /readyz is 200.
 */
const JIVO_TOKEN = 'ha-sentinel-jivo-token-0001';
const STREAM = 900;
const FAILOVER_AFTER_OK = 150;
const KILL_AFTER_OK = 450;
const TAG = 'sentinel';
const SECRET = `whsec_${Buffer.from('sentinel-test-secret-0123456789a').toString('base64')}`;

describe('a Sentinel failover during a webhook stream', () => {
  let topology: SentinelTopology;
  let bridge: TestBridge;
  let pool: Pool;
  let receiver: Receiver;

  beforeAll(async () => {
    topology = await startSentinelTopology();
    receiver = await startReceiver({ secret: SECRET });
    bridge = await startTestBridge({
      keyPrefix: 'ha-sentinel',
      config: {
        store: {
          sentinel: { name: topology.name, nodes: topology.sentinelNodes },
          // Every replica Sentinel may promote: with fewer, writes the old primary takes while a
          // replica is being promoted are acknowledged by the other replica and then lost (seen:
          // 126 with replicas: 1 of 2 on SENTINEL FAILOVER).
          durability: { replicas: 2, timeoutMs: 1000 },
        },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
        // Delivery runs on BullMQ through the same Sentinel client factory.
        destinations: [
          {
            id: 'crm',
            url: receiver.url,
            secret: SECRET,
            events: ['conversation.started'],
            retrySchedule: ['0s', '200ms', '500ms', '1s', '1s', '1s', '1s', '1s', '1s', '1s'],
          },
        ],
      },
    });
    pool = new Pool(bridge.url, { connections: 16 });
  });
  afterAll(async () => {
    await pool?.close();
    await bridge?.close();
    await receiver?.close();
    await topology?.stop();
  });

  async function post(index: number): Promise<number> {
    const response = await pool.request({
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(jivo.chatAccepted(personFor(TAG, index), 900_000 + index)),
    });
    await response.body.text();
    return response.statusCode;
  }

  async function admin(path: string): Promise<{ status: number; body: any }> {
    const response = await pool.request({
      method: 'GET',
      path,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    const text = await response.body.text();
    return { status: response.statusCode, body: text === '' ? undefined : JSON.parse(text) };
  }

  /** How many contacts the person has, and how many conversation.started entries the contact's timeline. */
  async function stored(index: number): Promise<{ contacts: number; started: number }> {
    const person = personFor(TAG, index).person;
    const found = await admin(`/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`);
    expect(found.status).toBe(200);
    const contacts = found.body.contacts as Array<{ id: string }>;
    if (contacts.length !== 1) return { contacts: contacts.length, started: 0 };
    const page = await admin(`/api/v1/contacts/${contacts[0]!.id}/timeline?limit=200`);
    expect(page.status).toBe(200);
    return {
      contacts: 1,
      started: (page.body.entries as Array<{ type: string }>).filter(
        (entry) => entry.type === 'conversation.started',
      ).length,
    };
  }

  it('loses no acknowledged webhook on SENTINEL FAILOVER and kill -9 of the primary, answers 503 meanwhile, and recovers', async () => {
    const outcomes = new Array<number>(STREAM);
    let ok = 0;
    const faults: Array<Promise<unknown>> = [];
    let killedPort: number | undefined;
    const firstPrimary = await topology.primaryPort();

    // A bounded stream at vendor-like concurrency; each worker pauses between webhooks so that
    // the stream is still running while the failovers happen.
    await inPool(STREAM, 8, async (index) => {
      outcomes[index] = await post(index);
      if (outcomes[index] === 200) {
        ok++;
        if (ok === FAILOVER_AFTER_OK) faults.push(topology.failover());
        if (ok === KILL_AFTER_OK) {
          faults.push(
            (async () => {
              const primary = await topology.primary();
              killedPort = primary.port;
              primary.kill();
              await topology.waitForNewPrimary(primary.port);
              // Restarted (as systemd would), it rejoins as a replica of the new primary.
              await primary.start();
            })(),
          );
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    });
    await Promise.all(faults);
    expect(killedPort, 'the stream reached the kill').toBeDefined();
    expect(killedPort).not.toBe(firstPrimary);

    // Never a 500: failover errors are 503 (retry later).
    expect(outcomes.filter((status) => status !== 200 && status !== 503)).toEqual([]);
    const acknowledged = outcomes.flatMap((status, index) => (status === 200 ? [index] : []));

    // The bridge recovered by itself: the vendor's retries of what was refused all land.
    const refused = outcomes.flatMap((status, index) => (status === 200 ? [] : [index]));
    // Liveness bounds, not speed: generous, so a loaded machine (lock TTLs, Sentinel timeouts and
    // the retry schedule all run on wall time) does not fail a test that asserts outcomes.
    const deadline = Date.now() + 180_000;
    await inPool(refused.length, 8, async (position) => {
      for (;;) {
        const status = await post(refused[position]!);
        if (status === 200) return;
        expect(status).toBe(503);
        expect(Date.now(), `retry of webhook ${refused[position]} kept failing`).toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    });

    const lost: number[] = [];
    await inPool(acknowledged.length, 8, async (position) => {
      const found = await stored(acknowledged[position]!);
      if (found.contacts !== 1 || found.started !== 1) lost.push(acknowledged[position]!);
    });
    expect(lost, 'acknowledged webhooks missing after the failovers').toEqual([]);

    const wrong: number[] = [];
    await inPool(STREAM, 8, async (index) => {
      const found = await stored(index);
      if (found.contacts !== 1 || found.started !== 1) wrong.push(index);
    });
    expect(wrong, 'after the retries every webhook is stored exactly once').toEqual([]);

    // Delivery (BullMQ on the same Sentinel group) came back too: every conversation reached
    // the CRM (at least once, as delivery promises). This once failed in about one run in three,
    // three ways (see src/store/connection.ts keepConnecting, src/delivery/drain.ts and
    // restoreLostJobs in src/delivery/index.ts): a client ioredis ended for good, deliveries whose
    // records a failover lost after the outbox was trimmed, and queue jobs a failover lost. The
    // bound is on the outcome; lost jobs are found by the 30 s check, orphaned running jobs by
    // BullMQ's stalled-job check.
    const delivered = () =>
      new Set(
        receiver.application
          .filter((event) => event.payload.type === 'conversation.started')
          .map((event) => event.payload.contact?.id),
      ).size;
    await receiver.waitFor(() => delivered() >= STREAM, 240_000, 'every conversation delivered');
    expect(delivered()).toBe(STREAM);

    const ready = await fetch(`${bridge.url}/readyz`);
    expect(ready.status).toBe(200);
  }, 600_000);
});
