import type { Logger } from 'pino';
import type { Metrics } from '../../src/metrics.js';
import type { Store, StoreBatch } from '../../src/store/types.js';
import { customerHashes, idleAliveKey, storeKeys } from './state.js';

/**
 * Forgetting customers that went quiet, on a channel without a poll schedule (README "Forgetting
 * customers Chatvisor no longer knows"). There the poller's complete listing, which tells which
 * customers Chatvisor no longer knows, never comes, and every customer id a webhook named —
 * made-up ones included — kept its state (status, finish mark, cached profile, pending read,
 * pushed labels) for good: hostile or buggy webhooks grew the store without bound.
 *
 * The state lives in per-channel hashes (state.ts), one field per customer, and Redis (7.0) has
 * no expiry on a hash field. So each webhook that names a customer sets its alive mark, a string
 * key with a TTL of `idleCustomerTtl` (idleAliveKey), and notes the time in an index
 * (storeKeys().idleTouched); a sweep, started after webhooks at most once a minute per instance,
 * forgets the customers whose index time is older than the TTL and whose mark Redis has expired:
 * their fields in every per-customer hash and their index entry go in one checked write (applied
 * only while the mark is still absent), so a customer a webhook names meanwhile keeps its state.
 *
 * The TTL is at least the contact model's dedupe time (identity.dedupeTtlSeconds, checked with the
 * config): a vendor's retry within it is still answered as a duplicate by the stored status, and
 * by the contact model's key after that. State an older version stored (no mark, not indexed) is
 * indexed by the first sweep on a store, as if touched then. With a poll schedule nothing here
 * runs (the poller forgets what Chatvisor no longer lists), nor with `idleCustomerTtl: 0s`.
 */
export interface IdleCustomersOptions {
  channelId: string;
  store: Store;
  /** 0: never forget (a poll schedule, or `idleCustomerTtl: 0s`). */
  ttlMs: number;
  now: () => Date;
  logger: Logger;
  metrics: Metrics;
}

/** One sweep per instance and channel at most this often: a webhook's extra work stays rare. */
export const SWEEP_EVERY_MS = 60_000;
/** Customers looked at per step of a sweep (one read, then one checked write each, at once). */
const PAGE = 100;
/** Steps per sweep at most (100,000 customers); the rest waits for the next sweep. */
const MAX_PAGES = 1000;
/**
 * Fields read per step (and indexed per write) when an older version's state is taken in: one
 * page of ids at a time, never a whole hash (a cached profile is a few KB, and there may be
 * hundreds of thousands).
 */
const ADOPT_PAGE = 500;

export class IdleCustomers {
  private lastSweep = Number.NEGATIVE_INFINITY;
  private running: Promise<unknown> | null = null;
  private adopted = false;
  private closing = false;
  private readonly forgottenTotal;

  constructor(private readonly options: IdleCustomersOptions) {
    this.forgottenTotal = options.metrics.counter(
      'chatbridge_chatvisor_idle_customers_forgotten_total',
      'Chatvisor customers whose state was forgotten after idleCustomerTtl without a webhook (channels without a poll schedule), by channel',
      ['channel'] as const,
    );
  }

  get enabled(): boolean {
    return this.options.ttlMs > 0;
  }

  /** Add to `batch` what marks the customer alive for another TTL (nothing when not enabled). */
  touch(batch: StoreBatch, customerId: string): void {
    if (!this.enabled) return;
    const { channelId, ttlMs, now } = this.options;
    batch
      .set(idleAliveKey(channelId, customerId), '1', ttlMs)
      .zadd(storeKeys(channelId).idleTouched, now().getTime(), customerId);
  }

  /** Start a sweep in the background unless one ran within SWEEP_EVERY_MS (or one is running). */
  sweepSoon(): void {
    if (!this.enabled || this.closing || this.running) return;
    const now = this.options.now().getTime();
    if (now - this.lastSweep < SWEEP_EVERY_MS) return;
    this.lastSweep = now;
    this.running = this.sweep()
      .catch((error: unknown) =>
        this.options.logger.warn(
          { err: error },
          'chatvisor: could not forget idle customers; tried again later',
        ),
      )
      .finally(() => {
        this.running = null;
      });
  }

  /** Forget every customer idle for longer than the TTL; returns how many were forgotten. */
  async sweep(): Promise<number> {
    if (!this.enabled) return 0;
    const { store, channelId, ttlMs, logger } = this.options;
    const keys = storeKeys(channelId);
    const hashes = [...customerHashes(channelId), keys.pollUnlisted];
    await this.adopt();
    let forgotten = 0;
    for (let page = 0; page < MAX_PAGES && !this.closing; page++) {
      const now = this.options.now().getTime();
      const due = await store.zrangeByScore(keys.idleTouched, 0, now - ttlMs, PAGE);
      if (due.length === 0) break;
      const marks = await store.mget(due.map((customerId) => idleAliveKey(channelId, customerId)));
      const applied = await Promise.all(
        due.map((customerId, index) => {
          const mark = idleAliveKey(channelId, customerId);
          if (marks[index] !== null) {
            // Marked alive although its index time is old (the bridge's clock and Redis's
            // disagree): looked at again a TTL from now.
            return store
              .batch()
              .expectExists(mark)
              .zadd(keys.idleTouched, now, customerId)
              .exec()
              .then(() => false);
          }
          const batch = store.batch().expect(mark, null);
          for (const hash of hashes) batch.hdel(hash, customerId);
          return batch.zrem(keys.idleTouched, customerId).exec();
        }),
      );
      forgotten += applied.filter(Boolean).length;
      if (due.length < PAGE) break;
    }
    if (forgotten > 0) {
      this.forgottenTotal.inc({ channel: channelId }, forgotten);
      logger.info({ channelId, forgotten }, 'chatvisor: forgot customers idle for idleCustomerTtl');
    }
    return forgotten;
  }

  /**
   * Index the customers an older version stored (state without an alive mark, not in the index),
   * once per store: touched now, so they are forgotten a TTL after the upgrade unless a webhook
   * names them. Walks every per-customer hash's fields (ids only, not the values), a page at a
   * time: what it holds at once is one page, however many customers there are. A customer in
   * several hashes, or answered twice by a walk, is indexed again with the same time: no harm.
   */
  private async adopt(): Promise<void> {
    if (this.adopted) return;
    const { store, channelId } = this.options;
    const keys = storeKeys(channelId);
    if ((await store.get(keys.idleAdopted)) === null) {
      const now = this.options.now().getTime();
      for (const key of customerHashes(channelId)) {
        let cursor = '0';
        do {
          const page = await store.hscanFields(key, cursor, ADOPT_PAGE);
          cursor = page.cursor;
          if (page.fields.length === 0) continue;
          const batch = store.batch();
          for (const customerId of page.fields) batch.zadd(keys.idleTouched, now, customerId);
          await batch.exec();
        } while (cursor !== '0' && !this.closing);
        // Closing midway: not marked adopted, so the next sweep (here or elsewhere) walks again.
        if (this.closing) return;
      }
      await store.set(keys.idleAdopted, new Date(now).toISOString());
    }
    this.adopted = true;
  }

  /**
   * With a poll schedule: the next time the channel runs without one, the customers stored
   * meanwhile (by the poller, without alive marks) are indexed again (adopt).
   */
  async forgetAdoption(): Promise<void> {
    await this.options.store.del(storeKeys(this.options.channelId).idleAdopted);
  }

  /** Resolves when the sweep running now (if any) has finished. */
  async idle(): Promise<void> {
    await this.running;
  }

  /** No new sweep; the running one stops after its current step. */
  async close(): Promise<void> {
    this.closing = true;
    await this.running;
  }
}
