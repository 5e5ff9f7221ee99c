import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import type { ConnectorDefinition } from '../contracts/connector.js';
import { ConfigError, type ErrorIssue, formatPath } from '../errors.js';
import { deepFreeze } from '../freeze.js';
import type { AdapterRegistry } from '../registry.js';
import { configIssues, keysOfSchema } from './issues.js';
import {
  type Config,
  configSchema,
  crmDestinationSchema,
  isCrmDestination,
  webhookDestinationSchema,
} from './schema.js';

/**
 * Config loading (DESIGN §3): find the file, read YAML, substitute ${VAR} / ${VAR:-default}
 * from the environment, apply PORT, validate with zod (the core schema and, independently of it,
 * each channel against its adapter's schema, duplicate ids, unknown vendors, cross-references),
 * report every problem with its path in one pass, freeze.
 */

export const EXAMPLE_CONFIG = 'config/bridge.example.yaml';
export const DEFAULT_CONFIG = 'config/bridge.yaml';

export interface ConfigSource {
  path: string;
  /** The shipped example, however it was chosen: the service warns that it is running it. */
  isExample: boolean;
  /** How it was chosen: --config, CHATBRIDGE_CONFIG, the default file or the example. */
  origin: 'flag' | 'env' | 'default' | 'example';
}

/** Resolution order: --config FILE, CHATBRIDGE_CONFIG, config/bridge.yaml, config/bridge.example.yaml. */
export function resolveConfigPath(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): ConfigSource {
  const source = (path: string, origin: ConfigSource['origin']): ConfigSource => ({
    path,
    origin,
    isExample: basename(path) === basename(EXAMPLE_CONFIG),
  });
  if (flag) return source(resolve(cwd, flag), 'flag');
  if (env.CHATBRIDGE_CONFIG) return source(resolve(cwd, env.CHATBRIDGE_CONFIG), 'env');
  const preferred = resolve(cwd, DEFAULT_CONFIG);
  if (existsSync(preferred)) return source(preferred, 'default');
  return source(resolve(cwd, EXAMPLE_CONFIG), 'example');
}

/** What may stand between `${` and `}`: a name, optionally `:-` and a default. */
const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/** A run of `$` before `{`: `$$` stands for one `$`, and an odd one left over opens `${…}`. */
const OPENING = /(\$+)\{/g;

/**
 * Replace ${VAR} and ${VAR:-default} in every string of the parsed document. Every `${` of the
 * file must be one of these: an unclosed one or one with no valid name (`${1X}`, `${A-B}`,
 * `${X:abc}`) was left in the value as written, silently. Substituted values are not read again.
 *
 * `$${` is a literal `${` (docker-compose's escape): without it a value could not hold `${` at
 * all (a header, a template). Only a run of `$` right before `{` is read that way, two `$` for
 * one, so `$$${X}` is `$` and X's value; `$` and `$$` anywhere else are kept as written, as they
 * always were (a password holding `$$` means what it says).
 */
export function substituteEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  issues: ErrorIssue[],
  path: (string | number)[] = [],
): unknown {
  if (typeof value === 'string') {
    let out = '';
    let at = 0;
    const opening = new RegExp(OPENING);
    for (let match = opening.exec(value); match !== null; match = opening.exec(value)) {
      const dollars = (match[1] ?? '').length;
      out += value.slice(at, match.index) + '$'.repeat(Math.floor(dollars / 2));
      at = match.index + match[0].length;
      if (dollars % 2 === 0) {
        out += '{';
        continue;
      }
      const reference = value.slice(match.index + dollars - 1);
      const end = value.indexOf('}', at);
      if (end === -1) {
        issues.push({
          path: formatPath(path),
          message: `"${reference}" has no closing }: write \${NAME} or \${NAME:-default} ($\${ for a literal \${)`,
        });
        at = value.length;
        break;
      }
      const inside = value.slice(at, end);
      at = end + 1;
      opening.lastIndex = at;
      const parsed = REFERENCE.exec(inside);
      if (!parsed) {
        issues.push({
          path: formatPath(path),
          message: `"\${${inside}}" is not a variable reference: write \${NAME} or \${NAME:-default} (NAME: letters, digits and _, not starting with a digit; $\${ for a literal \${)`,
        });
        continue;
      }
      const [, name = '', fallback] = parsed;
      const found = env[name];
      if (found !== undefined && found !== '') out += found;
      else if (fallback !== undefined) out += fallback;
      else
        issues.push({
          path: formatPath(path),
          // Set but empty is not "not set": an empty export (X= in a .env file) is a common slip.
          message:
            found === undefined
              ? `environment variable ${name} is not set (write \${${name}:-} to allow empty)`
              : `environment variable ${name} is set but empty, and a value is required here (write \${${name}:-} to allow empty)`,
        });
    }
    const replaced = out + value.slice(at);
    // A whole-value substitution that gives a number (port: ${PORT:-3000}) stays a string here;
    // numeric fields accept numeric strings.
    return replaced;
  }
  if (Array.isArray(value))
    return value.map((item, index) => substituteEnv(item, env, issues, [...path, index]));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value))
      out[key] = substituteEnv(item, env, issues, [...path, key]);
    return out;
  }
  return value;
}

/**
 * Keys renamed, as [where, old name, new name]: the old name is still taken as the new one, with a
 * warning naming the new one; both at once is a problem (which one was meant?).
 */
const RENAMED_KEYS: readonly (readonly [readonly string[], string, string])[] = [
  // Named when it was counted per instance; on Redis it is the bridge-wide ceiling.
  [['limits', 'rate'], 'adminAuthFailuresPerInstance', 'adminAuthFailuresCeiling'],
];

/**
 * The document with each renamed key under its new name (RENAMED_KEYS). A warning per old name
 * used; an issue per old name given next to its new one (the old one is then dropped, so the
 * schema does not call it unknown as well).
 */
function renameKeys(document: unknown, issues: ErrorIssue[], warnings: ErrorIssue[]): unknown {
  if (!isObject(document)) return document;
  let out = document;
  for (const [where, from, to] of RENAMED_KEYS) {
    const parents: Record<string, unknown>[] = [out];
    for (const name of where) {
      const child = parents[parents.length - 1]![name];
      if (!isObject(child)) break;
      parents.push(child);
    }
    if (parents.length !== where.length + 1) continue;
    const holder = parents[parents.length - 1]!;
    if (!(from in holder)) continue;
    const path = [...where, from].join('.');
    const renamed = [...where, to].join('.');
    const { [from]: value, ...rest } = holder;
    if (to in holder)
      issues.push({
        path,
        message: `the old name of ${renamed}, which is given too: keep only ${to}`,
      });
    else
      warnings.push({
        path,
        message: `renamed ${renamed} (the old name still works, for now): rename it in the file`,
      });
    // Rebuild the path down to the holder with the key under its new name.
    let rebuilt: Record<string, unknown> = to in holder ? rest : { ...rest, [to]: value };
    for (let depth = where.length - 1; depth >= 0; depth--)
      rebuilt = { ...parents[depth]!, [where[depth]!]: rebuilt };
    out = rebuilt;
  }
  return out;
}

/**
 * Validate an already-parsed document. Throws ConfigError listing every problem. What is not a
 * problem but should change (an old key name) is added to `warnings`, when given.
 */
export function parseConfig(
  document: unknown,
  registry: AdapterRegistry,
  env: NodeJS.ProcessEnv = process.env,
  warnings: ErrorIssue[] = [],
): Config {
  const issues: ErrorIssue[] = [];
  const substituted = renameKeys(
    applyPortOverride(substituteEnv(document ?? {}, env, issues), env, issues),
    issues,
    warnings,
  );
  // A value whose variable is not set is reported as that; what the schema then says about the
  // empty value at the same path ("at least 16 characters") is its echo, not a second problem.
  const early = issues.length;
  const unset = new Set(issues.map((issue) => issue.path));
  // Every check below runs whether or not the others passed, so one `config check` lists every
  // problem: the core schema, then what it cannot see (vendor settings, duplicate ids, unknown
  // vendors, cross-references), read from the document itself.
  const result = configSchema.safeParse(substituted);
  const raw = isObject(substituted) ? substituted : {};
  if (!result.success) {
    // A destination's schema depends on its kind: the unknown-key hints follow the same choice.
    const pick = (_schema: z.ZodType, walked: readonly PropertyKey[]) => {
      if (walked.length !== 2 || walked[0] !== 'destinations') return undefined;
      const destination = arrayAt(raw, 'destinations')[walked[1] as number];
      const kind = isObject(destination) ? destination.kind : undefined;
      return kind === undefined || kind === 'webhook' ? webhookDestinationSchema : crmDestinationSchema;
    };
    issues.push(
      ...configIssues(result.error.issues, substituted, (path) => keysOfSchema(configSchema, path, pick)),
    );
  }
  const channels = arrayAt(raw, 'channels');
  const channelIds = new Set<string>();
  const vendorSettings = new Map<number, Record<string, unknown>>();
  channels.forEach((channel, index) => {
    if (!isObject(channel)) return; // the core schema has said what is wrong with it
    if (typeof channel.id === 'string') {
      if (channelIds.has(channel.id))
        issues.push({ path: `channels[${index}].id`, message: `duplicate channel id "${channel.id}"` });
      channelIds.add(channel.id);
    }
    if (typeof channel.vendor !== 'string' || channel.vendor === '') return;
    const adapter = registry.get(channel.vendor);
    if (!adapter) {
      issues.push({
        path: `channels[${index}].vendor`,
        message: `unknown vendor "${channel.vendor}" (known: ${registry.vendors.join(', ') || 'none'})`,
      });
      return;
    }
    const { id: _id, vendor: _vendor, name: _name, token: _token, ...settings } = channel;
    const parsed = adapter.channelSettings.strict().safeParse(settings);
    if (!parsed.success)
      issues.push(
        ...settingsIssues(parsed.error.issues, settings, adapter.channelSettings, BASE_CHANNEL_KEYS, [
          'channels',
          index,
        ]),
      );
    else vendorSettings.set(index, parsed.data);
  });
  // A token is the credential in a channel's webhook URL: shared, one leaked URL opens both.
  const tokens = new Map<string, number>();
  channels.forEach((channel, index) => {
    if (!isObject(channel) || typeof channel.token !== 'string' || channel.token === '') return;
    const first = tokens.get(channel.token);
    if (first !== undefined)
      issues.push({
        path: `channels[${index}].token`,
        message: `the same token as channels[${first}]: each channel needs its own (it is the credential in its webhook URL)`,
      });
    else tokens.set(channel.token, index);
  });
  // Agents are one per e-mail: agent sync and the CRM user lookup key them by it (case ignored),
  // so a second entry silently replaced the first.
  const emails = new Map<string, number>();
  arrayAt(raw, 'agents').forEach((agent, index) => {
    if (!isObject(agent) || typeof agent.email !== 'string' || agent.email.trim() === '') return;
    const email = agent.email.trim().toLowerCase();
    const first = emails.get(email);
    if (first !== undefined)
      issues.push({
        path: `agents[${index}].email`,
        message: `duplicate agent e-mail "${email}" (also agents[${first}]; e-mails ignore case)`,
      });
    else emails.set(email, index);
  });
  for (const name of ['destinations', 'attributeSources'] as const) {
    const seen = new Set<string>();
    arrayAt(raw, name).forEach((item, index) => {
      if (!isObject(item) || typeof item.id !== 'string') return;
      if (seen.has(item.id))
        issues.push({ path: `${name}[${index}].id`, message: `duplicate id "${item.id}"` });
      seen.add(item.id);
    });
  }
  const connectorSettings = new Map<number, Record<string, unknown>>();
  arrayAt(raw, 'destinations').forEach((destination, index) => {
    if (!isObject(destination)) return;
    if (typeof destination.kind === 'string' && destination.kind !== 'webhook') {
      // DESIGN §10: a CRM connector checks what it needs to reach its CRM, as adapters check channels.
      const connector = registry.connector(destination.kind);
      if (!connector) {
        issues.push({
          path: `destinations[${index}].kind`,
          message: `unknown kind "${destination.kind}" (known: webhook, ${[...registry.connectorsByKind().keys()].join(', ')})`,
        });
      } else {
        const {
          id: _i,
          kind: _k,
          events: _e,
          retrySchedule: _r,
          timeoutMs: _t,
          concurrency: _c,
          circuitBreaker: _b,
          failedRetention: _fr,
          filter: _f,
          crm: _crm,
          map: _m,
          ...settings
        } = destination;
        const parsed = connector.settings.strict().safeParse(settings);
        if (!parsed.success)
          issues.push(
            ...settingsIssues(parsed.error.issues, settings, connector.settings, CRM_DESTINATION_KEYS, [
              'destinations',
              index,
            ]),
          );
        else connectorSettings.set(index, parsed.data);
        issues.push(...crmIdIssues(destination.crm, connector.idFormats ?? {}, `destinations[${index}].crm`));
      }
    }
    const filter = isObject(destination.filter) ? destination.filter : {};
    for (const channelId of arrayAt(filter, 'channels')) {
      if (typeof channelId === 'string' && !channelIds.has(channelId))
        issues.push({ path: `destinations[${index}].filter.channels`, message: `no channel "${channelId}"` });
    }
    // A vendor typo (jivo for jivochat) filtered out every event of the destination, silently.
    arrayAt(filter, 'vendors').forEach((vendor, at) => {
      if (typeof vendor === 'string' && !registry.get(vendor))
        issues.push({
          path: `destinations[${index}].filter.vendors[${at}]`,
          message: `unknown vendor "${vendor}" (known: ${registry.vendors.join(', ') || 'none'})`,
        });
    });
    // Per-channel maps: a key that is no channel (a typo) would silently send that channel's
    // events to the default pipeline / stage, so it is a problem like filter.channels.
    const crm = isObject(destination.crm) ? destination.crm : {};
    const byChannel: [string, unknown][] = [
      ['map.pipeline', isObject(destination.map) ? destination.map.pipeline : undefined],
      ['crm.pipeline', crm.pipeline],
      ['crm.stage', crm.stage],
    ];
    for (const [where, value] of byChannel) {
      const keys = isObject(value) && isObject(value.byChannel) ? Object.keys(value.byChannel) : [];
      for (const channelId of keys) {
        if (!channelIds.has(channelId))
          issues.push({
            path: `destinations[${index}].${where}.byChannel.${channelId}`,
            message: `no channel "${channelId}"`,
          });
      }
    }
  });
  if (result.success) {
    const config = result.data;
    config.channels.forEach((channel, index) => {
      const settings = vendorSettings.get(index);
      if (settings) Object.assign(channel, settings);
      // Cross-field checks need the whole config typed, so they run once the core schema passed.
      const adapter = registry.get(channel.vendor);
      for (const problem of adapter?.checkConfig?.(channel, config) ?? []) {
        const issue = { path: formatPath(['channels', index, ...problem.path]), message: problem.message };
        (problem.warning ? warnings : issues).push(issue);
      }
    });
    // Two listeners on one port: the second failed at start with "port in use by another process".
    const { metrics, server } = config;
    const wildcard = (host: string) => ['', '0.0.0.0', '::', '[::]'].includes(host);
    if (
      metrics.port !== undefined &&
      metrics.port !== 0 &&
      metrics.port === server.port &&
      (metrics.host === server.host || wildcard(metrics.host) || wildcard(server.host))
    )
      issues.push({
        path: 'metrics.port',
        message: `${metrics.port} is also ${env.PORT ? 'PORT (the environment), which sets server.port' : 'server.port'}: the metrics listener needs a port of its own (or leave metrics.port out and set metrics.token to serve /metrics on the main port)`,
      });
    config.destinations.forEach((destination, index) => {
      const settings = connectorSettings.get(index);
      if (settings && isCrmDestination(destination)) Object.assign(destination, settings);
    });
    if (issues.length === 0) return deepFreeze(config);
  }
  // A missing key reads "required" (DESIGN §3: `channels[2].apiToken: required`), not zod's wording.
  const worded = issues
    .filter((issue, index) => index < early || !unset.has(issue.path))
    .map((issue) =>
      /^Invalid input: expected [\w ]+, received undefined$/.test(issue.message)
        ? { ...issue, message: 'required' }
        : issue,
    );
  throw new ConfigError(`the config has ${worded.length} problem${worded.length === 1 ? '' : 's'}`, worded);
}

/**
 * DESIGN §3: PORT, when set, wins over server.port whatever the file says (platforms assign the
 * port through it). A PORT that is not a port is a problem of its own, named as such.
 */
function applyPortOverride(document: unknown, env: NodeJS.ProcessEnv, issues: ErrorIssue[]): unknown {
  const port = env.PORT;
  if (port === undefined || port === '' || !isObject(document)) return document;
  const server = isObject(document.server) ? document.server : {};
  if (!/^\d+$/.test(port) || Number(port) > 65_535) {
    issues.push({ path: 'PORT (environment)', message: `"${port}" is not a port number (0-65535)` });
    // The file's server.port does not count while PORT is set: left in, a file that reads PORT
    // itself (the example's `${PORT:-3000}`) gave the same bad value a second, vaguer problem.
    const { port: _overridden, ...rest } = server;
    return { ...document, server: rest };
  }
  return { ...document, server: { ...server, port: Number(port) } };
}

/**
 * Issues of a vendor's or connector's own settings inside one channel or destination entry
 * (`prefix`, e.g. ['channels', 2]): an unknown key at the entry's top level is offered the
 * entry's common keys (`baseKeys`) as well as the settings' own.
 */
function settingsIssues(
  issues: readonly z.core.$ZodIssue[],
  settings: unknown,
  schema: z.ZodType,
  baseKeys: readonly string[],
  prefix: readonly [string, number],
): ErrorIssue[] {
  return configIssues(
    issues,
    settings,
    (path) => {
      const inner = path.slice(2);
      const keys = keysOfSchema(schema, inner);
      return inner.length === 0 && keys ? [...baseKeys, ...keys] : keys;
    },
    prefix,
  );
}

/** What every channel has besides its vendor's settings (baseChannelSchema). */
const BASE_CHANNEL_KEYS = ['id', 'vendor', 'name', 'token'];
/** What every CRM destination has besides its connector's settings (crmDestinationSchema). */
const CRM_DESTINATION_KEYS = [
  'id',
  'kind',
  'events',
  'retrySchedule',
  'timeoutMs',
  'concurrency',
  'circuitBreaker',
  'failedRetention',
  'filter',
  'crm',
];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function arrayAt(object: Record<string, unknown>, key: string): unknown[] {
  const value = object[key];
  return Array.isArray(value) ? value : [];
}

/** Why a config file could not be read, in words (the code itself for anything else). */
const READ_ERRORS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory',
  ENOTDIR: 'a part of the path is not a directory',
};

export interface LoadedConfig {
  config: Config;
  source: ConfigSource;
  /** Not problems, but to change in the file (an old key name), each with its path. */
  warnings: ErrorIssue[];
  /**
   * Values the file writes with a ${VAR} reference, as written, by path (`metrics.port` ->
   * `${METRICS_PORT:-9464}`): a message about a value can name the variable it came from.
   */
  written: ReadonlyMap<string, string>;
  /** PORT when it overrode server.port (DESIGN §3), else undefined. */
  portOverride: string | undefined;
}

/** Every string of the parsed document holding a ${…} reference, as written, by path. */
function valuesWithReferences(
  value: unknown,
  found: Map<string, string>,
  path: (string | number)[] = [],
): Map<string, string> {
  if (typeof value === 'string') {
    // An odd run of $ before { opens a reference (substituteEnv); $${ is a literal ${.
    if ([...value.matchAll(OPENING)].some((match) => (match[1] ?? '').length % 2 === 1))
      found.set(formatPath(path), value);
  } else if (Array.isArray(value))
    value.forEach((item, index) => {
      valuesWithReferences(item, found, [...path, index]);
    });
  else if (value && typeof value === 'object')
    for (const [key, item] of Object.entries(value)) valuesWithReferences(item, found, [...path, key]);
  return found;
}

export function loadConfig(
  flag: string | undefined,
  registry: AdapterRegistry,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): LoadedConfig {
  const source = resolveConfigPath(flag, env, cwd);
  let bytes: Buffer;
  try {
    bytes = readFileSync(source.path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Nothing given and no file found: say where it looked and what to do, not a bare ENOENT.
    if (source.origin === 'example' && code === 'ENOENT')
      throw new ConfigError(
        `no config file: none given (--config FILE or CHATBRIDGE_CONFIG) and neither ${DEFAULT_CONFIG} nor ${EXAMPLE_CONFIG} under ${cwd}; pass --config FILE`,
      );
    const reason = code ? (READ_ERRORS[code] ?? code) : (error as Error).message;
    throw new ConfigError(`cannot read config file ${source.path}: ${reason}`);
  }
  const text = decodeConfigText(bytes, source.path);
  const document = parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      `${source.path} is not valid YAML`,
      document.errors.map((error) => {
        const at = error.linePos?.[0];
        // yaml's first line ends with "at line L, column C:" (its code frame follows): the
        // position is the issue's path, said once.
        const message =
          // yaml's own words point at a function of its API.
          error.code === 'MULTIPLE_DOCS'
            ? 'a second YAML document starts here (after a --- line): the config is one document; remove the --- line or what follows it'
            : (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
        return { path: at ? `line ${at.line}, column ${at.col}` : 'line ?', message };
      }),
    );
  }
  // An empty file (or only comments) would read as "admin: required", as if one key were missing.
  if (document.contents === null)
    throw new ConfigError(
      `${source.path} is empty (no settings, only blank lines or comments): start from ${EXAMPLE_CONFIG}`,
    );
  let parsed: unknown;
  try {
    // Aliases (*name) may repeat an anchor's value: bounded, so that a few lines of nested
    // aliases (a "billion laughs") cannot expand to gigabytes. yaml's default, said here.
    parsed = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    if (error instanceof ReferenceError && /alias/i.test(error.message))
      throw new ConfigError(
        `${source.path}: its YAML aliases (*name) expand to more than ${MAX_ALIAS_COUNT} copies of their anchors; write the values out instead`,
      );
    throw error;
  }
  if (!isObject(parsed))
    throw new ConfigError(
      `${source.path}: the file must be a YAML mapping (key: value lines, like the example), not ${Array.isArray(parsed) ? 'a list' : `a ${typeof parsed}`}`,
    );
  try {
    const warnings: ErrorIssue[] = [];
    return {
      config: parseConfig(parsed, registry, env, warnings),
      source,
      warnings,
      written: valuesWithReferences(parsed, new Map()),
      portOverride: env.PORT === undefined || env.PORT === '' ? undefined : env.PORT,
    };
  } catch (error) {
    if (error instanceof ConfigError) {
      const written = valuesWithReferences(parsed, new Map());
      throw new ConfigError(
        `${source.path}: ${error.message}`,
        (error.issues ?? []).map((issue) =>
          namingUnsetKey(namingVariables(issue, written.get(issue.path), env), written, env),
        ),
      );
    }
    throw error;
  }
}

const REFERENCE_NAMES = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g;

/**
 * A problem with a value the environment set (`port: ${METRICS_PORT:-9464}` and METRICS_PORT=abc)
 * names the variable: the value it quotes is nowhere in the file. Not when the file's own default
 * was used (nothing set), nor when the message already speaks of the variable (unset, empty).
 */
function namingVariables(
  issue: ErrorIssue,
  reference: string | undefined,
  env: NodeJS.ProcessEnv,
): ErrorIssue {
  if (reference === undefined || issue.message.includes('environment variable')) return issue;
  const set = [...reference.matchAll(REFERENCE_NAMES)]
    .map((match) => match[1]!)
    .filter(
      (name, index, names) => env[name] !== undefined && env[name] !== '' && names.indexOf(name) === index,
    );
  if (set.length === 0) return issue;
  const from = `from ${set.join(' and ')} in the environment`;
  return {
    ...issue,
    // The variable's name only: the file's text may hold a default that is a secret, and this
    // line goes to the log (start's fatal line). After a message that ends in a parenthesis of
    // its own (`… (whsec_ and the output of openssl rand -base64 32)`) a second one read as two
    // asides in a row, `…32) (from CRM_WEBHOOK_SECRET in the environment)`: said as a clause then.
    message: issue.message.endsWith(')')
      ? `${issue.message}; the value is ${from}`
      : `${issue.message} (${from})`,
  };
}

/** Settings a problem of another path may ask for (a LiveTex channel: `secrets.masterKey`). */
const ASKED_FOR = ['secrets.masterKey'] as const;

/**
 * A problem that asks for a setting the file takes from the environment, from a variable that is
 * not set (`channels[1]: livetex channels need secrets.masterKey …`, in a copy of the example,
 * whose `masterKey: ${CHATBRIDGE_MASTER_KEY:-}` is empty without it) names the variable: the
 * setting is in the file already, and a newcomer told only "need secrets.masterKey" pasted the
 * key into the file, where secrets do not belong.
 */
function namingUnsetKey(
  issue: ErrorIssue,
  written: ReadonlyMap<string, string>,
  env: NodeJS.ProcessEnv,
): ErrorIssue {
  for (const setting of ASKED_FOR) {
    const reference = written.get(setting);
    if (issue.path === setting || reference === undefined || !issue.message.includes(setting)) continue;
    const unset = [...reference.matchAll(REFERENCE_NAMES)]
      .map((match) => match[1]!)
      .filter((name, index, names) => (env[name] ?? '') === '' && names.indexOf(name) === index);
    if (unset.length === 0) continue;
    return {
      ...issue,
      message: `${issue.message}, and set ${unset.join(' or ')} in the environment (${setting} takes it from there)`,
    };
  }
  return issue;
}

const MAX_ALIAS_COUNT = 100;

/**
 * The file's text, UTF-8 (with or without a byte order mark). Anything else is refused with what
 * it is: read as UTF-8, a UTF-16 file (Notepad's "Unicode") is one string of odd characters
 * ("expected object, received string"), and Latin-1 or Windows-1251 letters silently became
 * U+FFFD in names and templates.
 */
function decodeConfigText(bytes: Buffer, path: string): string {
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff))
    throw new ConfigError(`${path} is UTF-16 (it starts with a UTF-16 byte order mark): save it as UTF-8`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const loose = new TextDecoder('utf-8').decode(bytes);
    const line = loose.slice(0, loose.indexOf('\uFFFD')).split('\n').length;
    throw new ConfigError(
      `${path} is not UTF-8 (line ${line} has bytes that are not, e.g. Latin-1 or Windows-1251 text): save it as UTF-8`,
    );
  }
}

/**
 * The `crm` block's ids in the shape the CRM takes them (ConnectorDefinition.idFormats): a
 * pipeline `web-leads` where the CRM wants an integer would go out as null and put the deal in
 * the CRM's default pipeline without a word.
 */
function crmIdIssues(
  crm: unknown,
  formats: NonNullable<ConnectorDefinition['idFormats']>,
  path: string,
): { path: string; message: string }[] {
  if (!isObject(crm)) return [];
  const out: { path: string; message: string }[] = [];
  const check = (what: 'pipeline' | 'stage' | 'user', value: unknown, at: string) => {
    const format = formats[what];
    // Numbers and strings only; null (stage: the pipeline's first) and wrong types are the schema's.
    if (!format || (typeof value !== 'string' && typeof value !== 'number')) return;
    if (!format.pattern.test(String(value))) out.push({ path: at, message: format.message });
  };
  for (const what of ['pipeline', 'stage'] as const) {
    const map = crm[what];
    if (!isObject(map)) continue;
    if (isObject(map.byChannel))
      for (const [channel, value] of Object.entries(map.byChannel))
        check(what, value, `${path}.${what}.byChannel.${channel}`);
    check(what, map.default, `${path}.${what}.default`);
  }
  if (isObject(crm.responsible)) check('user', crm.responsible.default, `${path}.responsible.default`);
  return out;
}
