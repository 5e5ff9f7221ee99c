import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import type { Lock } from '../../src/store/types.js';
import { inPool, jivo, personFor } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { capturingLogger, type LogLine } from '../support/logs.js';
import { type Receiver, startReceiver } from '../support/receiver.js';
import {
  type ClusterTopology,
  failoverBridgeChannels,
  startClusterTopology,
  topologyDestination,
} from '../support/topology.js';

/**
 * DESIGN §12 on a real Redis Cluster with replicas (three primaries, one replica each, AOF,
 * min-replicas-to-write 1, all real processes), failed over under running bridges:
 *
 * 1. With `durability.replicas: 1`, a stream of JivoChat webhooks runs while the primary serving
 *    the bridge's hash tag is failed over three times: by `CLUSTER FAILOVER` on its replica (the
 *    graceful kind), by freezing it (SIGSTOP, resumed once its replica was elected) and by
 *    kill -9 (restarted once its replica was elected); each old primary rejoins as a replica.
 *    No acknowledged webhook is lost. While no primary with a replica serves the slot, webhooks
 *    and /readyz answer 503 (never 500, never a hang), then 200 again by themselves. After the
 *    vendor's retries every webhook is stored once, every conversation reaches the CRM (BullMQ
 *    on the same Cluster) under one event id, a lock taken before the kill is still held after it,
 *    and the scheduled Chatvisor poll (node-cron; its tick claims and run lock in the same slot)
 *    runs again and records what happened after the failovers.
 * 2. What `durability.replicas: 0` costs: a graceful failover loses nothing, but webhooks answered
 *    while the replica lagged are lost when the primary dies (the replica is stopped on purpose,
 *    so the loss is certain, not a race); with `replicas: 1` the same webhooks are refused (503)
 *    instead of acknowledged.
 * 3. A primary that hangs for good (frozen, its connections open): the bridge leaves it for the
 *    replica the Cluster elected (intake, /readyz and delivery), without a MOVED or a closed
 *    connection to tell it.
 */
const JIVO_TOKEN = 'ha-cluster-failover-jivo-0001';
const CV_TOKEN = 'ha-cluster-failover-cv-00001';
const SECRET = `whsec_${Buffer.from('cluster-failover-secret-0123456').toString('base64')}`;
const PREFIX = 'ha-cfail';
/** The bridge's keys all carry this hash tag (src/store/connection.ts effectiveKeyPrefix). */
const TAG_KEY = `{${PREFIX}}`;
/**
 * The stream sends at least this many webhooks, and goes on until every fault has been set off:
 * the faults follow the count of 200s, and an outage that outlasts the stream's remaining
 * webhooks on a busy machine (all answered 503) used to leave the last fault never reached.
 */
const STREAM = 700;
/** Its bound, so that a bridge that never answers 200 again ends the test with a message. */
const STREAM_AT_MOST = 7_000;
/** Webhooks sent during the outages are numbered from here (the stream's own from 0). */
const OUTAGE_BASE = 100_000;
const FAILOVER_AFTER_OK = 100;
const PAUSE_AFTER_OK = 250;
const KILL_AFTER_OK = 400;
const TAG = 'cfail';

/** Liveness bound on one HTTP answer: a hang fails the test instead of stalling it. */
const ANSWER_WITHIN_MS = 60_000;

describe('a Redis Cluster failover under a running bridge', () => {
  let cluster: ClusterTopology;
  let receiver: Receiver;
  let chatvisor: FakeChatvisor;
  let bridge: TestBridge;
  let pool: Pool;
  /** The bridge's log (info and up), for what the failovers made it say. */
  let logLines: LogLine[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    cluster = await startClusterTopology({ replicas: 1 });
    receiver = await startReceiver({ secret: SECRET });
    chatvisor = await startFakeChatvisor();
    const { logger, lines } = capturingLogger('info');
    logLines = lines;
    bridge = await startTestBridge({
      keyPrefix: PREFIX,
      logger,
      config: {
        store: {
          cluster: { nodes: cluster.nodes },
          // The slot's one replica must have each acknowledged webhook.
          durability: { replicas: 1, timeoutMs: 1000 },
        },
        ...failoverBridgeChannels({
          jivoToken: JIVO_TOKEN,
          chatvisorToken: CV_TOKEN,
          chatvisor,
          receiverUrl: receiver.url,
          secret: SECRET,
        }),
      },
    });
    pool = new Pool(bridge.url, { connections: 16 });
  });
  afterAll(async () => {
    await pool?.close();
    await bridge?.close();
    await chatvisor?.close();
    await receiver?.close();
    await cluster?.stop();
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
  });

  async function postTo(target: Pool, index: number, tag = TAG): Promise<number> {
    const response = await target.request({
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(jivo.chatAccepted(personFor(tag, index), 800_000 + index)),
      headersTimeout: ANSWER_WITHIN_MS,
      bodyTimeout: ANSWER_WITHIN_MS,
    });
    await response.body.text();
    return response.statusCode;
  }

  async function adminOf(target: Pool, path: string): Promise<any> {
    const response = await target.request({
      method: 'GET',
      path,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
      headersTimeout: ANSWER_WITHIN_MS,
    });
    const text = await response.body.text();
    expect(response.statusCode, `${path}: ${text}`).toBe(200);
    return JSON.parse(text);
  }

  /** How many contacts the person has, and how many conversation.started entries its timeline. */
  async function storedIn(
    target: Pool,
    index: number,
    tag = TAG,
  ): Promise<{ contacts: number; started: number }> {
    const person = personFor(tag, index).person;
    const found = await adminOf(
      target,
      `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
    );
    const contacts = found.contacts as Array<{ id: string }>;
    if (contacts.length !== 1) return { contacts: contacts.length, started: 0 };
    const page = await adminOf(target, `/api/v1/contacts/${contacts[0]!.id}/timeline?limit=200`);
    return {
      contacts: 1,
      started: (page.entries as Array<{ type: string }>).filter(
        (entry) => entry.type === 'conversation.started',
      ).length,
    };
  }

  async function readyz(url: string): Promise<number> {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) });
    await response.text();
    return response.status;
  }

  async function pollRuns(outcome: string): Promise<number> {
    const metric = await bridge.bridge.metrics.jobRuns.get();
    return metric.values
      .filter((value) => value.labels.job === 'conversation-poll' && value.labels.outcome === outcome)
      .reduce((sum, value) => sum + value.value, 0);
  }

  async function recordedCustomer(customerId: string): Promise<boolean> {
    const found = await adminOf(
      pool,
      `/api/v1/contacts?identity=${encodeURIComponent(`customer:cv:${customerId}`)}`,
    );
    return (found.contacts as unknown[]).length === 1;
  }

  it('durability.replicas 1: CLUSTER FAILOVER, a frozen and a killed primary lose no acknowledged webhook; 503 meanwhile, then everything recovers', async () => {
    onTestFailed(() => {
      // What the failovers made the bridge say (warn and up), counted, and its errors in full.
      const said = new Map<string, number>();
      for (const line of logLines) if (line.level >= 40) said.set(line.msg, (said.get(line.msg) ?? 0) + 1);
      console.log('bridge warnings and errors:', Object.fromEntries(said));
      for (const line of logLines) if (line.level >= 50) console.log(JSON.stringify(line));
    });
    // The scheduler polls Chatvisor before anything fails: the first run records where things
    // stand, the next ones record what changes.
    await expect
      .poll(async () => (await adminOf(pool, '/api/v1/channels/cv/conversation-poll')).first, {
        timeout: 60_000,
        interval: 250,
      })
      .not.toBeNull();
    chatvisor.addCustomer({ customerId: 'before', email: 'before@example.org' });
    chatvisor.addMessage('before', 'hello before the failover');
    await expect.poll(() => recordedCustomer('before'), { timeout: 60_000, interval: 250 }).toBe(true);

    const store = bridge.bridge.store;
    const outcomes: number[] = [];
    let ok = 0;
    const faults: Array<Promise<unknown>> = [];
    /** The primary serving the tag: at the start, then after each failover. */
    const owners = [await cluster.ownerOf(TAG_KEY)];
    let lock: Lock | undefined;
    /** What the bridge answered while no primary with a replica served the slot (per outage). */
    const duringOutage: Array<{ readyz: number[]; webhook: number[] }> = [];
    /** Webhooks sent during the outages, numbered from OUTAGE_BASE (the vendor retries them later). */
    let outageSent = 0;
    /** Faults set off so far (each in turn after the one before). */
    let faultsStarted = 0;

    const graceful = async () => {
      owners.push(await cluster.failover(TAG_KEY));
    };
    /**
     * The primary is frozen (SIGSTOP: connections stay open, nothing answers, like a hung server or
     * a partition) or killed (-9); its replica is elected, and it comes back (resumed, or restarted
     * as systemd would) as the new primary's replica.
     */
    const outage = async (kind: 'pause' | 'kill') => {
      if (kind === 'kill') {
        // A lock held across the failover (a contact's, a scheduled job's): taken and confirmed on
        // the replica (WAIT) before the primary dies.
        lock = await store.lock(['ha-cluster-failover-probe'], { ttlMs: 10 * 60_000, waitMs: 0 });
        await store.confirmWrites!();
      }
      const owner = owners.at(-1)!;
      const server = cluster.servers[owner]!;
      if (kind === 'kill') server.kill();
      else server.pause();
      const seen = { readyz: [] as number[], webhook: [] as number[] };
      duringOutage.push(seen);
      // The slot has no primary, then a primary without a replica (min-replicas-to-write 1):
      // the bridge cannot confirm a write all this while, and says so without hanging.
      await expect.poll(() => readyz(bridge.url), { timeout: 60_000, interval: 100 }).toBe(503);
      seen.readyz.push(503);
      seen.webhook.push(await postTo(pool, OUTAGE_BASE + outageSent++));
      owners.push(await cluster.waitForNewOwner(TAG_KEY, owner));
      seen.readyz.push(await readyz(bridge.url));
      seen.webhook.push(await postTo(pool, OUTAGE_BASE + outageSent++));
      if (kind === 'kill') await server.start();
      else server.resume();
      await cluster.waitForReplica(owner);
    };

    let sent = 0;
    await inPool(8, 8, async () => {
      while ((sent < STREAM || faultsStarted < 3) && sent < STREAM_AT_MOST) {
        const index = sent++;
        outcomes[index] = await postTo(pool, index);
        if (outcomes[index] === 200) {
          ok++;
          // One after the other: each waits for the one before to have finished.
          const inTurn = (fault: () => Promise<void>) => {
            faultsStarted++;
            faults.push(Promise.all(faults).then(fault));
          };
          if (ok === FAILOVER_AFTER_OK) inTurn(graceful);
          if (ok === PAUSE_AFTER_OK) inTurn(() => outage('pause'));
          if (ok === KILL_AFTER_OK) inTurn(() => outage('kill'));
        }
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    });
    await Promise.all(faults);
    expect(faultsStarted, `the stream set off every fault within ${STREAM_AT_MOST} webhooks`).toBe(3);
    /** Every webhook's number: the stream's, then those sent during the outages. */
    const everyIndex = [
      ...Array.from({ length: sent }, (_, index) => index),
      ...Array.from({ length: outageSent }, (_, offset) => OUTAGE_BASE + offset),
    ];
    expect(owners, 'the stream reached every failover').toHaveLength(4);
    for (let step = 1; step < owners.length; step++) expect(owners[step]).not.toBe(owners[step - 1]);
    const outageAnswers = { readyz: [503, 503], webhook: [503, 503] };
    expect(duringOutage).toEqual([outageAnswers, outageAnswers]);

    // Never a 500: failover errors are 503 (retry later).
    expect(outcomes.filter((status) => status !== 200 && status !== 503)).toEqual([]);
    const acknowledged = outcomes.flatMap((status, index) => (status === 200 ? [index] : []));
    const refused = [
      ...outcomes.flatMap((status, index) => (status === 200 ? [] : [index])),
      ...Array.from({ length: outageSent }, (_, offset) => OUTAGE_BASE + offset),
    ];

    // Ready again by itself, and the vendor's retries of what was refused all land.
    await expect.poll(() => readyz(bridge.url), { timeout: 120_000, interval: 250 }).toBe(200);
    const deadline = Date.now() + 180_000;
    await inPool(refused.length, 8, async (position) => {
      for (;;) {
        const status = await postTo(pool, refused[position]!);
        if (status === 200) return;
        expect(status).toBe(503);
        expect(Date.now(), `retry of webhook ${refused[position]} kept failing`).toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    });

    const lost: number[] = [];
    await inPool(acknowledged.length, 8, async (position) => {
      const found = await storedIn(pool, acknowledged[position]!);
      if (found.contacts !== 1 || found.started !== 1) lost.push(acknowledged[position]!);
    });
    expect(lost, 'acknowledged webhooks missing after the failovers').toEqual([]);
    const wrong: number[] = [];
    await inPool(everyIndex.length, 8, async (position) => {
      const index = everyIndex[position]!;
      const found = await storedIn(pool, index);
      if (found.contacts !== 1 || found.started !== 1) wrong.push(index);
    });
    expect(wrong, 'after the retries every webhook is stored exactly once').toEqual([]);

    // Delivery (BullMQ on the same Cluster) came back: every conversation reached the CRM, and
    // under one event id each (repeated attempts carry the same webhook-id; the receiver dedupes).
    const started = () =>
      receiver.application.filter(
        (event) =>
          event.payload.type === 'conversation.started' &&
          (event.payload.channel as { id: string }).id === 'site',
      );
    await receiver.waitFor(
      () => new Set(started().map((event) => event.payload.contact?.id)).size >= everyIndex.length,
      240_000,
      'every conversation delivered',
    );
    expect(new Set(started().map((event) => event.payload.contact?.id)).size).toBe(everyIndex.length);
    expect(started()).toHaveLength(everyIndex.length);
    expect(receiver.requests.every((request) => request.verified)).toBe(true);

    // The lock survived the kill (the replica had it): nobody else can take it; its holder can
    // still release it on the new primary, and then it is free.
    await expect(store.lock(['ha-cluster-failover-probe'], { ttlMs: 1000, waitMs: 0 })).rejects.toMatchObject(
      {
        code: 'store_busy',
      },
    );
    await lock!.release();
    const again = await store.lock(['ha-cluster-failover-probe'], { ttlMs: 1000, waitMs: 0 });
    await again.release();

    // The scheduled poll runs again after the failovers and records what happened meanwhile.
    const okRunsBefore = await pollRuns('ok');
    chatvisor.addCustomer({ customerId: 'after', email: 'after@example.org' });
    chatvisor.addMessage('after', 'hello after the failover');
    await expect.poll(() => recordedCustomer('after'), { timeout: 120_000, interval: 250 }).toBe(true);
    await expect.poll(() => pollRuns('ok'), { timeout: 60_000, interval: 250 }).toBeGreaterThan(okRunsBefore);

    expect(await readyz(bridge.url)).toBe(200);
    expect(unhandled).toEqual([]);
  }, 900_000);
  it('durability.replicas 0: a graceful failover loses nothing; a forced one loses what the replica lacked, which replicas 1 refuses instead', async () => {
    // Two bridges on one hash tag (so one slot, one primary, one replica): one answers vendors
    // without WAIT, the other after WAIT 1.
    const tagKey = '{ha-cfail-loss}';
    const open = async (name: string, replicas: number) => {
      const opened = await startTestBridge({
        keyPrefix: `${tagKey}:${name}`,
        start: false,
        config: {
          store: { cluster: { nodes: cluster.nodes }, durability: { replicas, timeoutMs: 1000 } },
          channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
        },
      });
      return { bridge: opened, pool: new Pool(opened.url, { connections: 8 }) };
    };
    const without = await open('r0', 0);
    const withWait = await open('r1', 1);
    try {
      // Graceful: CLUSTER FAILOVER during a stream; the primary stops its clients until the
      // replica has everything, so even without WAIT nothing acknowledged is lost.
      const GRACEFUL = 200;
      const outcomes = new Array<number>(GRACEFUL);
      let ok = 0;
      let failover: Promise<number> | undefined;
      await inPool(GRACEFUL, 8, async (index) => {
        outcomes[index] = await postTo(without.pool, index, 'loss-g');
        if (outcomes[index] === 200 && ++ok === 50) failover = cluster.failover(tagKey);
        await new Promise((resolve) => setTimeout(resolve, 10));
      });
      expect(failover, 'the stream reached the failover').toBeDefined();
      await failover;
      expect(outcomes.filter((status) => status !== 200 && status !== 503)).toEqual([]);
      const missing: number[] = [];
      await inPool(GRACEFUL, 8, async (index) => {
        if (outcomes[index] !== 200) return;
        if ((await storedIn(without.pool, index, 'loss-g')).contacts !== 1) missing.push(index);
      });
      expect(missing, 'acknowledged webhooks missing after CLUSTER FAILOVER, replicas 0').toEqual([]);

      // Forced, with a replica that lags: it is stopped (SIGSTOP), so it cannot have what the
      // primary takes now. Without WAIT those webhooks are answered 200; with WAIT 1, 503.
      const owner = await cluster.ownerOf(tagKey);
      const [replica] = await cluster.replicasOf(owner);
      expect(replica).toBeDefined();
      const LAGGING = 10;
      cluster.servers[replica!]!.pause();
      let answeredWithout: number[];
      let answeredWithWait: number[];
      try {
        answeredWithout = await Promise.all(
          Array.from({ length: LAGGING }, (_, index) => postTo(without.pool, index, 'loss-f')),
        );
        answeredWithWait = await Promise.all(
          Array.from({ length: LAGGING }, (_, index) => postTo(withWait.pool, index, 'loss-w')),
        );
        cluster.servers[owner]!.kill();
      } finally {
        cluster.servers[replica!]!.resume();
      }
      expect(answeredWithout).toEqual(Array(LAGGING).fill(200));
      expect(answeredWithWait).toEqual(Array(LAGGING).fill(503));
      expect(await cluster.waitForNewOwner(tagKey, owner)).toBe(replica);
      await cluster.servers[owner]!.start();
      await cluster.waitForReplica(owner);
      for (const { bridge: each } of [without, withWait])
        await expect.poll(() => readyz(each.url), { timeout: 120_000, interval: 250 }).toBe(200);

      // The replica that took over never had them: every one of the webhooks answered 200
      // without WAIT is gone (README: what replicas 0 risks). The ones refused with WAIT were
      // never acknowledged: the vendor sends them again, and they are stored.
      let lost = 0;
      for (let index = 0; index < LAGGING; index++)
        if ((await storedIn(without.pool, index, 'loss-f')).contacts === 0) lost++;
      expect(lost).toBe(LAGGING);
      for (let index = 0; index < LAGGING; index++) {
        await expect
          .poll(() => postTo(withWait.pool, index, 'loss-w'), { timeout: 60_000, interval: 250 })
          .toBe(200);
        expect(await storedIn(withWait.pool, index, 'loss-w')).toEqual({ contacts: 1, started: 1 });
      }
      expect(unhandled).toEqual([]);
    } finally {
      for (const { bridge: each, pool: itsPool } of [without, withWait]) {
        await itsPool.close();
        await each.close();
      }
    }
  }, 600_000);
  it('a primary that hangs and never comes back (SIGSTOP: no connection closes): intake, readiness and delivery follow the replica that took over', async () => {
    const tagKey = '{ha-cfail-hang}';
    const hangReceiver = await startReceiver({ secret: SECRET });
    const hung = await startTestBridge({
      keyPrefix: tagKey,
      config: {
        store: { cluster: { nodes: cluster.nodes } },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' }],
        destinations: [topologyDestination(hangReceiver.url, SECRET, ['conversation.started'])],
      },
    });
    const hungPool = new Pool(hung.url, { connections: 8 });
    const owner = await cluster.ownerOf(tagKey);
    let promoted: number | undefined;
    try {
      const BEFORE = 5;
      for (let index = 0; index < BEFORE; index++) expect(await postTo(hungPool, index, 'hang')).toBe(200);
      await hangReceiver.waitFor(() => hangReceiver.application.length >= BEFORE, 60_000, 'delivered before');

      cluster.servers[owner]!.pause();
      promoted = await cluster.waitForNewOwner(tagKey, owner);
      // Its only replica is the frozen one: let it take writes without (an operator's choice, or
      // what a shard with a second replica gives by itself).
      await cluster.configSet(promoted, 'min-replicas-to-write', '0');

      await expect.poll(() => readyz(hung.url), { timeout: 60_000, interval: 250 }).toBe(200);
      const AFTER = 5;
      for (let index = BEFORE; index < BEFORE + AFTER; index++)
        await expect
          .poll(() => postTo(hungPool, index, 'hang'), { timeout: 60_000, interval: 250 })
          .toBe(200);
      for (let index = 0; index < BEFORE + AFTER; index++)
        expect(await storedIn(hungPool, index, 'hang')).toEqual({ contacts: 1, started: 1 });
      await hangReceiver.waitFor(
        () => hangReceiver.application.length >= BEFORE + AFTER,
        120_000,
        'delivered after the primary hung',
      );
      expect(unhandled).toEqual([]);
    } finally {
      await hungPool.close();
      await hung.close();
      await hangReceiver.close();
      if (promoted !== undefined) await cluster.configSet(promoted, 'min-replicas-to-write', '1');
      cluster.servers[owner]!.resume();
      await cluster.waitForReplica(owner);
    }
  }, 600_000);
});
