import { randomUUID } from 'node:crypto';
import { channelIdSchema } from '../config/schema.js';
import { StoreBusyError, ValidationError } from '../errors.js';
import { extend } from '../extend.js';
import type { Store } from '../store/types.js';

/**
 * Payloads we received but could not use — rejected (4xx) or accepted but unhandled (an unknown
 * event name). Kept so nothing a vendor sent is lost: an operator can read them back through
 * `GET /api/v1/journal` and replay them once the bridge understands them.
 */
export interface JournalEntryInput {
  channelId: string;
  vendor: string;
  kind: 'rejected' | 'unhandled';
  reason: string;
  rawBody: Buffer | string;
  contentType?: string | undefined;
  /** `rawBody` is only the first part of what was sent (a body over the size limit). */
  truncated?: boolean;
}

export interface JournalEntry {
  id: string;
  at: string;
  channelId: string;
  vendor: string;
  kind: 'rejected' | 'unhandled';
  reason: string;
  contentType: string | null;
  /** UTF-8 text when the body decodes cleanly, else base64 with `encoding: 'base64'`. */
  body: string;
  encoding: 'utf8' | 'base64';
  truncated: boolean;
}

export interface JournalPage {
  /** Newest first, across the channels asked for. */
  entries: JournalEntry[];
  /** Pass as `before` for the next (older) page; null when there is nothing older. */
  nextCursor: string | null;
}

export interface JournalListOptions {
  limit: number;
  channelId?: string | undefined;
  kind?: 'rejected' | 'unhandled' | undefined;
  /** A `nextCursor` of an earlier page: only older entries. */
  before?: string | undefined;
}

export interface PayloadJournal {
  record(entry: JournalEntryInput): Promise<void>;
  list(options: JournalListOptions): Promise<JournalPage>;
}

/** Before per-channel rings, one list for every channel; still read (after the rings), never written. */
const LEGACY_KEY = 'journal';
/** One sequence for all rings: orders entries across channels and is the page cursor. */
const SEQ_KEY = 'journal:seq';
const ringKey = (ring: string) => `journal:ring:${ring}`;
/** Every ring ever written, so a ring whose channel was since removed from the config is still read. */
const RINGS_KEY = 'journal:rings';
/**
 * The ring of every channel that is not configured (now): a deferred item whose channel was
 * removed. Channel ids are `[a-z0-9-]`, so this name is never a channel's.
 */
const OTHER_RING = '_other';
/**
 * Every channel id with entries in the other ring, so a listing of a channel that is configured
 * again reads the entries journalled for it while it was not.
 */
const OTHER_CHANNELS_KEY = 'journal:other-channels';
/** Room for an entry's fields besides its body (ids, reason, content type, JSON). */
const ENTRY_OVERHEAD_BYTES = 2048;
const REASON_CHARS = 1000;
const CONTENT_TYPE_CHARS = 100;
/** Entries read per round trip when listing: a read never loads a whole ring. */
const CHUNK = 10;
/** Tries to take a sequence number against other writers before answering 503 (store_busy). */
const MAX_RECORD_ATTEMPTS = 1000;
/** A page stops once its entries reach this many bytes (it always holds at least one entry). */
export const JOURNAL_PAGE_BYTES = 1024 * 1024;
/** Ring members are `<seq, zero-padded>|<entry JSON>`: byte order is sequence order. */
const SEQ_DIGITS = 16;
const pad = (seq: number) => String(seq).padStart(SEQ_DIGITS, '0');
const CURSOR = /^(?:\d{1,16}|L\d{1,9})$/;

interface Read {
  seq: number;
  entry: JournalEntry;
  bytes: number;
}

/**
 * The journal is one bounded ring per configured channel plus one for channels that are not
 * configured, so a vendor flooding one channel with bad payloads pushes out only that channel's
 * entries. Each ring holds at most `journalBytes / (channels + 1)`: every stored entry is at most
 * `journalEntryBytes + overhead` bytes (a body whose JSON would be larger is kept as base64, which
 * is under the cap by construction), so the journal never holds more than `journalBytes` (plus,
 * after a channel is removed from the config, its ring as it was), unless a ring's share is under
 * one entry: every ring keeps at least one (RING_ENTRIES), as the README says.
 *
 * A channel removed from the config keeps its ring as it was: still read (listed with the others
 * and by its channel id), no longer written (its later entries go to the other ring, and are
 * listed under its id, also once it is configured again).
 *
 * Rings are sorted sets whose members start with a sequence number taken from one counter, so a
 * page is merged across rings newest first and its cursor (the last entry's sequence) stays
 * valid while entries are added: a new entry is always above it. A page is bounded by `limit`
 * entries and by JOURNAL_PAGE_BYTES.
 */
export function createPayloadJournal(
  store: Store,
  now: () => Date = () => new Date(),
  limits: { journalBytes?: number; journalEntryBytes?: number } = {},
  channelIds: readonly string[] = [],
): PayloadJournal {
  const journalBytes = limits.journalBytes ?? 64 * 1024 * 1024;
  const MAX_BODY_BYTES = limits.journalEntryBytes ?? 64 * 1024;
  const MAX_ENTRY_BYTES = MAX_BODY_BYTES + ENTRY_OVERHEAD_BYTES;
  // base64 grows a body by 4/3: the raw slice is cut so the stored text stays under the cap.
  const rawCap = Math.floor((MAX_BODY_BYTES * 3) / 4);
  const channels = new Set(channelIds);
  const rings = [...channels, OTHER_RING];
  const RING_ENTRIES = Math.max(1, Math.floor(journalBytes / rings.length / MAX_ENTRY_BYTES));
  const pageBytes = Math.max(JOURNAL_PAGE_BYTES, MAX_ENTRY_BYTES);
  const ringOf = (channelId: string) => (channels.has(channelId) ? channelId : OTHER_RING);
  /** Rings this process has noted in RINGS_KEY (once each: the set only grows). */
  const noted = new Set<string>();
  /** Channel ids this process has noted in OTHER_CHANNELS_KEY. */
  const notedOutside = new Set<string>();

  /** The rings a listing reads: for a channel, its own ring and, once it is gone, the other one. */
  async function ringsFor(channelId: string | undefined): Promise<string[]> {
    if (channelId !== undefined && channels.has(channelId)) {
      const outside = await store.smembers(OTHER_CHANNELS_KEY);
      return outside.includes(channelId) ? [channelId, OTHER_RING] : [channelId];
    }
    const known = new Set(await store.smembers(RINGS_KEY));
    if (channelId !== undefined) return known.has(channelId) ? [channelId, OTHER_RING] : [OTHER_RING];
    return [...new Set([...rings, ...known])];
  }

  function serialize(input: JournalEntryInput): string {
    const raw = typeof input.rawBody === 'string' ? Buffer.from(input.rawBody, 'utf8') : input.rawBody;
    const truncated = raw.length > rawCap || input.truncated === true;
    const slice = truncated ? raw.subarray(0, rawCap) : raw;
    const text = slice.toString('utf8');
    const clean = Buffer.from(text, 'utf8').equals(slice);
    const entry: JournalEntry = {
      id: randomUUID(),
      at: now().toISOString(),
      channelId: input.channelId,
      vendor: input.vendor,
      kind: input.kind,
      reason: input.reason.slice(0, REASON_CHARS),
      contentType: input.contentType?.slice(0, CONTENT_TYPE_CHARS) ?? null,
      body: clean ? text : slice.toString('base64'),
      encoding: clean ? 'utf8' : 'base64',
      truncated,
    };
    const json = JSON.stringify(entry);
    if (Buffer.byteLength(json) <= MAX_ENTRY_BYTES) return json;
    // JSON escapes a control character as six bytes (\u0000), so a clean UTF-8 body, or a reason
    // made of them, can grow that much. First the reason and content type are cut short (the
    // body stays readable); if the body itself is the problem, it is kept as base64 (4/3 of the
    // slice: under the cap by construction). No entry is over MAX_ENTRY_BYTES.
    const short = extend(entry, {
      reason: entry.reason.slice(0, 100),
      contentType: entry.contentType?.slice(0, 20) ?? null,
    });
    const base64 = { body: slice.toString('base64'), encoding: 'base64' as const };
    for (const candidate of [short, extend(entry, base64)]) {
      const text = JSON.stringify(candidate);
      if (Buffer.byteLength(text) <= MAX_ENTRY_BYTES) return text;
    }
    return JSON.stringify(extend(short, base64));
  }

  /** Where a listing is in one ring: what it read and has not placed yet, and where to read on. */
  interface RingCursor {
    ring: string;
    below: string | undefined;
    buffer: Read[];
    done: boolean;
  }

  /** Read the ring on until something matches the filters or the ring ends. */
  async function fill(cursor: RingCursor, options: JournalListOptions): Promise<void> {
    while (cursor.buffer.length === 0 && !cursor.done) {
      const members = await store.zrevrangeByLex(ringKey(cursor.ring), {
        ...(cursor.below === undefined ? {} : { below: cursor.below }),
        limit: CHUNK,
      });
      for (const member of members) {
        cursor.below = member;
        const bar = member.indexOf('|');
        const entry = JSON.parse(member.slice(bar + 1)) as JournalEntry;
        if (options.channelId && entry.channelId !== options.channelId) continue;
        if (options.kind && entry.kind !== options.kind) continue;
        cursor.buffer.push({
          seq: Number(member.slice(0, bar)),
          entry,
          bytes: Buffer.byteLength(member) - bar - 1,
        });
      }
      if (members.length < CHUNK) cursor.done = true;
    }
  }

  /**
   * Entries of the list written before the rings, below list index `before`, newest first, in
   * the room the page has left (`first`: the page is empty, so one entry is taken whatever its size).
   */
  async function readLegacy(
    before: number | null,
    options: JournalListOptions,
    room: { entries: number; bytes: number; first: boolean },
  ): Promise<JournalPage> {
    const entries: JournalEntry[] = [];
    let bytes = 0;
    let index = (before ?? (await store.llen(LEGACY_KEY))) - 1;
    while (index >= 0) {
      const raw = await store.lrange(LEGACY_KEY, Math.max(0, index - CHUNK + 1), index);
      if (raw.length === 0) break;
      for (let at = raw.length - 1; at >= 0; at--, index--) {
        const size = Buffer.byteLength(raw[at]!);
        const fits = bytes + size <= room.bytes || (room.first && entries.length === 0);
        if (entries.length >= room.entries || !fits) return { entries, nextCursor: `L${index + 1}` };
        const entry = JSON.parse(raw[at]!) as JournalEntry;
        if (options.channelId && entry.channelId !== options.channelId) continue;
        if (options.kind && entry.kind !== options.kind) continue;
        entries.push(entry);
        bytes += size;
      }
    }
    return { entries, nextCursor: null };
  }

  return {
    async record(input) {
      const json = serialize(input);
      const ring = ringOf(input.channelId);
      const key = ringKey(ring);
      if (!noted.has(ring)) {
        await store.sadd(RINGS_KEY, ring);
        noted.add(ring);
      }
      // The channels in the other ring, likewise (a channel may be configured again later).
      // Only a name a channel can have (an unreadable deferred item may carry anything there).
      const channelName = channelIdSchema.safeParse(input.channelId).success;
      if (ring === OTHER_RING && channelName && !notedOutside.has(input.channelId)) {
        await store.sadd(OTHER_CHANNELS_KEY, input.channelId);
        notedOutside.add(input.channelId);
      }
      // The sequence is taken and the entry added in one atomic step (a checked batch): taken
      // first and added after, an entry still on its way when a reader's page went past its
      // number was below that page's cursor once it landed, and paging on never listed it.
      // A writer that loses the check to another one takes the next number; one always wins.
      for (let attempt = 0; ; attempt++) {
        if (attempt === MAX_RECORD_ATTEMPTS) throw new StoreBusyError('the payload journal');
        const current = await store.get(SEQ_KEY);
        const seq = Number(current ?? 0) + 1;
        const batch = store.batch().expect(SEQ_KEY, current).incrBy(SEQ_KEY, 1);
        if (await batch.zadd(key, 0, `${pad(seq)}|${json}`).exec()) break;
      }
      // The entry is in. A trim that fails (the store went away just now) is not the record
      // failing: thrown, the caller retried and the entry was journalled twice (the deferred
      // worker does retry). The next record trims the ring back to its bound.
      try {
        const excess = (await store.zcard(key)) - RING_ENTRIES;
        if (excess > 0) {
          // Oldest first (lowest sequence). Two writers trimming at once remove the same members.
          const oldest = await store.zrangeByScore(key, 0, 0, excess);
          const batch = store.batch();
          for (const member of oldest) batch.zrem(key, member);
          await batch.exec();
        }
      } catch {
        // Left to the next record (above).
      }
    },

    async list(options) {
      const cursor = options.before;
      if (cursor !== undefined && !CURSOR.test(cursor)) {
        throw new ValidationError(
          'invalid cursor',
          [{ path: 'before', message: 'not a cursor this API returned (use nextCursor of a page)' }],
          'invalid_query',
        );
      }
      if (cursor?.startsWith('L')) {
        return readLegacy(Number(cursor.slice(1)), options, {
          entries: options.limit,
          bytes: pageBytes,
          first: true,
        });
      }
      const below = cursor === undefined ? undefined : pad(Number(cursor));
      const asked = await ringsFor(options.channelId);
      const cursors: RingCursor[] = asked.map((ring) => ({ ring, below, buffer: [], done: false }));
      await Promise.all(cursors.map((each) => fill(each, options)));
      // Merge the rings newest first, reading each on only as far as the page takes from it: a
      // page reads about its own size plus a few entries per ring, however many channels there are.
      const entries: JournalEntry[] = [];
      let bytes = 0;
      let last = 0;
      for (;;) {
        let next: RingCursor | undefined;
        for (const each of cursors) {
          if (each.buffer.length > 0 && (!next || each.buffer[0]!.seq > next.buffer[0]!.seq)) next = each;
        }
        if (!next) break;
        const read = next.buffer[0]!;
        if (entries.length >= options.limit || (entries.length > 0 && bytes + read.bytes > pageBytes)) {
          return { entries, nextCursor: String(last) };
        }
        entries.push(read.entry);
        bytes += read.bytes;
        last = read.seq;
        next.buffer.shift();
        await fill(next, options);
      }
      // Every ring is read to its end: what is older is in the list written before the rings.
      const legacy = await readLegacy(null, options, {
        entries: options.limit - entries.length,
        bytes: pageBytes - bytes,
        first: entries.length === 0,
      });
      return { entries: [...entries, ...legacy.entries], nextCursor: legacy.nextCursor };
    },
  };
}
