import type { Claim } from '../store/types.js';
import type {
  Conflict,
  ConflictState,
  Contact,
  Identifier,
  Observation,
  ObserveResult,
  TimelineEntry,
} from './types.js';

/**
 * The contact model's one entry point (DESIGN §7). Adapters feed observations; the admin API
 * reads contacts and timelines. Implemented by src/contacts/engine.ts on top of the Store.
 */
export interface TimelinePage {
  entries: TimelineEntry[];
  /** Pass as `before` to get the next (older) page; null on the last page. */
  nextCursor: string | null;
  /**
   * Only on a filtered page: the page read as many non-matching entries as one page may
   * (TIMELINE_SCAN_ENTRIES / TIMELINE_SCAN_BYTES) before it had `limit` matching ones, so it may
   * hold fewer, even none, while `nextCursor` reads on. Absent otherwise.
   */
  partial?: true;
}

/** Identity conflicts, newest first, each with its state now (GET /api/v1/identity/conflicts). */
export interface ConflictsPage {
  conflicts: Conflict[];
  /** Pass as `before` to get the next (older) page; null on the last page. */
  nextCursor: string | null;
  /**
   * Only on a page filtered by state: it looked at as many conflicts as one page may
   * (CONFLICTS_SCAN) before it had `limit` of that state, so it may hold fewer, even none, while
   * `nextCursor` reads on. Absent otherwise.
   */
  partial?: true;
}

/** Entries of one channel and/or of one type; both given: entries that are both. */
export interface TimelineFilter {
  channelId?: string;
  type?: string;
}

export interface TimelineOptions {
  limit: number;
  before?: string;
  /** Non-matching entries are skipped before they count toward `limit`; the cursor is the same. */
  filter?: TimelineFilter;
}

export interface ContactQuery {
  email?: string;
  phone?: string;
  identity?: Identifier;
  /** Every word of it in one of the contact's names (case and accents ignored). */
  name?: string;
  /**
   * Load at most this many contacts (default FIND_LIMIT). A search-only e-mail or phone
   * (identity.mergeOnVisitorTyped) can be typed by any number of visitors: ask one more than you
   * show to know whether the list was cut.
   */
  limit?: number;
}

/** Contacts one find loads when the query does not say. */
export const FIND_LIMIT = 100;

/** Name either a record merged into the contact, or one identifier to split off into its own contact. */
export interface UnmergeRequest {
  recordId?: string;
  identifier?: Identifier;
}

/** One contact of getMany. */
export interface ManyContact {
  contact: Contact;
  mergedFrom?: string;
  recordName: string | null;
}

/**
 * claimAndFind: nothing is read when the claim was taken before (`claimed: false`), nor when its
 * `onlyIf` did not hold (`claimed: false` with `instead`: what the hash field held, null when
 * nothing; the claim is left unspent).
 */
export type ClaimedFind =
  | { claimed: false; instead?: string | null }
  | { claimed: true; contact: Contact | null };

export interface ContactService {
  /**
   * Resolve the observation's identifiers to one contact (creating or merging as needed),
   * record what it says, append its timeline entries and stage its outbound events, atomically.
   * A repeated idempotency key changes nothing and returns the contact as it is.
   */
  observe(observation: Observation): Promise<ObserveResult>;
  /** A contact by id; an id merged away resolves to the surviving contact, with `mergedFrom`. */
  get(id: string): Promise<{ contact: Contact; mergedFrom?: string } | null>;
  /**
   * Several contacts by id, read together (a page that names many: the console's conflicts), as
   * get() answers each, keyed by the id asked for; ids without a contact are absent. `recordName`
   * is the newest name the id's own record holds: for an id merged away, what that side was
   * called (the contact's `name` is the whole group's newest).
   */
  getMany(ids: readonly string[]): Promise<Map<string, ManyContact>>;
  /**
   * The id of the contact a record is part of now: the record's own id, or that of the contact
   * it was merged into since (an unmerge gives it back its own, or the root of the group it left
   * with). One store read, nothing decoded; an id that names no record comes back as it is.
   */
  currentId(id: string): Promise<string>;
  find(query: ContactQuery): Promise<Contact[]>;
  /**
   * Contacts with every word of `name` in one of their names, at most `limit`. `more`: the search
   * stopped reading before it had `limit` contacts (a common name, most of whose records belong
   * to few contacts or are gone): more may match, the search should be refined.
   */
  findByName(name: string, options: { limit: number }): Promise<{ contacts: Contact[]; more: boolean }>;
  /** The contact an identifier belongs to (normalised first: e-mail case, phone E.164). */
  /**
   * `evenWork`: a miss reads the same keys a hit on a one-record contact reads (a decoy group
   * that does not exist), so a lookup answered to strangers does not tell found from not found
   * by the work done (issue 10 item 2, the LiveTex lookup).
   */
  findByIdentifier(identifier: Identifier, options?: { evenWork?: boolean }): Promise<Contact | null>;
  /**
   * Claim `claim.key` (SET NX with a time to live) and, only when the claim is fresh, find the
   * contact an identifier belongs to, as findByIdentifier does — in one store operation
   * (Store.readGroups) for kinds found through the identifier index alone, which person ids are
   * by default. For one-time tokens such as the LiveTex lookup's jti: a replay reads nothing.
   * `claim.onlyIf` (Store's Claim): claimed only while that hash field still holds the value
   * (the LiveTex key record the token was opened with), checked in the same step.
   */
  claimAndFind(identifier: Identifier, options: { claim: Claim; evenWork?: boolean }): Promise<ClaimedFind>;
  /** Newest first, across every channel and every record merged into the contact. */
  timeline(id: string, options: TimelineOptions): Promise<TimelinePage>;
  /**
   * The same page as the UTF-8 bytes of `JSON.stringify(page)` (what the admin API answers),
   * made from the stored entries' own JSON without parsing them again.
   */
  timelineJson(id: string, options: TimelineOptions): Promise<Buffer>;
  unmerge(id: string, request: UnmergeRequest): Promise<{ contact: Contact; split: Contact }>;
  /**
   * Merge two contacts because staff say they are one (an identity conflict decided by hand):
   * the same join an observation naming both makes, recorded, evented and undone (unmerge) like
   * it. `by` says who decided (`api`, `console`, `cli`): it is the merge's `via` value.
   */
  mergeContacts(id: string, otherId: string, by: string): Promise<{ contact: Contact }>;
  /**
   * Identity conflicts: merges the guard rails refused (size cap, earlier unmerge) and identifiers
   * the re-index found held by another contact (reindex.ts), newest first, a page at a time:
   * `before` is the nextCursor of the previous page; `state` lists only conflicts in that state now.
   */
  conflictsPage(options: {
    limit: number;
    before?: string | undefined;
    state?: ConflictState | undefined;
  }): Promise<ConflictsPage>;
  /** Normalise an identifier as the engine would (null when blocklisted or invalid). */
  normalizeIdentifier(identifier: Identifier): Identifier | null;
}
