// `npm run build && node bench/instructions.js [checkout]`: machine instructions per request
// (valgrind's callgrind, all threads of the process) of bare Koa (bench/bare.js), the floor
// (bench/floor.js) and the bridge, for a known-contact JivoChat chat_accepted. An instruction
// count does not depend on what else the machine is doing, so on a shared machine it compares
// where CPU times cannot; what it leaves out is the cost of each instruction (cache misses,
// system calls' time in the kernel, which callgrind does not see), so read it next to
// `node bench/syscalls.js`.
//
// Each process runs under callgrind in turn (about 50× slower than native: the JIT, the GC and
// the event loop all run, only slowly), is sent CALLGRIND_WARM requests (the JIT has to tier up
// under valgrind too), then its counters are zeroed (`callgrind_control -z`), CALLGRIND_N
// requests are sent 4 at a time, and they are dumped (`callgrind_control -d`); the dump's total
// of instructions (Ir) over the requests is the figure. With CALLGRIND_KEEP=1 the dumps are kept
// (`callgrind_annotate <file>` lists functions; JIT code shows as addresses). Instructions are counted
// per thread (`--separate-threads=yes`): the main thread's are printed next to all threads'.
//
// Needs valgrind (apt-get install valgrind). Knobs: CALLGRIND_N (1000), CALLGRIND_WARM (3000),
// CALLGRIND_ONLY (comma list of bare, floor, bridge), CALLGRIND_NODE_OPTIONS (below),
// CALLGRIND_SCENARIO=finished (chat_finished with a 50-message transcript, of the same known
// people, a new chat each time, instead of chat_accepted), or
// CALLGRIND_SCENARIO=lookup: a LiveTex lookup of a known contact instead (a fresh sealed token,
// jti and all, per request; the floor opens and seals it too, with the same key).
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { admin, JIVO_TOKEN, seedKnown, startBridge, writeBridgeConfig } from './lib/bridge.js';
import { jivoChatAccepted, jivoChatFinished, personOf } from './lib/payloads.js';
import { waitReady } from './lib/procs.js';
import { benchRedis, freePort } from './lib/redis.js';

const env = process.env;
const root = resolve(process.argv[2] ?? '.');
const here = import.meta.dirname;
const measured = Number(env.CALLGRIND_N ?? 1000);
const warm = Number(env.CALLGRIND_WARM ?? 3000);
const only = env.CALLGRIND_ONLY ? new Set(env.CALLGRIND_ONLY.split(',')) : null;
const KNOWN = 1000;
const PATH = `/webhooks/jivochat/site/${JIVO_TOKEN}`;
const CONCURRENCY = 4;
// e.g. CALLGRIND_NODE_OPTIONS=--perf-basic-prof: /tmp/perf-<pid>.map then names the JIT code's
// addresses that callgrind_annotate prints (each process's pid is in its dump's name).
const nodeOptions = (env.CALLGRIND_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
const lookup = env.CALLGRIND_SCENARIO === 'lookup';
const FINISHED = env.CALLGRIND_SCENARIO === 'finished';
/** The webhook sent: chat_accepted, or chat_finished (50 messages) with CALLGRIND_SCENARIO=finished. */
const eventOf = FINISHED ? jivoChatFinished : jivoChatAccepted;
const LOOKUP_PATH = '/livetex/app/attributes';
const JOSE = 'application/jose';
/** Every lookup answer has one size (adapters/livetex/codec.ts): what bare Koa answers without a bridge run. */
async function paddedAnswer() {
  const { bridgeJweCodec, decodeKey } = await import(join(root, 'dist/adapters/livetex/codec.js'));
  const sealed = await bridgeJweCodec.sealAnswer(
    { requestId: 'r', found: false },
    lookupKey.kid,
    decodeKey(lookupKey.key),
  );
  return Buffer.from(sealed.body).toString('latin1');
}
/** Lookup: the channel key (made by a bridge run natively on the same store) and its sealer. */
let lookupKey = null;
let sealToken = null;
/**
 * A fresh token per request, sealed when it is sent: under valgrind a run takes minutes, longer
 * than a token may live (5 minutes), and the bridge takes each jti once.
 */
async function tokenFor(n) {
  if (!sealToken) {
    const { buildClaims, sealRequest, decodeKey } = await import(
      join(root, 'dist/adapters/livetex/codec.js')
    );
    const keyBytes = decodeKey(lookupKey.key);
    sealToken = (m) =>
      sealRequest(
        buildClaims({
          subject: { personId: personOf('known', m % KNOWN).person },
          requestId: `cg-${m}`,
          jti: randomUUID(),
          iat: Date.now() / 1000,
          ttlSeconds: 300,
        }),
        lookupKey.kid,
        keyBytes,
      );
  }
  return sealToken(n);
}

if (spawnSync('valgrind', ['--version'], { stdio: 'ignore' }).status !== 0)
  throw new Error('bench/instructions.js needs valgrind on PATH (apt-get install valgrind)');

const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-callgrind-'));
let sent = 0;

/**
 * `count` known-contact webhooks, `CONCURRENCY` at a time; unless `tolerant` (the warm-up, where a
 * process slowed 50× by valgrind may time out on Redis now and then), throws unless all are 200.
 */
async function send(url, count, tolerant = false) {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        next++;
        const n = sent++;
        const response = lookup
          ? await fetch(url + LOOKUP_PATH, {
              method: 'POST',
              headers: { 'content-type': JOSE },
              body: await tokenFor(n),
            })
          : await fetch(url + PATH, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify(eventOf({ ...personOf('known', n % KNOWN), chat: 30_000_000 + n })),
            });
        const text = await response.text();
        if (response.status !== 200 && !tolerant) throw new Error(`${url}: ${response.status} ${text}`);
      }
    }),
  );
}

const control = (pid, ...args) => {
  const result = spawnSync('callgrind_control', [...args, String(pid)], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`callgrind_control ${args.join(' ')}: ${result.stderr}`);
};

/**
 * One process under callgrind: warm it up, count `measured` requests; returns instructions per
 * request of all threads and of the main (JavaScript) thread. The other threads are V8's: its
 * compiler, which under valgrind is still tiering code up long after the warm-up, and the GC's
 * helpers; so the main thread's figure is the steadier one.
 */
async function count(name, args, readyPath, prepare) {
  const port = await freePort();
  const out = join(dir, `${name}.%p.out`);
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      '--separate-threads=yes',
      `--callgrind-out-file=${out}`,
      process.execPath,
      ...nodeOptions,
      ...args(port),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, CHATBRIDGE_CONFIG: '', PORT: '', REDIS_URL: '' } },
  );
  let log = '';
  child.stderr.on('data', (chunk) => {
    log += chunk;
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(url + readyPath, 600_000, child, `${name} under callgrind`);
    await prepare?.(url);
    const started = performance.now();
    await send(url, warm, true);
    process.stderr.write(
      `${name}: warmed up (${warm} requests in ${((performance.now() - started) / 1000).toFixed(0)} s)\n`,
    );
    control(child.pid, '-z');
    await send(url, measured);
    control(child.pid, '-d');
  } finally {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  }
  // The dumps made by -d are the files of part 1, one per thread (…out.1-01 is the main thread);
  // the exit's dump is part 2.
  const dumps = readdirSync(dir).filter((file) => file.startsWith(`${name}.${child.pid}.out.1-`));
  if (dumps.length === 0) throw new Error(`${name}: no callgrind dump in ${dir}\n${log.slice(-2000)}`);
  let all = 0;
  let main = 0;
  for (const dump of dumps) {
    const text = readFileSync(join(dir, dump), 'utf8');
    const total = Number(/^(?:summary|totals):\s+(\d+)/m.exec(text)?.[1] ?? 0);
    all += total;
    if (dump.endsWith('-01')) main = total;
  }
  return { all: all / measured, main: main / measured };
}

const results = [];
try {
  let sample = null;
  const replySize = async (url) => {
    if (sample)
      await fetch(`${url}/__bench/reply`, {
        method: 'PUT',
        body: JSON.stringify({ bytes: Buffer.byteLength(sample.text), contentType: sample.contentType }),
      });
  };
  if (!only || only.has('bridge')) {
    // The known contacts are seeded by a bridge run natively on the same store and key prefix
    // (under valgrind, 1,000 seeding webhooks take minutes and time out on Redis).
    const keyPrefix = `cg${randomUUID().slice(0, 6)}`;
    const seeder = await startBridge({ root, dir, redisUrl: redis.url, keyPrefix, logLevel: 'warn' });
    await seedKnown(seeder.url, KNOWN);
    await seeder.stop();
    const perRequest = await count(
      'bridge',
      (port) => {
        const configFile = writeBridgeConfig({
          dir,
          port,
          redisUrl: redis.url,
          keyPrefix,
          logLevel: 'warn',
        });
        return [join(root, 'bin', 'chatbridge.js'), 'start', '--config', configFile];
      },
      '/readyz',
      async (url) => {
        // The key is made by the bridge under callgrind: each config has a master key of its
        // own, and a key record is readable only under the master key that sealed it.
        if (lookup) lookupKey = await admin(url, 'POST', '/api/v1/channels/app/keys');
        const response = lookup
          ? await fetch(url + LOOKUP_PATH, {
              method: 'POST',
              headers: { 'content-type': JOSE },
              body: await tokenFor(0),
            })
          : await fetch(url + PATH, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify(eventOf({ ...personOf('known', 0), chat: 1 })),
            });
        sample = { text: await response.text(), contentType: response.headers.get('content-type') };
      },
    );
    results.push(['bridge', perRequest]);
  }
  if (lookup && !lookupKey) {
    // The floor alone: a key of the right form, made by a bridge started only for it.
    const keyPrefix = `cg${randomUUID().slice(0, 6)}`;
    const keyMaker = await startBridge({ root, dir, redisUrl: redis.url, keyPrefix, logLevel: 'warn' });
    lookupKey = await admin(keyMaker.url, 'POST', '/api/v1/channels/app/keys');
    await keyMaker.stop();
  }
  // The lookup's answer is one padded size (adapters/livetex/codec.ts): bare Koa answers as many bytes.
  if (!sample)
    sample = lookup
      ? { text: await paddedAnswer(), contentType: JOSE }
      : { text: 'x'.repeat(479), contentType: 'application/json; charset=utf-8' };
  const floorPrepare = async (url) => {
    await replySize(url);
    if (lookup)
      await fetch(`${url}/__bench/lookup-key`, {
        method: 'PUT',
        body: JSON.stringify({ kid: lookupKey.kid, key: lookupKey.key }),
      });
  };
  if (!only || only.has('floor'))
    results.push([
      'floor',
      await count(
        'floor',
        (port) => [join(here, 'floor.js'), String(port), redis.url, `cgf${randomUUID().slice(0, 6)}`],
        '/ready',
        floorPrepare,
      ),
    ]);
  if (!only || only.has('bare'))
    results.push([
      'bare',
      await count('bare', (port) => [join(here, 'bare.js'), String(port)], '/ready', replySize),
    ]);
  process.stdout.write(
    `\ninstructions per ${lookup ? 'LiveTex lookup of a known contact' : FINISHED ? 'known-contact chat_finished (50 messages)' : 'known-contact chat_accepted'} (callgrind; ${measured} requests after ${warm}, ${CONCURRENCY} at a time): main thread, all threads\n`,
  );
  for (const [name, { main, all }] of results)
    process.stdout.write(`${name.padEnd(7)} ${(main / 1e6).toFixed(3)} M  ${(all / 1e6).toFixed(3)} M\n`);
} finally {
  await redis.stop();
  if (env.CALLGRIND_KEEP === '1') process.stdout.write(`dumps kept in ${dir}\n`);
  else rmSync(dir, { recursive: true, force: true });
}
