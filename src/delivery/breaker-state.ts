import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { z } from 'zod';
import { cleanDisplayText, clipText } from '../contacts/normalize.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import type { Store } from '../store/types.js';

/**
 * Which destinations a circuit breaker holds back now, for the people looking: the console's
 * Deliveries pages, the admin API's deliveries list, `chatbridge deliveries list`. The breaker
 * lives in the memory of the instance whose attempts failed (breaker.ts), while its pause holds
 * for every instance (the queue's); without this, the console of any instance showed the
 * destination's deliveries "pending, 0 attempts" with no reason.
 *
 * Written only when a breaker changes state — it opens (again, after a failed trial): one
 * read and one atomic write; it closes: one field removed —, never on an attempt's path. One hash
 * per destination, one field per instance, each `{instance, since, until, failures, lastError}`.
 * A field is shown only while its `until` is ahead: a half-open breaker (its cooldown over, its
 * trial to come) holds nothing back, and an instance that died with its breaker open leaves a
 * field that goes out of sight at its `until`, is dropped by the next write, and goes with the
 * key, which lapses GRACE_MS after the last `until` written.
 */

export const breakerKey = (destinationId: string) => `delivery:breaker:${encodeURIComponent(destinationId)}`;

/** How long the key outlives the latest `until` written (instances' clocks apart, a slow write). */
export const GRACE_MS = 60_000;
/** The last failure's message is kept to this many characters (a line on the page). */
const REASON_MAX = 200;

const storedSchema = z.object({
  /** Host and process of the instance (`web-7f9c:4242`), as an operator finds it in its logs. */
  instance: z.string(),
  /** When the breaker opened first in this run of failures (ISO). */
  since: z.string(),
  /** When it lets a trial attempt through (ISO); until then nothing is sent to the destination. */
  until: z.string(),
  /** Failed attempts in a row on that instance, the trials' included. */
  failures: z.number().int().nonnegative(),
  /** The failure that opened it (the attempt's error, as the delivery keeps it). */
  lastError: z.string().nullable(),
});

export const breakerOpenSchema = storedSchema.extend({ destination: z.string() });
/** One instance's open breaker for one destination. */
export type BreakerOpen = z.infer<typeof breakerOpenSchema>;

export interface BreakerOpening {
  /** ms since epoch, on the breaker's clock (Date.now). */
  since: number;
  until: number;
  failures: number;
  lastError: string | undefined;
}

export interface BreakerRecorder {
  /** The breaker opened (or opened again): record it. Never throws; writes run in order per destination. */
  opened(destinationId: string, opening: BreakerOpening): void;
  /** It closed: remove this instance's field, if an opening was recorded. Never throws. */
  closed(destinationId: string): void;
  /** Resolves when every write asked for so far has been tried (tests, shutdown). */
  settled(): Promise<void>;
}

/** The instance as the record names it. */
export function instanceName(): string {
  return `${hostname()}:${process.pid}`;
}

export function createBreakerRecorder(options: {
  store: Store;
  /** This instance's field in each hash (unique per running delivery, also within one process). */
  instanceId: string;
  instance?: string;
  logger: Logger;
  now?: () => number;
}): BreakerRecorder {
  const { store, instanceId, logger } = options;
  const instance = options.instance ?? instanceName();
  const now = options.now ?? Date.now;
  const repeats = createRepeatGate();
  const chains = new Map<string, Promise<void>>();
  const recorded = new Set<string>();

  /** One write after the other per destination: a close must not land before the opening it ends. */
  function queue(destinationId: string, write: () => Promise<void>): void {
    const next = (chains.get(destinationId) ?? Promise.resolve()).then(write).catch((error: unknown) =>
      // The pause itself does not depend on it: only what the pages show.
      warnOncePerMinute(
        logger,
        repeats,
        destinationId,
        { err: error, destination: destinationId },
        `destination ${destinationId}: the circuit breaker's state was not recorded for the console and the admin API; they may not show it`,
      ),
    );
    chains.set(destinationId, next);
  }

  return {
    opened(destinationId, opening) {
      recorded.add(destinationId);
      const value: z.infer<typeof storedSchema> = {
        instance,
        since: new Date(opening.since).toISOString(),
        until: new Date(opening.until).toISOString(),
        failures: opening.failures,
        // Shown in a terminal too (deliveries list): no escapes, bidi overrides or controls.
        lastError:
          opening.lastError === undefined
            ? null
            : clipText(cleanDisplayText(opening.lastError) ?? '', REASON_MAX) || null,
      };
      queue(destinationId, async () => {
        const key = breakerKey(destinationId);
        const at = now();
        const fields = await store.hgetall(key);
        const batch = store.batch().hset(key, instanceId, JSON.stringify(value));
        let last = opening.until;
        for (const [field, raw] of Object.entries(fields)) {
          if (field === instanceId) continue;
          const until = untilOf(raw);
          // Another instance's opening still ahead keeps the key alive with it; a lapsed or
          // unreadable one (an instance that died with its breaker open) goes now.
          if (until !== null && until + GRACE_MS > at) last = Math.max(last, until);
          else batch.hdel(key, field);
        }
        batch.expire(key, Math.max(last - at, 0) + GRACE_MS);
        await batch.exec();
      });
    },
    closed(destinationId) {
      if (!recorded.delete(destinationId)) return;
      queue(destinationId, async () => {
        await store.hdel(breakerKey(destinationId), instanceId);
      });
    },
    async settled() {
      await Promise.all(chains.values());
    },
  };
}

function untilOf(raw: string): number | null {
  try {
    const parsed = storedSchema.safeParse(JSON.parse(raw));
    if (!parsed.success) return null;
    const until = Date.parse(parsed.data.until);
    return Number.isNaN(until) ? null : until;
  } catch {
    return null;
  }
}

/**
 * The breakers open now (their `until` ahead of `now`) of these destinations, on any instance:
 * one hash read per destination, sent together. Newest opening first within a destination; a
 * field that does not parse (damaged, or a later version's) is left out.
 */
export async function readOpenBreakers(
  store: Store,
  destinationIds: readonly string[],
  now: number = Date.now(),
): Promise<BreakerOpen[]> {
  const hashes = await Promise.all(destinationIds.map((id) => store.hgetall(breakerKey(id))));
  const open: BreakerOpen[] = [];
  destinationIds.forEach((destination, index) => {
    const found: BreakerOpen[] = [];
    for (const raw of Object.values(hashes[index] ?? {})) {
      try {
        const parsed = storedSchema.safeParse(JSON.parse(raw));
        if (parsed.success && Date.parse(parsed.data.until) > now)
          found.push({ destination, ...parsed.data });
      } catch {
        // Unreadable: not shown.
      }
    }
    open.push(...found.sort((a, b) => b.until.localeCompare(a.until)));
  });
  return open;
}

/** One line for people: "destination crm paused until … after 5 failed attempts in a row (instance …)". */
export function describeBreaker(open: BreakerOpen): string {
  return `destination ${open.destination} paused until ${open.until} after ${open.failures} failed attempt${
    open.failures === 1 ? '' : 's'
  } in a row (circuit breaker of instance ${open.instance}, open since ${open.since})${
    open.lastError ? `; last error: ${open.lastError}` : ''
  }`;
}
