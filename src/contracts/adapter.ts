import type { Logger } from 'pino';
import type { z } from 'zod';
import type { ChannelConfig, Config } from '../config/schema.js';
import type { FactAnswer, FactSource } from '../contacts/facts.js';
import type { ContactService } from '../contacts/service.js';
import type { Contact, Identifier, Observation } from '../contacts/types.js';
import type { EventPublisher } from '../events/outbox.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';
import type { Claim, Store } from '../store/types.js';
import type { ChannelRoute, CliCommand, CliCommandInfo, ScheduledJob } from './channel.js';

export type * from './channel.js';

/**
 * The contract between the core and a vendor adapter: adapters translate, the core orchestrates.
 * Every vendor request runs through one pipeline (src/intake/pipeline.ts):
 *
 *   parse → open? → decode → observe | look up → facts → render → settle? → journal, metrics
 *
 * `decode` and `render` are pure; `open` and `settle` are the only I/O an adapter does on a
 * request. The core reaches adapters only through adapters/index.ts (src/registry.ts).
 */
export interface AdapterDefinition<C = unknown> {
  /** The `vendor` of channel config and the URL segment, e.g. `jivochat`. */
  vendor: string;
  displayName: string;
  /** Checked when the config loads, every problem with its path. */
  channelSettings: z.ZodObject;
  /**
   * Cross-field checks once the whole config is typed. A problem refuses the config; one marked
   * `warning` is said (`config check`, the start log) and the config still loads: for a setting
   * that works but does less than it says (a link left out for want of another setting). Runs
   * also for a channel whose settings failed `channelSettings` (so that its other problems are
   * said in the same pass): parse them with safeParse, and leave a failure to that check.
   */
  checkConfig?(
    channel: ChannelConfig,
    config: Config,
  ): { path: (string | number)[]; message: string; warning?: boolean }[];
  intake: IntakeRoute<C, unknown>[];
  /**
   * The vendor-local identifier kinds its observations carry (`visitor`, `client`, ...). The
   * admin API's `?identity=` lists them when a search names a kind that is none.
   */
  identifierKinds?: readonly string[];
  /** One channel: the state its intake reads (`C`), and its vendor REST work. */
  create(context: AdapterContext, channel: ChannelConfig): ChannelRuntime<C>;
  /** For `chatbridge <command> --help` before any channel is built. */
  commands?: CliCommandInfo[];
}

export interface IntakeRoute<C, O = undefined> {
  /** webhook: POST /webhooks/<vendor>/:channelId/:token — the URL token is the credential.
   *  lookup: POST /<vendor>/:channelId/<path> — the sealed body is; rate-limited, never journalled. */
  kind: 'webhook' | 'lookup';
  path?: string;
  /** json: parsed once by the core (size and depth guards); raw: the bytes, for `open`. */
  body: 'json' | 'raw';
  /**
   * The answer to an observation that wants no facts does not depend on the contact, so with
   * `intake.ackAfterAppend` it may be given after one durable append (src/intake/deferred.ts).
   */
  ackAfterAppend?: boolean;
  /** A documented vendor quirk: mend malformed JSON as text before the one parse gives up. */
  repairJson?(text: string): string | undefined;
  doc: IntakeDoc;
  /**
   * I/O before decode: decrypt with a stored key, recall what the store remembers. `recheck`: a
   * lookup's `claim.onlyIf` no longer held when the core claimed (nothing was claimed or read);
   * `held` is what the hash field held in that step (null: nothing) — open again from it.
   */
  open?(request: IntakeRequest, channel: C, recheck?: { held: string | null }): Promise<O>;
  decode(request: IntakeRequest & { opened: O }, channel: C): Decoded;
  /**
   * Optional, for an `ackAfterAppend` route without `open`: decode's checks without building
   * what only recording uses. It refuses what decode refuses and returns what decode returns,
   * except that for a request decode would turn into observations that want no facts it may say
   * `deferrable` instead of building them: the core appends the request as received and the
   * worker decodes it then (src/intake/deferred.ts); should the append be refused (a full
   * backlog), the core runs decode and records inline. Without it, decode runs.
   */
  check?(request: IntakeRequest, channel: C): Decoded | Deferrable;
  render(result: IntakeResult<O>, channel: C): Answer;
  /** I/O after render, before the answer leaves: remember state, start background work, seal. */
  settle?(answer: Answer, result: IntakeResult<O>, channel: C): Promise<Answer>;
}

export interface IntakeRequest {
  /** The parsed JSON (json routes); undefined for raw ones. */
  body: unknown;
  rawBody: Buffer;
  /** `repairJson` mended the body. */
  repaired: boolean;
  contentType: string | undefined;
  receivedAt: Date;
}

/** What the request asks of the core. A `nothing` with a reason is journalled as unhandled. */
export type Decoded =
  | { kind: 'observe'; event: string; observations: Observation[]; facts?: FactsWanted }
  | { kind: 'lookup'; event: string; identifier: Identifier; facts: FactsWanted; options?: LookupOptions }
  | { kind: 'nothing'; event: string; reason?: string; outcome?: 'ok' | 'duplicate' };

/** `check`'s answer for a valid request whose observations want no facts (see IntakeRoute.check). */
export interface Deferrable {
  kind: 'deferrable';
  event: string;
}

/** Facts for the answer, within `deadlineMs` of arrival (less a reserve for sending, if asked). */
export interface FactsWanted {
  deadlineMs: number;
  max: number;
  /** The vendor times the whole answer: keep min(100 ms, 10 %) of the budget for sending it. */
  reserve?: boolean;
}

export interface LookupOptions {
  /** A miss reads what a hit reads (no oracle by work). */
  evenWork?: boolean;
  /** With attribute sources, hold every answer until the deadline (no oracle by time). */
  holdToDeadline?: boolean;
  /** The vendor's id of the request, for the log. */
  requestId?: string;
  /**
   * A one-time token (the LiveTex jti): claimed (SET NX with this time to live) in the same store
   * step that finds the contact; a replay is refused (401 replayed_token) and reads nothing.
   * `onlyIf`: claimed only while that hash field holds that value (the stored key record the
   * request was opened with); when it does not, nothing is claimed or read and the core calls
   * `open` again with what the field held (`recheck`), then decodes and claims again.
   */
  claim?: Claim;
}

export interface IntakeResult<O = unknown> {
  decoded: Decoded;
  opened: O;
  /** The contact observed (the last, for several observations) or found; null for nothing. */
  contact: Contact | null;
  /** Every observation had been seen before. */
  duplicate: boolean;
  /** Null when none were wanted, or they failed. */
  facts: FactAnswer | null;
  /** A signed read-only console link (`{consoleUrl}`); undefined without publicUrl or key. */
  consoleLink(contactId: string): string | undefined;
}

export interface Answer {
  /** JSON, a string or bytes (a stream is refused: webhooks and lookups are answered ahead of Koa, src/http/early.ts). */
  body: unknown;
  status?: number;
  /** Defaults to application/json. */
  contentType?: string;
  headers?: Record<string, string>;
}

/** For the OpenAPI document: what the vendor sends (read leniently, not enforced) and gets back. */
export interface IntakeDoc {
  summary: string;
  body?: z.ZodType;
  contentType?: string;
  answer?: z.ZodType;
  answerContentType?: string;
  /** Statuses the route answers with itself besides 200, 404 and the core's own. */
  errors?: Record<number, string>;
}

/**
 * Keeps what a channel's vendor REST work was handed and could not read (an item of a listing
 * that does not parse) in the payload journal, as kind `rejected` under the channel: the house
 * rule is that nothing a vendor sends is dropped unrecorded. The journal cuts the body as it cuts
 * any entry's (`limits.journalEntryBytes`).
 */
export interface ChannelJournal {
  reject(entry: { reason: string; rawBody: string; contentType?: string }): Promise<void>;
}

/**
 * What a channel's vendor REST work may use: no engine internals, no facts, and of the journal
 * only a way to keep what it could not read.
 */
export interface AdapterContext {
  config: Config;
  logger: Logger;
  now(): Date;
  /** The adapter's own keys: vendor state, caches, secrets at rest. */
  store: Store;
  http: HttpClient;
  metrics: Metrics;
  /** Seals secrets kept at rest (secrets.masterKey, or an ephemeral key on the memory store). */
  masterKey: Buffer | null;
  /** Work outside a vendor request (polling, profile links), and identifier checks in `open`. */
  contacts: Pick<ContactService, 'observe' | 'findByIdentifier' | 'normalizeIdentifier'>;
  /** Outbound events tied to no observation (agents.synced). */
  events: EventPublisher;
  journal: ChannelJournal;
}

export interface ChannelRuntime<C = unknown> {
  /** What this channel's intake steps read: its settings, and the services its hooks use. */
  state: C;
  routes?: ChannelRoute[];
  jobs?: ScheduledJob[];
  commands?: CliCommand[];
  /** Facts this channel offers other channels' answers. */
  factSources?: FactSource[];
  /** Ends the channel's own work; may take up to `graceMs` (server.shutdownTimeoutMs). */
  close?(graceMs: number): Promise<void>;
}
