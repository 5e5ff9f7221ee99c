import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS, programName, runCli } from '../src/cli/main.js';
import { capture } from './support/cli.js';

/** What the CLI says to a newcomer's slips (DESIGN §5: exit 2 on bad usage, with the reason). */

const SECRET = `whsec_${Buffer.from('cli-usage-test-secret-0123456789').toString('base64')}`;

/** A valid config on the in-memory store: every check below happens before any store is opened. */
function configFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cli-usage-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(
    file,
    `server: {port: 0, host: 127.0.0.1}\nadmin: {token: abcdefghijklmnopqrst}\n` +
      `destinations:\n  - {id: crm, url: "https://crm.example/hook", secret: ${SECRET}}\n`,
  );
  return file;
}

describe('chatbridge CLI usage', () => {
  it('--config "" is bad usage (exit 2), not a silent fall-back to another config', async () => {
    const env = process.env.CHATBRIDGE_CONFIG;
    // What an empty --config used to fall back to: a valid file, so the old code said OK.
    process.env.CHATBRIDGE_CONFIG = configFile();
    try {
      for (const args of [
        ['config', 'check', '--config', ''],
        ['config', 'check', '--config='],
      ]) {
        const run = capture();
        expect(await runCli(args, run.io), args.join(' ')).toBe(2);
        expect(run.err[0]).toBe('chatbridge: --config needs a file name (got an empty one)');
        expect(run.out).toEqual([]);
      }
    } finally {
      if (env === undefined) delete process.env.CHATBRIDGE_CONFIG;
      else process.env.CHATBRIDGE_CONFIG = env;
    }
  });

  it('deliveries list names the allowed values of --state and --limit', async () => {
    const file = configFile();
    const state = capture();
    expect(await runCli(['deliveries', 'list', '--state', 'lost', '--config', file], state.io)).toBe(2);
    expect(state.err[0]).toBe("chatbridge: --state must be one of pending, delivered, failed (got 'lost')");
    for (const limit of ['abc', '0', '501', '2.5']) {
      const run = capture();
      expect(await runCli(['deliveries', 'list', '--limit', limit, '--config', file], run.io)).toBe(2);
      expect(run.err[0]).toBe(`chatbridge: --limit must be a whole number from 1 to 500 (got '${limit}')`);
    }
  });

  it('chatbridge help <command> prints that command’s (or group’s) help, exit 0', async () => {
    const command = capture();
    expect(await runCli(['help', 'config', 'check'], command.io)).toBe(0);
    expect(command.out.join('\n')).toMatch(/^Usage: chatbridge config check \[--config FILE\]\n/);
    const group = capture();
    expect(await runCli(['help', 'deliveries'], group.io)).toBe(0);
    expect(group.out.join('\n')).toMatch(/^Usage: chatbridge deliveries <command> \[options\]\n/);
    const top = capture();
    expect(await runCli(['help'], top.io)).toBe(0);
    expect(top.out.join('\n')).toMatch(/^Usage: chatbridge <command> \[options\]\n/);
    // Each option says what to give: which destination crm check takes, --limit's range and default.
    const crm = capture();
    expect(await runCli(['help', 'crm', 'check'], crm.io)).toBe(0);
    expect(crm.out.join('\n')).toContain(
      '--destination ID  the destination (its id in the config; kind: amocrm or bitrix24) (required)',
    );
    const list = capture();
    expect(await runCli(['help', 'deliveries', 'list'], list.io)).toBe(0);
    expect(list.out.join('\n')).toMatch(/--limit N +at most N deliveries \(1–500; default 50\)/);
    const unknown = capture();
    expect(await runCli(['help', 'frobnicate'], unknown.io)).toBe(2);
    expect(unknown.err[0]).toBe("chatbridge: unknown command 'frobnicate'");
  });

  it('a channel that is not there, or has not the command, is bad usage naming the channels that have it', async () => {
    // The example as a newcomer runs it (no store is opened: usage is checked first).
    const unknown = capture();
    expect(
      await runCli(
        ['keys', 'generate', '--channel', 'nope', '--config', 'config/bridge.example.yaml'],
        unknown.io,
      ),
    ).toBe(2);
    expect(unknown.err[0]).toBe(
      "chatbridge: no channel 'nope' in the config (channels with 'keys generate': app)",
    );
    const other = capture();
    expect(
      await runCli(
        ['keys', 'list', '--channel', 'shop-site', '--config', 'config/bridge.example.yaml'],
        other.io,
      ),
    ).toBe(2);
    expect(other.err[0]).toBe(
      "chatbridge: channel 'shop-site' (jivochat) has no command 'keys list' (channels with 'keys list': app)",
    );
  });

  it('a destination the config does not have is bad usage (exit 2) for replay and crm check', async () => {
    const file = configFile();
    const replay = capture();
    expect(
      await runCli(
        ['deliveries', 'replay', '--destination', 'nope', '--all-failed', '--config', file],
        replay.io,
      ),
    ).toBe(2);
    expect(replay.err[0]).toBe("chatbridge: no destination 'nope' in the config (have: crm)");
    const crm = capture();
    expect(await runCli(['crm', 'check', '--destination', 'nope', '--config', file], crm.io)).toBe(2);
    // crm check names the destinations it takes: the config has none (its only one is a webhook).
    expect(crm.err[0]).toBe(
      `chatbridge: no destination 'nope' in the config: ${file} has no CRM destination (a destination with kind: amocrm or bitrix24; README "Connect your CRM")`,
    );
    const webhook = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], webhook.io)).toBe(2);
    expect(webhook.err[0]).toContain("destination 'crm' is a webhook, not a CRM");
  });

  it('every error line starts with chatbridge: (config check said its failures bare)', async () => {
    // A newcomer greps, or a wrapper script matches, one prefix: config check printed
    // 'cannot read config file …' and '<file>: the config has 1 problem' with none, while every
    // other command said 'chatbridge: …' (and deliveries 'chatbridge deliveries: …').
    const missing = capture();
    expect(await runCli(['config', 'check', '--config', '/nonexistent/bridge.yaml'], missing.io)).toBe(1);
    expect(missing.err).toEqual([
      'chatbridge: cannot read config file /nonexistent/bridge.yaml: no such file',
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-cli-usage-'));
    const broken = join(dir, 'bridge.yaml');
    writeFileSync(broken, 'admin: {token: abcdefghijklmnopqrst}\nserver: {port: eighty}\n');
    for (const args of [
      ['config', 'check'],
      ['deliveries', 'list'],
    ]) {
      const run = capture();
      expect(await runCli([...args, '--config', broken], run.io), args.join(' ')).toBe(1);
      expect(run.err[0], args.join(' ')).toBe(`chatbridge: ${broken}: the config has 1 problem`);
      expect(run.err[1], args.join(' ')).toMatch(/^ {2}server\.port: /);
    }
    // What start would refuse (the example's credentials on another address), said by config check.
    const published = join(dir, 'published.yaml');
    writeFileSync(published, 'server: {host: 0.0.0.0}\nadmin: {token: example-admin-token-change-me}\n');
    const refused = capture();
    expect(await runCli(['config', 'check', '--config', published], refused.io)).toBe(1);
    expect(refused.err[0]).toMatch(/^chatbridge: /);
  });

  it('an option given twice is bad usage naming it, not the last one silently', async () => {
    // --config a --config b checked b and said OK: a script that meant a learned nothing about it.
    const file = configFile();
    for (const args of [
      ['config', 'check', '--config', '/nonexistent/a.yaml', '--config', file],
      ['config', 'check', `--config=${file}`, '--config', file],
      ['deliveries', 'list', '--state', 'failed', '--state', 'pending', '--config', file],
    ]) {
      const run = capture();
      expect(await runCli(args, run.io), args.join(' ')).toBe(2);
      const flag = args.includes('--state') ? '--state' : '--config';
      expect(run.err[0], args.join(' ')).toBe(`chatbridge: ${flag} given more than once: give it once`);
      expect(run.out).toEqual([]);
    }
  });

  it("a command's options line up: every description starts in one column", async () => {
    // `--destination ID  the destination …` above `--config FILE  the config …` read as a ragged
    // list; each command's option descriptions now start where its longest option ends.
    for (const command of COMMANDS) {
      const run = capture();
      expect(await runCli([...command.name.split(' '), '--help'], run.io), command.name).toBe(0);
      const text = run.out.join('\n').split('\n');
      const options = text.slice(text.indexOf('Options:') + 1);
      const rows = options.slice(0, options.findIndex((line) => !line.startsWith('  --')) >>> 0);
      if (rows.length < 2) continue;
      const columns = rows.map((line) => /^ {2}--\S+(?: \S+)? +/.exec(line)![0].length);
      expect(new Set(columns).size, `${command.name}:\n${rows.join('\n')}`).toBe(1);
    }
  });

  it('--version (or -v) takes nothing after it, and the top help names -v', async () => {
    for (const flag of ['--version', '-v', 'version']) {
      const run = capture();
      expect(await runCli([flag, 'extra'], run.io), flag).toBe(2);
      expect(run.err[0]).toBe(`chatbridge: ${flag} takes nothing after it (got 'extra')`);
      expect(run.out).toEqual([]);
      const plain = capture();
      expect(await runCli([flag], plain.io), flag).toBe(0);
      expect(plain.out[0]).toMatch(/^\d+\.\d+\.\d+/);
    }
    const help = capture();
    expect(await runCli(['--help'], help.io)).toBe(0);
    expect(help.out.join('\n')).toContain('chatbridge --version (or -v) prints the version.');
  });

  it('--help (or -h) with something after it is help on that, or bad usage as --version is, never a silent top help', async () => {
    // `chatbridge --help extra` printed the top help and exited 0 while `--version extra` was bad
    // usage: a typo after --help looked accepted.
    for (const flag of ['--help', '-h']) {
      const run = capture();
      expect(await runCli([flag, 'extra'], run.io), flag).toBe(2);
      expect(run.err).toEqual(["chatbridge: unknown command 'extra'", "Run 'chatbridge --help' for usage."]);
      expect(run.out).toEqual([]);
      // A command after it is that command's help, as `chatbridge help config check` is.
      const command = capture();
      expect(await runCli([flag, 'config', 'check'], command.io), flag).toBe(0);
      expect(command.out.join('\n')).toMatch(/^Usage: chatbridge config check \[--config FILE\]\n/);
    }
    for (const args of [
      ['--help', '-h'],
      ['help', '--help'],
      ['-h', 'help'],
    ]) {
      const twice = capture();
      expect(await runCli(args, twice.io), args.join(' ')).toBe(0);
      expect(twice.out[0]).toMatch(/^Usage: chatbridge <command> \[options\]\n/);
    }
  });

  it("a missing value, an unknown option or a stray operand is said in the CLI's words, on one line", async () => {
    // These were node:util parseArgs' own messages: "Option '--channel <value>' argument missing",
    // "Unknown option '--bogus'", "Unexpected argument 'extra'. This command does not take
    // positional arguments", and a three-line one for `--channel --config x.yaml`.
    const file = configFile();
    const cases: Array<[string[], string]> = [
      [['keys', 'generate', '--channel'], '--channel needs a value: --channel ID'],
      [['keys', 'generate', '--channel', '--config', file], '--channel needs a value: --channel ID'],
      [['config', 'check', '--config'], '--config needs a value: --config FILE'],
      [
        ['sync', 'agents', '--channel', 'app', '--dry-run=yes'],
        '--dry-run takes no value (got --dry-run=yes)',
      ],
      [['config', 'check', '--bogus'], "'config check' has no option --bogus (it takes --config FILE)"],
      [['keys', 'master', '-x'], "'keys master' has no option -x (it takes none)"],
      [
        ['deliveries', 'replay', '--all', '--config', file],
        "'deliveries replay' has no option --all (it takes --id ID, --destination ID, --all-failed, --config FILE)",
      ],
      [['start', 'extra'], "'start' takes no operand (got 'extra')"],
      // What a newcomer tries first: where the port and address come from instead.
      [
        ['start', '--port', '4111'],
        "'start' has no option --port (it takes --role all|web|worker, --config FILE): the port is PORT in the environment (PORT=4111 before the command), else server.port in the config",
      ],
      [
        ['start', '--host=0.0.0.0'],
        "'start' has no option --host (it takes --role all|web|worker, --config FILE): the address is server.host in the config (HOST in the examples)",
      ],
      [
        ['start', '--metrics-port', '9470'],
        "'start' has no option --metrics-port (it takes --role all|web|worker, --config FILE): the metrics port is metrics.port in the config (METRICS_PORT in the example)",
      ],
      [['keys', 'master', 'extra'], "'keys master' takes no operand (got 'extra')"],
    ];
    for (const [args, said] of cases) {
      const run = capture();
      expect(await runCli(args, run.io), args.join(' ')).toBe(2);
      expect(run.err, args.join(' ')).toEqual([`chatbridge: ${said}`, "Run 'chatbridge --help' for usage."]);
      expect(run.out).toEqual([]);
    }
  });

  it("the README's command synopsis is the one --help prints, line for line", async () => {
    // The README wrote `deliveries list [--state S]`, `keys generate|list`, and its own order;
    // --help wrote `[--id ID] [--destination ID] [--all-failed]` for a replay that takes one form
    // or the other, and listed the states in another order than every message about them.
    const help = capture();
    expect(await runCli(['--help'], help.io)).toBe(0);
    const synopsis = help.out
      .join('\n')
      .split('\n')
      .filter((line) => /^ {2}\S/.test(line))
      .map((line) => `chatbridge ${line.trim()}`);
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const block = /\n```\n(chatbridge start[^`]*)```/.exec(readme)?.[1];
    expect(block?.trimEnd().split('\n')).toEqual(synopsis);
    expect(synopsis).toContain(
      'chatbridge deliveries replay --id ID | --destination ID --all-failed [--config FILE]',
    );
    expect(synopsis.join('\n')).toContain('[--state pending|delivered|failed]');
    const replay = capture();
    expect(await runCli(['deliveries', 'replay', '--config', configFile()], replay.io)).toBe(2);
    expect(replay.err[0]).toBe(
      "chatbridge: 'deliveries replay' needs --id ID, or --destination ID --all-failed",
    );
  });

  it('the hint after bad usage names the CLI the way it was run (test/slow/cli.binary.test.ts runs both)', async () => {
    // bin/chatbridge.js as a checkout runs it, and as npm links an installed package's bin.
    expect(programName('/srv/app/bin/chatbridge.js', '/srv/app')).toBe('node bin/chatbridge.js');
    expect(programName('/srv/app/bin/chatbridge.js', '/srv/app/config')).toBe('node ../bin/chatbridge.js');
    expect(programName('/usr/local/bin/chatbridge', '/srv/app')).toBe('chatbridge');
    expect(programName('/srv/app/node_modules/.bin/chatbridge', '/srv/app')).toBe('chatbridge');
    // Windows' npm shims run the installed file itself: still the package's `chatbridge`.
    expect(programName('/srv/app/node_modules/chatbridge/bin/chatbridge.js', '/srv/app')).toBe('chatbridge');
    // runCli from someone's own script (the library), or no script: the package's name.
    expect(programName('/srv/tool/run.js', '/srv/tool')).toBe('chatbridge');
    expect(programName(undefined, '/srv/app')).toBe('chatbridge');
    expect(programName('/srv/my app/bin/chatbridge.js', '/tmp')).toBe("node '/srv/my app/bin/chatbridge.js'");

    const run = capture();
    expect(await runCli(['config', 'chek'], { ...run.io, program: 'node bin/chatbridge.js' })).toBe(2);
    expect(run.err).toEqual([
      "chatbridge: unknown command 'config chek' (did you mean 'config check'?)",
      "Run 'node bin/chatbridge.js --help' for usage.",
    ]);
    const group = capture();
    expect(await runCli(['keys', '--help'], { ...group.io, program: 'node bin/chatbridge.js' })).toBe(0);
    expect(group.out.join('\n')).toContain(
      "Run 'node bin/chatbridge.js keys <command> --help' for a command's options.",
    );
  });

  it('--help names the CLI the way it was run, as its hints and keys list do', async () => {
    // Before, every synopsis said `chatbridge` while the line after it said `node bin/chatbridge.js`:
    // in a checkout, `Usage: chatbridge config check` named a command the newcomer did not have.
    const program = 'node bin/chatbridge.js';
    const top = capture();
    expect(await runCli(['--help'], { ...top.io, program })).toBe(0);
    const text = top.out.join('\n');
    expect(text.split('\n')[0]).toBe('Usage: node bin/chatbridge.js <command> [options]');
    expect(text).toContain('node bin/chatbridge.js help <command> is the same.');
    expect(text).toContain('\nnode bin/chatbridge.js --version (or -v) prints the version.');
    expect(text).not.toMatch(/(^|[^/])chatbridge (<|help|--version)/m);
    const bare = capture();
    expect(await runCli([], { ...bare.io, program })).toBe(2);
    expect(bare.err[0]!.split('\n')[0]).toBe('Usage: node bin/chatbridge.js <command> [options]');
    const command = capture();
    expect(await runCli(['config', 'check', '--help'], { ...command.io, program })).toBe(0);
    expect(command.out.join('\n').split('\n')[0]).toBe(
      'Usage: node bin/chatbridge.js config check [--config FILE]',
    );
    const group = capture();
    expect(await runCli(['keys', '--help'], { ...group.io, program })).toBe(0);
    expect(group.out.join('\n').split('\n')[0]).toBe(
      'Usage: node bin/chatbridge.js keys <command> [options]',
    );
    // Through the package's bin (and when not said): `chatbridge`, as before.
    const installed = capture();
    expect(await runCli(['config', 'check', '--help'], installed.io)).toBe(0);
    expect(installed.out.join('\n').split('\n')[0]).toBe('Usage: chatbridge config check [--config FILE]');
  });
});
