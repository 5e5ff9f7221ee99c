import { z } from 'zod';
import { cleanDisplayText } from '../contacts/normalize.js';
import type { Store } from '../store/types.js';
import { scrub } from './errors.js';

/**
 * What the last `chatbridge crm check` of each CRM destination said, kept in the store: the check
 * runs in a CLI process, and an operator reading the console's status page (any instance) wants
 * to know when the CRM connection was last checked and how it went. One hash field per
 * destination id, overwritten by each check: `{at, outcome, reason}`.
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
});
export type CrmCheckOutcome = z.infer<typeof crmCheckOutcomeSchema>;

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
