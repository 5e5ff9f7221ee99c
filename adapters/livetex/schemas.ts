import { z } from 'zod';
import { intLike } from '../../src/config/schema.js';
import { soft, wireId, wireTime } from '../../src/intake/wire.js';

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
  evenTiming: z.boolean().default(true),
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
    type: soft(z.string()),
    value: soft(z.union([z.string(), z.number()])),
    comment: soft(z.string()),
  }),
  z.number(),
  z.string(),
]);
export type RatingInput = z.infer<typeof ratingSchema>;

export const messageSchema = z.looseObject({
  id: soft(idLikeSchema),
  text: soft(z.string()),
  message: soft(z.string()),
  content: soft(z.string()),
  createdAt: soft(timeLikeSchema),
  created_at: soft(timeLikeSchema),
  time: soft(timeLikeSchema),
  timestamp: soft(timeLikeSchema),
  author: soft(z.union([z.string(), z.looseObject({ type: soft(z.string()), name: soft(z.string()) })])),
  creator: soft(z.union([z.string(), z.looseObject({ type: soft(z.string()), name: soft(z.string()) })])),
  from: soft(z.string()),
});
export type MessageInput = z.infer<typeof messageSchema>;

export const conversationSchema = z.looseObject({
  id: soft(idLikeSchema),
  conversationId: soft(idLikeSchema),
  conversation_id: soft(idLikeSchema),
  /** good.bi's `chat_id` = conversation id + the dialog's ordinal: one conversation holds several dialogs. */
  dialogId: soft(idLikeSchema),
  dialog_id: soft(idLikeSchema),
  chatId: soft(idLikeSchema),
  chat_id: soft(idLikeSchema),
  dialogNumber: soft(idLikeSchema),
  dialog_number: soft(idLikeSchema),
  createdAt: soft(timeLikeSchema),
  created_at: soft(timeLikeSchema),
  startedAt: soft(timeLikeSchema),
  started_at: soft(timeLikeSchema),
  closedAt: soft(timeLikeSchema),
  closed_at: soft(timeLikeSchema),
  endedAt: soft(timeLikeSchema),
  ended_at: soft(timeLikeSchema),
  finishedAt: soft(timeLikeSchema),
  topic: soft(z.string()),
  subject: soft(z.string()),
  rate: soft(ratingSchema),
  rating: soft(ratingSchema),
  comment: soft(z.string()),
  messages: soft(z.array(messageSchema.catch({}))),
});
export type ConversationInput = z.infer<typeof conversationSchema>;

const contactEntrySchema = z.looseObject({ type: soft(z.string()), value: soft(z.string()) });

export const discourserSchema = z.looseObject({
  id: soft(idLikeSchema),
  name: soft(z.string()),
  personId: soft(idLikeSchema),
  person_id: soft(idLikeSchema),
  customVisitorToken: soft(idLikeSchema),
  custom_visitor_token: soft(idLikeSchema),
  visitorToken: soft(idLikeSchema),
  visitor_token: soft(idLikeSchema),
  email: soft(z.string()),
  phone: soft(z.string()),
  contacts: soft(z.array(contactEntrySchema.catch({}))),
  /** The widget's attribute maps (`setConversationAttributes`) may carry the person id. */
  attributes: soft(z.record(z.string(), z.unknown())),
});
export type DiscourserInput = z.infer<typeof discourserSchema>;

export const employeeSchema = z.looseObject({
  id: soft(idLikeSchema),
  name: soft(z.string()),
  email: soft(z.string()),
  login: soft(z.string()),
  position: soft(z.string()),
});
export type EmployeeInput = z.infer<typeof employeeSchema>;

export const webhookEnvelopeSchema = z.looseObject({
  /** Not documented: the article lists only the three objects. Accepted under common names. */
  event: soft(z.string()),
  eventType: soft(z.string()),
  event_type: soft(z.string()),
  type: soft(z.string()),
  Conversation: soft(conversationSchema),
  conversation: soft(conversationSchema),
  discourser: soft(discourserSchema),
  employee: soft(z.union([z.array(employeeSchema.catch({})), employeeSchema])),
  /** A rating delivered on its own may name its dialog at the top level. */
  dialogId: soft(idLikeSchema),
  conversationId: soft(idLikeSchema),
  rate: soft(ratingSchema),
  rating: soft(ratingSchema),
  comment: soft(z.string()),
  messages: soft(z.array(messageSchema.catch({}))),
  time: soft(timeLikeSchema),
  timestamp: soft(timeLikeSchema),
});
export type WebhookEnvelope = z.infer<typeof webhookEnvelopeSchema>;
