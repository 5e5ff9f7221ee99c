import { AppError } from '../errors.js';
import { type Config, isCrmDestination } from './schema.js';

/**
 * Credentials printed in config/bridge.example.yaml and the README. Anyone can read them, so a
 * bridge that uses one of them must not be reachable from other machines (issue 10 item 6).
 * test/security/config.test.ts checks this list against the example file.
 */
export const PUBLISHED_TOKENS: readonly string[] = [
  'example-admin-token-change-me',
  'example-jivo-token-0001',
  'example-livetex-token-01',
  'example-chatvisor-token-1',
  'example-api-token',
  // The example destination's signing secret (CRM_WEBHOOK_SECRET's default): a receiver that
  // checks signatures would take a request anyone could sign as the bridge's.
  'whsec_ZXhhbXBsZS1zZWNyZXQtY2hhbmdlLW1lLTAx',
];

export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  return bare === 'localhost' || bare === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}

/** Where the config still holds a published credential, by config path. */
export function publishedCredentials(config: Config): string[] {
  const found: string[] = [];
  if (PUBLISHED_TOKENS.includes(config.admin.token)) found.push('admin.token');
  config.channels.forEach((channel, index) => {
    for (const [key, value] of Object.entries(channel)) {
      if (typeof value === 'string' && PUBLISHED_TOKENS.includes(value))
        found.push(`channels[${index}].${key}`);
    }
  });
  config.destinations.forEach((destination, index) => {
    // CRM destinations sign nothing (their credentials are the CRM's own).
    if (isCrmDestination(destination)) return;
    for (const key of ['secret', 'previousSecret'] as const) {
      const value = destination[key];
      if (value !== undefined && PUBLISHED_TOKENS.includes(value))
        found.push(`destinations[${index}].${key}`);
    }
  });
  return found;
}

export class PublishedCredentialsError extends AppError {
  constructor(host: string, paths: string[]) {
    super(
      'published_credentials',
      500,
      `refusing to listen on ${host}: ${paths.join(', ')} still ${paths.length === 1 ? 'holds one of' : 'hold'} the example's published credentials; set your own (README "Running for real") or bind to 127.0.0.1`,
      { issues: paths.map((path) => ({ path, message: 'a published example credential' })) },
    );
  }
}

/**
 * What to tell someone whose bridge listens on loopback with published credentials still in its
 * config (a copy of the example that kept them): allowed, but refused the day it gets another
 * address, and nothing said so before. Undefined when there is nothing to say (own credentials,
 * or a non-loopback host, where assertSafeToListen refuses instead).
 */
export function publishedCredentialsNote(config: Config, host: string): string | undefined {
  if (!isLoopbackHost(host)) return undefined;
  const found = publishedCredentials(config);
  if (found.length === 0) return undefined;
  return (
    `${found.join(', ')} still ${found.length === 1 ? 'holds one of' : 'hold'} the example's published credentials: ` +
    `fine while server.host is loopback (${host}), refused on any other address; ` +
    'set your own (README "Running for real", step 1)'
  );
}

/** Refuse to listen beyond loopback while a published credential is configured. */
export function assertSafeToListen(config: Config, host: string): void {
  if (isLoopbackHost(host)) return;
  const found = publishedCredentials(config);
  if (found.length === 0) return;
  throw new PublishedCredentialsError(host, found);
}
