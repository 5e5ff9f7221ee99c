// `node bench/deferred-drain.js <checkout> [<checkout> ...]` (each built): how fast a `--role
// worker` bridge drains a backlog of the deferred intake (`intake.ackAfterAppend`) and what each
// event costs it — the worker half alone, the half behind the deferred path's sustained rate
// (bench/HISTORY.md, twenty-seventh round). Each checkout's worker is started once, on its own key
// prefix of one private Redis, and left idle (one LLEN a second). Per round the tool pushes
// BENCH_EVENTS chat_finished items (50 messages, ~7.3 KB, written as a `web` instance's `append`
// writes them: `{"v":2,"id":…}`, a newline, the body) into every checkout's list, then waits until
// every worker has emptied its own; they drain at the same time, as bench/cpu.js loads its
// bridges, so all share whatever the machine does in those seconds. Reported per checkout: events
// drained per second (from its first item gone to its list empty), the worker's CPU per event
// (all threads, /proc schedstat) and write-like system calls per event (/proc/<pid>/io), and for
// a second checkout the median of the rounds' paired ratios to the first; Redis's CPU per event
// (INFO used_cpu_*) is of all workers together. Round 1 creates the contacts and warms the
// processes up (not counted); the people repeat every 1,000 events, as in bench/cpu.js.
// Knobs: BENCH_EVENTS (2000), BENCH_ROUNDS (4, the first not counted), BENCH_DRAIN_ROLE (worker;
// `all` drains in a process that also serves HTTP, idle here).
// `<checkout>#--cpu-prof --cpu-prof-dir=DIR`: that worker's node options (one profile of all rounds).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { startBridge } from './lib/bridge.js';
import { jivoChatFinished, personOf } from './lib/payloads.js';
import { cpuNs } from './lib/procs.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const checkouts = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((arg, index) => {
  const [path, options] = arg.split('#');
  return {
    label: arg,
    root: resolve(path),
    nodeOptions: options ? options.split(' ').filter(Boolean) : [],
    prefix: `dd${index}${randomBytes(3).toString('hex')}`,
    rates: [],
    cpu: [],
  };
});
const events = Number(env.BENCH_EVENTS ?? 2000);
const rounds = Math.max(2, Number(env.BENCH_ROUNDS ?? 4));
// `all`: the drain of a process that also answers vendors (idle here), as bench/run.js's
// jivo_finished_deferred drains its backlog after the run.
const role = env.BENCH_DRAIN_ROLE ?? 'worker';
const redis = await benchRedis();
const client = new Redis(redis.url);
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-ddrain-'));
const tag = randomBytes(12).toString('base64url');
let count = 0;
const redisPerEvent = [];

/** Write-like system calls of a process so far (/proc/<pid>/io: write, writev, send*). */
const writes = (pid) => Number(/syscw: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
const redisCpuMs = async () => {
  const info = await client.info('cpu');
  const read = (name) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0);
  return (read('used_cpu_user') + read('used_cpu_sys')) * 1000;
};
const items = (round) =>
  Array.from({ length: events }, (_, n) => {
    const header = {
      v: 2,
      id: `${tag}.${++count}`,
      channelId: 'site',
      vendor: 'jivochat',
      event: 'chat_finished',
      contentType: 'application/json',
      receivedAt: Date.now(),
    };
    const body = JSON.stringify(
      jivoChatFinished({
        ...personOf('deferred', n % 1000),
        chat: 60_000_000 + round * events + n,
        messages: 50,
      }),
    );
    return Buffer.from(`${JSON.stringify(header)}\n${body}`, 'utf8');
  });

/**
 * One round: every checkout's list filled (in this round's order), then all drained at once, so
 * that each worker has the machine (and Redis) as it is in those seconds, as bench/cpu.js does.
 */
async function round(order, number) {
  const batch = items(number);
  const before = new Map();
  const redisBefore = await redisCpuMs();
  for (const checkout of order)
    before.set(checkout, { cpu: cpuNs(checkout.worker.pid).all, writes: writes(checkout.worker.pid) });
  // Pushed first, all of them, before the workers' once-a-second poll finds any (usually: a poll
  // that lands in the middle starts that worker a little early, which the drain's own clock skips).
  for (const checkout of order)
    for (let at = 0; at < batch.length; at += 100)
      await client.rpush(`${checkout.prefix}:intake:deferred`, ...batch.slice(at, at + 100));
  await Promise.all(
    order.map(async (checkout) => {
      const key = `${checkout.prefix}:intake:deferred`;
      let started;
      for (;;) {
        const left = await client.llen(key);
        if (started === undefined && left < events) started = performance.now();
        if (left === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const seconds = (performance.now() - started) / 1000;
      const worker = checkout.worker.pid;
      const cpu = (cpuNs(worker).all - before.get(checkout).cpu) / 1e6 / events;
      const syscw = (writes(worker) - before.get(checkout).writes) / events;
      const rate = events / seconds;
      process.stdout.write(
        `round ${number} ${checkout.label}: ${rate.toFixed(0)} events/s, worker ${cpu.toFixed(3)} ms/event, ${syscw.toFixed(2)} writes/event\n`,
      );
      if (number > 0) {
        checkout.rates.push(rate);
        checkout.cpu.push(cpu);
      }
    }),
  );
  const redisCpu = ((await redisCpuMs()) - redisBefore) / events / order.length;
  process.stdout.write(`round ${number}: Redis ${redisCpu.toFixed(3)} ms/event (all workers)\n`);
  if (number > 0) redisPerEvent.push(redisCpu);
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
try {
  for (const checkout of checkouts)
    checkout.worker = await startBridge({
      root: checkout.root,
      dir,
      redisUrl: redis.url,
      keyPrefix: checkout.prefix,
      logLevel: 'warn',
      extra: 'intake: { ackAfterAppend: true, maxBacklog: 1000000 }',
      role,
      nodeOptions: checkout.nodeOptions,
    });
  await new Promise((r) => setTimeout(r, 500)); // their start-up's own work settles
  for (let number = 0; number < rounds; number++)
    await round(number % 2 === 0 ? checkouts : [...checkouts].reverse(), number);
  for (const checkout of checkouts)
    process.stdout.write(
      `${checkout.label}: median ${median(checkout.rates).toFixed(0)} events/s, worker ${median(checkout.cpu).toFixed(3)} ms/event` +
        (checkout === checkouts[0]
          ? ''
          : `; paired with the first: rate ${(median(checkout.rates.map((rate, index) => rate / checkouts[0].rates[index])) * 100).toFixed(0)} %, CPU ${(median(checkout.cpu.map((cpu, index) => cpu / checkouts[0].cpu[index])) * 100).toFixed(0)} %`) +
        '\n',
    );
  process.stdout.write(`Redis: median ${median(redisPerEvent).toFixed(3)} ms/event\n`);
} finally {
  for (const checkout of checkouts) await checkout.worker?.stop();
  client.disconnect();
  await redis.stop();
}
process.exit(0);
