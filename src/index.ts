/**
 * The package's entry (`main` / `exports["."]`): embed the bridge in your own process, or validate
 * a config from your own tooling. The CLI (`chatbridge`, bin/chatbridge.js) is built on the same.
 */
export { type Bridge, type BridgeOptions, type ChannelEntry, createBridge, type Role } from './bridge.js';
export { runCli } from './cli/main.js';
export {
  type ConfigSource,
  type LoadedConfig,
  loadConfig,
  parseConfig,
  resolveConfigPath,
} from './config/load.js';
export { type Config, configSchema } from './config/schema.js';
export type { AdapterDefinition, ChannelRuntime, CliCommand, CliCommandInfo } from './contracts/adapter.js';
export { AppError, ConfigError, type ErrorIssue } from './errors.js';
export { createLogger } from './logger.js';
export { AdapterRegistry, defaultRegistry } from './registry.js';
