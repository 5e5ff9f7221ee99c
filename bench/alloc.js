// `npm run build && node bench/alloc.js`: how many bytes the bridge allocates per JivoChat
// chat_accepted of a known contact, and where. The bridge runs in this process, built as
// `chatbridge start` builds it (V8 tuning included); a child process sends the webhooks over
// loopback (20 connections, 500 people, a new chat each time). After a warm-up, V8's sampling
// heap profiler runs through `node:inspector` with objects already collected by minor and major
// GCs counted, so the figure is everything allocated, not what happened to be alive at the end.
// Prints bytes per request in all, by file and by function (self). Sampling: every 512 bytes on
// average, so each line is an estimate; the total moves by a few per cent between runs.
// Knobs: ALLOC_N (webhooks measured, 4000), REDIS_URL (else a private redis-server),
// ALLOC_ENGINE=off (the engine-free bridge of bench/lib/engine-free.js), ALLOC_OUT=<file> (also
// writes the profile, which Chrome DevTools' Memory panel opens as a .heapprofile),
// ALLOC_SCENARIO=lookup (LiveTex attribute lookups of those known people instead, each with a
// fresh jti, sealed by the client before it sends), ALLOC_RATE=<requests per second> (webhooks
// paced, as bench/cpu.js sends them, instead of as fast as the bridge answers; the warm-up too),
// ALLOC_SURVIVORS=1 (count only what no young-generation collection freed: what was promoted to
// the old generation, which only major GCs — concurrent marking, sweeping, compaction — free),
// ALLOC_SCENARIO=finished (JivoChat chat_finished with a 50-message transcript, a new chat each
// time, instead of chat_accepted; the warm-up's people are made known by the same event),
// ALLOC_SCENARIO=new (JivoChat chat_accepted of a visitor never seen, each time),
// ALLOC_ROOT=<checkout> (another built checkout's bridge; default: this one).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = process.env.ALLOC_ROOT ?? dirname(dirname(fileURLToPath(import.meta.url)));
const PEOPLE = 500;
const CONNECTIONS = 20;

if (process.argv[2] === '--lookups') {
  // `node bench/alloc.js --lookups <port> <kid> <key> <count>`: LiveTex lookups of the known people.
  const [port, kid, key, count] = process.argv.slice(3);
  const { randomUUID } = await import('node:crypto');
  const { Pool } = await import('undici');
  const { personOf } = await import('./lib/payloads.js');
  const { buildClaims, decodeKey, sealRequest } = await import(`${ROOT}/dist/adapters/livetex/codec.js`);
  const keyBytes = decodeKey(key);
  const tokens = [];
  for (let index = 0; index < Number(count); index++) {
    const claims = buildClaims({
      subject: { personId: personOf('alloc', index % PEOPLE).person },
      requestId: `alloc-${index}`,
      jti: randomUUID(),
      iat: Date.now() / 1000,
      ttlSeconds: 300,
    });
    tokens.push(await sealRequest(claims, kid, keyBytes));
  }
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS });
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (next < tokens.length) {
        const response = await pool.request({
          method: 'POST',
          path: '/livetex/app/attributes',
          headers: { 'content-type': 'application/jose' },
          body: tokens[next++],
        });
        await response.body.text();
        if (response.statusCode !== 200) failed++;
      }
    }),
  );
  await pool.close();
  if (failed > 0) {
    process.stderr.write(`${failed} lookups were not answered 200\n`);
    process.exit(1);
  }
  process.exit(0);
}

if (process.argv[2] === '--client') {
  // The load: `node bench/alloc.js --client <port> <token> <count> [<pool> <people> <first>]` (also
  // used by bench/heap.js: a pool of as many people as webhooks is a new visitor each time; the
  // pool's people from index `first`, 0 unless given).
  const [port, token, count, poolName = 'alloc', peopleArg = String(PEOPLE), firstArg = '0'] =
    process.argv.slice(3);
  const peopleCount = Number(peopleArg);
  const first = Number(firstArg);
  const { Pool } = await import('undici');
  const { jivoChatAccepted, jivoChatFinished, personOf } = await import('./lib/payloads.js');
  const event = process.env.ALLOC_SCENARIO === 'finished' ? jivoChatFinished : jivoChatAccepted;
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS });
  const people = Array.from({ length: peopleCount }, (_, index) => personOf(poolName, first + index));
  const firstChat = Date.now();
  // ALLOC_RATE: requests per second in all (else as fast as the bridge answers), request n sent
  // no earlier than n / rate seconds after the first.
  const rate = Number(process.env.ALLOC_RATE ?? 0);
  const started = performance.now();
  let next = 0;
  let failed = 0;
  async function connection() {
    while (next < Number(count)) {
      const index = next++;
      const due = rate > 0 ? started + (index * 1000) / rate - performance.now() : 0;
      if (due > 0) await new Promise((resolve) => setTimeout(resolve, due));
      const response = await pool.request({
        method: 'POST',
        path: `/webhooks/jivochat/site/${token}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(event({ ...people[index % peopleCount], chat: firstChat + index })),
      });
      await response.body.text();
      if (response.statusCode !== 200) failed++;
    }
  }
  await Promise.all(Array.from({ length: CONNECTIONS }, connection));
  await pool.close();
  if (failed > 0) {
    process.stderr.write(`${failed} webhooks were not answered 200\n`);
    process.exit(1);
  }
  process.exit(0);
}

const count = Number(process.env.ALLOC_N ?? 4000);
const lookups = process.env.ALLOC_SCENARIO === 'lookup';
const finished = process.env.ALLOC_SCENARIO === 'finished';
const fresh = process.env.ALLOC_SCENARIO === 'new';
const { JIVO_TOKEN, admin } = await import('./lib/bridge.js');
const { startInProcessBridge } = await import('./lib/in-process.js');
const bridge = await startInProcessBridge({
  root: ROOT,
  name: 'alloc',
  engine: process.env.ALLOC_ENGINE === 'off' ? 'off' : 'on',
});
const { port } = bridge;

const run = (args) =>
  new Promise((resolve, reject) =>
    execFile(process.execPath, [fileURLToPath(import.meta.url), ...args], (error, _stdout, stderr) =>
      error ? reject(new Error(`load failed: ${stderr}`)) : resolve(),
    ),
  );
// ALLOC_SCENARIO=new: a visitor never seen each time (pool `new`, as bench/cpu.js's `new`), the
// warm-up's people and the measured ones apart.
let firstNew = 0;
const webhooks = (n) => {
  if (!fresh) return run(['--client', String(port), JIVO_TOKEN, String(n)]);
  firstNew += n;
  return run(['--client', String(port), JIVO_TOKEN, String(n), 'new', String(n), String(firstNew - n)]);
};

await webhooks(PEOPLE); // every person known from here on (ALLOC_SCENARIO=new: more warm-up)
const key = lookups ? await admin(`http://127.0.0.1:${port}`, 'POST', '/api/v1/channels/app/keys') : null;
const send = (n) => (key ? run(['--lookups', String(port), key.kid, key.key, String(n)]) : webhooks(n));
await send(count); // warm-up: the same number of webhooks
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', {
  samplingInterval: 512,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: process.env.ALLOC_SURVIVORS !== '1',
});
await send(count);
const { profile } = await session.post('HeapProfiler.stopSampling');
session.disconnect();
if (process.env.ALLOC_OUT) writeFileSync(process.env.ALLOC_OUT, JSON.stringify(profile));
await bridge.stop();

const byFile = new Map();
const byFunction = new Map();
let total = 0;
const add = (map, key, bytes) => map.set(key, (map.get(key) ?? 0) + bytes);
(function walk(node) {
  const { url, functionName, lineNumber } = node.callFrame;
  // A package by its name, our code by its path under dist/.
  const where = url.includes('/node_modules/')
    ? url.slice(url.lastIndexOf('/node_modules/') + 14)
    : url.replace(`file://${ROOT}/dist/`, '').replace(/^file:\/\//, '');
  total += node.selfSize;
  add(byFile, where || `(native ${functionName})`, node.selfSize);
  add(
    byFunction,
    `${functionName || '(anonymous)'} ${where ? `${where}:${lineNumber + 1}` : '(native)'}`,
    node.selfSize,
  );
  for (const child of node.children) walk(child);
})(profile.head);

const perRequest = (bytes) => `${(bytes / count / 1024).toFixed(1).padStart(6)} KB`;
const top = (map, n) => [...map].sort((a, b) => b[1] - a[1]).slice(0, n);
console.log(
  `chatbridge ${process.env.ALLOC_SURVIVORS === '1' ? 'allocation that survived the young generation' : 'allocation'} per ${lookups ? 'LiveTex lookup of a known contact' : finished ? 'known-contact chat_finished (50 messages)' : fresh ? 'new-contact chat_accepted' : 'known-contact chat_accepted'}${process.env.ALLOC_ENGINE === 'off' ? ' (engine off)' : ''}: ` +
    `${perRequest(total).trim()} (${count} ${lookups ? 'lookups' : 'webhooks'}, ${CONNECTIONS} connections, sampling heap profile with collected objects)`,
);
console.log('\nby file (self)');
for (const [where, bytes] of top(byFile, 20)) console.log(`${perRequest(bytes)}  ${where}`);
console.log('\nby function (self)');
for (const [where, bytes] of top(byFunction, 25)) console.log(`${perRequest(bytes)}  ${where}`);
process.exit(0);
