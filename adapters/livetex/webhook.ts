import { z } from 'zod';
import type { Identifier } from '../../src/contacts/types.js';
import { identifierSchema } from '../../src/contacts/types.js';
import type { Decoded, IntakeRoute } from '../../src/contracts/adapter.js';
import type { Store } from '../../src/store/types.js';
import type { LivetexChannel } from './channel.js';
import {
  type DialogRecord,
  dialogIdentifier,
  dialogKeyOf,
  hashOf,
  identifiersOf,
  observationsOf,
  parseWebhook,
  type RatedBefore,
  ratedAfter,
} from './mapper.js';
import { webhookEnvelopeSchema } from './schemas.js';

/**
 * `POST /webhooks/livetex/:channelId/:token` (DESIGN §4): LiveTex's dialog webhook — closed,
 * assigned, rated. Bad JSON is the core's 400 (kept as rejected); a JSON payload we cannot use is
 * kept as "unhandled" and answered ok, because LiveTex cannot fix it by retrying.
 *
 * The one step that reads the store is `open`: which client a dialog belongs to is remembered,
 * so that a rating delivered alone after the close (it may carry only the dialog) lands on the
 * same contact. Everything else is pure.
 */

/** Long enough for a late rating. */
const DIALOG_MEMORY_TTL_MS = 30 * 24 * 3600 * 1000;
const rememberedSchema = z.array(identifierSchema);

/** What earlier events of a dialog said about its client, and its rating, per channel. */
export interface DialogMemory {
  recall(dialogKey: string): Promise<Identifier[]>;
  remember(dialogKey: string, identifiers: Identifier[]): Promise<void>;
  /** The dialog's rating as last recorded (mapper.ts RatedBefore), if any. */
  recallRating(dialogKey: string): Promise<RatedBefore | undefined>;
  rememberRating(dialogKey: string, rating: RatedBefore): Promise<void>;
}

const ratedSchema = z.object({ k: z.string(), at: z.string(), n: z.number().int().nonnegative() });

export function createDialogMemory(store: Store, channelId: string): DialogMemory {
  const keyOf = (dialogKey: string) => `livetex:${channelId}:dialog:${hashOf(dialogKey)}`;
  return {
    async recall(dialogKey) {
      const raw = await store.get(keyOf(dialogKey));
      if (raw === null) return [];
      try {
        const parsed = rememberedSchema.safeParse(JSON.parse(raw));
        return parsed.success ? parsed.data : [];
      } catch {
        return [];
      }
    },
    async remember(dialogKey, identifiers) {
      await store.set(keyOf(dialogKey), JSON.stringify(identifiers), { ttlMs: DIALOG_MEMORY_TTL_MS });
    },
    // A key of its own beside the identifiers (whose form versions before this read), read only
    // for an event that carries a rating.
    async recallRating(dialogKey) {
      const raw = await store.get(`${keyOf(dialogKey)}:rating`);
      if (raw === null) return undefined;
      try {
        const parsed = ratedSchema.safeParse(JSON.parse(raw));
        return parsed.success ? parsed.data : undefined;
      } catch {
        return undefined;
      }
    },
    async rememberRating(dialogKey, rating) {
      await store.set(`${keyOf(dialogKey)}:rating`, JSON.stringify(rating), { ttlMs: DIALOG_MEMORY_TTL_MS });
    },
  };
}

function unionOf(...lists: Identifier[][]): Identifier[] {
  const out: Identifier[] = [];
  const seen = new Set<string>();
  for (const identifier of lists.flat()) {
    const label = `${identifier.kind}\u0000${identifier.value}\u0000${identifier.channelId ?? ''}`;
    if (seen.has(label)) continue;
    seen.add(label);
    out.push(identifier);
  }
  return out;
}

/** The dialog as read, and who it is about (this event and earlier events of the dialog together). */
export type OpenedDialog =
  | { kind: 'unhandled'; reason: string }
  | {
      kind: 'dialog';
      record: DialogRecord;
      dialogKey: string;
      identifiers: Identifier[];
      /** The dialog's rating as last recorded, read when this event carries one. */
      ratedBefore?: RatedBefore;
      /** The dialog's rating once this event's is recorded (settle keeps it); none if it is no news. */
      ratedAfter?: RatedBefore;
    };

export function decodeDialog(
  request: { body: unknown; receivedAt: Date; opened: OpenedDialog },
  channel: Pick<LivetexChannel, 'id'>,
): Decoded {
  const { opened } = request;
  if (opened.kind === 'unhandled') return { kind: 'nothing', event: 'unknown', reason: opened.reason };
  const { record, dialogKey, identifiers, ratedBefore } = opened;
  const event = `dialog_${record.event}`;
  const observations = observationsOf({
    channelId: channel.id,
    record,
    dialogKey,
    identifiers,
    raw: request.body,
    receivedAt: request.receivedAt,
    ...(ratedBefore ? { ratedBefore } : {}),
  });
  if (observations.length === 0) {
    // The rating the dialog already has, stated again: a repeat (mapper.ts ratingEventKey).
    if (record.rating) return { kind: 'nothing', event, outcome: 'duplicate' };
    // e.g. a "rated" event whose rating we could not read: nothing to record but the payload.
    return { kind: 'nothing', event, reason: `${record.event} event without a readable rating` };
  }
  return { kind: 'observe', event, observations };
}

export const livetexWebhook: IntakeRoute<LivetexChannel, OpenedDialog> = {
  kind: 'webhook',
  // Not `ackAfterAppend`, although the answer is a constant: `open` reads and writes the dialog
  // memory before decode, and the deferred worker decodes an appended item again without it
  // (src/intake/deferred.ts), so every dialog webhook is recorded before its answer.
  body: 'json',
  doc: {
    summary: 'LiveTex dialog webhook (closed, assigned, rated)',
    body: webhookEnvelopeSchema,
    answer: z.object({ ok: z.literal(true) }),
  },
  async open(request, channel) {
    // Reading the dialog is pure (mapper.ts); it tells which dialog's memory to read.
    const parsed = parseWebhook(request.body, channel.agents);
    if (parsed.kind === 'unhandled') return parsed;
    const { record } = parsed;
    if (record.agentsLeftOut) channel.truncated('agent_count');
    const dialogKey = dialogKeyOf(record, request.rawBody);
    // Blocklisted values ("0", "anonymous", ...) identify nobody: leave them out before deciding
    // whether the payload names its client at all.
    // limits.identifiersPerKind before the per-value checks, and again on the dialog's memory:
    // 300 e-mails per event must not cost 300 normalisations, nor grow the memory event by event.
    const current = channel
      .capIdentifiers(identifiersOf(record.client, channel.id))
      .filter((identifier) => channel.normalizeIdentifier(identifier) !== null);
    // Every event of a dialog carries what earlier events of it said about the client.
    // The dialog's rating is read beside it (the two reads go out together) when this event
    // carries one: a close with a rating, a rated event.
    const [remembered, ratedBefore] = record.dialogId
      ? await Promise.all([
          channel.dialogs.recall(dialogKey),
          record.rating ? channel.dialogs.recallRating(dialogKey) : undefined,
        ])
      : [[], undefined];
    const identifiers = channel.capIdentifiers(unionOf(remembered, current));
    // So does a client named only by phones with an extension, which merge nothing (search
    // only): the dialog keeps its events on one contact, the phones make it findable.
    if (identifiers.every((identifier) => channel.searchOnly(identifier)))
      identifiers.push(dialogIdentifier(dialogKey, channel.id));
    if (record.dialogId && identifiers.length > remembered.length) {
      await channel.dialogs.remember(dialogKey, identifiers);
    }
    const after = record.dialogId ? ratedAfter(record, ratedBefore, request.receivedAt) : undefined;
    return {
      kind: 'dialog',
      record,
      dialogKey,
      identifiers,
      ...(ratedBefore ? { ratedBefore } : {}),
      ...(after ? { ratedAfter: after } : {}),
    };
  },
  decode: decodeDialog,
  render: () => ({ body: { ok: true } }),
  // Once the rating is recorded (a redelivery of it too, in case an earlier attempt stopped
  // before this), the dialog's rating is this one: stated again, it is no news.
  async settle(answer, result, channel) {
    const { opened, decoded } = result;
    if (opened.kind === 'dialog' && opened.ratedAfter && decoded.kind === 'observe')
      await channel.dialogs.rememberRating(opened.dialogKey, opened.ratedAfter);
    return answer;
  },
};
