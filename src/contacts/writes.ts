import type { StoreBatch } from '../store/types.js';

/**
 * A write a plan asks for, as data: the merge and unmerge plans (merge.ts, unmerge.ts) say what
 * to write without a store, so they are tested as plain functions, and the engine queues them
 * on its checked batch (queueWrites) in the order given.
 */
export type PlannedWrite =
  | { op: 'set'; key: string; value: string }
  | { op: 'del'; key: string }
  | { op: 'sadd'; key: string; members: string[] }
  | { op: 'srem'; key: string; members: string[] }
  | { op: 'zadd'; key: string; member: string }
  | { op: 'rpush'; key: string; values: string[] }
  | { op: 'ltrim'; key: string; start: number; stop: number };

export function queueWrites(batch: StoreBatch, writes: readonly PlannedWrite[]): void {
  for (const write of writes) {
    switch (write.op) {
      case 'set':
        batch.set(write.key, write.value);
        break;
      case 'del':
        batch.del(write.key);
        break;
      case 'sadd':
        batch.sadd(write.key, ...write.members);
        break;
      case 'srem':
        batch.srem(write.key, ...write.members);
        break;
      case 'zadd':
        batch.zadd(write.key, 0, write.member);
        break;
      case 'rpush':
        batch.rpush(write.key, ...write.values);
        break;
      case 'ltrim':
        batch.ltrim(write.key, write.start, write.stop);
        break;
    }
  }
}
