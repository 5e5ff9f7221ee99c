import { adapters as builtInAdapters, connectors as builtInConnectors } from '../adapters/index.js';
import type { AdapterDefinition } from './contracts/adapter.js';
import type { ConnectorDefinition } from './contracts/connector.js';

/**
 * The one place the core learns which vendors exist. Everything else in src/ reaches an adapter
 * through the `AdapterRegistry` it is given (so tests can pass their own list).
 */
export class AdapterRegistry {
  private readonly byVendor: Map<string, AdapterDefinition>;

  private readonly byKind: Map<string, ConnectorDefinition>;

  /** `connectors`: the outbound side (CRM destinations by `kind`, DESIGN §10). */
  constructor(
    readonly list: readonly AdapterDefinition[],
    readonly connectors: readonly ConnectorDefinition[] = builtInConnectors,
  ) {
    this.byVendor = new Map(list.map((adapter) => [adapter.vendor, adapter]));
    if (this.byVendor.size !== list.length) throw new Error('two adapters declare the same vendor');
    for (const adapter of list) {
      // One webhook URL per vendor (/webhooks/<vendor>/:channelId/:token); lookups by their path.
      const paths = adapter.intake.map((each) => (each.kind === 'webhook' ? '' : (each.path ?? '')));
      if (
        new Set(paths).size !== paths.length ||
        paths.some((path, index) => path === '' && adapter.intake[index]!.kind === 'lookup')
      )
        throw new Error(
          `adapter ${adapter.vendor}: one webhook at most, and each lookup on a path of its own`,
        );
    }
    this.byKind = new Map(connectors.map((connector) => [connector.kind, connector]));
    if (this.byKind.size !== connectors.length || this.byKind.has('webhook'))
      throw new Error('two connectors declare the same kind (or the reserved kind webhook)');
  }

  connector(kind: string): ConnectorDefinition | undefined {
    return this.byKind.get(kind);
  }

  connectorsByKind(): ReadonlyMap<string, ConnectorDefinition> {
    return this.byKind;
  }

  get(vendor: string): AdapterDefinition | undefined {
    return this.byVendor.get(vendor);
  }

  get vendors(): string[] {
    return [...this.byVendor.keys()];
  }

  displayNames(): Map<string, string> {
    return new Map(this.list.map((adapter) => [adapter.vendor, adapter.displayName]));
  }
}

export function defaultRegistry(): AdapterRegistry {
  return new AdapterRegistry(builtInAdapters, builtInConnectors);
}
