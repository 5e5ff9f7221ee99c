import { MAKE_MASTER_KEY } from '../../src/config/schema.js';
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
  // mapper.ts: the visitor's number and client_id.
  identifierKinds: ['visitor', 'client'],
  checkConfig(channel, config) {
    // README "Agent links": {consoleUrl} is left out of the answer when the bridge cannot build
    // it. The bridge runs either way (so a warning, not a refusal), but the agent's "Open in CRM"
    // button silently disappeared and nothing said which setting was missing.
    // Settings that did not parse are already problems of their own (channelSettings): parse()
    // threw here, and config check printed zod's error as JSON instead of every problem.
    const parsed = jivochatSettingsSchema.safeParse(channel);
    if (!parsed.success) return [];
    const crmLink = parsed.data.reply.crmLink;
    if (!crmLink?.includes('{consoleUrl}')) return [];
    const path = ['reply', 'crmLink'];
    if (!config.server.publicUrl)
      return [
        {
          path,
          warning: true,
          message:
            'uses {consoleUrl}, but server.publicUrl is not set: the agent link is left out of JivoChat\'s answers (no "Open in CRM" button); set server.publicUrl to the address agents reach the bridge at (CHATBRIDGE_PUBLIC_URL in the example)',
        },
      ];
    // The in-memory store signs with an ephemeral key (links end with the process, said at start).
    const { redis, sentinel, cluster } = config.store;
    if ((redis || sentinel || cluster) && !config.secrets.masterKey)
      return [
        {
          path,
          warning: true,
          message: `uses {consoleUrl}, but secrets.masterKey is not set: agent links are signed with it, so the link is left out of JivoChat's answers; ${MAKE_MASTER_KEY}`,
        },
      ];
    return [];
  },
  create(_context, channel) {
    // The loader validated the settings already; parsing again gives them their types and defaults.
    return { state: { id: channel.id, settings: jivochatSettingsSchema.parse(channel) } };
  },
};
