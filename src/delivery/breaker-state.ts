import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { z } from 'zod';
import { cleanDisplayText, clipText } from '../contacts/normalize.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import type { Store } from '../store/types.js';

/**
 * Which destinations a circuit breaker, or a destination's own Retry-After, holds back now, for
 * the people looking: the console's
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
 *
 * A Retry-After pause (a 429, or a 503 with Retry-After: the processor pauses the whole
 * destination for up to 10 minutes, queue-wide) goes into the same hash, in a field of its own
 * per instance (`<instance id>:retry-after`, cause `retry-after`), written when the pause it sets
 * ends later than the one it recorded last: one read and one atomic write, off the attempt's path
 * (the writes of one destination go one after the other, as the breaker's). It is never removed:
 * the pause cannot be ended early either, and the field goes out of sight at its `until`. Readers
 * show one such pause per destination, the one that ends last (every instance's pause holds for
 * the whole destination). Before, only the delivery that got the answer said so: the destination
 * showed pending deliveries with no attempt and no reason for up to 10 minutes.
 */

export const breakerKey = (destinationId: string) => `delivery:breaker:${encodeURIComponent(destinationId)}`;

/** How long the key outlives the latest `until` written (instances' clocks apart, a slow write). */
export const GRACE_MS = 60_000;
/** The last failure's message is kept to this many characters (a line on the page). */
const REASON_MAX = 200;

/** What holds the destination back: its circuit breaker, or its own Retry-After answer. */
export const pauseCauses = ['circuit-breaker', 'retry-after'] as const;
export type PauseCause = (typeof pauseCauses)[number];

const storedSchema = z.object({
  /** Fields written before Retry-After pauses were recorded have none: they are breakers. */
  cause: z.enum(pauseCauses).default('circuit-breaker'),
  /** Host and process of the instance (`web-7f9c:4242`), as an operator finds it in its logs. */
  instance: z.string(),
  /**
   * When the breaker opened first in this run of failures (ISO); for a Retry-After pause, when the
   * answer that set it came.
   */
  since: z.string(),
  /**
   * When it lets a trial attempt through (ISO); until then nothing is sent to the destination.
   * For a Retry-After pause, when the pause ends (the Retry-After, at most 10 minutes).
   */
  until: z.string(),
  /** Failed attempts in a row on that instance, the trials' included (0 for a Retry-After pause). */
  failures: z.number().int().nonnegative(),
  /** The failure that opened it (the attempt's error, as the delivery keeps it), or the answer that asked for the pause. */
  lastError: z.string().nullable(),
});
type Stored = z.infer<typeof storedSchema>;

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

export interface RetryAfterPause {
  /** ms since epoch: when the answer came, and when the destination's pause ends. */
  since: number;
  until: number;
  /** The answer, as the delivery keeps it ("HTTP 429: …"). */
  lastError: string;
}

export interface BreakerRecorder {
  /** The breaker opened (or opened again): record it. Never throws; writes run in order per destination. */
  opened(destinationId: string, opening: BreakerOpening): void;
  /**
   * The destination asked for a pause (Retry-After) and it was set: record it, unless this
   * instance recorded one that ends as late already. Never throws; in order with the rest.
   */
  retryAfter(destinationId: string, pause: RetryAfterPause): void;
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

  /** Retry-After pauses recorded by this instance: when the last one ends, per destination. */
  const retryAfterUntil = new Map<string, number>();

  /** Shown in a terminal too (deliveries list): no escapes, bidi overrides or controls. */
  const reasonOf = (text: string | undefined) =>
    text === undefined ? null : clipText(cleanDisplayText(text) ?? '', REASON_MAX) || null;

  /**
   * Write `value` into this instance's `field` of the destination's hash, dropping the fields of
   * other instances that have lapsed (or do not parse), and keep the key until GRACE_MS after the
   * latest `until` in it.
   */
  function write(destinationId: string, field: string, value: Stored, until: number) {
    queue(destinationId, async () => {
      const key = breakerKey(destinationId);
      const at = now();
      const fields = await store.hgetall(key);
      const batch = store.batch().hset(key, field, JSON.stringify(value));
      let last = until;
      for (const [other, raw] of Object.entries(fields)) {
        if (other === field) continue;
        const otherUntil = untilOf(raw);
        // Another opening or pause still ahead keeps the key alive with it; a lapsed or
        // unreadable one (an instance that died with its breaker open) goes now.
        if (otherUntil !== null && otherUntil + GRACE_MS > at) last = Math.max(last, otherUntil);
        else batch.hdel(key, other);
      }
      batch.expire(key, Math.max(last - at, 0) + GRACE_MS);
      await batch.exec();
    });
  }

  return {
    opened(destinationId, opening) {
      recorded.add(destinationId);
      write(
        destinationId,
        instanceId,
        {
          cause: 'circuit-breaker',
          instance,
          since: new Date(opening.since).toISOString(),
          until: new Date(opening.until).toISOString(),
          failures: opening.failures,
          lastError: reasonOf(opening.lastError),
        },
        opening.until,
      );
    },
    retryAfter(destinationId, pause) {
      // A pause this instance recorded already ends as late: the pause holds that long anyway.
      if ((retryAfterUntil.get(destinationId) ?? 0) >= pause.until) return;
      retryAfterUntil.set(destinationId, pause.until);
      write(
        destinationId,
        `${instanceId}:retry-after`,
        {
          cause: 'retry-after',
          instance,
          since: new Date(pause.since).toISOString(),
          until: new Date(pause.until).toISOString(),
          failures: 0,
          lastError: reasonOf(pause.lastError),
        },
        pause.until,
      );
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
 * The breakers open now (their `until` ahead of `now`) of these destinations, on any instance,
 * and their Retry-After pauses (the one that ends last per destination: each holds the whole
 * destination): one hash read per destination, sent together. Within a destination the
 * Retry-After pause first, then the breakers, the latest `until` first; a field that does not
 * parse (damaged, or a later version's) is left out.
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
    let retryAfter: BreakerOpen | undefined;
    for (const raw of Object.values(hashes[index] ?? {})) {
      try {
        const parsed = storedSchema.safeParse(JSON.parse(raw));
        if (!parsed.success || !(Date.parse(parsed.data.until) > now)) continue;
        const item = { destination, ...parsed.data };
        if (item.cause === 'circuit-breaker') found.push(item);
        else if (retryAfter === undefined || Date.parse(item.until) > Date.parse(retryAfter.until))
          retryAfter = item;
      } catch {
        // Unreadable: not shown.
      }
    }
    if (retryAfter) open.push(retryAfter);
    open.push(...found.sort((a, b) => b.until.localeCompare(a.until)));
  });
  return open;
}

/**
 * One line for people: "destination crm paused until … after 5 failed attempts in a row (circuit
 * breaker of instance …)", or "destination crm paused until … at its own request (Retry-After …)".
 */
export function describeBreaker(open: BreakerOpen): string {
  if (open.cause === 'retry-after')
    return `destination ${open.destination} paused until ${open.until} at its own request (it answered with Retry-After at ${open.since}; seen by instance ${open.instance})${
      open.lastError ? `; answer: ${open.lastError}` : ''
    }`;
  return `destination ${open.destination} paused until ${open.until} after ${open.failures} failed attempt${
    open.failures === 1 ? '' : 's'
  } in a row (circuit breaker of instance ${open.instance}, open since ${open.since})${
    open.lastError ? `; last error: ${open.lastError}` : ''
  }`;
}
