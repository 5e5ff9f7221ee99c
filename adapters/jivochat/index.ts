import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { VENDOR } from './mapper.js';
import { jivochatSettingsSchema } from './schemas.js';
import { type JivoChannel, jivochatWebhook } from './webhook.js';

/**
 * JivoChat: Jivo pushes one webhook per event to the channel's URL and shows the agent what we
 * answer to chat_accepted / chat_updated. Nothing but intake: no REST calls, no jobs. Protocol:
 * /work/shared/vendors/jivochat.md; our choices: README.md in this folder.
 */
export const jivochatAdapter: AdapterDefinition<JivoChannel> = {
  vendor: VENDOR,
  displayName: 'JivoChat',
  channelSettings: jivochatSettingsSchema,
  intake: [jivochatWebhook],
  create(_context, channel) {
    // The loader validated the settings already; parsing again gives them their types and defaults.
    return { state: { id: channel.id, settings: jivochatSettingsSchema.parse(channel) } };
  },
};
