// `npm run build && node bench/instances.js`: what a second bridge process adds on this host.
// Two bridges on one Redis (the supported way to scale out; `chatbridge start --workers N` does
// not exist) against one bridge, same machine, same load generator and 50 connections in total,
// in alternating rounds: known-contact chat_accepted, each person sent to both processes in turn
// (as a round-robin balancer would). It answers a planning question — would one process per core
// multiply a host's rate? — and is not a target of its own. Knobs: BENCH_DURATION (10 s per
// side), BENCH_ROUNDS (3), REDIS_URL (else a private redis-server).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JIVO_TOKEN, seedKnown, startBridge } from './lib/bridge.js';
import { measure } from './lib/load.js';
import { jivoChatAccepted, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const duration = Number(process.env.BENCH_DURATION ?? 10);
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const KNOWN = 1000;

const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-instances-'));
const keyPrefix = `inst${process.pid}`;
const start = () => startBridge({ root: ROOT, dir, redisUrl: redis.url, keyPrefix, logLevel: 'warn' });
const first = await start();
const second = await start();
try {
  await seedKnown(first.url, KNOWN);
  let chat = 0;
  const next = () => ({
    body: JSON.stringify(jivoChatAccepted({ ...personOf('known', chat % KNOWN), chat: 80_000_000 + chat++ })),
  });
  const load = (url, connections) =>
    measure({
      url,
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: { 'content-type': 'application/json' },
      next,
      connections,
      duration,
      warmup: 2,
    });
  const ratios = [];
  for (let round = 0; round < rounds; round++) {
    const one = await load(first.url, 50);
    const [a, b] = await Promise.all([load(first.url, 25), load(second.url, 25)]);
    const bad = one.non2xx + a.non2xx + b.non2xx + one.errors + a.errors + b.errors;
    if (bad > 0) throw new Error(`round ${round + 1}: ${bad} answers not 2xx or errors`);
    const two = a.rps + b.rps;
    ratios.push(two / one.rps);
    process.stdout.write(
      `round ${round + 1}: one process ${one.rps.toFixed(0)} req/s (p99 ${one.p99} ms), two processes ${two.toFixed(0)} req/s (p99 ${Math.max(a.p99, b.p99)} ms): ${(two / one.rps).toFixed(2)}×\n`,
    );
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  process.stdout.write(
    `two processes ÷ one: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)}× over ${rounds} rounds\n`,
  );
} finally {
  await first.stop();
  await second.stop();
  await redis.stop();
}
