// `node bench/threads.js [checkout]` (built): where a bridge's CPU goes by thread, at a fixed rate
// of JivoChat chat_accepted of visitors never seen (bench/cpu.js's `new`). bench/cpu.js and
// bench/run.js report the process (all threads) and its JavaScript thread; the difference is
// spent on the process's other threads, which Node names alike ("node"): V8's platform workers
// (--v8-pool-size, 4 by default: parallel scavenges, concurrent marking and sweeping, concurrent
// compilation) and libuv's pool (file system, DNS, crypto; idle on this path). Each thread is read
// from /proc/<pid>/task/<tid>/schedstat (nanoseconds) before and after each round, and the
// bridge runs with --trace-gc-nvp, so each round also sums its collections: how many, their
// pauses on the JavaScript thread, the helpers' share V8 reports (background.*), and what was
// allocated, survived a scavenge and was promoted, per request.
//
// Knobs: THREADS_RATE (requests per second, 400), THREADS_DURATION (seconds per round, 8),
// THREADS_ROUNDS (3, after a warm-up of 3 s), THREADS_NODE_OPTIONS (more options for the bridge,
// space-separated). Numbers move with the machine's load: compare checkouts with bench/cpu.js.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JIVO_TOKEN, startBridge } from './lib/bridge.js';
import { answeredOf, atFixedRate } from './lib/load.js';
import { jivoChatAccepted, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const root = resolve(process.argv[2] ?? '.');
const rate = Number(env.THREADS_RATE ?? 400);
const duration = Number(env.THREADS_DURATION ?? 8);
const rounds = Number(env.THREADS_ROUNDS ?? 3);
const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-threads-'));
const bridge = await startBridge({
  root,
  dir,
  redisUrl: redis.url,
  keyPrefix: `thr${randomUUID().slice(0, 6)}`,
  logLevel: 'warn',
  nodeOptions: ['--trace-gc-nvp', ...(env.THREADS_NODE_OPTIONS ?? '').split(' ').filter(Boolean)],
});
const logFile = join(
  dir,
  readdirSync(dir).find((name) => name.endsWith('.log')),
);

/** Nanoseconds on CPU so far, by thread id. */
function threads(pid) {
  const out = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      out.set(tid, Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]));
    } catch {
      // a thread that ended meanwhile
    }
  }
  return out;
}

let visitor = 0;
const load = (seconds) =>
  atFixedRate({
    url: bridge.url,
    rate,
    method: 'POST',
    path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
    type: 'application/json',
    duration: seconds,
    body: () =>
      JSON.stringify(jivoChatAccepted({ ...personOf('new', 5_000_000 + visitor), chat: visitor++ })),
  });

try {
  await load(3); // warm-up: compiled code, caches, the young generation's size
  for (let round = 1; round <= rounds; round++) {
    const logAt = readFileSync(logFile, 'utf8').length;
    const before = threads(bridge.pid);
    const answered = answeredOf(await load(duration));
    const after = threads(bridge.pid);
    const perRequest = (ns) => (ns / answered / 1e6).toFixed(4);
    let all = 0;
    const others = [];
    for (const [tid, ns] of after) {
      const spent = ns - (before.get(tid) ?? 0);
      all += spent;
      if (tid !== String(bridge.pid) && spent > 0) others.push([tid, spent]);
    }
    const main = after.get(String(bridge.pid)) - before.get(String(bridge.pid));
    const load1 = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
    console.log(
      `round ${round}: ${answered} answered, load ${load1}; CPU ms per request: all ${perRequest(all)}, ` +
        `JavaScript thread ${perRequest(main)}, others ${perRequest(all - main)}`,
    );
    for (const [tid, spent] of others.sort((a, b) => b[1] - a[1]))
      console.log(`  thread ${tid.padEnd(8)} ${perRequest(spent)}`);
    // --trace-gc-nvp lines of this round: name=value pairs, one line per collection.
    const sums = new Map();
    const add = (name, value) => sums.set(name, (sums.get(name) ?? 0) + value);
    for (const line of readFileSync(logFile, 'utf8').slice(logAt).split('\n')) {
      const kind = / gc=(\w+)/.exec(line)?.[1];
      if (!kind) continue;
      add(`${kind} collections`, 1);
      for (const [, name, value] of line.matchAll(
        / (pause|background\.[a-z_.]+|allocated|promoted|new_space_survived)=([0-9.]+)/g,
      ))
        add(`${kind} ${name}`, Number(value));
    }
    for (const [name, value] of sums) {
      if (value === 0) continue;
      const shown = name.endsWith('collections')
        ? String(value)
        : /allocated|promoted|survived/.test(name)
          ? `${(value / answered / 1024).toFixed(2)} KB per request`
          : `${(value / answered).toFixed(4)} ms per request`;
      console.log(`  gc ${name.padEnd(42)} ${shown}`);
    }
  }
} finally {
  bridge.child.kill();
  await redis.stop();
}
process.exit(0);
