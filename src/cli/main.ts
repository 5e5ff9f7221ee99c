import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { type Bridge, createBridge, type Role } from '../bridge.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import { assertSafeToListen } from '../config/published.js';
import { AppError, ConfigError } from '../errors.js';
import { createLogger } from '../logger.js';
import { defaultRegistry } from '../registry.js';
import type { CliCommand, CliIo } from '../spec/adapter.js';

/**
 * `chatbridge` (DESIGN §5). Exit codes: 0 success, 1 failure (one-line reason on stderr),
 * 2 bad usage. Vendor commands (`keys generate`, `sync agents` ...) come from the channels'
 * adapters, so a new vendor brings its commands without touching this file.
 */
const USAGE = `Usage: chatbridge <command> [options]

Commands:
  start [--config FILE] [--role all|web|worker]   run the bridge (what npm start runs)
  config check [--config FILE]                    validate the config and print every problem
  keys master                                     print a fresh secrets.masterKey (32 bytes, base64)
  keys generate|list|revoke --channel ID [--kid KID]   LiveTex-style attribute keys
  sync agents --channel ID [--dry-run]            run a Chatvisor agent sync now
  deliveries list [--state S] [--destination ID]  outbound deliveries
  deliveries replay --id ID | --destination ID --all-failed

Every command takes --config FILE (else $CHATBRIDGE_CONFIG, config/bridge.yaml, config/bridge.example.yaml)
and --help.`;

class UsageError extends Error {}

export interface CliStreams {
  stdout(line: string): void;
  stderr(line: string): void;
}

const processStreams: CliStreams = {
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
};

function loadOrExplain(configPath: string | undefined, io: CliStreams): LoadedConfig {
  try {
    return loadConfig(configPath, defaultRegistry());
  } catch (error) {
    if (error instanceof ConfigError) {
      io.stderr(error.message);
      for (const issue of error.issues ?? []) io.stderr(`  ${issue.path}: ${issue.message}`);
    }
    throw error;
  }
}

/** Runs the CLI; returns the exit code (start resolves only when the bridge has stopped). */
export async function runCli(argv: string[], io: CliStreams = processStreams): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`chatbridge: ${error.message}`);
      io.stderr(`Run 'chatbridge --help' for usage.`);
      return 2;
    }
    if (error instanceof ConfigError) return 1; // already explained line by line
    const message = error instanceof AppError || error instanceof Error ? error.message : String(error);
    io.stderr(`chatbridge: ${message}`);
    return 1;
  }
}

async function dispatch(argv: string[], io: CliStreams): Promise<number> {
  const [first, second] = argv;
  if (!first || first === '--help' || first === '-h' || first === 'help') {
    io.stdout(USAGE);
    return first ? 0 : 2;
  }
  if (first === 'start') return start(argv.slice(1), io);
  if (first === 'config') {
    if (second !== 'check') throw new UsageError(`unknown command 'config ${second ?? ''}'`.trim());
    return configCheck(argv.slice(2), io);
  }
  if (first === 'keys' && second === 'master') {
    if (argv.includes('--help')) {
      io.stdout(
        'Usage: chatbridge keys master\nPrints a fresh random 32-byte key, base64, for secrets.masterKey.',
      );
      return 0;
    }
    io.stdout(randomBytes(32).toString('base64'));
    return 0;
  }
  if (first === 'deliveries') return deliveries(argv.slice(1), io);
  if (!second || second.startsWith('-')) throw new UsageError(`unknown command '${first}'`);
  return channelCommand(`${first} ${second}`, argv.slice(2), io);
}

async function start(args: string[], io: CliStreams): Promise<number> {
  const { values } = parse(
    args,
    {
      config: { type: 'string' },
      role: { type: 'string', default: 'all' },
    },
    'start [--config FILE] [--role all|web|worker]',
    io,
  );
  if (values.help) return 0;
  const role = values.role as string;
  if (!['all', 'web', 'worker'].includes(role))
    throw new UsageError(`--role must be all, web or worker (got '${role}')`);
  const { config, source } = loadOrExplain(values.config as string | undefined, io);
  const logger = createLogger(config.log.level);
  if (source.isExample) {
    logger.warn(
      { config: source.path },
      'running the EXAMPLE config: copy it to config/bridge.yaml and set your own values',
    );
  }
  assertSafeToListen(config, config.server.host); // before anything connects (issue 10 item 6)
  const bridge = await createBridge({ config, role: role as Role, logger, defaultMetrics: true });
  await bridge.listen();
  await bridge.listenMetrics();
  await bridge.start();
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        return;
      }
      stopping = true;
      logger.info({ signal }, 'stopping: finishing in-flight requests and jobs');
      bridge.close().then(
        () => resolve(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

async function configCheck(args: string[], io: CliStreams): Promise<number> {
  const { values } = parse(args, { config: { type: 'string' } }, 'config check [--config FILE]', io);
  if (values.help) return 0;
  const { config, source } = loadOrExplain(values.config as string | undefined, io);
  io.stdout(
    `${source.path}: OK (${config.channels.length} channel${config.channels.length === 1 ? '' : 's'}, ` +
      `${config.destinations.length} destination${config.destinations.length === 1 ? '' : 's'}, ` +
      `store: ${config.store.redis ? 'redis' : 'in-memory'})`,
  );
  if (source.isExample) io.stderr('note: this is the example config');
  return 0;
}

async function withBridge<T>(
  configPath: string | undefined,
  io: CliStreams,
  run: (bridge: Bridge) => Promise<T>,
): Promise<T> {
  const { config } = loadOrExplain(configPath, io);
  // Commands talk to the same store as the running service; they log only problems.
  const logger = createLogger(config.log.level === 'silent' ? 'silent' : 'warn');
  const bridge = await createBridge({ config, role: 'web', logger });
  try {
    return await run(bridge);
  } finally {
    await bridge.close();
  }
}

async function channelCommand(name: string, args: string[], io: CliStreams): Promise<number> {
  const wantsHelp = args.includes('--help') || args.includes('-h');
  const channelIndex = args.indexOf('--channel');
  const configIndex = args.indexOf('--config');
  const configPath = configIndex >= 0 ? args[configIndex + 1] : undefined;
  const channelId = channelIndex >= 0 ? args[channelIndex + 1] : undefined;
  if (!channelId && !wantsHelp) throw new UsageError(`'${name}' needs --channel ID`);
  return withBridge(configPath, io, async (bridge) => {
    const candidates = channelId
      ? [bridge.channels.get(channelId)].filter((entry) => entry !== undefined)
      : [...bridge.channels.values()];
    if (channelId && candidates.length === 0) throw new UsageError(`no channel '${channelId}' in the config`);
    const command: CliCommand | undefined = candidates
      .flatMap((entry) => entry.runtime.commands ?? [])
      .find((candidate) => candidate.name === name);
    if (!command) {
      throw new UsageError(
        channelId
          ? `channel '${channelId}' has no command '${name}'`
          : `no channel in the config offers '${name}'`,
      );
    }
    const optionSpec = Object.fromEntries(
      Object.entries(command.options ?? {}).map(([option, spec]) => [
        option,
        { type: spec.takesValue ? ('string' as const) : ('boolean' as const) },
      ]),
    );
    const { values } = parse(
      args,
      { ...optionSpec, channel: { type: 'string' }, config: { type: 'string' } },
      `${name} --channel ID`,
      io,
      command,
    );
    if (values.help) return 0;
    const { channel: _channel, config: _config, help: _help, ...options } = values;
    const cliIo: CliIo = { stdout: io.stdout, stderr: io.stderr };
    try {
      await command.run(options as Record<string, string | boolean>, cliIo);
    } catch (error) {
      // A command refusing its options (400) is bad usage: exit 2, like our own parsing errors.
      if (error instanceof AppError && error.status === 400) throw new UsageError(error.message);
      throw error;
    }
    return 0;
  });
}

async function deliveries(args: string[], io: CliStreams): Promise<number> {
  const configIndex = args.indexOf('--config');
  const configPath = configIndex >= 0 ? args[configIndex + 1] : undefined;
  const rest = configIndex >= 0 ? [...args.slice(0, configIndex), ...args.slice(configIndex + 2)] : args;
  const { runDeliveriesCommand } = await import('./deliveries.js');
  return withBridge(configPath, io, (bridge) => runDeliveriesCommand(rest, bridge.delivery, io));
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>;

function parse(args: string[], options: OptionSpec, usage: string, io: CliStreams, command?: CliCommand) {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.values.help) {
    io.stdout(`Usage: chatbridge ${usage}${command ? `\n${command.summary}` : ''}`);
    for (const [name, spec] of Object.entries(command?.options ?? {})) {
      io.stdout(`  --${name}${spec.takesValue ? ' VALUE' : ''}  ${spec.description}`);
    }
  }
  return parsed;
}
