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
const tolerant = soft;

/** Ids arrive as strings or numbers depending on the vendor's serializer; longer than 512 is no id. */
export const idLikeSchema = wireId.pipe(z.string().max(512));
/** ISO 8601 text, or a Unix time in seconds or milliseconds (as a number or numeric text). */
export const timeLikeSchema = wireTime;

/** Visitor API vocabulary (sdk-android DialogRatingData): `{type, value: "0".."5", comment?}`. */
export const ratingSchema = z.union([
  z.looseObject({
    type: tolerant(z.string()),
    value: tolerant(z.union([z.string(), z.number()])),
    comment: tolerant(z.string()),
  }),
  z.number(),
  z.string(),
]);
export type RatingInput = z.infer<typeof ratingSchema>;

export const messageSchema = z.looseObject({
  id: tolerant(idLikeSchema),
  text: tolerant(z.string()),
  message: tolerant(z.string()),
  content: tolerant(z.string()),
  createdAt: tolerant(timeLikeSchema),
  created_at: tolerant(timeLikeSchema),
  time: tolerant(timeLikeSchema),
  timestamp: tolerant(timeLikeSchema),
  author: tolerant(
    z.union([z.string(), z.looseObject({ type: tolerant(z.string()), name: tolerant(z.string()) })]),
  ),
  creator: tolerant(
    z.union([z.string(), z.looseObject({ type: tolerant(z.string()), name: tolerant(z.string()) })]),
  ),
  from: tolerant(z.string()),
});
export type MessageInput = z.infer<typeof messageSchema>;

export const conversationSchema = z.looseObject({
  id: tolerant(idLikeSchema),
  conversationId: tolerant(idLikeSchema),
  conversation_id: tolerant(idLikeSchema),
  /** good.bi's `chat_id` = conversation id + the dialog's ordinal: one conversation holds several dialogs. */
  dialogId: tolerant(idLikeSchema),
  dialog_id: tolerant(idLikeSchema),
  chatId: tolerant(idLikeSchema),
  chat_id: tolerant(idLikeSchema),
  dialogNumber: tolerant(idLikeSchema),
  dialog_number: tolerant(idLikeSchema),
  createdAt: tolerant(timeLikeSchema),
  created_at: tolerant(timeLikeSchema),
  startedAt: tolerant(timeLikeSchema),
  started_at: tolerant(timeLikeSchema),
  closedAt: tolerant(timeLikeSchema),
  closed_at: tolerant(timeLikeSchema),
  endedAt: tolerant(timeLikeSchema),
  ended_at: tolerant(timeLikeSchema),
  finishedAt: tolerant(timeLikeSchema),
  topic: tolerant(z.string()),
  subject: tolerant(z.string()),
  rate: tolerant(ratingSchema),
  rating: tolerant(ratingSchema),
  comment: tolerant(z.string()),
  messages: tolerant(z.array(messageSchema.catch({}))),
});
export type ConversationInput = z.infer<typeof conversationSchema>;

const contactEntrySchema = z.looseObject({ type: tolerant(z.string()), value: tolerant(z.string()) });

export const discourserSchema = z.looseObject({
  id: tolerant(idLikeSchema),
  name: tolerant(z.string()),
  personId: tolerant(idLikeSchema),
  person_id: tolerant(idLikeSchema),
  customVisitorToken: tolerant(idLikeSchema),
  custom_visitor_token: tolerant(idLikeSchema),
  visitorToken: tolerant(idLikeSchema),
  visitor_token: tolerant(idLikeSchema),
  email: tolerant(z.string()),
  phone: tolerant(z.string()),
  contacts: tolerant(z.array(contactEntrySchema.catch({}))),
  /** The widget's attribute maps (`setConversationAttributes`) may carry the person id. */
  attributes: tolerant(z.record(z.string(), z.unknown())),
});
export type DiscourserInput = z.infer<typeof discourserSchema>;

export const employeeSchema = z.looseObject({
  id: tolerant(idLikeSchema),
  name: tolerant(z.string()),
  email: tolerant(z.string()),
  login: tolerant(z.string()),
  position: tolerant(z.string()),
});
export type EmployeeInput = z.infer<typeof employeeSchema>;

export const webhookEnvelopeSchema = z.looseObject({
  /** Not documented: the article lists only the three objects. Accepted under common names. */
  event: tolerant(z.string()),
  eventType: tolerant(z.string()),
  event_type: tolerant(z.string()),
  type: tolerant(z.string()),
  Conversation: tolerant(conversationSchema),
  conversation: tolerant(conversationSchema),
  discourser: tolerant(discourserSchema),
  employee: tolerant(z.union([z.array(employeeSchema.catch({})), employeeSchema])),
  /** A rating delivered on its own may name its dialog at the top level. */
  dialogId: tolerant(idLikeSchema),
  conversationId: tolerant(idLikeSchema),
  rate: tolerant(ratingSchema),
  rating: tolerant(ratingSchema),
  comment: tolerant(z.string()),
  messages: tolerant(z.array(messageSchema.catch({}))),
  time: tolerant(timeLikeSchema),
  timestamp: tolerant(timeLikeSchema),
});
export type WebhookEnvelope = z.infer<typeof webhookEnvelopeSchema>;
