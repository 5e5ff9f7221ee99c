import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ContactService } from '../contacts/service.js';
import type { Observation } from '../contacts/types.js';
import { observationSchema } from '../contacts/types.js';
import type { Decoded, IntakeRoute } from '../contracts/adapter.js';
import { AppError, IdentityContentionError, StoreBusyError, StoreUnavailableError } from '../errors.js';
import { extend } from '../extend.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { lockRenewed } from '../store/renewal.js';
import type { Store } from '../store/types.js';
import type { PayloadJournal } from './journal.js';
import { parseIntakeRequest } from './pipeline.js';

/**
 * Acknowledge after one durable append (issue 12 item 2, `intake.ackAfterAppend`).
 *
 * Vendor events whose answer carries no contact data (JivoChat's `{"result":"ok"}` events) need
 * not wait for the contact to be written: the web path decodes and
 * validates the payload (so a malformed one still gets its 400), appends the request as it was
 * received to one list in the store — one command, made durable like every other write
 * (`durability.replicas` is honoured by the caller) — and answers. A worker decodes it again with
 * the same adapter and the same arrival time (decode is pure, so it gets the same observations
 * and idempotency keys), or takes those the web path decoded when it runs in the same process
 * (the hand-off, below), and records them through the same engine. A route with an `open` step
 * (LiveTex's dialog webhook reads and writes the dialog memory there) is never deferred: the
 * worker decodes without it (src/intake/pipeline.ts records such a route inline).
 *
 * Why the payload and not the decoded observations: the payload is the record of what the vendor
 * said, and it is small — a 50-message chat_finished is 7 KB as sent and 27 KB as an observation
 * (its timeline entry keeps the payload, the transcript and the context); appending, reading back
 * and checking 35 KB items made the deferred path dearer than recording inline. An item is one
 * line of JSON (an id of its own, who sent it, when, which route) and the body after it.
 *
 * The hand-off: the worker decoded every item a second time (UTF-8, JSON, a 50-message
 * transcript: 18 % of a busy process's time in a burst, by a profile), although in the process
 * that appended it the web path had just decoded it to validate it. So the web path hands the
 * observations it decoded to this process's worker, in memory, tagged with an id that the item's
 * header carries (`id`, made for every item): when the same process drains the item, it
 * records those observations instead of decoding the bytes again — the same ones, since decode is pure and had the same
 * input. The list stays the only durable record: an item drained by another instance, after a
 * restart, on a retry (the engine may have changed the observations it was given) or appended
 * while the hand-off was full is decoded from its bytes as before. Bounded (HANDOFF_MAX items and
 * HANDOFF_BODY_BYTES: a burst beyond them is decoded again) and aged out (HANDOFF_TTL_MS: items
 * another instance drained).
 *
 * Why a list drained under a lock, as the outbox is (src/delivery/drain.ts), and not a stream
 * with consumer groups: it needs nothing the Store interface lacks (the in-memory store behaves
 * the same), the engine is idempotent per observation, so "read a chunk, record it, trim exactly
 * that chunk" is safe against a crash anywhere (a crash before the trim re-records the chunk and
 * changes nothing), and one drainer at a time still records a chunk concurrently.
 *
 * Trade-off (README "How it works"): between the answer and the worker, a contact does not yet
 * show the event (usually milliseconds; longer under a backlog or while no worker runs). Nothing
 * acknowledged is lost: the item is in the store before the answer (kill -9 tested).
 */

export const DEFERRED_KEY = 'intake:deferred';
/** Items that cannot be read back (never expected): kept for an operator, not dropped. */
export const DEFERRED_INVALID_KEY = 'intake:deferred:invalid';
const DRAIN_LOCK = 'intake:deferred:drain';
/**
 * The drain lock's lifetime, renewed every third of it while a chunk is recorded (as the CRM
 * flow's locks, src/store/renewal.ts). It was 30 s and never renewed: a chunk recorded more
 * slowly than that (a loaded machine, a slow store) let a second worker take the lock and record
 * the same items beside the first. Short, so a crashed drainer's items wait at most this long.
 */
const LOCK_TTL_MS = 10_000;
/** How long after an append the worker of this process drains (see wakeSoon). */
const WAKE_DELAY_MS = 20;
/**
 * How stale this instance's count of waiting items may be before a full backlog is read again.
 * The count comes from this instance's own appends and drains; a `web` instance does neither
 * while the backlog is full, so without a fresh read it would record inline for good after
 * another instance drained the list. Checked against the clock on an append, not by a timer.
 */
const BACKLOG_RECHECK_MS = 1000;
/**
 * At most one "backlog full" warning this often (the clock of `now`): while it is full every
 * deferrable event hits it, and a line per event would flood the log.
 */
const FULL_WARNING_MS = 60_000;
/** Items read and recorded per drain round. */
export const DEFERRED_CHUNK = 100;
/**
 * Items of a chunk being recorded at once (see recordAll), in a process that also answers vendors
 * (role `all`) while it appends: each item's decode runs without a pause before its first write,
 * so the more start together, the longer the requests beside them wait. Once it has appended
 * nothing for QUIET_MS it records as many as a `worker` (quietRecordConcurrency).
 */
export const RECORD_CONCURRENCY = 8;
/**
 * How long after this process's last append (or offer of observations) its worker counts the
 * vendors as quiet and records a chunk as widely as a `worker` process. A burst leaves a backlog
 * that one `all` process drains after it (bench/run.js's jivo_finished_deferred: most of the
 * events), and at 8 items in flight that drain waited partly on the store's round trips (about
 * three quarters of a core). Spacing the decodes instead (one item's start per turn of the event
 * loop, so that 32 could be in flight beside the answers) cost 10–25 % more CPU per event and
 * wrote 2–8 times as often, the store's cork then seldom holding more than one item's writes
 * (bench/HISTORY.md, twenty-eighth round): not taken.
 */
const QUIET_MS = 1000;
/**
 * The same in a process that answers no vendor (role `worker`, DeferredIntakeOptions'
 * recordConcurrency): nothing waits behind its decodes, and a worker draining a backlog was bound
 * by the store's round trips, not its CPU — 8 items in flight, two trips each, kept it at ~30–60 %
 * of a core. 32: a backlog drained faster (bench/deferred-drain.js; 100, the whole chunk, was no
 * faster than 32), and the chunk's writes leave in fewer socket writes. bench/HISTORY.md,
 * twenty-seventh round.
 */
export const WORKER_RECORD_CONCURRENCY = 32;
/** A bug (not a refusal, not the store being away) may fail one item; after this many tries it is journalled. */
const MAX_ATTEMPTS = 5;
const RETRY_MS = 1000;
/**
 * Decoded observations kept for this process's worker (see "The hand-off" above): enough for a
 * worker that keeps up (it drains within WAKE_DELAY_MS of an append) and a chunk or two of a burst;
 * past either bound, items are decoded from their bytes. The byte bound counts the bodies as
 * received (their decoded observations take a few times that): 1 MB bodies must not hold 256 MB.
 */
const HANDOFF_MAX = 256;
const HANDOFF_BODY_BYTES = 4 * 1024 * 1024;
/** A handed-off item not drained by this process within this long was drained elsewhere (or lost its turn). */
const HANDOFF_TTL_MS = 60_000;
/**
 * Larger bodies are recorded before their answer, not appended: `maxBacklog` counts items, and with
 * bodies up to server.bodyLimitBytes (1 MB) a stalled worker let the list grow to 10 GB before the
 * backlog counted as full; the engine keeps far less of such an event (a timeline entry is capped
 * at limits.timelineEntryBytes). This bounds the list at maxBacklog × 64 KiB (about 655 MB by default);
 * a 50-message chat_finished is 7 KB.
 */
export const DEFERRED_MAX_BODY_BYTES = 64 * 1024;

/**
 * The first line of an item; the request body follows the newline as it was received (UTF-8).
 * Written with `v` and `id` first: the trim's check compares each item's `{"v":2,"id":"…"` (see
 * idLength).
 */
export const itemHeaderSchema = z.object({
  v: z.literal(2),
  /**
   * Made for this append and no other (this process's random tag and a counter): the trim's check
   * compares it instead of the item's bytes, and the hand-off finds the item's observations by
   * it. Absent from the items of releases before it (their trim compares the whole item).
   */
  id: z.string().optional(),
  channelId: z.string(),
  vendor: z.string(),
  event: z.string(),
  /** The intake route's `path` (undefined: the vendor's webhook). */
  path: z.string().optional(),
  contentType: z.string().nullable(),
  /** The arrival time the web path decoded with (ms since the epoch): decode sees the same. */
  receivedAt: z.number(),
});

type ItemHeader = z.output<typeof itemHeaderSchema>;

/**
 * `itemHeaderSchema.parse(value)`, without zod for a header as `append` writes it: every field of
 * its type and no other key (then zod's output has the same fields and values). Anything else —
 * another key (zod drops it), a wrong type, a receivedAt JSON read as Infinity (zod refuses it) —
 * is zod's to decide, so what is accepted, and every error, stays zod's. The schema's parse, the
 * item header's JSON.parse and the `extend` of the header were ~7 % of a worker's recording time
 * in a profile of a drain (bench/HISTORY.md, twenty-ninth round); test/intake.deferred-header.test.ts
 * compares both on generated headers.
 */
export function readItemHeader(value: unknown): ItemHeader {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const header = value as Record<string, unknown>;
    let keys = 6;
    if (header.id !== undefined) keys++;
    if (header.path !== undefined) keys++;
    if (
      header.v === 2 &&
      (header.id === undefined || typeof header.id === 'string') &&
      typeof header.channelId === 'string' &&
      typeof header.vendor === 'string' &&
      typeof header.event === 'string' &&
      (header.path === undefined || typeof header.path === 'string') &&
      (header.contentType === null || typeof header.contentType === 'string') &&
      typeof header.receivedAt === 'number' &&
      Number.isFinite(header.receivedAt) &&
      Object.getPrototypeOf(header) === Object.prototype &&
      Object.keys(header).length === keys
    )
      return header as ItemHeader;
  }
  return itemHeaderSchema.parse(value);
}

/** How an item with an id starts (the header's first two keys, as `append` writes them). */
const ID_START = Buffer.from('{"v":2,"id":"', 'utf8');
/** Where an id's closing quote must be found (ids are ~25 characters). */
const ID_END_WITHIN = 96;

/**
 * How many first bytes of an item name it (its header up to the id's closing quote), for the
 * trim's check (Store expectListHead's `identify`); 0 for an item without an id (appended by a
 * release before it): the check compares the whole item then.
 *
 * Why the id of every item, not only the chunk's first and last (cheaper still, one element
 * read each): a new primary after a failover may lack an item of the chunk and hold, at its
 * place, an event appended after the failover, with the chunk's own items on both sides — ioredis
 * sends a command in flight again after a reconnection, so the chunk's last item can be pushed
 * again behind it. Trimming that list would drop an acknowledged event nobody recorded. Ids are
 * made once per append (a resend carries the same bytes), so equal ids at every place mean the
 * same items, as equal bytes did.
 */
export function idLength(item: string | Buffer): number {
  if (typeof item === 'string' || item.length <= ID_START.length) return 0;
  if (item.compare(ID_START, 0, ID_START.length, 0, ID_START.length) !== 0) return 0;
  const quote = item.indexOf(0x22, ID_START.length);
  return quote > ID_START.length && quote < ID_END_WITHIN ? quote + 1 : 0;
}

/** How an item of the release before starts (see itemV1Schema). */
const V1_START = Buffer.from('{"v":1', 'utf8');
/** Items appended by the release before (one decoded observation each); still read. */
const itemV1Schema = z.object({
  v: z.literal(1),
  channelId: z.string(),
  vendor: z.string(),
  event: z.string(),
  observation: observationSchema,
  raw: z.string(),
  contentType: z.string().nullable(),
  acceptedAt: z.number(),
});

/**
 * The backlog as an operator sees it (the console's status page): how many items wait and when
 * the oldest arrived (ms since the epoch; null when none waits or its header does not say). Read
 * from the store, so every instance shows the same.
 */
export async function readDeferredBacklog(store: Store): Promise<{ size: number; oldestAt: number | null }> {
  const size = await store.llen(DEFERRED_KEY);
  if (size === 0) return { size, oldestAt: null };
  const [oldest] = await store.lrangeBuffer(DEFERRED_KEY, 0, 0);
  if (!oldest) return { size, oldestAt: null };
  // Only the header line: the body may be 64 KB. An item of the release before is one JSON line.
  const newline = oldest.indexOf(0x0a);
  try {
    const header = JSON.parse(oldest.toString('utf8', 0, newline < 0 ? oldest.length : newline)) as {
      receivedAt?: unknown;
      acceptedAt?: unknown;
    };
    const at = header.receivedAt ?? header.acceptedAt;
    return { size, oldestAt: typeof at === 'number' && Number.isFinite(at) ? at : null };
  } catch {
    return { size, oldestAt: null };
  }
}

/** A request acknowledged after the append. */
export interface DeferredRequest {
  channelId: string;
  vendor: string;
  event: string;
  path?: string;
  rawBody: Buffer;
  contentType: string | undefined;
  receivedAt: Date;
  /** What the web path decoded from rawBody (received at receivedAt): the worker of this process may record these instead of decoding again. */
  observations?: Observation[];
}

/**
 * What the worker needs to decode an item again: the channel's webhook route (by the item's
 * channel id and route path) and state; or, when there is none now, why (the journal's reason).
 * Null: the channel is no longer configured.
 */
export type DeferredRouteLookup = (
  channelId: string,
  vendor: string,
  path: string | undefined,
) => { route: IntakeRoute<unknown, unknown>; state: unknown } | { missing: string } | null;

export interface DeferredIntake {
  /**
   * Append one request (durable once the store acknowledged it). False when the backlog is at
   * `maxBacklog` or the body is larger than DEFERRED_MAX_BODY_BYTES: the caller then records the
   * observations inline, so a stalled worker slows vendors down instead of filling the store.
   */
  append(request: DeferredRequest): Promise<boolean>;
  /**
   * Whether an append of a body of `bytes` now would hand its observations to this process's
   * worker (role `all`, room in the hand-off). When not, the web path need not build them: they
   * would be dropped, and the worker decodes the stored body.
   */
  takesObservations(bytes: number): boolean;
  /** Record every item appended so far (this instance drains; another holding the lock: returns). */
  drain(): Promise<{ recorded: number; busy: boolean }>;
  /** Background draining (roles all and worker): at once after a local append, else every pollMs. */
  start(): void;
  /**
   * Stops the background draining once the chunk in hand is recorded, waiting at most `graceMs`
   * for it (default: no bound); what is left stays in the store.
   */
  stop(graceMs?: number): Promise<void>;
  /** Items waiting, as last seen by this instance (from append replies, drains and rechecks of a full backlog). */
  backlog(): number;
}

export interface DeferredIntakeOptions {
  store: Store;
  /** The channels as configured now (an item whose channel is gone is journalled). */
  routeFor: DeferredRouteLookup;
  contacts: ContactService;
  journal: PayloadJournal;
  logger: Logger;
  metrics: Metrics;
  maxBacklog: number;
  pollMs?: number;
  /** The clock the backlog recheck reads (ms since the epoch); tests move it. */
  now?: () => number;
  /**
   * Items of a chunk recorded at once: RECORD_CONCURRENCY (the default) where this process also
   * answers vendors, WORKER_RECORD_CONCURRENCY where it does not (role `worker`).
   */
  recordConcurrency?: number;
  /**
   * Items recorded at once when this process has appended nothing for QUIET_MS (default:
   * recordConcurrency). Role `all`: WORKER_RECORD_CONCURRENCY — nothing waits behind its decodes
   * then, as in a `worker`.
   */
  quietRecordConcurrency?: number;
}

export function createDeferredIntake(options: DeferredIntakeOptions): DeferredIntake {
  const { store, contacts, journal, logger, metrics } = options;
  const pollMs = options.pollMs ?? 1000;
  const recordConcurrency = Math.max(1, options.recordConcurrency ?? RECORD_CONCURRENCY);
  const quietRecordConcurrency = Math.max(1, options.quietRecordConcurrency ?? recordConcurrency);
  /** When this process last appended or offered observations (the clock of `now`; see QUIET_MS). */
  let lastAppendAt = Number.NEGATIVE_INFINITY;
  const now = options.now ?? Date.now;
  const drainRepeats = createRepeatGate();
  const recorded = metrics.counter(
    'chatbridge_intake_deferred_total',
    'Observations acknowledged after a durable append and recorded by the worker, by outcome (recorded, journalled, retried)',
    ['outcome'],
  );
  // Read from the store at each scrape. It was this instance's own count (`known` below): a `web`
  // instance kept showing its last append's count after a worker had drained the list, and a
  // `worker` instance, which never appends, showed 0 with the list full. A failed read keeps the
  // value the scrape before read.
  metrics.gauge(
    'chatbridge_intake_deferred_backlog',
    'Events acknowledged after an append and not yet recorded: the length of the list at the scrape',
    [],
    async (gauge) => {
      const length = await store.llen(DEFERRED_KEY).catch(() => undefined);
      if (length !== undefined) gauge.set(length);
    },
  );
  let known = 0;
  /** When `known` was last read from the store (an append's reply, a drain, a recheck). */
  let knownAt = Number.NEGATIVE_INFINITY;
  const setKnown = (value: number) => {
    known = value;
    knownAt = now();
  };
  /**
   * Whether the backlog is full, reading its length again when the count is older than
   * BACKLOG_RECHECK_MS (another instance may have drained it). Concurrent appends share one read:
   * `knownAt` moves before it is awaited. A failed read leaves the count as it was (inline).
   */
  async function backlogFull(): Promise<boolean> {
    if (known < options.maxBacklog) return false;
    const at = now();
    if (at - knownAt < BACKLOG_RECHECK_MS) return true;
    knownAt = at;
    try {
      setKnown(await store.llen(DEFERRED_KEY));
    } catch (error) {
      logger.warn({ err: error }, 'deferred intake: could not read the backlog again; recording inline');
      return true;
    }
    return known >= options.maxBacklog;
  }
  /** Failures of an item that is neither refused nor blocked by the store, by its position text. */
  const attempts = new Map<string, number>();
  /** Unreadable items already pushed to the invalid list whose journal write has not held yet. */
  const setAside = new Set<string>();

  /** The hand-off (see above): decoded observations by id, oldest first (a Map keeps insertion order). */
  const handoff = new Map<string, { observations: Observation[]; at: number; bytes: number }>();
  let handoffBytes = 0;
  const forget = (id: string) => {
    const entry = handoff.get(id);
    if (!entry) return undefined;
    handoff.delete(id);
    handoffBytes -= entry.bytes;
    return entry;
  };
  /**
   * Item ids (the header's `id`): this instance's random tag (96 bits) and a counter, so no other
   * instance's item, before or after a restart, has the same. The trim's check relies on it.
   */
  const idTag = randomBytes(12).toString('base64url');
  let idCount = 0;
  /** Room for one more body of `bytes`, after dropping what has aged out. */
  function handoffRoom(now: number, bytes: number): boolean {
    for (const [id, entry] of handoff) {
      if (now - entry.at < HANDOFF_TTL_MS) break;
      forget(id);
    }
    return handoff.size < HANDOFF_MAX && handoffBytes + bytes <= HANDOFF_BODY_BYTES;
  }

  /** When the last "backlog full" warning was logged, and events recorded inline since. */
  let warnedFullAt = Number.NEGATIVE_INFINITY;
  let fullSinceWarning = 0;
  /**
   * A full backlog makes vendors wait for inline recording, and usually means no worker drains:
   * said once a minute (with how many events it turned away since), not per event and not never.
   */
  function warnFull() {
    fullSinceWarning++;
    const at = now();
    if (at - warnedFullAt < FULL_WARNING_MS) return;
    warnedFullAt = at;
    logger.warn(
      { backlog: known, maxBacklog: options.maxBacklog, recordedInline: fullSinceWarning },
      'deferred intake backlog is full (intake.maxBacklog): events are recorded before their answer until a worker drains it',
    );
    fullSinceWarning = 0;
  }

  async function append(request: DeferredRequest): Promise<boolean> {
    lastAppendAt = now();
    if (request.rawBody.length > DEFERRED_MAX_BODY_BYTES) return false;
    // Awaited only when the count says full: the usual append takes no extra turn.
    if (known >= options.maxBacklog && (await backlogFull())) {
      warnFull();
      return false;
    }
    // Kept before the push: this process's worker may read the item before the push's reply.
    const at = Date.now();
    const bytes = request.rawBody.length;
    const id = `${idTag}.${++idCount}`;
    const handedOff = running && request.observations !== undefined && handoffRoom(at, bytes);
    if (handedOff) {
      handoff.set(id, { observations: request.observations!, at, bytes });
      handoffBytes += bytes;
    }
    // `v` and `id` first (idLength reads them there).
    const header: z.input<typeof itemHeaderSchema> = {
      v: 2,
      id,
      channelId: request.channelId,
      vendor: request.vendor,
      event: request.event,
      ...(request.path === undefined ? {} : { path: request.path }),
      contentType: request.contentType ?? null,
      receivedAt: request.receivedAt.getTime(),
    };
    try {
      // Bytes, not text: the body goes to Redis as it arrived, without decoding 7–10 KB of UTF-8
      // here and encoding it again on the socket (measured: ~15 % of this path's CPU).
      setKnown(
        await store.rpush(
          DEFERRED_KEY,
          Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`, 'utf8'), request.rawBody]),
        ),
      );
    } catch (error) {
      if (handedOff) forget(id);
      throw error;
    }
    wakeSoon();
    return true;
  }

  /** An item as what to record: its observations, or why there are none (journalled). */
  type Unpacked = {
    channelId: string;
    vendor: string;
    event: string;
    raw: Buffer | string;
    contentType: string | null;
    observations: Observation[];
    /** Set when the item cannot be recorded as it is: journalled with this kind and reason. */
    journal?: { kind: 'unhandled' | 'rejected'; reason: string };
  };

  function unpack(item: Buffer): Unpacked {
    if (item.subarray(0, V1_START.length).equals(V1_START)) {
      const v1 = itemV1Schema.parse(JSON.parse(item.toString('utf8')));
      return extend(v1, { observations: [v1.observation as Observation] });
    }
    const newline = item.indexOf(0x0a);
    if (newline < 0) throw new Error('no header line');
    const header = readItemHeader(JSON.parse(item.toString('utf8', 0, newline)));
    const raw = item.subarray(newline + 1);
    // The fields record and keep read, by name (not a copy of the header's keys: src/extend.ts).
    const base: Unpacked = {
      channelId: header.channelId,
      vendor: header.vendor,
      event: header.event,
      raw,
      contentType: header.contentType,
      observations: [],
    };
    // Taken once: a retry decodes the bytes (the engine may have changed what it was given).
    const handed = header.id === undefined ? undefined : forget(header.id);
    const found = options.routeFor(header.channelId, header.vendor, header.path);
    if (!found || 'missing' in found) {
      base.journal = {
        kind: 'rejected',
        reason: found?.missing ?? `channel ${header.channelId} (${header.vendor}) is no longer configured`,
      };
      return base;
    }
    if (handed) {
      base.observations = handed.observations;
      return base;
    }
    let decoded: Decoded;
    try {
      const request = parseIntakeRequest(
        found.route,
        raw,
        header.contentType ?? undefined,
        new Date(header.receivedAt),
      );
      // The request is this call's own: `opened` set on it rather than on a copy (extend).
      const opened = request as typeof request & { opened: undefined };
      opened.opened = undefined;
      decoded = found.route.decode(opened, found.state);
    } catch (error) {
      // Accepted by the web path, refused now: the channel's settings changed in between.
      if (error instanceof AppError && error.status < 500) {
        base.journal = { kind: 'rejected', reason: error.message };
        return base;
      }
      throw error;
    }
    if (decoded.kind === 'observe') base.observations = decoded.observations;
    else
      base.journal = {
        kind: 'unhandled',
        reason: decoded.kind === 'nothing' ? (decoded.reason ?? 'nothing to record') : 'not an observation',
      };
    return base;
  }

  /** What can be read of an item that does not unpack: its header's names, and the body after it. */
  function headerOf(item: Buffer): {
    channelId?: string;
    vendor?: string;
    contentType?: string;
    body: Buffer;
  } {
    const newline = item.indexOf(0x0a);
    if (newline < 0) return { body: item };
    try {
      const header = JSON.parse(item.toString('utf8', 0, newline)) as Record<string, unknown>;
      const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
      const contentType = text(header.contentType);
      return {
        ...(text(header.channelId) === undefined ? {} : { channelId: text(header.channelId)! }),
        ...(text(header.vendor) === undefined ? {} : { vendor: text(header.vendor)! }),
        ...(contentType === undefined ? {} : { contentType }),
        body: item.subarray(newline + 1),
      };
    } catch {
      return { body: item };
    }
  }

  /** 'done' (recorded, or refused and journalled) or 'retry' (store away, or a failure to retry). */
  async function record(bytes: Buffer): Promise<'done' | 'retry'> {
    let item: Unpacked;
    try {
      item = unpack(bytes);
    } catch (error) {
      // Set aside once: when the journal write below fails, the retry must not push it again.
      const key = bytes.toString('latin1');
      if (!setAside.has(key)) {
        logger.error(
          { err: error },
          `a deferred intake item does not parse; moved to ${DEFERRED_INVALID_KEY}`,
        );
        await store.rpush(DEFERRED_INVALID_KEY, bytes);
        setAside.add(key);
      }
      // Also in the payload journal (the API's and the console's view of what was not recorded):
      // the invalid list alone is seen by no one who does not read Redis, and these events were
      // answered 200. An item of a newer release after a rollback, or a decode that fails now.
      const seen = headerOf(bytes);
      await journal.record({
        channelId: seen.channelId ?? 'unknown',
        vendor: seen.vendor ?? 'unknown',
        kind: 'rejected',
        reason: `acknowledged, then not readable by the worker (kept in ${DEFERRED_INVALID_KEY}): ${(error as Error).message}`,
        rawBody: seen.body,
        contentType: seen.contentType,
      });
      setAside.delete(key);
      recorded.inc({ outcome: 'journalled' });
      return 'done';
    }
    // Failures are counted per item; its key text is built only once something has failed.
    const attemptKey = () => bytes.toString('latin1');
    const keep = (kind: 'unhandled' | 'rejected', reason: string) =>
      journal.record({
        channelId: item.channelId,
        vendor: item.vendor,
        kind,
        reason,
        rawBody: item.raw,
        contentType: item.contentType ?? undefined,
      });
    if (item.journal) {
      await keep(item.journal.kind, item.journal.reason);
      recorded.inc({ outcome: 'journalled' });
      return 'done';
    }
    try {
      // In order, as inline: the engine is idempotent, so a retry re-records only what is missing.
      // An item an older worker recorded under another key (kill -9 before its trim, during an
      // upgrade) is a repeat too: the engine looks for the key of before (formerIdempotencyKeys).
      for (const observation of item.observations) await contacts.observe(observation);
      if (attempts.size > 0) attempts.delete(attemptKey());
      recorded.inc({ outcome: 'recorded' });
      return 'done';
    } catch (error) {
      // A conflict (one person written too often at once) is passing, like the store being away.
      const passing =
        error instanceof StoreUnavailableError ||
        error instanceof StoreBusyError ||
        error instanceof IdentityContentionError;
      const refused = error instanceof AppError && error.status < 500 && !passing;
      const storeAway = passing;
      const itemKey = attemptKey();
      const tries = storeAway ? 0 : (attempts.get(itemKey) ?? 0) + 1;
      if (!refused && tries < MAX_ATTEMPTS) {
        if (!storeAway) attempts.set(itemKey, tries);
        recorded.inc({ outcome: 'retried' });
        logger.warn(
          { err: error, event: item.event, tries },
          'deferred observation not recorded yet; will retry',
        );
        return 'retry';
      }
      // Refused as it would have been inline (no usable identifier, too large ...), or failing
      // again and again: kept in the journal with the payload, as the inline path keeps it.
      attempts.delete(itemKey);
      await keep(
        error instanceof AppError && error.code === 'no_identifier' ? 'unhandled' : 'rejected',
        refused ? (error as Error).message : `not recorded after ${tries} tries: ${(error as Error).message}`,
      );
      recorded.inc({ outcome: 'journalled' });
      if (!refused)
        logger.error(
          { err: error, event: item.event },
          'deferred observation journalled after repeated failures',
        );
      return 'done';
    }
  }

  /**
   * An item whose recording throws (the journal write failed: the store away, the journal busy)
   * is retried like one the store refused for a moment. It used to reject the whole chunk: the
   * outcomes of the items beside it were dropped (not `carried`), so the next round journalled
   * those again, and the lock was released while they were still being recorded.
   */
  async function recordOrRetry(bytes: Buffer): Promise<'done' | 'retry'> {
    try {
      return await record(bytes);
    } catch (error) {
      recorded.inc({ outcome: 'retried' });
      logger.warn({ err: error }, 'deferred item not finished (journal write failed?); will retry');
      return 'retry';
    }
  }

  /**
   * Every item of a chunk, `recordConcurrency` at a time (quietRecordConcurrency when quiet),
   * outcomes in item order. Not all at once: decoding an item runs without a pause before its
   * first write, so starting a chunk's 100 at once held the event loop for all their decodes (tens
   * of milliseconds for chat_finished transcripts) while the vendors' own requests waited for
   * their answers.
   */
  async function recordAll(
    items: Buffer[],
    done: readonly boolean[],
    lockLost: () => boolean,
  ): Promise<Array<'done' | 'retry'>> {
    const outcomes = new Array<'done' | 'retry'>(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const index = next++;
        // Once the drain lock is lost another instance may be recording this chunk: the items
        // not started yet are left (as retries) to whoever holds the lock, not recorded beside it.
        if (!done[index] && lockLost()) outcomes[index] = 'retry';
        else outcomes[index] = done[index] ? 'done' : await recordOrRetry(items[index]!);
      }
    };
    // Chosen per chunk: a burst starting meanwhile waits behind at most this chunk's wide start.
    const width = now() - lastAppendAt >= QUIET_MS ? quietRecordConcurrency : recordConcurrency;
    await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
    return outcomes;
  }

  /**
   * The chunk a round left in the list (an item waits for a retry, the lock ran long, WAIT did not
   * answer) and which of its items that round finished, under which write mark. The next round
   * skips those: recording them again changed nothing in the engine, but a refused item went to
   * the journal once per round (a bounded ring, whose copies pushed other entries out), an
   * unreadable one to the invalid list, and every item was counted again. Only while the list
   * still starts with exactly those items and the connection is the one they were written on
   * (after a reconnection WAIT no longer vouches for those writes, so they are made again).
   */
  let carried: { items: Buffer[]; done: boolean[]; mark: number | undefined } | undefined;
  function doneBefore(items: Buffer[], mark: number | undefined): boolean[] {
    const before = carried;
    carried = undefined;
    if (!before || before.mark !== mark) return [];
    const done: boolean[] = [];
    for (let index = 0; index < before.items.length && index < items.length; index++) {
      if (!before.items[index]!.equals(items[index]!)) return [];
      done.push(before.done[index]!);
    }
    return done;
  }

  /** One chunk under the drain lock: read, record all (concurrently), trim exactly what was read. */
  async function drainChunk(): Promise<{ recorded: number; busy: boolean; more: boolean }> {
    const lock = await lockRenewed(store, DRAIN_LOCK, LOCK_TTL_MS, {
      onRenewError: (error) =>
        logger.warn({ err: error }, 'deferred intake: could not renew the drain lock; trying again'),
      onLost: () =>
        logger.warn(
          'deferred intake: the drain lock was lost while recording a chunk; its items not started yet are left for the next round',
        ),
    });
    if (!lock) return { recorded: 0, busy: true, more: false };
    try {
      const writeMark = store.writeMark?.();
      const items = await store.lrangeBuffer(DEFERRED_KEY, 0, DEFERRED_CHUNK - 1);
      if (items.length === 0) {
        setKnown(0);
        return { recorded: 0, busy: false, more: false };
      }
      const outcomes = await recordAll(items, doneBefore(items, writeMark), () => lock.lost);
      // Kept until the trim below holds (see `carried`); any return before it leaves the chunk.
      carried = { items, done: outcomes.map((outcome) => outcome === 'done'), mark: writeMark };
      // A chunk is trimmed only when all of it is recorded: the next round records what is left.
      if (outcomes.includes('retry')) return { recorded: 0, busy: true, more: false };
      // The lock lost (renewals failed for a whole ttl, or the event loop stalled past it):
      // another instance may be draining the same items, so the trim is left to the next round
      // rather than cutting items nobody has read. Renewed once more here for that reason: the
      // timer's renewals may not have run.
      if (!(await lock.stillHeld())) {
        logger.warn(
          { items: items.length },
          'deferred intake: the drain lock was lost while recording a chunk; not trimming it (the next round records it again)',
        );
        return { recorded: 0, busy: true, more: false };
      }
      // Trimmed only where what was recorded is safe: the recording writes reached the replicas
      // (store.durability, as a webhook's answer waits for them), and the server that trims still
      // starts the list with exactly these items — after a failover, a new primary that lacks them
      // keeps the list as it is and the next round records the chunk again (idempotent).
      // coverReads: an item recorded by an earlier round (whose WAIT failed, so the chunk stayed)
      // is found done this time and writes nothing; WAIT alone would vouch only for this round's
      // writes, and the trim would drop the item while the replicas may lack its recording. One
      // write more per chunk (at most DEFERRED_CHUNK items), in the background, only with
      // durability.replicas.
      await store.confirmWrites?.(writeMark, { coverReads: true });
      // Each item's id compared, not its bytes (idLength says why that is as exact).
      const batch = store.batch().expectListHead(DEFERRED_KEY, items, idLength);
      batch.ltrim(DEFERRED_KEY, items.length, -1);
      const trimmed = await batch.exec();
      carried = undefined;
      if (!trimmed) {
        logger.warn(
          { items: items.length },
          'deferred intake: the list changed under this drain (a Redis failover in between?); recording the chunk again',
        );
        return { recorded: 0, busy: true, more: false };
      }
      setKnown(Math.max(0, known - items.length));
      return { recorded: items.length, busy: false, more: items.length === DEFERRED_CHUNK };
    } finally {
      await lock.release();
    }
  }

  /** Chunk after chunk until the list is empty, or (the background drain) until `stop()`. */
  async function drain(whileRunning = false): Promise<{ recorded: number; busy: boolean }> {
    let total = 0;
    for (;;) {
      const round = await drainChunk();
      total += round.recorded;
      if (round.busy || !round.more) return { recorded: total, busy: round.busy };
      // Stopping: the chunk in hand is finished, the rest waits in the store for the next worker.
      // Draining on would keep a shutdown waiting for the whole backlog (10,000 items by
      // default), far past server.shutdownTimeoutMs and a platform's grace before SIGKILL.
      if (whileRunning && !running) return { recorded: total, busy: false };
    }
  }

  let running = false;
  let draining: Promise<void> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let soonTimer: NodeJS.Timeout | undefined;

  /**
   * After an append: a drain WAKE_DELAY_MS later, not at once. A drain round costs the same few
   * trips (lock, read, trim, unlock) for one item as for a hundred, and at a steady moderate rate
   * waking per append drained items one at a time; waiting a moment lets a round take what
   * arrived meanwhile. (Under a burst the drain never sleeps, so this changes nothing there.)
   */
  function wakeSoon() {
    if (!running || soonTimer !== undefined) return;
    soonTimer = setTimeout(() => {
      soonTimer = undefined;
      wake();
    }, WAKE_DELAY_MS);
  }

  function wake() {
    if (!running) return;
    if (draining) {
      again = true;
      return;
    }
    draining = (async () => {
      do {
        again = false;
        try {
          const result = await drain(true);
          if (result.busy && running) {
            // Another instance drains, or an item waits for a retry: look again shortly.
            clearTimeout(retryTimer);
            retryTimer = setTimeout(wake, RETRY_MS);
          }
        } catch (error) {
          // Retried every second for as long as the store is away: said once a minute.
          warnOncePerMinute(
            logger,
            drainRepeats,
            'drain',
            { err: error },
            'deferred intake drain failed; retrying',
          );
          clearTimeout(retryTimer);
          if (running) retryTimer = setTimeout(wake, RETRY_MS);
        }
      } while (again && running);
      draining = null;
    })();
  }

  /**
   * The poll: one LLEN while the list is empty as far as this instance knows, rather than a drain
   * round's lock, read and unlock. Every worker polls, with `ackAfterAppend` off too (items
   * appended while it was on are drained whatever the option says now), so an idle poll is kept
   * to one trip. A failed read wakes the drain anyway: it retries and logs as it always has.
   */
  function poll() {
    if (!running || draining || known > 0) return wake();
    store.llen(DEFERRED_KEY).then(
      (length) => {
        if (length > 0) wake();
      },
      () => wake(),
    );
  }

  return {
    append,
    takesObservations: (bytes) => {
      lastAppendAt = now();
      return running && bytes <= DEFERRED_MAX_BODY_BYTES && handoffRoom(Date.now(), bytes);
    },
    drain,
    start() {
      if (running) return;
      running = true;
      // Items appended by other instances (role web) or left by a crash are found by polling.
      timer = setInterval(poll, pollMs);
      timer.unref();
      wake();
    },
    async stop(graceMs) {
      running = false;
      handoff.clear();
      handoffBytes = 0;
      clearInterval(timer);
      clearTimeout(soonTimer);
      soonTimer = undefined;
      clearTimeout(retryTimer);
      const inHand = draining;
      if (!inHand) return;
      if (graceMs === undefined) return inHand;
      // Bounded: with Redis hung (or a chunk whose recording hangs) the drain never settles, and
      // the shutdown waited on it for good. Past the grace the chunk is left as it is: it was not
      // trimmed, so the next worker records it again (idempotent).
      let graceTimer: NodeJS.Timeout | undefined;
      const late = await Promise.race([
        inHand.then(() => false),
        new Promise<boolean>((resolve) => {
          graceTimer = setTimeout(() => resolve(true), graceMs);
        }),
      ]);
      clearTimeout(graceTimer);
      if (late)
        logger.warn(
          { graceMs },
          'deferred intake: the chunk in hand did not finish within the grace period; it stays in the store for the next worker',
        );
    },
    backlog: () => known,
  };
}
