import { randomUUID } from 'node:crypto';
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

export interface PayloadJournal {
  record(entry: JournalEntryInput): Promise<void>;
  list(options: {
    limit: number;
    channelId?: string;
    kind?: 'rejected' | 'unhandled';
  }): Promise<JournalEntry[]>;
}

const JOURNAL_KEY = 'journal';
/** Room for an entry's fields besides its body (ids, reason up to 1000 characters, JSON, base64). */
const ENTRY_OVERHEAD_BYTES = 2048;
/** Entries read per round trip when listing: a read never loads the whole journal. */
const PAGE = 200;

/**
 * The journal is a bounded ring, bounded by bytes (issue 10 item 4): each entry's body is cut to
 * `journalEntryBytes`, so `journalBytes / (journalEntryBytes + overhead)` entries can never hold
 * more than `journalBytes` (base64 bodies are kept under the same cap).
 */
export function createPayloadJournal(
  store: Store,
  now: () => Date = () => new Date(),
  limits: { journalBytes?: number; journalEntryBytes?: number } = {},
): PayloadJournal {
  const journalBytes = limits.journalBytes ?? 64 * 1024 * 1024;
  const MAX_BODY_BYTES = limits.journalEntryBytes ?? 64 * 1024;
  // base64 grows a body by 4/3: the raw slice is cut so the stored text stays under the cap.
  const rawCap = Math.floor((MAX_BODY_BYTES * 3) / 4);
  const MAX_ENTRIES = Math.max(1, Math.floor(journalBytes / (MAX_BODY_BYTES + ENTRY_OVERHEAD_BYTES)));
  return {
    async record(input) {
      const raw = typeof input.rawBody === 'string' ? Buffer.from(input.rawBody, 'utf8') : input.rawBody;
      const truncated = raw.length > rawCap;
      const slice = truncated ? raw.subarray(0, rawCap) : raw;
      const text = slice.toString('utf8');
      const clean = Buffer.from(text, 'utf8').equals(slice);
      const entry: JournalEntry = {
        id: randomUUID(),
        at: now().toISOString(),
        channelId: input.channelId,
        vendor: input.vendor,
        kind: input.kind,
        reason: input.reason.slice(0, 1000),
        contentType: input.contentType ?? null,
        body: clean ? text : slice.toString('base64'),
        encoding: clean ? 'utf8' : 'base64',
        truncated,
      };
      await store
        .batch()
        .rpush(JOURNAL_KEY, JSON.stringify(entry))
        .ltrim(JOURNAL_KEY, -MAX_ENTRIES, -1)
        .exec();
    },
    async list(options) {
      // Newest first, read PAGE entries at a time from the end until `limit` match.
      const out: JournalEntry[] = [];
      for (let end = -1; out.length < options.limit && -end <= MAX_ENTRIES; end -= PAGE) {
        const raw = await store.lrange(JOURNAL_KEY, Math.max(end - PAGE + 1, -MAX_ENTRIES), end);
        for (let index = raw.length - 1; index >= 0 && out.length < options.limit; index--) {
          const entry = JSON.parse(raw[index]!) as JournalEntry;
          if (options.channelId && entry.channelId !== options.channelId) continue;
          if (options.kind && entry.kind !== options.kind) continue;
          out.push(entry);
        }
        if (raw.length < PAGE) break;
      }
      return out;
    },
  };
}
