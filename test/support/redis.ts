import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/**
 * A real Redis for tests, found or started without any setup step:
 * REDIS_URL if set, else a Redis on 127.0.0.1:6379, else a private `redis-server` started on a
 * free port for this test process (killed when the process exits).
 */

const DEFAULT_URL = 'redis://127.0.0.1:6379';
const HOW_TO_GET_REDIS =
  'These tests need a real Redis. Install it (`apt-get install redis-server`, or `brew install redis`) ' +
  'so that `redis-server` is on PATH, run one on 127.0.0.1:6379, or set REDIS_URL=redis://host:port.';

let cached: Promise<string> | undefined;

/** A reachable Redis URL, found once per process. */
export function getTestRedisUrl(): Promise<string> {
  cached ??= findRedis();
  // Let a later call retry if this attempt failed (e.g. Redis was started meanwhile).
  cached.catch(() => {
    cached = undefined;
  });
  return cached;
}

async function findRedis(): Promise<string> {
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (await pingRaw('127.0.0.1', 6379, 300)) return DEFAULT_URL;
  if (!hasRedisServer()) throw new Error(HOW_TO_GET_REDIS);
  const server = await startPrivateRedis();
  return server.url;
}

/** `test:<name>:<random>`: a keyPrefix no other test run uses. */
export function uniquePrefix(name: string): string {
  return `test:${name}:${randomBytes(6).toString('hex')}`;
}

/** Delete every key under `<prefix>:` (for afterAll), using SCAN so a shared Redis is not blocked. */
export async function cleanupPrefix(url: string, prefix: string): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}:*`;
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

/** True when something at host:port answers PING with PONG (no auth, no TLS) within timeoutMs. */
export function pingRaw(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = '';
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
    socket.on('error', () => finish(false));
  });
}

function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Ports handed out by freePort, in any test process on this machine, during the last quarter
 * hour: one empty file per port. A private redis-server started as a replica keeps reconnecting
 * to its primary's port for as long as it lives, even after that primary is gone (a failover
 * test kills it; another worktree's run stops it first); when the kernel then gave the same port
 * to a new primary in another test file or run, that stray replica synced from it and
 * acknowledged its WAITs, and a test that pauses its own replica to see WAIT fail read 200 from
 * /readyz (test/readyz.test.ts failed that way once in a full run on a loaded machine, with other
 * runs going). A port is not handed out again while its mark is fresh.
 */
const PORT_MARKS = join(tmpdir(), 'chatbridge-test-ports');
const PORT_QUARANTINE_MS = 15 * 60_000;
let marksPruned = false;

function pruneOldPortMarks(now: number): void {
  for (const name of readdirSync(PORT_MARKS)) {
    try {
      if (now - statSync(join(PORT_MARKS, name)).mtimeMs > PORT_QUARANTINE_MS)
        unlinkSync(join(PORT_MARKS, name));
    } catch {
      // Another process pruned or took it meanwhile.
    }
  }
}

/** A TCP port nobody listens on right now and no test here used lately (a small race remains: acceptable in tests). */
export async function freePort(): Promise<number> {
  mkdirSync(PORT_MARKS, { recursive: true });
  if (!marksPruned) {
    marksPruned = true;
    pruneOldPortMarks(Date.now());
  }
  for (let attempt = 0; attempt < 100; attempt++) {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    server.close();
    if (address === null || typeof address === 'string') throw new Error('could not find a free port');
    try {
      // `wx`: of several processes offered the same port, one gets it.
      writeFileSync(join(PORT_MARKS, String(address.port)), '', { flag: 'wx' });
      return address.port;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  throw new Error(
    `no free port in 100 tries that was not used by a test in the last ${PORT_QUARANTINE_MS / 60_000} minutes (marks in ${PORT_MARKS})`,
  );
}

export interface PrivateRedis {
  url: string;
  port: number;
  /** Shut the server down (SIGTERM) and wait until it has exited. */
  stop(): Promise<void>;
  /** Start it again on the same port and wait until it answers PING. */
  start(): Promise<void>;
  /** Kill it at once (SIGKILL), synchronously. */
  kill(): void;
  /** Freeze it (SIGSTOP): connections stay open but nothing answers, like a hung server. */
  pause(): void;
  /** Unfreeze it (SIGCONT). */
  resume(): void;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL is, and it never leaves a server behind.
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

export interface PrivateRedisOptions {
  /** A config file to start from (redis-sentinel needs a writable one); given before the flags. */
  configFile?: string;
  /** More `--name value` flags, after the defaults (so they win): replicaof, cluster, persistence. */
  args?: string[];
  /** Run as redis-sentinel (`--sentinel`). */
  sentinel?: boolean;
}

/** Always a new redis-server on a free port, owned by this process (for outage and topology tests). */
export async function startPrivateRedis(options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  if (!hasRedisServer()) throw new Error(HOW_TO_GET_REDIS);
  installExitHook();
  const port = await freePort();
  let child: ChildProcess | undefined;

  const start = async () => {
    if (child !== undefined) return;
    const spawned = spawn(
      'redis-server',
      [
        ...(options.configFile === undefined ? [] : [options.configFile]),
        ...(options.sentinel ? ['--sentinel'] : []),
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--loglevel',
        'warning',
        ...(options.args ?? []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    spawned.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child = spawned;
    running.add(spawned);
    spawned.once('exit', () => {
      running.delete(spawned);
      if (child === spawned) child = undefined;
    });
    const deadline = Date.now() + 5000;
    while (!(await pingRaw('127.0.0.1', port, 200))) {
      if (spawned.exitCode !== null || Date.now() > deadline) {
        spawned.kill('SIGKILL');
        throw new Error(
          `redis-server did not start on port ${port}: ${stderr.trim() || 'no answer to PING'}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  const stop = async () => {
    const current = child;
    if (current === undefined) return;
    if (current.exitCode !== null || current.signalCode !== null) return;
    const exited = once(current, 'exit');
    current.kill('SIGTERM');
    // A paused server would never see the SIGTERM.
    current.kill('SIGCONT');
    // A server that does not go within 10 s (a loaded machine, a shutdown stuck on a client) is
    // killed, so a test's stop() cannot hang the run.
    const force = setTimeout(() => current.kill('SIGKILL'), 10_000);
    try {
      await exited;
    } finally {
      clearTimeout(force);
    }
  };

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    stop,
    kill() {
      child?.kill('SIGKILL');
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
  };
}

export interface ReplicatedRedis {
  primary: PrivateRedis;
  replica: PrivateRedis;
  /** The data directory both servers were started in. */
  dir: string;
  /** Resume the replica if paused, stop both (replica first) and remove the directory. */
  close(): Promise<void>;
}

/**
 * A private primary and one replica of it (`--replicaof`) in a new temporary directory, returned
 * once the primary reports the replica online: for the durability tests (WAIT, a replica that
 * lags while SIGSTOPped). `args` go to both servers; each gets its own `--dbfilename`.
 */
export async function startReplicatedRedis(name: string, args: string[] = []): Promise<ReplicatedRedis> {
  const dir = mkdtempSync(join(tmpdir(), `chatbridge-${name}-`));
  const both = ['--dir', dir, ...args];
  const primary = await startPrivateRedis({ args: [...both, '--dbfilename', 'primary.rdb'] });
  const replica = await startPrivateRedis({
    args: [...both, '--dbfilename', 'replica.rdb', '--replicaof', '127.0.0.1', String(primary.port)],
  });
  const probe = new Redis(primary.url);
  try {
    while (!(await probe.info('replication')).includes('state=online'))
      await new Promise((resolve) => setTimeout(resolve, 50));
  } finally {
    probe.disconnect();
  }
  return {
    primary,
    replica,
    dir,
    async close() {
      replica.resume();
      await replica.stop();
      await primary.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
