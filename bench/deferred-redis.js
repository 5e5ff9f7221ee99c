// Redis's own cost of the deferred path (`intake.ackAfterAppend`), per event and per command:
// a private redis-server, one `--role web` and one `--role worker` bridge of the checkout given,
// N chat_finished (50 messages) events posted at a fixed rate, the list drained, then Redis's
// INFO commandstats (calls and microseconds per command) and the slow log (every command logged,
// to split EVALSHA by script and first key) read. Redis's time, not the bridge's: it shows which
// command costs Redis what (the deferred list's trim check was most of it, 2026-12-05), but it is
// wall-clock time, so a busy machine inflates it: compare checkouts one after the other, twice.
// Usage: node bench/deferred-redis.js [checkout=.] (BENCH_EVENTS=3000, BENCH_RATE=150;
// BENCH_DIRECT=1: one bridge without ackAfterAppend, the same events recorded before the answer)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { JIVO_TOKEN, startBridge } from './lib/bridge.js';
import { atFixedRate } from './lib/load.js';
import { jivoChatFinished, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const root = resolve(process.argv[2] ?? '.');
const events = Number(process.env.BENCH_EVENTS ?? 3000);
const rate = Number(process.env.BENCH_RATE ?? 150);
const redis = await benchRedis();
const client = new Redis(redis.url);
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-dredis-'));
const keyPrefix = 'dr';
const role = (name) =>
  startBridge({
    root,
    dir,
    redisUrl: redis.url,
    keyPrefix,
    logLevel: 'warn',
    extra: `intake: { ackAfterAppend: ${process.env.BENCH_DIRECT !== '1'}, maxBacklog: 1000000 }`,
    role: name,
  });
const web = await role('web');
const worker = process.env.BENCH_DIRECT === '1' ? null : await role('worker');
const parse = (text) => {
  const stats = {};
  for (const line of text.split('\n')) {
    const match = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (match) stats[match[1]] = { calls: Number(match[2]), usec: Number(match[3]) };
  }
  return stats;
};
try {
  await client.config('RESETSTAT');
  // Every command in the slow log, to split EVALSHA by script (its SHA and first key).
  await client.config('SET', 'slowlog-log-slower-than', '0');
  await client.config('SET', 'slowlog-max-len', '1000000');
  await client.slowlog('RESET');
  let sent = 0;
  const run = await atFixedRate({
    url: web.url,
    rate,
    method: 'POST',
    path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
    type: 'application/json',
    body: () => {
      const n = sent++;
      return JSON.stringify(
        jivoChatFinished({ ...personOf('deferred', n % 1000), chat: 40_000_000 + n, messages: 50 }),
      );
    },
    amount: events,
  });
  if (run.non2xx > 0) throw new Error(`${run.non2xx} requests not answered 2xx`);
  while ((await client.llen(`${keyPrefix}:intake:deferred`)) > 0)
    await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 500));
  const stats = parse(await client.info('commandstats'));
  const log = await client.slowlog('GET', -1);
  const scripts = new Map();
  for (const [, , micros, args] of log) {
    if (!/^eval/i.test(String(args[0]))) continue;
    const name = `${/^evalsha$/i.test(String(args[0])) ? String(args[1]).slice(0, 8) : 'eval'} ${String(
      args[3] ?? '',
    )
      .replace(/^[^:]*:/, '')
      .replace(/:[^:]*$/, ':…')
      .slice(0, 30)}`;
    const entry = scripts.get(name) ?? { calls: 0, usec: 0 };
    entry.calls++;
    entry.usec += Number(micros);
    scripts.set(name, entry);
  }
  let total = 0;
  const rows = Object.entries(stats).sort((a, b) => b[1].usec - a[1].usec);
  for (const [, s] of rows) total += s.usec;
  process.stdout.write(`${root}: ${events} events, Redis ${(total / events).toFixed(1)} µs per event\n`);
  for (const [name, s] of rows)
    process.stdout.write(
      `  ${name.padEnd(12)} ${(s.calls / events).toFixed(2).padStart(7)} calls/event ${(s.usec / events).toFixed(1).padStart(7)} µs/event ${(s.usec / s.calls).toFixed(1).padStart(7)} µs/call\n`,
    );
  for (const [name, s] of [...scripts].sort((a, b) => b[1].usec - a[1].usec))
    process.stdout.write(
      `  script ${name.padEnd(40)} ${(s.calls / events).toFixed(2).padStart(7)} calls/event ${(s.usec / events).toFixed(1).padStart(7)} µs/event ${(s.usec / s.calls).toFixed(1).padStart(7)} µs/call\n`,
    );
} finally {
  await web.stop();
  await worker?.stop();
  client.disconnect();
  await redis.stop();
}
