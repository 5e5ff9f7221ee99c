import { createHmac, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Counter, Histogram } from 'prom-client';
import type { ChannelConfig } from '../config/schema.js';
import {
  anchoredBy,
  type FactAnswer,
  type FactRequest,
  type FactService,
  isVerifiedIdentifier,
} from '../contacts/facts.js';
import type { ContactService } from '../contacts/service.js';
import type { Contact, Observation } from '../contacts/types.js';
import type {
  AdapterDefinition,
  Answer,
  ChannelRuntime,
  Decoded,
  Deferrable,
  IntakeRequest,
  IntakeResult,
  IntakeRoute,
} from '../contracts/adapter.js';
import {
  AppError,
  BadRequestError,
  NoIdentifierError,
  PayloadTooLargeError,
  ReplayedTokenError,
  RequestClosedError,
  StoreBusyError,
} from '../errors.js';
import { extend } from '../extend.js';
import { refuseEncodedBody } from '../http/body.js';
import { jsonDepthExceeds, parseJson } from '../http/json.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/types.js';
import { utf8Text } from '../utf8.js';
import type { DeferredIntake, DeferredRequest } from './deferred.js';
import type { PayloadJournal } from './journal.js';

/**
 * The intake pipeline (issue 12 item 1): every vendor request, whatever the vendor, runs
 *
 *   parse → open? → decode → observe | look up → facts → render → settle? → journal → metrics
 *
 * here, once. Adapters translate (decode and render are pure functions of the request and the
 * channel's state); the core orchestrates: it parses the body once (size guard in the HTTP layer,
 * depth guard here), writes through the contact engine, builds the facts for the answer within
 * the deadline, keeps what it could not use in the journal and counts everything in one place.
 * Errors stay typed (src/errors.ts) and become HTTP answers in src/http/errors.ts.
 */

export interface IntakeChannel<C = unknown> {
  config: ChannelConfig;
  runtime: ChannelRuntime<C>;
}

export interface IntakeCall<C = unknown> {
  channel: IntakeChannel<C>;
  /** Reads the body (the HTTP layer's size limit applies: 413 is counted like any refusal). */
  readBody(): Promise<Buffer>;
  contentType: string | undefined;
  /** The request's Content-Encoding: a compressed body is refused (415) and journalled as sent. */
  contentEncoding?: string | undefined;
  /** performance.now() when the request arrived (before its body was read): deadlines count from here. */
  arrivedAt: number;
  logger: Logger;
  /**
   * Whether info lines are written (log.level): the lookup's line is not built otherwise — its
   * keyed hash and the request's child logger were made for every lookup at log level warn.
   * Absent: written.
   */
  infoEnabled?: boolean;
  /**
   * Called once the request has opened (a route with `open`: it authenticated, e.g. a LiveTex
   * lookup sealed under one of the channel's keys), before anything is looked up or written.
   * Throws to refuse it (the HTTP layer's per-channel lookup budget: TooManyRequestsError), so
   * that only authenticated requests spend what a channel is allowed. May return a function that
   * gives back what it took: called when the request is then refused as a replay (its claim was
   * spent before), which is no more a lookup of the channel's than garbage is. Without it, one
   * captured token sent again for the minutes it stays valid spent the channel's budget.
   */
  admit?: (() => (() => void) | undefined) | undefined;
}

export interface IntakeReply {
  answer: Answer;
  /** The vendor's event (metrics label, logs). */
  event: string;
  outcome: string;
}

export interface IntakeDeps {
  contacts: ContactService;
  facts: FactService;
  journal: PayloadJournal;
  metrics: Metrics;
  /** `confirmWrites` (store.durability): a webhook is answered only once its writes reached the replicas. */
  store: Pick<Store, 'confirmWrites' | 'writeMark'>;
  now(): Date;
  consoleLink(contactId: string): string | undefined;
  /** With `intake.ackAfterAppend`: where observations of `ackAfterAppend` routes go instead. */
  deferred?: DeferredIntake | null;
  /** Called for every webhook answered 200 (the console's "last traffic"). */
  onAccepted?(channelId: string): void;
  /**
   * The key a lookup's subject is logged under: a keyed hash (HMAC), so a log reader cannot confirm
   * a guess at a customer id (sequential ids, e-mails) by hashing it, as an unkeyed digest allowed.
   * Default: a key of this pipeline's own (the bridge passes one derived from secrets.masterKey, so
   * every instance logs one customer alike).
   */
  logKey?: Buffer;
}

export interface IntakePipeline {
  run<C, O>(vendor: string, route: IntakeRoute<C, O>, call: IntakeCall<C>): Promise<IntakeReply>;
}

/**
 * Serialising and sending the answer takes a moment after the facts are in; this much of the
 * budget is kept for it, so that "answered within deadlineMs" holds as the vendor measures it.
 */
export function sendReserveMs(deadlineMs: number): number {
  return Math.min(100, Math.round(deadlineMs * 0.1));
}

/** Times a lookup is opened again because its claim's condition no longer held (see run). */
const MAX_RECHECKS = 3;

/** Lookup metrics: per vendor, by channel (the webhook metrics are the core's, by vendor and event). */
interface LookupMetrics {
  outcomes: Counter<'channel' | 'outcome'>;
  latency: Histogram<'channel'>;
}

/** Routes of every vendor that has them, so their metrics exist before the first request. */
export function lookupMetricsFor(
  metrics: Metrics,
  adapters: readonly AdapterDefinition[],
): Map<string, LookupMetrics> {
  const out = new Map<string, LookupMetrics>();
  for (const adapter of adapters) {
    if (!adapter.intake.some((route) => route.kind === 'lookup')) continue;
    const name = adapter.displayName;
    out.set(adapter.vendor, {
      outcomes: metrics.counter(
        `chatbridge_${adapter.vendor}_lookups_total`,
        `${name} attribute lookups, by channel and outcome (found, not_found, the refusal code, unavailable, error)`,
        ['channel', 'outcome'],
      ),
      latency: metrics.histogram(
        `chatbridge_${adapter.vendor}_lookup_seconds`,
        `Time to answer a ${name} attribute lookup, by channel`,
        ['channel'],
        [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3],
      ),
    });
  }
  return out;
}

/**
 * The parse step, pure: the body as JSON, parsed once — depth-guarded, a BOM ignored, a vendor's
 * documented quirk mended. Exported for the adapters' pure decode tests.
 */
export function parseIntakeRequest(
  route: Pick<IntakeRoute<unknown, unknown>, 'body' | 'repairJson'>,
  rawBody: Buffer,
  contentType: string | undefined,
  receivedAt: Date,
): IntakeRequest {
  const request: IntakeRequest = { body: undefined, rawBody, repaired: false, contentType, receivedAt };
  if (route.body === 'raw') return request;
  // Content types are not to be trusted (JivoChat documents none): the body is read as UTF-8 JSON.
  const text = utf8Text(rawBody).replace(/^\uFEFF/, '');
  try {
    request.body = parseJson(text);
    return request;
  } catch (error) {
    // Only a body that is not JSON is mended; one nested too deeply stays refused.
    const mended = route.repairJson && !jsonDepthExceeds(text) ? route.repairJson(text) : undefined;
    if (mended === undefined) throw explained(error, rawBody, contentType);
    try {
      request.body = parseJson(mended);
    } catch {
      throw explained(error, rawBody, contentType);
    }
    request.repaired = true;
    return request;
  }
}

/**
 * A body that is not JSON because it is not UTF-8 says so: the parser's own message ("Expected
 * property name or '}' in JSON at position 1") names no reason for a UTF-16 body or one sent in
 * a declared charset such as windows-1251. The code stays `invalid_json`.
 */
function explained(error: unknown, rawBody: Buffer, contentType: string | undefined): unknown {
  if (!(error instanceof BadRequestError) || error.code !== 'invalid_json') return error;
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1]?.toLowerCase();
  const utf16 =
    (rawBody[0] === 0xff && rawBody[1] === 0xfe) ||
    (rawBody[0] === 0xfe && rawBody[1] === 0xff) ||
    (rawBody.length >= 2 && (rawBody[0] === 0 || rawBody[1] === 0));
  const why = utf16
    ? 'it looks like UTF-16'
    : charset && !['utf-8', 'utf8', 'us-ascii', 'ascii'].includes(charset)
      ? `the request declared charset=${charset.slice(0, 40)}`
      : undefined;
  return why === undefined
    ? error
    : new BadRequestError('invalid_json', `${error.message} (the body is read as UTF-8; ${why})`);
}

/** The answer must not fail because enrichment did: the vendor still gets the contact. */
function factsFailed(call: IntakeCall<unknown>, error: unknown): null {
  call.logger.warn({ err: error }, 'facts failed; answering without them');
  return null;
}

/** Whether some observation names the contact by a verified value (anchoredBy), in a plain loop. */
function observationsAnchor(contact: Contact, observations: readonly Observation[]): boolean {
  for (const observation of observations)
    if (observation.identifiers !== undefined && anchoredBy(contact, observation.identifiers)) return true;
  return false;
}

/**
 * `extend(request, { opened })` for decode, field by field: the request is parseIntakeRequest's
 * (these five fields), and this runs for every request.
 */
function withOpened<O>(request: IntakeRequest, opened: O): IntakeRequest & { opened: O } {
  return {
    body: request.body,
    rawBody: request.rawBody,
    repaired: request.repaired,
    contentType: request.contentType,
    receivedAt: request.receivedAt,
    opened,
  };
}

export function createIntakePipeline(deps: IntakeDeps, lookups: Map<string, LookupMetrics>): IntakePipeline {
  const logKey = deps.logKey ?? randomBytes(32);
  const subjectDigest = (value: string) =>
    createHmac('sha256', logKey).update(value, 'utf8').digest('hex').slice(0, 16);

  /** Observe or look up what the request names. A payload that identifies nobody becomes `nothing`. */
  async function act(
    checked: Decoded | Deferrable,
    later?: Omit<DeferredRequest, 'event'>,
    decodeWhole?: () => Decoded,
  ): Promise<
    | { decoded: Decoded; contact: Contact | null; duplicate: boolean; repeated: boolean }
    | { recheck: { held: string | null } }
  > {
    // Checked, not decoded (route.check): appended as received, the worker decodes it. Not
    // appended (a full backlog): recorded now, as without the option, for which it is decoded.
    if (checked.kind === 'deferrable') {
      if (later && deps.deferred && (await deps.deferred.append(extend(later, { event: checked.event }))))
        return {
          decoded: { kind: 'observe', event: checked.event, observations: [] },
          contact: null,
          duplicate: false,
          repeated: false,
        };
    }
    const decoded = checked.kind === 'deferrable' ? decodeWhole!() : checked;
    if (decoded.kind === 'lookup' && decoded.options?.claim) {
      const found = await deps.contacts.claimAndFind(decoded.identifier, {
        claim: decoded.options.claim,
        ...(decoded.options.evenWork ? { evenWork: true } : {}),
      });
      if (!found.claimed) {
        // The claim's condition no longer held (the key record changed): nothing was spent.
        if (found.instead !== undefined) return { recheck: { held: found.instead } };
        throw new ReplayedTokenError();
      }
      return { decoded, contact: found.contact, duplicate: false, repeated: false };
    }
    if (decoded.kind === 'lookup') {
      const contact = await deps.contacts.findByIdentifier(
        decoded.identifier,
        decoded.options?.evenWork ? { evenWork: true } : undefined,
      );
      return { decoded, contact, duplicate: false, repeated: false };
    }
    if (decoded.kind !== 'observe') return { decoded, contact: null, duplicate: false, repeated: false };
    // Acknowledged after one durable append of the request; the worker records it, with these
    // observations when it runs in this process, else decoding it again (src/intake/deferred.ts).
    // A full backlog: recorded now, as without the option.
    if (
      later &&
      deps.deferred &&
      !decoded.facts &&
      (await deps.deferred.append(
        extend(later, { event: decoded.event, observations: decoded.observations }),
      ))
    )
      return { decoded, contact: null, duplicate: false, repeated: false };
    let contact: Contact | null = null;
    let duplicates = 0;
    const pending = decoded.observations;
    try {
      for (const observation of pending) {
        const result = await deps.contacts.observe(observation);
        contact = result.contact;
        if (result.duplicate) duplicates++;
      }
    } catch (error) {
      // Every identifier was junk (blocklisted, an unparseable phone): accepted, kept, not attached.
      if (!(error instanceof NoIdentifierError)) throw error;
      return {
        decoded: { kind: 'nothing', event: decoded.event, reason: error.message },
        contact: null,
        duplicate: false,
        repeated: duplicates > 0,
      };
    }
    const count = pending.length;
    // `repeated`: some observation found its idempotency key, so the answer rests on state this
    // request read and did not write (store.durability, below).
    return { decoded, contact, duplicate: count > 0 && duplicates === count, repeated: duplicates > 0 };
  }

  /**
   * Facts for the answer, within what is left of the deadline; never fails the answer. At once
   * when there is nothing to wait for (no attribute source: forContactNow), a promise otherwise —
   * an async step per webhook for an answer that was ready cost microtask jobs and allocations
   * (bench/HISTORY.md, twenty-fifth round).
   */
  function factsFor(
    decoded: Decoded,
    contact: Contact | null,
    call: IntakeCall<unknown>,
  ): FactAnswer | null | Promise<FactAnswer | null> {
    if (decoded.kind === 'nothing' || !decoded.facts || !contact) return null;
    const wanted = decoded.facts;
    const reserve = wanted.reserve ? sendReserveMs(wanted.deadlineMs) : 0;
    const remaining = wanted.deadlineMs - reserve - (performance.now() - call.arrivedAt);
    try {
      const request: FactRequest = {
        channelId: call.channel.config.id,
        deadlineMs: Math.max(0, Math.floor(remaining)),
        max: wanted.max,
        // Facts are proven only when the request names the contact by a verified value (issue 10
        // item 5): a person id the company's site or app set, not an e-mail the visitor typed.
        anchored:
          decoded.kind === 'lookup'
            ? isVerifiedIdentifier(decoded.identifier)
            : observationsAnchor(contact, decoded.observations),
      };
      const now = deps.facts.forContactNow(contact, request);
      if (now !== undefined) return now;
      return deps.facts.forContact(contact, request).then(
        (answer) => {
          if (answer.missing.length > 0) {
            call.logger.info(
              { missing: answer.missing },
              'attribute sources left out of the answer (late or failed)',
            );
          }
          return answer;
        },
        (error: unknown) => factsFailed(call, error),
      );
    } catch (error) {
      return factsFailed(call, error);
    }
  }

  function outcomeOf(decoded: Decoded, contact: Contact | null, duplicate: boolean): string {
    if (decoded.kind === 'lookup') return contact ? 'found' : 'not_found';
    if (decoded.kind === 'nothing')
      return decoded.reason !== undefined ? 'unhandled' : (decoded.outcome ?? 'ok');
    return duplicate ? 'duplicate' : 'ok';
  }

  return {
    async run<C, O>(vendor: string, route: IntakeRoute<C, O>, call: IntakeCall<C>): Promise<IntakeReply> {
      const started = performance.now();
      const channel = call.channel.config;
      const state = call.channel.runtime.state;
      let event = 'unknown';
      let outcome = 'error';
      let rawBody: Buffer | undefined;
      /** What admit took, to give back if the request turns out to be a replay. */
      let giveBack: (() => void) | undefined;
      try {
        rawBody = await call.readBody();
        refuseEncodedBody(call.contentEncoding);
        const writeMark = deps.store.writeMark?.();
        const request = parseIntakeRequest(route, rawBody, call.contentType, deps.now());
        // A route without `open` reads nothing before decode: its `opened` is undefined.
        let opened = (route.open ? await route.open(request, state) : undefined) as O;
        if (route.open) giveBack = call.admit?.();
        // Only a route that reads nothing before decode can be decoded again by the worker; the
        // worker's request is built only when there is one (intake.ackAfterAppend).
        const later =
          route.ackAfterAppend && !route.open && deps.deferred
            ? {
                channelId: channel.id,
                vendor,
                ...(route.path === undefined ? {} : { path: route.path }),
                rawBody,
                contentType: call.contentType,
                receivedAt: request.receivedAt,
              }
            : undefined;
        const decodeWhole = () => route.decode(withOpened(request, opened), state);
        // The observations are built only when this process's worker takes them (the hand-off):
        // otherwise the route's check validates the request, and the worker decodes the stored
        // body (a `web` instance; a hand-off that is full under a burst).
        let first: Decoded | Deferrable =
          later && route.check && !deps.deferred!.takesObservations(rawBody.length)
            ? route.check(request, state)
            : decodeWhole();
        event = first.event;
        const holdUntil =
          first.kind === 'lookup' && first.options?.holdToDeadline && deps.facts.sourceCount() > 0
            ? call.arrivedAt + first.facts.deadlineMs
            : null;
        let acted = await act(first, later, decodeWhole);
        // A lookup opened on what `open` held in memory whose claim found the stored record
        // changed (LiveTex: a key revoked since): opened again from what the store held, then
        // claimed again. A record changes at most a couple of times in its life (made, revoked);
        // one that keeps changing under every try is "not now".
        for (let rechecks = 0; 'recheck' in acted; rechecks++) {
          if (!route.open || rechecks === MAX_RECHECKS)
            throw new StoreBusyError(
              'a lookup',
              'what the lookup was opened with kept changing in the store; retry later',
            );
          opened = (await route.open(request, state, acted.recheck)) as O;
          first = decodeWhole();
          acted = await act(first, later);
        }
        const { decoded, contact, duplicate, repeated } = acted;
        const factsOrWait = factsFor(decoded, contact, call as IntakeCall<unknown>);
        const facts = factsOrWait instanceof Promise ? await factsOrWait : factsOrWait;
        if (decoded.kind === 'nothing' && decoded.reason !== undefined) {
          // Accepted, but nothing a vendor sent is lost: an operator can read it back and replay it.
          await deps.journal.record({
            channelId: channel.id,
            vendor,
            kind: 'unhandled',
            reason: decoded.reason,
            rawBody,
            contentType: call.contentType,
          });
          call.logger.info({ vendor, event, reason: decoded.reason }, 'payload journalled as unhandled');
        }
        if (decoded.kind === 'lookup' && call.infoEnabled !== false) {
          // The subject is the company's customer id: log a hash, never the value. The vendor's
          // request id has a name of its own: `requestId` is already the HTTP request's (the
          // logger's child binding), and a second one in the line hid it from JSON readers.
          call.logger.info(
            {
              vendorRequestId: decoded.options?.requestId,
              subject: subjectDigest(decoded.identifier.value),
              found: contact !== null,
              held: holdUntil !== null,
            },
            `${vendor} attribute lookup`,
          );
        }

        const result: IntakeResult<O> = {
          decoded,
          opened,
          contact,
          duplicate,
          facts,
          consoleLink: deps.consoleLink,
        };
        let answer = route.render(result, state);
        if (route.settle) answer = await route.settle(answer, result, state);
        // store.durability: answer only once the writes reached the replicas (else 503, the
        // vendor retries and intake dedupes), so a failover cannot lose an acknowledged webhook.
        // A retry that found its idempotency key wrote nothing (or not all it answers for): the
        // first attempt's writes may never have reached a replica (it was answered 503), and
        // WAIT vouches only for what this connection wrote since. So it has the store vouch for
        // what it read as well (coverReads: one write more, before the WAIT, for retries only;
        // a first delivery pays nothing more than before).
        // Awaited only when there is something to wait for (a replica to confirm): an await of
        // nothing costs the webhook microtask jobs all the same (bench/HISTORY.md, twenty-fifth round).
        if (route.kind === 'webhook') {
          const confirming = deps.store.confirmWrites?.(
            writeMark,
            repeated ? { coverReads: true } : undefined,
          );
          if (confirming !== undefined) await confirming;
        }
        if (holdUntil !== null) {
          const wait = holdUntil - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        }
        outcome = outcomeOf(decoded, contact, duplicate);
        if (route.kind === 'webhook') deps.onAccepted?.(channel.id);
        return { answer, event, outcome };
      } catch (error) {
        const status = error instanceof AppError ? error.status : 500;
        if (giveBack !== undefined && error instanceof ReplayedTokenError) giveBack();
        if (route.kind === 'lookup') {
          // A store outage is `unavailable`, as for webhooks: `error` is left for defects.
          outcome =
            error instanceof AppError && status < 500 ? error.code : status === 503 ? 'unavailable' : 'error';
        } else {
          // A client that went away is no refusal of a payload: nothing was received to refuse.
          outcome =
            error instanceof RequestClosedError
              ? error.code
              : status === 503
                ? 'unavailable'
                : status < 500
                  ? 'rejected'
                  : 'error';
          // A body over the size limit was never read whole: its first bytes are kept, marked cut.
          const tooLarge = error instanceof PayloadTooLargeError && !rawBody ? error.partial : undefined;
          const kept = rawBody ?? tooLarge;
          if (status < 500 && kept) {
            // Nothing is lost: a payload we refuse is kept for an operator to read back.
            await deps.journal
              .record({
                channelId: channel.id,
                vendor,
                kind: 'rejected',
                reason: (error as Error).message,
                rawBody: kept,
                contentType: call.contentType,
                ...(tooLarge ? { truncated: true } : {}),
              })
              .catch((journalError: unknown) =>
                call.logger.warn({ err: journalError }, 'could not journal a rejected payload'),
              );
          }
        }
        throw error;
      } finally {
        const seconds = (performance.now() - started) / 1000;
        const lookup = route.kind === 'lookup' ? lookups.get(vendor) : undefined;
        if (lookup) {
          lookup.outcomes.inc({ channel: channel.id, outcome });
          lookup.latency.observe({ channel: channel.id }, seconds);
        } else {
          deps.metrics.intake.inc({ vendor, event, outcome });
          deps.metrics.replyLatency.observe({ vendor, event }, seconds);
        }
      }
    },
  };
}
