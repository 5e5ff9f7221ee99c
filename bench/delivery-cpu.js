// `node bench/delivery-cpu.js <checkout> [<checkout> ...]` (each built with `npm run build`): the
// delivery worker's own CPU per delivered event, without HTTP, for comparing builds whose
// difference is in the records, the store and the processor (a few µs per event, which
// bench/cpu.js, where a delivered event costs ~1–2 ms with its webhook and BullMQ, does not
// resolve on a shared machine). In this one process, per checkout: its Redis store (its own key
// prefix on one private redis-server), its delivery records and its processor, over an HTTP
// client that answers 204 at once and a queue stand-in whose wake runs the woken job next. A
// round stages DC_LANES lanes of DC_EVENTS events each (a chat_finished makes 3 of one contact;
// a body of DC_BODY characters), then runs each lane's first job, DC_AT_ONCE lanes at a time,
// each lane's next job as its wake comes; the CPU of this process (process.cpuUsage) and of the
// redis-server (/proc) over the runs, divided by the events delivered. Checkouts take turns slice
// by slice (DC_AT_ONCE lanes each), in an order that alternates, so they share what the machine
// does meanwhile; the figure is the median over DC_ROUNDS rounds (the first warms up and is left
// out), and each checkout after the first as the median of its paired ratios to the first.
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { cpuNs } from './lib/procs.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const LANES = Number(env.DC_LANES ?? 400);
const EVENTS = Number(env.DC_EVENTS ?? 3);
const AT_ONCE = Number(env.DC_AT_ONCE ?? 20);
const BODY = Number(env.DC_BODY ?? 4000);
const ROUNDS = Number(env.DC_ROUNDS ?? 7);
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));

const redis = await benchRedis({ alwaysPrivate: true });
const logger = pino({ level: 'silent' });
const http = { send: async () => ({ status: 204, headers: {}, text: '' }) };

async function setUp(root, index) {
  const dist = (path) => import(join(root, 'dist', 'src', path));
  const [{ createRedisStore }, records, processor, breaker, metrics, { Metrics }, signing] =
    await Promise.all([
      dist('store/redis.js'),
      dist('delivery/records.js'),
      dist('delivery/processor.js'),
      dist('delivery/breaker.js'),
      dist('delivery/metrics.js'),
      dist('metrics.js'),
      dist('delivery/signing.js'),
    ]);
  const store = await createRedisStore({ url: redis.url, keyPrefix: `dcpu${index}`, logger });
  const deliveryRecords = records.createDeliveryRecords(store, { deliveredRetentionMs: 60_000 });
  const secret = `whsec_${Buffer.from('delivery-cpu-bench-secret-012345').toString('base64')}`;
  const config = {
    id: 'hook',
    kind: 'webhook',
    url: 'http://127.0.0.1:9/events',
    secret,
    headers: {},
    timeoutMs: 5000,
    retrySchedule: [0, 5000],
  };
  const woken = new Set();
  const queue = {
    enqueue: async () => {},
    enqueueMany: async () => {},
    restore: async () => 0,
    wake: async (_destination, jobId) => {
      woken.add(jobId);
    },
    pause: async () => {},
    start: async () => {},
    counts: async () => ({ waiting: 0, delayed: 0, active: 0 }),
    close: async () => {},
  };
  const run = processor.createProcessor({
    records: deliveryRecords,
    queue,
    destinations: new Map([
      [
        'hook',
        {
          config,
          key: signing.secretKey(secret),
          secrets: [],
          breaker: new breaker.CircuitBreaker(1000, 1000),
        },
      ],
    ]),
    http,
    logger,
    metrics: metrics.deliveryMetrics(new Metrics()),
    now: () => new Date(),
    random: () => 0.5,
    signal: new AbortController().signal,
  });
  return { root, store, records: deliveryRecords, jobOf: records.jobOf, run, woken };
}

const subjects = [];
for (const [index, root] of roots.entries()) subjects.push(await setUp(root, index));
const body = JSON.stringify({ id: 'evt', text: 'ж'.repeat(Math.max(0, BODY - 20)) });

/** Stages a round's deliveries for `subject`; answers its lanes' runs, one slice of lanes at a time. */
async function stage(subject) {
  const tag = randomUUID().slice(0, 8);
  const plans = [];
  for (let lane = 0; lane < LANES; lane++)
    for (let event = 0; event < EVENTS; event++)
      plans.push({
        id: `${tag}-${lane}-${event}`,
        destinationId: 'hook',
        eventId: `evt_${tag}_${lane}_${event}`,
        eventType: 'conversation.finished',
        orderingKey: `c_${tag}_${lane}`,
        contactId: `c_${tag}_${lane}`,
        stagedAt: Date.now(),
        body,
      });
  const staged = [];
  for (let at = 0; at < plans.length; at += 200)
    staged.push(...(await subject.records.ensure(plans.slice(at, at + 200), new Date())));
  const byJob = new Map(staged.map((record) => [`${record.id}.${record.cycle}`, subject.jobOf(record)]));
  let delivered = 0;
  const runLane = async (lane) => {
    for (let event = 0; ; event++) {
      const outcome = await subject.run('hook', byJob.get(`${tag}-${lane}-${event}.0`));
      if (outcome.kind !== 'done') throw new Error(`not delivered: ${JSON.stringify(outcome)}`);
      delivered++;
      // Its wake came before its run ended (the processor awaits it).
      if (!subject.woken.has(`${tag}-${lane}-${event + 1}.0`)) return;
    }
  };
  /** Runs lanes from..from+AT_ONCE-1: CPU of this process and of Redis, µs, and events delivered. */
  return async (from) => {
    const before = delivered;
    const cpu = process.cpuUsage();
    const redisBefore = cpuNs(redis.pid).all;
    const lanes = [];
    for (let lane = from; lane < Math.min(from + AT_ONCE, LANES); lane++) lanes.push(runLane(lane));
    await Promise.all(lanes);
    const used = process.cpuUsage(cpu);
    return {
      client: used.user + used.system,
      redis: (cpuNs(redis.pid).all - redisBefore) / 1000,
      events: delivered - before,
    };
  };
}

/**
 * One round: every subject's lanes, a slice (AT_ONCE lanes) of each in turn, in an order that
 * alternates, so that they share whatever the machine does meanwhile; µs per event each.
 */
async function round() {
  const runs = [];
  for (const subject of subjects) runs.push(await stage(subject));
  const sums = subjects.map(() => ({ client: 0, redis: 0, events: 0 }));
  for (let from = 0, turn = 0; from < LANES; from += AT_ONCE, turn++) {
    const order = subjects.map((_, index) => index);
    if (turn % 2 === 1) order.reverse();
    for (const index of order) {
      const slice = await runs[index](from);
      for (const part of ['client', 'redis', 'events']) sums[index][part] += slice[part];
    }
  }
  for (const subject of subjects) subject.woken.clear();
  return sums.map((sum) => {
    if (sum.events !== LANES * EVENTS) throw new Error(`${sum.events} delivered of ${LANES * EVENTS}`);
    return { client: sum.client / sum.events, redis: sum.redis / sum.events };
  });
}

const results = subjects.map(() => []);
for (let r = 0; r < ROUNDS; r++) {
  const figures = await round();
  for (const [index, subject] of subjects.entries()) {
    if (r > 0) results[index].push(figures[index]);
    const { client, redis: server } = figures[index];
    console.error(
      `round ${r + 1} ${subject.root}: ${client.toFixed(1)} µs client, ${server.toFixed(1)} µs Redis per event${r === 0 ? ' (warm-up)' : ''}`,
    );
  }
}
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
console.log(
  `CPU per delivered event (µs; median of ${ROUNDS - 1} rounds; ${LANES} lanes × ${EVENTS} events, ${AT_ONCE} lanes at once, body ${BODY} chars)`,
);
for (const [index, subject] of subjects.entries()) {
  const mine = results[index];
  const of = (part) => median(mine.map((figures) => figures[part]));
  const ratio = (part) =>
    index === 0
      ? ''
      : ` (${(100 * median(mine.map((figures, r) => figures[part] / results[0][r][part]))).toFixed(0)} % of the first)`;
  console.log(
    `client ${of('client').toFixed(1)}${ratio('client')}, Redis ${of('redis').toFixed(1)}${ratio('redis')}  ${subject.root}`,
  );
}
for (const subject of subjects) await subject.store.close();
await redis.stop();
