import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename, dirname, join, relative, sep } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Logger, pino } from 'pino';
import { type Bridge, createBridge, type Role } from '../bridge.js';
import { closest } from '../config/closest.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import {
  assertSafeToListen,
  PublishedCredentialsError,
  publishedCredentialsNote,
} from '../config/published.js';
import type { Config } from '../config/schema.js';
import {
  NORMALIZATION_VERSION,
  REINDEX_LOCK,
  reindexContacts,
  storedNormalizationVersion,
} from '../contacts/reindex.js';
import type { CliCommand, CliIo } from '../contracts/adapter.js';
import { AppError, ConfigError } from '../errors.js';
import { createLogger } from '../logger.js';
import { defaultRegistry } from '../registry.js';
import { describeStore } from '../store/connection.js';
import { createStore } from '../store/index.js';
import { lockRenewed } from '../store/renewal.js';
import { tuneV8ForServing } from '../v8-tuning.js';
import { CRM_CHECK_DETAILS, CrmUsageError, crmChoices, crmCheck as runCrmCheck } from './crm.js';
import type { CommandStop } from './deliveries.js';
import { shellOption, shellWord } from './named.js';

/**
 * `chatbridge` (DESIGN §5). Exit codes: 0 success, 1 failure (one-line reason on stderr),
 * 2 bad usage. Results go to stdout; logs, progress and diagnostics to stderr.
 *
 * Commands are one table (`COMMANDS`): a new command is one entry (name, summary, options, run).
 * Groups (`config`, `keys`, `sync`, `deliveries`, ...) are the first words of the names, so their
 * `--help` comes for free. `--help` never reads the config, connects to Redis or builds the bridge.
 * Vendor commands (`keys generate`, `sync agents` ...) are declared by the adapters
 * (AdapterDefinition.commands) and run by the channel's runtime.
 */

export interface CliStreams {
  stdout(line: string): void;
  stderr(line: string): void;
  /**
   * Whether a person reads stderr (a terminal) rather than a log pipeline; as Node's `isTTY`,
   * anything but true is a pipeline. `start` says why it could not start as a JSON log line
   * either way, and in plain words too only to a terminal (see sayFatal).
   */
  stderrIsTTY?: boolean;
  /**
   * Where a long command hears SIGINT (Ctrl-C) and SIGTERM (stopOnSignal): the process, or in a
   * test an emitter of its own, which says the signal without sending one to the test runner.
   */
  signals?: SignalSource;
  /**
   * How the person runs the CLI, for the lines that tell them a command to run (`Run '… --help'
   * for usage.`): `chatbridge` when not said (programName says it for the process's own streams).
   */
  program?: string;
}

/**
 * The CLI as the process was started: `chatbridge` through the package's bin (npm links it as
 * `chatbridge`; Windows' shims run the installed file under node_modules), `node bin/chatbridge.js`
 * (the path from the working directory) in a checkout, where no `chatbridge` is on the PATH and
 * "Run 'chatbridge --help'" named a command the newcomer did not have.
 */
export function programName(script: string | undefined, cwd: string = process.cwd()): string {
  if (script === undefined || basename(script) !== 'chatbridge.js') return 'chatbridge';
  if (script.includes(`${sep}node_modules${sep}`)) return 'chatbridge';
  const path = relative(cwd, script) || script;
  const shown = path.length < script.length ? path : script;
  return `node ${shellWord(shown)}`;
}

/** What stopOnSignal listens on: `process`, or an EventEmitter in tests. */
export interface SignalSource {
  on(event: 'SIGINT' | 'SIGTERM', listener: (signal: NodeJS.Signals) => void): unknown;
  off(event: 'SIGINT' | 'SIGTERM', listener: (signal: NodeJS.Signals) => void): unknown;
}

export interface OptionInfo {
  description: string;
  /** Takes a value (`--channel ID`); otherwise a flag. */
  value?: string;
  required?: boolean;
  /**
   * For a required option left out: what the config offers for it (`crm check`: its CRM
   * destinations), said with the bad-usage message. Read from the config the command would load;
   * a config that does not load only costs the list.
   */
  choices?(loaded: LoadedConfig): string;
}

export type OptionValues = Record<string, string | boolean | undefined>;

export interface Command {
  /** One or two words: `start`, `config check`, `keys generate`. The first word of two is the group. */
  name: string;
  summary: string;
  /** What its --help says after the summary, when one line cannot say it: lines of at most 100. */
  details?: string;
  /** Options besides --config and --help. */
  options?: Record<string, OptionInfo>;
  /**
   * How the options are written in the usage line, when listing each as `[--name VALUE]` would
   * not say it: `--id ID | --destination ID --all-failed` (one form or the other).
   */
  synopsis?: string;
  /** Takes --config FILE (default true). */
  config?: boolean;
  /**
   * Operands after the name (`contacts merge ID OTHER_ID`), each required, in order; they come to
   * `run` in `values` under these names. A command without them refuses any operand.
   */
  operands?: string[];
  /**
   * Works on state the running bridge shares (keys, sync, deliveries; listing them too): refused
   * when the config's store is the in-memory one, which no running bridge would see.
   */
  sharedState?: boolean;
  /**
   * What Ctrl-C (SIGINT) or SIGTERM does to it, for --help, when it stops at a safe point of its
   * own (stopOnSignal) rather than dying where it stands.
   */
  stops?: string;
  /** `values` are the parsed options; `args` the raw ones (without --config). Returns the exit code. */
  run(values: OptionValues, io: CliStreams, args: string[]): Promise<number>;
}

/** Bad usage: exit 2. */
export class UsageError extends Error {}

const processStreams: CliStreams = {
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
  stderrIsTTY: process.stderr.isTTY === true,
  program: programName(process.argv[1]),
};

/** Logs of every command go to stderr: stdout carries only results (`keys generate > key.json`). */
export function cliLogger(level: Parameters<typeof createLogger>[0]) {
  return createLogger(level, pino.destination({ dest: 2, sync: true }));
}

/** Config errors already printed line by line: runCli only sets the exit code for these. */
const explained = new WeakSet<ConfigError>();

// Every CLI error line starts `chatbridge: ` (runCli's, sayPlain's): config check said these bare,
// so a script matching the prefix missed the one failure a newcomer meets first.
function explain(error: ConfigError, io: CliStreams): void {
  io.stderr(`chatbridge: ${error.message}`);
  for (const issue of error.issues ?? []) io.stderr(`  ${issue.path}: ${issue.message}`);
  explained.add(error);
}

export function loadOrExplain(configPath: string | undefined, io: CliStreams): LoadedConfig {
  try {
    return loadConfig(configPath, defaultRegistry());
  } catch (error) {
    if (error instanceof ConfigError) explain(error, io);
    throw error;
  }
}

/**
 * Builds the bridge (web role: no background work) on the config's store, runs `run`, closes.
 * `command.check` sees the loaded config first, so bad usage (an unknown channel) is said
 * before the store: exit 2 whatever the store. With `sharedState`, then refuses the in-memory
 * store before anything runs.
 */
export async function withBridge<T>(
  configPath: string | undefined,
  io: CliStreams,
  command: Pick<Command, 'name' | 'sharedState'> & { check?: (config: Config) => void },
  run: (bridge: Bridge) => Promise<T>,
): Promise<T> {
  const { config, source, warnings } = loadOrExplain(configPath, io);
  command.check?.(config);
  // Commands talk to the same store as the running service; they log only problems.
  const logger = cliLogger(config.log.level === 'silent' ? 'silent' : 'warn');
  for (const warning of warnings)
    logger.warn({ config: source.path, path: warning.path }, `config: ${warning.path}: ${warning.message}`);
  // The store first, quietly: on the in-memory store the one-line refusal is all there is to say.
  const store = await createStore(config.store, logger.child({}, { level: 'error' }));
  if (command.sharedState && store.kind === 'memory') {
    await store.close();
    throw new CliFailure(
      // Said for listing commands too (keys list, deliveries list): they would read an empty store.
      `'${command.name}' refused: ${source.path} uses the in-memory store, which no running bridge shares ` +
        '(this command would work on an empty store of its own, gone when it exits); ' +
        // The example stays on the in-memory store by design (its comment says why): the README's
        // way is a copy with the bridge's Redis, not an edited example.
        (source.isExample
          ? 'copy it to config/bridge.yaml and set store.redis there to the bridge\'s Redis (redis: ${REDIS_URL}; README "Running for real")'
          : "set store.redis in it to the bridge's Redis (e.g. redis: ${REDIS_URL})"),
    );
  }
  const bridge = await createBridge({ config, role: 'web', logger, store });
  try {
    return await run(bridge);
  } finally {
    await bridge.close();
  }
}

/** A failure with a one-line reason: exit 1. */
export class CliFailure extends Error {}

/**
 * SIGINT (Ctrl-C) and SIGTERM for a long command, from now until `dispose`: the first aborts
 * `signal`, and the command stops at a safe point of its own (`sync agents` records where its run
 * stopped and lets go of its lease, `contacts reindex` lets go of its lock, `deliveries replay
 * --all-failed` stops between deliveries), then exits 1 saying so; a second exits at once.
 * Without it the signal killed the process where it stood: a re-index kept its lock for a minute
 * (and the next `contacts reindex` said another instance was re-indexing), a replay stopped
 * without a word of how far it had got.
 */
export function stopOnSignal(name: string, io: CliStreams): CommandStop & { dispose(): void } {
  const source: SignalSource = io.signals ?? process;
  const controller = new AbortController();
  let by: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (by) {
      io.stderr(`chatbridge: ${signal} again: exiting now, without waiting for '${name}' to stop`);
      process.exit(1);
    }
    by = signal;
    io.stderr(`chatbridge: ${signal}: stopping '${name}' at a safe point (${signal} again exits at once)`);
    controller.abort(new Error(`stopped by ${signal}`));
  };
  source.on('SIGINT', onSignal);
  source.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    get by() {
      return by;
    },
    dispose() {
      source.off('SIGINT', onSignal);
      source.off('SIGTERM', onSignal);
    },
  };
}

/** Said in a stoppable command's --help (Command.stops), after what it does when stopped. */
const SECOND_SIGNAL = 'a second one exits at once';

/** Errors `start` has already said (sayFatal): runCli only sets the exit code for these. */
const saidFatal = new WeakSet<object>();

/**
 * Why `start` could not start (the config, Redis unreachable, a port in use): said as a pino JSON
 * line at level fatal (60), like every other line the bridge logs, so a log pipeline that keeps
 * JSON lines by `level` keeps this one too; before, it was only a plain `chatbridge: ...` line,
 * which such a pipeline dropped: the one line that mattered. The plain line(s) as well when a
 * person reads stderr (a terminal). Own logger, not the config's: it is said when the config
 * did not load, and at level fatal whatever level the config logs at.
 *
 * With log.level silent (`level`, when the config loaded) there is no JSON line: silent asks for
 * no log lines, and the JSON line came all the same. The reason still reaches the operator, in
 * the form every other command says its failure in: one plain `chatbridge: …` line (with the
 * config's problems under it), and exit 1. Silent quiets the log, not why the bridge is not running.
 */
function sayFatal(error: unknown, io: CliStreams, level?: string): void {
  if (typeof error === 'object' && error !== null) saidFatal.add(error);
  if (level === 'silent') {
    sayPlain(error, io);
    return;
  }
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      io.stderr(chunk.toString().replace(/\n$/, ''));
      done();
    },
  });
  const message = error instanceof Error ? error.message : String(error);
  const issues = error instanceof AppError ? error.issues : undefined;
  // Our own one-line reasons need no stack; anything else (a Redis error) keeps it.
  const expected =
    error instanceof CliFailure || error instanceof ConfigError || error instanceof PublishedCredentialsError;
  createLogger('fatal', stream).fatal(
    { ...(issues ? { issues } : {}), ...(expected ? {} : { err: error }) },
    message,
  );
  if (io.stderrIsTTY === true) sayPlain(error, io);
}

/** A failure in plain words on stderr (runCli's, and `start`'s to a terminal). */
function sayPlain(error: unknown, io: CliStreams): void {
  if (error instanceof ConfigError) {
    // One raised after the config loaded (building the bridge) has not been said yet.
    if (!explained.has(error)) explain(error, io);
    return;
  }
  const message = error instanceof AppError || error instanceof Error ? error.message : String(error);
  io.stderr(`chatbridge: ${message}`);
}

const start: Command = {
  name: 'start',
  summary: 'Run the bridge (what npm start runs); PORT overrides server.port',
  options: {
    role: {
      value: 'all|web|worker',
      description: 'all (default), web (HTTP only) or worker (background work, ops endpoints only)',
    },
  },
  async run(values, io) {
    const role = (values.role as string | undefined) ?? 'all';
    if (!['all', 'web', 'worker'].includes(role))
      throw new UsageError(`--role must be all, web or worker (got '${role}')`);
    // The config's problems are said in plain words by loadOrExplain only to a terminal.
    const human: CliStreams = io.stderrIsTTY === true ? io : { ...io, stderr: () => {} };
    const loaded: { level?: string } = {};
    try {
      return await startBridge(values, human, role, loaded);
    } catch (error) {
      sayFatal(error, io, loaded.level);
      throw error;
    }
  },
};

async function startBridge(
  values: OptionValues,
  io: CliStreams,
  role: string,
  /** Filled in once the config loaded: the level a failure from here on is said at (sayFatal). */
  loaded: { level?: string },
): Promise<number> {
  // Before the bridge allocates anything it keeps per request (src/v8-tuning.ts says why).
  const v8Flags = tuneV8ForServing();
  const { config, source, warnings, written, portOverride } = loadOrExplain(
    values.config as string | undefined,
    io,
  );
  loaded.level = config.log.level;
  // A split role only works through a store the other instances share: on the in-memory one a
  // web instance acknowledges webhooks whose events no worker will ever deliver (and a restart
  // drops them), and a worker has nothing to work on. Typically REDIS_URL was not set.
  if (role !== 'all' && !config.store.redis && !config.store.sentinel && !config.store.cluster)
    throw new CliFailure(
      `--role ${role} refused: ${source.path} uses the in-memory store, which no ${role === 'web' ? 'worker' : 'web instance'} shares ` +
        `(${role === 'web' ? 'its events would never be delivered' : 'it would have nothing to do'}); ` +
        'set store.redis (or sentinel / cluster) to the Redis of the other instances, or run --role all',
    );
  const logger = cliLogger(config.log.level);
  for (const warning of warnings)
    logger.warn({ config: source.path, path: warning.path }, `config: ${warning.path}: ${warning.message}`);
  if (source.isExample) {
    logger.warn(
      { config: source.path },
      'running the EXAMPLE config: copy it to config/bridge.yaml and set your own values',
    );
  } else {
    // A copy of the example that kept its credentials: allowed on loopback, refused elsewhere.
    const published = publishedCredentialsNote(config, config.server.host);
    if (published) logger.warn({ config: source.path }, published);
  }
  if (v8Flags.length > 0) logger.info({ v8Flags }, 'V8 settings for serving (src/v8-tuning.ts)');
  assertSafeToListen(config, config.server.host); // before anything connects (issue 10 item 6)
  // Signals are ours from here on, not only once start() is done: the main port serves webhooks
  // and /readyz answers 200 before the delivery workers and schedules have started, and a
  // SIGTERM then (a rolling deploy replacing a pod that just came up) killed the process by the
  // signal: exit 143, no log line, requests in flight cut. One that comes during start-up stops
  // the bridge as soon as it is up; a second exits at once, as later. One listener for the whole
  // life, whose target changes: removing a listener and adding another loses a signal that
  // arrived in between (Node drops it with the handle).
  let earlySignal: NodeJS.Signals | undefined;
  let onSignal = (signal: NodeJS.Signals) => {
    if (earlySignal) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    earlySignal = signal;
    logger.info({ signal }, 'stopping as soon as start-up has finished');
  };
  const signalled = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', signalled);
  process.on('SIGINT', signalled);
  const detach = () => {
    process.off('SIGTERM', signalled);
    process.off('SIGINT', signalled);
  };
  let bridge: Awaited<ReturnType<typeof createBridge>> | undefined;
  try {
    bridge = await createBridge({
      config,
      role: role as Role,
      logger,
      defaultMetrics: true,
      configPath: source.path,
    });
    if (!earlySignal) {
      // Where each port came from, named in a failure: the setting, and the environment variable
      // that gave it (the example's ports come from PORT and METRICS_PORT).
      const serverSetting =
        portOverride !== undefined
          ? 'PORT, which overrides server.port'
          : written.has('server.port')
            ? `server.port: ${written.get('server.port')}`
            : 'server.port or PORT';
      const metricsSetting = written.has('metrics.port')
        ? `metrics.port: ${written.get('metrics.port')}`
        : 'metrics.port';
      await explainListen(bridge.listen(), serverSetting, config.server.host, config.server.port);
      await explainListen(bridge.listenMetrics(), metricsSetting, config.metrics.host, config.metrics.port);
      await bridge.start();
    }
  } catch (error) {
    detach();
    // Close what is open (a listener, Redis) so the process exits now, with the reason.
    await bridge?.close().catch(() => undefined);
    throw error;
  }
  const { done, stop } = stopOnSignals(
    bridge as Awaited<ReturnType<typeof createBridge>>,
    logger,
    undefined,
    config.server.shutdownTimeoutMs + SHUTDOWN_CLOSE_MS,
  );
  onSignal = stop;
  if (earlySignal) stop(earlySignal);
  return done;
}

/** What a shutdown gets beyond server.shutdownTimeoutMs to close the queues and the store (see below). */
export const SHUTDOWN_CLOSE_MS = 10_000;

/**
 * SIGTERM/SIGINT: the first stops gracefully (exit 0, or 1 when the shutdown failed); a second
 * exits at once with 1, as the README says. At once means process.exit: whatever the first
 * shutdown still waits for (a request in flight, Redis gone away) keeps the event loop alive,
 * so merely answering 1 left the exit to bin/chatbridge.js's 3-second fallback.
 *
 * The whole shutdown has a deadline (`deadlineMs`: server.shutdownTimeoutMs plus
 * SHUTDOWN_CLOSE_MS when started). Each stage has its own grace (in-flight requests, a running
 * scheduled job, the delivery queues) and with Redis hung they add up: 17 s with the default 10 s
 * and nothing running (measured), another grace with a scheduled job in flight, past a
 * platform's usual 30 s before SIGKILL, which leaves no line saying why. Past the deadline the process says so and
 * exits 1; what was not finished stays in Redis for the next start.
 */
export function stopOnSignals(
  bridge: { close(): Promise<void> },
  logger: Pick<Logger, 'info' | 'warn' | 'error'>,
  exit: (code: number) => void = (code) => process.exit(code),
  deadlineMs?: number,
): { done: Promise<number>; stop: (signal: NodeJS.Signals) => void } {
  let stopping = false;
  let resolve!: (code: number) => void;
  const done = new Promise<number>((settle) => {
    resolve = settle;
  });
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      exit(1);
      resolve(1);
      return;
    }
    stopping = true;
    logger.info({ signal }, 'stopping: finishing in-flight requests and jobs');
    const deadline =
      deadlineMs === undefined
        ? undefined
        : setTimeout(() => {
            logger.error(
              { deadlineMs },
              `shutdown did not finish within ${deadlineMs} ms (server.shutdownTimeoutMs + ${SHUTDOWN_CLOSE_MS / 1000} s): exiting now; unfinished jobs stay in the store for the next start`,
            );
            exit(1);
            resolve(1);
          }, deadlineMs);
    // The deadline must not keep a finished process alive on its own.
    deadline?.unref?.();
    bridge.close().then(
      () => {
        clearTimeout(deadline);
        resolve(0);
      },
      (error: unknown) => {
        clearTimeout(deadline);
        logger.error({ err: error }, 'shutdown failed');
        resolve(1);
      },
    );
  };
  return { done, stop };
}

/**
 * A listener that cannot bind is an ordinary mistake (a second instance, a busy port): say which
 * listener and which setting, in one line, instead of Node's bare `listen EADDRINUSE ...`.
 */
async function explainListen<T>(
  listening: Promise<T>,
  setting: string,
  host: string,
  port: number | undefined,
): Promise<T> {
  try {
    return await listening;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const where = `${host}:${port} (${setting})`;
    if (code === 'EADDRINUSE')
      throw new CliFailure(
        `cannot listen on ${where}: the port is in use by another process; choose another`,
      );
    if (code === 'EACCES')
      throw new CliFailure(`cannot listen on ${where}: permission denied (ports below 1024 need privileges)`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN')
      throw new CliFailure(`cannot listen on ${where}: no such address on this machine`);
    throw error;
  }
}

const configCheck: Command = {
  name: 'config check',
  summary: 'Validate the config and print every problem with its path (all at once)',
  async run(values, io) {
    const { config, source, warnings } = loadOrExplain(values.config as string | undefined, io);
    try {
      // What `start` would refuse is a problem of the config too (issue 10 item 6).
      assertSafeToListen(config, config.server.host);
    } catch (error) {
      if (!(error instanceof PublishedCredentialsError)) throw error;
      io.stderr(`chatbridge: ${source.path}: ${error.message}`);
      for (const issue of error.issues ?? []) io.stderr(`  ${issue.path}: ${issue.message}`);
      return 1;
    }
    io.stdout(
      `${source.path}: OK (${config.channels.length} channel${config.channels.length === 1 ? '' : 's'}, ` +
        `${config.destinations.length} destination${config.destinations.length === 1 ? '' : 's'}, ` +
        `store: ${config.store.redis ? 'redis' : config.store.sentinel ? 'sentinel' : config.store.cluster ? 'cluster' : 'in-memory'})`,
    );
    io.stdout(`store: ${describeStore(config.store)}`);
    for (const warning of warnings) io.stderr(`warning: ${warning.path}: ${warning.message}`);
    if (source.isExample) io.stderr('note: this is the example config');
    else {
      const published = publishedCredentialsNote(config, config.server.host);
      if (published) io.stderr(`note: ${published}`);
    }
    return 0;
  },
};

const keysMaster: Command = {
  name: 'keys master',
  summary: 'Print a fresh random 32-byte key, base64, for secrets.masterKey',
  config: false,
  async run(_values, io) {
    io.stdout(randomBytes(32).toString('base64'));
    return 0;
  },
};

function deliveryCommand(
  name: 'list' | 'replay',
  summary: string,
  options: Record<string, OptionInfo>,
  stops: string,
  synopsis?: string,
): Command {
  const command: Command = {
    name: `deliveries ${name}`,
    summary,
    options,
    stops,
    ...(synopsis === undefined ? {} : { synopsis }),
    sharedState: true,
    async run(values, io, args) {
      const { isDeliveriesUsageError, parseDeliveriesArgs, runDeliveriesRequest } = await import(
        './deliveries.js'
      );
      // Options first: bad usage is exit 2 whatever the store (the in-memory refusal is exit 1).
      let request: ReturnType<typeof parseDeliveriesArgs>;
      try {
        request = parseDeliveriesArgs([name, ...args]);
      } catch (error) {
        if (isDeliveriesUsageError(error)) throw new UsageError((error as Error).message);
        throw error;
      }
      // Replaying a destination the config does not have is bad usage, like an unknown channel:
      // said before the store (exit 2). Listing one is not: deliveries to a destination taken
      // out of the config stay in the store (README) and may be looked at.
      const check = (config: Config) => {
        if (request.command === 'replay failed') checkDestination(request.destination, config);
      };
      return withBridge(values.config as string | undefined, io, { ...command, check }, async (bridge) => {
        const stop = stopOnSignal(command.name, io);
        try {
          return await runDeliveriesRequest(request, bridge.delivery, io, stop);
        } finally {
          stop.dispose();
        }
      });
    },
  };
  return command;
}

/** Vendor commands: declared by the adapters, run by the chosen channel's runtime. */
function vendorCommands(): Command[] {
  const byName = new Map<string, Command>();
  for (const adapter of defaultRegistry().list) {
    for (const info of adapter.commands ?? []) {
      if (byName.has(info.name)) continue;
      const options: Record<string, OptionInfo> = {
        channel: { value: 'ID', description: 'the channel (its id in the config)', required: true },
      };
      for (const [option, spec] of Object.entries(info.options ?? {})) {
        options[option] = {
          description: spec.description,
          ...(spec.takesValue ? { value: option.toUpperCase() } : {}),
          ...(spec.required ? { required: true } : {}),
        };
      }
      byName.set(info.name, {
        name: info.name,
        summary: info.summary,
        options,
        ...(info.stops === undefined ? {} : { stops: info.stops }),
        sharedState: true,
        run: (values, io) => runChannelCommand(info.name, values, io),
      });
    }
  }
  return [...byName.values()];
}

/** An unknown destination is bad usage (exit 2, DESIGN §5), like an unknown channel. */
export function checkDestination(destinationId: string, config: Config): void {
  if (!config.destinations.some((destination) => destination.id === destinationId))
    throw new UsageError(
      `no destination '${destinationId}' in the config (have: ${config.destinations.map((item) => item.id).join(', ') || 'none'})`,
    );
}

/** An unknown channel, or one whose vendor has no such command, is bad usage: said before the store. */
function checkChannelCommand(name: string, channelId: string, config: Config): void {
  const has = (vendor: string) =>
    (defaultRegistry().get(vendor)?.commands ?? []).some((command) => command.name === name);
  // Which channels would do, as for an unknown destination: the id to give is in the answer.
  const fitting = `(channels with '${name}': ${
    config.channels
      .filter((candidate) => has(candidate.vendor))
      .map((candidate) => candidate.id)
      .join(', ') || 'none'
  })`;
  const channel = config.channels.find((candidate) => candidate.id === channelId);
  if (!channel) throw new UsageError(`no channel '${channelId}' in the config ${fitting}`);
  if (!has(channel.vendor))
    throw new UsageError(`channel '${channelId}' (${channel.vendor}) has no command '${name}' ${fitting}`);
}

async function runChannelCommand(name: string, values: OptionValues, io: CliStreams): Promise<number> {
  const channelId = values.channel as string;
  const configPath = values.config as string | undefined;
  const check = (config: Config) => checkChannelCommand(name, channelId, config);
  return withBridge(configPath, io, { name, sharedState: true, check }, async (bridge) => {
    const entry = bridge.channels.get(channelId);
    if (!entry) throw new UsageError(`no channel '${channelId}' in the config`);
    const command: CliCommand | undefined = (entry.runtime.commands ?? []).find(
      (candidate) => candidate.name === name,
    );
    if (!command)
      throw new UsageError(`channel '${channelId}' (${entry.config.vendor}) has no command '${name}'`);
    const { channel: _channel, config: _config, help: _help, ...options } = values;
    // SIGINT/SIGTERM stop the command at a safe point (`sync agents` records where its run
    // stopped and lets go of its lease, as a run its instance stops does), and it exits 1 saying
    // so; a second signal exits at once. Before, the signal killed the process mid-write, and the
    // run read `running` until its lease lapsed (a minute), refusing every other run meanwhile.
    const stop = stopOnSignal(name, io);
    const cliIo: CliIo = {
      stdout: io.stdout,
      stderr: io.stderr,
      signal: stop.signal,
      command: (words) =>
        `${io.program ?? 'chatbridge'} ${words}${configPath === undefined ? '' : ` ${shellOption('config', configPath)}`}`,
    };
    try {
      await command.run(options as Record<string, string | boolean>, cliIo);
    } catch (error) {
      if (stop.by)
        throw new CliFailure(
          `'${name}' stopped by ${stop.by}: ${error instanceof Error ? error.message : String(error)}`,
        );
      // A command refusing its options (400) is bad usage: exit 2, like our own parsing errors.
      if (error instanceof AppError && error.status === 400) throw new UsageError(error.message);
      throw error;
    } finally {
      stop.dispose();
    }
    return 0;
  });
}

/** Every command. Add one entry here for a new command; its group's --help lists it. */
const crmCheck: Command = {
  name: 'crm check',
  summary: 'Call a CRM destination once (account, pipelines, users) and print what its mapping will use',
  options: {
    destination: {
      value: 'ID',
      description: 'the destination (its id in the config; kind: amocrm or bitrix24)',
      required: true,
      choices: crmChoices,
    },
  },
  details: CRM_CHECK_DETAILS,
  async run(values, io) {
    try {
      return await runCrmCheck(String(values.destination), values.config as string | undefined, io, (path) =>
        loadOrExplain(path, io),
      );
    } catch (error) {
      if (error instanceof CrmUsageError) throw new UsageError(error.message);
      throw error;
    }
  },
};

const contactsReindex: Command = {
  name: 'contacts reindex',
  summary:
    "Give stored contacts the keys of the current identifier rules and put every name in the name search (a worker's start does it once by itself); progress on stderr, summary JSON on stdout",
  options: {
    'dry-run': { description: 'only count what would change: nothing is written' },
  },
  stops:
    'it stops between records (what is done stays done), lets go of the re-index lock, prints its summary so far and exits 1; run it again to finish',
  sharedState: true,
  async run(values, io) {
    const dryRun = values['dry-run'] === true;
    return withBridge(values.config as string | undefined, io, contactsReindex, async (bridge) => {
      // Before the lock: a signal from here on stops the pass and lets the lock go (below).
      const stop = stopOnSignal(contactsReindex.name, io);
      try {
        return await reindexOnce(bridge, io, dryRun, stop);
      } finally {
        stop.dispose();
      }
    });
  },
};

async function reindexOnce(
  bridge: Bridge,
  io: CliStreams,
  dryRun: boolean,
  stop: ReturnType<typeof stopOnSignal>,
): Promise<number> {
  const { store, config } = bridge;
  const stored = await storedNormalizationVersion(store);
  if (stored > NORMALIZATION_VERSION)
    throw new CliFailure(
      `the contacts' keys follow identifier rules version ${stored}, newer than this chatbridge's (${NORMALIZATION_VERSION}): run the newer version's command`,
    );
  // One pass at a time: a worker's start-up pass holds the same lock.
  const controller = new AbortController();
  // Asked to stop (Ctrl-C): the pass stops between records, as when its lock is lost.
  if (stop.signal.aborted) controller.abort();
  else stop.signal.addEventListener('abort', () => controller.abort(), { once: true });
  const lock = dryRun
    ? null
    : await lockRenewed(store, REINDEX_LOCK, 60_000, {
        onRenewError: (error) => io.stderr(`chatbridge: could not renew the re-index lock: ${String(error)}`),
        onLost: () => controller.abort(),
      });
  if (!dryRun && lock === null)
    throw new CliFailure(
      'another instance is re-indexing the contacts now (a worker does it once when it starts): wait until its log says "contact re-index: done", then run this again to check',
    );
  // A line when there is news: SCAN walks the whole database a page at a time, and a page of
  // other keys only (no contacts yet, on a Redis the queue or another app shares) read no
  // record, so the same "0 records read" line came once per page.
  let said: string | undefined;
  try {
    const report = await reindexContacts({
      store,
      identity: config.identity,
      timelineRetention: config.limits.timelineRetention,
      dryRun,
      signal: controller.signal,
      onProgress: (progress) => {
        const line = `${progress.records} record${progress.records === 1 ? '' : 's'} read, ${progress.changed} ${dryRun ? 'would change' : 'changed'}, ${progress.namesIndexed} ${dryRun ? 'would be found by name' : 'found by name now'}`;
        if (line !== said) io.stderr(line);
        said = line;
      },
    });
    io.stdout(JSON.stringify(report));
    if (report.conflicts > 0)
      io.stderr(
        `${report.conflicts} identifier(s) ${dryRun ? 'would take' : 'took'} the key of another contact: not merged, ${dryRun ? 'would be ' : ''}listed in GET /api/v1/identity/conflicts (reason renormalized) for staff to decide`,
      );
    if (!report.complete && stop.by)
      throw new CliFailure(
        `'contacts reindex' stopped by ${stop.by} after ${report.records} record${report.records === 1 ? '' : 's'} read (${report.changed} ${dryRun ? 'would change' : 'changed'}); what is done stays done${dryRun ? '' : ' and the lock is let go'}: run it again to finish`,
      );
    if (!report.complete)
      throw new CliFailure('the re-index was stopped before the end (its lock was lost); run it again');
    if (report.busy > 0)
      throw new CliFailure(
        `${report.busy} record(s) kept changing while being re-indexed and were left as they were; run it again`,
      );
    return 0;
  } finally {
    await lock?.release();
  }
}

const contactsMerge: Command = {
  name: 'contacts merge',
  summary:
    'Merge two contacts by hand (an identity conflict staff decided), as POST /api/v1/contacts/:id/merge does; the merged contact as JSON on stdout',
  operands: ['ID', 'OTHER_ID'],
  sharedState: true,
  async run(values, io) {
    return withBridge(values.config as string | undefined, io, contactsMerge, async (bridge) => {
      const merged = await bridge.context.contacts.mergeContacts(
        String(values.ID),
        String(values.OTHER_ID),
        'cli',
      );
      io.stdout(JSON.stringify(merged));
      return 0;
    });
  },
};

export const COMMANDS: Command[] = [
  start,
  configCheck,
  keysMaster,
  ...vendorCommands(),
  crmCheck,
  contactsReindex,
  contactsMerge,
  deliveryCommand(
    'list',
    'List outbound deliveries (one per line; JSON lines with --json)',
    {
      state: { value: 'pending|delivered|failed', description: 'only deliveries in this state' },
      destination: { value: 'ID', description: 'only deliveries to this destination' },
      limit: { value: 'N', description: 'at most N deliveries (1–500; default 50), or N a page with --all' },
      before: { value: 'CURSOR', description: 'the next page: the cursor the previous list printed' },
      all: { description: 'every page, one after the other' },
      json: { description: 'one JSON object per line' },
    },
    'with --all it stops between pages, says the --before cursor to go on from, and exits 1',
  ),
  deliveryCommand(
    'replay',
    'Deliver again: one delivery (--id), or every failed one of a destination',
    {
      id: { value: 'ID', description: 'the delivery to replay' },
      destination: { value: 'ID', description: 'with --all-failed: the destination' },
      'all-failed': { description: 'replay every failed delivery of --destination' },
    },
    'with --all-failed it stops between deliveries: the ones replayed are on stdout, the rest stay failed, one line says how many; exits 1 (run it again for the rest)',
    '--id ID | --destination ID --all-failed',
  ),
];

function version(): string {
  // src/cli (tests) or dist/src/cli (built): the package.json is the first one above.
  let directory = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 5; depth++) {
    try {
      const json = JSON.parse(readFileSync(join(directory, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (json.name === 'chatbridge' && json.version) return json.version;
    } catch {
      // not here: look one level up
    }
    directory = dirname(directory);
  }
  return 'unknown';
}

function optionsText(command: Command): string {
  const parts = [...(command.operands ?? [])];
  if (command.synopsis !== undefined) parts.push(command.synopsis);
  else
    parts.push(
      ...Object.entries(command.options ?? {}).map(([name, info]) => {
        const text = `--${name}${info.value ? ` ${info.value}` : ''}`;
        return info.required ? text : `[${text}]`;
      }),
    );
  if (command.config !== false) parts.push('[--config FILE]');
  return parts.join(' ');
}

function usage(commands: readonly Command[]): string {
  const lines = commands.map((command) => {
    const head = `  ${command.name} ${optionsText(command)}`.trimEnd();
    return `${head}\n      ${command.summary}`;
  });
  return lines.join('\n');
}

/**
 * The help texts name the CLI as it was run (`program`), as the hint after bad usage and the
 * commands' own texts do: in a checkout, `Usage: chatbridge config check` named a command the
 * newcomer did not have, one line above `Run 'node bin/chatbridge.js --help'`.
 */
function topUsage(program: string): string {
  return `Usage: ${program} <command> [options]

Commands:
${usage(COMMANDS)}

Options everywhere: --help or -h (the text of a command or group); ${program} help <command> is the same.
${program} --version (or -v) prints the version.
--config FILE defaults to $CHATBRIDGE_CONFIG, then config/bridge.yaml, then config/bridge.example.yaml.
Results go to stdout; logs and progress to stderr. Exit 0 ok, 1 failure, 2 bad usage.`;
}

function commandHelp(command: Command, program: string): string {
  const lines = [`Usage: ${program} ${command.name} ${optionsText(command)}`.trimEnd(), '', command.summary];
  if (command.details !== undefined) lines.push('', command.details);
  const options = Object.entries(command.options ?? {});
  if (options.length > 0 || command.config !== false) {
    lines.push('', 'Options:');
    const rows: Array<[string, string]> = options.map(([name, info]) => [
      `--${name}${info.value ? ` ${info.value}` : ''}`,
      `${info.description}${info.required ? ' (required)' : ''}`,
    ]);
    if (command.config !== false)
      rows.push(['--config FILE', 'the config (else $CHATBRIDGE_CONFIG, config/bridge.yaml, the example)']);
    // Descriptions in one column, where the longest option ends.
    const width = Math.max(...rows.map(([option]) => option.length));
    for (const [option, description] of rows) lines.push(`  ${option.padEnd(width)}  ${description}`);
  }
  if (command.stops !== undefined)
    lines.push('', `Ctrl-C (SIGINT) or SIGTERM: ${command.stops}; ${SECOND_SIGNAL}.`);
  if (command.sharedState)
    lines.push('', 'Works on state the running bridge shares: refused on an in-memory store config.');
  return lines.join('\n');
}

const isHelp = (arg: string | undefined) => arg === '--help' || arg === '-h';

/** Runs the CLI; returns the exit code (start resolves only when the bridge has stopped). */
export async function runCli(argv: string[], io: CliStreams = processStreams): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`chatbridge: ${error.message}`);
      io.stderr(`Run '${io.program ?? 'chatbridge'} --help' for usage.`);
      return 2;
    }
    if (typeof error === 'object' && error !== null && saidFatal.has(error)) return 1;
    sayPlain(error, io);
    return 1;
  }
}

async function dispatch(argv: string[], io: CliStreams): Promise<number> {
  const [first, second] = argv;
  const program = io.program ?? 'chatbridge';
  if (first === undefined) {
    io.stderr(topUsage(program));
    return 2;
  }
  if ((isHelp(first) || first === 'help') && second === undefined) {
    io.stdout(topUsage(program));
    return 0;
  }
  // `chatbridge help config check` is `chatbridge config check --help` (a group's too), and so is
  // `chatbridge --help config check`: what follows --help was dropped for the top help, exit 0,
  // so `--help extra` looked accepted while `--version extra` was bad usage. An unknown word is
  // now an unknown command, as after `help`.
  // (A second --help is dropped: `--help -h` would otherwise come back here for ever.)
  if (first === 'help' || isHelp(first))
    return dispatch([...argv.slice(1).filter((arg) => !isHelp(arg)), '--help'], io);
  if (first === '--version' || first === '-v' || first === 'version') {
    // Anything after it was ignored: `chatbridge --version check` looked as if it had done more.
    if (second !== undefined) throw new UsageError(`${first} takes nothing after it (got '${second}')`);
    io.stdout(version());
    return 0;
  }
  const command =
    (second !== undefined
      ? COMMANDS.find((candidate) => candidate.name === `${first} ${second}`)
      : undefined) ?? COMMANDS.find((candidate) => candidate.name === first);
  if (!command) {
    const group = COMMANDS.filter((candidate) => candidate.name.startsWith(`${first} `));
    if (group.length === 0) throw new UsageError(`unknown command '${first}'${meant(first, second)}`);
    const text = `Usage: ${program} ${first} <command> [options]\n\nCommands:\n${usage(group)}\n\nRun '${program} ${first} <command> --help' for a command's options.`;
    if (isHelp(second)) {
      io.stdout(text);
      return 0;
    }
    if (second === undefined) {
      io.stderr(text);
      return 2;
    }
    throw new UsageError(`unknown command '${first} ${second}'${meant(first, second)}`);
  }
  const args = argv.slice(command.name.split(' ').length);
  if (args.some(isHelp)) {
    io.stdout(commandHelp(command, program));
    return 0;
  }
  const values = parseOptions(command, args);
  // `--config ""` (an unset variable in a script: --config "$FILE") would silently fall back to
  // CHATBRIDGE_CONFIG, config/bridge.yaml or the example.
  if (values.config === '') throw new UsageError('--config needs a file name (got an empty one)');
  for (const [name, info] of Object.entries(command.options ?? {})) {
    if (info.required && (values[name] === undefined || values[name] === ''))
      throw new UsageError(
        `'${command.name}' needs --${name}${info.value ? ` ${info.value}` : ''}${choicesOf(info, values.config, program)}`,
      );
  }
  return command.run(values, io, withoutConfig(args));
}

/**
 * ` (did you mean '<command>'?)` for a mistyped command, as a mistyped config key or option says
 * (config/closest.ts): the two words together first (`confg check`, `config chek`), then the
 * first word alone among the commands and groups (`strat`, `key`); '' when nothing is close.
 */
function meant(first: string, second: string | undefined): string {
  const names = COMMANDS.map((candidate) => candidate.name);
  const both =
    second !== undefined && !second.startsWith('-') ? closest(`${first} ${second}`, names) : undefined;
  const guess = both ?? closest(first, [...new Set(names.map((name) => name.split(' ')[0]!))]);
  // Not the group itself back (`config bogus`: config is right, its command is not close to any).
  return guess && guess !== first ? ` (did you mean '${guess}'?)` : '';
}

/** ': <what would do>' for a missing option that can say it (OptionInfo.choices), else ''. */
function choicesOf(info: OptionInfo, configPath: string | boolean | undefined, program: string): string {
  if (!info.choices) return '';
  try {
    return `: ${info.choices(loadConfig(typeof configPath === 'string' ? configPath : undefined, defaultRegistry()))}`;
  } catch {
    // Bad usage is said first and alone (exit 2); the config's own problems are config check's.
    // On the file it read: `config check` alone reads the default config, which may load.
    const file = typeof configPath === 'string' ? ` ${shellOption('config', configPath)}` : '';
    return ` (the config does not load, so what it offers is not listed: ${program} config check${file} says why)`;
  }
}

function parseOptions(command: Command, args: string[]): OptionValues {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [name, info] of Object.entries(command.options ?? {}))
    options[name] = { type: info.value ? 'string' : 'boolean' };
  if (command.config !== false) options.config = { type: 'string' };
  const operands = command.operands ?? [];
  let parsed: {
    values: OptionValues;
    positionals: string[];
    tokens: { kind: string; name?: string; rawName?: string }[];
  };
  try {
    parsed = parseArgs({
      args,
      options,
      strict: true,
      allowPositionals: operands.length > 0,
      tokens: true,
    }) as typeof parsed;
  } catch (error) {
    throw new UsageError(parseArgsProblem(command, args, error as Error & { code?: string }));
  }
  // parseArgs keeps the last of a repeated option: --config a --config b checked b alone and
  // said OK, and the script that meant a never learned. An option that takes a value is given once.
  const given = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option' || token.name === undefined || options[token.name]?.type !== 'string')
      continue;
    if (given.has(token.name)) throw new UsageError(`--${token.name} given more than once: give it once`);
    given.add(token.name);
  }
  if (parsed.positionals.length !== operands.length)
    throw new UsageError(
      `'${command.name}' takes ${operands.join(' ')} (got ${parsed.positionals.length} operand${parsed.positionals.length === 1 ? '' : 's'})`,
    );
  const values: OptionValues = { ...parsed.values };
  operands.forEach((name, index) => {
    values[name] = parsed.positionals[index];
  });
  return values;
}

/**
 * node:util parseArgs' refusal in the CLI's words, on one line: its own read "Option '--channel
 * <value>' argument missing", "Unknown option '--bogus'", "Unexpected argument 'extra'. This
 * command does not take positional arguments", and three lines for `--channel --config x.yaml`.
 * Its messages carry the option only as text: one not recognised here is passed on as it was.
 */
function parseArgsProblem(command: Command, args: string[], error: Error & { code?: string }): string {
  const message = error.message;
  const taken = Object.entries(command.options ?? {}).map(
    ([name, info]) => `--${name}${info.value ? ` ${info.value}` : ''}`,
  );
  if (command.config !== false) taken.push('--config FILE');
  const option = /^(?:Option|Unknown option) '(-[^' ]+)/.exec(message)?.[1];
  switch (error.code) {
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      if (option === undefined) break;
      const name = option.replace(/^-+/, '');
      if (/does not take an argument/.test(message)) {
        const given = args.find((arg) => arg.startsWith(`${option}=`));
        return `${option} takes no value${given === undefined ? '' : ` (got ${given})`}`;
      }
      const value = name === 'config' ? 'FILE' : command.options?.[name]?.value;
      return `${option} needs a value${value ? `: ${option} ${value}` : ''}`;
    }
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      if (option === undefined) break;
      return `'${command.name}' has no option ${option} (it takes ${taken.length > 0 ? taken.join(', ') : 'none'})${
        command.name === 'start' ? startSettingHint(option, args) : ''
      }`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const operand = /^Unexpected argument '([^']*)'/.exec(message)?.[1];
      if (operand === undefined) break;
      return `'${command.name}' takes no operand (got '${operand}')`;
    }
  }
  return message.split('\n')[0]!;
}

/**
 * `start --port 4111`, a newcomer's first guess, was told only which options `start` takes: the
 * port, address and metrics port are settings (and the port an environment variable) instead.
 */
function startSettingHint(option: string, args: string[]): string {
  if (option === '--port') {
    const at = args.findIndex((arg) => arg === '--port' || arg.startsWith('--port='));
    const given =
      at === -1 ? undefined : args[at]!.includes('=') ? args[at]!.slice('--port='.length) : args[at + 1];
    const port = given !== undefined && /^\d{1,5}$/.test(given) ? given : '<port>';
    return `: the port is PORT in the environment (PORT=${port} before the command), else server.port in the config`;
  }
  if (option === '--host') return ': the address is server.host in the config (HOST in the examples)';
  if (option === '--metrics-port')
    return ': the metrics port is metrics.port in the config (METRICS_PORT in the example)';
  return '';
}

function withoutConfig(args: string[]): string[] {
  const out: string[] = [];
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    if (arg === '--config') index++;
    else if (!arg.startsWith('--config=')) out.push(arg);
  }
  return out;
}
