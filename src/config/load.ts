import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError, type ErrorIssue, formatPath, issuesFromZod } from '../errors.js';
import type { AdapterRegistry } from '../registry.js';
import { type Config, configSchema, isCrmDestination } from './schema.js';

/**
 * Config loading (DESIGN §3): find the file, read YAML, substitute ${VAR} / ${VAR:-default}
 * from the environment, validate with zod (core schema, then each channel against its
 * adapter's schema), report every problem with its path, freeze.
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

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replace ${VAR} and ${VAR:-default} in every string of the parsed document. */
export function substituteEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  issues: ErrorIssue[],
  path: (string | number)[] = [],
): unknown {
  if (typeof value === 'string') {
    const replaced = value.replace(VARIABLE, (_match, name: string, fallback: string | undefined) => {
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      issues.push({
        path: formatPath(path),
        message: `environment variable ${name} is not set (write \${${name}:-} to allow empty)`,
      });
      return '';
    });
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

/** Validate an already-parsed document. Throws ConfigError listing every problem. */
export function parseConfig(
  document: unknown,
  registry: AdapterRegistry,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const issues: ErrorIssue[] = [];
  const substituted = substituteEnv(document ?? {}, env, issues);
  const result = configSchema.safeParse(substituted);
  if (!result.success) issues.push(...issuesFromZod(result.error));
  if (result.success) {
    const config = result.data;
    const ids = new Set<string>();
    config.channels.forEach((channel, index) => {
      if (ids.has(channel.id))
        issues.push({ path: `channels[${index}].id`, message: `duplicate channel id "${channel.id}"` });
      ids.add(channel.id);
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
      if (!parsed.success) issues.push(...issuesFromZod(parsed.error, ['channels', index]));
      else Object.assign(channel, parsed.data);
      for (const problem of adapter.checkConfig?.(channel, config) ?? []) {
        issues.push({ path: formatPath(['channels', index, ...problem.path]), message: problem.message });
      }
    });
    for (const [list, name] of [
      [config.destinations, 'destinations'],
      [config.attributeSources, 'attributeSources'],
    ] as const) {
      const seen = new Set<string>();
      list.forEach((item, index) => {
        if (seen.has(item.id))
          issues.push({ path: `${name}[${index}].id`, message: `duplicate id "${item.id}"` });
        seen.add(item.id);
      });
    }
    config.destinations.forEach((destination, index) => {
      if (isCrmDestination(destination)) {
        // DESIGN §10: the connector checks what it needs to reach its CRM, as adapters check channels.
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
            filter: _f,
            crm: _crm,
            map: _m,
            ...settings
          } = destination;
          const parsed = connector.settings.strict().safeParse(settings);
          if (!parsed.success) issues.push(...issuesFromZod(parsed.error, ['destinations', index]));
          else Object.assign(destination, parsed.data);
        }
      }
      for (const channelId of destination.filter.channels ?? []) {
        if (!ids.has(channelId)) {
          issues.push({
            path: `destinations[${index}].filter.channels`,
            message: `no channel "${channelId}"`,
          });
        }
      }
    });
    if (issues.length === 0) return deepFreeze(config);
  }
  throw new ConfigError(`the config has ${issues.length} problem${issues.length === 1 ? '' : 's'}`, issues);
}

export interface LoadedConfig {
  config: Config;
  source: ConfigSource;
}

export function loadConfig(
  flag: string | undefined,
  registry: AdapterRegistry,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): LoadedConfig {
  const source = resolveConfigPath(flag, env, cwd);
  let text: string;
  try {
    text = readFileSync(source.path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `cannot read config file ${source.path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const document = parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      `${source.path} is not valid YAML`,
      document.errors.map((error) => ({
        path: `line ${error.linePos?.[0]?.line ?? '?'}`,
        message: error.message.split('\n')[0] ?? '',
      })),
    );
  }
  try {
    return { config: parseConfig(document.toJS(), registry, env), source };
  } catch (error) {
    if (error instanceof ConfigError) {
      throw new ConfigError(`${source.path}: ${error.message}`, error.issues ?? []);
    }
    throw error;
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}
