import type { Logger } from 'pino';
import type { z } from 'zod';
import type { ChannelConfig, Config } from '../config/schema.js';
import type { FactService } from '../contacts/facts.js';
import type { ContactService } from '../contacts/service.js';
import type { EventPublisher } from '../events/outbox.js';
import type { DeferredIntake } from '../intake/deferred.js';
import type { PayloadJournal } from '../intake/journal.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';
import type { Store } from '../store/types.js';

/**
 * The contract between the core and a vendor adapter. The core never imports a vendor folder:
 * it sees adapters only as `AdapterDefinition`s listed in adapters/index.ts (via src/registry.ts).
 */

/** What the core hands every channel runtime. */
export interface AdapterContext {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  store: Store;
  contacts: ContactService;
  /** Builds the "what we know about this contact" facts shown to agents (shared by all vendors). */
  facts: FactService;
  /** Outbound events that are not tied to one observation (e.g. agents.synced). */
  events: EventPublisher;
  /** The one outbound HTTP client (injectable undici dispatcher). */
  http: HttpClient;
  /** Current time; injectable for tests. */
  now(): Date;
  /**
   * Key-encryption key for secrets at rest (secrets.masterKey). On the in-memory store without a
   * configured key it is an ephemeral random key (the core warns); null only when neither applies.
   */
  masterKey: Buffer | null;
  /** Keep payloads that were rejected or could not be used, so nothing a vendor sent is lost. */
  journal: PayloadJournal;
  /**
   * With `intake.ackAfterAppend`: observations of events whose answer carries no contact data go
   * here (one durable append) instead of to `contacts.observe`; null when the option is off.
   */
  deferred: DeferredIntake | null;
  /**
   * A signed, expiring, read-only console link to one contact (`{consoleUrl}` in reply.crmLink);
   * undefined without server.publicUrl or a master key.
   */
  consoleLink?(contactId: string): string | undefined;
}

export interface InboundRequest {
  channel: ChannelConfig;
  rawBody: Buffer;
  /** Lower-cased header names. */
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, string | string[] | undefined>;
  params: Record<string, string>;
  contentType: string | undefined;
  requestId: string;
  logger: Logger;
  /** performance.now() when the request arrived (before its body was read): deadlines count from here. */
  receivedAt: number;
  /** Parses rawBody as JSON; throws BadRequestError (400) when it is not JSON. */
  json(): unknown;
}

export interface RouteResult {
  status?: number;
  body: unknown;
  /** Defaults to application/json; a Buffer or string body with another type is sent as is. */
  contentType?: string;
  headers?: Record<string, string>;
  /** For metrics and logs: the vendor's event name (e.g. chat_accepted) and how it went. */
  event?: string;
  outcome?: 'ok' | 'duplicate' | 'unhandled';
}

export interface ChannelRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /**
   * Path below the channel, with `:param` segments. `admin` routes are mounted at
   * `/api/v1/channels/:id/<path>` behind the admin token; `public` routes at
   * `/<vendor>/:channelId/<path>` (e.g. `/livetex/:channelId/attributes`).
   */
  path: string;
  scope: 'admin' | 'public';
  summary: string;
  /** For the OpenAPI document. */
  requestBody?: z.ZodType;
  query?: z.ZodType;
  response?: z.ZodType;
  /** For the OpenAPI document, when not JSON (e.g. application/jose for the LiveTex lookup). */
  requestContentType?: string;
  responseContentType?: string;
  /** For the OpenAPI document: the error statuses the route answers with, and when. */
  errors?: Record<number, string>;
  handle(request: InboundRequest): Promise<RouteResult>;
}

export interface ScheduledJob {
  /** Unique within the channel, e.g. `agent-sync`. */
  name: string;
  /** node-cron expression; 6 fields = with seconds. */
  schedule: string;
  /** Runs under a store lock, so one instance runs it at a time. */
  run(signal: AbortSignal): Promise<unknown>;
}

export interface CliIo {
  stdout(line: string): void;
  /** Progress and diagnostics. */
  stderr(line: string): void;
}

export interface CliCommand {
  /** e.g. `keys generate`, `sync agents`. Invoked as `chatbridge <name> --channel ID [options]`. */
  name: string;
  summary: string;
  /** Options besides --channel, for --help and parsing: name -> description. Boolean unless `takesValue`. */
  options?: Record<string, { description: string; takesValue?: boolean }>;
  run(options: Record<string, string | boolean>, io: CliIo): Promise<unknown>;
}

/** What the CLI shows for a vendor command before any channel is built (`--help`). */
export type CliCommandInfo = Omit<CliCommand, 'run'>;

export interface ChannelRuntime {
  /** `POST /webhooks/<vendor>/:channelId/:token`, after the token was checked. */
  handleWebhook?(request: InboundRequest): Promise<RouteResult>;
  routes?: ChannelRoute[];
  jobs?: ScheduledJob[];
  commands?: CliCommand[];
  close?(): Promise<void>;
}

export interface WebhookDoc {
  summary: string;
  body?: z.ZodType;
  /** Defaults to application/json. */
  contentType?: string;
  answer?: z.ZodType;
}

export interface AdapterDefinition {
  /** The `vendor` value in channel config and the URL segment, e.g. `jivochat`. */
  vendor: string;
  displayName: string;
  /**
   * Settings this vendor's channels take besides id/vendor/token; checked when the config is
   * loaded so that every mistake is reported with its path.
   */
  channelSettings: z.ZodObject;
  /** Cross-field checks against the whole config (e.g. livetex needs secrets.masterKey). */
  checkConfig?(channel: ChannelConfig, config: Config): { path: (string | number)[]; message: string }[];
  create(context: AdapterContext, channel: ChannelConfig): ChannelRuntime;
  /**
   * For the OpenAPI document: what the vendor POSTs to `/webhooks/<vendor>/:channelId/:token`
   * (as the vendor documents it; the adapter reads it leniently) and what it gets back.
   */
  webhook?: WebhookDoc;
  /**
   * The CLI commands this vendor's channels offer (their runtimes carry the same names), declared
   * here so `chatbridge <command> --help` answers without reading the config or building anything.
   */
  commands?: CliCommandInfo[];
}
