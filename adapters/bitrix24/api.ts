import { z } from 'zod';

/**
 * Bitrix24 REST facts the connector relies on, in one place so they can be corrected
 * (source: ../shared/vendors/bitrix24.md; labels: [OFF] official docs, [SDK] official SDK,
 * [3P] third-party, [INF] inferred — verify on a real portal).
 */

/** Incoming webhook: https://<portal>/rest/<userId>/<code>/<method>.json, POST JSON [OFF]. */
export const WEBHOOK_URL = /^https?:\/\/[^/]+(?::\d+)?\/rest\/(\d+)\/([A-Za-z0-9_-]+)\/?$/;

/**
 * Non-enterprise plans drain the request counter at 2/s (burst 50) [OFF]: we keep to 2/s,
 * one request per 500 ms (src/crm/limiter.ts), which the bucket never overflows on.
 */
export const REQUESTS_PER_SECOND = 2;

/** Record pages [OFF] (bx24-open-path). */
export const contactPage = (origin: string, id: string) => `${origin}/crm/contact/details/${id}/`;

/**
 * findbycomm takes at most 20 values per call [OFF]: a contact's phone variants and e-mails are
 * searched in chunks of 20, every chunk a command of one batch.
 */
export const FINDBYCOMM_MAX_VALUES = 20;
/** A batch takes at most 50 commands and counts as one request for the rate limit [OFF]. */
export const BATCH_MAX_COMMANDS = 50;

/**
 * Phones are matched as stored; we ask for the E.164 form, the bare digits and, for Russian
 * numbers, the 8-trunk form, in the same findbycomm values [INF] (pitfall 1 of the note). A
 * stored value holding two numbers ("+7 916 …, 8 926 …") is matched by neither: the duplicate
 * index keeps a value's digits, which run together there [INF]. Such a contact is found by its
 * e-mail only (README); found, each of its numbers counts as a phone it has (src/crm/flow.ts).
 */
export function phoneVariants(e164: string): string[] {
  const digits = e164.replace(/\D/g, '');
  const out = new Set([e164, digits]);
  if (digits.length === 11 && digits.startsWith('7')) out.add(`8${digits.slice(1)}`);
  return [...out];
}

/**
 * Deal categories (`CATEGORY_ID`, 0 = general) and users are integers; stages (`STAGE_ID`) are
 * strings such as NEW or C9:NEW [OFF] (vendors/bitrix24.md §2.5, §4: "always send integers"):
 * checked with the config.
 */
export const ID_FORMATS = {
  pipeline: {
    pattern: /^\d+$/,
    message: 'a Bitrix24 CATEGORY_ID: a whole number (0 = the general pipeline)',
  },
  user: { pattern: /^\d+$/, message: 'a Bitrix24 user id: a whole number, e.g. 1' },
};

/** Multifield VALUE_TYPE for what we add [OFF: WORK is valid for PHONE and EMAIL]. */
export const VALUE_TYPE = 'WORK';
/** ORIGINATOR_ID on what we create: the external system [OFF]. */
export const ORIGINATOR_ID = 'chatbridge';

/** Deal UTM fields [OFF]. */
export const UTM_FIELDS: Record<string, string> = {
  utm_source: 'UTM_SOURCE',
  utm_medium: 'UTM_MEDIUM',
  utm_campaign: 'UTM_CAMPAIGN',
  utm_content: 'UTM_CONTENT',
  utm_term: 'UTM_TERM',
};

/**
 * "Open deal of this contact in this category": crm.deal.list filtered by CONTACT_ID,
 * CATEGORY_ID and CLOSED=N [INF] (matches the primary contact only).
 */
export const openDealFilter = (contactId: string, categoryId: string | null) => ({
  CONTACT_ID: Number(contactId),
  CLOSED: 'N',
  ...(categoryId !== null ? { CATEGORY_ID: Number(categoryId) } : {}),
});

/**
 * Whether the portal still has a deal: crm.deal.list filtered by its ID [INF: the legacy list
 * filters take the entity's fields, as the ORIGIN_ID and CONTACT_ID filters above]; a deleted
 * deal is not listed.
 */
export const dealByIdFilter = (id: string) => ({ filter: { ID: Number(id) }, select: ['ID'] });

/**
 * What we made, by the external id we wrote on it (ORIGINATOR_ID + ORIGIN_ID [OFF] as fields):
 * a retry whose create got no answer asks crm.contact.list / crm.deal.list with this filter
 * before creating again. The note gives this as the idempotency check for deals [INF] (§2.8);
 * that crm.contact.list takes the same filter is our inference from the same legacy list
 * filters [INF]. Newest first: the lost create is the latest with that id.
 */
export const createdFilter = (externalId: string) => ({
  filter: { ORIGINATOR_ID, ORIGIN_ID: externalId },
  select: ['ID'],
  order: { ID: 'DESC' },
});

/**
 * Tasks (tasks.task.add) and timeline comments (crm.timeline.comment.add) carry no external id,
 * and the note documents no method to list them [OFF: add methods only]: a lost create of one
 * cannot be checked, so it is not sent again (src/crm/flow.ts stops the delivery instead).
 */
export const UNCHECKABLE = {
  task: 'Bitrix24 offers no documented way to find the task it may have made (vendors/bitrix24.md §2.9 lists tasks.task.add only)',
  note: 'Bitrix24 offers no documented way to find the timeline comment it may have made (vendors/bitrix24.md §2.10 lists crm.timeline.comment.add only)',
} as const;

/**
 * The scopes ticked on an inbound webhook [OFF] (vendors/bitrix24.md §1.1): `crm` for every CRM
 * method, `user` or `user_basic` for user.get with e-mails (`user_brief` shows none), `task` for
 * tasks.task.add. A method outside them answers 403 insufficient_scope [OFF]. The `scope` method
 * ("for all") lists the scopes the webhook has [OFF: dev.1c-bitrix.ru/rest_help/general/scope.php];
 * that it runs inside a batch like other methods is [INF]. `crm check` reads it in its batch.
 */
export const SCOPES = {
  crm: 'crm',
  users: ['user', 'user_basic'],
  tasks: 'task',
} as const;
export const scopeListSchema = z.array(z.string());
/** What to do about a missing scope (the admin edits the webhook; its URL stays the same [INF]). */
export const SCOPE_HINT =
  'edit the inbound webhook in Bitrix24 (Developer resources) and tick crm, user and task';

/** Rate-limit and operating-time answers [OFF]: retried, they mean "slow down". */
export const RATE_LIMIT_ERRORS = new Set(['QUERY_LIMIT_EXCEEDED', 'OPERATION_TIME_LIMIT']);
/**
 * How long the destination waits after a rate-limit answer that names no Retry-After (the
 * documented 503 QUERY_LIMIT_EXCEEDED carries none [3P]). The bucket drains 2 requests a second on
 * most plans [OFF]: a second frees room for two, and the pause holds every delivery of the
 * destination (the delivery queue pauses it, across instances), not only the refused one, which
 * the docs ask for ("no parallel series from one IP") [OFF].
 */
export const RATE_LIMIT_PAUSE_MS = 1000;
/**
 * HTTP statuses that mean the webhook or its user was refused [OFF] (system errors: every 401 and
 * 403 listed is a credential, scope or permission answer), whatever the body — a 403 may also be
 * a proxy's or firewall's HTML page with no code [INF].
 */
export const AUTH_STATUSES = new Set([401, 403]);
/**
 * "No such contact": HTTP 400 with an empty code and "… not found" [OFF] (crm.contact.update's
 * "Contact is not found"; crm.contact.get alike [INF]). Only that: a 404 ERROR_METHOD_NOT_FOUND
 * (a wrong URL, a proxy) says nothing about the contact, and taking it for one drops the link
 * and makes the contact again.
 */
export const isContactNotFound = (status: number | null, message: string) =>
  status === 400 && /not found/i.test(message);
/** Credential / permission answers [OFF]. */
export const AUTH_ERRORS = new Set([
  'NO_AUTH_FOUND',
  'expired_token',
  'invalid_token',
  'insufficient_scope',
  'INVALID_CREDENTIALS',
  'ACCESS_DENIED',
  'user_access_error',
]);

// Shapes: legacy methods return ids as strings, *.add as integers [OFF] -> parse leniently.
export const idSchema = z.union([z.string(), z.number()]).transform(String);

export const envelopeSchema = z.object({
  result: z.unknown(),
  next: z.number().nullish(),
  total: z.number().nullish(),
});
export const errorSchema = z.object({ error: z.string().nullish(), error_description: z.string().nullish() });

const multifieldSchema = z.array(z.object({ ID: idSchema.nullish(), VALUE: z.string().nullish() })).nullish();
export const contactSchema = z.object({ ID: idSchema, PHONE: multifieldSchema, EMAIL: multifieldSchema });

/** findbycomm: {"CONTACT": [ids]} or `[]` when nothing matched [OFF]/[SDK]. */
export const findByCommSchema = z.union([
  z.array(z.unknown()).transform(() => [] as string[]),
  z.object({ CONTACT: z.array(idSchema).nullish() }).transform((value) => value.CONTACT ?? []),
]);

export const dealListSchema = z.array(z.object({ ID: idSchema }));
/** crm.contact.list / crm.deal.list with select ["ID"]: legacy string ids [OFF]. */
export const idListSchema = dealListSchema;
export const taskAddSchema = z.object({ task: z.object({ id: idSchema }) });
export const userSchema = z.object({
  ID: idSchema,
  ACTIVE: z.union([z.boolean(), z.string()]).nullish(),
  NAME: z.string().nullish(),
  LAST_NAME: z.string().nullish(),
  EMAIL: z.string().nullish(),
});
export const categoryListSchema = z.object({
  categories: z.array(z.object({ id: z.number(), name: z.string() })),
});
export const statusSchema = z.object({
  STATUS_ID: z.string(),
  NAME: z.string(),
  ENTITY_ID: z.string(),
  SORT: idSchema.nullish(),
  /** `process`, `success` or `failure` [OFF] (crm.status.list EXTRA.SEMANTICS). */
  EXTRA: z.object({ SEMANTICS: z.string().nullish() }).nullish(),
});
/**
 * A deal stage whose semantics are success or failure closes the deal (CLOSED=Y) [OFF]
 * (crm.status.list EXTRA.SEMANTICS; crm.deal.list filters open deals by CLOSED=N).
 */
export const CLOSED_SEMANTICS = new Set(['success', 'failure']);

/** batch: always HTTP 200, per-command errors in result_error [OFF]. */
export const batchSchema = z.object({
  result: z.record(z.string(), z.unknown()).or(z.array(z.unknown()).transform(() => ({}))),
  result_error: z.record(z.string(), errorSchema).or(z.array(z.unknown()).transform(() => ({}))),
  /** A list command with more pages: its `next` start [OFF] (`[]` when none has more). */
  result_next: z
    .record(z.string(), z.number())
    .or(z.array(z.unknown()).transform(() => ({})))
    .nullish(),
});

/** Stage ENTITY_ID of a deal category: DEAL_STAGE for 0, DEAL_STAGE_<id> otherwise [OFF]. */
export const stageEntityOf = (categoryId: number) =>
  categoryId === 0 ? 'DEAL_STAGE' : `DEAL_STAGE_${categoryId}`;
