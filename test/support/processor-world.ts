import type { Logger } from 'pino';
import { connectors } from '../../adapters/index.js';
import { type Config, type DestinationConfig, isCrmDestination } from '../../src/config/schema.js';
import type { ContactService } from '../../src/contacts/service.js';
import type { Contact } from '../../src/contacts/types.js';
import { createCrmRuntime } from '../../src/crm/runtime.js';
import { CircuitBreaker } from '../../src/delivery/breaker.js';
import { planDeliveries } from '../../src/delivery/drain.js';
import { createDelivery, type Delivery, type DeliveryDeps } from '../../src/delivery/index.js';
import { deliveryMetrics } from '../../src/delivery/metrics.js';
import {
  createProcessor,
  type DestinationRuntime,
  type ProcessorDeps,
} from '../../src/delivery/processor.js';
import type { DeliveryQueue, JobHandler } from '../../src/delivery/queue.js';
import type { DeliveryRecord, DeliveryRecords } from '../../src/delivery/records.js';
import type { RoutingContext } from '../../src/delivery/routing.js';
import { secretKey } from '../../src/delivery/signing.js';
import type { OutboxEntry } from '../../src/events/outbox.js';
import { Metrics } from '../../src/metrics.js';
import { createHttpClient } from '../../src/net/http.js';
import type { Store } from '../../src/store/types.js';

/**
 * The delivery processor driven by hand, as a worker runs it: tests of what one run of a job does
 * (its outcome, a race with a replay, a stall) call it themselves, so its queue does nothing.
 */
export const idleQueue: DeliveryQueue = {
  enqueue: async () => {},
  enqueueMany: async () => {},
  restore: async () => 0,
  wake: async () => {},
  pause: async () => {},
  start: async () => {},
  counts: async () => ({ waiting: 0, delayed: 0, active: 0 }),
  close: async () => {},
};

/** A breaker that does not open within a test (100 failures), closing again after a second. */
export function testBreaker(): CircuitBreaker {
  return new CircuitBreaker(100, 1000, () => {});
}

/** A signed-webhook destination's runtime, as the bridge builds it from its config. */
export function webhookRuntime(config: DestinationConfig, secret: string): DestinationRuntime {
  return { config, key: secretKey(secret), secrets: [], breaker: testBreaker() };
}

/** Plans `entry` for the one destination and stores its delivery record. */
export async function planOne(
  records: DeliveryRecords,
  entry: OutboxEntry,
  runtime: DestinationRuntime,
  routing: RoutingContext,
  now = new Date(),
): Promise<DeliveryRecord> {
  const [record] = await records.ensure(planDeliveries(entry, [runtime], routing), now);
  if (!record) throw new Error('no delivery planned');
  return record;
}

/** The processor over one destination, with the defaults these tests share. */
export function processorOver(
  records: DeliveryRecords,
  runtime: DestinationRuntime,
  logger: Logger,
  options: { metrics?: Metrics; now?: () => Date; signal?: AbortSignal } & Pick<
    ProcessorDeps,
    'leaseTtlMs'
  > = {},
): JobHandler {
  return createProcessor({
    records,
    queue: idleQueue,
    destinations: new Map([[runtime.config.id, runtime]]),
    http: createHttpClient(),
    logger,
    metrics: deliveryMetrics(options.metrics ?? new Metrics()),
    now: options.now ?? (() => new Date()),
    random: () => 0.5,
    signal: options.signal ?? new AbortController().signal,
    ...(options.leaseTtlMs !== undefined ? { leaseTtlMs: options.leaseTtlMs } : {}),
  });
}

/** Links back to nobody: the bridge contact is the event's own (what the CRM flow falls back to). */
export const noContacts = {
  get: async () => null,
  observe: async () => ({}),
  findByIdentifier: async () => null,
} as unknown as ContactService;

/** A native CRM destination's runtime (amoCRM, Bitrix24), as the bridge builds it from its config. */
export function crmDestinationRuntime(options: {
  destination: DestinationConfig;
  config: Pick<Config, 'agents' | 'channels'>;
  store: Store;
  logger: Logger;
  metrics: Metrics;
  now: () => Date;
}): DestinationRuntime {
  const { destination, config } = options;
  if (!isCrmDestination(destination)) throw new Error(`destination ${destination.id} is not a CRM`);
  const connector = connectors.find((item) => item.kind === destination.kind);
  if (!connector) throw new Error(`no connector for ${destination.kind}`);
  return {
    config: destination,
    key: Buffer.alloc(0),
    secrets: [],
    breaker: testBreaker(),
    crm: createCrmRuntime({
      destination,
      connector,
      store: options.store,
      http: createHttpClient(),
      contacts: noContacts,
      channels: config.channels,
      vendorNames: new Map([['jivochat', 'JivoChat']]),
      defaultCountry: 'RU',
      agents: config.agents,
      logger: options.logger,
      metrics: options.metrics,
      now: options.now,
    }),
  };
}

/** A known visitor (Pavel, e-mail and phone) as an event carries its contact. */
export function pavel(): Contact {
  const at = '2024-06-17T07:00:00.000Z';
  return {
    id: 'c_pavel',
    name: 'Pavel',
    names: ['Pavel'],
    emails: ['pavel.n@example.com'],
    phones: ['+79260001122'],
    identities: [{ kind: 'email', value: 'pavel.n@example.com' }],
    labels: [],
    attributes: {},
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: ['c_pavel'],
    merges: [],
    createdAt: at,
    updatedAt: at,
  };
}

/** Pavel's offline message from the JivoChat channel `shop-site`: what a CRM makes a lead of. */
export function offlineMessage(eventId: string): OutboxEntry {
  return {
    event: {
      id: eventId,
      type: 'offline_message.received',
      occurredAt: new Date().toISOString(),
      channel: { id: 'shop-site', vendor: 'jivochat' },
      contact: pavel(),
      data: { text: 'Call me back, please' },
    },
    orderingKey: 'c_pavel',
    stagedAt: Date.now(),
  };
}

/**
 * The whole delivery (queue, workers, drain) as the delivery tests start it: a real HTTP client,
 * fresh metrics, the wall clock and a 100 ms outbox poll, with what a test gives added or put
 * instead.
 */
export function testDelivery(
  deps: Pick<DeliveryDeps, 'config' | 'store' | 'redisUrl' | 'keyPrefix' | 'events' | 'logger'> &
    Partial<DeliveryDeps>,
): Delivery {
  return createDelivery({
    http: createHttpClient(),
    metrics: new Metrics(),
    now: () => new Date(),
    pollIntervalMs: 100,
    ...deps,
  });
}
