import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { cliCommand, shellOption } from '../cli/named.js';
import { type Config, type DestinationConfig, isCrmDestination } from '../config/schema.js';
import { quotedInput } from '../contacts/normalize.js';
import type { ContactService } from '../contacts/service.js';
import type { ConnectorDefinition } from '../contracts/connector.js';
import { type CrmRuntime, createCrmRuntime } from '../crm/runtime.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { type EventPublisher, OUTBOX_KEY, outboxEntrySchema } from '../events/outbox.js';
import type { Route } from '../http/routes.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { type HttpClient, headerSecrets, redactUrl } from '../net/http.js';
import type { RedisTarget } from '../store/connection.js';
import type { Store } from '../store/types.js';
import {
  type DeliveryAdmin,
  type DeliveryDetail,
  type DeliveryListQuery,
  type DeliveryPage,
  type DeliverySummary,
  decodeDeliveryCursor,
  deliveryRoutes,
  encodeDeliveryCursor,
  summarize,
} from './api.js';
import { type BreakerChange, type BreakerState, CircuitBreaker } from './breaker.js';
import { createBreakerRecorder, readOpenBreakers } from './breaker-state.js';
import { createDrainer, jobsOf } from './drain.js';
import { type Backlog, deliveryMetrics, watchBacklog } from './metrics.js';
import { createProcessor, type DestinationRuntime } from './processor.js';
import { createMemoryQueue, type DeliveryQueue } from './queue.js';
import { createBullQueue } from './queue-bullmq.js';
import {
  createDeliveryRecords,
  type DeliveryRecord,
  type DeliveryState,
  deliveryKeys,
  deliveryStates,
  jobIdOf,
  jobOf,
} from './records.js';
import { secretKey } from './signing.js';

export type { DeliveryDetail, DeliveryListQuery, DeliveryPage, DeliverySummary } from './api.js';
export { deliveryRoutes } from './api.js';
export type { BreakerOpen } from './breaker-state.js';
export { describeBreaker } from './breaker-state.js';
export type { DeliveredBody, Routing, RoutingTask } from './routing.js';

/**
 * Outbound delivery (DESIGN §8): drains the outbox into per-destination deliveries, signs them
 * (Standard Webhooks), delivers them at least once, in order per contact, with retries, a
 * circuit breaker and a concurrency limit per destination, and keeps failed ones for replay.
 * See src/delivery/README.md for the rules.
 */
export interface DeliveryDeps {
  config: Config;
  store: Store;
  /** The Redis URL when the store is Redis (BullMQ needs its own connections), else undefined. */
  redisUrl: string | undefined;
  /** The store's Redis in any form (standalone, Sentinel, Cluster); wins over redisUrl. */
  redisTarget?: RedisTarget | undefined;
  keyPrefix: string;
  events: EventPublisher;
  http: HttpClient;
  logger: Logger;
  metrics: Metrics;
  now(): Date;
  /** vendor id -> display name, for `routing.source` (e.g. registry.displayNames()). */
  vendorNames?: ReadonlyMap<string, string>;
  /** How often a worker looks for events committed by other instances (default 1000 ms). */
  pollIntervalMs?: number;
  /**
   * How often a worker forgets delivered records past the retention from the indexes (default
   * 5000 ms). The backlog gauges are not on a timer: every role reads them at each scrape.
   */
  pruneIntervalMs?: number;
  /**
   * How often the queue is checked for pending deliveries that lost their job (default 30 s;
   * see restoreLostJobs). A delivery untouched for this long is the one that is queued again.
   */
  restoreIntervalMs?: number;
  /** How long delivered records are kept for listing and replay (default 7 days). */
  deliveredRetentionMs?: number;
  /**
   * Which contact a record is part of now, for a replay's lane: a delivery of a contact merged
   * into another since goes at the end of that one's lane (README "Order per contact"). Without
   * it a replay goes back into the lane it was recorded in.
   */
  contacts?: Pick<ContactService, 'currentId'>;
  /** CRM destinations (DESIGN §10): the connectors by kind, and the contacts to link back to. */
  crm?: { contacts: ContactService; connectors: ReadonlyMap<string, ConnectorDefinition> };
  /** Randomness for retry jitter (tests pin it). */
  random?(): number;
}

export interface Delivery extends DeliveryAdmin {
  /** Start draining and delivering (worker role). */
  start(): Promise<void>;
  /** Admin API route declarations under /api/v1 (deliveries list and replay); the admin gate checks the token. */
  routes(): Route[];
  /**
   * How many deliveries are in `state` (of one destination, or all): the size of the state's
   * index, exact and one store read, the number the backlog gauges report (the console's status).
   */
  count(state: DeliveryState, destinationId?: string): Promise<number>;
  /** Route what is in the outbox now (the worker does this by itself); returns entries drained. */
  drain(): Promise<number>;
  close(): Promise<void>;
}

const DAY_MS = 86_400_000;
const BUSY_RETRY_MS = 50;
/** How long an instance's note that it serves a destination holds without renewal (advertise). */
const SERVED_TTL_MS = 90_000;

export function createDelivery(deps: DeliveryDeps): Delivery {
  const { config, store, logger } = deps;
  const metrics = deliveryMetrics(deps.metrics);
  const random = deps.random ?? Math.random;
  const drainRepeats = createRepeatGate();
  const breakerRepeats = createRepeatGate();
  // Said once per record and process: a damaged record is read again by every look at its lane.
  const unreadableSeen = new LRUCache<string, true>({ max: 1000 });
  const records = createDeliveryRecords(store, {
    deliveredRetentionMs: deps.deliveredRetentionMs ?? 7 * DAY_MS,
    onUnreadable(id, reason) {
      if (unreadableSeen.has(id)) return;
      unreadableSeen.set(id, true);
      logger.error(
        { deliveryId: id, reason },
        'delivery record unreadable: it is not attempted; look at the record in the store (damaged, or written by another version?)',
      );
    },
  });

  /** This running delivery, in the store's notes: the destinations it serves, its breakers. */
  const instanceId = randomUUID();
  const breakers = createBreakerRecorder({ store, instanceId, logger });

  const runtimes: DestinationRuntime[] = config.destinations.map((destination) => ({
    config: destination,
    // CRM destinations sign nothing: they call the CRM's API with its own credential.
    key: isCrmDestination(destination) ? Buffer.alloc(0) : secretKey(destination.secret),
    ...(!isCrmDestination(destination) && destination.previousSecret
      ? { previousKey: secretKey(destination.previousSecret) }
      : {}),
    secrets: isCrmDestination(destination) ? [] : headerSecrets(destination.headers),
    ...crmRuntimeOf(destination),
    breaker: breakerOf(destination),
  }));
  function breakerOf(destination: DestinationConfig): CircuitBreaker {
    const threshold = destination.circuitBreaker?.failureThreshold ?? 5;
    const cooldownMs = destination.circuitBreaker?.cooldown ?? 30_000;
    return new CircuitBreaker(threshold, cooldownMs, breakerWatch(destination, threshold, cooldownMs));
  }
  /**
   * The gauge, and what the log says about a destination's breaker. It said "circuit breaker
   * open" at warn again at every cooldown (30 s) while the destination stayed down, and not what
   * to do. Now: once at warn when it opens, with what to check; its re-openings after each failed
   * trial at most once a minute (how many since it opened); once at info when it closes.
   */
  function breakerWatch(destination: DestinationConfig, threshold: number, cooldownMs: number) {
    const id = destination.id;
    const where = isCrmDestination(destination)
      ? `the ${destination.kind} CRM (its status, the credential in the config)`
      : `${redactUrl(destination.url)} (up, answering 2xx?)`;
    const fields = { destination: id };
    let openedAt: number | undefined;
    let reopened = 0;
    return (state: BreakerState, change: BreakerChange) => {
      metrics.breakerOpen.set({ destination: id }, state === 'closed' ? 0 : 1);
      const at = Date.now();
      // For the console and the admin API of every instance (breaker-state.ts): on changes only.
      if (state === 'open')
        breakers.opened(id, {
          since: change.openedAt ?? at,
          until: change.openUntil,
          failures: change.failures,
          lastError: change.lastFailure,
        });
      else if (state === 'closed') breakers.closed(id);
      if (state === 'open' && openedAt === undefined) {
        openedAt = at;
        reopened = 0;
        breakerRepeats.sayNow(id); // the re-openings of the next minute are not said again
        logger.warn(
          { ...fields, cooldownMs },
          `destination ${id}: circuit breaker open after ${threshold} failed attempts in a row; nothing is sent to it for ${formatWait(cooldownMs)} at a time, then one trial. Check ${where}; what failed: ${cliCommand(`deliveries list ${shellOption('destination', id)} --state failed`)}; chatbridge_delivery_circuit_open{destination="${id}"} is 1 while it stays open`,
        );
      } else if (state === 'open' && openedAt !== undefined) {
        reopened++;
        warnOncePerMinute(
          logger,
          breakerRepeats,
          id,
          { ...fields, reopened, openForMs: at - openedAt },
          `destination ${id}: circuit breaker still open, its trial failed again (re-opened ${reopened} time${reopened === 1 ? '' : 's'} in ${formatWait(at - openedAt)}); check ${where}`,
        );
      } else if (state === 'closed' && openedAt !== undefined) {
        const openForMs = at - openedAt;
        openedAt = undefined;
        logger.info(
          { ...fields, openForMs, reopened },
          `destination ${id}: circuit breaker closed, delivering again after ${formatWait(openForMs)}`,
        );
      }
    };
  }
  function crmRuntimeOf(destination: DestinationConfig): { crm?: CrmRuntime } {
    if (!isCrmDestination(destination)) return {};
    const connector = deps.crm?.connectors.get(destination.kind);
    if (!connector || !deps.crm) return {}; // config validation prevents this
    return {
      crm: createCrmRuntime({
        destination,
        connector,
        store,
        http: deps.http,
        contacts: deps.crm.contacts,
        channels: config.channels,
        vendorNames: deps.vendorNames ?? new Map(),
        defaultCountry: config.identity.defaultCountry,
        agents: config.agents,
        identity: config.identity,
        logger: logger.child({ destination: destination.id, kind: destination.kind }),
        metrics: deps.metrics,
        now: deps.now,
      }),
    };
  }
  const byId = new Map(runtimes.map((runtime) => [runtime.config.id, runtime]));
  /** When the Retry-After pause this process set last ends, per destination (ms; the gauge). */
  const retryAfterEnds = new Map<string, number>();
  for (const runtime of runtimes) {
    metrics.breakerOpen.set({ destination: runtime.config.id }, 0);
    metrics.retryAfterUntil.set({ destination: runtime.config.id }, 0);
  }

  // Built on first use: a web-role instance that never replays opens no BullMQ connections.
  let queue: DeliveryQueue | undefined;
  const queueNow = (): DeliveryQueue => {
    if (queue) return queue;
    const destinations = runtimes.map((runtime) => ({
      id: runtime.config.id,
      concurrency: runtime.config.concurrency,
    }));
    const target: RedisTarget | undefined =
      deps.redisTarget ?? (deps.redisUrl ? { kind: 'redis', url: deps.redisUrl } : undefined);
    if (store.kind === 'redis' && target) {
      queue = createBullQueue({
        target,
        prefix: `${deps.keyPrefix}:bull`,
        destinations,
        logger,
        closeWaitMs: deps.config.server.shutdownTimeoutMs,
      });
    } else {
      if (store.kind === 'redis') {
        logger.warn(
          'the store is Redis but no Redis URL was given to delivery: using an in-process queue (one worker only)',
        );
      }
      queue = createMemoryQueue({ destinations, logger });
    }
    return queue;
  };

  const drainer = createDrainer({
    store,
    records,
    get queue() {
      return queueNow();
    },
    destinations: runtimes,
    routing: {
      agents: config.agents,
      channels: config.channels,
      vendorNames: deps.vendorNames ?? new Map(),
    },
    logger,
    now: deps.now,
    random,
  });

  let started = false;
  let closed = false;
  const shutdown = new AbortController();
  let draining: Promise<number> | null = null;
  let drainAgain = false;
  const timers: NodeJS.Timeout[] = [];

  function drain(): Promise<number> {
    if (draining) {
      drainAgain = true;
      return draining;
    }
    draining = (async () => {
      let total = 0;
      let busy = false;
      do {
        drainAgain = false;
        const result = await drainer.drainAll();
        total += result.entries;
        busy = result.busy;
      } while (drainAgain && !closed);
      // Another instance holds the drain lock and may have read the outbox before our events
      // were committed: look again shortly rather than waiting for the next poll.
      if (busy && started && !closed) {
        const retry = setTimeout(drainInBackground, BUSY_RETRY_MS);
        retry.unref();
      }
      return total;
    })().finally(() => {
      draining = null;
    });
    return draining;
  }

  function drainInBackground() {
    if (!started || closed) return;
    // Retried at every poll for as long as the store is away: said once a minute.
    drain().catch((error: unknown) =>
      warnOncePerMinute(
        logger,
        drainRepeats,
        'outbox',
        { err: error },
        'outbox drain failed; retrying on the next poll',
      ),
    );
  }

  async function poll() {
    if (closed) return;
    try {
      if ((await store.llen(OUTBOX_KEY)) > 0) drainInBackground();
    } catch (error) {
      logger.debug({ err: error }, 'outbox poll failed');
    }
  }

  /** The backlog gauges' values, read at each scrape on every role (watchBacklog). */
  async function readBacklog(): Promise<Backlog> {
    const now = deps.now().getTime();
    const [destinations, outboxDepth, [first]] = await Promise.all([
      Promise.all(
        runtimes.map(async ({ config: { id } }) => {
          const [pending, failed, oldest] = await Promise.all([
            records.count('pending', id),
            records.count('failed', id),
            records.oldestPending(id),
          ]);
          return {
            id,
            pending,
            failed,
            oldestPendingSeconds: oldest === null ? 0 : Math.max(0, (now - oldest) / 1000),
          };
        }),
      ),
      store.llen(OUTBOX_KEY),
      store.lrange(OUTBOX_KEY, 0, 0),
    ]);
    let outboxOldestSeconds = 0;
    if (first !== undefined) {
      try {
        const entry = outboxEntrySchema.safeParse(JSON.parse(first));
        if (entry.success) outboxOldestSeconds = Math.max(0, (now - entry.data.stagedAt) / 1000);
      } catch {
        // An unparsable entry is moved away by the next drain.
      }
    }
    return { destinations, outboxDepth, outboxOldestSeconds };
  }
  watchBacklog(deps.metrics, { destinationIds: [...byId.keys()], read: readBacklog });

  /**
   * Every pending delivery must have a live job in the queue; this queues again the ones that
   * do not. At start: all of them (the in-process queue after a restart). Then every
   * restoreIntervalMs, because BullMQ's writes are not confirmed on replicas (only vendor
   * webhooks wait for `durability.replicas`): a Redis failover can lose a job — seen in the
   * Sentinel slow test, 100 pending deliveries without a job after SENTINEL FAILOVER and a
   * kill -9 — while the record, the source of truth, survives; nothing else would ever attempt
   * those deliveries again. The periodic pass first compares counts (pending records vs jobs
   * waiting, delayed or running) and reads records only when jobs are missing; it skips records
   * changed within the last interval, which a drain or a replay may be queueing right now.
   */
  let restoring = false;
  async function restoreLostJobs(periodic: boolean): Promise<void> {
    if (restoring || closed) return;
    restoring = true;
    try {
      const graceMs = periodic ? (deps.restoreIntervalMs ?? 30_000) : 0;
      for (const runtime of runtimes) {
        const destinationId = runtime.config.id;
        if (periodic) {
          const pending = await records.count('pending', destinationId);
          if (pending === 0) continue;
          const counts = await queueNow().counts(destinationId);
          if (counts.waiting + counts.delayed + counts.active >= pending) continue;
        }
        let restored = 0;
        const seen = new Set<string>();
        let from: number | undefined;
        for (;;) {
          const page = await records.list({
            state: 'pending',
            destinationId,
            limit: 500,
            ...(from !== undefined ? { from } : {}),
          });
          const fresh = page.filter((record) => !seen.has(record.id));
          if (fresh.length === 0) break;
          for (const record of fresh) seen.add(record.id);
          const now = deps.now().getTime();
          const settled = fresh.filter((record) => now - Date.parse(record.updatedAt) >= graceMs);
          const items = jobsOf(settled, byId, now, random).get(destinationId) ?? [];
          if (items.length > 0) restored += await queueNow().restore(destinationId, items);
          if (page.length < 500) break;
          from = page[page.length - 1]!.pendingSince;
        }
        if (restored > 0 && periodic) {
          metrics.jobsRestored.inc({ destination: destinationId }, restored);
          logger.warn(
            { destination: destinationId, restored },
            'pending deliveries had no live queue job (lost in a Redis failover, or failed in the queue); queued them again',
          );
        }
      }
    } finally {
      restoring = false;
    }
  }

  /**
   * Each running instance notes, per destination in its config, that it serves it (renewed well
   * inside SERVED_TTL_MS, removed on close). failOrphans leaves alone the deliveries of a
   * destination some live instance serves: an instance started with an older config (a rolling
   * deploy that adds a destination, a worker not yet updated, a scale-up of the old version)
   * failed every pending delivery of a destination the others were sending.
   */
  async function advertise(): Promise<void> {
    const now = deps.now().getTime();
    for (const id of byId.keys()) {
      const key = deliveryKeys.served(id);
      await deps.store.zadd(key, now + SERVED_TTL_MS, instanceId);
      // Instances that ended without closing (a crash, SIGKILL) are dropped once they lapse.
      for (const gone of await deps.store.zrangeByScore(key, Number.NEGATIVE_INFINITY, now, 100))
        await deps.store.zrem(key, gone);
    }
  }
  async function servedElsewhere(destinationId: string): Promise<boolean> {
    const live = await deps.store.zrangeByScore(
      deliveryKeys.served(destinationId),
      deps.now().getTime(),
      Number.POSITIVE_INFINITY,
      1,
    );
    return live.length > 0;
  }

  /**
   * Pending deliveries to a destination that is no longer in the config: nothing would ever
   * attempt them (each destination has its own queue and workers), so they sat in `pending` for
   * good, in the API, the CLI and the console. At start they fail, without an attempt, with a
   * reason that says why; kept like every failed delivery, so with the destination back in the
   * config `replay` (one, or all failed of the destination) sends them under their own ids.
   */
  async function failOrphans(): Promise<void> {
    // The common case, every pending delivery is to a configured destination, reads no record.
    let configured = 0;
    for (const id of byId.keys()) configured += await records.count('pending', id);
    if ((await records.count('pending')) <= configured) return;
    // The whole pending index, not pages of it by time: paging on from = the last page's
    // pendingSince never got past more than a page of deliveries staged in one millisecond
    // (a drain's batch), which stayed pending for good.
    const failed = new Map<string, number>();
    const servedByOthers = new Map<string, boolean>();
    for (const record of await records.inSeqOrder('pending')) {
      if (byId.has(record.destinationId)) continue;
      let served = servedByOthers.get(record.destinationId);
      if (served === undefined) {
        served = await servedElsewhere(record.destinationId);
        servedByOthers.set(record.destinationId, served);
        if (served)
          logger.warn(
            { destination: record.destinationId },
            'pending deliveries to a destination not in this config are left to the running instances that have it (configs differ)',
          );
      }
      if (served) continue;
      const now = deps.now();
      const reason = {
        status: null,
        message: `destination ${record.destinationId} is not in the config any more; not attempted (replay it once the destination is back)`,
        at: now.toISOString(),
      };
      if (await records.abandon(record.id, reason, now))
        failed.set(record.destinationId, (failed.get(record.destinationId) ?? 0) + 1);
    }
    for (const [destination, count] of failed) {
      logger.warn(
        { destination, count },
        'pending deliveries to a destination that is not in the config any more were marked failed (kept for replay)',
      );
    }
  }

  /** Destinations with a failed retention (destinations[].failedRetention; 0 keeps failed ones). */
  const failedRetentions = new Map(
    config.destinations
      .filter((destination) => destination.failedRetention > 0)
      .map((destination) => [destination.id, destination.failedRetention] as const),
  );
  let pruning = false;

  /** The worker's housekeeping pass (every pruneIntervalMs): delivered ids, then failed records. */
  async function prune(): Promise<void> {
    // A pass that takes longer than the interval (a long backlog, a slow store) is not run twice.
    if (pruning) return;
    pruning = true;
    try {
      await records
        .prune(deps.now(), [...byId.keys()])
        .catch((error: unknown) => logger.debug({ err: error }, 'delivered records not pruned'));
      if (failedRetentions.size === 0) return;
      const dropped = await records.pruneFailed(deps.now(), failedRetentions).catch((error: unknown) => {
        logger.warn({ err: error }, 'failed deliveries past their retention not deleted; trying again later');
        return new Map<string, number>();
      });
      for (const [destination, count] of dropped) {
        metrics.failedPruned.inc({ destination }, count);
        logger.info(
          { destination, count, retentionMs: failedRetentions.get(destination) },
          "failed deliveries past the destination's failedRetention deleted (no longer replayable)",
        );
      }
    } finally {
      pruning = false;
    }
  }

  /**
   * The lane a delivery of a contact goes in when it is replayed: that of the contact it is part
   * of now. Its own lane may be one nothing waits for any more (the contact was merged into
   * another since), and the events recorded after the replay must come after it. A delivery
   * without a contact (agents.synced) keeps its lane.
   */
  async function laneNow(record: DeliveryRecord): Promise<string> {
    if (record.contactId === null || !deps.contacts) return record.orderingKey;
    return deps.contacts.currentId(record.orderingKey);
  }

  async function replayRecord(id: string): Promise<DeliveryRecord> {
    const existing = await records.get(id);
    if (!existing) throw new NotFoundError('delivery_not_found', `no delivery ${id}`);
    const runtime = byId.get(existing.destinationId);
    if (!runtime) {
      throw new ConflictError(
        'destination_not_configured',
        `destination ${existing.destinationId} is not in the config any more; nothing to deliver to`,
      );
    }
    let record = await records.replay(id, deps.now(), await laneNow(existing));
    if (!record) throw new NotFoundError('delivery_not_found', `no delivery ${id}`);
    // A merge (or an unmerge) of the contact between the look-up and the write may have been
    // drained before the write, when the lane it was put in had nothing pending, so no lane link
    // orders it: looked up again, it moves to where the contact is now (its job is not queued
    // yet, so no attempt is writing the record). A merge after this look-up is drained after the
    // write and links the lane it is in (README "Order across a merge").
    try {
      for (let round = 0; round < 3; round++) {
        const lane = await laneNow(record);
        if (lane === record.orderingKey) break;
        const moved: DeliveryRecord | null = await records.relane(id, lane);
        if (moved?.state !== 'pending') break;
        record = moved;
      }
    } catch (error) {
      // The replay is written (pending, in a lane): it must get its job, whatever this check did.
      logger.warn(
        { err: error, delivery: id },
        'replay: could not check whether the contact was merged meanwhile; queued in the lane it was put in',
      );
    }
    await queueNow().enqueue(record.destinationId, jobIdOf(record), jobOf(record), 0);
    metrics.replays.inc({ destination: record.destinationId });
    logger.info({ delivery: id, destination: record.destinationId }, 'delivery replayed');
    return record;
  }

  const delivery: Delivery = {
    async start() {
      if (started || closed) return;
      started = true;
      const processor = createProcessor({
        records,
        queue: queueNow(),
        destinations: byId,
        http: deps.http,
        logger,
        metrics,
        now: deps.now,
        random,
        signal: shutdown.signal,
        // Shown where an open breaker is (breaker-state.ts), and in the gauge.
        onRetryAfterPause(destinationId, pause) {
          breakers.retryAfter(destinationId, pause);
          // The queue's pause only ever grows (pauseAtLeast): so does what the gauge says.
          const until = Math.max(retryAfterEnds.get(destinationId) ?? 0, pause.until);
          retryAfterEnds.set(destinationId, until);
          metrics.retryAfterUntil.set({ destination: destinationId }, Math.ceil(until / 1000));
        },
      });
      await queueNow().start(processor);
      await advertise();
      await failOrphans();
      await restoreLostJobs(false);
      deps.events.onCommitted(drainInBackground);
      const pollMs = deps.pollIntervalMs ?? 1000;
      const pruneMs = deps.pruneIntervalMs ?? 5000;
      timers.push(setInterval(() => void poll(), pollMs));
      timers.push(setInterval(() => void prune(), pruneMs));
      timers.push(
        setInterval(() => {
          advertise().catch((error: unknown) =>
            logger.warn(
              { err: error },
              'could not renew the destinations this instance serves; trying again',
            ),
          );
        }, SERVED_TTL_MS / 3),
      );
      timers.push(
        setInterval(() => {
          restoreLostJobs(true).catch((error: unknown) =>
            logger.warn(
              { err: error },
              'could not check the delivery queue for lost jobs; trying again later',
            ),
          );
        }, deps.restoreIntervalMs ?? 30_000),
      );
      for (const timer of timers) timer.unref();
      drainInBackground();
    },

    routes() {
      return deliveryRoutes(delivery);
    },

    drain,

    count(state, destinationId) {
      return records.count(state, destinationId);
    },

    async list(query: DeliveryListQuery): Promise<DeliverySummary[]> {
      const { before: _before, ...first } = query;
      return (await delivery.page(first)).deliveries;
    },

    async page(query: DeliveryListQuery): Promise<DeliveryPage> {
      // Parsed at the boundary (the route, the CLI); in-process callers are typed.
      const { state, destination } = query;
      const limit = Number(query.limit ?? 50);
      const states = state ? [state] : deliveryStates;
      const cursor = query.before ? decodeDeliveryCursor(query.before, states) : undefined;
      // Walked from the cursor's place by (state, score, id), one more than the page takes: the
      // extra one says whether there is a next page, so the last page says null (not one more
      // empty page). An offset would shift under deliveries added meanwhile; a place does not.
      const listed: Array<{ state: DeliveryState; id: string; score: number }> = [];
      let more = false;
      for (const each of states.slice(cursor ? states.indexOf(cursor.state) : 0)) {
        const room = limit - listed.length;
        const found = await records.indexAfter({
          state: each,
          destinationId: destination,
          limit: room + 1,
          after: cursor?.state === each ? cursor : undefined,
        });
        listed.push(...found.slice(0, room).map((item) => ({ state: each, ...item })));
        if (found.length > room) {
          more = true;
          break;
        }
      }
      const deliveries: DeliverySummary[] = [];
      for (const each of states) {
        const ids = listed.filter((item) => item.state === each).map((item) => item.id);
        deliveries.push(...(await records.inState(each, ids)).map(summarize));
      }
      // The place of the last one listed, even when its record was left out (expired, or moved
      // on to another state): a page of only such entries still moves on.
      const last = listed.at(-1);
      return { deliveries, nextCursor: more && last ? encodeDeliveryCursor(last) : null };
    },

    async get(id): Promise<DeliveryDetail | null> {
      const record = await records.get(id);
      if (!record) return null;
      return { ...summarize(record), body: JSON.parse(record.body) as unknown, history: record.history };
    },

    async replay(id) {
      return summarize(await replayRecord(id));
    },

    paused(destinationId) {
      const ids =
        destinationId === undefined ? [...byId.keys()] : byId.has(destinationId) ? [destinationId] : [];
      return readOpenBreakers(store, ids);
    },

    async replayFailed(destinationId, options = {}) {
      if (!byId.has(destinationId))
        throw new NotFoundError('destination_not_found', `no destination ${quotedInput(destinationId)}`);
      // Every delivery failed when the replay starts, in lane order (by sequence, across the
      // whole index): it was read a page of 200 at a time by failure time, which orders the
      // deliveries of one millisecond by id, so a contact's events that failed together (a
      // destination removed from the config, a refusal of each) went out of order when the
      // group crossed a page. Deliveries that fail again during the replay are not read again.
      const replayed: string[] = [];
      const failed = await records.inSeqOrder('failed', destinationId);
      for (const [index, { id }] of failed.entries()) {
        // Between two deliveries, never inside one: each replay is one step of its own.
        if (options.signal?.aborted) return { replayed, left: failed.length - index };
        try {
          await replayRecord(id);
          replayed.push(id);
          options.onReplayed?.(id);
        } catch (error) {
          // Replayed meanwhile by someone else, or deleted meanwhile past the destination's
          // failedRetention (the prune pass runs on every worker): nothing to do for this one.
          if (!(error instanceof ConflictError) && !(error instanceof NotFoundError)) throw error;
        }
      }
      return { replayed };
    },

    async close() {
      if (closed) return;
      closed = true;
      for (const timer of timers) clearInterval(timer);
      shutdown.abort();
      await draining?.catch(() => 0);
      await queue?.close();
      await breakers.settled();
      if (started) {
        // All at once: with Redis hung each removal waits for the command timeout (2 s), and one
        // after the other a SIGTERM took that long per destination on top of the queues' grace
        // (12 destinations: half a minute, past a platform's grace before SIGKILL). A removal
        // that fails is harmless: the note lapses by itself after SERVED_TTL_MS.
        await Promise.all(
          [...byId.keys()].map((id) => store.zrem(deliveryKeys.served(id), instanceId).catch(() => 0)),
        );
      }
    },
  };
  return delivery;
}

/** A wait as a person reads it: "700 ms" under a second, "40 s" under two minutes, then "12 minutes". */
function formatWait(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  return `${Math.round(ms / 60_000)} minutes`;
}
