import { afterEach, describe, expect, it } from 'vitest';
import { jobOf } from '../src/delivery/records.js';
import { startLaneWorld } from './support/lane-world.js';

/**
 * Lane links (a merge, an unmerge): from its place on, a lane's deliveries wait for the pending
 * deliveries of the lane it follows that were recorded before the link, and the last of those,
 * leaving, wakes the lane. Deliveries of the lane from before the link are not held. The drain
 * writes a link once, with the records of its chunk: a drain repeated after a crash keeps the
 * first one's place, and a contact with nothing pending needs none. Outcomes only, both stores.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each(['memory', 'redis'] as const)('lane links (%s store)', (kind) => {
  async function setup() {
    const world = await startLaneWorld({ kind, name: 'lane-links', eventType: 'message.received' });
    cleanups.push(world.close);
    return world;
  }

  it('holds the survivor’s deliveries from the merge on behind the absorbed contact’s, not its earlier ones', async () => {
    const { records, plan, run, woken, posts } = await setup();
    // Anna's own earlier message, then Boris's two, then the merge chunk: Anna absorbs Boris.
    const [annaBefore] = await records.ensure([plan('a0', 'c_anna')], new Date());
    const [boris1, boris2] = await records.ensure([plan('b1', 'c_boris'), plan('b2', 'c_boris')], new Date());
    const link = { destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 0 };
    const [merge, annaAfter] = await records.ensure([plan('m', 'c_anna'), plan('a1', 'c_anna')], new Date(), [
      link,
    ]);
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);
    // A drain of the same chunk repeated after a crash: the link keeps its place.
    await records.ensure([plan('m', 'c_anna'), plan('a1', 'c_anna')], new Date(), [link]);
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);

    // Anna's message from before the merge is not held by Boris's.
    expect(await run('hook', jobOf(annaBefore!))).toEqual({ kind: 'done' });
    expect(woken).toEqual(['m.0']);
    expect(await run('hook', jobOf(merge!))).toMatchObject({ kind: 'later', behind: true });
    expect(posts).toEqual(['evt_a0']);

    expect(await run('hook', jobOf(boris1!))).toEqual({ kind: 'done' });
    // Boris's next one is woken; the merge is not (Boris's b2 is still pending before it).
    expect(woken).toEqual(['m.0', 'b2.0']);
    expect(await run('hook', jobOf(boris2!))).toEqual({ kind: 'done' });
    // The last of Boris's: the survivor's lane is woken, and the link has done its work.
    expect(woken).toEqual(['m.0', 'b2.0', 'm.0']);
    expect(await records.follows('hook', 'c_anna')).toEqual([]);
    expect(await records.followers('hook', 'c_boris')).toEqual([]);

    expect(await run('hook', jobOf(merge!))).toEqual({ kind: 'done' });
    expect(await run('hook', jobOf(annaAfter!))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_a0', 'evt_b1', 'evt_b2', 'evt_m', 'evt_a1']);
  });

  it('follows the absorbed contact’s deliveries of the same chunk, before the merge, and none after it', async () => {
    const { records, plan, run, posts } = await setup();
    const [boris1, merge] = await records.ensure(
      [plan('b1', 'c_boris'), plan('m', 'c_anna'), plan('b9', 'c_boris')],
      new Date(),
      [{ destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 1 }],
    );
    expect(await records.follows('hook', 'c_anna')).toEqual([{ lane: 'c_boris', from: merge!.seq }]);
    expect((await run('hook', jobOf(merge!))).kind).toBe('later');
    expect(await run('hook', jobOf(boris1!))).toEqual({ kind: 'done' });
    // b9 came after the merge (an unmerged Boris again): the merge does not wait for it.
    expect(await run('hook', jobOf(merge!))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_b1', 'evt_m']);
  });

  it('writes no link for a contact with nothing pending, and none to its own lane', async () => {
    const { records, plan } = await setup();
    await records.ensure([plan('m', 'c_anna')], new Date(), [
      { destinationId: 'hook', lane: 'c_anna', follows: 'c_boris', at: 0 },
      { destinationId: 'hook', lane: 'c_anna', follows: 'c_anna', at: 0 },
    ]);
    expect(await records.follows('hook', 'c_anna')).toEqual([]);
    expect(await records.followers('hook', 'c_boris')).toEqual([]);
  });
});
