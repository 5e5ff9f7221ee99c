import { z } from 'zod';
import type { Store } from '../../src/store/types.js';

/**
 * What the adapter keeps in the store, per channel (keys without the configured prefix).
 *
 * Per-customer conversation state is split in two hashes with one writer discipline each:
 * - `status`: advanced by whichever path (webhook or poll) observed the status first;
 * - `cursor`: the poller's message cursor, advanced by the poller only, after it fetched the
 *   messages up to it. A webhook must not move it: if an earlier message's webhook was lost, the
 *   poller still has to find that message.
 * Two hashes rather than one JSON value, so the two writers never overwrite each other's field.
 */
export function storeKeys(channelId: string) {
  const base = `chatvisor:${channelId}`;
  return {
    /** hash customerId -> last known conversation status. */
    status: `${base}:status`,
    /** hash customerId -> MessageCursor (JSON). */
    cursor: `${base}:cursor`,
    /**
     * hash customerId -> where the customer's finished conversations end (MessageCursor JSON):
     * the messages up to it were in a conversation already finished, so the next one's
     * transcript is the messages after it. Chatvisor keeps one message thread per customer and
     * names no conversation. Written by whichever path (webhook or poll) recorded a finish.
     */
    ended: `${base}:ended`,
    /** hash customerId -> the label set last pushed with tagUser (sorted JSON array). */
    pushedLabels: `${base}:labels`,
    /** set of agent e-mails the bridge manages (see sync.ts). */
    managedAgents: `${base}:agents:managed`,
    /** list of agent-sync reports (JSON), newest last, trimmed to keepReports. */
    syncReports: `${base}:agent-sync:reports`,
    /** digest of the unreadable agents the last sync journalled: the same ones are not journalled again. */
    syncUnreadable: `${base}:agent-sync:unreadable`,
    /** set of digests of the unreadable listed items the last poll run saw: not journalled again (poll.ts). */
    pollUnreadable: `${base}:poll:unreadable`,
    /**
     * Under the lock prefix (sync.ts syncLeaseKey): the agent sync's lease, `lease:<run id>` with
     * the store's own expiry, renewed by the run's heartbeat. Versions before the lease took it as
     * a store lock, so older and newer instances keep each other out.
     */
    syncLock: `${base}:agent-sync`,
    /**
     * The running (or last) agent sync's progress (JSON, AgentSyncProgress in sync.ts), kept a day;
     * a `running` one whose lease (syncLock) is gone reads interrupted.
     */
    syncProgress: `${base}:agent-sync:progress`,
    /**
     * hash agent e-mail -> what the running agent sync did with it (JSON, sync.ts RunResults),
     * written with its progress record: what an interrupted run's report is made of. Kept a day;
     * dropped by the run's last write and by a run that takes the channel over.
     */
    syncResults: `${base}:agent-sync:results`,
    /** hash customerId -> CachedProfile (JSON): the customer's identity as last read (profiles.ts). */
    profiles: `${base}:profiles`,
    /** hash customerId -> why its profile could not be read (JSON); retried on its next event or poll. */
    profilePending: `${base}:profiles:pending`,
    /** list of conversation poll reports (JSON), newest last, trimmed to keepReports. */
    pollReports: `${base}:poll:reports`,
    /** the first conversation poll's report (JSON): what it backfilled, kept for good. */
    pollFirstReport: `${base}:poll:first`,
    /** set once the first conversation poll has recorded its baseline. */
    pollBaseline: `${base}:poll:baseline`,
    /**
     * hash customerId -> the first poll's window ({windowMs, since}, JSON): customers the first
     * poll failed on, recorded (or replayed) by a later run as the first would have.
     */
    pollFirstRunLeft: `${base}:poll:baseline:left`,
    /**
     * hash customerId -> when a complete poll listing first did not list it (ISO): a customer the
     * store holds state for but Chatvisor no longer lists is forgotten after a while (poll.ts).
     */
    pollUnlisted: `${base}:poll:unlisted`,
    /**
     * Without a poll schedule (idle.ts): sorted set customerId -> when a webhook last named it
     * (ms), the index of customers to forget once idle for `idleCustomerTtl`. Each one's alive
     * mark (idleAliveKey) carries the expiry itself.
     */
    idleTouched: `${base}:idle:touched`,
    /** Set once the customers an older version stored were taken into `idleTouched` (idle.ts). */
    idleAdopted: `${base}:idle:adopted`,
  };
}

/**
 * A customer's alive mark (idle.ts): a string key set with a TTL of `idleCustomerTtl` by every
 * webhook naming the customer. Its absence is what lets the sweep forget the customer's state.
 */
export function idleAliveKey(channelId: string, customerId: string): string {
  return `chatvisor:${channelId}:idle:alive:${customerId}`;
}

/** The per-customer hashes: what is forgotten of a customer Chatvisor no longer knows (poll.ts). */
export function customerHashes(channelId: string): string[] {
  const keys = storeKeys(channelId);
  return [
    keys.status,
    keys.cursor,
    keys.ended,
    keys.pushedLabels,
    keys.profiles,
    keys.profilePending,
    keys.pollFirstRunLeft,
  ];
}

export const messageCursorSchema = z.object({
  /** The conversation's last message text the poller has caught up to. */
  text: z.string().nullable(),
  /**
   * createdAt of the newest message fetched, or when the conversation last changed (ISO). Null
   * only when nothing dated it (see coveredByCursor in poll.ts); older versions also stored null
   * for conversations the first run recorded without reading their messages.
   */
  at: z.string().nullable(),
  /**
   * The messages created at exactly `at` that the poller has fetched (messageIdentity). Times
   * have millisecond resolution and two messages can share one, so "created at or before the
   * cursor" does not say a message was seen. Absent on a cursor recorded without fetching the
   * messages (the first run's baseline) or stored before this field existed.
   */
  seen: z.array(z.string()).optional(),
});
export type MessageCursor = z.infer<typeof messageCursorSchema>;

export interface ConversationState {
  status: Map<string, string>;
  cursor: Map<string, MessageCursor>;
}

function parseCursor(raw: string | null | undefined): MessageCursor | null {
  if (!raw) return null;
  try {
    const parsed = messageCursorSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export async function readStatus(
  store: Store,
  channelId: string,
  customerId: string,
): Promise<string | null> {
  return store.hget(storeKeys(channelId).status, customerId);
}

export async function writeStatus(
  store: Store,
  channelId: string,
  customerId: string,
  status: string,
): Promise<void> {
  await store.hset(storeKeys(channelId).status, customerId, status);
}

export async function writeCursor(
  store: Store,
  channelId: string,
  customerId: string,
  cursor: MessageCursor,
): Promise<void> {
  await store.hset(storeKeys(channelId).cursor, customerId, JSON.stringify(cursor));
}

/** Where the customer's finished conversations end (storeKeys().ended); null before the first. */
export async function readEnded(
  store: Store,
  channelId: string,
  customerId: string,
): Promise<MessageCursor | null> {
  return parseCursor(await store.hget(storeKeys(channelId).ended, customerId));
}

export async function writeEnded(
  store: Store,
  channelId: string,
  customerId: string,
  mark: MessageCursor,
): Promise<void> {
  await store.hset(storeKeys(channelId).ended, customerId, JSON.stringify(mark));
}

/**
 * The status and cursor of `customerIds` (a poll page's), added to `into`. These hashes hold one
 * field per customer the channel ever had: a run reads its listed customers' fields (HMGET), not
 * the whole hashes, so what a run reads grows with the listing, not with the channel's history.
 */
export async function readConversationState(
  store: Store,
  channelId: string,
  customerIds: readonly string[],
  into: ConversationState,
): Promise<void> {
  if (customerIds.length === 0) return;
  const keys = storeKeys(channelId);
  const [status, cursors] = await Promise.all([
    store.hmget(keys.status, customerIds),
    store.hmget(keys.cursor, customerIds),
  ]);
  customerIds.forEach((customerId, index) => {
    const held = status[index];
    if (held != null) into.status.set(customerId, held);
    const cursor = parseCursor(cursors[index]);
    if (cursor) into.cursor.set(customerId, cursor);
  });
}

const firstRunWindowSchema = z.object({ windowMs: z.number(), since: z.string() });

/**
 * Which of `customerIds` the first poll failed on, with its window (storeKeys().pollFirstRunLeft),
 * added to `into`: those customers' fields only, as readConversationState.
 */
export async function readFirstRunLeft(
  store: Store,
  channelId: string,
  customerIds: readonly string[],
  into: Map<string, z.infer<typeof firstRunWindowSchema>>,
): Promise<void> {
  if (customerIds.length === 0) return;
  const held = await store.hmget(storeKeys(channelId).pollFirstRunLeft, customerIds);
  for (const [index, customerId] of customerIds.entries()) {
    const raw = held[index];
    if (raw == null) continue;
    try {
      const parsed = firstRunWindowSchema.safeParse(JSON.parse(raw));
      if (parsed.success) into.set(customerId, parsed.data);
    } catch {
      // Unreadable: the customer is polled as any other.
    }
  }
}

/**
 * Keep a run's report (agent sync, conversation poll): newest last, at most `keep`. Never throws:
 * the report is still returned and logged by the run, so a store that cannot keep it costs only
 * the history an operator reads back.
 */
export async function keepReport(
  store: Store,
  key: string,
  keep: number,
  report: unknown,
  onError: (error: unknown) => void,
): Promise<void> {
  try {
    await store.batch().rpush(key, JSON.stringify(report)).ltrim(key, -keep, -1).exec();
  } catch (error) {
    onError(error);
  }
}
