// `npm run build && node bench/ladder-loop.js [checkout ...]`: bench/ladder.js's rungs in one
// process, each request handed to the rung's Koa app without a socket (bench/lib/inject.js: Node's
// own IncomingMessage and ServerResponse, minus the HTTP parser and the socket write, which every
// rung pays alike), one after the other. Steadier than ladder.js on a busy machine, where a
// rung's CPU per request moves by ±30 % between rounds: there is no load generator, no event-loop
// wake-up per request and no scheduling between processes, and each round measures every rung in
// turn for a few hundred milliseconds (odd rounds in reverse order). What it leaves out is what
// ladder.js adds: the parser, the socket, and the bridge's started workers.
//
// Rungs (bench/lib/ladder-rungs.js): bare (bench/bare.js's handler: for-await body, JSON.parse,
// an answer of the bridge's size), koa, metrics, router, chain1..N, token, pipeline (the real app, engine
// out). With two checkouts, every rung of both, and each rung of the second as a share of the
// first's (median of the rounds' ratios).
//
// Knobs: LOOP_N requests per rung per round (5000), LOOP_ROUNDS (11), LADDER_STEPS (comma list),
// LOOP_PROFILE=<rung>: instead of the rounds, a V8 CPU profile of that rung (bench/profile.js reads it),
// LADDER_VIA_CHAIN=1: the webhook's URL with `?via=chain` (see bench/lib/ladder-rungs.js on chain1..N).
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import Koa from 'koa';
import { JIVO_TOKEN, LIVETEX_TOKEN, writeBridgeConfig } from './lib/bridge.js';
import { inject, readInjected } from './lib/inject.js';
import { ladderModules, rungNames, wantedRungs } from './lib/ladder-rungs.js';
import { loads, median, roundOrder, stamp } from './lib/load.js';
import { writeLoopProfile } from './lib/loop-profile.js';
import { jivoChatAccepted, livetexDialogClosed, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
const N = Number(env.LOOP_N ?? 5000);
let rounds = Number(env.LOOP_ROUNDS ?? 11);
// A full collection before each rung's batch, so that a batch pays for its own garbage, not for
// the old generation another rung filled.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
const KNOWN = 1000;
const PATH = `/webhooks/jivochat/site/${JIVO_TOKEN}${env.LADDER_VIA_CHAIN === '1' ? '?via=chain' : ''}`;
const HEADERS = { host: '127.0.0.1', 'content-type': 'application/json', accept: 'application/json' };

const redis = await benchRedis();
const dir = mkdtempSync(`${tmpdir()}/chatbridge-ladder-loop-`);
const bridges = [];
let port = 40_000;
const configFor = () =>
  writeBridgeConfig({
    dir,
    port: port++,
    redisUrl: redis.url,
    keyPrefix: `loop${randomUUID().slice(0, 8)}`,
    logLevel: 'warn',
  });

/** bench/bare.js's handler as a Koa app (its listening and reply-size route left out). */
function bareApp(bytes, contentType) {
  const template = { result: 'ok', pad: 'x'.repeat(Math.max(0, bytes - 25)) };
  const app = new Koa();
  app.use(async (ctx) => {
    const chunks = [];
    let size = 0;
    for await (const chunk of ctx.req) {
      size += chunk.length;
      chunks.push(chunk);
    }
    const raw = Buffer.concat(chunks, size);
    if (raw.length > 0 && raw[0] === 0x7b) JSON.parse(raw.toString('utf8'));
    ctx.type = contentType;
    ctx.body = { ...template };
  });
  return app;
}

let sent = 0;
const bodyOf = (n) =>
  Buffer.from(JSON.stringify(jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 20_000_000 + n })));
const call = (handler, body) => inject(handler, { method: 'POST', url: PATH, headers: HEADERS, body });

try {
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: building the rungs\n`);
  const rungs = [];
  for (const [side, root] of roots.entries()) {
    const modules = await ladderModules(root);
    // The pipeline rung first: its answer to a known contact is what the rungs below answer.
    const pipeline = await modules.build('pipeline', configFor(), null);
    bridges.push(pipeline.bridge);
    const pipelineHandler = pipeline.app.callback();
    for (let person = 0; person < KNOWN; person++) {
      const seeded = readInjected(
        await inject(pipelineHandler, {
          method: 'POST',
          url: `/webhooks/livetex/app/${LIVETEX_TOKEN}`,
          headers: HEADERS,
          body: Buffer.from(
            JSON.stringify(livetexDialogClosed({ ...personOf('known', person), dialog: 500_000 + person })),
          ),
        }),
      );
      if (seeded.status !== 200) throw new Error(`seeding: ${seeded.status} ${seeded.text}`);
    }
    const sample = readInjected(await call(pipelineHandler, bodyOf(0)));
    if (sample.status !== 200) throw new Error(`pipeline: ${sample.status} ${sample.text}`);
    const contentType = /\r\ncontent-type: ([^\r]*)/i.exec(sample.head)[1];
    const captured = { contentType, body: JSON.parse(sample.text) };
    const names = rungNames(pipeline.chainLength);
    const wanted = wantedRungs(env.LADDER_STEPS);
    for (const name of names) {
      if (wanted && !wanted.has(name)) continue;
      let app;
      if (name === 'pipeline') app = pipeline.app;
      else if (name === 'bare') app = bareApp(Buffer.byteLength(sample.text), contentType);
      else {
        const built = await modules.build(name, configFor(), captured);
        bridges.push(built.bridge);
        app = built.app;
      }
      const handler = app.callback();
      // Every rung answers a known chat_accepted as the bridge does (bare: the same size).
      const first = readInjected(await call(handler, bodyOf(1)));
      if (first.status !== 200 || (name !== 'bare' && name !== 'pipeline' && first.text !== sample.text))
        throw new Error(`${name}: ${first.status} ${first.text}`);
      rungs.push({ side, root, name, handler, cpu: [], wall: [] });
    }
  }
  // Warm-up: every rung sees every known person once (the pipeline rung's engine, then remembered).
  for (const rung of rungs) for (let n = 0; n < KNOWN + 500; n++) await call(rung.handler, bodyOf(n));
  process.stderr.write(`${stamp()} UTC, load average ${loads()}: ${rungs.length} rungs warm\n`);
  if (env.LOOP_PROFILE) {
    // One rung's V8 CPU profile over LOOP_N × LOOP_ROUNDS requests (node bench/profile.js <file>).
    const rung = rungs.find((each) => each.name === env.LOOP_PROFILE);
    if (!rung) throw new Error(`no rung ${env.LOOP_PROFILE}`);
    const bodies = Array.from({ length: N }, () => bodyOf(sent++));
    await writeLoopProfile(`ladder-loop-${rung.name}`, async () => {
      for (let index = 0; index < N * rounds; index++) await call(rung.handler, bodies[index % N]);
    });
    rounds = 0;
  }

  for (let round = 0; round < rounds; round++) {
    const order = roundOrder(rungs, round);
    const bodies = Array.from({ length: N }, () => bodyOf(sent++));
    for (const rung of order) {
      gc();
      const cpu = process.cpuUsage();
      const wall = performance.now();
      for (let index = 0; index < N; index++) await call(rung.handler, bodies[index]);
      const used = process.cpuUsage(cpu);
      rung.cpu.push((used.user + used.system) / N);
      rung.wall.push(((performance.now() - wall) * 1000) / N);
    }
    process.stderr.write(
      `${stamp()} UTC round ${round}${round % 2 === 1 ? ' reversed' : ''}, load ${loads()}: ${order
        .map((rung) => `${roots.length > 1 ? `${rung.side}:` : ''}${rung.name} ${rung.cpu.at(-1).toFixed(1)}`)
        .join(', ')}\n`,
    );
  }

  process.stdout.write(
    `\nladder-loop, ${N} requests per rung per round, ${rounds} rounds (load average ${loads()} at the end)\n` +
      "CPU µs per request above the HTTP parser (all threads): median of the rounds; +: median of the rounds' (this rung − the one above)\n",
  );
  for (const [side, root] of roots.entries()) {
    process.stdout.write(
      `${root}\n${'rung'.padEnd(10)}${'µs'.padStart(8)} ${'+µs'.padStart(8)}  rounds of +µs${side > 0 ? "   share of the first checkout's" : ''}\n`,
    );
    let previous = null;
    for (const rung of rungs.filter((each) => each.side === side)) {
      let increment = '';
      if (previous) {
        const diffs = rung.cpu.map((value, round) => value - previous.cpu[round]);
        increment = `${median(diffs).toFixed(1).padStart(8)}  [${diffs.map((v) => v.toFixed(1)).join(' ')}]`;
      }
      let share = '';
      if (side > 0) {
        const base = rungs.find((each) => each.side === 0 && each.name === rung.name);
        if (base)
          share = `   ${(median(rung.cpu.map((v, round) => v / base.cpu[round])) * 100).toFixed(0)} %`;
      }
      process.stdout.write(
        `${rung.name.padEnd(10)}${median(rung.cpu).toFixed(1).padStart(8)} ${increment}${share}\n`,
      );
      previous = rung;
    }
  }
} finally {
  for (const bridge of bridges) await bridge.close().catch(() => {});
  await redis.stop();
}
