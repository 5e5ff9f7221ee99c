import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { BridgeServices } from '../../../src/bridge.js';
import { parseConfig } from '../../../src/config/load.js';
import type { ChannelConfig, Config } from '../../../src/config/schema.js';
import { createContactEngine } from '../../../src/contacts/engine.js';
import { createFactService } from '../../../src/contacts/facts.js';
import type { AdapterContext } from '../../../src/contracts/adapter.js';
import { createOutboxPublisher, OUTBOX_KEY, type OutboxEntry } from '../../../src/events/outbox.js';
import { createPayloadJournal } from '../../../src/intake/journal.js';
import { createIntakePipeline, lookupMetricsFor } from '../../../src/intake/pipeline.js';
import { Metrics } from '../../../src/metrics.js';
import { createHttpClient } from '../../../src/net/http.js';
import { AdapterRegistry } from '../../../src/registry.js';
import { createMemoryStore } from '../../../src/store/memory.js';
import type { Store } from '../../../src/store/types.js';
import { type ChatvisorRuntime, chatvisorAdapter } from '../index.js';
import { chatvisorWebhook } from '../webhook.js';
import { memoryLogger } from './logs.js';

/**
 * The real core pieces a channel works with (contact engine, outbox, journal, facts, metrics,
 * HTTP client, and the intake pipeline its webhook runs through) on a given store, without the
 * HTTP server: for tests that drive the runtime directly. The config goes through the real
 * loader, so settings are validated as in production.
 */
export const TEST_CHANNEL_TOKEN = 'chatvisor-hook-token-0123456789';

export interface TestRuntime {
  /** The core services (the engine, journal, metrics the pipeline and the runtime use). */
  context: BridgeServices;
  /** What the channel's runtime was made with: for a test that builds a piece of it itself. */
  adapterContext: AdapterContext;
  config: Config;
  channel: ChannelConfig;
  runtime: ChatvisorRuntime;
  store: Store;
  logLines: string[];
  outbox(): Promise<OutboxEntry[]>;
  /** A webhook through the core's intake pipeline, as the HTTP route runs it. */
  webhook(body: unknown): Promise<{ body: unknown; event: string; outcome: string }>;
}

export function buildRuntime(options: {
  apiUrl: string;
  apiToken: string;
  settings?: Record<string, unknown>;
  agents?: Record<string, unknown>[];
  channels?: Record<string, unknown>[];
  store?: Store;
  now?: () => Date;
  logger?: Logger;
}): TestRuntime {
  const registry = new AdapterRegistry([chatvisorAdapter]);
  const config = parseConfig(
    {
      admin: { token: 'test-admin-token-0123456789' },
      log: { level: 'silent' },
      agents: options.agents ?? [],
      channels: [
        {
          id: 'cobrowse',
          vendor: 'chatvisor',
          token: TEST_CHANNEL_TOKEN,
          apiUrl: options.apiUrl,
          apiToken: options.apiToken,
          ...options.settings,
        },
        ...(options.channels ?? []),
      ],
    },
    registry,
    {},
  );
  const logs = memoryLogger();
  const logger = options.logger ?? logs.logger;
  const store = options.store ?? createMemoryStore();
  const now = options.now ?? (() => new Date());
  const metrics = new Metrics();
  const events = createOutboxPublisher(store);
  const contacts = createContactEngine({ store, identity: config.identity, events, metrics, logger, now });
  const facts = createFactService({
    channels: config.channels,
    vendorNames: registry.displayNames(),
    logger,
  });
  const journal = createPayloadJournal(store, now);
  const http = createHttpClient();
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
    masterKey: null,
    journal,
  };
  const adapterContext: AdapterContext = {
    config,
    logger,
    now,
    store,
    http,
    metrics,
    masterKey: null,
    contacts,
    events,
    journal: {
      reject: (entry) =>
        journal.record({ ...entry, channelId: 'cobrowse', vendor: 'chatvisor', kind: 'rejected' }),
    },
  };
  const pipeline = createIntakePipeline(
    {
      contacts,
      facts,
      journal,
      metrics,
      store,
      now,
      consoleLink: () => undefined,
    },
    lookupMetricsFor(metrics, registry.list),
  );
  const channel = config.channels[0]!;
  const runtime = chatvisorAdapter.create(adapterContext, channel) as ChatvisorRuntime;
  for (const source of runtime.factSources ?? []) facts.addSource(source);
  return {
    context,
    adapterContext,
    config,
    channel,
    runtime,
    store,
    logLines: logs.lines,
    async outbox() {
      return (await store.lrange(OUTBOX_KEY, 0, -1)).map((entry) => JSON.parse(entry) as OutboxEntry);
    },
    async webhook(body) {
      const rawBody = Buffer.isBuffer(body)
        ? body
        : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const reply = await pipeline.run('chatvisor', chatvisorWebhook, {
        channel: { config: channel, runtime },
        readBody: async () => rawBody,
        contentType: 'application/json',
        arrivedAt: performance.now(),
        logger,
      });
      return { body: reply.answer.body, event: reply.event, outcome: reply.outcome };
    },
  };
}
