import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer } from 'node:net';

/**
 * Redis for the benchmark: REDIS_URL if set, else a private `redis-server` on a free port (no
 * persistence), killed when the bench exits. Same logic as test/support/redis.ts, in plain JS
 * because the bench runs against dist/ and dist/ does not contain test/.
 */

export function pingRaw(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = '';
    const finish = (ok) => {
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

export async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  return port;
}

/**
 * `pid`: the private server's process id (null for REDIS_URL), so a tool can read its CPU.
 * @returns {Promise<{url: string, private: boolean, pid: number | null, stop(): Promise<void>}>}
 */
export async function benchRedis({ alwaysPrivate = false } = {}) {
  // alwaysPrivate: a tool that reads the server's own CPU needs a server with nothing else on it.
  const fromEnv = alwaysPrivate ? undefined : process.env.REDIS_URL;
  if (fromEnv) return { url: fromEnv, private: false, pid: null, stop: async () => {} };
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status !== 0) {
    throw new Error(
      'the bench needs Redis: install redis-server (it is started on a free port) or set REDIS_URL=redis://host:port',
    );
  }
  const port = await freePort();
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
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk.toString();
  });
  process.on('exit', () => child.kill('SIGKILL'));
  const deadline = Date.now() + 5000;
  while (!(await pingRaw('127.0.0.1', port, 200))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start on port ${port}: ${stderr.trim() || 'no answer'}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    private: true,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}
