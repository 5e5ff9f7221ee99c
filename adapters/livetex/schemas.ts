import { z } from 'zod';
import { boolLike, intLike } from '../../src/config/schema.js';
import { soft, softId, softString, softText, softTime, wireId, wireTime } from '../../src/intake/wire.js';

/**
 * Schemas for what LiveTex channels are configured with and what LiveTex's dialog webhook sends.
 * The lookup's wire format (claims, answer) lives in codec.ts, on purpose: it is ours, and the
 * one module to replace when LiveTex's real format is known.
 */

export const livetexSettingsSchema = z.object({
  /**
   * The attribute lookup answers within this budget; attribute sources that have not answered
   * by then are left out of the answer (LiveTex's own timeout is unknown, vendors/livetex.md §1.2).
   */
  lookupDeadlineMs: intLike(z.number().int().min(50).max(10_000)).default(1500),
  /**
   * With attribute sources configured, hold every lookup answer (found or not) until
   * lookupDeadlineMs after arrival, so the time to answer does not tell a known customer from an
   * unknown one (issue 10 item 2). `false` answers a found lookup as soon as its sources are in
   * (faster for agents; the timing then says "found").
   */
  evenTiming: boolLike.default(true),
  /** Tolerance for the caller's clock on `iat`/`exp`. Kept small: it widens the replay window. */
  maxClockSkewSeconds: intLike(z.number().int().min(0).max(120)).default(30),
});
export type LivetexSettings = z.infer<typeof livetexSettingsSchema>;

/*
 * The dialog webhook. Publicly documented (vendors/livetex.md §3): the top-level fields
 * `Conversation` (printed with a capital C; `conversation` expected in practice), `discourser`
 * and `employee[]`. The nested field names are NOT public, so every nested field below is a
 * tolerant guess: several spellings are accepted, each field is optional, and a field of an
 * unexpected type is dropped (`.catch(undefined)`) instead of failing the whole payload — the raw
 * payload is kept with every record, so a later remapping loses nothing.
 */

/** Ids arrive as strings or numbers depending on the vendor's serializer; longer than 512 is no id. */
export const idLikeSchema = wireId.pipe(z.string().max(512));
/** ISO 8601 text, or a Unix time in seconds or milliseconds (as a number or numeric text). */
export const timeLikeSchema = wireTime;

/** Visitor API vocabulary (sdk-android DialogRatingData): `{type, value: "0".."5", comment?}`. */
export const ratingSchema = z.union([
  z.looseObject({
    type: softString,
    value: soft(z.union([z.string(), z.number()])),
    comment: softString,
  }),
  z.number(),
  z.string(),
]);
export type RatingInput = z.infer<typeof ratingSchema>;

export const messageSchema = z.looseObject({
  id: softId(512),
  text: softString,
  message: softString,
  content: softString,
  createdAt: softTime,
  created_at: softTime,
  time: softTime,
  timestamp: softTime,
  author: soft(z.union([z.string(), z.looseObject({ type: softString, name: softString })])),
  creator: soft(z.union([z.string(), z.looseObject({ type: softString, name: softString })])),
  from: softString,
});
export type MessageInput = z.infer<typeof messageSchema>;

export const conversationSchema = z.looseObject({
  id: softId(512),
  conversationId: softId(512),
  conversation_id: softId(512),
  /** good.bi's `chat_id` = conversation id + the dialog's ordinal: one conversation holds several dialogs. */
  dialogId: softId(512),
  dialog_id: softId(512),
  chatId: softId(512),
  chat_id: softId(512),
  dialogNumber: softId(512),
  dialog_number: softId(512),
  createdAt: softTime,
  created_at: softTime,
  startedAt: softTime,
  started_at: softTime,
  closedAt: softTime,
  closed_at: softTime,
  endedAt: softTime,
  ended_at: softTime,
  finishedAt: softTime,
  topic: softString,
  subject: softString,
  rate: soft(ratingSchema),
  rating: soft(ratingSchema),
  comment: softString,
  messages: soft(z.array(messageSchema.catch({}))),
});
export type ConversationInput = z.infer<typeof conversationSchema>;

/** A phone comes as a number from some serialisers (79161234567): kept as text, as Jivo's is. */
const contactEntrySchema = z.looseObject({ type: softString, value: softText });

/**
 * The widget's attribute map, read by hand: z.record would silently drop a key named
 * "__proto__", which is an ordinary attribute name (README, Security). Values are kept as they
 * are (the mapper keeps strings, numbers and booleans) in a null-prototype object.
 */
export const attributeMapSchema = z.unknown().transform((input, ctx) => {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    ctx.addIssue({ code: 'custom', message: 'an object' });
    return z.NEVER;
  }
  const out: Record<string, unknown> = Object.create(null);
  for (const [key, value] of Object.entries(input as Record<string, unknown>)) out[key] = value;
  return out;
});

export const discourserSchema = z.looseObject({
  id: softId(512),
  name: softString,
  personId: softId(512),
  person_id: softId(512),
  customVisitorToken: softId(512),
  custom_visitor_token: softId(512),
  visitorToken: softId(512),
  visitor_token: softId(512),
  email: softText,
  phone: softText,
  contacts: soft(z.array(contactEntrySchema.catch({}))),
  /** The widget's attribute maps (`setConversationAttributes`) may carry the person id. */
  attributes: soft(attributeMapSchema),
});
export type DiscourserInput = z.infer<typeof discourserSchema>;

export const employeeSchema = z.looseObject({
  id: softId(512),
  name: softString,
  email: softString,
  login: softString,
  position: softString,
});
export type EmployeeInput = z.infer<typeof employeeSchema>;

export const webhookEnvelopeSchema = z.looseObject({
  /** Not documented: the article lists only the three objects. Accepted under common names. */
  event: softString,
  eventType: softString,
  event_type: softString,
  type: softString,
  Conversation: soft(conversationSchema),
  conversation: soft(conversationSchema),
  discourser: soft(discourserSchema),
  employee: soft(z.union([z.array(employeeSchema.catch({})), employeeSchema])),
  /** A rating delivered on its own may name its dialog at the top level. */
  dialogId: softId(512),
  conversationId: softId(512),
  rate: soft(ratingSchema),
  rating: soft(ratingSchema),
  comment: softString,
  messages: soft(z.array(messageSchema.catch({}))),
  time: softTime,
  timestamp: softTime,
});
export type WebhookEnvelope = z.infer<typeof webhookEnvelopeSchema>;
