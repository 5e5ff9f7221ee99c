// `npm run build && node bench/ack-loop.js [checkout ...]`: the CPU of the web half of
// `intake.ackAfterAppend` above Node's HTTP parser, in one process: each checkout's real app, as
// `chatbridge start --role web` builds it (its whole middleware chain, router, webhook route,
// intake pipeline and the deferred list's append, on a private Redis), is handed JivoChat
// chat_finished requests (50 messages, ~7.3 KB) without a socket (bench/lib/inject.js),
// LOOP_CONCURRENCY at a time, and each round measures every checkout in turn (odd rounds in
// reverse order). The list is emptied between rounds (no worker runs: what is measured is what a
// vendor's answer waits for). As bench/lookup-loop.js, steadier than bench/cpu.js on a busy
// machine; what it leaves out is the parser, the socket write and the Redis socket's system calls.
// With two checkouts it prints the second's CPU per event as a share of the first's (median of
// the rounds' ratios).
//
// Knobs: LOOP_N events per checkout per round (3000), LOOP_ROUNDS (9), LOOP_CONCURRENCY (20),
// LOOP_PROFILE=1: instead of the rounds, a V8 CPU profile of the first checkout
// (node bench/profile.js <file>).
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { JIVO_TOKEN, writeBridgeConfig } from './lib/bridge.js';
import { inject, readInjected } from './lib/inject.js';
import { loads, median, roundOrder, stamp } from './lib/load.js';
import { writeLoopProfile } from './lib/loop-profile.js';
import { jivoChatFinished, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
const N = Number(env.LOOP_N ?? 3000);
let rounds = Number(env.LOOP_ROUNDS ?? 9);
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
const CONCURRENCY = Number(env.LOOP_CONCURRENCY ?? 20);
const KNOWN = 1000;
const HOST = { host: '127.0.0.1', 'content-type': 'application/json' };

const redis = await benchRedis();
const client = new Redis(redis.url);
const dir = mkdtempSync(`${tmpdir()}/chatbridge-ack-loop-`);
const bridges = [];
let port = 42_000;
let chat = 60_000_000;

/** One checkout's web half, built (not listening) as `chatbridge start --role web` builds it. */
async function build(root) {
  const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
  (await dist('v8-tuning.js')).tuneV8ForServing();
  const [load, registry, cli, bridge] = await Promise.all(
    ['config/load.js', 'registry.js', 'cli/main.js', 'bridge.js'].map(dist),
  );
  const keyPrefix = `aloop${randomUUID().slice(0, 8)}`;
  const configFile = writeBridgeConfig({
    dir,
    port: port++,
    redisUrl: redis.url,
    keyPrefix,
    logLevel: 'warn',
    extra: 'intake: { ackAfterAppend: true, maxBacklog: 1000000 }',
  });
  const { config } = load.loadConfig(configFile, registry.defaultRegistry(), {});
  const built = await bridge.createBridge({
    config,
    role: 'web',
    logger: cli.cliLogger(config.log.level),
    defaultMetrics: true,
  });
  bridges.push(built);
  const handler = built.app.callback();
  const call = (body) =>
    inject(handler, {
      method: 'POST',
      url: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: HOST,
      body,
    });
  const first = readInjected(await call(bodies(1)[0]));
  if (first.status !== 200 || first.text !== '{"result":"ok"}')
    throw new Error(`${root}: answered ${first.status} ${first.text}`);
  return { root, call, list: `${keyPrefix}:intake:deferred`, cpu: [] };
}

/** `count` chat_finished bodies of known people, each a chat of its own, made before they are sent. */
function bodies(count) {
  return Array.from({ length: count }, (_, n) =>
    Buffer.from(
      JSON.stringify(jivoChatFinished({ ...personOf('deferred', n % KNOWN), chat: chat++, messages: 50 })),
    ),
  );
}

/** Every body through `side`, CONCURRENCY at a time; throws unless each is answered 200. */
async function drive(side, all) {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < all.length) {
        const response = await side.call(all[next++]);
        if (response.statusCode !== 200) throw new Error(`${side.root}: answered ${response.statusCode}`);
      }
    }),
  );
}

try {
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: building ${roots.length} bridge(s)\n`);
  const sides = [];
  for (const root of roots) sides.push(await build(root));
  for (const side of sides) {
    await drive(side, bodies(3 * KNOWN));
    await client.del(side.list);
  }
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: warm\n`);
  if (env.LOOP_PROFILE === '1') {
    const side = sides[0];
    const all = bodies(N * 3);
    await writeLoopProfile('ack-loop', () => drive(side, all));
    rounds = 0;
  }
  for (let round = 0; round < rounds; round++) {
    const order = roundOrder(sides, round);
    for (const side of order) {
      const all = bodies(N);
      gc();
      const cpu = process.cpuUsage();
      await drive(side, all);
      const used = process.cpuUsage(cpu);
      side.cpu.push((used.user + used.system) / N);
      const length = await client.llen(side.list);
      if (length !== N) throw new Error(`${side.root}: ${length} items appended for ${N} events`);
      await client.del(side.list);
    }
    process.stderr.write(
      `${stamp()} UTC round ${round}, load ${loads()}: ${sides.map((side) => side.cpu.at(-1).toFixed(1)).join(' / ')} µs\n`,
    );
  }
  if (rounds > 0) {
    process.stdout.write(
      `\nack-loop: CPU µs per acknowledged chat_finished (web half, above the HTTP parser, all threads), ${N} per checkout per round, median of ${rounds} rounds (load average ${loads()} at the end)\n`,
    );
    for (const side of sides) {
      const share =
        side === sides[0]
          ? ''
          : `  ${(median(side.cpu.map((value, round) => value / sides[0].cpu[round])) * 100).toFixed(1)} % of the first (rounds ${side.cpu.map((value, round) => ((value / sides[0].cpu[round]) * 100).toFixed(0)).join(' ')})`;
      process.stdout.write(`${median(side.cpu).toFixed(1).padStart(7)} µs  ${side.root}${share}\n`);
    }
  }
} finally {
  for (const bridge of bridges) await bridge.close().catch(() => {});
  client.disconnect();
  await redis.stop();
}
