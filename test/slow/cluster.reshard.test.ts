import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { buildClaims, openAnswer, sealRequest } from '../../adapters/livetex/codec.js';
import { parseConfig } from '../../src/config/load.js';
import { nameWords } from '../../src/contacts/engine.js';
import { key, storedId } from '../../src/contacts/keys.js';
import { encodeRecord, newRecord } from '../../src/contacts/record.js';
import { reindexContacts } from '../../src/contacts/reindex.js';
import { StoreBusyError } from '../../src/errors.js';
import { defaultRegistry } from '../../src/registry.js';
import { closeRedisClient, createRedisClient } from '../../src/store/connection.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import { inPool, jivo, personFor } from '../support/fault.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { capturingLogger, type LogLine } from '../support/logs.js';
import { type Receiver, startReceiver } from '../support/receiver.js';
import { type ClusterTopology, startClusterTopology, topologyDestination } from '../support/topology.js';

/**
 * DESIGN §12, resharding under load: on a Cluster one bridge (one keyPrefix) lives in one hash
 * slot, so a resharding moves that slot, with every key of the bridge, to another primary while
 * webhooks keep arriving. Two bridge instances (one keyPrefix) on a private 3-primary Cluster take
 * a steady JivoChat stream (each new person's chat_accepted at both instances at once, then an
 * offline message and the chat's end) and a few LiveTex lookups, with delivery to a CRM-like
 * receiver (BullMQ, in the same slot), while the slot is migrated key by key to another primary
 * and back, as `redis-cli --cluster reshard` does it (SETSLOT IMPORTING/MIGRATING, MIGRATE a few
 * keys at a time, SETSLOT NODE). Between two MIGRATEs the slot is split between the nodes, so
 * commands get ASK (followed by the client) and multi-key scripts whose keys are split get
 * TRYAGAIN. Asserted are outcomes, never timings: every answer is 200 or 503 (never 500); after
 * the vendor's retries every webhook is stored exactly once and each new person is one contact
 * (the contact locks held across the split); every event reaches the CRM under one event id; a
 * lookup refused with 503 is answered when the same request comes again (its one-time jti was not
 * spent by the refused attempt); a lock taken before the move is still held after it; and the
 * bridge keeps working on the slot's final owner.
 */
const JIVO_TOKEN = 'ha-reshard-jivo-token-0001';
const LIVETEX_TOKEN = 'ha-reshard-livetex-token-01';
const SECRET = `whsec_${Buffer.from('cluster-reshard-secret-012345678').toString('base64')}`;
const PREFIX = 'ha-reshard';
/** The bridge's keys all carry this hash tag (src/store/connection.ts effectiveKeyPrefix). */
const TAG_KEY = `{${PREFIX}}`;
const TAG = 'reshard';
/** People whose conversations are stored before the first migration starts. */
const BEFORE = 24;
/** People started after the second migration ended. */
const AFTER = 10;
/** A bound on the stream, should the migrations never end (the test then fails, not hangs). */
const MOST_PEOPLE = 2000;
/** Liveness bound on one HTTP answer: a hang fails the test instead of stalling it. */
const ANSWER_WITHIN_MS = 60_000;

/**
 * Two bridge instances (one keyPrefix) on a private 3-primary Cluster, delivering to one
 * CRM-like receiver, each with a pool of 8 connections and its log lines kept: started before the
 * describe's tests and stopped after them (the hooks are registered here). `config` is the
 * bridges' config but the store, given the receiver's URL.
 */
function twoBridgesOnACluster(options: {
  keyPrefix: string;
  logLevel: 'info' | 'debug';
  config: (receiverUrl: string) => Record<string, unknown>;
}) {
  const world = {
    cluster: undefined as unknown as ClusterTopology,
    receiver: undefined as unknown as Receiver,
    bridges: [] as TestBridge[],
    pools: [] as Pool[],
    logs: [] as LogLine[][],
  };
  beforeAll(async () => {
    world.cluster = await startClusterTopology();
    world.receiver = await startReceiver({ secret: SECRET });
    for (let i = 0; i < 2; i++) {
      const { logger, lines } = capturingLogger(options.logLevel);
      world.logs.push(lines);
      const bridge = await startTestBridge({
        keyPrefix: options.keyPrefix,
        logger,
        config: { store: { cluster: { nodes: world.cluster.nodes } }, ...options.config(world.receiver.url) },
      });
      world.bridges.push(bridge);
      world.pools.push(new Pool(bridge.url, { connections: 8 }));
    }
  });
  afterAll(async () => {
    await Promise.all(world.pools.map((pool) => pool.close()));
    for (const bridge of world.bridges) await bridge.close();
    await world.receiver?.close();
    await world.cluster?.stop();
  });
  return world;
}

/**
 * POST a webhook like a vendor: a 503 is sent again (after a pause) until it is answered, at
 * most `retries` times; `onAnswer` sees every answer. The final status.
 */
async function postAsVendor(
  pool: Pool,
  path: string,
  body: unknown,
  retries: number,
  onAnswer?: (status: number, text: string) => void,
): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const response = await pool.request({
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      headersTimeout: ANSWER_WITHIN_MS,
      bodyTimeout: ANSWER_WITHIN_MS,
    });
    const text = await response.body.text();
    onAnswer?.(response.statusCode, text);
    if (response.statusCode !== 503 || attempt >= retries) return response.statusCode;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `use` a plain client of one Cluster node (by its index), closed after. */
async function onServer<T>(
  cluster: ClusterTopology,
  server: number,
  use: (client: Redis) => Promise<T>,
): Promise<T> {
  const client = new Redis({ host: '127.0.0.1', port: cluster.servers[server]!.port, lazyConnect: true });
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

describe('resharding the slot of a running bridge on a Redis Cluster', () => {
  const world = twoBridgesOnACluster({
    keyPrefix: PREFIX,
    logLevel: 'info',
    config: (receiverUrl) => ({
      // The lookup keys are kept encrypted under it (both instances read the same ones).
      secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
      channels: [
        { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' },
        { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
      ],
      destinations: [
        topologyDestination(receiverUrl, SECRET, [
          'contact.created',
          'conversation.started',
          'conversation.finished',
        ]),
      ],
    }),
  });
  const { bridges, pools, logs } = world;

  type Phase = 'before' | 'moving' | 'after';
  let phase: Phase = 'before';
  /** Every HTTP answer the stream and the lookups got, with the phase it came in. */
  const answers: Array<{ phase: Phase; status: number; what: string }> = [];
  /** Called after every answer (the migration paces its MIGRATEs by them). */
  let onAnswer: () => void = () => {};

  function record(status: number, what: string): void {
    answers.push({ phase, status, what });
    onAnswer();
  }

  /** Resolves once `count` more answers came back (whatever they were). */
  function moreAnswers(count: number): Promise<void> {
    const target = answers.length + count;
    return new Promise((resolve) => {
      const previous = onAnswer;
      onAnswer = () => {
        previous();
        if (answers.length >= target) {
          onAnswer = previous;
          resolve();
        }
      };
    });
  }

  /** A webhook sent like a vendor (postAsVendor), every answer recorded. */
  const deliver = (pool: Pool, body: unknown, what: string) =>
    postAsVendor(pool, `/webhooks/jivochat/site/${JIVO_TOKEN}`, body, 200, (status, text) =>
      record(status, `${what}${status === 200 ? '' : `: ${text}`}`),
    );

  async function admin(pool: Pool, path: string): Promise<any> {
    const response = await pool.request({
      method: 'GET',
      path,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
      headersTimeout: ANSWER_WITHIN_MS,
    });
    const text = await response.body.text();
    expect(response.statusCode, `${path}: ${text}`).toBe(200);
    return JSON.parse(text);
  }

  /** `ASKING` commands served so far, over every node (each is a client following an ASK). */
  async function askingServed(): Promise<number> {
    let total = 0;
    for (const server of world.cluster.servers.keys()) {
      const stats = await onServer(world.cluster, server, (client) => client.info('commandstats'));
      total += Number(/cmdstat_asking:calls=(\d+)/.exec(stats)?.[1] ?? 0);
    }
    return total;
  }

  const keysOn = (server: number) => onServer(world.cluster, server, (client) => client.dbsize());

  it('moves the slot to another primary and back under a webhook stream: nothing lost, nothing twice, never 500', async () => {
    onTestFailed(() => {
      const said = new Map<string, number>();
      for (const lines of logs)
        for (const line of lines) if (line.level >= 40) said.set(line.msg, (said.get(line.msg) ?? 0) + 1);
      console.log('bridge warnings and errors:', Object.fromEntries(said));
      for (const lines of logs)
        for (const line of lines) if (line.level >= 50) console.log(JSON.stringify(line));
      const odd = answers.filter((answer) => answer.status !== 200);
      console.log('answers other than 200:', odd.length, odd.slice(0, 20));
    });
    // A key for the LiveTex lookup, made through one instance and used at both.
    const made = await pools[0]!.request({
      method: 'POST',
      path: '/api/v1/channels/app/keys',
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    const lookupKey = (await made.body.json()) as { kid: string; key: string };
    expect(made.statusCode).toBe(201);
    const sealedLookup = (person: string) =>
      sealRequest(
        buildClaims({
          subject: { personId: person },
          requestId: randomUUID(),
          jti: randomUUID(),
          iat: Date.now() / 1000,
          ttlSeconds: 300,
        }),
        lookupKey.kid,
        new Uint8Array(Buffer.from(lookupKey.key, 'base64url')),
      );
    async function lookup(pool: Pool, token: string, what: string) {
      const response = await pool.request({
        method: 'POST',
        path: '/livetex/app/attributes',
        headers: { 'content-type': 'application/jose' },
        body: token,
        headersTimeout: ANSWER_WITHIN_MS,
      });
      const text = await response.body.text();
      record(response.statusCode, `${what}${response.statusCode === 200 ? '' : `: ${text}`}`);
      if (response.statusCode !== 200) return { status: response.statusCode, found: undefined };
      const answer = await openAnswer(
        text,
        lookupKey.kid,
        new Uint8Array(Buffer.from(lookupKey.key, 'base64url')),
      );
      return { status: 200, found: answer.found };
    }

    const store = bridges[0]!.bridge.store;
    const held = await store.lock(['reshard-held-lock'], { ttlMs: 10 * 60_000, waitMs: 0 });

    // The stream: each person's chat_accepted at both instances at once (a vendor's duplicate; the
    // contact lock keeps it one contact), then an offline message and the chat's end.
    let started = 0;
    /** People whose webhooks were all answered 200, in the order they were. */
    const done: number[] = [];
    let stopAt = MOST_PEOPLE;
    let beforeReached: () => void = () => {};
    const beforeDone = new Promise<void>((resolve) => {
      beforeReached = resolve;
    });
    const finals: number[] = [];
    const stream = Promise.all(
      Array.from({ length: 8 }, async () => {
        while (started < stopAt) {
          const index = started++;
          const who = personFor(TAG, index);
          const chatId = 900_000 + index;
          finals.push(
            ...(await Promise.all([
              deliver(pools[0]!, jivo.chatAccepted(who, chatId), `accepted ${index} at 0`),
              deliver(pools[1]!, jivo.chatAccepted(who, chatId), `accepted ${index} at 1`),
            ])),
          );
          finals.push(
            await deliver(pools[index % 2]!, jivo.offlineMessage(who, `om-${index}`), `offline ${index}`),
          );
          finals.push(
            await deliver(pools[(index + 1) % 2]!, jivo.chatFinished(who, chatId), `finished ${index}`),
          );
          done.push(index);
          if (done.length === BEFORE) beforeReached();
        }
      }),
    );

    // The resharding: to another primary, then back, a few keys per MIGRATE, with answers coming
    // back between two of them (the slot is split between the nodes all that while), and a LiveTex
    // lookup of someone already stored at every third step.
    await beforeDone;
    const home = await world.cluster.ownerOf(TAG_KEY);
    const away = [0, 1, 2].find((primary) => primary !== home)!;
    const askingBefore = await askingServed();
    const refusedLookups: Array<{ token: string; person: string }> = [];
    const lookups: Array<Promise<void>> = [];
    let batches = 0;
    const betweenBatches = async () => {
      batches++;
      if (batches % 3 === 1) lookupDuringSplit(personFor(TAG, done[batches % BEFORE]!).person);
      await moreAnswers(2);
    };
    /** A lookup of someone stored: refused (503) or answered in full, never "not found". */
    const lookupDuringSplit = (person: string) =>
      lookups.push(
        (async () => {
          const token = await sealedLookup(person);
          const first = await lookup(pools[batches % 2]!, token, `lookup of ${person}`);
          if (first.status === 503) refusedLookups.push({ token, person });
          else expect(first).toEqual({ status: 200, found: true });
        })(),
      );
    phase = 'moving';
    await world.cluster.migrateSlot(TAG_KEY, away, { keysPerBatch: 25, betweenBatches });
    expect(await world.cluster.ownerOf(TAG_KEY)).toBe(away);
    const batchesAway = batches;
    await world.cluster.migrateSlot(TAG_KEY, home, { keysPerBatch: 25, betweenBatches });
    phase = 'after';
    expect(await world.cluster.ownerOf(TAG_KEY)).toBe(home);
    const askingAfter = await askingServed();
    stopAt = started + AFTER;
    await stream;
    await Promise.all(lookups);

    // The migrations really ran under traffic: several MIGRATEs each way, answers in between,
    // and clients followed ASK redirections to the importing node.
    expect(batchesAway).toBeGreaterThan(3);
    expect(batches - batchesAway).toBeGreaterThan(3);
    expect(answers.filter((answer) => answer.phase === 'moving').length).toBeGreaterThanOrEqual(2 * batches);
    expect(askingAfter).toBeGreaterThan(askingBefore);
    // A lookup's claim is a new key beside keys that exist: while the slot is split that script
    // gets TRYAGAIN on either node, so every lookup then was refused with 503 (and retried below).
    expect(refusedLookups.length).toBeGreaterThan(0);

    // Never a 500: a command that met the split slot is "not now" (503), the vendor retries.
    expect(answers.filter((answer) => answer.status !== 200 && answer.status !== 503)).toEqual([]);
    expect(finals.filter((status) => status !== 200)).toEqual([]);

    // A lookup refused while the slot was split did not spend its one-time jti: the same request
    // is answered now.
    for (const { token, person } of refusedLookups)
      expect(await lookup(pools[0]!, token, `lookup of ${person} again`), person).toEqual({
        status: 200,
        found: true,
      });

    // Every webhook stored exactly once, and each person one contact.
    const people = started;
    const wrong: string[] = [];
    await inPool(people, 8, async (index) => {
      const person = personFor(TAG, index).person;
      const found = await admin(
        pools[index % 2]!,
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
      );
      if (found.contacts.length !== 1) {
        wrong.push(`${person}: ${found.contacts.length} contacts`);
        return;
      }
      const page = await admin(
        pools[(index + 1) % 2]!,
        `/api/v1/contacts/${found.contacts[0].id}/timeline?limit=50`,
      );
      const counts: Record<string, number> = {};
      for (const entry of page.entries as Array<{ type: string }>)
        counts[entry.type] = (counts[entry.type] ?? 0) + 1;
      const want = { 'conversation.started': 1, 'offline_message.received': 1, 'conversation.finished': 1 };
      for (const [type, count] of Object.entries(want))
        if (counts[type] !== count) wrong.push(`${person}: ${type} x${counts[type] ?? 0}`);
    });
    expect(wrong, 'webhooks not stored exactly once').toEqual([]);

    // Delivery (BullMQ, in the same slot) ran through both moves: every event once.
    const ofType = (type: string) =>
      world.receiver.application.filter((event) => event.payload.type === type);
    await world.receiver.waitFor(
      () =>
        ofType('contact.created').length >= people &&
        ofType('conversation.started').length >= people &&
        ofType('conversation.finished').length >= people,
      120_000,
      'all events delivered',
    );
    for (const type of ['contact.created', 'conversation.started', 'conversation.finished']) {
      expect(ofType(type), type).toHaveLength(people);
      expect(new Set(ofType(type).map((event) => event.payload.contact?.id)).size, type).toBe(people);
    }
    expect(world.receiver.requests.every((request) => request.verified)).toBe(true);
    // No webhook-id was accepted twice either: no delivery was repeated by the moves.
    expect(world.receiver.acceptedCount).toBe(world.receiver.application.length);
    // And each contact's events came in their order.
    const inOrder = ['contact.created', 'conversation.started', 'conversation.finished'].join();
    const byContact = new Map<string, string[]>();
    for (const event of world.receiver.application) {
      const contact = event.payload.contact?.id ?? 'none';
      byContact.set(contact, [...(byContact.get(contact) ?? []), event.payload.type]);
    }
    expect([...byContact].filter(([, types]) => types.join() !== inOrder)).toEqual([]);

    // The lock taken before the moves is still held (and still ours).
    await expect(
      bridges[1]!.bridge.store.lock(['reshard-held-lock'], { ttlMs: 1000, waitMs: 0 }),
    ).rejects.toBeInstanceOf(StoreBusyError);
    expect(await held.renew()).toBe(true);
    await held.release();

    // Every key of the bridge is back on its first primary, and the bridge works there.
    const sizes = await Promise.all([0, 1, 2].map(keysOn));
    expect(sizes.filter((_, index) => index !== home)).toEqual([0, 0]);
    const who = personFor(TAG, people);
    for (const [index, pool] of pools.entries()) {
      const response = await pool.request({
        method: 'POST',
        path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(jivo.chatAccepted(who, 990_000 + index)),
      });
      await response.body.text();
      expect(response.statusCode).toBe(200);
    }
  });
});

/**
 * Delivery (BullMQ, in the bridge's slot) while that slot moves. Every BullMQ script names many
 * keys, some of which never exist, so from SETSLOT MIGRATING until the last key has moved Redis
 * refuses all of them with TRYAGAIN, on both nodes; so is the delivery record's write (a batch of
 * several keys). Attempts are in flight when the move begins (the receiver holds them) and are
 * answered while the slot is split; more events are stored (after 503s) during the moves. Asserted
 * are outcomes: every event reaches the receiver exactly once (not once more because its
 * delivered mark failed, as each of those in flight did before), in its contact's order, and no
 * delivery job was left to BullMQ's stalled check (a run that ended could not move its job on, so
 * the job held a concurrency slot until the check took it back, 30-60 s after the move).
 */
describe('delivery while the slot of a running bridge is resharded', () => {
  const PREFIX_D = 'ha-reshard-delivery';
  const TOKEN_D = 'ha-reshard-delivery-jivo-01';
  const TAG_D = 'reshard-delivery';
  /** Each person's events, in the order they happen (a destination's lane keeps it). */
  const EVENTS = [
    'contact.created',
    'conversation.started',
    'offline_message.received',
    'conversation.finished',
  ];
  /** People whose webhooks are stored before the first move (their deliveries wait or are in flight). */
  const BACKLOG = 30;
  const world = twoBridgesOnACluster({
    keyPrefix: PREFIX_D,
    logLevel: 'debug',
    config: (receiverUrl) => ({
      channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN_D, personIdFrom: 'user_token' }],
      destinations: [topologyDestination(receiverUrl, SECRET, EVENTS)],
    }),
  });
  const { bridges, pools, logs } = world;

  const deliver = (pool: Pool, body: unknown) =>
    postAsVendor(pool, `/webhooks/jivochat/site/${TOKEN_D}`, body, 1000);

  /** One person's chat, offline message and chat end, at alternating instances: the final statuses. */
  async function person(index: number): Promise<number[]> {
    const who = personFor(TAG_D, index);
    const chatId = 800_000 + index;
    return [
      await deliver(pools[index % 2]!, jivo.chatAccepted(who, chatId)),
      await deliver(pools[(index + 1) % 2]!, jivo.offlineMessage(who, `om-d-${index}`)),
      await deliver(pools[index % 2]!, jivo.chatFinished(who, chatId)),
    ];
  }

  it('delivers every event exactly once, in order per contact, and leaves no job to the stalled check', async () => {
    const said = (pattern: RegExp) =>
      logs.flatMap((lines) =>
        lines.filter((line) =>
          pattern.test(`${line.msg} ${(line.err as { message?: string })?.message ?? ''}`),
        ),
      );
    onTestFailed(() => {
      const counts = new Map<string, number>();
      for (const line of said(/./))
        if (line.level >= 40 || /lock|stalled|not written/.test(line.msg)) {
          const text = `${line.msg} ${(line.err as { message?: string })?.message ?? ''}`.slice(0, 160);
          counts.set(text, (counts.get(text) ?? 0) + 1);
        }
      console.log('bridge log lines:', Object.fromEntries(counts));
      console.log(
        'receiver: requests',
        world.receiver.requests.length,
        'events',
        world.receiver.application.length,
      );
    });

    // The attempts that start now are held at the receiver until the slot is split.
    let release: () => void = () => {};
    world.receiver.respond({ kind: 'held', until: new Promise<void>((resolve) => (release = resolve)) });
    const statuses: number[] = [];
    await inPool(BACKLOG, 8, async (index) => {
      statuses.push(...(await person(index)));
    });
    expect(statuses.filter((status) => status !== 200)).toEqual([]);
    await world.receiver.waitFor(() => world.receiver.requests.length > 0, 30_000, 'an attempt in flight');

    const home = await world.cluster.ownerOf(`{${PREFIX_D}}`);
    const away = [0, 1, 2].find((primary) => primary !== home)!;
    let people = BACKLOG;
    const during: Array<Promise<number[]>> = [];
    let batches = 0;
    const betweenBatches = async () => {
      batches++;
      if (batches === 1) {
        // The slot is split now: the held attempts are answered, and their outcomes written.
        world.receiver.respond({ kind: 'ok' });
        release();
      }
      // A new person every few batches: their webhooks are answered (after 503s) and drained.
      if (batches % 4 === 0) during.push(person(people++));
      // A pause between MIGRATEs, as a large slot's move has: the split lasts while work goes on.
      await new Promise((resolve) => setTimeout(resolve, 150));
    };
    await world.cluster.migrateSlot(`{${PREFIX_D}}`, away, { keysPerBatch: 10, betweenBatches });
    await world.cluster.migrateSlot(`{${PREFIX_D}}`, home, { keysPerBatch: 10, betweenBatches });
    for (const answered of await Promise.all(during)) statuses.push(...answered);
    expect(statuses.filter((status) => status !== 200)).toEqual([]);
    expect(batches).toBeGreaterThan(10);
    expect(during.length).toBeGreaterThan(0);

    await world.receiver.waitFor(
      () => world.receiver.application.length >= people * EVENTS.length,
      120_000,
      'every event delivered',
    );

    // Every event exactly once, each contact's in their order.
    const byContact = new Map<string, string[]>();
    for (const event of world.receiver.application) {
      const contact = event.payload.contact?.id ?? 'none';
      byContact.set(contact, [...(byContact.get(contact) ?? []), event.payload.type]);
    }
    expect(byContact.size).toBe(people);
    expect([...byContact].filter(([, types]) => types.join() !== EVENTS.join())).toEqual([]);
    expect(world.receiver.requests.every((request) => request.verified)).toBe(true);
    expect(world.receiver.requests.length, 'an event POSTed more than once').toBe(
      world.receiver.application.length,
    );
    // Every run that ended moved its job on: none lost its lock, none was taken back as stalled.
    expect(said(/Missing lock|stalled/).map((line) => line.msg)).toEqual([]);
    for (const state of ['pending', 'failed']) {
      const listed = await bridges[0]!.admin('GET', `/api/v1/deliveries?state=${state}&limit=10`);
      expect(listed.body.deliveries, state).toEqual([]);
    }
    // And the moves did meet delivery: outcomes were refused while the slot was split, written after.
    expect(said(/delivery outcome not written yet/).length).toBeGreaterThan(0);
  });
});

describe("BullMQ's scripts while the slot is split", () => {
  let cluster: ClusterTopology;
  beforeAll(async () => {
    cluster = await startClusterTopology();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  /** How many commands `server` has refused with TRYAGAIN so far (INFO errorstats). */
  async function tryAgains(server: number): Promise<number> {
    const stats = await onServer(cluster, server, (client) => client.info('errorstats'));
    return Number(/errorstat_TRYAGAIN:count=(\d+)/.exec(stats)?.[1] ?? 0);
  }

  it('a BullMQ call refused while the slot is split (TRYAGAIN) waits, and goes through once it is whole', async () => {
    const prefix = '{ha-reshard-bull}:bull';
    // As the delivery queue makes its worker connections (src/delivery/queue-bullmq.ts).
    const client = createRedisClient(
      { kind: 'cluster', nodes: cluster.nodes, tls: false },
      { role: 'worker' },
    );
    const queue = new Queue('split', { connection: client, prefix });
    try {
      await queue.add('first', {}, { jobId: 'first' });
      const home = await cluster.ownerOf(prefix);
      const away = [0, 1, 2].find((primary) => primary !== home)!;
      const before = await tryAgains(away);
      let added: Promise<unknown> | undefined;
      let settled = false;
      // Every key moves in one MIGRATE, and the slot stays split until betweenBatches returns:
      // the old primary sends the add (it has none of its keys) to the new one (ASK), which
      // refuses it (TRYAGAIN) because keys it names do not exist (BullMQ's scripts name many).
      await cluster.migrateSlot(prefix, away, {
        keysPerBatch: 1000,
        betweenBatches: async () => {
          added = queue.add('second', {}, { jobId: 'second' });
          added.then(
            () => (settled = true),
            () => (settled = true),
          );
          // Refused more often than a store command follows redirections (16) before it fails.
          while (!settled && (await tryAgains(away)) - before < 20)
            await new Promise((resolve) => setTimeout(resolve, 50));
        },
      });
      await expect(added).resolves.toBeDefined();
      expect((await queue.getJobCounts('waiting')).waiting).toBe(2);
    } finally {
      await queue.close();
      await closeRedisClient(client);
    }
  });
});

/**
 * Walking every key of a kind (Store.scanKeys; `chatbridge contacts reindex` and the start-up
 * re-index walk the records so) while and after the bridge's slot moves. Only the primary serving
 * the slot was walked, as the client's slot map named it: keys the resharding had already moved
 * were not seen while the slot was split, and a walk that went on after the move used the old
 * node's SCAN cursor where it no longer meant anything. Outcomes only: every key found.
 */
describe("walking the bridge's keys across a resharding (Store.scanKeys, contacts reindex)", () => {
  const PREFIX_S = '{ha-reshard-scan}';
  let cluster: ClusterTopology;
  let store: RedisStore;
  beforeAll(async () => {
    cluster = await startClusterTopology();
    store = await createRedisStore({
      target: { kind: 'cluster', nodes: cluster.nodes, tls: false },
      keyPrefix: PREFIX_S,
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(async () => {
    await store?.close();
    await cluster?.stop();
  });

  /** Another primary than the one serving the slot now. */
  async function elsewhere(): Promise<number> {
    const owner = await cluster.ownerOf(`${PREFIX_S}:x`);
    return [0, 1, 2].find((primary) => primary !== owner)!;
  }

  /** A walk in steps: `page()` reads one page (false once the walk has ended). */
  function walker(prefix: string, count: number) {
    let cursor = '0';
    let ended = false;
    const found = new Set<string>();
    return {
      found,
      get ended() {
        return ended;
      },
      async page(): Promise<boolean> {
        if (ended) return false;
        const page = await store.scanKeys(prefix, cursor, count);
        for (const each of page.keys) found.add(each);
        cursor = page.cursor;
        ended = cursor === '0';
        return !ended;
      },
    };
  }

  async function writeKeys(prefix: string, count: number): Promise<string[]> {
    const names = Array.from({ length: count }, (_, index) => `${prefix}${index}`);
    for (let from = 0; from < names.length; from += 100) {
      const batch = store.batch();
      for (const name of names.slice(from, from + 100)) batch.set(name, 'v');
      await batch.exec();
    }
    return names;
  }

  it('a walk while the slot is split finds every key, those moved before it got to them too', async () => {
    const written = await writeKeys('split:', 300);
    const walk = walker('split:', 100);
    let endedWhileSplit = false;
    await cluster.migrateSlot(`${PREFIX_S}:x`, await elsewhere(), {
      keysPerBatch: 20,
      // Two pages after every MIGRATE: the walk goes on while keys move away under it.
      betweenBatches: async () => {
        (await walk.page()) && (await walk.page());
        if (walk.ended) endedWhileSplit ||= true;
      },
    });
    while (await walk.page());
    expect(endedWhileSplit).toBe(true);
    expect([...walk.found].sort()).toEqual([...written].sort());
  });

  it('a walk that began before the slot moved and goes on after it finds every key', async () => {
    const written = await writeKeys('across:', 300);
    const walk = walker('across:', 10);
    expect(await walk.page()).toBe(true);
    expect(await walk.page()).toBe(true);
    await cluster.migrateSlot(`${PREFIX_S}:x`, await elsewhere(), { keysPerBatch: 100 });
    while (await walk.page());
    expect([...walk.found].sort()).toEqual([...written].sort());
  });

  it('a cursor of the former kind (a bare SCAN cursor, as an older version saved a re-index place) starts the walk over', async () => {
    const written = await writeKeys('former:', 50);
    const found = new Set<string>();
    let cursor = '12345';
    do {
      const page = await store.scanKeys('former:', cursor, 100);
      for (const each of page.keys) found.add(each);
      cursor = page.cursor;
    } while (cursor !== '0');
    expect([...found].sort()).toEqual([...written].sort());
    await expect(store.scanKeys('former:', 'nonsense', 10)).rejects.toThrow(/cursor/);
  });

  it('contacts reindex stopped before the slot moved and resumed after it re-indexes every record', async () => {
    const identity = parseConfig({ admin: { token: TEST_ADMIN_TOKEN } }, defaultRegistry(), {}).identity;
    // Records an older version wrote: their names are in no name-index set.
    const ids: string[] = [];
    const at = '2026-10-01T10:00:00.000Z';
    for (let index = 0; index < 120; index++) {
      const record = { ...newRecord(at), names: [{ v: `Walker${index} Reshardova`, at }] };
      ids.push(storedId(record.id));
      await store.set(key.record(record.id), encodeRecord(record));
    }
    const [surname] = nameWords('Reshardova');
    // A pass stopped after its first page (a restart, a Redis outage): its place is saved.
    const stop = new AbortController();
    const first = await reindexContacts({
      store,
      identity,
      pageSize: 10,
      signal: stop.signal,
      onProgress: () => stop.abort(),
    });
    expect(first.complete).toBe(false);
    expect((await store.smembers(key.name(surname!))).length).toBeLessThan(ids.length);

    await cluster.migrateSlot(`${PREFIX_S}:x`, await elsewhere(), { keysPerBatch: 100 });
    const resumed = await reindexContacts({ store, identity, pageSize: 10, resume: true });
    expect(resumed.complete).toBe(true);
    expect((await store.smembers(key.name(surname!))).sort()).toEqual([...ids].sort());
  });
});
