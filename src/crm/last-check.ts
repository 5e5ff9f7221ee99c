import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { CrmDestinationConfig } from '../config/schema.js';
import { cleanDisplayText } from '../contacts/normalize.js';
import { digest } from '../digest.js';
import type { Store } from '../store/types.js';
import { scrub } from './errors.js';

/**
 * What the last `chatbridge crm check` of each CRM destination said, kept in the store: the check
 * runs in a CLI process, and an operator reading the console's status page (any instance) wants
 * to know when the CRM connection was last checked and how it went. One hash field per
 * destination id, overwritten by each check: `{at, outcome, reason, config}`, `config` being the
 * fingerprint of what it checked (checkFingerprint): a console whose config no longer matches
 * shows the record as stale, not as a check of the config it runs with.
 *
 * Never a credential: the reason is scrubbed of the destination's secrets here, whoever built it,
 * and it holds only what the check printed (the CRM's account name, a problem, the CRM's refusal,
 * cleaned for a terminal). It is shown escaped (src/console/ops.ts): the CRM's people typed parts of it.
 */
export const CRM_CHECKS_KEY = 'crm:checks';

/** A reason is kept to this many characters (the first problem of many, a long refusal): a line, not a report. */
export const CHECK_REASON_MAX = 300;

export const crmCheckOutcomeSchema = z.object({
  /** When the check ended (ISO). */
  at: z.string(),
  /**
   * `ok`: the mapping can be used as configured (exit 0); `warn`: usable, with a warning (the
   * token expires within 14 days; exit 0); `fail`: it cannot (exit 1: the CRM refused or could
   * not be reached, the token expired, the mapping names what the CRM does not have).
   */
  outcome: z.enum(['ok', 'warn', 'fail']),
  /** Why, in one short line. */
  reason: z.string(),
  /** What it checked (checkFingerprint); absent on a record of a version before it. */
  config: z
    .object({
      salt: z.string(),
      /**
       * `masterKey`: `credentials` is keyed with a key derived from secrets.masterKey (and the
       * salt); absent: with the salt alone (no master key configured, or a version before it).
       */
      keyed: z.literal('masterKey').optional(),
      settings: z.string(),
      credentials: z.string(),
      agents: z.string(),
    })
    .optional(),
});
export type CrmCheckOutcome = z.infer<typeof crmCheckOutcomeSchema>;
export type CheckFingerprint = NonNullable<CrmCheckOutcome['config']>;

/**
 * What only deliveries use — their pace, retries, timeouts, which events reach the destination by
 * channel (`filter`), and the `map` derived from `crm` — and that a check neither reads nor
 * answers for: changing them leaves the last check standing. (`events` does count: the check
 * says whether offline messages can become tasks.)
 */
const DELIVERY_ONLY = new Set([
  'retrySchedule',
  'timeoutMs',
  'concurrency',
  'circuitBreaker',
  'failedRetention',
  'filter',
  'map',
]);

/** JSON with every object's keys sorted: the same config, however its file ordered it, digests the same. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`)
      .join(',')}}`;
  return JSON.stringify(value) ?? 'null';
}

/** Every string in `value` with the secrets in it replaced (scrub): what is left is no secret. */
function withoutSecrets(value: unknown, secrets: readonly string[]): unknown {
  if (typeof value === 'string') return scrub(value, secrets);
  if (Array.isArray(value)) return value.map((item) => withoutSecrets(item, secrets));
  if (value && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, withoutSecrets(item, secrets)]),
    );
  return value;
}

type CheckedAgents = ReadonlyArray<{ email: string; crmUserId?: string | undefined }>;

/** HKDF's purpose label: the key is no other use's key derived from the same master key. */
const CREDENTIALS_LABEL = 'chatbridge crm check credentials';

/**
 * The fingerprint of what a `crm check` of `destination` depends on, in three parts, so that a
 * stale record can say which changed: `settings` — the destination without what only deliveries
 * use (above) and with its secrets scrubbed out (the kind, the CRM's address, the mapping, the
 * events), a plain SHA-256; `agents` — each agent's e-mail and crmUserId, which the check
 * matches to CRM users; `credentials` — the destination's secrets (connector.secretsOf) as an
 * HMAC-SHA256, so the store holds no secret, nor a digest that matches one computed anywhere
 * else. Its key: with `masterKey` (secrets.masterKey, base64), one derived from it by HKDF with
 * `salt` and a label of its own — whoever reads the store (a replica, a backup) cannot try
 * guesses of a short token against the digest without the master key; without one, `salt`
 * itself, which is kept beside the digest and so hides only from a digest made elsewhere.
 * `salt` is 16 random bytes made for each check.
 */
export function checkFingerprint(
  destination: CrmDestinationConfig,
  secrets: readonly string[],
  agents: CheckedAgents,
  options: { masterKey?: string | undefined; salt?: string; keyed?: 'masterKey' | undefined } = {},
): CheckFingerprint {
  const salt = options.salt ?? randomBytes(16).toString('base64url');
  const keyed = options.salt === undefined ? (options.masterKey ? 'masterKey' : undefined) : options.keyed;
  const { crm, ...rest } = destination;
  const { rateLimit: _pace, ...mapping } = crm;
  const checked = Object.fromEntries(Object.entries(rest).filter(([key]) => !DELIVERY_ONLY.has(key)));
  const directory = agents
    .map((agent) => [agent.email.toLowerCase(), agent.crmUserId ?? null] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // A record keyed with a master key this config does not have cannot be matched: a key of 32
  // random bytes stands in, so the credentials read as changed (the check is not confirmed).
  const key =
    keyed === 'masterKey'
      ? Buffer.from(
          hkdfSync(
            'sha256',
            options.masterKey ? Buffer.from(options.masterKey, 'base64') : randomBytes(32),
            salt,
            CREDENTIALS_LABEL,
            32,
          ),
        )
      : salt;
  return {
    salt,
    ...(keyed ? { keyed } : {}),
    settings: digest('sha256', canonical(withoutSecrets({ ...checked, crm: mapping }, secrets)), 'base64url'),
    credentials: createHmac('sha256', key)
      .update(canonical([...secrets]))
      .digest('base64url'),
    agents: digest('sha256', canonical(directory), 'base64url'),
  };
}

/** A part of the config that changed since a check; `unknown`: the record says not what it checked. */
export type CheckChange = 'credentials' | 'settings' | 'agents' | 'unknown';

/**
 * Whether the recorded check still speaks for `destination` as configured now: the parts that
 * changed since (empty: none). `unknown`: the record has no fingerprint (a version before it),
 * so nothing says which config it checked. `masterKey`: secrets.masterKey of the config now; a
 * record keyed with a master key reads `credentials` changed without it, or with another one.
 */
export function changedSinceCheck(
  record: CrmCheckOutcome,
  destination: CrmDestinationConfig,
  secrets: readonly string[],
  agents: CheckedAgents,
  masterKey?: string,
): CheckChange[] {
  const then = record.config;
  if (!then) return ['unknown'];
  // Keyed as the record says it was, whatever this config's master key: a record of the salted
  // form (written before a master key was set) is still compared, not called stale for its form.
  const now = checkFingerprint(destination, secrets, agents, {
    masterKey,
    salt: then.salt,
    keyed: then.keyed,
  });
  return (['credentials', 'settings', 'agents'] as const).filter((part) => now[part] !== then[part]);
}

/**
 * One line, cleaned, scrubbed and cut to CHECK_REASON_MAX (at a code point). Scrubbed after the
 * cleaning: dropping a control character or joining lines must not put a secret back together.
 */
export function checkReason(text: string, secrets: readonly string[]): string {
  const line = scrub((cleanDisplayText(text) ?? '').replace(/\s+/g, ' '), secrets).trim();
  const points = [...line];
  return points.length <= CHECK_REASON_MAX ? line : `${points.slice(0, CHECK_REASON_MAX - 1).join('')}…`;
}

export async function recordCrmCheck(
  store: Store,
  destinationId: string,
  outcome: CrmCheckOutcome,
  secrets: readonly string[],
): Promise<void> {
  const kept: CrmCheckOutcome = { ...outcome, reason: checkReason(outcome.reason, secrets) };
  await store.hset(CRM_CHECKS_KEY, destinationId, JSON.stringify(kept));
}

/**
 * The last check of each of `destinationIds` that has one (one read for the status page). A
 * field that does not parse (written by a later version, or damaged) is left out, as no check.
 */
export async function readCrmChecks(
  store: Store,
  destinationIds: readonly string[],
): Promise<Map<string, CrmCheckOutcome>> {
  const checks = new Map<string, CrmCheckOutcome>();
  if (destinationIds.length === 0) return checks;
  const all = await store.hgetall(CRM_CHECKS_KEY);
  for (const id of destinationIds) {
    const raw = all[id];
    if (raw === undefined) continue;
    try {
      const parsed = crmCheckOutcomeSchema.safeParse(JSON.parse(raw));
      if (parsed.success) checks.set(id, parsed.data);
    } catch {
      // Unreadable: shown as never checked.
    }
  }
  return checks;
}
