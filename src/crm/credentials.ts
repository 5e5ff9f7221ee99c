import type { Logger } from 'pino';
import type { CrmDestinationConfig } from '../config/schema.js';
import type { ConnectorDefinition } from '../contracts/connector.js';
import type { Metrics } from '../metrics.js';

/**
 * When a CRM destination's credential stops working, told before it does. An amoCRM long-lived
 * token expires on a date chosen when it was made (1 day to 5 years) and nothing renews it: after
 * that date every delivery fails with 401 until someone puts a new token in the config. So
 * `crm check` says when, the bridge warns at start and once a day from EXPIRY_WARNING_DAYS
 * before, and a gauge lets an alert fire on it. A Bitrix24 inbound webhook carries no expiry the
 * bridge can read (connector without `credentialExpiry`): nothing to tell.
 */

export const EXPIRY_WARNING_DAYS = 14;
const DAY_MS = 86_400_000;
/** How often a running bridge looks again (the warning repeats while the expiry is near). */
export const EXPIRY_CHECK_EVERY_MS = DAY_MS;

export type CredentialExpiry =
  /** The connector's credential has no expiry the bridge can know (Bitrix24's webhook URL). */
  | { state: 'none' }
  /** It may expire, but the bridge cannot read when (an amoCRM token that is not a JWT). */
  | { state: 'unknown'; renew: string }
  | { state: 'valid' | 'soon' | 'expired'; at: Date; msLeft: number; renew: string };

export function credentialExpiry(
  connector: ConnectorDefinition,
  destination: CrmDestinationConfig,
  now: Date,
): CredentialExpiry {
  const expiry = connector.credentialExpiry?.(destination);
  if (!expiry) return { state: 'none' };
  if (expiry.expiresAt === null) return { state: 'unknown', renew: expiry.renew };
  const msLeft = expiry.expiresAt.getTime() - now.getTime();
  return {
    state: msLeft <= 0 ? 'expired' : msLeft < EXPIRY_WARNING_DAYS * DAY_MS ? 'soon' : 'valid',
    at: expiry.expiresAt,
    msLeft,
    renew: expiry.renew,
  };
}

/**
 * "12 days", "5 hours", "40 minutes": how far off, in the largest unit that is at least one (the
 * console's words too); "under a minute" below one, where "1 minute" read wrong both ways (a check
 * made seconds ago, a token seconds from expiry).
 */
export function durationInWords(ms: number): string {
  if (!(ms >= 60_000)) return 'under a minute';
  const minutes = Math.floor(ms / 60_000);
  const [count, unit] =
    minutes >= 1440
      ? [Math.floor(minutes / 1440), 'day']
      : minutes >= 60
        ? [Math.floor(minutes / 60), 'hour']
        : [minutes, 'minute'];
  return `${count} ${unit}${count === 1 ? '' : 's'}`;
}

/** "token expires at <ISO time> (in 12 days)". */
export function expiresAtText(expiry: { at: Date; msLeft: number }): string {
  return `token expires at ${expiry.at.toISOString()} (in ${durationInWords(expiry.msLeft)})`;
}

/** One line about the credential for people (crm check, the bridge's log); never the credential. */
export function describeExpiry(expiry: CredentialExpiry, displayName: string): string {
  switch (expiry.state) {
    case 'none':
      return `the ${displayName} credential does not expire`;
    case 'unknown':
      return `token expiry unknown (not a JWT with an exp claim): nothing can warn before ${displayName} refuses it`;
    case 'valid':
      return expiresAtText(expiry);
    case 'soon':
      return `token expires at ${expiry.at.toISOString()}, in ${durationInWords(expiry.msLeft)}: then every delivery to ${displayName} fails with 401 until it is replaced; ${expiry.renew}`;
    case 'expired':
      return `token expired at ${expiry.at.toISOString()}: ${displayName} refuses it (401) and deliveries fail; ${expiry.renew}, then replay the failed deliveries`;
  }
}

interface WatchTarget {
  destination: CrmDestinationConfig;
  connector: ConnectorDefinition;
}

/**
 * chatbridge_crm_token_expiry_timestamp_seconds{destination}: when each CRM destination's token
 * expires (Unix seconds, the Prometheus habit for a point in time), so an alert can say
 * `(… - time()) < 14 * 86400`. Only destinations whose expiry is known have a series.
 */
export function exportCredentialExpiry(metrics: Metrics, targets: readonly WatchTarget[]): void {
  const known = targets.flatMap(({ destination, connector }) => {
    const at = connector.credentialExpiry?.(destination)?.expiresAt;
    return at ? [{ destination: destination.id, seconds: Math.floor(at.getTime() / 1000) }] : [];
  });
  if (known.length === 0) return;
  const gauge = metrics.gauge(
    'chatbridge_crm_token_expiry_timestamp_seconds',
    'When the CRM destination token expires (Unix seconds; amoCRM long-lived tokens), by destination',
    ['destination'],
  );
  for (const item of known) gauge.set({ destination: item.destination }, item.seconds);
}

/**
 * Log each CRM destination's credential expiry now and every `everyMs` (a day) after: a warning
 * while it is under EXPIRY_WARNING_DAYS away, an error once it passed; at start only, an info
 * line when it is further off or unknown. Returns the stop function.
 */
export function watchCredentialExpiry(options: {
  targets: readonly WatchTarget[];
  logger: Logger;
  now(): Date;
  everyMs?: number;
}): () => void {
  const targets = options.targets.filter(({ connector }) => connector.credentialExpiry !== undefined);
  if (targets.length === 0) return () => {};
  const look = (atStart: boolean) => {
    for (const { destination, connector } of targets) {
      const expiry = credentialExpiry(connector, destination, options.now());
      const fields = {
        destination: destination.id,
        ...('at' in expiry ? { expiresAt: expiry.at.toISOString() } : {}),
      };
      const message = `${destination.id}: ${describeExpiry(expiry, connector.displayName)}`;
      if (expiry.state === 'expired') options.logger.error(fields, message);
      else if (expiry.state === 'soon') options.logger.warn(fields, message);
      else if (atStart) options.logger.info(fields, message);
    }
  };
  look(true);
  const timer = setInterval(() => look(false), options.everyMs ?? EXPIRY_CHECK_EVERY_MS);
  // A timer that keeps nothing alive: the bridge's close stops it, a process exit need not wait.
  timer.unref();
  return () => clearInterval(timer);
}
