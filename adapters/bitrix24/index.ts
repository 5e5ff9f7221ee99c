import { z } from 'zod';
import type { ConnectorDefinition } from '../../src/contracts/connector.js';
import { ID_FORMATS, REQUESTS_PER_SECOND, WEBHOOK_URL } from './api.js';
import { createBitrix24Client } from './client.js';

/** Bitrix24 connector: a destination `kind: bitrix24` (DESIGN §10, README "Connect your CRM"). */
export const bitrix24SettingsSchema = z.object({
  /** The incoming webhook, https://<portal>/rest/<userId>/<code>/ — the URL is the credential. */
  webhookUrl: z
    .string()
    .regex(
      WEBHOOK_URL,
      'not an incoming webhook URL: it takes https://<portal>/rest/<userId>/<code>/ (Developer resources → Other → Inbound webhook)',
    ),
  /** SOURCE_ID of created contacts and deals (a code from crm.status.list ENTITY_ID=SOURCE). */
  sourceId: z.string().min(1).default('WEB'),
});
export type Bitrix24Settings = z.infer<typeof bitrix24SettingsSchema>;

export const bitrix24Connector: ConnectorDefinition = {
  kind: 'bitrix24',
  displayName: 'Bitrix24',
  settings: bitrix24SettingsSchema,
  requestsPerSecond: REQUESTS_PER_SECOND,
  idFormats: ID_FORMATS,
  secretsOf(destination) {
    const url = String((destination as { webhookUrl?: unknown }).webhookUrl ?? '');
    const code = WEBHOOK_URL.exec(url)?.[2];
    return [url, ...(code ? [code] : [])];
  },
  create(destination, transport) {
    return createBitrix24Client(bitrix24SettingsSchema.parse(destination), transport);
  },
};
