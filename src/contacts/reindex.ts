import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { cliCommand } from '../cli/named.js';
import type { Config } from '../config/schema.js';
import { StoreBusyError } from '../errors.js';
import { lockRenewed } from '../store/renewal.js';
import type { Store, StoreBatch } from '../store/types.js';
import { contactLockName } from './engine.js';
import { key, publicId, storedId } from './keys.js';
import { type NormalizeOptions, normalizeOptionsOf } from './normalize.js';
import { decodeRecord, type StoredRecord } from './record.js';
import {
  extensionSetsOf,
  indexKeysOf,
  nameIndexOf,
  needsLook,
  type PhoneEvidence,
  phoneEvidence,
  planReindex,
  type ReindexPlan,
  type Renames,
  renamesOf,
} from './reindex-plan.js';
import { queueWrites } from './writes.js';

/**
 * Re-indexing stored contacts to the current identifier normalisation (what changed and what a
 * record's plan writes: reindex-plan.ts). Data written by an older version keeps the keys that
 * version made; without this, an upgraded bridge makes a second contact for the same person
 * (ivan@почта.рф no longer finds the contact stored under ivan@xn--80a1acny.xn--p1ai) or attaches
 * a switchboard's callers to the one person stored under its number.
 *
 * A pass walks every record (Store.scanKeys over `rec:`), a page at a time. A record whose values
 * all keep their form and that holds no phone is read once (a page of records in one MGET); one
 * holding a phone's merging key has its newest timeline entries read too (phoneEvidence). One
 * that needs a change is written the way the
 * engine writes a contact: under its contact's lock and the identity locks of the keys it moves
 * (which lock-free observations of that contact or those identifiers expect free), re-read under
 * them, and committed as one batch that expects everything it was planned on; if something changed
 * anyway it is planned again, and after a few tries left for the next pass (`busy`). So it is safe
 * while the bridge runs, and a pass changes nothing twice: a second pass finds nothing to do.
 *
 * The console's name index is re-keyed in the same pass, a page of records at a time: every name
 * of a record under today's words (names first seen before the index existed were never in it),
 * and the record taken off words only an older folding gave its names (nameIndexOf). That costs
 * one SMISMEMBER per distinct word of the page, and a write only for what is missing or stale;
 * the removals are committed expecting the record as read (a name added meanwhile is planned again).
 *
 * Once per store: a worker (or `--role all`) runs a pass at start-up, in the background, unless
 * the store says its keys follow this version already (NORMALIZATION_KEY). One instance runs it
 * (a lock, renewed); it saves its place after every page, so a restart resumes it. The CLI runs a
 * pass on demand (`chatbridge contacts reindex [--dry-run]`).
 */

/**
 * The normalisation stored keys follow. 1: anything before this marker existed; 2: NFC
 * identifiers, IDN e-mail domains in Unicode form, phones with an extension search-only; 3: every
 * name in the name index under today's words (nameWords), none under a word only an older folding
 * gave. A change to normalize.ts (or nameWords) that gives a stored value another key bumps it (and
 * teaches reindex-plan.ts).
 */
export const NORMALIZATION_VERSION = 3;
/** The version the store's keys follow (a string of digits); absent: 1. */
export const NORMALIZATION_KEY = 'contacts:normalization';
/** Where a pass that stopped left off: {version, cursor, report} (JSON). */
export const REINDEX_PROGRESS_KEY = 'contacts:reindex:progress';
/** Held (renewed) by the instance running a pass. */
export const REINDEX_LOCK = 'contacts:reindex';

const PAGE_SIZE = 500;
/** Timeline entries read at first (the newest), then per read, when a phone's history is looked at. */
const FIRST_TIMELINE_CHUNK = 20;
const TIMELINE_CHUNK = 200;
/** Words whose name-index sets are asked about at once (one SMISMEMBER each). */
const NAME_READS_AT_ONCE = 64;
/** Records whose name-index writes go in one batch. */
const NAME_BATCH = 100;
/** Tries per record before it is left for the next pass. */
const ATTEMPTS = 3;
const LOCK_TTL_MS = 10_000;
const LOCK_WAIT_MS = 5_000;
const PASS_LOCK_TTL_MS = 60_000;
/** After a failed start-up pass (Redis away), the next try. */
const RETRY_MS = 60_000;

export interface ReindexReport {
  version: number;
  dryRun: boolean;
  /** Every record was looked at (false: the pass was stopped; the next one goes on from there). */
  complete: boolean;
  /** Records looked at. */
  records: number;
  /** Records whose keys changed (a dry run: would change). */
  changed: number;
  /** Identifiers moved to the key the current rules give them. */
  rekeyed: number;
  /** Phones always written with an extension that held the number's merging key: search-only now. */
  searchOnlyPhones: number;
  /** Extensions the search-only phones above are now found by (`sidx:phone:<number>;ext=<ext>`). */
  extensionsAdded: number;
  /** Re-keyed identifiers whose key another contact holds: recorded as identity conflicts, not merged. */
  conflicts: number;
  /** Identifiers the current rules give no key (a character now refused, a blocklisted value): kept. */
  unkeyable: number;
  /** Records some of whose names the name index lacked (under today's words): now found by them. */
  namesIndexed: number;
  /** Name-index entries added for them (a record id under a word). */
  nameEntriesAdded: number;
  /** Name-index entries removed: a record under a word only an older folding gave its names (no query reaches it). */
  staleNameEntriesRemoved: number;
  /** Records that kept changing while being re-indexed: left for the next pass. */
  busy: number;
}

export interface ReindexOptions {
  store: Store;
  identity: Pick<Config['identity'], 'blocklist' | 'defaultCountry'>;
  /** limits.timelineRetention: the entry a change adds restarts its timeline's clock, as every entry does. */
  timelineRetention?: number;
  /** Plan and count only: nothing is written, no lock taken, no place saved. */
  dryRun?: boolean;
  /** Go on from the place a stopped pass saved (else from the first record). */
  resume?: boolean;
  now?: () => Date;
  /** Stops the pass between records (its place is saved). */
  signal?: AbortSignal;
  /** After each page of records. */
  onProgress?: (report: ReindexReport) => void;
  pageSize?: number;
}

/** The normalisation version the store's keys follow (1 when it says none). */
export async function storedNormalizationVersion(store: Pick<Store, 'get'>): Promise<number> {
  const value = await store.get(NORMALIZATION_KEY);
  return value !== null && /^\d{1,6}$/.test(value) ? Number(value) : 1;
}

const emptyReport = (dryRun: boolean): ReindexReport => ({
  version: NORMALIZATION_VERSION,
  dryRun,
  complete: false,
  records: 0,
  changed: 0,
  rekeyed: 0,
  searchOnlyPhones: 0,
  extensionsAdded: 0,
  conflicts: 0,
  unkeyable: 0,
  namesIndexed: 0,
  nameEntriesAdded: 0,
  staleNameEntriesRemoved: 0,
  busy: 0,
});

/** One record's name-index writes: words to put it under, stale words to take it off. */
interface NameWork {
  id: string;
  /** The record as its plan read it (removals expect it unchanged). */
  text: string;
  add: string[];
  remove: string[];
}

/** What a record's plan was made on, with the raw values its commit expects unchanged. */
interface Look {
  text: string;
  renames: Renames;
  root: string;
  rootValue: string | null;
  /** Index key -> its raw value. */
  indexValues: Map<string, string | null>;
  /** Holder -> its raw root pointer. */
  holderRootValues: Map<string, string | null>;
  /** Records of the contact that hold a new key -> their text. */
  groupTexts: Map<string, string>;
  plan: ReindexPlan;
}

/** One pass over every stored record (see the module comment). */
export async function reindexContacts(options: ReindexOptions): Promise<ReindexReport> {
  const { store } = options;
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? (() => new Date());
  const normalize: NormalizeOptions = normalizeOptionsOf(options.identity);
  const pageSize = options.pageSize ?? PAGE_SIZE;
  let report = emptyReport(dryRun);
  let cursor = '0';
  if (options.resume && !dryRun) {
    const saved = await store.get(REINDEX_PROGRESS_KEY);
    const progress =
      saved === null
        ? null
        : (JSON.parse(saved) as { version?: number; cursor?: string; report?: ReindexReport });
    if (
      progress?.version === NORMALIZATION_VERSION &&
      typeof progress.cursor === 'string' &&
      progress.report
    ) {
      cursor = progress.cursor;
      report = { ...progress.report, dryRun, complete: false };
    }
  }

  /**
   * The timeline of a record, read newest first for what it says of `phones`, until each of them
   * is seen written without an extension (it keeps merging then, whatever else the history says):
   * for most contacts the newest entries settle it, and only a phone always written with an
   * extension costs its whole history.
   */
  async function evidenceOf(id: string, phones: ReadonlySet<string>): Promise<Map<string, PhoneEvidence>> {
    const evidence = new Map<string, PhoneEvidence>();
    let below: string | undefined;
    for (let limit = FIRST_TIMELINE_CHUNK; ; limit = TIMELINE_CHUNK) {
      const members = await store.zrevrangeByLex(key.timeline(id), {
        ...(below === undefined ? {} : { below }),
        limit,
      });
      phoneEvidence(members, phones, normalize.defaultCountry, evidence);
      if (members.length < limit || [...phones].every((phone) => evidence.get(phone)?.plain)) return evidence;
      below = members[members.length - 1];
    }
  }

  /** Read what the record's plan needs and plan it; null when the record is gone. */
  async function look(id: string, known?: string): Promise<Look | null> {
    const text = known ?? (await store.get(key.record(id)));
    if (text === null) return null;
    const record = decodeRecord(id, text);
    const renames = renamesOf(record, normalize);
    const indexKeys = indexKeysOf(renames);
    const [rootValue = null, ...values] = await store.mget([key.root(id), ...indexKeys]);
    const root = rootValue === null ? id : publicId(rootValue);
    const indexValues = new Map(indexKeys.map((indexKey, index) => [indexKey, values[index] ?? null]));
    const holders = new Map(
      indexKeys.map((indexKey) => {
        const value = indexValues.get(indexKey) ?? null;
        return [indexKey, value === null ? null : publicId(value)] as const;
      }),
    );
    const others = [
      ...new Set(
        [...holders.values()].filter((holder): holder is string => holder !== null && holder !== id),
      ),
    ];
    const otherRoots = await store.mget(others.map(key.root));
    const holderRootValues = new Map(others.map((holder, index) => [holder, otherRoots[index] ?? null]));
    const holderRoots = new Map(
      others.map((holder) => {
        const value = holderRootValues.get(holder) ?? null;
        return [holder, value === null ? holder : publicId(value)] as const;
      }),
    );
    // Records of this contact holding a current form: the value joins theirs.
    const group = others.filter((holder) => holderRoots.get(holder) === root);
    const groupValues = await store.mget(group.map(key.record));
    const groupTexts = new Map<string, string>();
    const groupRecords = new Map(
      group.flatMap((holder, index) => {
        const value = groupValues[index];
        if (value === null || value === undefined) return [];
        groupTexts.set(holder, value);
        return [[holder, decodeRecord(holder, value)] as const];
      }),
    );
    // The phones whose merging key this record holds: its timeline tells how they were written.
    const held = new Set(
      renames.phones.filter((phone) => holders.get(key.index({ kind: 'phone', value: phone })) === id),
    );
    const evidence = held.size === 0 ? new Map<string, PhoneEvidence>() : await evidenceOf(id, held);
    const sets = extensionSetsOf({ ...renames, phones: [...held] }, evidence);
    const memberships = await Promise.all(sets.map((set) => store.smembers(set)));
    const inExtensionSets = new Set(
      sets.filter((_, index) => memberships[index]!.some((member) => publicId(member) === id)),
    );
    const plan = planReindex({
      record,
      root,
      renames,
      holders,
      holderRoots,
      groupRecords,
      evidence,
      inExtensionSets,
      at: now().toISOString(),
      entryId: `reindex_${randomBytes(8).toString('hex')}`,
    });
    return { text, renames, root, rootValue, indexValues, holderRootValues, groupTexts, plan };
  }

  /** Commit a plan made under the locks: it holds only if nothing it was made on changed. */
  async function commit(id: string, seen: Look): Promise<boolean> {
    const batch = store.batch();
    batch.expect(key.record(id), seen.text);
    batch.expect(key.root(id), seen.rootValue);
    for (const [indexKey, value] of seen.indexValues) batch.expect(indexKey, value);
    for (const [holder, value] of seen.holderRootValues) batch.expect(key.root(holder), value);
    for (const holder of seen.plan.rewritten)
      batch.expect(key.record(holder), seen.groupTexts.get(holder) ?? null);
    queueWrites(batch, seen.plan.writes);
    const retention = options.timelineRetention ?? 0;
    if (retention > 0)
      for (const write of seen.plan.writes) if (write.op === 'zadd') batch.expire(write.key, retention);
    return batch.exec();
  }

  /** Re-index one record (its text as the page read it); returns its plan, or 'busy'. */
  async function reindexRecord(id: string, text: string): Promise<ReindexPlan | 'busy' | null> {
    let seen = await look(id, text);
    if (seen === null || seen.plan.writes.length === 0 || dryRun) return seen?.plan ?? null;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      // The contact's lock (merges, unmerges and contended observations take it; every other
      // write of the contact expects it free) and the identity locks of the keys it moves.
      const names = [contactLockName(seen.root), ...indexKeysOf(seen.renames)];
      let lock: Awaited<ReturnType<Store['lock']>>;
      try {
        lock = await store.lock([...new Set(names)].sort(), { ttlMs: LOCK_TTL_MS, waitMs: LOCK_WAIT_MS });
      } catch (error) {
        if (error instanceof StoreBusyError) continue;
        throw error;
      }
      try {
        const fresh = await look(id);
        if (fresh === null) return null;
        if (fresh.root !== seen.root) {
          seen = fresh; // merged into another contact meanwhile: that one's lock
          continue;
        }
        if (fresh.plan.writes.length === 0) return fresh.plan;
        if (await commit(id, fresh)) return fresh.plan;
        seen = fresh;
      } finally {
        await lock.release();
      }
    }
    return 'busy';
  }

  /**
   * What the name index lacks (today's words of the records' names) and holds that no query
   * reaches (stale words), for records as read: one SMISMEMBER per distinct word.
   */
  async function nameWorkOf(records: ReadonlyArray<{ id: string; record: StoredRecord; text: string }>) {
    const plans = records.map(({ id, record, text }) => ({ id, text, ...nameIndexOf(record) }));
    const asked = new Map<string, string[]>();
    for (const plan of plans)
      for (const word of [...plan.words, ...plan.stale]) {
        const ids = asked.get(word);
        if (ids) ids.push(storedId(plan.id));
        else asked.set(word, [storedId(plan.id)]);
      }
    const held = new Map<string, Set<string>>();
    const words = [...asked.keys()];
    for (let start = 0; start < words.length; start += NAME_READS_AT_ONCE)
      await Promise.all(
        words.slice(start, start + NAME_READS_AT_ONCE).map(async (word) => {
          const ids = asked.get(word)!;
          const answers = await store.smismember(key.name(word), ids);
          held.set(word, new Set(ids.filter((_, index) => answers[index])));
        }),
      );
    const work: NameWork[] = [];
    for (const plan of plans) {
      const member = storedId(plan.id);
      const add = plan.words.filter((word) => !held.get(word)?.has(member));
      const remove = plan.stale.filter((word) => held.get(word)?.has(member));
      if (add.length > 0 || remove.length > 0) work.push({ id: plan.id, text: plan.text, add, remove });
    }
    return work;
  }

  function queueNames(batch: StoreBatch, work: NameWork): void {
    const member = storedId(work.id);
    // Adding a name's words is right whatever happened since (a record's names only grow); a
    // removal only while the record's names are those its plan was made on.
    if (work.remove.length > 0) batch.expect(key.record(work.id), work.text);
    for (const word of work.add) batch.sadd(key.name(word), member);
    for (const word of work.remove) batch.srem(key.name(word), member);
  }

  const countNames = (work: NameWork) => {
    if (work.add.length > 0) report.namesIndexed += 1;
    report.nameEntriesAdded += work.add.length;
    report.staleNameEntriesRemoved += work.remove.length;
  };
  const busyNames = new Set<string>();

  /** The name-index step of a page of records (as the page read them). */
  async function indexNames(records: ReadonlyArray<{ id: string; record: StoredRecord; text: string }>) {
    const work = await nameWorkOf(records);
    if (dryRun) {
      // (A record SCAN answers twice is counted twice here, as in `records`.)
      for (const item of work) countNames(item);
      return;
    }
    for (let start = 0; start < work.length; start += NAME_BATCH) {
      const chunk = work.slice(start, start + NAME_BATCH);
      const batch = store.batch();
      for (const item of chunk) queueNames(batch, item);
      if (await batch.exec()) {
        for (const item of chunk) countNames(item);
        continue;
      }
      // One of them changed since the page read it (nothing was written): each on its own, read again.
      for (const item of chunk) await indexNamesOf(item.id);
    }
  }

  async function indexNamesOf(id: string): Promise<void> {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const text = await store.get(key.record(id));
      if (text === null) return;
      const [work] = await nameWorkOf([{ id, record: decodeRecord(id, text), text }]);
      if (!work) return;
      const batch = store.batch();
      queueNames(batch, work);
      if (await batch.exec()) {
        countNames(work);
        return;
      }
    }
    if (!busyNames.has(id)) {
      busyNames.add(id);
      report.busy += 1;
    }
  }

  // SCAN may answer a key twice (Store.scanKeys): a record changed (or found busy) is counted
  // once. Only those are remembered; `records` may count one twice.
  const counted = new Set<string>();
  const count = (id: string, plan: ReindexPlan | 'busy' | null, unkeyable: number) => {
    report.records += 1;
    if (counted.has(id)) return;
    report.unkeyable += unkeyable;
    if (plan === 'busy') {
      counted.add(id);
      report.busy += 1;
      return;
    }
    if (plan === null || plan.writes.length === 0) return;
    counted.add(id);
    report.changed += 1;
    report.extensionsAdded += plan.extensionSets;
    for (const change of plan.changes) {
      if (change.outcome === 'conflict') report.conflicts += 1;
      else if (change.outcome === 'search-only') report.searchOnlyPhones += 1;
      else report.rekeyed += 1;
    }
  };

  const saveProgress = (at: string) =>
    store.set(REINDEX_PROGRESS_KEY, JSON.stringify({ version: NORMALIZATION_VERSION, cursor: at, report }));
  let finished = false;
  while (!options.signal?.aborted) {
    const page = await store.scanKeys('rec:', cursor, pageSize);
    const ids = page.keys.map((recordKey) => publicId(recordKey.slice('rec:'.length)));
    const texts = ids.length === 0 ? [] : await store.mget(page.keys);
    const read = ids.flatMap((id, index) => {
      const text = texts[index];
      return text === null || text === undefined ? [] : [{ id, text, record: decodeRecord(id, text) }];
    });
    // Names first: they need only the record, and re-keying identifiers below rewrites some records.
    if (!options.signal?.aborted) await indexNames(read);
    let stopped = false;
    for (const { id, text, record } of read) {
      if (options.signal?.aborted) {
        stopped = true;
        break;
      }
      const renames = renamesOf(record, normalize);
      if (!needsLook(renames)) {
        count(id, null, renames.unkeyable);
        continue;
      }
      count(id, await reindexRecord(id, text), renames.unkeyable);
    }
    if (stopped) {
      // Stopped inside a page: the next pass does this page again (what is done stays done),
      // so the place saved is its start.
      if (!dryRun) await saveProgress(cursor);
      break;
    }
    cursor = page.cursor;
    options.onProgress?.(report);
    if (cursor === '0') {
      finished = true;
      break;
    }
    if (!dryRun) await saveProgress(cursor);
  }

  report.complete = finished;
  if (finished && !dryRun) {
    const batch = store.batch().del(REINDEX_PROGRESS_KEY);
    // Records left busy are tried again by the next pass (the next start, or the CLI).
    if (report.busy === 0) batch.set(NORMALIZATION_KEY, String(NORMALIZATION_VERSION));
    await batch.exec();
  }
  return report;
}

/**
 * The start-up pass (worker and `all` roles): once per store, in the background, by one instance.
 * `stop()` ends it between records (its place is saved) and resolves when it has stopped.
 */
export function startReindexOnce(options: {
  store: Store;
  identity: ReindexOptions['identity'];
  timelineRetention?: number;
  logger: Logger;
  now?: () => Date;
}): { finished: Promise<void>; stop(): Promise<void> } {
  const { store, logger } = options;
  const controller = new AbortController();
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      controller.signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });

  const once = async (): Promise<void> => {
    const version = await storedNormalizationVersion(store);
    if (version > NORMALIZATION_VERSION)
      logger.warn(
        { stored: version, known: NORMALIZATION_VERSION },
        'contact keys follow a newer normalisation than this chatbridge knows (a newer version wrote them): left as they are',
      );
    if (version >= NORMALIZATION_VERSION) return;
    const lock = await lockRenewed(store, REINDEX_LOCK, PASS_LOCK_TTL_MS, {
      onRenewError: (error) => logger.warn({ err: error }, 'contact re-index: could not renew its lock'),
      // Another instance may take it over: this one stops (its place is saved).
      onLost: () => controller.abort(),
    });
    if (lock === null) {
      logger.info('contact re-index: another instance is running it');
      return;
    }
    try {
      if ((await storedNormalizationVersion(store)) >= NORMALIZATION_VERSION) return;
      logger.info(
        { version: NORMALIZATION_VERSION },
        `contact re-index: giving stored contacts the keys of the current identifier rules and every name its name-search key (once per store, in the background; ${cliCommand('contacts reindex --dry-run')} shows what it does)`,
      );
      // Every 20 pages, when records were read since the last line: SCAN walks the whole
      // database, and on a Redis that other apps or bridges fill most pages read no record, so a
      // first start logged the same all-zero line several times before it found it had nothing to do.
      let pages = 0;
      let said = 0;
      const report = await reindexContacts({
        store,
        identity: options.identity,
        ...(options.timelineRetention === undefined ? {} : { timelineRetention: options.timelineRetention }),
        ...(options.now ? { now: options.now } : {}),
        resume: true,
        signal: controller.signal,
        onProgress: (progress) => {
          pages += 1;
          if (pages % 20 !== 0 || progress.records === said) return;
          said = progress.records;
          logger.info({ ...progress }, 'contact re-index: in progress');
        },
      });
      logReport(logger, report);
    } finally {
      await lock.release();
    }
  };

  const running = (async () => {
    while (!controller.signal.aborted) {
      try {
        await once();
        return;
      } catch (error) {
        if (controller.signal.aborted) return;
        logger.error(
          { err: error },
          `contact re-index failed; tried again in ${RETRY_MS / 1000} s (${cliCommand('contacts reindex')} runs it by hand)`,
        );
        await wait(RETRY_MS);
      }
    }
  })();
  return {
    /** Settles when the pass is over: done, stopped, or not needed (never rejects). */
    finished: running,
    async stop() {
      controller.abort();
      await running;
    },
  };
}

function logReport(logger: Logger, report: ReindexReport): void {
  if (!report.complete) {
    logger.info({ ...report }, 'contact re-index: stopped; the next start goes on from where it stopped');
    return;
  }
  if (report.busy > 0)
    logger.warn(
      { ...report },
      `contact re-index: ${report.busy} record(s) kept changing and were left as they were; the next start (or ${cliCommand('contacts reindex')}) tries them again`,
    );
  else logger.info({ ...report }, 'contact re-index: done');
  if (report.conflicts > 0)
    logger.warn(
      { conflicts: report.conflicts },
      'contact re-index: some identifiers now have the key of another contact; not merged, listed in GET /api/v1/identity/conflicts (reason renormalized) for staff to decide',
    );
}
