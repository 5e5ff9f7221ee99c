import { hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { assertSafeToListen } from './config/published.js';
import { type ChannelConfig, type Config, isCrmDestination } from './config/schema.js';
import { createAgentLinks } from './console/links.js';
import { createContactEngine } from './contacts/engine.js';
import type { FactService } from './contacts/facts.js';
import { createFactService } from './contacts/facts.js';
import { startReindexOnce } from './contacts/reindex.js';
import type { ContactService } from './contacts/service.js';
import type { AdapterContext, AdapterDefinition, ChannelRuntime } from './contracts/adapter.js';
import { exportCredentialExpiry, watchCredentialExpiry } from './crm/credentials.js';
import { createDelivery, type Delivery } from './delivery/index.js';
import { createAttributeSources } from './enrich/index.js';
import type { EventPublisher } from './events/outbox.js';
import { createOutboxPublisher } from './events/outbox.js';
import { createApp, createMetricsApp, UNKNOWN_CHANNEL_ID } from './http/app.js';
import { createHttpServer } from './http/client-error.js';
import { createDeferredIntake, RECORD_CONCURRENCY, WORKER_RECORD_CONCURRENCY } from './intake/deferred.js';
import type { PayloadJournal } from './intake/journal.js';
import { createPayloadJournal } from './intake/journal.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import type { HttpClient } from './net/http.js';
import { createHttpClient } from './net/http.js';
import { type AdapterRegistry, defaultRegistry } from './registry.js';
import { createScheduler, type Scheduler } from './scheduler.js';
import { createStoreCheck } from './store/check.js';
import { createStore, effectiveKeyPrefix, redisTargetOf } from './store/index.js';
import type { Store } from './store/types.js';

/**
 * The composition root: the one place that builds everything from a validated config and wires
 * it together. Nothing here listens or schedules until `listen()` / `start()`.
 */
export type Role = 'all' | 'web' | 'worker';

export interface BridgeOptions {
  config: Config;
  registry?: AdapterRegistry;
  role?: Role;
  logger?: Logger;
  /** Use this store instead of building one from config.store (tests; the CLI). */
  store?: Store;
  /** undici dispatcher for every outbound call (tests point it at fake servers or a MockAgent). */
  dispatcher?: Dispatcher;
  now?: () => Date;
  /** Collect Node's default process metrics (off in tests: many bridges share one process). */
  defaultMetrics?: boolean;
  /** The file the config came from (`chatbridge start`): the console names it in the commands it shows. */
  configPath?: string;
}

export interface ChannelEntry {
  config: ChannelConfig;
  runtime: ChannelRuntime<unknown>;
  adapter: AdapterDefinition;
}

/**
 * The core services one bridge is built from. Adapters never get this: they get a narrow
 * AdapterContext (src/contracts/adapter.ts); the intake pipeline and the admin API use these.
 * Exposed for embedders and tests (seed a contact, add a fact source, read the journal).
 */
export interface BridgeServices {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  store: Store;
  contacts: ContactService;
  facts: FactService;
  events: EventPublisher;
  http: HttpClient;
  now(): Date;
  masterKey: Buffer | null;
  journal: PayloadJournal;
}

export interface Bridge {
  readonly config: Config;
  readonly role: Role;
  readonly logger: Logger;
  readonly store: Store;
  readonly metrics: Metrics;
  readonly context: BridgeServices;
  readonly channels: ReadonlyMap<string, ChannelEntry>;
  readonly app: Koa;
  readonly delivery: Delivery;
  readonly scheduler: Scheduler;
  /** Start background work for the role: scheduled jobs and delivery (worker, all). */
  start(): Promise<void>;
  listen(port?: number, host?: string): Promise<Server>;
  /** The metrics-only listener (metrics.port on metrics.host); null when metrics.port is not set. */
  listenMetrics(port?: number, host?: string): Promise<Server | null>;
  /** Graceful: stop accepting, finish in-flight requests and jobs, close the store. */
  close(): Promise<void>;
}

export async function createBridge(options: BridgeOptions): Promise<Bridge> {
  const { config } = options;
  const role = options.role ?? 'all';
  const registry = options.registry ?? defaultRegistry();
  const logger = options.logger ?? createLogger(config.log.level);
  const now = options.now ?? (() => new Date());
  const metrics = new Metrics({
    defaultMetrics: options.defaultMetrics ?? false,
    eventLoopResolutionMs: config.metrics.eventLoopResolutionMs,
  });
  const store = options.store ?? (await createStore(config.store, logger));
  // /readyz and chatbridge_store_up ask one check (DESIGN §12: the store accepts writes), bounded
  // and never more than one at a time (src/store/check.ts). Read through `store` at each check,
  // not bound once, so a store whose probe is replaced (tests inject a hang) is checked as it is.
  const storeCheck = createStoreCheck(() => (store.probeWrite ? store.probeWrite() : store.ping()));
  metrics.watchStore(storeCheck);
  const http = createHttpClient(options.dispatcher ? { dispatcher: options.dispatcher } : {});
  const events = createOutboxPublisher(store, { enabled: config.destinations.length > 0 });
  // One ring per configured channel (and one for channels no longer configured): see journal.ts.
  const journal = createPayloadJournal(
    store,
    now,
    config.limits,
    config.channels.map((channel) => channel.id),
  );
  const contacts = createContactEngine({
    store,
    identity: config.identity,
    events,
    metrics,
    logger,
    now,
    limits: config.limits,
  });
  // Created whatever `intake.ackAfterAppend` says: the worker drains the list either way, so events
  // acknowledged while the option was on (before a restart that turned it off, or by a `web`
  // instance whose config has it while this one's does not) are recorded, not left in the store
  // for good. Only the intake path's use of it (appending) follows the option.
  const deferred = createDeferredIntake({
    store,
    contacts,
    journal,
    logger: logger.child({ component: 'intake' }),
    metrics,
    maxBacklog: config.intake.maxBacklog,
    // A `worker` answers no vendor: no request waits behind its decodes (WORKER_RECORD_CONCURRENCY).
    recordConcurrency: role === 'worker' ? WORKER_RECORD_CONCURRENCY : RECORD_CONCURRENCY,
    // An `all` process whose vendors are quiet (the backlog after a burst) records as widely.
    quietRecordConcurrency: WORKER_RECORD_CONCURRENCY,
    // The channels are built below; the worker only asks once it runs.
    // By channel id and the route path the item carries; the journal's reason says which is gone
    // (it said "no longer configured" also of a configured channel whose vendor or route changed).
    routeFor(channelId, vendor, path) {
      const entry = channels.get(channelId);
      if (!entry) return null;
      if (entry.config.vendor !== vendor)
        return {
          missing: `channel ${channelId} was ${vendor} when the event was acknowledged and is ${entry.config.vendor} now`,
        };
      const route = entry.adapter.intake.find(
        (each) => each.kind === 'webhook' && each.path === path && each.ackAfterAppend === true,
      );
      return route
        ? { route, state: entry.runtime.state }
        : {
            missing: `channel ${channelId} (${vendor}) has no ${path === undefined ? 'webhook' : `route ${path}`} that acknowledges after an append any more`,
          };
    },
  });
  const facts = createFactService({
    channels: config.channels,
    vendorNames: registry.displayNames(),
    logger,
    metrics,
  });
  for (const source of createAttributeSources({ config, http, logger, metrics })) facts.addSource(source);

  let masterKey: Buffer | null = config.secrets.masterKey
    ? Buffer.from(config.secrets.masterKey, 'base64')
    : null;
  if (!masterKey && store.kind === 'memory') {
    // Keys generated now die with the process anyway, so an ephemeral key-encryption key is honest.
    // Said whatever the channels: console agent links are signed with it too, and stop working at
    // the next restart (a vendor check here would be a vendor name in the core).
    masterKey = randomBytes(32);
    logger.warn(
      'secrets.masterKey is not set: using an ephemeral master key (fine for the in-memory store only; agent links and stored keys end with the process)',
    );
  }

  // Agent links into the console (`{consoleUrl}` in reply.crmLink), signed under the master key.
  const agentLinks = masterKey
    ? createAgentLinks({ masterKey, ttlMs: config.console.linkTtl, publicUrl: config.server.publicUrl, now })
    : null;

  const context: BridgeServices = {
    config,
    logger,
    metrics,
    store,
    contacts,
    facts,
    events,
    http,
    now,
    masterKey,
    journal,
  };
  const channels = new Map<string, ChannelEntry>();
  for (const channel of config.channels) {
    const adapter = registry.get(channel.vendor);
    if (!adapter) throw new Error(`no adapter for vendor ${channel.vendor}`); // config validation prevents this
    // Only what vendor REST work needs: the request path (decode, facts, journal) is the pipeline's.
    const adapterContext: AdapterContext = {
      config,
      logger: logger.child({ channel: channel.id, vendor: channel.vendor }),
      now,
      store,
      http,
      metrics,
      masterKey,
      contacts,
      events,
      journal: {
        reject: (entry) =>
          journal.record({ ...entry, channelId: channel.id, vendor: channel.vendor, kind: 'rejected' }),
      },
    };
    const runtime = adapter.create(adapterContext, channel);
    for (const source of runtime.factSources ?? []) facts.addSource(source);
    channels.set(channel.id, { config: channel, runtime, adapter });
  }
  // Each vendor with a lookup route that authenticates (`open`) gets a channel that is none (UNKNOWN_CHANNEL_ID, no keys):
  // a lookup for an id that is no channel of the vendor's runs on it and is refused as a known
  // channel refuses a request none of its keys opens (src/http/app.ts). Only its intake state is
  // used: no jobs, routes, commands or fact sources. Its master key seals nothing (it has no keys).
  const unknownChannels = new Map<string, { config: ChannelConfig; runtime: ChannelRuntime<unknown> }>();
  for (const adapter of registry.list) {
    if (!adapter.intake.some((route) => route.kind === 'lookup' && route.open)) continue;
    const channel: ChannelConfig = { id: UNKNOWN_CHANNEL_ID, vendor: adapter.vendor, token: randomUUID() };
    const runtime = adapter.create(
      {
        config,
        logger: logger.child({ channel: UNKNOWN_CHANNEL_ID, vendor: adapter.vendor }),
        now,
        store,
        http,
        metrics,
        masterKey: masterKey ?? randomBytes(32),
        contacts,
        events,
        journal: { reject: async () => {} },
      },
      channel,
    );
    unknownChannels.set(adapter.vendor, { config: channel, runtime });
  }

  const delivery = createDelivery({
    config,
    store,
    redisUrl: store.kind === 'redis' ? config.store.redis : undefined,
    // The same client factory as the store's: BullMQ follows a Sentinel failover or a Cluster too.
    redisTarget: store.kind === 'redis' ? redisTargetOf(config.store) : undefined,
    keyPrefix: effectiveKeyPrefix(config.store),
    vendorNames: registry.displayNames(),
    contacts,
    crm: { contacts, connectors: registry.connectorsByKind() },
    events,
    http,
    logger: logger.child({ component: 'delivery' }),
    metrics,
    now,
  });
  // CRM credentials that expire (amoCRM long-lived tokens): a gauge on every role's /metrics,
  // and warnings in the log from the roles that deliver (start below).
  const crmTargets = config.destinations.filter(isCrmDestination).flatMap((destination) => {
    const connector = registry.connector(destination.kind);
    return connector ? [{ destination, connector }] : [];
  });
  exportCredentialExpiry(metrics, crmTargets);
  let stopExpiryWatch: (() => void) | undefined;
  const scheduler = createScheduler({
    jobs: [...channels.values()].flatMap(({ config: channel, runtime }) =>
      (runtime.jobs ?? []).map((job) => ({ channelId: channel.id, job })),
    ),
    store,
    logger: logger.child({ component: 'scheduler' }),
    metrics,
  });

  let accepting = true;
  const app = createApp({
    config,
    logger,
    metrics,
    store,
    storeCheck,
    contacts,
    facts,
    deferred: config.intake.ackAfterAppend ? deferred : null,
    journal,
    delivery,
    channels,
    unknownChannels,
    adapters: registry.list,
    isAccepting: () => accepting,
    agentLinks,
    // One key for every instance that shares the master key, so one customer's lookups log alike.
    ...(masterKey
      ? { logKey: Buffer.from(hkdfSync('sha256', masterKey, '', 'chatbridge log subject', 32)) }
      : {}),
    vendorNames: registry.displayNames(),
    crmDestinations: crmTargets,
    ...(options.configPath === undefined ? {} : { configPath: options.configPath }),
    role,
    now,
  });

  const servers: Server[] = [];
  let started = false;
  /** The start-up re-index of stored contacts (contacts/reindex.ts), on the roles that do background work. */
  let reindex: { stop(): Promise<void> } | undefined;
  let closing: Promise<void> | undefined;

  return {
    config,
    role,
    logger,
    store,
    metrics,
    context,
    channels,
    app,
    delivery,
    scheduler,
    async start() {
      if (started || role === 'web') return;
      started = true;
      stopExpiryWatch = watchCredentialExpiry({
        targets: crmTargets,
        logger: logger.child({ component: 'crm' }),
        now,
      });
      scheduler.start();
      deferred.start();
      await delivery.start();
      // Once per store, in the background: contacts stored by an older version get the keys the
      // current identifier rules make (else the same person becomes a second contact).
      reindex = startReindexOnce({
        store,
        identity: config.identity,
        timelineRetention: config.limits.timelineRetention,
        logger: logger.child({ component: 'contacts' }),
        now,
      });
    },
    listen(port = config.server.port, host = config.server.host) {
      try {
        assertSafeToListen(config, host);
      } catch (error) {
        return Promise.reject(error);
      }
      return new Promise((resolve, reject) => {
        const server = createHttpServer(app.callback()).listen(port, host);
        // Slow or idle vendor connections must not hold sockets forever.
        server.requestTimeout = 30_000;
        server.headersTimeout = 15_000;
        server.keepAliveTimeout = 5_000;
        server.once('listening', () => {
          servers.push(server);
          const address = server.address() as AddressInfo;
          logger.info({ port: address.port, host, role }, 'chatbridge listening');
          resolve(server);
        });
        server.once('error', reject);
      });
    },
    listenMetrics(port = config.metrics.port, host = config.metrics.host) {
      if (port === undefined) return Promise.resolve(null);
      return new Promise((resolve, reject) => {
        const app = createMetricsApp(metrics, { bind: host, allowedHosts: config.metrics.allowedHosts });
        const server = createHttpServer(app.callback()).listen(port, host);
        server.once('listening', () => {
          servers.push(server);
          logger.info({ port: (server.address() as AddressInfo).port, host }, 'metrics listening');
          resolve(server);
        });
        server.once('error', reject);
      });
    },
    close() {
      closing ??= (async () => {
        accepting = false;
        stopExpiryWatch?.();
        const grace = config.server.shutdownTimeoutMs;
        const shutdownStarted = performance.now();
        // Scheduling stops first: no run starts while the servers drain and intake finishes (each
        // up to its grace), only to be cut off by the stages after. Runs in progress get their
        // grace from now and are awaited below, before the queues and the store close.
        const schedulerStopped = scheduler.stop(grace);
        await Promise.all(
          servers.map(
            (server) =>
              new Promise<void>((resolve) => {
                const timer = setTimeout(() => server.closeAllConnections(), grace);
                server.close(() => {
                  clearTimeout(timer);
                  resolve();
                });
                server.closeIdleConnections();
              }),
          ),
        );
        // In-flight recording of acknowledged events finishes; what is left waits in the store.
        await deferred.stop(grace);
        await schedulerStopped;
        // The delivery queues and the channels' own work (Chatvisor's profile reads) end side by
        // side: each may take its grace, and one after the other they could pass the overall
        // deadline (stopOnSignals) before unfinished reads were marked pending in the store.
        // The channels' work has been running since the shutdown began, so their grace counts
        // from then: when the servers or a scheduled run (a hung Chatvisor holds both) took
        // their grace already, waiting a whole grace more passed that deadline too, and the
        // process exited before the unfinished reads were marked pending.
        const channelGrace = Math.max(0, grace - (performance.now() - shutdownStarted));
        await Promise.all([
          delivery.close(),
          // Stops between records; where it stopped is saved for the next start.
          reindex?.stop(),
          ...[...channels.values()].map(({ runtime }) => runtime.close?.(channelGrace)),
        ]);
        await store.close();
        logger.info('chatbridge stopped');
      })();
      return closing;
    },
  };
}
