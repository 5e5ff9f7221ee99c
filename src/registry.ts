import { adapters as builtInAdapters } from '../adapters/index.js';
import type { AdapterDefinition } from './spec/adapter.js';

/**
 * The one place the core learns which vendors exist. Everything else in src/ reaches an adapter
 * through the `AdapterRegistry` it is given (so tests can pass their own list).
 */
export class AdapterRegistry {
  private readonly byVendor: Map<string, AdapterDefinition>;

  constructor(readonly list: readonly AdapterDefinition[]) {
    this.byVendor = new Map(list.map((adapter) => [adapter.vendor, adapter]));
    if (this.byVendor.size !== list.length) throw new Error('two adapters declare the same vendor');
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
  return new AdapterRegistry(builtInAdapters);
}
