// `npm run build && node bench/cluster.js`: what one Redis primary carries for this bridge
// (DESIGN §12, README "Running highly available"). Starts, on free loopback ports in private
// directories, a standalone redis-server and a 3-primary Redis Cluster (redis-cli --cluster
// create), then drives the real binary with autocannon (JivoChat chat_accepted, a new visitor per
// request) in three set-ups, side by side:
//   standalone   one bridge on the standalone Redis
//   cluster-1    one bridge on the Cluster: its keyPrefix is a hash tag, so it lives on one primary
//   cluster-2    two bridges on the Cluster whose prefixes hash to different primaries
// For every primary it reads INFO before and after the measured window: commands processed and
// CPU seconds used (user + sys). Per webhook that gives Redis commands and primary CPU time, and
// 1 s / (CPU per webhook) is the webhook rate at which one primary's core is saturated.
// Every figure is measured in this run. Knobs: BENCH_DURATION (10), BENCH_WARMUP (3),
// BENCH_CONNECTIONS (50). Results: bench/results/cluster-<timestamp>.json.

import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { JIVO_TOKEN, startBridge } from './lib/bridge.js';
import { measure } from './lib/load.js';
import { jivoChatAccepted, personOf } from './lib/payloads.js';
import { freePort, pingRaw } from './lib/redis.js';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const env = process.env;
const duration = Number(env.BENCH_DURATION ?? 10);
const warmup = Number(env.BENCH_WARMUP ?? 3);
const connections = Number(env.BENCH_CONNECTIONS ?? 50);
const started = Date.now();
const log = (line) =>
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

async function redisServer(args) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-bench-redis-'));
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      ...args,
    ],
    { stdio: 'ignore' },
  );
  children.add(child);
  const deadline = Date.now() + 5000;
  while (!(await pingRaw('127.0.0.1', port, 200))) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`redis-server did not start on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    port,
    dir,
    stop() {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function stats(port) {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
  await client.connect();
  const info = await client.info();
  client.disconnect();
  const field = (name) => Number(new RegExp(`^${name}:(\\S+)`, 'm').exec(info)?.[1] ?? 0);
  return { commands: field('total_commands_processed'), cpu: field('used_cpu_user') + field('used_cpu_sys') };
}

async function clusterOwner(port, key) {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
  await client.connect();
  const slot = Number(await client.call('CLUSTER', 'KEYSLOT', key));
  const shards = await client.call('CLUSTER', 'SLOTS');
  client.disconnect();
  return shards.find(([from, to]) => slot >= from && slot <= to)[2][1];
}

let visitor = 0;
/** autocannon against the bridges (connections split between them), INFO around the measured window. */
async function run(id, urls, primaries) {
  const path = `/webhooks/jivochat/site/${JIVO_TOKEN}`;
  const load = (duration_) =>
    Promise.all(
      urls.map((url) =>
        measure({
          url,
          method: 'POST',
          path,
          headers: { 'content-type': 'application/json' },
          next: () => {
            const index = visitor++;
            return {
              body: JSON.stringify(
                jivoChatAccepted({ ...personOf(`bench-${id}`, index), chat: 40_000_000 + index }),
              ),
            };
          },
          connections: Math.max(1, Math.round(connections / urls.length)),
          duration: duration_,
          warmup: 0,
        }),
      ),
    );
  if (warmup > 0) await load(warmup);
  const before = await Promise.all(primaries.map(stats));
  const results = await load(duration);
  const after = await Promise.all(primaries.map(stats));
  const okOf = (result) => result.requests - result.non2xx;
  const ok = results.reduce((sum, result) => sum + okOf(result), 0);
  const perPrimary = primaries.map((port, index) => ({
    port,
    commands: after[index].commands - before[index].commands,
    cpuSeconds: +(after[index].cpu - before[index].cpu).toFixed(3),
  }));
  const busiest = perPrimary.reduce((a, b) => (b.cpuSeconds > a.cpuSeconds ? b : a));
  // The webhooks the busiest primary served: with one bridge per primary (cluster-2) its own
  // bridge's; otherwise all of them (one bridge's keys share one hash slot, so one primary).
  const servedByBusiest =
    urls.length === primaries.length ? okOf(results[primaries.indexOf(busiest.port)]) : ok;
  const summary = {
    id,
    webhooksPerSecond: Math.round(ok / duration),
    okWebhooks: ok,
    non2xx: results.reduce((sum, result) => sum + result.non2xx, 0),
    errors: results.reduce((sum, result) => sum + result.errors + result.timeouts, 0),
    p50ms: Math.max(...results.map((result) => result.p50)),
    p99ms: Math.max(...results.map((result) => result.p99)),
    primaries: perPrimary,
    busiestPrimary: {
      port: busiest.port,
      commandsPerWebhook: +(busiest.commands / servedByBusiest).toFixed(1),
      cpuMicrosecondsPerWebhook: Math.round((busiest.cpuSeconds / servedByBusiest) * 1e6),
      cpuShareOfOneCore: +(busiest.cpuSeconds / duration).toFixed(3),
      saturatesAtWebhooksPerSecond: Math.round(servedByBusiest / busiest.cpuSeconds),
    },
  };
  log(
    `${id}: ${summary.webhooksPerSecond} webhooks/s (p50 ${summary.p50ms} ms, p99 ${summary.p99ms} ms, non-2xx ${summary.non2xx}); ` +
      `busiest primary: ${summary.busiestPrimary.commandsPerWebhook} commands and ${summary.busiestPrimary.cpuMicrosecondsPerWebhook} µs CPU per webhook, ` +
      `${Math.round(summary.busiestPrimary.cpuShareOfOneCore * 100)}% of a core -> saturates near ${summary.busiestPrimary.saturatesAtWebhooksPerSecond} webhooks/s`,
  );
  return summary;
}

const dir = mkdtempSync(join(tmpdir(), 'chatbridge-bench-cluster-'));
const bridges = [];
const servers = [];
try {
  log(
    `cpus ${cpus().length}, load ${loadavg()
      .map((n) => n.toFixed(1))
      .join(' ')}; ${connections} connections, ${duration} s (+${warmup} s warm-up)`,
  );
  const standalone = await redisServer([]);
  servers.push(standalone);
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const node = await redisServer([
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-node-timeout',
      '5000',
    ]);
    servers.push(node);
    nodes.push(node);
  }
  const nodeList = nodes.map((node) => `127.0.0.1:${node.port}`);
  await promisify(execFile)('redis-cli', [
    '--cluster',
    'create',
    ...nodeList,
    '--cluster-replicas',
    '0',
    '--cluster-yes',
  ]);
  for (;;) {
    const client = new Redis({ host: '127.0.0.1', port: nodes[0].port });
    const ok = String(await client.call('CLUSTER', 'INFO')).includes('cluster_state:ok');
    client.disconnect();
    if (ok) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  log(`cluster up: ${nodeList.join(', ')}`);

  // Two prefixes whose hash tags land on different primaries.
  const prefixes = [];
  const owners = [];
  for (let i = 0; prefixes.length < 2; i++) {
    const prefix = `bench-${i}`;
    const owner = await clusterOwner(nodes[0].port, `{${prefix}}`);
    if (!owners.includes(owner)) {
      prefixes.push(prefix);
      owners.push(owner);
    }
  }
  const clusterStore = (prefix) =>
    `{ cluster: { nodes: ${JSON.stringify(nodeList)} }, keyPrefix: "${prefix}" }`;
  const common = { root: ROOT, dir, logLevel: 'warn' };

  const results = [];
  const a = await startBridge({
    ...common,
    redisUrl: `redis://127.0.0.1:${standalone.port}`,
    keyPrefix: 'bench',
  });
  bridges.push(a);
  results.push(await run('standalone', [a.url], [standalone.port]));
  await a.stop?.();

  const b = await startBridge({ ...common, store: clusterStore(prefixes[0]) });
  bridges.push(b);
  results.push(
    await run(
      'cluster-1',
      [b.url],
      nodes.map((node) => node.port),
    ),
  );

  const c = await startBridge({ ...common, store: clusterStore(prefixes[1]) });
  bridges.push(c);
  // Order the primaries like the bridges, so each bridge's share is read off its own primary.
  results.push(await run('cluster-2', [b.url, c.url], owners));

  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const file = join(ROOT, 'bench', 'results', `cluster-${stamp}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        cpus: cpus().length,
        loadavg: loadavg(),
        connections,
        duration,
        results,
      },
      null,
      2,
    ),
  );
  console.log(JSON.stringify(results, null, 2));
  log(`written ${file}`);
} finally {
  for (const bridge of bridges) await bridge.stop?.().catch(() => {});
  for (const server of servers) server.stop();
  rmSync(dir, { recursive: true, force: true });
}
