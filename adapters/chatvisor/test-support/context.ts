import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { parseConfig } from '../../../src/config/load.js';
import type { ChannelConfig, Config } from '../../../src/config/schema.js';
import { createContactEngine } from '../../../src/contacts/engine.js';
import { createFactService } from '../../../src/contacts/facts.js';
import type { AdapterContext, InboundRequest } from '../../../src/contracts/adapter.js';
import { BadRequestError } from '../../../src/errors.js';
import { createOutboxPublisher, OUTBOX_KEY, type OutboxEntry } from '../../../src/events/outbox.js';
import { createPayloadJournal } from '../../../src/intake/journal.js';
import { Metrics } from '../../../src/metrics.js';
import { createHttpClient } from '../../../src/net/http.js';
import { AdapterRegistry } from '../../../src/registry.js';
import { createMemoryStore } from '../../../src/store/memory.js';
import type { Store } from '../../../src/store/types.js';
import { type ChatvisorRuntime, chatvisorAdapter } from '../index.js';
import { memoryLogger } from './logs.js';

/**
 * The real core pieces an adapter gets from the bridge (contact engine, outbox, journal, facts,
 * metrics, HTTP client) on a given store, without the HTTP server: for tests that drive the
 * runtime directly. The config goes through the real loader, so settings are validated as in
 * production.
 */
export const TEST_CHANNEL_TOKEN = 'chatvisor-hook-token-0123456789';

export interface TestRuntime {
  context: AdapterContext;
  config: Config;
  channel: ChannelConfig;
  runtime: ChatvisorRuntime;
  store: Store;
  logLines: string[];
  outbox(): Promise<OutboxEntry[]>;
  webhook(body: unknown): ReturnType<NonNullable<ChatvisorRuntime['handleWebhook']>>;
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
  const context: AdapterContext = {
    config,
    logger,
    metrics,
    deferred: null,
    store,
    contacts: createContactEngine({ store, identity: config.identity, events, metrics, logger, now }),
    facts: createFactService({ channels: config.channels, vendorNames: registry.displayNames(), logger }),
    events,
    http: createHttpClient(),
    now,
    masterKey: null,
    journal: createPayloadJournal(store, now),
  };
  const channel = config.channels[0]!;
  const runtime = chatvisorAdapter.create(context, channel) as ChatvisorRuntime;
  return {
    context,
    config,
    channel,
    runtime,
    store,
    logLines: logs.lines,
    async outbox() {
      return (await store.lrange(OUTBOX_KEY, 0, -1)).map((entry) => JSON.parse(entry) as OutboxEntry);
    },
    webhook(body) {
      return runtime.handleWebhook!(inboundRequest(channel, body, logger));
    },
  };
}

/** An InboundRequest like the core builds one (json() throws BadRequestError on bad JSON). */
export function inboundRequest(
  channel: ChannelConfig,
  body: unknown,
  logger: Logger,
  extra: { query?: Record<string, string> } = {},
): InboundRequest {
  const rawBody = Buffer.isBuffer(body)
    ? body
    : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return {
    channel,
    rawBody,
    headers: { 'content-type': 'application/json' },
    query: extra.query ?? {},
    params: { channelId: channel.id },
    contentType: 'application/json',
    requestId: 'test',
    logger,
    receivedAt: performance.now(),
    json() {
      try {
        return JSON.parse(rawBody.toString('utf8'));
      } catch (error) {
        throw new BadRequestError('invalid_json', `the body is not valid JSON: ${(error as Error).message}`);
      }
    },
  };
}
