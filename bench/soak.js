// Memory soak (`node bench/soak.js`, or `npm run bench -- --soak`): chatbridge on Redis in its
// own process under a steady mixed load for BENCH_SOAK_SECONDS (300), at BENCH_SOAK_RATE
// requests per second in total (200), well below what it can serve, so that what is measured is
// memory over time rather than saturation. Reports the bridge's RSS after a warm-up, every 30 s,
// and at the end, plus Redis used_memory; writes bench/results/soak-<timestamp>.json.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import {
  ADMIN_TOKEN,
  admin,
  inParallel,
  JIVO_TOKEN,
  LIVETEX_TOKEN,
  postJson,
  startBridge,
} from './lib/bridge.js';
import { jivoChatAccepted, jivoChatFinished, livetexDialogClosed, personOf } from './lib/payloads.js';
import { rssOf } from './lib/procs.js';
import { benchRedis } from './lib/redis.js';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const seconds = Number(process.env.BENCH_SOAK_SECONDS ?? 300);
const rate = Number(process.env.BENCH_SOAK_RATE ?? 200);
const warmupSeconds = 10;
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const resultsDir = join(ROOT, 'bench', 'results');
const runDir = join(resultsDir, `soak-${stamp}`);
mkdirSync(runDir, { recursive: true });
const started = Date.now();
const log = (line) =>
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

const redis = await benchRedis();
const redisClient = new Redis(redis.url);
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redisClient.info('memory'))[1]);
const keyPrefix = `cb${randomBytes(4).toString('hex')}`;
const bridge = await startBridge({
  root: ROOT,
  dir: runDir,
  redisUrl: redis.url,
  keyPrefix,
  logLevel: process.env.BENCH_LOG_LEVEL ?? 'warn',
});
log(`chatbridge pid ${bridge.pid} at ${bridge.url}; ${seconds} s at ${rate} req/s`);

// The mix: new visitors, returning people (seen in LiveTex first), finished chats with a
// transcript, LiveTex lookups (sealed before the run, a fresh jti each) and timeline reads.
const KNOWN = 500;
await inParallel(KNOWN, 16, (index) =>
  postJson(
    `${bridge.url}/webhooks/livetex/app/${LIVETEX_TOKEN}`,
    livetexDialogClosed({ ...personOf('soak', index), dialog: 700_000 + index }),
  ),
);
const { contacts } = await admin(
  bridge.url,
  'GET',
  `/api/v1/contacts?email=${encodeURIComponent(personOf('soak', 0).email)}`,
);
const timelineContact = contacts[0].id;
const { kid, key } = await admin(bridge.url, 'POST', '/api/v1/channels/app/keys');
const { buildClaims, sealRequest, decodeKey } = await import(join(ROOT, 'dist/adapters/livetex/codec.js'));
// Tokens live at most 300 s: seal them in slices of about a minute of lookups (a tenth of the
// mix), the next one while the current one is half used.
const SLICE = Math.max(100, rate * 6);
const tokenSlices = new Map();
async function sealSlice(slice) {
  const size = SLICE;
  const tokens = new Array(size);
  const iat = Date.now() / 1000;
  await inParallel(size, 32, async (offset) => {
    const claims = buildClaims({
      subject: { personId: personOf('soak', (slice * size + offset) % KNOWN).person },
      requestId: `soak-${slice}-${offset}`,
      jti: randomUUID(),
      iat,
      ttlSeconds: 300,
    });
    tokens[offset] = await sealRequest(claims, kid, decodeKey(key));
  });
  tokenSlices.set(slice, tokens);
}
await sealSlice(0);
let lookupCount = 0;
function nextToken() {
  const size = SLICE;
  const slice = Math.floor(lookupCount / size);
  const offset = lookupCount % size;
  lookupCount++;
  if (offset === Math.floor(size / 2) && !tokenSlices.has(slice + 1)) void sealSlice(slice + 1);
  tokenSlices.delete(slice - 1);
  return tokenSlices.get(slice)?.[offset];
}

let n = 0;
const json = { 'content-type': 'application/json' };
function nextRequest(request) {
  const index = n++;
  const kind = index % 10;
  if (kind < 4) {
    return {
      ...request,
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: json,
      body: JSON.stringify(jivoChatAccepted({ ...personOf('new', index), chat: 50_000_000 + index })),
    };
  }
  if (kind < 7) {
    return {
      ...request,
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: json,
      body: JSON.stringify(
        jivoChatAccepted({ ...personOf('soak', index % KNOWN), chat: 60_000_000 + index }),
      ),
    };
  }
  if (kind === 7) {
    return {
      ...request,
      method: 'POST',
      path: `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      headers: json,
      body: JSON.stringify(
        jivoChatFinished({ ...personOf('soak', index % KNOWN), chat: 70_000_000 + index, messages: 50 }),
      ),
    };
  }
  if (kind === 8) {
    const token = nextToken();
    if (token) {
      return {
        ...request,
        method: 'POST',
        path: '/livetex/app/attributes',
        headers: { 'content-type': 'application/jose' },
        body: token,
      };
    }
  }
  return {
    ...request,
    method: 'GET',
    path: `/api/v1/contacts/${timelineContact}/timeline?limit=50`,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: undefined,
  };
}

const samples = [];
async function sample(label) {
  const entry = {
    label,
    atSeconds: Math.round((Date.now() - started) / 1000),
    rssBytes: await rssOf(bridge.pid),
    redisUsedMemory: await usedMemory(),
  };
  samples.push(entry);
  log(`${label}: bridge RSS ${mib(entry.rssBytes)}, Redis used_memory ${mib(entry.redisUsedMemory)}`);
  return entry;
}

await sample('before load');
const run = autocannon({
  url: bridge.url,
  connections: 10,
  overallRate: rate,
  duration: seconds + warmupSeconds,
  timeout: 10,
  requests: [{ method: 'GET', path: '/healthz', setupRequest: nextRequest }],
});
await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
const start = await sample('start (after warm-up)');
const timer = setInterval(() => void sample('during'), 30_000);
const result = await run;
clearInterval(timer);
const end = await sample('end');
await bridge.stop();
redisClient.disconnect();
await redis.stop();

const report = {
  startedAt: new Date(started).toISOString(),
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    node: process.version,
    loadavgAtEnd: loadavg(),
  },
  seconds,
  rate,
  mix: '40 % chat_accepted new, 30 % chat_accepted known, 10 % chat_finished (50 messages), 10 % LiveTex lookup, 10 % timeline page',
  requests: result.requests.total,
  non2xx: result.non2xx,
  errors: result.errors,
  latency: { p50: result.latency.p50, p99: result.latency.p99 },
  rss: { start: start.rssBytes, end: end.rssBytes, growth: end.rssBytes - start.rssBytes },
  samples,
};
const file = join(resultsDir, `soak-${stamp}.json`);
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(
  `\nsoak: ${seconds} s at ${rate} req/s (${report.mix})\n` +
    `${report.requests} requests, ${report.non2xx} non-2xx, ${report.errors} errors, p50 ${report.latency.p50} ms, p99 ${report.latency.p99} ms\n` +
    `bridge RSS: start ${mib(start.rssBytes)}, end ${mib(end.rssBytes)} (${end.rssBytes >= start.rssBytes ? '+' : ''}${mib(end.rssBytes - start.rssBytes)})\n` +
    `written: ${file}\n`,
);
