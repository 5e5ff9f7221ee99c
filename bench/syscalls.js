// `npm run build && node bench/syscalls.js [checkout]`: what a known-contact JivoChat chat_accepted
// costs the bridge in system calls, context switches and CPU per request, side by side with bare
// Koa (bench/bare.js) and the floor (bench/floor.js, bare Koa + one durable Redis script), all three
// loaded with the same requests at the same fixed rate at the same time, each in its own process.
//
// Per request, per process (medians of the counted rounds; the first round warms up):
//   cpu      ms of CPU, all threads and the JavaScript thread (/proc/<pid>/task/*/schedstat)
//   switches voluntary context switches (a thread blocked: an epoll_wait that waited, a futex)
//            and involuntary ones (preempted), summed over the process's threads
//   syscr/w  read-like and write-like system calls (/proc/<pid>/io: read, recv*, write, writev,
//            send*, …; not epoll or futex)
// With SYSCALLS_STRACE=1 one more round runs with `strace -f -c` attached to each of the three and
// prints every system call per request by name (strace slows the processes several times over:
// its counts are counts, not a CPU figure, and its round is not in the CPU table).
//
// With SYSCALLS_PERF=1 the three run with `--perf-basic-prof` and one more round runs under
// `perf record -e cpu-clock` (a software clock: it samples a thread only while it is on a CPU, so a
// thread preempted by other work on a shared machine is not charged, unlike V8's profiler), written
// to <tmp>/perf.data; read it with `perf report -i <file> --sort pid,dso` or `--sort pid,sym`.
//
// Knobs: BENCH_RATE (400 req/s per process), BENCH_DURATION (8 s), BENCH_ROUNDS (3 counted),
// SYSCALLS_STRACE (0), SYSCALLS_SCENARIO (known | new).
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JIVO_TOKEN, postJson, seedKnown, startBridge } from './lib/bridge.js';
import { loadAtOnce, loads, median, stamp } from './lib/load.js';
import { jivoChatAccepted, personOf } from './lib/payloads.js';
import { cpuNs, exitOnInterrupt, startBaseline } from './lib/procs.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const root = resolve(process.argv[2] ?? '.');
const rate = Number(env.BENCH_RATE ?? 400);
const duration = Number(env.BENCH_DURATION ?? 8);
const rounds = Math.max(1, Number(env.BENCH_ROUNDS ?? 3));
const withStrace = env.SYSCALLS_STRACE === '1';
const scenario = env.SYSCALLS_SCENARIO ?? 'known';
const withPerf = env.SYSCALLS_PERF === '1';
const nodeOptions = withPerf ? ['--perf-basic-prof'] : [];
const KNOWN = 1000;
const PATH = `/webhooks/jivochat/site/${JIVO_TOKEN}`;

/** Counters of a process: its CPU (bench/lib/procs.js), and the rest summed over its threads. */
function counters(pid) {
  const { all, main } = cpuNs(pid);
  let voluntary = 0;
  let involuntary = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let status;
    try {
      status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // a thread that ended meanwhile
    }
    voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const syscr = Number(/syscr:\s+(\d+)/.exec(io)?.[1] ?? 0);
  const syscw = Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? 0);
  // Minor page faults (field 10 of /proc/<pid>/stat): memory the kernel maps in on first touch,
  // e.g. a young generation V8 gave back and takes again.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const faults = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  return { all, main, voluntary, involuntary, syscr, syscw, faults };
}

exitOnInterrupt();
const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-syscalls-'));
const sides = [];
process.stderr.write(`${stamp()} UTC, load average ${loads()}: starting bare, floor and bridge (${root})\n`);
try {
  const bridgeDir = join(dir, 'bridge');
  mkdirSync(bridgeDir);
  const bridge = await startBridge({
    root,
    dir: bridgeDir,
    redisUrl: redis.url,
    keyPrefix: `sys${randomUUID().slice(0, 6)}`,
    logLevel: 'warn',
    engine: 'on',
    nodeOptions,
  });
  await seedKnown(bridge.url, KNOWN);
  const sample = await postJson(bridge.url + PATH, jivoChatAccepted({ ...personOf('known', 0), chat: 1 }));
  const baseline = async (name, script, args) => ({
    name,
    ...(await startBaseline({
      script,
      args,
      name,
      logFile: join(dir, `${name}.log`),
      nodeOptions,
      reply: { bytes: sample.bytes, contentType: sample.contentType },
    })),
  });
  sides.push(await baseline('bare', 'bare.js', []));
  sides.push(await baseline('floor', 'floor.js', [redis.url, `sysf${randomUUID().slice(0, 6)}`]));
  sides.push({ name: 'bridge', ...bridge });

  const bodyOf = (n) =>
    scenario === 'new'
      ? jivoChatAccepted({ ...personOf('new', n), chat: n })
      : jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 20_000_000 + n });
  const results = new Map(sides.map((side) => [side.name, []]));

  /** One round: every side loaded at once; with `strace`, each traced by `strace -f -c`. */
  async function round(index, strace, perf = false) {
    const recorder = perf
      ? spawn(
          'perf',
          [
            'record',
            '-q',
            '-e',
            'cpu-clock',
            '-F',
            '4999',
            '-g',
            '-o',
            join(dir, 'perf.data'),
            '-p',
            sides.map((side) => side.pid).join(','),
          ],
          { stdio: 'ignore' },
        )
      : null;
    if (perf) await new Promise((resolve) => setTimeout(resolve, 1000));
    const tracers = strace
      ? sides.map((side) => {
          const child = spawn('strace', ['-f', '-c', '-q', '-p', String(side.pid)], {
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          let text = '';
          child.stderr.on('data', (chunk) => {
            text += chunk;
          });
          return { child, output: () => text };
        })
      : [];
    if (strace) await new Promise((resolve) => setTimeout(resolve, 1000));
    const startLoad = loads();
    const loaded = await loadAtOnce(sides, {
      read: counters,
      load: (side) => {
        side.sent ??= 0;
        return {
          url: side.url,
          rate,
          method: 'POST',
          path: PATH,
          type: 'application/json',
          body: () => JSON.stringify(bodyOf(side.sent++)),
          ...(index === 0 ? { amount: KNOWN + 200 } : { duration }),
        };
      },
    });
    const measured = loaded.map(({ side, run, answered, before, after }) => {
      if (run.non2xx > 0 || run.errors > 0)
        throw new Error(`${side.name}: ${run.non2xx} answers not 2xx, ${run.errors} errors`);
      const per = {};
      for (const key of Object.keys(after)) per[key] = (after[key] - before[key]) / answered;
      per.all /= 1e6;
      per.main /= 1e6;
      return { side, answered, per };
    });
    process.stderr.write(
      `${stamp()} UTC round ${index}${index === 0 ? ' (warm-up)' : ''}${strace ? ' (strace)' : ''}${perf ? ' (perf)' : ''}, load ${startLoad} → ${loads()}\n`,
    );
    if (recorder) {
      const exited = once(recorder, 'exit');
      recorder.kill('SIGINT');
      await exited;
      process.stdout.write(
        `perf: ${join(dir, 'perf.data')} (pids: ${sides.map((side) => `${side.name} ${side.pid}`).join(', ')})\n`,
      );
    }
    for (const { side, answered, per } of measured) {
      process.stderr.write(
        `  ${side.name.padEnd(7)} ${answered} answered, ${per.all.toFixed(4)} ms CPU/request (JS ${per.main.toFixed(4)}), switches ${per.voluntary.toFixed(2)} + ${per.involuntary.toFixed(2)}, syscr ${per.syscr.toFixed(2)} syscw ${per.syscw.toFixed(2)}, faults ${per.faults.toFixed(2)}\n`,
      );
      if (index > 0 && !strace && !perf) results.get(side.name).push(per);
    }
    if (!strace) return;
    for (const [i, tracer] of tracers.entries()) {
      const exited = once(tracer.child, 'exit');
      tracer.child.kill('SIGINT');
      await exited;
      const { side, answered } = measured[i];
      const calls = [];
      for (const line of tracer.output().split('\n')) {
        // % time  seconds  usecs/call  calls  [errors]  syscall
        const match = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$/.exec(line);
        if (match && match[3] !== 'total') calls.push([match[3], Number(match[1]) / answered]);
      }
      calls.sort((a, b) => b[1] - a[1]);
      const total = calls.reduce((sum, [, n]) => sum + n, 0);
      process.stdout.write(
        `strace ${side.name}: ${total.toFixed(2)} system calls per request: ${calls
          .filter(([, n]) => n >= 0.01)
          .map(([name, n]) => `${name} ${n.toFixed(2)}`)
          .join(', ')}\n`,
      );
    }
  }
  for (let index = 0; index <= rounds; index++) await round(index, false);
  if (withStrace) await round(rounds + 1, true);
  if (withPerf) await round(rounds + 2, false, true);

  process.stdout.write(
    `\n${scenario} chat_accepted at ${rate} req/s per process, ${rounds} counted rounds of ${duration} s (load average ${loads()} at the end); per request, medians:\n` +
      `${'process'.padEnd(8)}${'cpu ms'.padStart(8)}${'JS ms'.padStart(8)}${'vol sw'.padStart(8)}${'invol'.padStart(8)}${'syscr'.padStart(8)}${'syscw'.padStart(8)}${'faults'.padStart(8)}\n`,
  );
  for (const side of sides) {
    const rows = results.get(side.name);
    const m = (key) => median(rows.map((row) => row[key]));
    process.stdout.write(
      `${side.name.padEnd(8)}${m('all').toFixed(4).padStart(8)}${m('main').toFixed(4).padStart(8)}${m('voluntary').toFixed(2).padStart(8)}${m('involuntary').toFixed(2).padStart(8)}${m('syscr').toFixed(2).padStart(8)}${m('syscw').toFixed(2).padStart(8)}${m('faults').toFixed(2).padStart(8)}\n`,
    );
  }
} finally {
  for (const side of sides) await side.stop();
  await redis.stop();
}
