import { describe, expect, it } from 'vitest';
import { jobsOf } from '../src/delivery/drain.js';
import type { DestinationRuntime } from '../src/delivery/processor.js';
import { PARK_MARGIN_MS } from '../src/delivery/processor.js';
import type { DeliveryRecord } from '../src/delivery/records.js';

/**
 * A drained chunk often holds several deliveries of one lane (a chat_finished makes three events of
 * one contact). Each after the first would run at once, find an earlier delivery pending ahead of
 * it, and be moved to delayed until that one's attempt and timeout are over (processor.ts
 * parkBehind), to be woken (promoted) when it leaves the lane. Queued delayed by that wait from
 * the start, it skips that first run; the wake promotes it as before, and a wake that never comes
 * is made up by the delay running out, as the park's was.
 */
const TIMEOUT_MS = 10_000;
const destinations = new Map([
  [
    'crm',
    {
      config: { id: 'crm', retrySchedule: [0, 1000], timeoutMs: TIMEOUT_MS },
    } as unknown as DestinationRuntime,
  ],
]);

function record(id: string, lane: string, seq: number, extra: Partial<DeliveryRecord> = {}): DeliveryRecord {
  return {
    id,
    destinationId: 'crm',
    orderingKey: lane,
    cycle: 0,
    cycleAttempts: 0,
    seq,
    nextAttemptAt: null,
    ...extra,
  } as DeliveryRecord;
}

const delays = (records: DeliveryRecord[], now = 1_000_000) =>
  Object.fromEntries(
    (jobsOf(records, destinations, now, () => 0.5).get('crm') ?? []).map((item) => [
      item.job.deliveryId,
      item.delayMs,
    ]),
  );

describe('jobsOf: deliveries behind an earlier one of their lane in the same batch', () => {
  it('queues each after the first of its lane delayed by the wait it would park for; other lanes at once', () => {
    expect(
      delays([record('a1', 'a', 1), record('b1', 'b', 2), record('a2', 'a', 3), record('a3', 'a', 4)]),
    ).toEqual({
      a1: 0,
      b1: 0,
      a2: TIMEOUT_MS + PARK_MARGIN_MS,
      a3: TIMEOUT_MS + PARK_MARGIN_MS,
    });
  });

  it('counts from when the first of the lane is due (a retry waiting for its time)', () => {
    const now = 1_000_000;
    const retried = record('a1', 'a', 1, {
      cycleAttempts: 1,
      nextAttemptAt: new Date(now + 5000).toISOString(),
    });
    expect(delays([retried, record('a2', 'a', 2)], now)).toEqual({
      a1: 5000,
      a2: 5000 + TIMEOUT_MS + PARK_MARGIN_MS,
    });
  });

  it('leaves a later delivery due later than that wait as it is', () => {
    const now = 1_000_000;
    const later = record('a2', 'a', 2, {
      cycleAttempts: 1,
      nextAttemptAt: new Date(now + 60_000).toISOString(),
    });
    expect(delays([record('a1', 'a', 1), later], now)).toEqual({ a1: 0, a2: 60_000 });
  });
});
