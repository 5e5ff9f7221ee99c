import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { freePort } from './support/redis.js';

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { stdout: (line: string) => out.push(line), stderr: (line: string) => err.push(line) },
    out,
    err,
  };
}

function writeConfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cli-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(file, text);
  return file;
}

describe('chatbridge CLI (in process)', () => {
  it('prints usage with --help (exit 0) and refuses unknown commands and options (exit 2)', async () => {
    const help = capture();
    expect(await runCli(['--help'], help.io)).toBe(0);
    expect(help.out.join('\n')).toContain('start [--config FILE] [--role all|web|worker]');
    const startHelp = capture();
    expect(await runCli(['start', '--help'], startHelp.io)).toBe(0);
    expect(startHelp.out.join('\n')).toContain('--role');
    const unknown = capture();
    expect(await runCli(['frobnicate'], unknown.io)).toBe(2);
    expect(unknown.err[0]).toContain("unknown command 'frobnicate'");
    const badOption = capture();
    expect(await runCli(['config', 'check', '--colour'], badOption.io)).toBe(2);
    const badRole = capture();
    expect(await runCli(['start', '--role', 'boss'], badRole.io)).toBe(2);
    const noChannel = capture();
    expect(await runCli(['keys', 'generate'], noChannel.io)).toBe(2);
    expect(noChannel.err[0]).toContain('--channel');
  });

  it('config check lists every problem with its path and exits 1', async () => {
    const file = writeConfig(`
admin: { token: short }
identity: { defaultCountry: Russia }
channels:
  - { id: "Bad Id", vendor: jivochat, token: "\${NOT_SET_ANYWHERE_123}" }
`);
    const run = capture();
    expect(await runCli(['config', 'check', '--config', file], run.io)).toBe(1);
    const text = run.err.join('\n');
    expect(text).toContain('admin.token:');
    expect(text).toContain('identity.defaultCountry:');
    expect(text).toContain('channels[0].id:');
    expect(text).toContain('channels[0].token: environment variable NOT_SET_ANYWHERE_123 is not set');
  });

  it('config check accepts a good file (exit 0) and keys master prints a 32-byte key', async () => {
    const ok = capture();
    expect(
      await runCli(
        ['config', 'check', '--config', writeConfig('admin: { token: a-long-enough-admin-token }\n')],
        ok.io,
      ),
    ).toBe(0);
    expect(ok.out[0]).toContain('OK (0 channels, 0 destinations, store: in-memory)');
    const key = capture();
    expect(await runCli(['keys', 'master'], key.io)).toBe(0);
    expect(Buffer.from(key.out[0]!, 'base64')).toHaveLength(32);
  });

  it('a missing config file is a one-line failure (exit 1)', async () => {
    const run = capture();
    expect(await runCli(['config', 'check', '--config', '/nonexistent/bridge.yaml'], run.io)).toBe(1);
    expect(run.err[0]).toMatch(/cannot read config file \/nonexistent\/bridge.yaml/);
  });
});

describe('chatbridge start (the real binary)', () => {
  beforeAll(() => {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'pipe' });
  }, 120_000);

  it('serves, then stops gracefully on SIGTERM with exit 0', async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      ['bin/chatbridge.js', 'start', '--config', 'config/bridge.example.yaml'],
      {
        env: { ...process.env, PORT: String(port), REDIS_URL: '', CHATBRIDGE_CONFIG: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const deadline = Date.now() + 20_000;
    let ready = false;
    while (!ready && Date.now() < deadline) {
      ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (response) => response.ok,
        () => false,
      );
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(ready, output).toBe(true);
    expect(output).toContain('running the EXAMPLE config');
    expect(output).toContain('NOTHING survives a restart');
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('chatbridge stopped');
  }, 60_000);
});
