import { MAKE_MASTER_KEY } from '../../src/config/schema.js';
import { onlyPhonesWithExtension } from '../../src/contacts/normalize.js';
import { capIdentifiersPerKind } from '../../src/contacts/observation.js';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { ConfigError } from '../../src/errors.js';
import type { LivetexChannel } from './channel.js';
import { bridgeJweCodec } from './codec.js';
import { createLivetexKeyStore, KEY_COMMANDS, keyCommands, keyRoutes } from './keys.js';
import { livetexLookup } from './lookup.js';
import { livetexSettingsSchema } from './schemas.js';
import { createDialogMemory, livetexWebhook } from './webhook.js';

/**
 * LiveTex (vendors/livetex.md): the dialog webhook (closed/assigned/rated), the encrypted
 * attribute lookup LiveTex pulls (DESIGN §6, our design behind codec.ts), and the channel's keys
 * (admin API and CLI).
 */

export const MASTER_KEY_MESSAGE = `livetex channels need secrets.masterKey (32 bytes, base64); ${MAKE_MASTER_KEY}`;

export const livetexAdapter: AdapterDefinition<LivetexChannel> = {
  vendor: 'livetex',
  displayName: 'LiveTex',
  channelSettings: livetexSettingsSchema,
  intake: [livetexWebhook, livetexLookup],
  // mapper.ts: the visitor token and client id.
  identifierKinds: ['visitor', 'client'],

  checkConfig(_channel, config) {
    // Keys in a shared store (one Redis, Sentinel or Cluster) outlive the process: they must be
    // sealed under a key that does too. The in-memory store forgets its keys with the process, so
    // the core's ephemeral key is enough.
    const { redis, sentinel, cluster } = config.store;
    const sharedStore = redis !== undefined || sentinel !== undefined || cluster !== undefined;
    if (sharedStore && !config.secrets.masterKey) return [{ path: [], message: MASTER_KEY_MESSAGE }];
    return [];
  },

  create(context, channel) {
    const settings = livetexSettingsSchema.parse(channel);
    if (!context.masterKey) throw new ConfigError(`channel ${channel.id}: ${MASTER_KEY_MESSAGE}`);
    const now = () => context.now();
    const keys = createLivetexKeyStore({
      store: context.store,
      channelId: channel.id,
      masterKey: context.masterKey,
      now,
    });
    return {
      state: {
        id: channel.id,
        settings,
        agents: context.config.agents,
        normalizeIdentifier: (identifier) => context.contacts.normalizeIdentifier(identifier),
        searchOnly: (identifier) =>
          identifier.kind === 'phone' &&
          onlyPhonesWithExtension(identifier.value, context.config.identity.defaultCountry),
        capIdentifiers: (identifiers) => {
          const kept = capIdentifiersPerKind(identifiers, context.config.limits.identifiersPerKind);
          if (kept !== identifiers) context.metrics.truncated().inc({ what: 'identifier_count' });
          return kept;
        },
        truncated: (what) => context.metrics.truncated().inc({ what }),
        dialogs: createDialogMemory(context.store, channel.id),
        keys,
        codec: bridgeJweCodec,
        now,
      },
      routes: keyRoutes(keys),
      commands: keyCommands(keys, context.store, channel.id),
    };
  },
  commands: Object.values(KEY_COMMANDS),
};
