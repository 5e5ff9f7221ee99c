import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveryJob } from '../src/delivery/queue.js';
import { jobOf } from '../src/delivery/records.js';
import { startLaneWorld } from './support/lane-world.js';

/**
 * A queue job names its delivery's lane (DeliveryJob.orderingKey), so the worker reads the record
 * and the lane's head together. The record stays the judge: a job without the lane (queued by an
 * older version) or with a lane the record does not have still waits behind an earlier pending
 * delivery of its contact, and the next delivery of the lane is woken when one is marked.
 * Outcomes only, on both stores.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each(['memory', 'redis'] as const)('a delivery job and its lane (%s store)', (kind) => {
  async function setup() {
    const world = await startLaneWorld({
      kind,
      name: 'job-lane',
      eventType: 'conversation.started',
      retrySchedule: ['0s', '1s'],
    });
    cleanups.push(world.close);
    // Two events of one contact, in this order, and one of another contact.
    const [first, second, other] = await world.records.ensure(
      [world.plan('d1', 'c_anna'), world.plan('d2', 'c_anna'), world.plan('d3', 'c_boris')],
      new Date(),
    );
    const { records, run, posts, woken } = world;
    return { records, run, first: first!, second: second!, other: other!, posts, woken };
  }

  it('jobs carry their lane; the second event of a contact waits behind the first, then is woken', async () => {
    const { records, run, first, second, posts, woken } = await setup();
    expect(jobOf(second)).toEqual({ deliveryId: 'd2', cycle: 0, orderingKey: 'c_anna' });

    expect((await run('hook', jobOf(second))).kind).toBe('later');
    expect(posts).toEqual([]);
    expect(await run('hook', jobOf(first))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1']);
    expect((await records.get('d1'))?.state).toBe('delivered');
    // Marking the first read its lane's next head: the second one, woken.
    expect(woken).toEqual(['d2.0']);
    expect(await run('hook', jobOf(second))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1', 'evt_d2']);
    expect(woken).toEqual(['d2.0']);
  });

  it('a job without its lane (queued by an older version) still waits behind the head', async () => {
    const { run, first, second, posts } = await setup();
    const old: DeliveryJob = { deliveryId: second.id, cycle: second.cycle };
    expect((await run('hook', old)).kind).toBe('later');
    expect(posts).toEqual([]);
    await run('hook', { deliveryId: first.id, cycle: first.cycle });
    expect(await run('hook', old)).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d1', 'evt_d2']);
  });

  it('a job naming a lane its record is not in does not skip the record’s own lane', async () => {
    const { run, second, other, posts } = await setup();
    // c_boris's lane has d3 at its head; an empty lane would say "head: none" as well.
    for (const lane of ['c_boris', 'c_nobody']) {
      expect((await run('hook', { ...jobOf(second), orderingKey: lane })).kind).toBe('later');
    }
    expect(posts).toEqual([]);
    expect(await run('hook', jobOf(other))).toEqual({ kind: 'done' });
    expect(posts).toEqual(['evt_d3']);
  });
});

describe('marking a delivery wakes its lane’s next one (Redis store)', () => {
  it('also when Redis lost the batch script (SCRIPT FLUSH, a failover): the lane’s head is read after the mark', async () => {
    // The mark is an EVALSHA sent in the same socket write as the lane-head read. When Redis
    // answers NOSCRIPT the mark is sent again, as EVAL — after the read, which then still found
    // the marked record at the head, so the next delivery was not woken (it waited out its park).
    // Fails on the code before this test.
    const world = await startLaneWorld({
      kind: 'redis',
      name: 'job-lane-noscript',
      eventType: 'conversation.started',
    });
    cleanups.push(world.close);
    const { records, run, woken } = world;
    const [first] = await records.ensure(
      [world.plan('d1', 'c_anna'), world.plan('d2', 'c_anna')],
      new Date(),
    );
    // The scripts were loaded on this connection (ensure used them); Redis forgets them.
    await (world.redis!.client as Redis).script('FLUSH');
    expect(await run('hook', jobOf(first!))).toEqual({ kind: 'done' });
    expect(world.posts).toEqual(['evt_d1']);
    expect((await records.get('d1'))?.state).toBe('delivered');
    expect(woken).toEqual(['d2.0']);
  });
});
