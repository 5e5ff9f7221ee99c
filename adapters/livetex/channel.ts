import type { AgentConfig } from '../../src/config/schema.js';
import type { Identifier } from '../../src/contacts/types.js';
import type { LookupCodec } from './codec.js';
import type { LivetexKeyStore } from './keys.js';
import type { LivetexSettings } from './schemas.js';
import type { DialogMemory } from './webhook.js';

/**
 * What a LiveTex channel's intake reads: its settings and the agent directory (pure decode), and
 * the store-backed pieces its `open` / `settle` steps use — the channel's keys and the dialog
 * memory.
 */
export interface LivetexChannel {
  id: string;
  settings: LivetexSettings;
  agents: readonly AgentConfig[];
  /** As the engine would normalise it; null when blocklisted or invalid. */
  normalizeIdentifier(identifier: Identifier): Identifier | null;
  /**
   * Whether the engine keeps this identifier search-only whatever the settings: a phone written
   * with an extension (a switchboard's number, shared by colleagues), which merges nothing.
   */
  searchOnly(identifier: Identifier): boolean;
  /** limits.identifiersPerKind, counted when it cuts (what one dialog event or memory holds). */
  capIdentifiers(identifiers: Identifier[]): Identifier[];
  /** Count a cut in chatbridge_truncated_total{what}. */
  truncated(what: string): void;
  dialogs: DialogMemory;
  keys: LivetexKeyStore;
  codec: LookupCodec;
  now(): Date;
}
