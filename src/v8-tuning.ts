import { setFlagsFromString } from 'node:v8';

/**
 * V8 settings for the serving process (`chatbridge start`), applied before the bridge is built.
 *
 * **Allocation-site pretenuring off.** V8 watches, per allocation site, how many of its objects
 * survive a young-generation GC; when most do, it allocates that site's objects straight in the old
 * generation from then on. A server that awaits Redis in the middle of every request keeps the
 * request's objects (the parsed vendor payload, zod's results, the contact being written) alive
 * across the trip, so whenever a scavenge lands while fifty requests are in flight, their sites look
 * long-lived and get pretenured — although every one of those objects dies with its request. From
 * then on they fill the old generation, which only full mark-compacts empty: on Node 20 / V8 11.3
 * the JivoChat envelope parse of a 50-message transcript took 25 µs or 190 µs per payload depending
 * on whether that had happened in the process (same code, same input, random per start; 8 of 8 at
 * 25 µs with the flag off), and at saturation the bridge without its contact engine answered
 * chat_finished at 2,162 vs 3,792 req/s (0.60 vs 0.27 ms CPU per request). Measured figures and
 * commands: README "Benchmarks". The cost of turning it off: objects that do live long (caches,
 * config) are copied once more before promotion, which the same measurements include.
 *
 * An operator who sets the flag either way on node's command line
 * (`node --allocation-site-pretenuring bin/chatbridge.js start`) is obeyed; NODE_OPTIONS cannot
 * carry it (node refuses V8 flags there).
 */
export const PRETENURING_FLAG = '--no-allocation-site-pretenuring';

/** The flag to set, or null when the operator chose pretenuring on node's command line. */
export function pretenuringFlag(execArgv: readonly string[]): string | null {
  return execArgv.some((arg) => /^--(no-)?allocation[-_]site[-_]pretenuring$/.test(arg))
    ? null
    : PRETENURING_FLAG;
}

/** Applies the serving settings to this process; returns the flags it set (for the start-up log). */
export function tuneV8ForServing(): string[] {
  const flag = pretenuringFlag(process.execArgv);
  if (flag === null) return [];
  setFlagsFromString(flag);
  return [flag];
}
