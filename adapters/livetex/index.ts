import { z } from 'zod';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { ConfigError } from '../../src/errors.js';
import { bridgeJweCodec } from './codec.js';
import { createLivetexKeyStore, KEY_COMMANDS, keyCommands, keyRoutes } from './keys.js';
import { createLookupRoute } from './lookup.js';
import { livetexSettingsSchema, webhookEnvelopeSchema } from './schemas.js';
import { createWebhookHandler } from './webhook.js';

/**
 * LiveTex (vendors/livetex.md): the encrypted attribute lookup LiveTex pulls (DESIGN §6, our
 * design behind codec.ts), the channel's keys, and the dialog webhook (closed/assigned/rated).
 */

export const MASTER_KEY_MESSAGE =
  'livetex channels need secrets.masterKey (32 bytes, base64); run `chatbridge keys master` to make one';

export const livetexAdapter: AdapterDefinition = {
  vendor: 'livetex',
  displayName: 'LiveTex',
  channelSettings: livetexSettingsSchema,
  webhook: {
    summary: 'LiveTex dialog webhook (closed, assigned, rated)',
    body: webhookEnvelopeSchema,
    answer: z.object({ ok: z.literal(true) }),
  },

  checkConfig(_channel, config) {
    // Keys in Redis outlive the process: they must be sealed under a key that does too. The
    // in-memory store forgets its keys with the process, so the core's ephemeral key is enough.
    if (config.store.redis && !config.secrets.masterKey) return [{ path: [], message: MASTER_KEY_MESSAGE }];
    return [];
  },

  create(context, channel) {
    const settings = livetexSettingsSchema.parse(channel);
    if (!context.masterKey) throw new ConfigError(`channel ${channel.id}: ${MASTER_KEY_MESSAGE}`);
    const keys = createLivetexKeyStore({
      store: context.store,
      channelId: channel.id,
      masterKey: context.masterKey,
      now: () => context.now(),
    });
    return {
      handleWebhook: createWebhookHandler(context, channel),
      routes: [
        ...keyRoutes(keys),
        createLookupRoute({ context, channel, settings, keys, codec: bridgeJweCodec }),
      ],
      commands: keyCommands(keys, context.store),
    };
  },
  commands: Object.values(KEY_COMMANDS),
};
