import fs, { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { COMMANDS, runCli, stopOnSignals } from '../src/cli/main.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { capture } from './support/cli.js';

/** stderr's lines that are not JSON log lines: what a person reads. */
const plainLines = (lines: string[]) => lines.filter((line) => !line.startsWith('{'));
/** stderr's JSON log lines, parsed. */
const jsonLines = (lines: string[]) =>
  lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, any>);

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
    expect(help.out.join('\n')).toContain('start [--role all|web|worker] [--config FILE]');
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

  it('--help works on every command and group, exit 0, without reading the config', async () => {
    // A config that cannot be read: help must not need it (nor Redis, nor a bridge).
    const env = process.env.CHATBRIDGE_CONFIG;
    process.env.CHATBRIDGE_CONFIG = '/nonexistent/chatbridge.yaml';
    try {
      const groups = [
        ...new Set(COMMANDS.filter((c) => c.name.includes(' ')).map((c) => c.name.split(' ')[0]!)),
      ];
      expect(groups).toEqual(expect.arrayContaining(['config', 'keys', 'sync', 'deliveries']));
      for (const group of groups) {
        const run = capture();
        expect(await runCli([group, '--help'], run.io), `${group} --help`).toBe(0);
        expect(run.out.join('\n')).toContain(`Usage: chatbridge ${group} <command>`);
        for (const command of COMMANDS.filter((c) => c.name.startsWith(`${group} `)))
          expect(run.out.join('\n')).toContain(command.name);
      }
      for (const command of COMMANDS) {
        for (const flag of ['--help', '-h']) {
          const run = capture();
          const argv = [...command.name.split(' '), flag, '--config', '/nonexistent/other.yaml'];
          expect(await runCli(argv, run.io), argv.join(' ')).toBe(0);
          expect(run.out[0]).toContain(`Usage: chatbridge ${command.name}`);
          expect(run.err).toEqual([]);
        }
      }
    } finally {
      if (env === undefined) delete process.env.CHATBRIDGE_CONFIG;
      else process.env.CHATBRIDGE_CONFIG = env;
    }
  });

  it('--version prints the package version', async () => {
    const run = capture();
    expect(await runCli(['--version'], run.io)).toBe(0);
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(run.out).toEqual([pkg.version]);
  });

  it('DESIGN §5: what the top help says works on every command and group does (--help there; --version is chatbridge --version)', async () => {
    const help = capture();
    expect(await runCli(['--help'], help.io)).toBe(0);
    const text = help.out.join('\n');
    const everywhere = /Options everywhere: ([^\n]*)/.exec(text)?.[1];
    expect(everywhere).toBeDefined();
    const flags = everywhere!.match(/--[a-z]+/g) ?? [];
    expect(flags).toContain('--help');
    for (const flag of flags) {
      for (const argv of [
        ['keys', flag],
        ['keys', 'list', flag],
      ]) {
        const run = capture();
        expect(await runCli(argv, run.io), argv.join(' ')).toBe(0);
      }
    }
    expect(text).toContain('chatbridge --version');
  });

  it('DESIGN §5: the in-memory refusal of a command that only reads (keys list, deliveries list) says why without speaking of a change', async () => {
    const file = writeConfig(`
admin: { token: a-long-enough-admin-token }
store: { redis: "" }
channels:
  - { id: app, vendor: livetex, token: livetex-token-0123456789 }
`);
    for (const argv of [
      ['keys', 'list', '--channel', 'app'],
      ['deliveries', 'list'],
    ]) {
      const run = capture();
      expect(await runCli([...argv, '--config', file], run.io), argv.join(' ')).toBe(1);
      expect(run.err, argv.join(' ')).toHaveLength(1);
      expect(run.err[0]).toContain('in-memory store');
      expect(run.err[0]).not.toMatch(/\bchange\b/);
      const help = capture();
      expect(await runCli([...argv.slice(0, 2), '--help'], help.io)).toBe(0);
      expect(help.out.join('\n')).not.toMatch(/Changes state/);
      expect(help.out.join('\n')).toContain('refused on an in-memory store config');
    }
  });

  it('commands that change shared state refuse an in-memory store config, with a one-line reason', async () => {
    const file = writeConfig(`
admin: { token: a-long-enough-admin-token }
store: { redis: "" }
channels:
  - { id: app, vendor: livetex, token: livetex-token-0123456789 }
  - id: cobrowse
    vendor: chatvisor
    token: chatvisor-token-0123456789
    apiUrl: http://127.0.0.1:9/rest/v1
    apiToken: api-token
    schedules: { agentSync: "", conversationPoll: "" }
`);
    for (const argv of [
      ['keys', 'generate', '--channel', 'app'],
      ['keys', 'list', '--channel', 'app'],
      ['keys', 'revoke', '--channel', 'app', '--kid', 'k1'],
      ['sync', 'agents', '--channel', 'cobrowse'],
      ['deliveries', 'list'],
      ['deliveries', 'replay', '--id', 'd1'],
    ]) {
      const run = capture();
      expect(await runCli([...argv, '--config', file], run.io), argv.join(' ')).toBe(1);
      expect(run.out, argv.join(' ')).toEqual([]);
      expect(run.err, argv.join(' ')).toHaveLength(1);
      expect(run.err[0]).toContain('in-memory store');
      expect(run.err[0]).toContain('store.redis');
    }
  });

  it('on the example config, the in-memory refusal says to copy it (README "Running for real"), not to edit it', async () => {
    // The example runs on the in-memory store also with REDIS_URL set, by design: "set store.redis
    // in it" sent a newcomer to edit the example, which the README says to copy first.
    const run = capture();
    expect(
      await runCli(['keys', 'list', '--channel', 'app', '--config', 'config/bridge.example.yaml'], run.io),
    ).toBe(1);
    expect(run.err).toHaveLength(1);
    expect(run.err[0]).toContain('in-memory store');
    expect(run.err[0]).toContain('copy it to config/bridge.yaml');
    expect(run.err[0]).not.toContain('in it');
  });

  it('unknown commands in a group are bad usage (exit 2); a bare group prints its usage on stderr', async () => {
    const unknown = capture();
    expect(await runCli(['config', 'bogus'], unknown.io)).toBe(2);
    expect(unknown.err[0]).toContain("unknown command 'config bogus'");
    const bare = capture();
    expect(await runCli(['deliveries'], bare.io)).toBe(2);
    expect(bare.out).toEqual([]);
    expect(bare.err.join('\n')).toContain('deliveries replay');
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

  it("config check of a copy of the example says which of the example's published credentials it still holds", async () => {
    // README "Running for real" step 1: copy the example and replace every example value. A copy
    // that kept them passed with a bare OK on loopback, and the first word about them was start's
    // refusal the day the bridge was given another address.
    const copy = writeConfig(readFileSync('config/bridge.example.yaml', 'utf8'));
    const saved = { PORT: process.env.PORT, HOST: process.env.HOST };
    delete process.env.PORT;
    delete process.env.HOST;
    try {
      const run = capture();
      expect(await runCli(['config', 'check', '--config', copy], run.io)).toBe(0);
      expect(run.out[0]).toBe(`${copy}: OK (3 channels, 1 destination, store: in-memory)`);
      expect(run.err).toEqual([
        'note: admin.token, channels[0].token, channels[1].token, channels[2].token, channels[2].apiToken, ' +
          "destinations[0].secret still hold the example's published credentials: fine while server.host " +
          'is loopback (127.0.0.1), refused on any other address; set your own (README "Running for real", step 1)',
      ]);
      // The example itself is said to be the example; its credentials are the point of it.
      const example = capture();
      expect(await runCli(['config', 'check', '--config', 'config/bridge.example.yaml'], example.io)).toBe(0);
      expect(example.err).toEqual(['note: this is the example config']);
    } finally {
      for (const [name, value] of Object.entries(saved))
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    }
  });

  it('start on a copy of the example logs which published credentials it still holds (loopback: a warning, not a refusal)', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    const copy = writeConfig(readFileSync('config/bridge.example.yaml', 'utf8'));
    const saved = { PORT: process.env.PORT, HOST: process.env.HOST };
    process.env.PORT = String(port); // busy: start stops after its start-up lines, exit 1
    delete process.env.HOST;
    // start's log goes to fd 2 itself (pino's sync destination), not through the CLI's streams.
    const written: string[] = [];
    const spy = vi.spyOn(fs, 'writeSync').mockImplementation(((fd: number, data: unknown) => {
      if (fd !== 2) throw new Error(`unexpected writeSync to fd ${fd}`);
      written.push(String(data));
      return String(data).length;
    }) as typeof fs.writeSync);
    try {
      const run = capture();
      const exit = await runCli(['start', '--config', copy], run.io);
      spy.mockRestore();
      expect(exit).toBe(1);
      const lines = written
        .join('')
        .split('\n')
        .filter((line) => line.startsWith('{'));
      const warned = jsonLines(lines).filter((line) => line.level === 40 && /published/.test(line.msg));
      expect(warned).toHaveLength(1);
      expect(warned[0]!.msg).toContain(
        "admin.token, channels[0].token, channels[1].token, channels[2].token, channels[2].apiToken, destinations[0].secret still hold the example's published credentials",
      );
    } finally {
      spy.mockRestore();
      for (const [name, value] of Object.entries(saved))
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      await new Promise((resolve) => busy.close(resolve));
    }
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

  it('config check reports a LiveTex channel on a Sentinel or Cluster store without secrets.masterKey (exit 1)', async () => {
    for (const store of [
      'sentinel: { name: mymaster, nodes: ["127.0.0.1:26379"] }',
      'cluster: { nodes: ["127.0.0.1:7000"] }',
    ]) {
      const file = writeConfig(`
admin: { token: a-long-enough-admin-token }
store: { ${store} }
channels:
  - { id: app, vendor: livetex, token: livetex-token-0123456789 }
`);
      const run = capture();
      expect(await runCli(['config', 'check', '--config', file], run.io), store).toBe(1);
      expect(run.out).toEqual([]);
      expect(run.err.join('\n')).toContain('channels[0]: livetex channels need secrets.masterKey');
    }
  });

  it('a config error raised after the config loaded is printed, not swallowed (exit 1)', async () => {
    COMMANDS.push({
      name: 'raise-config-error',
      summary: 'test only',
      config: false,
      async run() {
        throw new ConfigError('channel app: livetex channels need secrets.masterKey');
      },
    });
    try {
      const run = capture();
      expect(await runCli(['raise-config-error'], run.io)).toBe(1);
      expect(run.err).toEqual(['chatbridge: channel app: livetex channels need secrets.masterKey']);
    } finally {
      COMMANDS.pop();
    }
  });

  it('config check reports what start refuses: published example credentials on a non-loopback host', async () => {
    const file = writeConfig(`
server: { host: 0.0.0.0 }
admin: { token: example-admin-token-change-me }
`);
    const run = capture();
    expect(await runCli(['config', 'check', '--config', file], run.io)).toBe(1);
    expect(run.out).toEqual([]);
    const text = run.err.join('\n');
    expect(text).toContain(
      "refusing to listen on 0.0.0.0: admin.token still holds one of the example's published credentials",
    );
    expect(text).toContain('admin.token: a published example credential');

    const host = process.env.HOST;
    // The example as a newcomer runs it: no REDIS_URL (CI exports one; with it the example's
    // LiveTex channel needs a master key, a different problem reported first).
    const redisUrl = process.env.REDIS_URL;
    delete process.env.REDIS_URL;
    process.env.HOST = '0.0.0.0';
    try {
      const example = capture();
      expect(await runCli(['config', 'check', '--config', 'config/bridge.example.yaml'], example.io)).toBe(1);
      expect(example.err.join('\n')).toContain('channels[0].token: a published example credential');
    } finally {
      if (host === undefined) delete process.env.HOST;
      else process.env.HOST = host;
      if (redisUrl !== undefined) process.env.REDIS_URL = redisUrl;
    }
    const loopback = capture();
    expect(
      await runCli(
        [
          'config',
          'check',
          '--config',
          writeConfig('admin: { token: example-admin-token-change-me }\nserver: { host: 127.0.0.1 }\n'),
        ],
        loopback.io,
      ),
    ).toBe(0);
  });

  it('bad usage exits 2 before the in-memory store refusal', async () => {
    const file = writeConfig(`
admin: { token: a-long-enough-admin-token }
channels:
  - { id: app, vendor: livetex, token: livetex-token-0123456789 }
`);
    for (const argv of [
      ['deliveries', 'list', '--limit', 'abc'],
      ['deliveries', 'list', '--state', 'lost'],
      ['deliveries', 'replay'],
      ['deliveries', 'replay', '--id', 'd1', '--all-failed'],
      ['keys', 'revoke', '--channel', 'app'],
      ['keys', 'generate', '--channel', 'nosuch'],
      ['sync', 'agents', '--channel', 'app'],
    ]) {
      const run = capture();
      expect(await runCli([...argv, '--config', file], run.io), argv.join(' ')).toBe(2);
      expect(run.err.join('\n'), argv.join(' ')).not.toContain('in-memory store');
    }
  });

  it('start --role web|worker refuses the in-memory store (no other instance shares it), exit 1', async () => {
    const file = writeConfig(
      'admin: { token: a-long-enough-admin-token }\nserver: { port: 0, host: 127.0.0.1 }\n',
    );
    for (const role of ['web', 'worker']) {
      const run = capture(true);
      expect(await runCli(['start', '--role', role, '--config', file], run.io), role).toBe(1);
      const plain = plainLines(run.err);
      expect(plain).toHaveLength(1);
      expect(plain[0]).toMatch(
        new RegExp(`^chatbridge: --role ${role} refused: .* uses the in-memory store`),
      );
      expect(plain[0]).toContain(role === 'web' ? 'never be delivered' : 'nothing to do');
    }
  });

  it('start on a busy port names the listener and its setting in one line and exits 1', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    const savedPort = process.env.PORT;
    delete process.env.PORT;
    try {
      const cases = [
        {
          yaml: `server: { port: ${port}, host: 127.0.0.1 }`,
          says: `127.0.0.1:${port} (server.port or PORT)`,
        },
        {
          yaml: `server: { port: 0, host: 127.0.0.1 }\nmetrics: { port: ${port} }`,
          says: `127.0.0.1:${port} (metrics.port)`,
        },
      ];
      for (const { yaml, says } of cases) {
        const file = writeConfig(`admin: { token: a-long-enough-admin-token }\n${yaml}\n`);
        const run = capture(true);
        expect(await runCli(['start', '--config', file], run.io), yaml).toBe(1);
        expect(plainLines(run.err)).toEqual([
          `chatbridge: cannot listen on ${says}: the port is in use by another process; choose another`,
        ]);
      }
    } finally {
      if (savedPort !== undefined) process.env.PORT = savedPort;
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('start on a busy port names the environment variable the port came from', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    const saved = { PORT: process.env.PORT, METRICS_PORT: process.env.METRICS_PORT };
    const restore = () => {
      for (const [name, value] of Object.entries(saved))
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    };
    const startOn = async (file: string) => {
      const run = capture(true);
      expect(await runCli(['start', '--config', file], run.io), file).toBe(1);
      return plainLines(run.err);
    };
    const inUse = 'the port is in use by another process; choose another';
    try {
      delete process.env.PORT;
      delete process.env.METRICS_PORT;
      // As the example writes them: the variable and the default the file gives.
      expect(
        await startOn(
          writeConfig(
            `admin: { token: a-long-enough-admin-token }\nserver: { port: "\${PORT:-${port}}", host: 127.0.0.1 }\n`,
          ),
        ),
      ).toEqual([
        `chatbridge: cannot listen on 127.0.0.1:${port} (server.port: \${PORT:-${port}}): ${inUse}`,
      ]);
      // PORT set: it overrides whatever the file says.
      process.env.PORT = String(port);
      expect(
        await startOn(
          writeConfig('admin: { token: a-long-enough-admin-token }\nserver: { port: 0, host: 127.0.0.1 }\n'),
        ),
      ).toEqual([
        `chatbridge: cannot listen on 127.0.0.1:${port} (PORT, which overrides server.port): ${inUse}`,
      ]);
      // The shipped example: its metrics port comes from METRICS_PORT.
      process.env.PORT = '0';
      process.env.METRICS_PORT = String(port);
      expect(await startOn(join(import.meta.dirname, '..', 'config', 'bridge.example.yaml'))).toEqual([
        `chatbridge: cannot listen on 127.0.0.1:${port} (metrics.port: \${METRICS_PORT:-9464}): ${inUse}`,
      ]);
    } finally {
      restore();
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('start says why it could not start as a JSON line at level fatal; in plain words too only to a terminal', async () => {
    // A log pipeline keeps stderr's JSON lines by `level`: the plain `chatbridge: ...` line, the
    // only one said before, was dropped: the one line that said why the bridge was not running.
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    const savedPort = process.env.PORT;
    delete process.env.PORT;
    try {
      const reason = `cannot listen on 127.0.0.1:${port} (server.port or PORT): the port is in use by another process; choose another`;
      const file = writeConfig(
        `admin: { token: a-long-enough-admin-token }\nserver: { port: ${port}, host: 127.0.0.1 }\n`,
      );
      const pipeline = capture();
      expect(await runCli(['start', '--config', file], pipeline.io)).toBe(1);
      // Every line JSON; the last one the reason, at fatal (60).
      expect(plainLines(pipeline.err)).toEqual([]);
      expect(jsonLines(pipeline.err).at(-1)).toMatchObject({ level: 60, msg: reason, service: 'chatbridge' });
      const terminal = capture(true);
      expect(await runCli(['start', '--config', file], terminal.io)).toBe(1);
      expect(jsonLines(terminal.err).at(-1)).toMatchObject({ level: 60, msg: reason });
      expect(plainLines(terminal.err)).toEqual([`chatbridge: ${reason}`]);

      // A config that does not load: its problems, with their paths, in the fatal line.
      const broken = writeConfig('admin: { token: a-long-enough-admin-token }\nserver: { port: nope }\n');
      const refused = capture();
      expect(await runCli(['start', '--config', broken], refused.io)).toBe(1);
      expect(plainLines(refused.err)).toEqual([]);
      const fatal = jsonLines(refused.err);
      expect(fatal).toHaveLength(1);
      expect(fatal[0]).toMatchObject({
        level: 60,
        issues: [expect.objectContaining({ path: 'server.port' })],
      });
      // config check is for people: as before, plain lines only, whatever stderr is.
      const checked = capture();
      expect(await runCli(['config', 'check', '--config', broken], checked.io)).toBe(1);
      expect(jsonLines(checked.err)).toEqual([]);
      expect(checked.err.join('\n')).toContain('server.port');
    } finally {
      if (savedPort !== undefined) process.env.PORT = savedPort;
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('start refusing published example credentials off loopback says so without a stack, as its other refusals', async () => {
    // A newcomer's HOST=0.0.0.0 on the example: the fatal line carried the whole stack trace of
    // our own one-line reason (its paths already in `issues`), as if the bridge had crashed.
    const file = writeConfig(`
server: { host: 0.0.0.0, port: 0 }
admin: { token: example-admin-token-change-me }
`);
    const run = capture(true);
    expect(await runCli(['start', '--config', file], run.io)).toBe(1);
    const fatal = jsonLines(run.err).at(-1)!;
    expect(fatal).toMatchObject({
      level: 60,
      msg: 'refusing to listen on 0.0.0.0: admin.token still holds one of the example\'s published credentials; set your own (README "Running for real") or bind to 127.0.0.1',
      issues: [{ path: 'admin.token', message: 'a published example credential' }],
    });
    expect(fatal).not.toHaveProperty('err');
    expect(plainLines(run.err)).toEqual([`chatbridge: ${fatal.msg}`]);
  });

  it('start with log.level silent says why it could not start in one plain line, no JSON line, exit 1', async () => {
    // Silent asks for no log lines; the fatal JSON line came all the same. The reason must still
    // reach the operator: in the plain form every other command's failure takes.
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    const savedPort = process.env.PORT;
    delete process.env.PORT;
    try {
      const reason = `cannot listen on 127.0.0.1:${port} (server.port or PORT): the port is in use by another process; choose another`;
      const file = writeConfig(
        `admin: { token: a-long-enough-admin-token }\nserver: { port: ${port}, host: 127.0.0.1 }\nlog: { level: silent }\n`,
      );
      for (const terminal of [false, true]) {
        const run = capture(terminal);
        expect(await runCli(['start', '--config', file], run.io)).toBe(1);
        expect(jsonLines(run.err), `terminal: ${terminal}`).toEqual([]);
        expect(run.err, `terminal: ${terminal}`).toEqual([`chatbridge: ${reason}`]);
        expect(run.out).toEqual([]);
      }
      // Any other level: the JSON line at fatal, as before (fatal is on at every level but silent).
      const error = writeConfig(
        `admin: { token: a-long-enough-admin-token }\nserver: { port: ${port}, host: 127.0.0.1 }\nlog: { level: error }\n`,
      );
      const logged = capture();
      expect(await runCli(['start', '--config', error], logged.io)).toBe(1);
      expect(jsonLines(logged.err)).toEqual([expect.objectContaining({ level: 60, msg: reason })]);
    } finally {
      if (savedPort !== undefined) process.env.PORT = savedPort;
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('keys revoke --help shows --kid as required', async () => {
    const run = capture();
    expect(await runCli(['keys', 'revoke', '--help'], run.io)).toBe(0);
    const text = run.out.join('\n');
    expect(text.split('\n')[0]).toBe('Usage: chatbridge keys revoke --channel ID --kid KID [--config FILE]');
    expect(text).toMatch(/--kid KID +the key id to revoke \(required\)/);
  });
});

describe('stopping on signals', () => {
  const logger = createLogger('silent');

  it('the first signal stops gracefully (0); a second exits at once with 1, without waiting for the first', async () => {
    const exits: number[] = [];
    // A shutdown that never finishes: what a hung request or a vanished Redis looks like.
    const { done, stop } = stopOnSignals({ close: () => new Promise<void>(() => {}) }, logger, (code) =>
      exits.push(code),
    );
    stop('SIGTERM');
    expect(exits).toEqual([]);
    stop('SIGINT');
    expect(exits).toEqual([1]);
    expect(await done).toBe(1);
  });

  it('a shutdown that outlasts its deadline exits with 1 and says so, before a platform has to SIGKILL it', async () => {
    const exits: number[] = [];
    const errors: string[] = [];
    const { done, stop } = stopOnSignals(
      { close: () => new Promise<void>(() => {}) },
      { ...logger, error: (_fields: unknown, message?: string) => void errors.push(String(message)) },
      (code) => exits.push(code),
      50,
    );
    vi.useFakeTimers();
    try {
      stop('SIGTERM');
      vi.advanceTimersByTime(49);
      expect(exits).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(exits).toEqual([1]);
      expect(await done).toBe(1);
      expect(errors.join('\n')).toMatch(/did not finish within 50 ms/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('one signal and a shutdown that finishes: 0, and no forced exit', async () => {
    const exits: number[] = [];
    const { done, stop } = stopOnSignals({ close: async () => {} }, logger, (code) => exits.push(code), 50);
    vi.useFakeTimers();
    try {
      stop('SIGTERM');
      expect(await done).toBe(0);
      // The deadline's timer went with the shutdown: nothing forces an exit after it.
      vi.advanceTimersByTime(1000);
      expect(exits).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });
});
