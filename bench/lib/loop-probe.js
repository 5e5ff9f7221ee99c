// A probe loaded into a bridge under test (`node --import <this file> bin/chatbridge.js start`) by
// bench/tail.js: what holds the event loop, and when. Nothing of the bridge is changed; the probe
// only watches. SIGUSR2 writes what it saw since the previous SIGUSR2 to
// `$CB_PROBE_DIR/probe-<pid>.json` and starts again.
//
// - **Gaps**: a 1 ms interval timer; the time between two of its turns is (at least) how long the
//   loop was held by everything else in between, so every gap above 1 ms is a stall of that size
//   (a loop iteration that ran long). Kept: all gaps (for percentiles) and the long ones with
//   their time, how many responses ended in them, and which GCs fell inside.
//   Each tick also reads the main thread's schedstat (time on a core, time runnable but waiting
//   for one), so a stall can be told apart from the machine's: bench/tail.js turns it into each
//   answer's "run time" (the loop's work while it was in flight).
// - **GC**: every collection's start, duration and kind (PerformanceObserver 'gc').
// - **Server time**: for every answer, from the 'request' event (headers parsed) to `res.end`
//   ('finish'), which leaves out the time a request waited for the loop before it was read.
// Linux only (schedstat). Its own cost: ~1 % of the bridge's busy time (a --cpu-prof at 300 req/s).
import { openSync, readSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { constants, PerformanceObserver, performance } from 'node:perf_hooks';

const dir = process.env.CB_PROBE_DIR;
const LONG_MS = Number(process.env.CB_PROBE_LONG_MS ?? 8);
let state = fresh();
function fresh() {
  return {
    since: performance.now(),
    gaps: [],
    ticks: [],
    long: [],
    gcs: [],
    server: [],
    starts: [],
    turns: [],
    ended: 0,
  };
}

// The main thread's own clocks (Linux schedstat): time on a core and time runnable but waiting
// for one, in ms. A stall with much waiting is the machine's (other processes had the cores);
// the bridge's own stalls are time running.
const schedstat = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r');
const statBuffer = Buffer.alloc(96);
function clocks() {
  const bytes = readSync(schedstat, statBuffer, 0, statBuffer.length, 0);
  const [run, wait] = statBuffer.toString('latin1', 0, bytes).split(' ');
  return { run: Number(run) / 1e6, wait: Number(wait) / 1e6 };
}
let lastClocks = clocks();
let last = performance.now();
/** Turns of the timer so far: how many loop iterations a request spanned (when they are > 1 ms). */
let turn = 0;
const tick = setInterval(() => {
  const now = performance.now();
  const gap = now - last;
  last = now;
  const thread = clocks();
  const runMs = thread.run - lastClocks.run;
  const waitMs = thread.wait - lastClocks.wait;
  lastClocks = thread;
  state.gaps.push(gap);
  state.ticks.push(now, thread.run, thread.wait);
  if (gap >= LONG_MS) state.long.push({ at: now - gap, gap, runMs, waitMs, ended: state.ended });
  state.ended = 0;
  turn++;
}, 1);
tick.unref();

const KINDS = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries())
    state.gcs.push({ at: entry.startTime, ms: entry.duration, kind: KINDS[entry.detail?.kind] ?? 'other' });
}).observe({ entryTypes: ['gc'] });

const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, ...args) {
  if (event === 'request') {
    const response = args[1];
    const started = performance.now();
    const firstTurn = turn;
    response.once('finish', () => {
      state.ended++;
      state.server.push(performance.now() - started);
      state.starts.push(started);
      state.turns.push(turn - firstTurn);
    });
  }
  return emit.call(this, event, ...args);
};

process.on('SIGUSR2', () => {
  const seen = state;
  state = fresh();
  last = performance.now();
  lastClocks = clocks();
  if (!dir) return;
  // GCs inside each long gap: what of the stall was collection.
  for (const gap of seen.long) {
    const inside = seen.gcs.filter((gc) => gc.at >= gap.at && gc.at < gap.at + gap.gap);
    gap.gcMs = inside.reduce((sum, gc) => sum + gc.ms, 0);
    gap.gcKinds = inside.map((gc) => gc.kind).join(',');
  }
  writeFileSync(
    join(dir, `probe-${process.pid}.json`),
    // µs of CLOCK_MONOTONIC (what a --cpu-prof profile's timestamps count) at performance.now() 0.
    JSON.stringify({
      ms: performance.now() - seen.since,
      monotonicUsAtZero: Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000,
      ...seen,
    }),
  );
});
