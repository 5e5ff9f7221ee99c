// `node bench/cpu.js [checkout ...]` (each checkout built with `npm run build`; default: this
// one): the bridge's CPU per request at a fixed request rate, for comparing two builds.
//
// `npm run bench` loads the bridge to saturation and compares it with bare Koa; on a shared
// 2-core machine its req/s moves by ±20 % from one minute to the next, which hides a change
// worth 10 %. Here every checkout's bridge runs on one private Redis and, in each round, all of
// them are sent the same requests at the same fixed rate *at the same time* (well below
// saturation together), so they share whatever the machine does in those seconds; the figure is
// process CPU (/proc/<pid>/stat, all threads) ÷ requests answered, and the comparison is the
// median of the rounds' paired ratios. Compare checkouts within one run only.
//
// Knobs (environment): BENCH_RATE requests per second per checkout (by scenario: known and new
// 400, finished 200, deferred 150, lookup 800; the lower the rate, the more each request pays for
// waking the process up alone, so compare figures at one rate only), BENCH_DURATION seconds per
// round (8), BENCH_ROUNDS (3; the first also warms up, the median is reported), BENCH_ONLY (comma
// list of known, new, finished, deferred, deferred-all, known-delivering, finished-delivering,
// lookup, timeline), BENCH_REDIS=each
// (every checkout on a redis-server of its own, started here: Redis's CPU per request, read from
// /proc for that server, is then reported per checkout and compared as the bridge's is; Redis
// shares the two cores with the bridges and the load generator, so what it spends counts; by
// default all checkouts share one server, whose CPU no checkout can be charged with).
//
// `deferred` is chat_finished with `intake.ackAfterAppend`, deployed as two more processes per
// checkout on the same Redis: `--role web` answers, `--role worker` records (it finds the backlog
// by polling, once a second). The round waits until the worker has recorded everything and
// reports each process's CPU per event, and their sum: the whole cost of an acknowledged event.
// `deferred-all` is the same in one process of the default role (`all`: it answers and records),
// as `npm start` runs it. `known-delivering` is `known` on a bridge with one webhook destination
// (a receiver in its own process that answers 204): the CPU per webhook then includes building
// its events, staging them in the outbox and delivering them; the round waits until the
// receiver has stopped receiving (nothing new for a second). `finished-delivering` is `finished`
// on that bridge (its events: conversation.finished with the 50-message transcript,
// conversation.rated, and contact.updated when the contact changed). `timeline` reads the first
// page (50 entries) of one contact with 10,000, seeded as bench/run.js's timeline scenario seeds
// it (by each checkout's own engine, bench/lib/timeline.js), through the admin API.

import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { ADMIN_TOKEN, admin, inParallel, JIVO_TOKEN, seedKnown, startBridge } from './lib/bridge.js';
import { answeredOf, atFixedRate } from './lib/load.js';
import { lookupSealer } from './lib/lookup-tokens.js';
import { jivoChatAccepted, jivoChatFinished, personOf } from './lib/payloads.js';
import { cpuMs, spawnLogged, waitReady } from './lib/procs.js';
import { benchRedis, freePort } from './lib/redis.js';
import { seedTimeline } from './lib/timeline.js';

const env = process.env;
// `<checkout>#<node options>` runs that checkout's bridge with extra node options (space-separated),
// e.g. `node bench/cpu.js . '.#--max-semi-space-size=64'` compares a V8 setting on one build.
const checkouts = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((arg) => {
  const [path, options] = arg.split('#');
  const words = options ? options.split(' ').filter(Boolean) : [];
  // `engine=off` among them is not a node option: that bridge runs without its contact engine
  // (bench/lib/engine-free.js), e.g. `node bench/cpu.js . '.#engine=off'`.
  const engine = words.includes('engine=off') ? 'off' : 'on';
  return {
    root: resolve(path),
    nodeOptions: words.filter((word) => word !== 'engine=off'),
    engine,
    label: arg,
  };
});
/** Requests per second per checkout: together, about half what one bridge answers at saturation here. */
const rateOf = (id) =>
  Number(
    env.BENCH_RATE ??
      {
        known: 400,
        new: 400,
        finished: 200,
        deferred: 150,
        'deferred-all': 150,
        'known-delivering': 400,
        'finished-delivering': 200,
        lookup: 800,
        timeline: 400,
      }[id],
  );
const duration = Number(env.BENCH_DURATION ?? 8);
const rounds = Math.max(1, Number(env.BENCH_ROUNDS ?? 3));
const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',').map((id) => id.trim())) : null;
const KNOWN = 1000;

const redisEach = env.BENCH_REDIS === 'each';
if (redisEach && env.REDIS_URL)
  throw new Error('BENCH_REDIS=each starts its own redis-servers: unset REDIS_URL');
const sharedRedis = redisEach ? null : await benchRedis();
const sharedClient = sharedRedis ? new Redis(sharedRedis.url) : null;

/**
 * `known-delivering`'s bridge: the same contacts seeded, and one webhook destination, a receiver
 * in its own process. Returns the bridge, the receiver and how to read the receiver's count.
 */
async function startDelivering(root, dir, nodeOptions, redis) {
  const port = await freePort();
  const receiver = spawnLogged([join(root, 'bench', 'lib', 'receiver.js'), String(port)], {
    logFile: join(dir, `receiver-${port}.log`),
    env: {},
  });
  const receiverUrl = `http://127.0.0.1:${port}`;
  await waitReady(`${receiverUrl}/count`, 10_000, receiver.child, 'receiver');
  const bridge = await startBridge({
    root,
    dir,
    redisUrl: redis.url,
    keyPrefix: `cpuw${randomUUID().slice(0, 6)}`,
    logLevel: 'warn',
    nodeOptions,
    extra: `destinations:\n  - id: bench-crm\n    url: ${receiverUrl}/events\n    secret: whsec_YmVuY2gtZGVzdGluYXRpb24tc2VjcmV0LTAxMjM0NQ==\n`,
  });
  await seedKnown(bridge.url, KNOWN);
  const received = async () => (await (await fetch(`${receiverUrl}/count`)).json()).received;
  return { bridge, receiver, received };
}
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cpu-'));
const bridges = [];
/** BENCH_REDIS=each: each checkout's server and client (stopped at the end). */
const ownRedis = [];
try {
  for (const [index, { root, nodeOptions, engine, label }] of checkouts.entries()) {
    const runDir = join(dir, String(index));
    mkdirSync(runDir);
    const redis = sharedRedis ?? (await benchRedis());
    const redisClient = sharedClient ?? new Redis(redis.url);
    // Pushed before anything else can fail, so that `finally` stops this server too.
    if (redisEach) ownRedis.push({ redis, redisClient });
    const keyPrefix = `cpu${index}x${randomUUID().slice(0, 6)}`;
    const bridge = await startBridge({
      root,
      dir: runDir,
      redisUrl: redis.url,
      keyPrefix,
      logLevel: 'warn',
      nodeOptions,
      engine,
    });
    process.stderr.write(`${label}: bridge pid ${bridge.pid}, seeding ${KNOWN} contacts\n`);
    await seedKnown(bridge.url, KNOWN);
    // The deferred scenario's processes: one `--role web` that acknowledges after the append, one
    // `--role worker` that records, both on their own key prefix.
    const deferredPrefix = `cpu${index}d${randomUUID().slice(0, 6)}`;
    const deferredRole = (role, keyPrefix = deferredPrefix) =>
      startBridge({
        root,
        dir: runDir,
        redisUrl: redis.url,
        keyPrefix,
        logLevel: 'warn',
        extra: 'intake: { ackAfterAppend: true, maxBacklog: 1000000 }',
        role,
        nodeOptions,
      });
    const deferred =
      only === null || only.has('deferred')
        ? { web: await deferredRole('web'), worker: await deferredRole('worker') }
        : null;
    const allPrefix = `${deferredPrefix}a`;
    const deferredAll =
      only === null || only.has('deferred-all') ? await deferredRole(undefined, allPrefix) : null;
    const delivering =
      only === null || only.has('known-delivering') || only.has('finished-delivering')
        ? await startDelivering(root, runDir, nodeOptions, redis)
        : null;
    let timelinePath;
    if (only === null || only.has('timeline')) {
      const contactId = await seedTimeline({
        dist: join(root, 'dist'),
        redisUrl: redis.url,
        keyPrefix,
        entries: 10_000,
      });
      timelinePath = `/api/v1/contacts/${contactId}/timeline?limit=50`;
      const page = await admin(bridge.url, 'GET', timelinePath);
      if (page.entries.length !== 50 || !page.nextCursor)
        throw new Error(`timeline on ${label}: the first page is not 50 entries with a cursor`);
    }
    bridges.push({
      root,
      label,
      bridge,
      deferred,
      deferredAll,
      delivering,
      redis,
      redisClient,
      // The process a scenario sends to (else `bridge`), and the backlog its round waits for.
      targets: {
        deferred: deferred?.web,
        'deferred-all': deferredAll,
        'known-delivering': delivering?.bridge,
        'finished-delivering': delivering?.bridge,
      },
      paths: { timeline: timelinePath },
      backlogKeys: {
        deferred: `${deferredPrefix}:intake:deferred`,
        'deferred-all': `${allPrefix}:intake:deferred`,
      },
      sent: 0,
      lookup: null,
    });
  }

  const jivo = { method: 'POST', path: `/webhooks/jivochat/site/${JIVO_TOKEN}`, type: 'application/json' };
  /** chat_finished (50 messages) of the `deferred` people, chat ids from `firstChat`. */
  const deferredFinished = (firstChat) => (n) =>
    jivoChatFinished({ ...personOf('deferred', n % KNOWN), chat: firstChat + n, messages: 50 });
  const scenarios = {
    known: {
      ...jivo,
      body: (n) => jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 20_000_000 + n }),
    },
    new: {
      ...jivo,
      body: (n, side) => jivoChatAccepted({ ...personOf('new', side * 10_000_000 + n), chat: n }),
    },
    finished: {
      ...jivo,
      body: (n) => jivoChatFinished({ ...personOf('known', n % KNOWN), chat: 30_000_000 + n, messages: 50 }),
    },
    deferred: { ...jivo, body: deferredFinished(40_000_000) },
    'known-delivering': {
      ...jivo,
      body: (n) => jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 70_000_000 + n }),
    },
    'finished-delivering': {
      ...jivo,
      body: (n) => jivoChatFinished({ ...personOf('known', n % KNOWN), chat: 80_000_000 + n, messages: 50 }),
    },
    'deferred-all': { ...jivo, body: deferredFinished(50_000_000) },
    lookup: { method: 'POST', path: '/livetex/app/attributes', type: 'application/jose', body: null },
    // The path is each checkout's own contact (entry.paths); no body.
    timeline: { method: 'GET', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
  };
  const wanted = Object.keys(scenarios).filter((id) => only === null || only.has(id));

  /** Lookup tokens for one round, sealed just before it (a token lives at most 300 s; the caller's cost). */
  async function sealLookups(entry) {
    entry.keys ??= await admin(entry.bridge.url, 'POST', '/api/v1/channels/app/keys');
    const seal = await lookupSealer(entry.root, entry.keys, { people: KNOWN, prefix: 'cpu' });
    const needed = Math.ceil(rateOf('lookup') * duration * 1.2) + 100;
    const tokens = new Array(needed);
    await inParallel(needed, 64, async (n) => {
      tokens[n] = await seal(n);
    });
    entry.lookup = tokens;
    entry.lookupNext = 0;
  }

  const results = new Map();
  const record = (name, side, value) => {
    const key = `${name}\u0000${side}`;
    if (!results.has(key)) results.set(key, []);
    results.get(key).push(value);
  };
  /** One checkout's share of a round: its requests at the fixed rate, then its CPU per request. */
  async function runSide(id, side, entry, round) {
    const scenario = scenarios[id];
    const next = () => {
      if (id === 'lookup') return entry.lookup[entry.lookupNext++];
      if (id === 'timeline') return undefined;
      return JSON.stringify(scenario.body(entry.sent++, side));
    };
    const target = entry.targets[id] ?? entry.bridge;
    const before = cpuMs(target.pid);
    const workerBefore = id === 'deferred' ? cpuMs(entry.deferred.worker.pid) : 0;
    const redisBefore = redisEach ? cpuMs(entry.redis.pid) : 0;
    const run = await atFixedRate({
      url: target.url,
      rate: rateOf(id),
      method: scenario.method,
      path: entry.paths[id] ?? scenario.path,
      type: scenario.type,
      headers: scenario.headers,
      body: next,
      duration,
    });
    const answered = answeredOf(run);
    if (run.non2xx > 0 || run.errors > 0)
      throw new Error(
        `${id} on ${entry.label}: ${run.non2xx} answers not 2xx (${JSON.stringify(run.statusCodeStats)}), ${run.errors} errors`,
      );
    // Deferred: the event's cost includes its recording, so wait until the worker is done.
    const backlogKey = entry.backlogKeys[id];
    if (backlogKey)
      while ((await entry.redisClient.llen(backlogKey)) > 0)
        await new Promise((resolve) => setTimeout(resolve, 50));
    // Delivering: its events count as the webhook's cost; done once the receiver has had nothing new for 1 s.
    let deliveredNote = '';
    if (id === 'known-delivering' || id === 'finished-delivering') {
      let last = -1;
      for (let count = await entry.delivering.received(); count !== last; ) {
        last = count;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        count = await entry.delivering.received();
      }
      deliveredNote = `, ${last - (entry.deliveredBefore ?? 0)} events delivered`;
      entry.deliveredBefore = last;
    }
    const perRequest = (cpuMs(target.pid) - before) / Math.max(1, answered);
    let total = perRequest;
    let split = '';
    if (id === 'deferred') {
      const worker = (cpuMs(entry.deferred.worker.pid) - workerBefore) / Math.max(1, answered);
      total = perRequest + worker;
      record('deferred:web', side, perRequest);
      record('deferred:worker', side, worker);
      split = ` (web ${perRequest.toFixed(3)} + worker ${worker.toFixed(3)})`;
    }
    record(id, side, total);
    let redisNote = '';
    if (redisEach) {
      const redisPerRequest = (cpuMs(entry.redis.pid) - redisBefore) / Math.max(1, answered);
      record(`${id}:redis`, side, redisPerRequest);
      redisNote = `, Redis ${redisPerRequest.toFixed(3)} ms CPU/request`;
    }
    process.stderr.write(
      `round ${round + 1} ${id.padEnd(12)} ${entry.label}: ${answered} answered, ${total.toFixed(3)} ms CPU/request${split}${redisNote}${deliveredNote}, p99 ${run.latency.p99} ms\n`,
    );
  }

  for (let round = 0; round < rounds; round++) {
    for (const id of wanted) {
      if (id === 'lookup') for (const entry of bridges) await sealLookups(entry);
      // Every checkout at once: both see the same machine (other tenants, CPU frequency) during
      // the same seconds, so their ratio holds where each one's own figure moves by ±30 %.
      await Promise.all(bridges.map((entry, side) => runSide(id, side, entry, round)));
    }
  }

  // Of an even count of rounds the upper of the middle two, not bench/lib/load.js's mean of them:
  // this tool has always reported it so, and its figures are compared across runs (bench/HISTORY.md).
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  process.stdout.write(
    `\nbridge CPU per request (ms; median of ${rounds} rounds, each round's value in brackets; checkouts loaded at the same time)\n`,
  );
  const rows = wanted.flatMap((id) => [
    id,
    ...(id === 'deferred' ? [`${id}:web`, `${id}:worker`] : []),
    ...(redisEach ? [`${id}:redis`] : []),
  ]);
  process.stdout.write(
    redisEach ? "(`<scenario>:redis`: the CPU per request of that checkout's own redis-server)\n" : '',
  );
  for (const id of rows) {
    const firsts = results.get(`${id}\u00000`);
    for (const [side, entry] of bridges.entries()) {
      const values = results.get(`${id}\u0000${side}`);
      const value = median(values);
      // Paired: each round's ratio to the first checkout in the same seconds, then the median.
      const ratio = median(values.map((v, round) => v / firsts[round]));
      const versus =
        side === 0 ? '' : `  ${(ratio * 100).toFixed(0)} % of the first (median of the rounds' ratios)`;
      process.stdout.write(
        `${id.padEnd(15)} at ${String(rateOf(id.split(':')[0])).padStart(4)} req/s ${value.toFixed(3)} [${values.map((v) => v.toFixed(3)).join(' ')}]${versus}  ${entry.label}\n`,
      );
    }
  }
} finally {
  for (const { bridge, deferred, deferredAll, delivering } of bridges) {
    await bridge.stop();
    await deferredAll?.stop();
    await delivering?.bridge.stop();
    await delivering?.receiver.stop();
    await deferred?.web.stop();
    await deferred?.worker.stop();
  }
  sharedClient?.disconnect();
  await sharedRedis?.stop();
  for (const { redis, redisClient } of ownRedis) {
    redisClient.disconnect();
    await redis.stop();
  }
}
