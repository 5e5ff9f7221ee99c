// `node bench/cpu.js [checkout ...]` (each checkout built with `npm run build`; default: this
// one): the bridge's CPU per request at a fixed request rate, for comparing two builds.
//
// `npm run bench` loads the bridge to saturation and compares it with bare Koa; on a shared
// 2-core machine its req/s moves by ±20 % from one minute to the next, which hides a change
// worth 10 %. Here every checkout's bridge runs at the same time on one private Redis, each is
// sent the same requests at the same fixed rate (well below saturation, so neither competes
// for the CPU with itself), in alternating rounds, and the figure is process CPU
// (/proc/<pid>/stat, all threads) ÷ requests answered. Compare checkouts within one run only.
//
// Knobs (environment): BENCH_RATE requests per second (by scenario: known and new 800, finished
// 400, lookup 1600; the lower the rate, the more each request pays for waking the process up
// alone: a lookup costs ~0.8 ms at 600 req/s and ~0.4 ms at saturation), BENCH_DURATION seconds per round
// (8), BENCH_ROUNDS (3; the first also warms up, the median is reported), BENCH_ONLY (comma list
// of known, new, finished, lookup).

import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import { admin, inParallel, JIVO_TOKEN, LIVETEX_TOKEN, postJson, startBridge } from './lib/bridge.js';
import { jivoChatAccepted, jivoChatFinished, livetexDialogClosed, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const env = process.env;
const checkouts = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
/** Requests per second: about half what the bridge answers at saturation here, per scenario. */
const rateOf = (id) => Number(env.BENCH_RATE ?? { known: 800, new: 800, finished: 400, lookup: 1600 }[id]);
const duration = Number(env.BENCH_DURATION ?? 8);
const rounds = Math.max(1, Number(env.BENCH_ROUNDS ?? 3));
const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',').map((id) => id.trim())) : null;
const KNOWN = 1000;

function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks of 10 ms
}

const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cpu-'));
const bridges = [];
try {
  for (const [index, root] of checkouts.entries()) {
    const runDir = join(dir, String(index));
    mkdirSync(runDir);
    const bridge = await startBridge({
      root,
      dir: runDir,
      redisUrl: redis.url,
      keyPrefix: `cpu${index}x${randomUUID().slice(0, 6)}`,
      logLevel: 'warn',
    });
    process.stderr.write(`${root}: bridge pid ${bridge.pid}, seeding ${KNOWN} contacts\n`);
    await inParallel(KNOWN, 16, (person) =>
      postJson(
        `${bridge.url}/webhooks/livetex/app/${LIVETEX_TOKEN}`,
        livetexDialogClosed({ ...personOf('known', person), dialog: 500_000 + person }),
      ),
    );
    bridges.push({ root, bridge, sent: 0, lookup: null });
  }

  const jivo = { method: 'POST', path: `/webhooks/jivochat/site/${JIVO_TOKEN}`, type: 'application/json' };
  const scenarios = {
    known: {
      ...jivo,
      body: (n) => jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 20_000_000 + n }),
    },
    new: {
      ...jivo,
      body: (n, side) => jivoChatAccepted({ ...personOf('new', side * 10_000_000 + n), chat: n }),
    },
    finished: {
      ...jivo,
      body: (n) => jivoChatFinished({ ...personOf('known', n % KNOWN), chat: 30_000_000 + n, messages: 50 }),
    },
    lookup: { method: 'POST', path: '/livetex/app/attributes', type: 'application/jose', body: null },
  };
  const wanted = Object.keys(scenarios).filter((id) => only === null || only.has(id));

  /** Lookup tokens for one round, sealed just before it (a token lives at most 300 s; the caller's cost). */
  async function sealLookups(entry) {
    const { buildClaims, sealRequest, decodeKey } = await import(
      join(entry.root, 'dist/adapters/livetex/codec.js')
    );
    entry.keys ??= await admin(entry.bridge.url, 'POST', '/api/v1/channels/app/keys');
    const keyBytes = decodeKey(entry.keys.key);
    const needed = Math.ceil(rateOf('lookup') * duration * 1.2) + 100;
    const tokens = new Array(needed);
    await inParallel(needed, 64, async (n) => {
      const claims = buildClaims({
        subject: { personId: personOf('known', n % KNOWN).person },
        requestId: `cpu-${n}`,
        jti: randomUUID(),
        iat: Date.now() / 1000,
        ttlSeconds: 300,
      });
      tokens[n] = await sealRequest(claims, entry.keys.kid, keyBytes);
    });
    entry.lookup = tokens;
    entry.lookupNext = 0;
  }

  const results = new Map();
  for (let round = 0; round < rounds; round++) {
    for (const id of wanted) {
      const scenario = scenarios[id];
      for (const [side, entry] of bridges.entries()) {
        if (id === 'lookup') await sealLookups(entry);
        const next = () => {
          if (id === 'lookup') return entry.lookup[entry.lookupNext++];
          return JSON.stringify(scenario.body(entry.sent++, side));
        };
        const before = cpuMs(entry.bridge.pid);
        const run = await autocannon({
          url: entry.bridge.url,
          connections: 20,
          overallRate: rateOf(id),
          duration,
          requests: [
            {
              method: scenario.method,
              path: scenario.path,
              headers: { 'content-type': scenario.type, accept: scenario.type },
              setupRequest: (request) => ({ ...request, body: next() }),
            },
          ],
        });
        const answered = run.requests.total - run.non2xx;
        if (run.non2xx > 0 || run.errors > 0)
          throw new Error(
            `${id} on ${entry.root}: ${run.non2xx} answers not 2xx (${JSON.stringify(run.statusCodeStats)}), ${run.errors} errors`,
          );
        const perRequest = (cpuMs(entry.bridge.pid) - before) / Math.max(1, answered);
        const key = `${id}\u0000${side}`;
        if (!results.has(key)) results.set(key, []);
        results.get(key).push(perRequest);
        process.stderr.write(
          `round ${round + 1} ${id.padEnd(8)} ${entry.root}: ${answered} answered, ${perRequest.toFixed(3)} ms CPU/request, p99 ${run.latency.p99} ms\n`,
        );
      }
    }
  }

  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  process.stdout.write(
    `\nbridge CPU per request (ms; median of ${rounds} rounds, each round's value in brackets)\n`,
  );
  for (const id of wanted) {
    const first = median(results.get(`${id}\u00000`));
    for (const [side, entry] of bridges.entries()) {
      const values = results.get(`${id}\u0000${side}`);
      const value = median(values);
      const versus = side === 0 ? '' : `  ${((value / first) * 100).toFixed(0)} % of the first`;
      process.stdout.write(
        `${id.padEnd(9)} at ${String(rateOf(id)).padStart(4)} req/s ${value.toFixed(3)} [${values.map((v) => v.toFixed(3)).join(' ')}]${versus}  ${entry.root}\n`,
      );
    }
  }
} finally {
  for (const { bridge } of bridges) await bridge.stop();
  await redis.stop();
}
