import { validateDetailed } from 'node-cron';
import { z } from 'zod';
import { boolLike, durationSchema, intLike } from '../../src/config/schema.js';
import { exactNumber, isoTime, wireId } from '../../src/intake/wire.js';
import { WIRE } from './operations.js';

/**
 * zod at every Chatvisor boundary. Our own inputs (channel settings, admin bodies) are strict;
 * what Chatvisor sends is tolerant and minimal: unknown fields are kept, optional ones are
 * `.nullish()`, ids may be strings or numbers (§3), and the wire names come from operations.ts.
 */

export const DEFAULT_API_URL = 'https://api.chatvisor.com/rest/v1';

const CRON_FIELDS: Record<string, string> = {
  second: 'second',
  minute: 'minute',
  hour: 'hour',
  dayOfMonth: 'day of month',
  month: 'month',
  dayOfWeek: 'day of week',
};
const CRON_FORM =
  'a node-cron expression: "minute hour day-of-month month day-of-week" (e.g. "*/15 * * * *"), or 6 fields with seconds first; "" for off';

/**
 * Why a schedule is not one node-cron can run, or null when it is. node-cron's own validate() only
 * says no; the reason (which field, or how many fields) is what lets an operator fix it.
 */
export function cronProblem(value: string): string | null {
  let result: ReturnType<typeof validateDetailed>;
  try {
    result = validateDetailed(value);
  } catch (error) {
    return `"${value}" is not ${CRON_FORM} (${(error as Error).message})`;
  }
  if (result.valid) return null;
  const reasons = result.errors.map((problem) => {
    const field = CRON_FIELDS[problem.field];
    if (field === undefined) return problem.message;
    if (/impossible/.test(problem.message))
      return `day of month "${problem.value}" never comes in the months given`;
    return `"${problem.value}" is not a valid ${field}`;
  });
  return `"${value}": ${reasons.join('; ')}. Expected ${CRON_FORM}`;
}

/** A node-cron expression (5 fields, or 6 with seconds); "" (or absent) turns the job off. */
const cronSchema = z
  .string()
  .trim()
  .superRefine((value, context) => {
    const problem = value === '' ? null : cronProblem(value);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  });

/** `{name}` in a label template. */
export const LABEL_PLACEHOLDER = /\{([^{}]*)\}/g;
const KNOWN_PLACEHOLDER = /^(person|email|phone|name|contactId|attributes\.[A-Za-z0-9_.-]+)$/;
const labelTemplateSchema = z
  .string()
  .min(1)
  .refine(
    (template) =>
      [...template.matchAll(LABEL_PLACEHOLDER)].every((match) => KNOWN_PLACEHOLDER.test(match[1] ?? '')),
    'placeholders are {person}, {email}, {phone}, {name}, {contactId} and {attributes.KEY}',
  );

export const channelSettingsSchema = z.object({
  apiUrl: z.url({ protocol: /^https?$/ }).default(DEFAULT_API_URL),
  apiToken: z.string().min(1, 'the Chatvisor API token (Settings > API > Keys)'),
  schedules: z
    .strictObject({
      agentSync: cronSchema.optional(),
      conversationPoll: cronSchema.optional(),
    })
    .default({}),
  onRemovedAgent: z.enum(['deactivate', 'delete', 'ignore']).default('deactivate'),
  /** Templates such as "{person}" or "segment:{attributes.segment}" (see labels.ts). */
  labels: z.array(labelTemplateSchema).default([]),
  rateLimit: z
    .strictObject({
      perSecond: intLike(z.number().int().positive().max(1000)).default(10),
      concurrency: intLike(z.number().int().positive().max(100)).default(5),
      /** Requests that may wait for a turn; more are refused at once (as rate limited), not queued. */
      maxWaiting: intLike(z.number().int().positive().max(100_000)).default(1000),
    })
    .default({ perSecond: 10, concurrency: 5, maxWaiting: 1000 }),
  /**
   * Profile reads and label pushes started after answering webhooks, at most this many at once
   * per channel. A webhook beyond it marks its customer pending (identified on the customer's
   * next event or poll) instead of queueing: a flood of new customers holds bounded memory.
   */
  backgroundTasks: intLike(z.number().int().positive().max(10_000)).default(200),
  timeoutMs: intLike(z.number().int().positive().max(120_000)).default(10_000),
  /** Retries after the first attempt, for retryable failures. */
  maxRetries: intLike(z.number().int().min(0).max(10)).default(3),
  /** A Retry-After longer than this is not waited for: the call fails as rate limited. */
  maxRetryAfterMs: intLike(z.number().int().nonnegative()).default(30_000),
  pageSize: intLike(z.number().int().min(1).max(100)).default(50),
  /** Offer a "chat with this customer" link (a public agent chat URL) in other channels' answers. */
  offerAgentChatUrl: boolLike.default(false),
  /** How many agent-sync reports are kept per channel. */
  keepReports: intLike(z.number().int().min(1).max(1000)).default(20),
  /**
   * The first conversation poll replays conversations that changed within this window (e.g.
   * "24h", "3d"; "0s" = none, only record where things stand). Later polls are incremental.
   */
  backfillWindow: durationSchema.default(24 * 3_600_000),
  /**
   * A cached customer profile older than this is read again on the customer's next event (a new
   * conversation always reads it again); e.g. "1h", "0s" = read on every event.
   */
  profileRefresh: durationSchema.default(3_600_000),
  /**
   * Without a conversation poll schedule: a customer no webhook has named for this long is
   * forgotten (its per-customer state, idle.ts); at least identity.dedupeTtlSeconds (checked in
   * index.ts). "0s" = never (the state of every customer id ever named stays). Ignored with a
   * poll schedule: the poller forgets customers Chatvisor no longer lists.
   */
  idleCustomerTtl: durationSchema.default(30 * 86_400_000),
});
export type ChatvisorSettings = z.output<typeof channelSettingsSchema>;

// ---- What Chatvisor sends ------------------------------------------------------------------

/**
 * Ids are strings in webhooks but numbers in some examples (§3): normalise to a string. Longer
 * than 512 is no id (an identifier holds at most that; the body is kept as unhandled).
 */
const idLike = wireId.pipe(z.string().max(512));
/**
 * Text, or a number as text when JSON.parse read it exactly (exactNumber): an externalId is a
 * person id, a message id dedupes messages, and a rounded 64-bit number would be another one's.
 * Anything else is null, not a failure of the whole customer or message.
 */
const optionalText = z
  .union([z.string(), z.number()])
  .nullish()
  .catch(null)
  .transform((value) => (typeof value === 'string' ? value : exactNumber(value) ? String(value) : null));

const P = WIRE.page.fields;
/** `{page, results}` [S1]; items are parsed one by one so one odd item does not lose the page. */
export const pageSchema = z.looseObject({
  [P.page]: z.number().nullish(),
  [P.results]: z.array(z.unknown()),
});

const isoOrNull = (value: string | number | null | undefined) => isoTime(value) ?? null;

/**
 * An optional field of a webhook body: a value of another type is dropped (null), not the whole
 * conversation or message (vendors/chatvisor.md: parse leniently). A `url` of 42 or a rich
 * `lastMessage` sent the event to the journal as unhandled, and it never reached the timeline.
 */
const optionalString = z.string().nullish().catch(null);
/** ISO text or a Unix time (as the other vendors' times are read); anything else is no time. */
const optionalTime = z.union([z.string(), z.number()]).nullish().catch(null);

/** When a listed conversation or customer last changed (assumed field, see operations.ts). */
const UPDATED_AT = WIRE.updatedAt.fields.updatedAt;

const C = WIRE.conversation.fields;
const lastMessageSchema = z
  .union([
    z.string(),
    z.looseObject({
      [C.lastMessageText]: z.string().nullish(),
      [C.lastMessageTextMisspelt]: z.string().nullish(),
    }),
  ])
  .nullish()
  .transform((value) => {
    if (value === null || value === undefined) return null;
    if (typeof value === 'string') return value;
    return value[C.lastMessageText] ?? value[C.lastMessageTextMisspelt] ?? null;
  });

export const conversationSchema = z
  .looseObject({
    [C.customerId]: idLike,
    [C.status]: z.string().min(1),
    [C.lastMessage]: lastMessageSchema.catch(null),
    [C.url]: optionalString,
    [UPDATED_AT]: optionalTime,
  })
  .transform((raw) => ({
    customerId: raw[C.customerId],
    status: raw[C.status].toUpperCase(),
    lastMessageText: raw[C.lastMessage],
    url: raw[C.url] ?? null,
    updatedAt: isoOrNull(raw[UPDATED_AT]),
  }));
export type Conversation = z.output<typeof conversationSchema>;

const CU = WIRE.customer.fields;
export const customerSchema = z
  .looseObject({
    [CU.customerId]: idLike,
    [CU.externalId]: optionalText,
    [CU.email]: z.string().nullish(),
    [CU.firstname]: z.string().nullish(),
    [CU.lastname]: z.string().nullish(),
    [CU.labels]: z.array(z.string()).nullish(),
    [CU.status]: z.string().nullish(),
    [CU.assignedUser]: z.string().nullish(),
    [CU.lastMessage]: lastMessageSchema,
    [UPDATED_AT]: z.string().nullish(),
  })
  .transform((raw) => ({
    customerId: raw[CU.customerId],
    externalId: raw[CU.externalId],
    email: raw[CU.email] ?? null,
    firstname: raw[CU.firstname] ?? null,
    lastname: raw[CU.lastname] ?? null,
    labels: raw[CU.labels] ?? [],
    status: raw[CU.status]?.toUpperCase() ?? null,
    assignedUser: raw[CU.assignedUser] ?? null,
    lastMessageText: raw[CU.lastMessage],
    updatedAt: isoOrNull(raw[UPDATED_AT]),
  }));
export type Customer = z.output<typeof customerSchema>;

/** What identifies a customer (DESIGN §7): the fields the bridge caches from the profile. */
export const customerIdentitySchema = z.object({
  customerId: z.string(),
  externalId: z.string().nullable(),
  email: z.string().nullable(),
  firstname: z.string().nullable(),
  lastname: z.string().nullable(),
});
export type CustomerIdentity = z.output<typeof customerIdentitySchema>;

const M = WIRE.message.fields;
export const messageSchema = z
  .looseObject({
    [M.id]: optionalText,
    [M.customerId]: idLike,
    [M.text]: optionalString,
    [M.sender]: optionalString,
    [M.agentEmail]: optionalString,
    [M.createdAt]: optionalTime,
  })
  // A Customer body (the old "new subscriber" webhook) also has an `id`: only a text or a sender
  // makes it a message.
  .refine(
    (raw) => typeof raw[M.text] === 'string' || typeof raw[M.sender] === 'string',
    'a message has a text or a sender',
  )
  .transform((raw) => ({
    id: raw[M.id],
    customerId: raw[M.customerId],
    text: raw[M.text] ?? null,
    sender: raw[M.sender]?.toUpperCase() ?? null,
    agentEmail: raw[M.agentEmail] ?? null,
    createdAt: isoOrNull(raw[M.createdAt]),
  }));
export type Message = z.output<typeof messageSchema>;

const A = WIRE.agent.fields;
export const agentSchema = z
  .looseObject({
    [A.email]: z.string().min(1),
    [A.displayName]: z.string().nullish(),
    [A.role]: z.string().nullish(),
    [A.teams]: z.array(z.string()).nullish(),
    [A.active]: z.boolean().nullish(),
  })
  .transform((raw) => ({
    email: raw[A.email].toLowerCase(),
    displayName: raw[A.displayName] ?? null,
    role: raw[A.role] ?? null,
    teams: raw[A.teams] ?? [],
    // An agent without the flag is taken to be active: deactivation is the only thing that sets it.
    active: raw[A.active] ?? true,
  }));
export type Agent = z.output<typeof agentSchema>;

/** What the bridge writes for an agent (the fields it manages). */
export interface AgentWrite {
  email: string;
  displayName: string;
  role?: string | undefined;
  teams: string[];
  active: boolean;
}

const V = WIRE.visibility.fields;
/** isVisible may answer a bare boolean or `{visible}` (§9.2). */
export const visibilitySchema = z
  .union([z.boolean(), z.looseObject({ [V.visible]: z.boolean() })])
  .transform((value) => (typeof value === 'boolean' ? value : value[V.visible]));

const U = WIRE.publicUrl.fields;
/**
 * A link handed to admins and agents: http(s) only (DESIGN §11). z.url() alone takes any scheme,
 * so a `javascript:` or `data:` answer would have been passed on as the agent's chat link.
 */
const chatLinkSchema = z.url({ protocol: /^https?$/, error: 'an http:// or https:// URL' });
/** The public agent chat URL may come as `{url}` or a plain (JSON) string (§9.2). */
export const publicUrlSchema = z
  .union([chatLinkSchema, z.looseObject({ [U.url]: chatLinkSchema })])
  .transform((value) => (typeof value === 'string' ? value : value[U.url]));

// ---- What our admin callers send -----------------------------------------------------------

export const agentChatUrlBodySchema = z.strictObject({
  customerId: z.union([z.string().trim().min(1).max(256), z.number().int().nonnegative()]).transform(String),
  agentEmail: z.email().optional(),
});
export const agentChatUrlResponseSchema = z.object({ url: chatLinkSchema });

export const agentSyncQuerySchema = z.strictObject({
  dryRun: z
    .enum(['true', 'false', '1', '0'])
    .optional()
    .transform((value) => value === 'true' || value === '1'),
});

export const visibilityResponseSchema = z.object({ visible: z.boolean(), checkedAt: z.string() });
