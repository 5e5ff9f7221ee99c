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
/** The journal is a bounded ring: a flood of garbage must not fill the store. */
const MAX_ENTRIES = 10_000;
const MAX_BODY_BYTES = 256 * 1024;

export function createPayloadJournal(store: Store, now: () => Date = () => new Date()): PayloadJournal {
  return {
    async record(input) {
      const raw = typeof input.rawBody === 'string' ? Buffer.from(input.rawBody, 'utf8') : input.rawBody;
      const truncated = raw.length > MAX_BODY_BYTES;
      const slice = truncated ? raw.subarray(0, MAX_BODY_BYTES) : raw;
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
      // Newest first; filtering happens after reading a bounded window of the ring.
      const raw = await store.lrange(JOURNAL_KEY, -MAX_ENTRIES, -1);
      const out: JournalEntry[] = [];
      for (let index = raw.length - 1; index >= 0 && out.length < options.limit; index--) {
        const entry = JSON.parse(raw[index]!) as JournalEntry;
        if (options.channelId && entry.channelId !== options.channelId) continue;
        if (options.kind && entry.kind !== options.kind) continue;
        out.push(entry);
      }
      return out;
    },
  };
}
