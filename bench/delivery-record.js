// `npm run build && node --expose-gc bench/delivery-record.js [checkout ...]`: the delivery side's JavaScript
// work on an event's body, per checkout, in one process without HTTP or Redis: the drain (the
// outbox entry parsed, routed, its body serialised, its delivery record written: per outbox
// entry), a record read back (records.get: per delivery, as a job's start and the wake of the
// next one read it) and an attempt's outcome written (markDelivered, the compare-and-set: per
// delivery). The outbox entries are the real ones of JivoChat chat_finished webhooks (50-message
// transcript, one webhook destination: conversation.finished, conversation.rated and
// contact.updated), made once by the first checkout's bridge on its in-memory store; every
// checkout then runs its own drain and records over an in-memory store of its own, in
// alternating blocks (checkout A, B, A, B, …), and the figure is the median of the blocks' CPU
// µs per item (process.cpuUsage). Signing and the POST are not included (the same work either
// way). Knobs: RECORD_N (webhooks per block, 300), RECORD_BLOCKS (blocks per checkout, 7; the
// first is a warm-up and left out), RECORD_STORE=redis (each block on the Redis store instead,
// on a private redis-server, or REDIS_URL, under a key prefix of its own deleted after the block:
// ioredis's encoding of the commands and decoding of the replies counted too). With --expose-gc
// the heap is collected before each step, so no step pays for the garbage of the one before (of
// another checkout: without it, the checkout that makes less garbage was charged for the other's).
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((arg) => resolve(arg));
const N = Number(process.env.RECORD_N ?? 300);
const BLOCKS = Number(process.env.RECORD_BLOCKS ?? 7);
const { jivoChatFinished, personOf } = await import(join(ROOT, 'bench/lib/payloads.js'));

const DESTINATION = {
  id: 'bench-crm',
  url: 'http://127.0.0.1:9/events',
  secret: 'whsec_YmVuY2gtZGVzdGluYXRpb24tc2VjcmV0LTAxMjM0NQ==',
};

async function load(root) {
  const dist = join(root, 'dist/src');
  const mod = async (path) => import(join(dist, path));
  return {
    root,
    ...(await mod('store/memory.js')),
    ...(await mod('config/load.js')),
    ...(await mod('registry.js')),
    ...(await mod('bridge.js')),
    ...(await mod('logger.js')),
    ...(await mod('intake/pipeline.js')),
    ...(await mod('delivery/drain.js')),
    ...(await mod('delivery/records.js')),
    ...(await mod('events/outbox.js')),
  };
}

const builds = await Promise.all(roots.map(load));
const ON_REDIS = process.env.RECORD_STORE === 'redis';
const redis = ON_REDIS ? await (await import(join(ROOT, 'bench/lib/redis.js'))).benchRedis() : null;
const cleaner = ON_REDIS ? new (await import('ioredis')).Redis(redis.url) : null;
let blockCount = 0;

/** A fresh store for one block, and how to drop what it wrote. */
async function storeFor(build) {
  if (!ON_REDIS) return { store: build.createMemoryStore(), done: async () => {} };
  const { createRedisStore } = await import(join(build.root, 'dist/src/store/redis.js'));
  const keyPrefix = `recbench${process.pid}x${blockCount++}`;
  const store = await createRedisStore({ url: redis.url, keyPrefix, logger: build.createLogger('silent') });
  return {
    store,
    async done() {
      await store.close();
      let cursor = '0';
      do {
        const [next, keys] = await cleaner.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000);
        if (keys.length > 0) await cleaner.del(...keys);
        cursor = next;
      } while (cursor !== '0');
    },
  };
}

/** The outbox entries (stored texts) of N chat_finished webhooks, by the first build's bridge. */
async function outboxTexts(build, count, offset) {
  const registry = build.defaultRegistry();
  const config = build.parseConfig(
    {
      admin: { token: 'x'.repeat(16) },
      server: { port: 0, host: '127.0.0.1' },
      log: { level: 'silent' },
      channels: [{ id: 'site', vendor: 'jivochat', token: 'site-webhook-token-0123456789' }],
      destinations: [DESTINATION],
    },
    registry,
    {},
  );
  const store = build.createMemoryStore();
  const logger = build.createLogger('silent');
  const bridge = await build.createBridge({ config, registry, logger, store });
  const channel = bridge.channels.get('site');
  const route = channel.adapter.intake.find((candidate) => candidate.kind === 'webhook');
  for (let index = 0; index < count; index++) {
    const who = { ...personOf('finished', offset + index), chat: 20_000_000 + offset + index };
    const raw = Buffer.from(JSON.stringify(jivoChatFinished(who)));
    const request = build.parseIntakeRequest(route, raw, 'application/json', new Date());
    const decoded = route.decode({ ...request, opened: undefined }, channel.runtime.state);
    for (const observation of decoded.observations) await bridge.context.contacts.observe(observation);
  }
  const texts = await store.lrange(build.OUTBOX_KEY, 0, -1);
  await bridge.close();
  return { texts, config };
}

const { texts, config } = await outboxTexts(builds[0], N, 0);
const bodyBytes = [];

/** One block of one build: drain the texts, read each record, mark each delivered. CPU µs per item. */
async function block(build) {
  const { store, done } = await storeFor(build);
  const logger = build.createLogger('silent');
  const records = build.createDeliveryRecords(store, { deliveredRetentionMs: 3_600_000 });
  const pending = [];
  const queue = {
    async enqueueMany(_destinationId, items) {
      for (const item of items) pending.push(item.job.deliveryId);
    },
  };
  const drainer = build.createDrainer({
    store,
    records,
    queue,
    destinations: config.destinations.map((destination) => ({ config: destination })),
    routing: { agents: config.agents, channels: config.channels, vendorNames: new Map() },
    logger,
    now: () => new Date(),
    random: Math.random,
  });
  const batch = store.batch();
  batch.rpush(build.OUTBOX_KEY, ...texts);
  await batch.exec();
  const cpu = () => {
    const used = process.cpuUsage();
    return used.user + used.system;
  };
  const collect = () => globalThis.gc?.();
  collect();
  let started = cpu();
  const drained = await drainer.drainAll();
  const drainUs = (cpu() - started) / drained.entries;
  const read = [];
  collect();
  started = cpu();
  for (const id of pending) read.push(await records.get(id));
  const getUs = (cpu() - started) / pending.length;
  const now = new Date();
  collect();
  started = cpu();
  for (const record of read) await records.markDelivered(record, 204, now);
  const markUs = (cpu() - started) / read.length;
  await done();
  if (bodyBytes.length === 0) for (const record of read) bodyBytes.push(Buffer.byteLength(record.body));
  return { drain: drainUs, get: getUs, mark: markUs, deliveries: pending.length, entries: drained.entries };
}

const results = builds.map(() => ({ drain: [], get: [], mark: [] }));
let shape = null;
for (let round = 0; round < BLOCKS; round++) {
  for (const [index, build] of builds.entries()) {
    const measured = await block(build);
    shape ??= measured;
    if (round === 0) continue;
    for (const name of ['drain', 'get', 'mark']) results[index][name].push(measured[name]);
  }
}
cleaner?.disconnect();
await redis?.stop();
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const bodies = [...bodyBytes].sort((a, b) => a - b);
process.stdout.write(
  `${shape.entries} outbox entries (${shape.deliveries} deliveries; bodies ${bodies[0]}–${bodies.at(-1)} B) per block, CPU µs, median of ${BLOCKS - 1} blocks${ON_REDIS ? ', Redis store' : ''}:\n` +
    '  checkout                                  drain/entry  get/delivery  markDelivered/delivery\n',
);
for (const [index, build] of builds.entries()) {
  const row = results[index];
  const ratio = (name) =>
    index === 0 ? '' : ` (${((100 * median(row[name])) / median(results[0][name])).toFixed(0)} %)`;
  process.stdout.write(
    `  ${build.root.slice(-40).padEnd(40)}  ${median(row.drain).toFixed(1)}${ratio('drain')}  ${median(row.get).toFixed(1)}${ratio('get')}  ${median(row.mark).toFixed(1)}${ratio('mark')}\n`,
  );
}
