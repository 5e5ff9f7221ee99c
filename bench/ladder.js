// `npm run build && node bench/ladder.js [checkout]`: where the engine-free known-contact webhook's
// CPU goes above bare Koa's, as a ladder of servers that each add one part of the bridge to the
// one below, all loaded at the same fixed rate at the same time (as bench/cpu.js loads two
// checkouts), each in its own process:
//
//   bare       bench/bare.js, the baseline `npm run bench` compares with
//   koa        Koa, one middleware: the bridge's body reader, JSON.parse, the bridge's own answer
//   metrics    + prom-client's default metrics, collected as `chatbridge start` collects them
//   router     + the bridge's @koa/routers with its whole route table (the webhook's handler: as koa)
//   chain1..N  + the bridge's middleware chain (src/http/app.ts), one middleware per rung
//   token      + the webhook route's channel lookup and token compare
//   pipeline   + the intake pipeline (parse, decode, facts, render, journal, metrics): the real
//              app, the contact engine taken out as BENCH_ENGINE=off takes it out
//   bridge     the engine-free bridge as bench/cpu.js '.#engine=off' runs it (bench/lib/engine-free.js:
//              also started — scheduler, workers — and listening through bridge.listen())
//
// The rungs below `bridge` are built by bench/lib/ladder-rungs.js (which says what each serves),
// each in a bench/lib/ladder-step.js process.
// CPU per request is read from /proc/<pid>/task/*/schedstat (nanoseconds, all threads; and the
// main thread alone, "JS"), divided by the requests answered. Each rung's increment is the median,
// over the counted rounds, of its CPU minus the rung below's in the same round. The first round
// warms up (every known person once: the engine-free rungs see each person's first observation
// through the engine) and is not counted; odd rounds start the load generators in reverse order.
//
// After the warm-up, every rung is left without requests for LADDER_IDLE seconds (5; 0 skips it)
// and its CPU per second idle is printed: what a rung spends whatever the rate (timers, pollers,
// a started bridge's workers), which the CPU per request at a fixed rate includes, spread over
// the requests of the round.
//
// Knobs: BENCH_RATE (400 req/s per rung), BENCH_DURATION (8 s per round), BENCH_ROUNDS (5 counted
// rounds), LADDER_STEPS (comma list of rungs; default all), LADDER_IDLE (5 s), LADDER_VIA_CHAIN=1
// (the webhook's URL with `?via=chain`: see bench/lib/ladder-rungs.js on chain1..N).
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JIVO_TOKEN, postJson, seedKnown, startBridge, writeBridgeConfig } from './lib/bridge.js';
import { rungNames, wantedRungs } from './lib/ladder-rungs.js';
import { loadAtOnce, loads, median, roundOrder, stamp } from './lib/load.js';
import { jivoChatAccepted, personOf } from './lib/payloads.js';
import { cpuNs, exitOnInterrupt, spawnLogged, startBaseline, waitReady } from './lib/procs.js';
import { benchRedis, freePort } from './lib/redis.js';

const env = process.env;
const root = resolve(process.argv[2] ?? '.');
const here = import.meta.dirname;
const rate = Number(env.BENCH_RATE ?? 400);
const duration = Number(env.BENCH_DURATION ?? 8);
const rounds = Math.max(1, Number(env.BENCH_ROUNDS ?? 5));
const idleSeconds = Number(env.LADDER_IDLE ?? 5);
const KNOWN = 1000;
const PATH = `/webhooks/jivochat/site/${JIVO_TOKEN}${env.LADDER_VIA_CHAIN === '1' ? '?via=chain' : ''}`;

exitOnInterrupt();
const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-ladder-'));
const rungs = [];
process.stderr.write(`${stamp()} UTC, load average ${loads()}: starting the rungs of ${root}\n`);
try {
  /** A ladder-step.js process on its own config and key prefix. */
  async function startStep(step, answerFile) {
    const stepDir = join(dir, step);
    mkdirSync(stepDir);
    const port = await freePort();
    const configFile = writeBridgeConfig({
      dir: stepDir,
      port,
      redisUrl: redis.url,
      keyPrefix: `ladder${step}${randomUUID().slice(0, 6)}`,
      logLevel: 'warn',
    });
    const logFile = join(stepDir, 'step.log');
    const process_ = spawnLogged(
      [join(here, 'lib', 'ladder-step.js'), step, configFile, root, answerFile ?? ''],
      {
        logFile,
        env: { CHATBRIDGE_CONFIG: '', PORT: '', REDIS_URL: '' },
      },
    );
    const url = `http://127.0.0.1:${port}`;
    await waitReady(`${url}/readyz`, 30_000, process_.child, step);
    return { step, ...process_, url, logFile };
  }

  // The pipeline rung first: its answer to a known contact is what the rungs below answer.
  const pipeline = await startStep('pipeline');
  await seedKnown(pipeline.url, KNOWN);
  const sample = await postJson(pipeline.url + PATH, jivoChatAccepted({ ...personOf('known', 0), chat: 1 }));
  const answerFile = join(dir, 'answer.json');
  const { contentType } = sample;
  writeFileSync(answerFile, JSON.stringify({ contentType, body: JSON.parse(sample.text) }));
  const chainLength = Number(/(\d+) chain middleware/.exec(readFileSync(pipeline.logFile, 'utf8'))?.[1]);
  if (!(chainLength > 0)) throw new Error(`no chain length in ${pipeline.logFile}`);

  const names = [...rungNames(chainLength), 'bridge'];
  const wanted = wantedRungs(env.LADDER_STEPS);
  for (const name of names) {
    if (wanted && !wanted.has(name)) continue;
    if (name === 'pipeline') rungs.push(pipeline);
    else if (name === 'bridge') {
      const bridgeDir = join(dir, 'bridge');
      mkdirSync(bridgeDir);
      const bridge = await startBridge({
        root,
        dir: bridgeDir,
        redisUrl: redis.url,
        keyPrefix: `ladderbridge${randomUUID().slice(0, 6)}`,
        logLevel: 'warn',
        engine: 'off',
      });
      await seedKnown(bridge.url, KNOWN);
      rungs.push({ step: name, ...bridge });
    } else if (name === 'bare') {
      // Its answer: as many bytes as the bridge's, of the same type (as bench/run.js sets it).
      const bare = await startBaseline({
        script: 'bare.js',
        name: 'bare koa',
        logFile: join(dir, 'bare.log'),
        reply: { bytes: sample.bytes, contentType },
      });
      rungs.push({ step: name, ...bare });
    } else rungs.push(await startStep(name, answerFile));
  }
  if (!wanted?.has('pipeline') && wanted) await pipeline.stop();
  process.stderr.write(
    `${stamp()} UTC, load average ${loads()}: ${rungs.length} rungs (chain of ${chainLength}), answer ${sample.bytes} bytes\n`,
  );

  const results = new Map(rungs.map((rung) => [rung.step, { all: [], main: [] }]));
  /** After the warm-up, each rung's CPU with no requests at all (ms per second): timers, workers, pollers. */
  async function idleWindow() {
    const before = rungs.map((rung) => cpuNs(rung.pid));
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
    const seconds = (performance.now() - started) / 1000;
    process.stderr.write(`${stamp()} UTC idle ${seconds.toFixed(1)} s, load ${loads()}\n`);
    for (const [index, rung] of rungs.entries()) {
      const after = cpuNs(rung.pid);
      rung.idle = (after.all - before[index].all) / 1e6 / seconds;
      rung.idleMain = (after.main - before[index].main) / 1e6 / seconds;
      process.stderr.write(
        `  ${rung.step.padEnd(9)} ${rung.idle.toFixed(2)} ms CPU per second idle (JS ${rung.idleMain.toFixed(2)})\n`,
      );
    }
  }
  for (let round = 0; round <= rounds; round++) {
    if (round === 1 && idleSeconds > 0) await idleWindow();
    const order = roundOrder(rungs, round);
    const startLoad = loads();
    const generator = process.cpuUsage();
    const loaded = await loadAtOnce(order, {
      read: cpuNs,
      load: (rung) => {
        rung.sent ??= 0;
        return {
          url: rung.url,
          rate,
          method: 'POST',
          path: PATH,
          type: 'application/json',
          body: () =>
            JSON.stringify(
              jivoChatAccepted({ ...personOf('known', rung.sent % KNOWN), chat: 20_000_000 + rung.sent++ }),
            ),
          // The warm-up round sends every rung every known person once, however long that takes
          // on a busy machine: a rung that had not seen them all would still call the engine.
          ...(round === 0 ? { amount: KNOWN + 200 } : { duration }),
        };
      },
    });
    const measured = loaded.map(({ side: rung, run, answered, before, after }) => {
      const refused = `${run.non2xx} answers not 2xx (${JSON.stringify(run.statusCodeStats)}), ${run.errors} errors`;
      // In the warm-up an engine-free rung's first observations go through the engine, which a
      // machine this busy can make answer 503 now and then (the vendor would retry): noted.
      if (round === 0 && (run.non2xx > 0 || run.errors > 0))
        process.stderr.write(`  ${rung.step} in the warm-up: ${refused}\n`);
      else if (run.non2xx > 0 || run.errors > 0) throw new Error(`${rung.step}: ${refused}`);
      return {
        rung,
        answered,
        all: (after.all - before.all) / 1e6 / answered,
        main: (after.main - before.main) / 1e6 / answered,
        p99: run.latency.p99,
      };
    });
    const counted = round > 0;
    // The load generators share this process: if it needs most of a core, the rates slip.
    const used = process.cpuUsage(generator);
    process.stderr.write(
      `${stamp()} UTC round ${round}${counted ? '' : ' (warm-up)'}${round % 2 === 1 ? ' reversed' : ''}, load ${startLoad} → ${loads()}, load generators ${((used.user + used.system) / 1e4 / duration).toFixed(0)} % of a core\n`,
    );
    for (const { rung, answered, all, main, p99 } of measured) {
      if (counted) {
        results.get(rung.step).all.push(all);
        results.get(rung.step).main.push(main);
      }
      process.stderr.write(
        `  ${rung.step.padEnd(9)} ${answered} answered, ${all.toFixed(4)} ms CPU/request (JS ${main.toFixed(4)}), p99 ${p99} ms\n`,
      );
    }
  }

  const ms = (value) => value.toFixed(3).padStart(7);
  const signed = (value) => `${value >= 0 ? '+' : ''}${value.toFixed(3)}`.padStart(7);
  process.stdout.write(
    `\nladder of ${root} at ${rate} req/s per rung, ${rounds} counted rounds of ${duration} s (load average ${loads()} at the end)\n` +
      "CPU ms per request: median of the rounds; +: the median of the rounds' (this rung − the one above), [each round];\n" +
      ">first: the median of the rounds' (this rung − the first rung); idle: CPU ms per second without requests\n" +
      `${'rung'.padEnd(10)}${'all'.padStart(7)} ${'JS'.padStart(7)}   ${'+all'.padStart(7)} ${'+JS'.padStart(7)}  ${'>first'.padStart(7)}  ${'idle ms/s'.padStart(9)}  rounds of +all\n`,
  );
  const first = results.get(rungs[0].step);
  let previous = null;
  for (const rung of rungs) {
    const { all, main } = results.get(rung.step);
    const idle = (rung.idle?.toFixed(2) ?? '-').padStart(9);
    // Paired differences: to the rung above, and to the first rung, round by round.
    const over = (base) => all.map((value, round) => value - base.all[round]);
    const overMain = (base) => main.map((value, round) => value - base.main[round]);
    let columns = `${''.padStart(15)}  ${''.padStart(7)}  ${idle}`;
    if (previous) {
      const diffAll = over(previous);
      columns =
        `${signed(median(diffAll))} ${signed(median(overMain(previous)))}  ${signed(median(over(first)))}  ` +
        `${idle}  [${diffAll.map((v) => v.toFixed(3)).join(' ')}]`;
    }
    process.stdout.write(`${rung.step.padEnd(10)}${ms(median(all))} ${ms(median(main))}   ${columns}\n`);
    previous = { all, main };
  }
} finally {
  for (const rung of rungs) await rung.stop();
  await redis.stop();
}
