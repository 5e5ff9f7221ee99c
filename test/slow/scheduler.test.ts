import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics.js';
import { createScheduler, type Scheduler } from '../../src/scheduler.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../support/redis.js';

/**
 * DESIGN §12: scheduled jobs run once per tick across any number of instances. Three schedulers,
 * each with its own Redis connection (as three processes would have), share one keyPrefix and run
 * a job every second (node-cron, 6 fields).
 */
const INSTANCES = 3;
const silent = pino({ level: 'silent' });

interface Run {
  instance: number;
  tick: string;
  started: number;
  ended: number;
}

describe('scheduled jobs across three instances', () => {
  let url: string;
  const prefixes: string[] = [];
  const stores: RedisStore[] = [];
  const schedulers: Scheduler[] = [];

  beforeAll(async () => {
    url = await getTestRedisUrl();
  });
  afterAll(async () => {
    for (const scheduler of schedulers) await scheduler.stop(1000);
    for (const store of stores) await store.close();
    for (const prefix of prefixes) await cleanupPrefix(url, prefix);
  });

  /** Three schedulers on one prefix; each run is recorded with the tick it ran for (from the log). */
  async function startInstances(
    jobMs: number,
    runLockTtlMs?: number,
  ): Promise<{ runs: Run[]; stop(): Promise<void> }> {
    const prefix = uniquePrefix('scheduler');
    prefixes.push(prefix);
    const runs: Run[] = [];
    const started = new Map<number, number>();
    const mine: Scheduler[] = [];
    for (let instance = 0; instance < INSTANCES; instance++) {
      const store = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
      stores.push(store);
      // The scheduler logs each finished run with its tick; keep those lines.
      const logger = pino(
        { level: 'debug' },
        new Writable({
          write(chunk, _encoding, done) {
            const line = JSON.parse(String(chunk)) as { msg: string; tick?: string };
            if (line.msg === 'scheduled job ran' && line.tick !== undefined) {
              runs.push({
                instance,
                tick: line.tick,
                started: started.get(instance) ?? 0,
                ended: Date.now(),
              });
            }
            done();
          },
        }),
      );
      const scheduler = createScheduler({
        jobs: [
          {
            channelId: 'site',
            job: {
              name: 'poll',
              schedule: '* * * * * *',
              async run() {
                started.set(instance, Date.now());
                await new Promise((resolve) => setTimeout(resolve, jobMs));
              },
            },
          },
        ],
        store,
        logger,
        metrics: new Metrics(),
        ...(runLockTtlMs === undefined ? {} : { runLockTtlMs }),
      });
      scheduler.start();
      schedulers.push(scheduler);
      mine.push(scheduler);
    }
    return {
      runs,
      async stop() {
        for (const scheduler of mine) await scheduler.stop(5000);
      },
    };
  }

  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('runs each tick of a 1-second schedule once, whichever instance takes it', async () => {
    const { runs, stop } = await startInstances(50);
    await until(() => runs.length >= 8, 'eight runs');
    await stop();

    const ticks = runs.map((run) => run.tick);
    expect(new Set(ticks).size, `a tick ran twice: ${ticks.join(', ')}`).toBe(ticks.length);
    // No tick was skipped by all three either: consecutive seconds from the first to the last.
    const seconds = ticks.map((tick) => Date.parse(tick) / 1000).sort((a, b) => a - b);
    expect(seconds.at(-1)! - seconds[0]!).toBe(seconds.length - 1);
  });

  it('never renews a run lock it lost: after its lock expired and another instance took it, that lock keeps its own TTL', async () => {
    const prefix = uniquePrefix('scheduler');
    prefixes.push(prefix);
    const mine = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    const theirs = await createRedisStore({ url, keyPrefix: prefix, logger: silent });
    stores.push(mine, theirs);
    // Count the renewal rounds the scheduler completes (whatever form they take) that started
    // after the takeover, so the test waits for renewals rather than for a length of time.
    let takenOver = false;
    let renewedAfter = 0;
    const counting = <T>(work: Promise<T>): Promise<T> => {
      const after = takenOver;
      return work.finally(() => {
        if (after) renewedAfter++;
      });
    };
    const counted: Store = {
      ...mine,
      batch() {
        const batch = mine.batch();
        const exec = batch.exec.bind(batch);
        return Object.assign(batch, { exec: () => counting(exec()) });
      },
      async lock(keys, options) {
        const lock = await mine.lock(keys, options);
        return {
          keys: lock.keys,
          release: () => lock.release(),
          renew: (ttlMs) => counting(lock.renew(ttlMs)),
        };
      },
    };
    let started = false;
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const scheduler = createScheduler({
      jobs: [
        {
          channelId: 'site',
          job: {
            name: 'poll',
            // Never started (start() is not called): the run comes from runNow.
            schedule: '0 0 1 1 *',
            async run() {
              started = true;
              await finished;
            },
          },
        },
      ],
      store: counted,
      logger: silent,
      metrics: new Metrics(),
      runLockTtlMs: 300,
    });
    schedulers.push(scheduler);
    const running = scheduler.runNow('site', 'poll');
    await until(() => started, 'the run to start');
    // The run's lock is lost as after a long pause (it expired), and another instance takes it.
    await theirs.del('lock:job:site:poll');
    const other = await theirs.lock(['job:site:poll'], { ttlMs: 60_000, waitMs: 0 });
    takenOver = true;
    await until(() => renewedAfter >= 1, 'a renewal round of the first run after the takeover');
    expect(await theirs.pttl('lock:job:site:poll')).toBeGreaterThan(30_000);
    finish();
    expect(await running).toBe('ok');
    // Its end did not release the other instance's lock either.
    expect(await theirs.pttl('lock:job:site:poll')).toBeGreaterThan(30_000);
    await expect(mine.lock(['job:site:poll'], { ttlMs: 1000, waitMs: 0 })).rejects.toThrow();
    await other.release();
  });

  it('keeps a long run to itself: its lock is renewed past its TTL, so no instance starts another run beside it', async () => {
    // The run lasts 2.5 s and its lock lives 600 ms unless renewed; ticks come every second.
    const { runs, stop } = await startInstances(2500, 600);
    await until(() => runs.length >= 3, 'three runs');
    await stop();

    const ordered = [...runs].sort((a, b) => a.started - b.started);
    for (let i = 1; i < ordered.length; i++) {
      expect(ordered[i]!.started, 'a run started while another was still running').toBeGreaterThanOrEqual(
        ordered[i - 1]!.ended,
      );
    }
    expect(new Set(runs.map((run) => run.tick)).size).toBe(runs.length);
  });
});
