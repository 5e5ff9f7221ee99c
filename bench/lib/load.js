import { loadavg } from 'node:os';
import autocannon from 'autocannon';

/**
 * One measurement with autocannon: `warmup` seconds (discarded: JIT, connection set-up), then
 * `duration` seconds measured. Each request is built by `next()` (body) and `pathOf()` (path),
 * so that every request can be a different visitor, chat or token.
 */
function once({ url, method, path, pathOf, headers, next, connections, duration }) {
  return autocannon({
    url,
    connections,
    duration,
    pipelining: 1,
    timeout: 10,
    requests: [
      {
        method,
        path: path ?? '/',
        headers,
        setupRequest(request) {
          const { body } = next();
          return {
            ...request,
            ...(pathOf ? { path: pathOf() } : {}),
            ...(body !== undefined ? { body } : {}),
          };
        },
      },
    ],
  });
}

export async function measure(options) {
  const warm = options.warmup > 0 ? await once({ ...options, duration: options.warmup }) : null;
  const result = await once(options);
  return {
    requestsIncludingWarmup: result.requests.total + (warm?.requests.total ?? 0),
    rps: result.requests.average,
    requests: result.requests.total,
    p50: result.latency.p50,
    p90: result.latency.p90,
    p99: result.latency.p99,
    max: result.latency.max,
    mean: result.latency.mean,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: result.statusCodeStats,
  };
}

/**
 * A fixed-rate load, as bench/cpu.js, bench/ladder.js and bench/syscalls.js send it: `rate`
 * requests per second in all over `connections` connections, for `duration` seconds or, with
 * `amount`, until that many requests are answered (a warm-up that must reach every known person
 * however long a busy machine takes). Each request's body is `body()`, so that every request can
 * be a different visitor or chat. Resolves to autocannon's result.
 */
export function atFixedRate({
  url,
  rate,
  method,
  path,
  type,
  body,
  duration,
  amount,
  connections = 20,
  headers = {},
}) {
  return autocannon({
    url,
    connections,
    overallRate: rate,
    ...(amount !== undefined ? { amount } : { duration }),
    requests: [
      {
        method,
        path,
        headers: { ...(type ? { 'content-type': type, accept: type } : {}), ...headers },
        setupRequest: (request) => ({ ...request, body: body() }),
      },
    ],
  });
}

/**
 * One round of a fixed-rate comparison: every side (anything with a `pid`) loaded at once, so that
 * all of them share whatever the machine does in those seconds, each one's counters read by
 * `read(pid)` (bench/lib/procs.js: cpuNs, cpuMs) just before and just after its own load, whose
 * atFixedRate options `load(side)` gives. Resolves to `{side, run, answered, before, after}` a side,
 * in the order of `sides`.
 */
export function loadAtOnce(sides, { read, load }) {
  return Promise.all(
    sides.map(async (side) => {
      const before = read(side.pid);
      const run = await atFixedRate(load(side));
      const after = read(side.pid);
      return { side, run, answered: answeredOf(run), before, after };
    }),
  );
}

/** The requests of an autocannon result that were answered 2xx. */
export const answeredOf = (run) => run.requests.total - run.non2xx;

/**
 * The order of a round's sides: odd rounds reversed, so that no side is always started (or, in
 * one process, measured) first.
 */
export const roundOrder = (sides, round) => (round % 2 === 1 ? [...sides].reverse() : sides);

/** The median; of an even count, the mean of the middle two. */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * The machine's load average (1, 5 and 15 minutes), which the fixed-rate tools print beside each
 * round: on a shared machine it says how much else was running while a round was measured.
 */
export const loads = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');

/** The time of day in UTC (hh:mm:ss), for the tools' progress lines. */
export const stamp = () => new Date().toISOString().slice(11, 19);
