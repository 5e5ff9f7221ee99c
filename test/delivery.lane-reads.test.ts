import { afterEach, describe, expect, it } from 'vitest';
import { jobOf } from '../src/delivery/records.js';
import { StoreUnavailableError } from '../src/errors.js';
import type { Store, StoreBatch } from '../src/store/types.js';
import { startLaneWorld } from './support/lane-world.js';

/**
 * A delivery's reads of its lane come with store steps it makes anyway. A job that names its lane
 * reads its record, the lane's head and the lane's links in one step (Store.readMany), and a mark
 * that takes a record out of its lane (delivered, failed) reads the lane's next head and its
 * followers in the mark's own step, after the write (StoreBatch.execThenRead): waking the next
 * delivery takes no lane read of its own, only the next one's record. Before, each was a command
 * (per delivered event four sorted-set reads and a GET more on Redis; bench/delivery-trips.js).
 * Outcomes are test/delivery.job-lane.test.ts's and test/delivery.lane-links.test.ts's; here the
 * store calls, on both stores, and a mark whose answer was lost, which still wakes its lane.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** The store's calls (a batch's as `exec` / `execThenRead`), noted in `calls`; `lose` fails a mark's answer. */
function watched(calls: string[], lose: { next: boolean }) {
  return (store: Store): Store =>
    new Proxy(store, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver);
        if (typeof value !== 'function') return value;
        if (name !== 'batch')
          return (...args: unknown[]) => {
            calls.push(String(name));
            return value.apply(target, args);
          };
        return () => {
          const batch: StoreBatch = target.batch();
          const exec = batch.exec.bind(batch);
          const execThenRead = batch.execThenRead.bind(batch);
          batch.exec = () => {
            calls.push('exec');
            return exec();
          };
          batch.execThenRead = async (reads) => {
            calls.push('execThenRead');
            const answer = await execThenRead(reads);
            if (lose.next) {
              // Written, but the answer never came back (a failover): the caller tries again.
              lose.next = false;
              throw new StoreUnavailableError();
            }
            return answer;
          };
          return batch;
        };
      },
    });
}

describe.each(['memory', 'redis'] as const)('a delivery’s lane reads (%s store)', (kind) => {
  async function setup() {
    const calls: string[] = [];
    const lose = { next: false };
    const world = await startLaneWorld({
      kind,
      name: 'lane-reads',
      eventType: 'message.received',
      wrapStore: watched(calls, lose),
    });
    cleanups.push(world.close);
    // Boris's two deliveries, then a merge into Anna, whose lane follows Boris's from there.
    const [boris1, boris2] = await world.records.ensure(
      [world.plan('b1', 'c_boris'), world.plan('b2', 'c_boris')],
      new Date(),
    );
    const [merge] = await world.records.ensure([world.plan('m', 'c_anna')], new Date(), [
      { destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 0 },
    ]);
    calls.length = 0;
    return { ...world, calls, lose, boris1: boris1!, boris2: boris2!, merge: merge! };
  }

  it('a delivered job reads its lane with its record and with its mark: no lane read of its own', async () => {
    const { run, calls, woken, posts, boris1, boris2, merge } = await setup();
    expect(await run('hook', jobOf(boris1))).toEqual({ kind: 'done' });
    // Its record, head and links; the mark with the lane after it; the next one's record.
    expect(calls).toEqual(['readMany', 'execThenRead', 'get']);
    expect(woken).toEqual(['b2.0']);

    calls.length = 0;
    expect(await run('hook', jobOf(boris2))).toEqual({ kind: 'done' });
    // The last of Boris's: the link is dropped, and the following lane's head read and woken.
    expect(calls).toEqual(['readMany', 'execThenRead', 'exec', 'zrangeByScore', 'get']);
    expect(woken).toEqual(['b2.0', 'm.0']);

    calls.length = 0;
    expect(await run('hook', jobOf(merge))).toEqual({ kind: 'done' });
    expect(calls).toEqual(['readMany', 'execThenRead']);
    expect(posts).toEqual(['evt_b1', 'evt_b2', 'evt_m']);
  });

  it('a job waiting behind its lane’s head reads the head’s record only', async () => {
    const { run, calls, boris2, woken } = await setup();
    expect(await run('hook', jobOf(boris2))).toMatchObject({ kind: 'later', behind: true });
    expect(calls).toEqual(['readMany', 'get']);
    expect(woken).toEqual([]);
  });

  it('a mark whose answer was lost is found written, and its lane is read then: the next one is woken', async () => {
    const { run, calls, lose, woken, posts, records, boris1 } = await setup();
    lose.next = true;
    expect(await run('hook', jobOf(boris1))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_b1']);
    // Tried again: the record is this mark's already (its own text), so no lane came with it.
    expect(calls).toEqual([
      'readMany',
      'execThenRead',
      'execThenRead',
      'get',
      'zrangeByScore',
      'zrangeByScoreWithScores',
      'get',
    ]);
    expect(woken).toEqual(['b2.0']);
    expect(await records.get('b1')).toMatchObject({ state: 'delivered', attempts: 1 });
  });
});
