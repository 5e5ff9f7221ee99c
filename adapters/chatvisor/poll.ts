import type { Logger } from 'pino';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type { Contact } from '../../src/contacts/types.js';
import type { AdapterContext } from '../../src/contracts/adapter.js';
import { digest } from '../../src/digest.js';
import type { Store } from '../../src/store/types.js';
import type { ChatvisorClient, ParsedPage } from './client.js';
import type { ConversationTracker } from './conversations.js';
import { ChatvisorAuthError, ChatvisorNotFoundError } from './errors.js';
import { CUSTOMER_KIND, isCustomerMessage, messageIdentity, toTranscript } from './mapper.js';
import { CONVERSATION_STATUS } from './operations.js';
import type { CachedProfile, CustomerProfiles } from './profiles.js';
import type { ChatvisorSettings, Conversation, Customer, CustomerIdentity, Message } from './schemas.js';
import {
  type ConversationState,
  customerHashes,
  keepReport,
  type MessageCursor,
  readConversationState,
  readEnded,
  readFirstRunLeft,
  readStatus,
  storeKeys,
  writeCursor,
  writeEnded,
  writeStatus,
} from './state.js';

/**
 * Conversation polling (vendors/chatvisor.md §9.2 "Polling rules"): Chatvisor documents no
 * `since` filter, so each run pages through every conversation and diffs it against the stored
 * per-customer state (status, message cursor):
 * - a new status -> a conversation event (started / finished / updated), keyed like the webhook's;
 * - a new last message -> the customer's messages are fetched and each new one observed, keyed
 *   by message id like the Message webhook's.
 * Whatever the webhook already delivered comes back from the contact model as a duplicate and is
 * written once; what only the poller found is counted as a backfill.
 *
 * The first run does not silently drop what exists when polling starts: conversations that
 * changed within the channel's `backfillWindow` (default 24 h) are replayed — the conversation
 * event, with its transcript when it is finished, and the customer's messages from within the
 * window — and the rest are recorded as they stand. The run's report (`backfill`) and
 * `chatbridge_chatvisor_first_poll_total{channel,kind}` say what was replayed and what was
 * left out. Later runs are incremental.
 *
 * Every customer with a change is identified (profiles.ts) so its events land on the person's
 * contact; customers whose profile could not be read before are tried again, and identified
 * customers' labels are re-checked each run (a store read; a vendor call only when they changed,
 * e.g. after another channel updated the contact).
 */
const MAX_PAGES = 10_000;
/**
 * A safety bound on one customer's message pages (messages are listed oldest first, so the new
 * ones are on the last pages). A read that reaches it fails that customer, reported, and its
 * cursor stays where it was.
 */
const MAX_MESSAGE_PAGES = 10_000;
/**
 * A customer the store holds state for (status, cursor, labels, profile, pending read, first-run
 * leftover) that complete listings have not listed for this long is asked for once more
 * (getCustomer); when Chatvisor does not know it (404) — a customer deleted there, or an id a
 * webhook made up —, its state is forgotten. Well inside the contact model's dedupe time (7 days
 * by default), so a customer a listing missed by chance and that comes back is still written once.
 */
export const FORGET_UNLISTED_AFTER_MS = 24 * 3_600_000;
/** At most this many such customers are asked for per run (each is a vendor call); the rest wait. */
export const FORGET_CHECKS_PER_RUN = 200;

/** Fields per HSCAN step or HMGET when forgetUnlisted walks the per-customer hashes. */
const FIELDS_PAGE = 500;

/**
 * The fields of the hash at `key`, handed to `each` a page at a time (Store.hscanFields, values
 * dropped), so a pass holds one page of ids, not the hash's every field. As HSCAN, a field may come
 * up twice, and one removed meanwhile may or may not.
 */
async function eachFieldsPage(
  store: Store,
  key: string,
  each: (fields: string[]) => Promise<void>,
): Promise<void> {
  let cursor = '0';
  do {
    const page = await store.hscanFields(key, cursor, FIELDS_PAGE);
    cursor = page.cursor;
    if (page.fields.length > 0) await each([...new Set(page.fields)]);
  } while (cursor !== '0');
}

/**
 * Which of `ids` some of `hashes` holds a field for (HMGET, a hash at a time, each asked only for
 * the ids not found yet). Its values are read too (Redis has no multi-HEXISTS): the cached profiles,
 * the largest, are asked last.
 */
async function heldInAny(
  store: Store,
  hashes: readonly string[],
  profiles: string,
  ids: string[],
): Promise<Set<string>> {
  const held = new Set<string>();
  let left = ids;
  for (const key of [...hashes.filter((hash) => hash !== profiles), profiles]) {
    if (left.length === 0) break;
    const values = await store.hmget(key, left);
    left = left.filter((id, index) => {
      if (values[index] == null) return true;
      held.add(id);
      return false;
    });
  }
  return held;
}
/**
 * Unreadable items (counted in `unreadable`) kept in the payload journal per run, so a listing
 * whose every item changed shape does not write thousands of entries each run: the first ones
 * show what changed, and the count says how many there were.
 */
export const UNREADABLE_JOURNALLED_PER_RUN = 20;

export interface BackfillReport {
  /** The window (ms) and its start: conversations changed since then were replayed. */
  windowMs: number;
  since: string;
  conversations: number;
  messages: number;
  /** Recorded as they stand, without events: last changed before the window. */
  olderThanWindow: number;
  /** Recorded as they stand: neither an updatedAt nor a dated message says when they changed. */
  unknownAge: number;
}

export interface PollReport {
  channelId: string;
  baseline: boolean;
  source: 'conversation' | 'customer';
  startedAt: string;
  finishedAt: string;
  pages: number;
  conversationsSeen: number;
  /**
   * Customers recorded without events by the first run (outside the backfill window), or by a
   * later one for a customer the first run failed on.
   */
  seeded: number;
  conversationEvents: number;
  messageEvents: number;
  /** Events found only by polling (the webhook had not delivered them). */
  backfills: number;
  /** What the first run replayed from the backfill window; null on later runs. */
  backfill: BackfillReport | null;
  /** Customers identified (profile read and linked) in this run. */
  identified: number;
  failed: { customerId: string; reason: string }[];
  /**
   * Customers whose stored state was forgotten: not listed by complete listings for
   * FORGET_UNLISTED_AFTER_MS and unknown to Chatvisor. Null when this run's listing was not
   * complete (cut off, or with items it could not read), so nothing was forgotten.
   */
  forgotten: number | null;
  /**
   * Items Chatvisor listed that could not be read (conversations or customers in the listing, and
   * messages of the customers read): dropped, so counted here rather than lost without a word.
   */
  unreadable: number;
  /** Listed again later in the same listing (a page shifted under us): handled once, not twice. */
  repeated: number;
  /**
   * Why the listing was not read to its end, or null when it was: the vendor handed back a page
   * already read (it ignores pageNumber, or wraps around to the first page) or MAX_PAGES was
   * reached. The conversations after the cut were not looked at in this run.
   */
  cutOff: { reason: 'page_repeated' | 'listing_wrapped' | 'page_bound'; afterPages: number } | null;
  /** Why the run failed (it stopped there); absent on a run that finished. */
  error?: string;
}

interface PolledItem {
  conversation: Conversation;
  profile: Customer | null;
}

type BackfillDecision =
  | { replay: true; updatedAt: string; messages?: Message[] | undefined }
  | { replay: false; updatedAt: string | null; messages?: Message[] | undefined };

/** What one run reads once and shares between customers. */
interface RunState {
  baseline: boolean;
  state: ConversationState;
  profiles: Map<string, CachedProfile>;
  pending: Set<string>;
  /** Start of the backfill window (ISO), first run only. */
  since: string | null;
  /**
   * Customers the first run failed on, with that run's window: a later run records (or replays)
   * them as the first run would have, instead of taking their history for new events.
   */
  firstRunLeft: Map<string, FirstRunWindow>;
  /**
   * Customers whose stored state (the four above) has been read: each page's, when the run comes
   * to it (loadCustomers), not every customer's at the start.
   */
  loaded: Set<string>;
}

/** Unreadable items journalled by the run a report belongs to (UNREADABLE_JOURNALLED_PER_RUN). */
const journalledByRun = new WeakMap<PollReport, number>();

/**
 * The unreadable items (their digests) the run a report belongs to has seen, and those the
 * previous run saw (read once, when the run meets its first one): see journalUnreadable.
 */
const unreadableByRun = new WeakMap<
  PollReport,
  { before: Promise<Set<string>> | undefined; seen: Set<string> }
>();

/** The first run's backfill window, kept for the customers it failed on (state.ts). */
interface FirstRunWindow {
  windowMs: number;
  since: string;
}

export interface PollerOptions {
  channelId: string;
  context: AdapterContext;
  client: ChatvisorClient;
  tracker: ConversationTracker;
  profiles: CustomerProfiles;
  settings: ChatvisorSettings;
  logger: Logger;
}

export class ConversationPoller {
  /** listConversations is an assumed path; without it, customers (which carry a status) stand in. */
  private source: 'conversation' | 'customer' = 'conversation';
  private readonly backfills;
  private readonly firstPoll;
  private readonly runs;

  constructor(private readonly options: PollerOptions) {
    const { metrics } = options.context;
    this.backfills = metrics.counter(
      'chatbridge_chatvisor_backfills_total',
      'Chatvisor events found only by conversation polling (their webhook never came), by channel and kind',
      ['channel', 'kind'] as const,
    );
    this.firstPoll = metrics.counter(
      'chatbridge_chatvisor_first_poll_total',
      'What the first Chatvisor conversation poll did with existing conversations, by channel and kind ' +
        '(conversation and message: replayed from the backfill window; older and unknown_age: recorded without events)',
      ['channel', 'kind'] as const,
    );
    this.runs = metrics.counter(
      'chatbridge_chatvisor_polls_total',
      'Chatvisor conversation poll runs, by channel and outcome (ok, partial, failed)',
      ['channel', 'outcome'] as const,
    );
  }

  async run(signal?: AbortSignal): Promise<PollReport> {
    const { context, channelId, settings, logger } = this.options;
    const keys = storeKeys(channelId);
    const baseline = (await context.store.get(keys.pollBaseline)) === null;
    const startedAt = context.now();
    const since = baseline ? new Date(startedAt.getTime() - settings.backfillWindow).toISOString() : null;
    const run: RunState = {
      baseline,
      state: { status: new Map(), cursor: new Map() },
      profiles: new Map(),
      pending: new Set(),
      since,
      firstRunLeft: new Map(),
      loaded: new Set(),
    };
    const report: PollReport = {
      channelId,
      baseline,
      source: this.source,
      startedAt: startedAt.toISOString(),
      finishedAt: '',
      pages: 0,
      conversationsSeen: 0,
      seeded: 0,
      conversationEvents: 0,
      messageEvents: 0,
      backfills: 0,
      backfill:
        since === null
          ? null
          : {
              windowMs: settings.backfillWindow,
              since,
              conversations: 0,
              messages: 0,
              olderThanWindow: 0,
              unknownAge: 0,
            },
      identified: 0,
      failed: [],
      forgotten: null,
      unreadable: 0,
      repeated: 0,
      cutOff: null,
    };
    try {
      let previous: string | undefined;
      /** The customers of page 0 in order: a later page listing the same is the listing wrapping. */
      let firstListed: string | undefined;
      // Whether the listing was read to its end with every item readable: only then does "not
      // listed" say anything about a customer (forgetUnlisted).
      let complete = false;
      let skipped = 0;
      const listed = new Set<string>();
      // Customers handled in this run: one listed twice (a page shifted while we paged) is handled
      // once. Its stored state was read once, on the page that first listed it (loadCustomers), so
      // a second pass would take the change the first pass recorded for new again.
      const handled = new Set<string>();
      for (let pageNumber = 0; ; pageNumber++) {
        if (pageNumber >= MAX_PAGES) {
          report.cutOff = { reason: 'page_bound', afterPages: report.pages };
          break;
        }
        signal?.throwIfAborted();
        const page = await this.fetchPage({ pageNumber, pageSize: settings.pageSize }, signal);
        report.pages++;
        report.source = this.source;
        // A vendor that ignores pageNumber would hand us page 0 forever. The page as listed, not
        // what is left of it: two pages of customers without a conversation both leave nothing.
        if (page.rawCount > 0 && page.fingerprint === previous) {
          report.cutOff = { reason: 'page_repeated', afterPages: report.pages - 1 };
          break;
        }
        // One that wraps around (page 0 again after the last one) lists only customers already
        // listed: reading on would go round the listing again until MAX_PAGES. A short page ends
        // the listing anyway (its repeats are skipped below).
        if (
          page.rawCount >= settings.pageSize &&
          page.listed.length > 0 &&
          page.listed.every((customerId) => listed.has(customerId))
        ) {
          // The first page again, as it was (its customers, in its order), after full pages
          // only: the vendor went round to the start, so every page was read, and the listing
          // is as complete as one ending on a short page. Without this, a wrapping vendor whose
          // customers fill whole pages never had a complete listing, and forgetUnlisted never
          // ran. Anything else (a later page that shifted onto customers read already) may have
          // more after it: cut off. (Page 1 equal to page 0 is page_repeated above: a vendor
          // that ignores pageNumber looks the same, so it is not taken as complete.)
          if (pageNumber >= 2 && page.listed.join('\n') === firstListed) {
            complete = true;
            break;
          }
          report.cutOff = { reason: 'listing_wrapped', afterPages: report.pages - 1 };
          break;
        }
        if (pageNumber === 0) firstListed = page.listed.join('\n');
        previous = page.fingerprint;
        skipped += page.skipped;
        report.unreadable += page.skipped;
        await this.journalUnreadable(
          page.unreadable,
          `${this.source === 'conversation' ? 'GET /conversation' : 'GET /customer'} page ${pageNumber}`,
          report,
        );
        for (const customerId of page.listed) listed.add(customerId);
        await this.loadCustomers(
          run,
          page.items.map((item) => item.conversation.customerId),
        );
        for (const item of page.items) {
          report.conversationsSeen++;
          const customerId = item.conversation.customerId;
          if (handled.has(customerId)) {
            report.repeated++;
            continue;
          }
          handled.add(customerId);
          const window = this.firstRunWindow(customerId, run, report);
          try {
            await this.handle(item, run, report, signal);
            if (run.firstRunLeft.delete(customerId)) {
              await context.store.hdel(keys.pollFirstRunLeft, customerId);
            }
          } catch (error) {
            // A revoked token or shutdown fails the whole run; anything else is this customer's
            // problem and the next run tries it again (its state was not advanced).
            if (error instanceof ChatvisorAuthError || signal?.aborted) throw error;
            if ((error as { code?: string }).code === 'store_unavailable') throw error;
            // Failed before the first run recorded it: the next run must still treat it as the
            // first run would (record or replay), not as a customer that is new since.
            if (window && !run.firstRunLeft.has(customerId)) {
              run.firstRunLeft.set(customerId, window);
              await context.store.hset(keys.pollFirstRunLeft, customerId, JSON.stringify(window));
            }
            report.failed.push({ customerId, reason: reasonOf(error) });
            logger.warn(
              { customerId: item.conversation.customerId, err: error },
              'chatvisor poll: customer failed',
            );
          }
        }
        if (page.rawCount < settings.pageSize) {
          complete = true;
          break;
        }
      }
      if (report.cutOff) {
        logger.warn(
          { cutOff: report.cutOff },
          'chatvisor poll: listing cut off; the rest waits for the next run',
        );
      }
      if (complete && skipped === 0) report.forgotten = await this.forgetUnlisted(listed, signal);
      report.finishedAt = context.now().toISOString();
      await this.rememberUnreadable(report, complete);
      if (baseline) {
        await context.store.set(keys.pollFirstReport, JSON.stringify(report));
        await context.store.set(keys.pollBaseline, report.startedAt);
      }
      await this.keep(report);
      this.runs.inc({ channel: channelId, outcome: report.failed.length > 0 ? 'partial' : 'ok' });
      logger.info(
        {
          baseline,
          seen: report.conversationsSeen,
          conversations: report.conversationEvents,
          messages: report.messageEvents,
          backfills: report.backfills,
          ...(report.backfill ? { firstPollBackfill: report.backfill } : {}),
          identified: report.identified,
          failed: report.failed.length,
          unreadable: report.unreadable,
          repeated: report.repeated,
        },
        'chatvisor conversations polled',
      );
      return report;
    } catch (error) {
      this.runs.inc({ channel: channelId, outcome: 'failed' });
      // Kept as well: an operator reading the reports sees the runs that failed and why, not
      // only the ones that finished. What it did before it stopped is recorded already.
      report.finishedAt = context.now().toISOString();
      report.error = cleanDisplayText(errorText(error)) ?? 'unknown error';
      await this.rememberUnreadable(report, false);
      await this.keep(report);
      throw error;
    }
  }

  /**
   * Keep items Chatvisor listed that could not be read in the payload journal (rejected, under
   * this channel), up to UNREADABLE_JOURNALLED_PER_RUN per run. A journal that cannot be written
   * does not fail the run: the items are counted in the report either way.
   *
   * Each run lists the whole listing again, so an item that stays unreadable would be journalled
   * by every run (every 30 s in the README's example) and soon fill the channel's ring, pushing
   * out the webhooks it rejected. An item the previous run saw is not journalled again: the runs
   * remember the digests of the unreadable items they saw (rememberUnreadable).
   */
  private async journalUnreadable(
    unreadable: readonly { item: unknown; problem: string }[],
    where: string,
    report: PollReport,
  ): Promise<void> {
    const { context, logger, channelId } = this.options;
    if (unreadable.length === 0) return;
    let known = unreadableByRun.get(report);
    if (!known) {
      known = { before: undefined, seen: new Set() };
      unreadableByRun.set(report, known);
    }
    // Unknown (the store did not answer): journalled as if none was seen before.
    known.before ??= context.store.smembers(storeKeys(channelId).pollUnreadable).then(
      (members) => new Set(members),
      () => new Set<string>(),
    );
    const before = await known.before;
    for (const { item, problem } of unreadable) {
      const rawBody = JSON.stringify(item) ?? String(item);
      const seen = digest('sha256', rawBody, 'base64url');
      known.seen.add(seen);
      if (before.has(seen)) continue;
      const journalled = journalledByRun.get(report) ?? 0;
      if (journalled >= UNREADABLE_JOURNALLED_PER_RUN) continue;
      journalledByRun.set(report, journalled + 1);
      try {
        await context.journal.reject({
          // The customer id in `where` is the vendor's: shown in the console, so cleaned as any.
          reason:
            cleanDisplayText(
              `chatvisor poll: an item of ${where} could not be read (${problem}); it was skipped`,
            ) ?? 'chatvisor poll: an item could not be read',
          rawBody,
          contentType: 'application/json',
        });
      } catch (error) {
        logger.warn({ err: error, where }, 'chatvisor poll: could not journal an unreadable item');
      }
    }
  }

  /**
   * Keep the digests of the unreadable items this run saw for the next run (journalUnreadable).
   * A run that read the whole listing replaces what was kept (items no longer listed are let go);
   * one that stopped early adds to it (the items after where it stopped were not seen). Nothing is
   * written by a run that saw no unreadable item. Failing here does not fail the run.
   */
  private async rememberUnreadable(report: PollReport, whole: boolean): Promise<void> {
    const known = unreadableByRun.get(report);
    if (!known || known.seen.size === 0) return;
    const key = storeKeys(this.options.channelId).pollUnreadable;
    try {
      const batch = this.options.context.store.batch();
      if (whole) batch.del(key);
      await batch.sadd(key, ...known.seen).exec();
    } catch (error) {
      this.options.logger.warn({ err: error }, 'chatvisor poll: could not keep the unreadable items seen');
    }
  }

  /**
   * Read the stored state of a page's customers not read yet in this run (RunState.loaded): their
   * fields of the per-customer hashes (HMGET), never the hashes whole. Those hold one field per
   * customer the channel ever had (cached profiles included), so a run that read them whole read
   * more with every customer, however few the listing held.
   */
  private async loadCustomers(run: RunState, customerIds: readonly string[]): Promise<void> {
    const { context, channelId, profiles } = this.options;
    const fresh = [...new Set(customerIds)].filter((customerId) => !run.loaded.has(customerId));
    if (fresh.length === 0) return;
    await Promise.all([
      readConversationState(context.store, channelId, fresh, run.state),
      profiles.readSome(fresh, run.profiles, run.pending),
      readFirstRunLeft(context.store, channelId, fresh, run.firstRunLeft),
    ]);
    for (const customerId of fresh) run.loaded.add(customerId);
  }

  /** The first run's report (what it backfilled) and the last runs' reports, newest first. */
  async reports(limit: number): Promise<{ first: PollReport | null; recent: PollReport[] }> {
    const { store } = this.options.context;
    const keys = storeKeys(this.options.channelId);
    const [first, recent] = await Promise.all([
      store.get(keys.pollFirstReport),
      store.lrange(keys.pollReports, -limit, -1),
    ]);
    return {
      first: first === null ? null : (JSON.parse(first) as PollReport),
      recent: recent.map((entry) => JSON.parse(entry) as PollReport).reverse(),
    };
  }

  private async keep(report: PollReport): Promise<void> {
    const { context, channelId, settings, logger } = this.options;
    await keepReport(context.store, storeKeys(channelId).pollReports, settings.keepReports, report, (error) =>
      logger.warn({ err: error }, 'could not keep the conversation poll report'),
    );
  }

  /**
   * Forget the state of customers Chatvisor no longer knows (FORGET_UNLISTED_AFTER_MS): without
   * this, every customer id ever seen — deleted customers, ids a webhook made up, customers the
   * first run failed on and never listed again — would stay in the per-customer hashes for good,
   * each read by every run. Called after a complete listing; `listed` is every customer in it.
   * Returns how many customers were forgotten.
   */
  private async forgetUnlisted(
    listed: ReadonlySet<string>,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const { context, channelId, logger } = this.options;
    const { store } = context;
    const hashes = customerHashes(channelId);
    const keys = storeKeys(channelId);
    const unlistedKey = keys.pollUnlisted;
    // A page of customer ids at a time (HSCAN, values dropped), never every id at once: these
    // hashes hold one field per customer the channel ever had.
    // Listed again, or nothing left to forget: no longer counted as missing.
    await eachFieldsPage(store, unlistedKey, async (ids) => {
      const unlisted = ids.filter((customerId) => !listed.has(customerId));
      const held = await heldInAny(store, hashes, keys.profiles, unlisted);
      for (const customerId of ids) {
        if (!held.has(customerId)) await store.hdel(unlistedKey, customerId);
      }
    });
    // Each customer the listing left out, hash by hash: since when it has been missing (its
    // field of the unlisted hash). One in several hashes comes up in each: the second time it
    // has its time already, or has been forgotten (from every hash, before their walk), and one
    // asked for is not asked again (`asked`, at most FORGET_CHECKS_PER_RUN ids).
    const now = context.now();
    const asked = new Set<string>();
    let forgotten = 0;
    for (const key of hashes) {
      await eachFieldsPage(store, key, async (fields) => {
        const missing = fields.filter((customerId) => !listed.has(customerId) && !asked.has(customerId));
        if (missing.length === 0) return;
        const unlisted = await store.hmget(unlistedKey, missing);
        for (const [index, customerId] of missing.entries()) {
          const since = Date.parse(unlisted[index] ?? '');
          if (Number.isNaN(since)) {
            await store.hset(unlistedKey, customerId, now.toISOString());
            continue;
          }
          if (now.getTime() - since < FORGET_UNLISTED_AFTER_MS || asked.size >= FORGET_CHECKS_PER_RUN)
            continue;
          asked.add(customerId);
          if (await this.forgetIfUnknown(customerId, [...hashes, unlistedKey], now, signal)) forgotten++;
        }
      });
    }
    if (forgotten > 0) {
      logger.info({ forgotten }, 'chatvisor poll: forgot customers Chatvisor no longer knows');
    }
    return forgotten;
  }

  /**
   * Ask Chatvisor for a customer the listings have left out for FORGET_UNLISTED_AFTER_MS: forget
   * its state (`keys`, each its field) when Chatvisor does not know it. True when forgotten.
   */
  private async forgetIfUnknown(
    customerId: string,
    keys: readonly string[],
    now: Date,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const { context, client, logger } = this.options;
    signal?.throwIfAborted();
    try {
      await client.getCustomer(customerId, { signal });
      // Chatvisor knows it, the listing just does not show it: kept, asked again a period later.
      await context.store.hset(storeKeys(this.options.channelId).pollUnlisted, customerId, now.toISOString());
      return false;
    } catch (error) {
      if (error instanceof ChatvisorAuthError || signal?.aborted) throw error;
      // A 404, or an id no Chatvisor path can name (buildPath refuses it): nothing to keep.
      const code = (error as { code?: string }).code;
      if (!(error instanceof ChatvisorNotFoundError) && code !== 'invalid_path_parameter') {
        logger.warn({ customerId, err: error }, 'chatvisor poll: could not check an unlisted customer');
        return false;
      }
    }
    const batch = context.store.batch();
    for (const key of keys) batch.hdel(key, customerId);
    await batch.exec();
    return true;
  }

  private async fetchPage(
    page: { pageNumber: number; pageSize: number },
    signal?: AbortSignal,
  ): Promise<ParsedPage<PolledItem> & { fingerprint: string; listed: string[] }> {
    const { client, logger } = this.options;
    if (this.source === 'conversation') {
      try {
        const result = await client.listConversations(page, { signal });
        return {
          ...result,
          items: result.items.map((conversation) => ({ conversation, profile: null })),
          fingerprint: JSON.stringify(result.items),
          listed: result.items.map((conversation) => conversation.customerId),
        };
      } catch (error) {
        if (!(error instanceof ChatvisorNotFoundError) || page.pageNumber !== 0) throw error;
        logger.warn(
          'chatvisor: GET /conversation is not served; polling customers instead (see operations.ts)',
        );
        this.source = 'customer';
      }
    }
    const result = await client.listCustomers(page, { signal });
    const items: PolledItem[] = [];
    for (const customer of result.items) {
      // A customer without a status has no conversation to report.
      if (!customer.status) continue;
      items.push({
        conversation: {
          customerId: customer.customerId,
          status: customer.status,
          lastMessageText: customer.lastMessageText,
          url: null,
          updatedAt: customer.updatedAt,
        },
        profile: customer,
      });
    }
    // Every listed customer counts as known to Chatvisor, with a conversation or not.
    return {
      ...result,
      items,
      fingerprint: JSON.stringify(result.items),
      listed: result.items.map((customer) => customer.customerId),
    };
  }

  private async handle(
    item: PolledItem,
    run: RunState,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { context, channelId, tracker, profiles } = this.options;
    const { conversation } = item;
    const customerId = conversation.customerId;
    const previousStatus = run.state.status.get(customerId) ?? null;
    const cursor = run.state.cursor.get(customerId);
    const lastText = conversation.lastMessageText ?? null;
    // Not recorded yet by the first run (this one, or one that failed on the customer).
    const firstRun = cursor === undefined ? this.firstRunScope(customerId, run, report) : null;
    let cached = run.profiles.get(customerId) ?? null;
    // A profile that came with the listing (polling by customers) is cached without a call.
    let offeredChange = false;
    if (item.profile) {
      const offered = await profiles.offer(item.profile, cached);
      if (offered.source === 'offered') {
        offeredChange = offered.changed;
        // A new assignee is said now, and cached once saved (observeProfile): read the cache
        // after it, so the identification below takes it as known and does not say it again.
        if (offered.assigned && offered.identity)
          await tracker.observeProfile(offered.identity, offered.assigned);
        cached = (await profiles.cached(customerId)) ?? cached;
      }
    }

    if (firstRun) {
      // Also when a webhook recorded the status before this first run: its messages are as old
      // as the conversation says, whoever saw the status first.
      const decision = await this.backfillDecision(item, firstRun, report, signal);
      if (decision.replay) {
        await this.replay(item, decision, firstRun, previousStatus, cached, run, report, signal);
        return;
      }
      // Messages up to when the conversation last changed exist already: a later message
      // makes the next run fetch the messages, and only the newer ones are new.
      await writeCursor(
        context.store,
        channelId,
        customerId,
        await this.seedCursor(item, decision, report, signal),
      );
      if (previousStatus === null) {
        await writeStatus(context.store, channelId, customerId, conversation.status);
        report.seeded++;
        return;
      }
      // A status the webhook recorded: a change since is recorded below, as in any run.
    }

    const statusChanged = previousStatus !== conversation.status;
    const messageChanged = firstRun === null && lastText !== (cursor?.text ?? null);
    if (!statusChanged && !messageChanged) {
      await this.maintain(customerId, cached, offeredChange, run, report, signal);
      return;
    }

    let messages: Message[] | undefined;
    if (messageChanged || (statusChanged && conversation.status === CONVERSATION_STATUS.done)) {
      try {
        messages = await this.fetchMessages(customerId, report, signal);
      } catch (error) {
        if (error instanceof ChatvisorAuthError || signal?.aborted) throw error;
        // The status change is still worth recording; the cursor stays put so the messages are
        // fetched again next run.
        report.failed.push({ customerId, reason: reasonOf(error) });
        this.options.logger.warn({ customerId, err: error }, 'chatvisor poll: could not fetch messages');
      }
    }

    const done = conversation.status === CONVERSATION_STATUS.done;
    let contact: Contact | undefined;
    let started = false;
    // Where the conversations before this run's change end: names the conversation of its
    // events (messages too) and starts a finish's transcript. Written anew below once finished.
    const ended = await readEnded(context.store, channelId, customerId);
    if (statusChanged) {
      const result = await tracker.conversation(conversation, {
        previousStatus,
        current: true,
        profile: cached?.identity,
        ended,
        transcript: done && messages ? transcriptSince(ended, messages) : undefined,
      });
      if (result.observed) {
        report.conversationEvents++;
        if (!result.duplicate) this.backfill(report, 'conversation');
        contact = result.contact;
      }
      started = result.kind === 'started';
    }

    // Every message fetched while the conversation is finished belongs to a finished one, also
    // when a webhook recorded the finish (the next conversation's transcript starts after them).
    // Written as soon as the finish is recorded, before anything else can fail or stop the run:
    // the stored status says DONE now, so no later run would come back to write it, and the
    // customer's next conversation would carry this one's conversationId and messages.
    if (done && messages) await this.markEnded(customerId, cursorAfter(lastText, null, messages));

    // After the event is stored: a profile that cannot be read loses nothing. A new conversation
    // reads the profile again, unless the listing just handed it to us.
    const refresh = started && item.profile === null;
    const identified = await this.identify(customerId, contact, cached, refresh, run, report, signal);
    contact = identified.contact;

    if (messageChanged && messages) {
      const covered = coveredByCursor(cursor, messages);
      for (const message of messages) {
        if (!isCustomerMessage(message) || covered.has(message)) continue;
        const result = await tracker.message(message, identified.identity, ended);
        report.messageEvents++;
        if (!result.duplicate) this.backfill(report, 'message');
        contact = result.contact ?? contact;
      }
      await writeCursor(
        context.store,
        channelId,
        customerId,
        cursorAfter(lastText, cursor?.at ?? null, messages),
      );
    }

    if (contact) await tracker.pushLabels(customerId, contact, signal);
  }

  /**
   * Where the customer's finished conversations end, from a run that found the conversation DONE,
   * unless the stored status says otherwise by now: the listing is as old as the run, and a webhook
   * may meanwhile have recorded the customer's next conversation (its start and messages named by
   * the `ended` before this). The messages fetched then include that conversation's first ones;
   * moving the mark past them would give its finish another conversationId (a second CRM deal
   * with deals: per-conversation) and leave them out of its transcript.
   */
  private async markEnded(customerId: string, mark: MessageCursor): Promise<void> {
    const { context, channelId } = this.options;
    const status = await readStatus(context.store, channelId, customerId);
    if (status !== null && status !== CONVERSATION_STATUS.done) return;
    await writeEnded(context.store, channelId, customerId, mark);
  }

  /** Identify the customer (without pushing labels: the caller does, once, at the end). */
  private async identify(
    customerId: string,
    contact: Contact | undefined,
    cached: CachedProfile | null,
    refresh: boolean,
    run: RunState,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<{ contact: Contact | undefined; identity: CustomerIdentity | null }> {
    const wasPending = run.pending.has(customerId);
    const result = await this.options.tracker.identify(customerId, contact, {
      refresh: refresh || wasPending,
      cached,
      signal,
      labels: false,
    });
    if (result.source === 'fetched' || result.source === 'offered') run.pending.delete(customerId);
    if (result.identity && result.changed) report.identified++;
    return result;
  }

  /**
   * A customer without a new event: identify it if its profile could not be read before (or came
   * changed with the listing), and re-check its labels if it is identified — the contact may have
   * changed through another channel since the last push.
   */
  private async maintain(
    customerId: string,
    cached: CachedProfile | null,
    offeredChange: boolean,
    run: RunState,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { tracker, context, channelId, settings } = this.options;
    if (run.pending.has(customerId) || offeredChange) {
      const identified = await this.identify(customerId, undefined, cached, false, run, report, signal);
      if (identified.contact) await tracker.pushLabels(customerId, identified.contact, signal);
      return;
    }
    if (!cached || settings.labels.length === 0) return;
    const contact = await context.contacts.findByIdentifier({
      kind: CUSTOMER_KIND,
      value: customerId,
      channelId,
    });
    if (contact) await tracker.pushLabels(customerId, contact, signal);
  }

  /** The first run's window when the customer is still to be recorded as the first run would. */
  private firstRunWindow(customerId: string, run: RunState, report: PollReport): FirstRunWindow | null {
    if (run.state.cursor.has(customerId)) return null;
    if (report.backfill) return { windowMs: report.backfill.windowMs, since: report.backfill.since };
    return run.firstRunLeft.get(customerId) ?? null;
  }

  /**
   * Where a customer the first run has not recorded yet is counted: this run's backfill report on
   * the first run; on a later one (the first failed on it), counts of its own — the report's
   * `backfill` stays the first run's — and the first-poll metrics.
   */
  private firstRunScope(customerId: string, run: RunState, report: PollReport): BackfillReport | null {
    if (report.backfill) return report.backfill;
    const window = run.firstRunLeft.get(customerId);
    if (!window) return null;
    return { ...window, conversations: 0, messages: 0, olderThanWindow: 0, unknownAge: 0 };
  }

  /**
   * A conversation the first run records: replay it if it changed within the backfill window.
   * When the listing does not say when it changed, its newest message does.
   */
  private async backfillDecision(
    item: PolledItem,
    backfill: BackfillReport,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<BackfillDecision> {
    let updatedAt = item.conversation.updatedAt ?? null;
    if (backfill.windowMs <= 0) return { replay: false, updatedAt };
    const customerId = item.conversation.customerId;
    let messages: Message[] | undefined;
    if (!updatedAt) {
      messages = await this.fetchMessages(customerId, report, signal);
      for (const message of messages) {
        if (message.createdAt && (updatedAt === null || message.createdAt > updatedAt)) {
          updatedAt = message.createdAt;
        }
      }
    }
    if (!updatedAt) {
      backfill.unknownAge++;
      this.firstPoll.inc({ channel: this.options.channelId, kind: 'unknown_age' });
      return { replay: false, updatedAt: null, messages };
    }
    if (updatedAt < backfill.since) {
      backfill.olderThanWindow++;
      this.firstPoll.inc({ channel: this.options.channelId, kind: 'older' });
      return { replay: false, updatedAt, messages };
    }
    return { replay: true, updatedAt, messages };
  }

  /**
   * The cursor of a conversation recorded as it stands, dated when it last changed: by the
   * listing's updatedAt, else by its newest message (one read). Only a conversation that nothing
   * dates (no updatedAt, no dated message) gets a cursor without a time; coveredByCursor reads
   * that as "up to the last message with the cursor's text".
   */
  private async seedCursor(
    item: PolledItem,
    decision: { updatedAt: string | null; messages?: Message[] | undefined },
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<MessageCursor> {
    const text = item.conversation.lastMessageText ?? null;
    if (decision.messages) return cursorAfter(text, decision.updatedAt, decision.messages);
    if (decision.updatedAt !== null) return { text, at: decision.updatedAt };
    return cursorAfter(text, null, await this.fetchMessages(item.conversation.customerId, report, signal));
  }

  /** Replay a conversation from the backfill window: its event, then its messages from the window. */
  private async replay(
    item: PolledItem,
    decision: { updatedAt: string; messages?: Message[] | undefined },
    backfill: BackfillReport,
    previousStatus: string | null,
    cached: CachedProfile | null,
    run: RunState,
    report: PollReport,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { context, channelId, tracker } = this.options;
    const { conversation } = item;
    const customerId = conversation.customerId;
    const messages = decision.messages ?? (await this.fetchMessages(customerId, report, signal));
    // Webhooks may have recorded finished conversations before polling was turned on: a replayed
    // finish's transcript starts after them, as in any run.
    const ended = await readEnded(context.store, channelId, customerId);
    // A status a webhook recorded before is not replayed (the tracker sees no change).
    const result = await tracker.conversation(conversation, {
      previousStatus,
      current: true,
      profile: cached?.identity,
      at: decision.updatedAt,
      ended,
      transcript:
        conversation.status === CONVERSATION_STATUS.done ? transcriptSince(ended, messages) : undefined,
    });
    let contact = result.contact;
    if (result.observed) {
      report.conversationEvents++;
      if (!result.duplicate) {
        backfill.conversations++;
        this.firstPoll.inc({ channel: channelId, kind: 'conversation' });
      }
    }
    const identified = await this.identify(
      customerId,
      contact,
      cached,
      item.profile === null,
      run,
      report,
      signal,
    );
    contact = identified.contact;
    for (const message of messages) {
      if (!isCustomerMessage(message)) continue;
      // Messages without a time belong to a conversation inside the window: kept.
      if (message.createdAt && message.createdAt < backfill.since) continue;
      const observed = await tracker.message(message, identified.identity);
      report.messageEvents++;
      if (!observed.duplicate) {
        backfill.messages++;
        this.firstPoll.inc({ channel: channelId, kind: 'message' });
      }
      contact = observed.contact ?? contact;
    }
    const seen = cursorAfter(conversation.lastMessageText ?? null, null, messages);
    if (conversation.status === CONVERSATION_STATUS.done) await this.markEnded(customerId, seen);
    await writeCursor(context.store, channelId, customerId, seen);
    if (contact) await tracker.pushLabels(customerId, contact, signal);
  }

  private backfill(report: PollReport, kind: 'conversation' | 'message'): void {
    report.backfills++;
    this.backfills.inc({ channel: this.options.channelId, kind });
  }

  /**
   * All the customer's messages, oldest page first, read up to the first short page. A read cut
   * off at MAX_MESSAGE_PAGES throws: the newest messages are the ones missing, and a cursor moved
   * past them would lose them for good.
   */
  private async fetchMessages(
    customerId: string,
    report: PollReport,
    signal?: AbortSignal,
  ): Promise<Message[]> {
    const { client, settings, logger } = this.options;
    const messages: Message[] = [];
    let previous: string | undefined;
    for (let pageNumber = 0; pageNumber < MAX_MESSAGE_PAGES; pageNumber++) {
      const page = await client.listMessages(
        customerId,
        { pageNumber, pageSize: settings.pageSize },
        { signal },
      );
      // A vendor that ignores pageNumber hands us page 0 again: that is all it will give.
      const fingerprint = JSON.stringify(page.items);
      if (page.rawCount > 0 && fingerprint === previous) return messages;
      previous = fingerprint;
      report.unreadable += page.skipped;
      await this.journalUnreadable(
        page.unreadable,
        `GET /customer/${customerId}/message page ${pageNumber}`,
        report,
      );
      messages.push(...page.items);
      if (page.rawCount < settings.pageSize) return messages;
    }
    logger.warn(
      { customerId, pages: MAX_MESSAGE_PAGES, pageSize: settings.pageSize },
      'chatvisor poll: message read cut off; the cursor stays',
    );
    throw new Error(
      `messages cut off after ${MAX_MESSAGE_PAGES} pages of ${settings.pageSize}; the cursor was not moved`,
    );
  }
}

/**
 * The fetched messages (oldest first, as Chatvisor lists them) that the cursor already covers.
 * Times have millisecond resolution, and a message can be created in the same millisecond as the
 * newest one the cursor was taken at — "at or before the cursor" would drop it, and with its
 * webhook lost nothing else would find it. So of the messages created at exactly the cursor's
 * time, the cursor covers the ones it names (`seen`); a cursor recorded without fetching (the
 * first run's baseline, or one stored before `seen` existed) names none, and covers those up to
 * the last one with its text: the conversation's last message when the cursor was taken. A
 * cursor without a time (nothing dated the conversation, or the first run of an older version
 * stored it so) covers, the same way, the messages up to the last one with its text.
 */
function coveredByCursor(cursor: MessageCursor | undefined, messages: readonly Message[]): Set<Message> {
  const covered = new Set<Message>();
  if (!cursor) return covered;
  const at = cursor.at;
  const sameTime: Message[] = [];
  if (at === null) {
    // Nothing dated the messages when the cursor was taken (or an older version stored it
    // without a time): it names only the last message then, so all of them count as taken at
    // its time.
    sameTime.push(...messages);
  } else {
    for (const message of messages) {
      if (!message.createdAt) continue;
      if (message.createdAt < at) covered.add(message);
      else if (message.createdAt === at) sameTime.push(message);
    }
  }
  if (cursor.seen && at !== null) {
    const seen = new Set(cursor.seen);
    for (const message of sameTime) if (seen.has(messageIdentity(message))) covered.add(message);
    return covered;
  }
  let last = -1;
  sameTime.forEach((message, index) => {
    if (message.text === cursor.text) last = index;
  });
  for (const message of sameTime.slice(0, last + 1)) covered.add(message);
  return covered;
}

/**
 * A finished conversation's transcript: the customer's messages after those of the conversations
 * finished before it (`ended`, storeKeys().ended). Chatvisor keeps one message thread per
 * customer, so all of its messages would repeat every earlier conversation.
 */
function transcriptSince(ended: MessageCursor | null, messages: readonly Message[]) {
  if (!ended) return toTranscript(messages);
  const covered = coveredByCursor(ended, messages);
  return toTranscript(messages.filter((message) => !covered.has(message)));
}

/** The cursor once `messages` are handled: the newest time among them (or `since`) and the messages at it. */
function cursorAfter(text: string | null, since: string | null, messages: readonly Message[]): MessageCursor {
  let newest = since;
  for (const message of messages) {
    if (message.createdAt && (newest === null || message.createdAt > newest)) newest = message.createdAt;
  }
  const seen = messages.filter((message) => message.createdAt !== null && message.createdAt === newest);
  return { text, at: newest, seen: seen.map(messageIdentity) };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Why a customer failed, as reports and the console show it: control characters and bidi
 * overrides a vendor answer may carry are dropped (client.ts cleans its own details too; this
 * also covers errors from elsewhere, e.g. the store).
 */
function reasonOf(error: unknown): string {
  return cleanDisplayText(errorText(error)) ?? 'unknown error';
}
