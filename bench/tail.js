// `node bench/tail.js <checkout> [checkout ...]` (each built; `<checkout>#<node options>` as in
// bench/cpu.js): the webhook's latency tail, paired. Every checkout's bridge runs on one private
// Redis with bench/lib/loop-probe.js loaded, and in each round all of them are loaded at once,
// each by its own autocannon process (bench/lib/cannon.js), so that they share whatever the
// machine does in those seconds; a figure is compared within its round only, and the summary is
// the median of the rounds' ratios to the first checkout. Latency is a time, so it moves with
// everything else on the machine: read the ratios, not the milliseconds, and run both orders.
//
// Per round and checkout: req/s; the client's p50, p99 and p99 ÷ p50 (every answer's own time,
// fractional ms); the event loop's gaps (how long it was held between two turns of a 1 ms timer:
// p99 and max, and the share of the round spent in gaps of ≥ 8 ms); scavenges (count, mean and
// max ms) and mark-compacts; how much of the long gaps' time was collection.
//
// Knobs (environment): TAIL_ONLY (comma list of known, new, finished; default known),
// TAIL_CONNECTIONS (50), TAIL_RATE (requests/s per checkout; unset: as fast as answered, as
// `npm run bench` loads it), TAIL_DURATION (seconds per round, 8), TAIL_ROUNDS (5; the first is
// a warm-up, left out of the medians), TAIL_KEEP=1 (keep each probe's JSON: the long gaps with
// their time, responses ended in them and GCs inside; the directory is printed).
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { JIVO_TOKEN, seedKnown, startBridge } from './lib/bridge.js';
import { loads, median } from './lib/load.js';
import { exitOnInterrupt } from './lib/procs.js';
import { benchRedis } from './lib/redis.js';

exitOnInterrupt();
const env = process.env;
const checkouts = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((arg) => {
  const [path, options] = arg.split('#');
  return { root: resolve(path), nodeOptions: options ? options.split(' ').filter(Boolean) : [], label: arg };
});
const only = (env.TAIL_ONLY ?? 'known').split(',').map((id) => id.trim());
const connections = Number(env.TAIL_CONNECTIONS ?? 50);
const rate = env.TAIL_RATE ? Number(env.TAIL_RATE) : undefined;
const duration = Number(env.TAIL_DURATION ?? 8);
const rounds = Math.max(2, Number(env.TAIL_ROUNDS ?? 5));
const KNOWN = 1000;
const PROBE = resolve(import.meta.dirname, 'lib', 'loop-probe.js');
const CANNON = resolve(import.meta.dirname, 'lib', 'cannon.js');

const dir = mkdtempSync(join(tmpdir(), 'chatbridge-tail-'));
const probeDir = join(dir, 'probes');
mkdirSync(probeDir);
env.CB_PROBE_DIR = probeDir; // inherited by the bridges
const redis = await benchRedis();
const bridges = [];
/** Redis' calls by command so far (INFO commandstats; commands run by scripts count too). */
async function commandStats() {
  const { Redis } = await import('ioredis');
  const client = new Redis(redis.url);
  const text = await client.info('commandstats');
  await client.quit();
  const calls = {};
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[match[1]] = Number(match[2]);
  return calls;
}

/** The probe's window: SIGUSR2 ends it and writes it; returns it parsed. */
async function probeOf(bridge) {
  const file = join(probeDir, `probe-${bridge.pid}.json`);
  rmSync(file, { force: true });
  process.kill(bridge.pid, 'SIGUSR2');
  for (let tries = 0; tries < 200; tries++) {
    try {
      if (statSync(file).size > 0) return JSON.parse(readFileSync(file, 'utf8'));
    } catch {}
    await sleep(25);
  }
  throw new Error(`no probe from pid ${bridge.pid}`);
}

function cannon(options) {
  return new Promise((resolve_, reject) => {
    execFile(process.execPath, [CANNON, JSON.stringify(options)], (error, stdout) =>
      error ? reject(error) : resolve_(JSON.parse(stdout)),
    );
  });
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

function summarise(load, probe) {
  const gaps = [...probe.gaps].sort((a, b) => a - b);
  const minors = probe.gcs.filter((gc) => gc.kind === 'minor');
  const majors = probe.gcs.filter((gc) => gc.kind === 'major');
  const longMs = probe.long.reduce((sum, gap) => sum + gap.gap, 0);
  const longGcMs = probe.long.reduce((sum, gap) => sum + gap.gcMs, 0);
  const server = [...probe.server].sort((a, b) => a - b);
  // The main thread's time on a core at a moment (interpolated between the probe's ticks): an
  // answer's "run time" is how much the loop worked while it was in flight, its latency on a
  // machine that gave the bridge its core whenever it was runnable.
  const ticks = probe.ticks;
  const runAt = (at) => {
    let low = 0;
    let high = ticks.length / 3 - 1;
    if (high < 1) return 0;
    if (at <= ticks[0]) return ticks[1];
    if (at >= ticks[high * 3]) return ticks[high * 3 + 1];
    while (high - low > 1) {
      const middle = (low + high) >> 1;
      if (ticks[middle * 3] <= at) low = middle;
      else high = middle;
    }
    const [w0, r0, w1, r1] = [ticks[low * 3], ticks[low * 3 + 1], ticks[high * 3], ticks[high * 3 + 1]];
    return r0 + ((r1 - r0) * (at - w0)) / Math.max(1e-9, w1 - w0);
  };
  const waited = ticks.length >= 6 ? ticks.at(-1) - ticks[2] : 0;
  const ran = ticks.length >= 6 ? ticks.at(-2) - ticks[1] : 0;
  const spanned = ticks.length >= 6 ? ticks.at(-3) - ticks[0] : 1;
  // Each answer's run time less the GC pauses' run time inside it: what the tail would be if
  // collections took no time and nothing else changed.
  const pauses = probe.gcs
    .filter((gc) => gc.kind === 'minor' || gc.kind === 'major')
    .map((gc) => ({ from: gc.at, to: gc.at + gc.ms, run: runAt(gc.at + gc.ms) - runAt(gc.at) }));
  const runs = [];
  const runsNoGc = [];
  for (const [index, ms] of probe.server.entries()) {
    const from = probe.starts[index];
    const to = from + ms;
    const run = runAt(to) - runAt(from);
    let inside = 0;
    for (const gc of pauses)
      if (gc.to > from && gc.from < to)
        inside +=
          gc.run * ((Math.min(to, gc.to) - Math.max(from, gc.from)) / Math.max(1e-9, gc.to - gc.from));
    runs.push(run);
    runsNoGc.push(run - inside);
  }
  runs.sort((a, b) => a - b);
  runsNoGc.sort((a, b) => a - b);
  return {
    ...load,
    tail: load.p99 / load.p50,
    gapP99: quantile(gaps, 0.99),
    gapMax: gaps.at(-1) ?? 0,
    longShare: longMs / probe.ms,
    long: probe.long.length,
    longGcShare: longMs > 0 ? longGcMs / longMs : 0,
    scavenges: minors.length,
    scavengeMs: minors.length ? minors.reduce((sum, gc) => sum + gc.ms, 0) / minors.length : 0,
    scavengeMax: Math.max(0, ...minors.map((gc) => gc.ms)),
    majors: majors.length,
    majorMax: Math.max(0, ...majors.map((gc) => gc.ms)),
    serverP50: quantile(server, 0.5),
    serverP99: quantile(server, 0.99),
    runP50: quantile(runs, 0.5),
    runP99: quantile(runs, 0.99),
    runP99NoGc: quantile(runsNoGc, 0.99),
    runTail: quantile(runs, 0.99) / Math.max(1e-9, quantile(runs, 0.5)),
    waitShare: waited / spanned,
    runShare: ran / spanned,
  };
}

const f = (value, digits = 1) => value.toFixed(digits);
function line(label, s) {
  return `  ${label.padEnd(28)} ${f(s.rps, 0).padStart(5)} req/s  p50 ${f(s.p50)}  p99 ${f(s.p99)}  (×${f(s.tail, 2)})  server p50/p99 ${f(s.serverP50)}/${f(s.serverP99)}  run p50/p99 ${f(s.runP50)}/${f(s.runP99)} (×${f(s.runTail, 2)}) less GC ${f(s.runP99NoGc)}  on core ${f(s.runShare * 100, 0)} % waiting ${f(s.waitShare * 100, 0)} %  gap p99 ${f(s.gapP99)} max ${f(s.gapMax)}  ≥8ms ${f(s.long, 0)} = ${f(s.longShare * 100)} % (GC ${f(s.longGcShare * 100, 0)} %)  scav ${s.scavenges}×${f(s.scavengeMs)} max ${f(s.scavengeMax)}  MC ${s.majors} max ${f(s.majorMax)}`;
}

try {
  for (const [index, { root, nodeOptions, label }] of checkouts.entries()) {
    const runDir = join(dir, String(index));
    mkdirSync(runDir);
    const bridge = await startBridge({
      root,
      dir: runDir,
      redisUrl: redis.url,
      keyPrefix: `tail${index}x${Date.now().toString(36)}`,
      logLevel: 'warn',
      nodeOptions: ['--import', PROBE, ...nodeOptions],
    });
    process.stderr.write(`${label}: bridge pid ${bridge.pid}, seeding ${KNOWN} contacts\n`);
    await seedKnown(bridge.url, KNOWN);
    bridges.push({ ...bridge, label });
  }
  process.stdout.write(
    `bench/tail.js: ${checkouts.length} bridges, ${connections} connections each, ${rate ? `${rate} req/s each` : 'as fast as answered'}, ${duration} s a round, ${rounds} rounds (the first a warm-up)\n`,
  );
  const path = `/webhooks/jivochat/site/${JIVO_TOKEN}`;
  const results = {};
  let sent = 0;
  for (let round = 0; round < rounds; round++) {
    for (const scenario of only) {
      const start = sent;
      const before = loads();
      const statsBefore = env.TAIL_REDIS_STATS ? await commandStats() : null;
      // Reset every probe, then load every bridge at once.
      await Promise.all(bridges.map(probeOf));
      const loadsDone = await Promise.all(
        bridges.map((bridge, side) =>
          cannon({ url: bridge.url, path, scenario, side, start, connections, duration, rate }),
        ),
      );
      const probes = await Promise.all(bridges.map(probeOf));
      sent += Math.max(...loadsDone.map((load) => load.sent)) + 1;
      const figures = loadsDone.map((load, side) => summarise(load, probes[side]));
      if (env.TAIL_KEEP)
        for (const side of probes.keys())
          execFileSync('cp', [
            join(probeDir, `probe-${bridges[side].pid}.json`),
            join(dir, `r${round}-${scenario}-${side}.json`),
          ]);
      process.stdout.write(
        `${new Date().toISOString().slice(11, 19)} round ${round + 1}${round === 0 ? ' (warm-up)' : ''} ${scenario}, load ${before} → ${loads()}\n${figures.map((s, side) => line(bridges[side].label, s)).join('\n')}\n`,
      );
      if (statsBefore) {
        const after = await commandStats();
        const answered = loadsDone.reduce((sum, load) => sum + load.answered, 0);
        const per = Object.entries(after)
          .map(([name, calls]) => [name, (calls - (statsBefore[name] ?? 0)) / Math.max(1, answered)])
          .filter(([, calls]) => calls >= 0.005)
          .map(([name, calls]) => `${name} ${calls.toFixed(3)}`);
        process.stdout.write(`  Redis commands per answer (all bridges): ${per.join(', ')}\n`);
      }
      if (round > 0) {
        results[scenario] ??= [];
        results[scenario].push(figures);
      }
    }
  }
  const keys = [
    'rps',
    'p50',
    'p99',
    'tail',
    'serverP99',
    'runP50',
    'runP99',
    'runTail',
    'gapP99',
    'gapMax',
    'longShare',
    'scavengeMs',
    'scavengeMax',
  ];
  process.stdout.write(`\nmedians of the rounds' ratios to ${bridges[0].label} (after the warm-up):\n`);
  for (const [scenario, perRound] of Object.entries(results)) {
    for (let side = 1; side < bridges.length; side++) {
      const ratios = keys.map((key) => {
        const values = perRound.map((figures) => figures[side][key] / Math.max(1e-9, figures[0][key]));
        return `${key} ${f(median(values) * 100, 0)} %`;
      });
      process.stdout.write(`  ${scenario} ${bridges[side].label}: ${ratios.join('  ')}\n`);
    }
    for (let side = 0; side < bridges.length; side++) {
      const med = (key) => median(perRound.map((figures) => figures[side][key]));
      process.stdout.write(
        `  ${scenario} ${bridges[side].label} medians: ${f(med('rps'), 0)} req/s, p50 ${f(med('p50'))}, p99 ${f(med('p99'))} ms, gap p99 ${f(med('gapP99'))} ms, run p50/p99 ${f(med('runP50'))}/${f(med('runP99'))} ms (×${f(med('runTail'), 2)}), less GC ${f(med('runP99NoGc'))}\n`,
      );
    }
  }
  if (env.TAIL_KEEP) process.stdout.write(`probes kept in ${dir}\n`);
} finally {
  for (const bridge of bridges) await bridge.stop();
  await redis.stop();
  if (!env.TAIL_KEEP) rmSync(dir, { recursive: true, force: true });
}
