import { z } from 'zod';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { VENDOR } from './mapper.js';
import { jivoAnswerSchema, jivochatSettingsSchema, jivoEnvelopeSchema } from './schemas.js';
import { createWebhookHandler } from './webhook.js';

/**
 * JivoChat: Jivo pushes one webhook per event to the channel's URL and shows the agent what we
 * answer to chat_accepted / chat_updated. Protocol: /work/shared/vendors/jivochat.md; our
 * choices: README.md in this folder.
 */
export const jivochatAdapter: AdapterDefinition = {
  vendor: VENDOR,
  displayName: 'JivoChat',
  channelSettings: jivochatSettingsSchema,
  webhook: {
    summary: 'JivoChat webhook: one event per request, named by event_name',
    body: jivoEnvelopeSchema,
    answer: z.union([jivoAnswerSchema, z.strictObject({ result: z.literal('ok') })]),
  },
  create(context, channel) {
    // The loader validated the settings already; parsing again gives them their types and defaults.
    const settings = jivochatSettingsSchema.parse(channel);
    return { handleWebhook: createWebhookHandler(context, channel.id, settings) };
  },
};
