import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './redis.js';

/**
 * The processes under test: chatbridge (the real binary, `node bin/chatbridge.js start`) and the
 * bare Koa baseline, each in its own process so that the load generator does not share their
 * event loop. stdout/stderr go to a log file next to the results.
 */

export async function waitReady(url, timeoutMs, child, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`${what} exited with code ${child.exitCode} before it was ready`);
    const ok = await fetch(url).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} was not ready at ${url} within ${timeoutMs} ms`);
}

export function spawnLogged(args, { logFile, env, nodeOptions = [] }) {
  const child = spawn(process.execPath, [...nodeOptions, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  process.on('exit', () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return {
    child,
    pid: child.pid,
    /** SIGTERM and wait (a --cpu-prof profile is written on a clean exit). */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = await exited;
      return code;
    },
  };
}

/**
 * Interrupted (Ctrl-C, SIGTERM): process.exit runs the exit hooks spawnLogged adds, which stop the
 * spawned processes (Redis too: bench/lib/redis.js). A tool that spawns many processes has one
 * exit hook per process: more than Node's default of 10 listeners.
 */
export function exitOnInterrupt() {
  process.setMaxListeners(64);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
}

/**
 * A baseline (bench/bare.js or bench/floor.js: `script` in bench/, `args` after its port) in its
 * own process on a free port, set to answer `reply` ({bytes, contentType}: the size and type of
 * the bridge's answer to the same request) as `npm run bench` sets it.
 */
export async function startBaseline({ script, args = [], name, logFile, nodeOptions, reply }) {
  const port = await freePort();
  const process_ = spawnLogged([join(import.meta.dirname, '..', script), String(port), ...args], {
    logFile,
    env: {},
    nodeOptions,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/ready`, 10_000, process_.child, name);
  await fetch(`${url}/__bench/reply`, { method: 'PUT', body: JSON.stringify(reply) });
  return { ...process_, url };
}

/**
 * CPU nanoseconds a process has used so far, from /proc/<pid>/task/<tid>/schedstat (Linux): all
 * its threads (V8's GC and compiler helpers, libuv's pool) and its main thread alone (the
 * JavaScript thread: its task id is the pid). schedstat counts nanoseconds where /proc/<pid>/stat
 * counts clock ticks of 10 ms, which a few seconds of a fixed rate would read to only a few per cent.
 */
export function cpuNs(pid) {
  let all = 0;
  let main = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let ns;
    try {
      ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      continue; // a thread that ended meanwhile
    }
    all += ns;
    if (tid === String(pid)) main = ns;
  }
  return { all, main };
}

/**
 * CPU milliseconds (user + system) a process has used so far, from /proc/<pid>/stat (Linux): all
 * its threads, or with `mainThread` its JavaScript thread alone (/proc/<pid>/task/<pid>/stat). The
 * kernel counts here in clock ticks of 10 ms: a round of several seconds is read to about 1 %
 * (cpuNs reads nanoseconds).
 */
export function cpuMs(pid, { mainThread = false } = {}) {
  const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, clock ticks of 10 ms
}

/** Resident set size of a process in bytes, from /proc (Linux). */
export async function rssOf(pid) {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return match ? Number(match[1]) * 1024 : Number.NaN;
}
