import { z } from 'zod';
import type { ConnectorDefinition } from '../../src/contracts/connector.js';
import { ID_FORMATS, RENEW_TOKEN_HINT, REQUESTS_PER_SECOND, tokenExpiry } from './api.js';
import { createAmoClient } from './client.js';

/** amoCRM (Kommo) connector: a destination `kind: amocrm` (DESIGN §10, README "Connect your CRM"). */
export const amocrmSettingsSchema = z.object({
  /** The account's own address, e.g. https://example.amocrm.ru (the API is under /api/v4). */
  baseUrl: z.url({ protocol: /^https?$/ }),
  /** A long-lived token of a private integration, sent as Authorization: Bearer. */
  token: z
    .string()
    .min(
      20,
      'too short for a long-lived token of a private integration (those have at least 20 characters: Settings → Integrations → Keys and scopes)',
    ),
});
export type AmocrmSettings = z.infer<typeof amocrmSettingsSchema>;

export const amocrmConnector: ConnectorDefinition = {
  kind: 'amocrm',
  displayName: 'amoCRM',
  settings: amocrmSettingsSchema,
  requestsPerSecond: REQUESTS_PER_SECOND,
  idFormats: ID_FORMATS,
  credentialExpiry: (destination) => ({
    expiresAt: tokenExpiry(String((destination as { token?: unknown }).token ?? '')),
    renew: RENEW_TOKEN_HINT,
  }),
  secretsOf: (destination) => [String((destination as { token?: unknown }).token ?? '')],
  create(destination, transport) {
    return createAmoClient(amocrmSettingsSchema.parse(destination), transport);
  },
};
