import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildDist } from '../support/fault.js';
import { cleanupPrefix, freePort, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * The built package end to end (slow tier: it compiles the project and starts processes):
 * `chatbridge start` serves and stops, logs on stderr only, PORT wins over the file, `keys generate`
 * prints only its JSON on stdout, and main / types / exports exist and load. test/cli.test.ts
 * covers the CLI in process.
 */
function writeConfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cli-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(file, text);
  return file;
}

describe('chatbridge start (the real binary)', () => {
  beforeAll(() => {
    buildDist();
  }, 120_000);

  async function startBinary(args: string[], env: NodeJS.ProcessEnv, port: number, nodeArgs: string[] = []) {
    const child = spawn(process.execPath, [...nodeArgs, 'bin/chatbridge.js', 'start', ...args], {
      env: { ...process.env, REDIS_URL: '', CHATBRIDGE_CONFIG: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output = { stdout: '', stderr: '' };
    child.stdout.on('data', (chunk: Buffer) => {
      output.stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output.stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let ready = false;
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    // Until it answers or exits (the test's own timeout bounds the wait).
    while (!ready && !gone) {
      ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (response) => response.ok,
        () => false,
      );
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return { child, output, ready, exited };
  }

  it('serves, then stops gracefully on SIGTERM with exit 0; logs go to stderr, stdout stays empty', async () => {
    const port = await freePort();
    const { child, output, ready, exited } = await startBinary(
      ['--config', 'config/bridge.example.yaml'],
      { PORT: String(port) },
      port,
    );
    expect(ready, output.stderr).toBe(true);
    expect(output.stderr).toContain('running the EXAMPLE config');
    expect(output.stderr).toContain('NOTHING survives a restart');
    // src/v8-tuning.ts: set in the serving process itself, so `npm start` gets it.
    expect(output.stderr).toContain('--no-allocation-site-pretenuring');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output.stderr).toContain('chatbridge stopped');
    expect(output.stdout).toBe('');
  }, 120_000);

  it('a SIGTERM or SIGINT while it is starting stops it gracefully (exit 0), not by the signal', async () => {
    // The main port served webhooks, and /readyz answered 200, before start() had finished and
    // the signal handlers were installed: a signal then killed the process by its default action
    // (exit 143 / 130, no log line), as a rolling deploy does to a pod that just came up.
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        ['bin/chatbridge.js', 'start', '--config', 'config/bridge.example.yaml'],
        {
          env: {
            ...process.env,
            REDIS_URL: '',
            CHATBRIDGE_CONFIG: '',
            PORT: String(port),
            METRICS_PORT: String(await freePort()),
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stderr = '';
      let sent = false;
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        // Said while the bridge is built: before the listeners, the workers and the schedules.
        if (!sent && stderr.includes('using the in-memory store')) {
          sent = true;
          child.kill(signal);
        }
      });
      const exit = await new Promise<{ code: number | null; by: string | null }>((resolve) =>
        child.once('exit', (code, by) => resolve({ code, by })),
      );
      expect(exit, stderr).toEqual({ code: 0, by: null });
      // Taken during start-up or just after it (the signal races the bridge's start-up): stopped either way.
      expect(stderr).toMatch(/stopping as soon as start-up has finished|stopping: finishing in-flight/);
      expect(stderr).toContain('chatbridge stopped');
    }
  }, 120_000);

  it('npm start execs node: a SIGTERM to the process npm starts reaches the bridge, which stops (exit 0)', async () => {
    // npm runs a script as `sh -c '<script> <args>'` and signals that shell. Without `exec`, dash
    // (Debian's /bin/sh) stays in between: the shell died of the SIGTERM and the bridge kept
    // running, orphaned, without its graceful stop.
    const { scripts } = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } };
    const port = await freePort();
    const child = spawn('/bin/sh', ['-c', `${scripts.start} --config config/bridge.example.yaml`], {
      env: { ...process.env, REDIS_URL: '', CHATBRIDGE_CONFIG: '', PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so that whatever is left of it can be ended below.
      detached: true,
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      while (!stderr.includes('chatbridge listening') && child.exitCode === null)
        await new Promise((resolve) => setTimeout(resolve, 200));
      expect(stderr).toContain('chatbridge listening');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toContain('stopping: finishing in-flight requests and jobs');
      expect(stderr).toContain('chatbridge stopped');
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // the group is gone: nothing left over
      }
    }
  }, 120_000);

  it('PORT wins over a literal server.port in the file', async () => {
    const port = await freePort();
    const file = writeConfig('server: { port: 1 }\nadmin: { token: a-long-enough-admin-token }\n');
    const { child, output, ready, exited } = await startBinary(
      ['--config', file],
      { PORT: String(port) },
      port,
    );
    expect(ready, output.stderr).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 120_000);

  it("an operator who chose allocation-site pretenuring on node's command line keeps it", async () => {
    const port = await freePort();
    const { child, output, ready, exited } = await startBinary(
      ['--config', 'config/bridge.example.yaml'],
      { PORT: String(port) },
      port,
      ['--allocation-site-pretenuring'],
    );
    expect(ready, output.stderr).toBe(true);
    expect(output.stderr).toContain('running the EXAMPLE config');
    expect(output.stderr).not.toContain('V8 settings for serving');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 120_000);

  it('main, types and exports point at files that exist after the build, and load', async () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
      main: string;
      types: string;
      exports: Record<string, string>;
    };
    for (const file of [pkg.main, pkg.types, ...Object.values(pkg.exports)])
      expect(existsSync(file), `${file} after the build`).toBe(true);
    const main = (await import(resolve(pkg.exports['.']!))) as Record<string, unknown>;
    expect(typeof main.createBridge).toBe('function');
    expect(typeof main.loadConfig).toBe('function');
    expect(typeof main.runCli).toBe('function');
    for (const file of Object.values(pkg.exports)) await import(resolve(file));
  });

  it('keys generate > key.json holds only the JSON result', async () => {
    const redisUrl = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('cli-keys');
    const file = writeConfig(
      [
        'admin: { token: a-long-enough-admin-token }',
        `store: { redis: "${redisUrl}", keyPrefix: "${keyPrefix}" }`,
        `secrets: { masterKey: "${Buffer.alloc(32, 7).toString('base64')}" }`,
        'channels:',
        '  - { id: app, vendor: livetex, token: livetex-token-0123456789 }',
      ].join('\n'),
    );
    try {
      const run = spawnSync(
        process.execPath,
        ['bin/chatbridge.js', 'keys', 'generate', '--channel', 'app', '--config', file],
        { encoding: 'utf8', env: { ...process.env, CHATBRIDGE_CONFIG: '' } },
      );
      expect(run.status, run.stderr).toBe(0);
      const lines = run.stdout.split('\n').filter((line) => line !== '');
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({ kid: expect.any(String), key: expect.any(String) });
      expect(run.stderr).toContain('not shown again');
    } finally {
      await cleanupPrefix(redisUrl, keyPrefix);
    }
  }, 120_000);

  it("bad usage says how to get help the way it was run: node bin/chatbridge.js in a checkout, chatbridge through the package's bin", () => {
    // In a checkout (npm ci, no global install) there is no `chatbridge` on the PATH: "Run
    // 'chatbridge --help' for usage." named a command the newcomer did not have.
    const env = { ...process.env, CHATBRIDGE_CONFIG: '' };
    const checkout = spawnSync(process.execPath, ['bin/chatbridge.js', 'config', 'chek'], {
      encoding: 'utf8',
      env,
    });
    expect(checkout.status).toBe(2);
    expect(checkout.stderr.trim().split('\n').at(-1)).toBe("Run 'node bin/chatbridge.js --help' for usage.");
    // As npm links the package's bin: a `chatbridge` on the PATH pointing at bin/chatbridge.js.
    const binDir = mkdtempSync(join(tmpdir(), 'chatbridge-bin-'));
    symlinkSync(resolve('bin/chatbridge.js'), join(binDir, 'chatbridge'));
    const installed = spawnSync(join(binDir, 'chatbridge'), ['config', 'chek'], { encoding: 'utf8', env });
    expect(installed.status).toBe(2);
    expect(installed.stderr.trim().split('\n').at(-1)).toBe("Run 'chatbridge --help' for usage.");
  });
});
