// `npm run build && node bench/lookup-loop.js [checkout ...]`: the CPU of a LiveTex lookup of a
// known contact above Node's HTTP parser, in one process: each checkout's real app (its whole
// middleware chain, router, lookup route, intake pipeline and contact engine, on a private Redis)
// is handed requests without a socket (bench/lib/inject.js), LOOP_CONCURRENCY at a time (so that,
// as at saturation, the Redis commands of several lookups leave in one write), and each round
// measures every checkout in turn (odd rounds in reverse order). Steadier than bench/cpu.js on a
// busy machine: no load generator, no socket, no wake-up per request; what it leaves out is the
// parser, the socket write and the Redis socket's system calls (the wait for Redis is not CPU).
// With two checkouts it prints the second's CPU per lookup as a share of the first's (median of
// the rounds' ratios).
//
// Knobs: LOOP_N lookups per checkout per round (3000), LOOP_ROUNDS (9), LOOP_CONCURRENCY (20),
// LOOP_PROFILE=1: instead of
// the rounds, a V8 CPU profile of the first checkout (node bench/profile.js <file>).
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ADMIN_TOKEN, LIVETEX_TOKEN, writeBridgeConfig } from './lib/bridge.js';
import { inject, readInjected } from './lib/inject.js';
import { loads, median, roundOrder, stamp } from './lib/load.js';
import { lookupSealer } from './lib/lookup-tokens.js';
import { writeLoopProfile } from './lib/loop-profile.js';
import { livetexDialogClosed, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
const N = Number(env.LOOP_N ?? 3000);
let rounds = Number(env.LOOP_ROUNDS ?? 9);
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
const CONCURRENCY = Number(env.LOOP_CONCURRENCY ?? 20);
const KNOWN = 1000;
const HOST = { host: '127.0.0.1' };

const redis = await benchRedis();
const dir = mkdtempSync(`${tmpdir()}/chatbridge-lookup-loop-`);
const bridges = [];
let port = 41_000;

/** One checkout's bridge, built (not listening) as `chatbridge start` builds it, seeded, with a key. */
async function build(root) {
  const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
  (await dist('v8-tuning.js')).tuneV8ForServing();
  const [load, registry, cli, bridge] = await Promise.all(
    ['config/load.js', 'registry.js', 'cli/main.js', 'bridge.js'].map(dist),
  );
  const configFile = writeBridgeConfig({
    dir,
    port: port++,
    redisUrl: redis.url,
    keyPrefix: `lloop${randomUUID().slice(0, 8)}`,
    logLevel: 'warn',
  });
  const { config } = load.loadConfig(configFile, registry.defaultRegistry(), {});
  const built = await bridge.createBridge({
    config,
    role: 'all',
    logger: cli.cliLogger(config.log.level),
    defaultMetrics: true,
  });
  bridges.push(built);
  const handler = built.app.callback();
  for (let person = 0; person < KNOWN; person++) {
    const seeded = readInjected(
      await inject(handler, {
        method: 'POST',
        url: `/webhooks/livetex/app/${LIVETEX_TOKEN}`,
        headers: { ...HOST, 'content-type': 'application/json' },
        body: Buffer.from(
          JSON.stringify(livetexDialogClosed({ ...personOf('known', person), dialog: 500_000 + person })),
        ),
      }),
    );
    if (seeded.status !== 200) throw new Error(`seeding: ${seeded.status} ${seeded.text}`);
  }
  const made = readInjected(
    await inject(handler, {
      method: 'POST',
      url: '/api/v1/channels/app/keys',
      headers: { ...HOST, authorization: `Bearer ${ADMIN_TOKEN}` },
    }),
  );
  if (made.status !== 200 && made.status !== 201) throw new Error(`key: ${made.status} ${made.text}`);
  const key = JSON.parse(made.text);
  const seal = await lookupSealer(root, key, { people: KNOWN, prefix: 'loop' });
  let sealed = 0;
  /** `count` fresh tokens (a jti each: the bridge takes each once), sealed before they are sent. */
  const tokens = (count) => Promise.all(Array.from({ length: count }, () => seal(sealed++)));
  const call = (body) =>
    inject(handler, {
      method: 'POST',
      url: '/livetex/app/attributes',
      headers: { ...HOST, 'content-type': 'application/jose', accept: 'application/jose' },
      body: Buffer.from(body),
    });
  const [first] = await tokens(1);
  const answer = readInjected(await call(first));
  if (answer.status !== 200) throw new Error(`${root}: lookup ${answer.status} ${answer.text}`);
  return { root, tokens, call, cpu: [] };
}

/** Every body through `side`, CONCURRENCY at a time; throws unless each is answered 200. */
async function drive(side, bodies) {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < bodies.length) {
        const response = await side.call(bodies[next++]);
        if (response.statusCode !== 200)
          throw new Error(`${side.root}: lookup answered ${response.statusCode}`);
      }
    }),
  );
}

try {
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: building ${roots.length} bridge(s)\n`);
  const sides = [];
  for (const root of roots) sides.push(await build(root));
  // Warm-up: every known person looked up once, then as many again.
  for (const side of sides) await drive(side, await side.tokens(3 * KNOWN));
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: warm\n`);
  if (env.LOOP_PROFILE === '1') {
    const side = sides[0];
    const bodies = await side.tokens(N * rounds);
    await writeLoopProfile('lookup-loop', () => drive(side, bodies));
    rounds = 0;
  }
  for (let round = 0; round < rounds; round++) {
    const order = roundOrder(sides, round);
    for (const side of order) {
      const bodies = await side.tokens(N);
      gc();
      const cpu = process.cpuUsage();
      await drive(side, bodies);
      const used = process.cpuUsage(cpu);
      side.cpu.push((used.user + used.system) / N);
    }
    process.stderr.write(
      `${stamp()} UTC round ${round}, load ${loads()}: ${sides.map((side) => side.cpu.at(-1).toFixed(1)).join(' / ')} µs\n`,
    );
  }
  if (rounds > 0) {
    process.stdout.write(
      `\nlookup-loop: CPU µs per LiveTex lookup above the HTTP parser (all threads), ${N} per checkout per round, median of ${rounds} rounds (load average ${loads()} at the end)\n`,
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
  await redis.stop();
}
