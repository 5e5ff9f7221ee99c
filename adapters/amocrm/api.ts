import { decodeJwt } from 'jose';
import { z } from 'zod';

/**
 * amoCRM API v4 facts the connector relies on, in one place so they can be corrected
 * (source: ../shared/vendors/amocrm.md; labels: [OFF] official docs, [SDK] official PHP SDK,
 * [3P] third-party code/issues, [INF] inferred — verify against a real account).
 */

/**
 * When a long-lived token expires: it is a JWT whose `exp` claim (Unix seconds) is its expiry
 * [SDK: LongLivedAccessToken.php reads it]; the expiry itself is chosen between 1 day and 5 years
 * when the token is made [OFF]. That the token is a JWT is the SDK's, not the docs' [SDK]. The
 * payload is decoded WITHOUT verifying the signature: amoCRM does not publish the key it signs
 * with, and the date is only read to warn the operator (a forged token gains nothing from it; the
 * CRM still checks the token). null when the token is not such a JWT, or its exp no date can hold:
 * its expiry is then unknown, which is no error (the CRM still takes or refuses the token).
 */
export function tokenExpiry(token: string): Date | null {
  let exp: unknown;
  try {
    exp = decodeJwt(token).exp;
  } catch {
    return null;
  }
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return null;
  // An exp no Date can hold (one in microseconds) is no expiry to tell: an Invalid Date threw
  // in toISOString (crm check exited 1 for a token deliveries use).
  const at = new Date(exp * 1000);
  return Number.isNaN(at.getTime()) ? null : at;
}

/** How to replace an expired (or expiring) long-lived token [OFF: Kommo long-lived token page]. */
export const RENEW_TOKEN_HINT =
  "generate a new long-lived token (the private integration's Keys and scopes) and put it in the config";

/**
 * How long the destination waits after a 429 that names no Retry-After (amoCRM's 429 is often a
 * bare non-JSON page [3P]). The limit is per second [OFF], and a 429 is the warning before the
 * account's API is blocked for repeated violations, every request then answered 403 until support
 * lifts it [OFF quoted]/[3P]: so not only the refused delivery waits, but every request of the
 * destination (the delivery queue pauses it on a retry delay, across instances).
 */
export const RATE_LIMIT_PAUSE_MS = 1000;

/** Requests go to the account's own domain under /api/v4 [OFF]. */
export const API_PREFIX = '/api/v4';

/**
 * "Not more than 7 requests per second" [OFF]. Our limiter spaces requests one per
 * 1000/6 ms, so any one-second interval holds at most 7 (src/crm/limiter.ts). [INF]
 */
export const REQUESTS_PER_SECOND = 6;

/** Record pages ("Open in CRM") [3P]: built from the account URL, not from _links.self. */
export const contactPage = (origin: string, id: string) => `${origin}/contacts/detail/${id}`;

/** Closed-won and closed-lost status ids, shared by every pipeline [OFF]. */
export const CLOSED_STATUSES = new Set([142, 143]);
/**
 * Status `type` 1 is a pipeline's "Incoming leads" (unsorted) stage [OFF]; leads are not made in
 * it by POST /leads, incoming ones come through the unsorted API [INF] (vendors/amocrm.md §2.2):
 * `crm check` refuses it as a deal stage.
 */
export const INCOMING_STATUS_TYPE = 1;

/** Built-in multitext fields addressable by code [OFF]; enum codes [SDK]/[INF]. */
export const PHONE_FIELD = 'PHONE';
export const EMAIL_FIELD = 'EMAIL';
export const PHONE_ENUM = 'WORK';
export const EMAIL_ENUM = 'WORK';

/** Task type 1 = "Follow-up" / «Связаться» [OFF]. */
export const FOLLOW_UP_TASK_TYPE = 1;

/**
 * Lead tracking fields for UTM, written by field_code [3P]. An account without one of these
 * codes rejects the request, so the connector reads leads/custom_fields and sends only the
 * codes that exist [INF].
 */
export const UTM_FIELD_CODES: Record<string, string> = {
  utm_source: 'UTM_SOURCE',
  utm_medium: 'UTM_MEDIUM',
  utm_campaign: 'UTM_CAMPAIGN',
  utm_content: 'UTM_CONTENT',
  utm_term: 'UTM_TERM',
};

/**
 * `GET /contacts?query=` is a fuzzy search over every filled field and phone formats are
 * literal [3P]: phones are searched by their last 10 digits and the results re-checked by the
 * digits of their PHONE values [3P]/[INF], each number of a value that holds several ("+7 916 …,
 * 8 926 …", as managers type them) on its own; e-mails are searched as written and re-checked
 * case-insensitively. That a digits-only query also finds phones stored with formatting
 * ("8 (916) 123-45-67") is assumed [INF]; the fake server behaves so.
 */
export const PHONE_QUERY_DIGITS = 10;
/** Nothing found is 204 with an empty body, not an empty list [SDK]/[3P]. */
export const EMPTY_SEARCH_STATUS = 204;
/**
 * Every add (POST) answers 200 with `_embedded.<entity>[{id}]` [OFF]/[SDK]; 204 is documented
 * only for lists and searches that found nothing [SDK]/[3P]. A create answered 204 or 404 is
 * therefore not a result: the account refused it without a reason, or `baseUrl` is not the
 * account's own address (a 404 from another site, or the common domain) [INF]. It fails the
 * delivery for good instead of being retried; a 204 is treated as "may have been made", so a
 * replay looks the object up before creating it again. The same for `GET /account` (it returns
 * the account to every user [OFF]): `crm check` reports it instead of an empty account.
 */
export const NO_ANSWER_HINT =
  "check that baseUrl is the account's own address (https://<subdomain>.amocrm.ru or .kommo.com) and that the token's user has the right to it";
/**
 * A 401 means not authorized, token expired or user disabled [OFF] (errors table). A token is its
 * account's [OFF: requests go to the account's own domain], so a baseUrl of another account (a
 * wrong subdomain) is refused the same way [INF]: the message names both causes.
 */
export const UNAUTHORIZED_HINT =
  'the token was revoked, or its user disabled, or baseUrl is not the account the token was made in';
/**
 * All ids — pipelines (`pipeline_id`), statuses (`status_id`), users — are integers [OFF]
 * (vendors/amocrm.md §4): the `crm` block's ids are checked so with the config.
 */
export const ID_FORMATS = {
  pipeline: { pattern: /^\d+$/, message: 'an amoCRM pipeline_id: a whole number, e.g. 7001' },
  stage: { pattern: /^\d+$/, message: 'an amoCRM status_id: a whole number, e.g. 142' },
  user: { pattern: /^\d+$/, message: 'an amoCRM user id: a whole number, e.g. 501' },
};
/** Lists are paged by page/limit, at most 250 [OFF]. */
export const PAGE_LIMIT = 250;

// Response shapes: tolerant, only what we use (HAL `_embedded` wrappers [OFF]).

const multitextSchema = z.object({
  field_code: z.string().nullish(),
  values: z
    .array(
      z.object({
        value: z.union([z.string(), z.number()]).transform(String),
        enum_code: z.string().nullish(),
      }),
    )
    .nullish(),
});

export const contactSchema = z.object({
  id: z.number(),
  name: z.string().nullish(),
  /** Unix seconds [OFF]. */
  created_at: z.number().nullish(),
  custom_fields_values: z.array(multitextSchema).nullish(),
  _embedded: z
    .object({
      leads: z.array(z.object({ id: z.number() })).nullish(),
      tags: z.array(z.object({ name: z.string().nullish() })).nullish(),
    })
    .nullish(),
});
export type AmoContact = z.infer<typeof contactSchema>;

export const contactListSchema = z.object({
  _embedded: z.object({ contacts: z.array(contactSchema) }),
});

/** Every add answers `_embedded.<entity>[{id, request_id}]` [OFF]/[SDK]; tasks and notes alike [INF]. */
export const addedSchema = (entity: 'contacts' | 'leads' | 'tasks' | 'notes') =>
  z.object({
    _embedded: z.object({ [entity]: z.array(z.object({ id: z.number() })).min(1) }),
  });

export const leadListSchema = z.object({
  _embedded: z.object({
    leads: z.array(
      z.object({
        id: z.number(),
        name: z.string().nullish(),
        status_id: z.number(),
        pipeline_id: z.number(),
        created_at: z.number().nullish(),
        is_deleted: z.boolean().nullish(),
      }),
    ),
  }),
});

/**
 * Finding what a create whose answer was lost made (a timeout or a 504). amoCRM has no
 * idempotency key (`request_id` is only echoed [INF]) and no external-id field, so the object is
 * recognised by what was sent, among objects made since the create was first sent:
 * - contact: `GET /contacts?query=<name>&order[id]=desc&limit=250` ([OFF]: a search over filled
 *   fields, and lists take `order` and `limit`; that it covers the name, and orders a search,
 *   is [INF]), same name, the same PHONE/EMAIL values and the source tag; more than one such
 *   contact is ambiguous (two visitors of one name without phone or e-mail);
 * - deal: among the contact's leads (as for the open deal, §2.9 [INF]), same name and pipeline;
 * - task: `GET /tasks` filtered by entity ([OFF]: lists take `filter` and `order`; the keys
 *   `filter[entity_type]`, `filter[entity_id][]`, `order[id]` are [INF]), re-checked here with the
 *   task model's fields [OFF] (so an ignored filter costs pages, not a wrong match), same text;
 * - note: `GET /{leads|contacts}/{id}/notes` (the POST path is [3P]; listing on it is [INF]),
 *   `common` note with the same `params.text`.
 * Only the newest page (250, newest first) is read. `created_at` is the CRM's clock, ours may
 * differ: objects from CREATED_SKEW_S before the first send on count [INF].
 */
export const CREATED_SKEW_S = 300;

export const taskListSchema = z.object({
  _embedded: z.object({
    tasks: z.array(
      z.object({
        id: z.number(),
        text: z.string().nullish(),
        entity_id: z.number().nullish(),
        entity_type: z.string().nullish(),
        created_at: z.number().nullish(),
      }),
    ),
  }),
});

export const noteListSchema = z.object({
  _embedded: z.object({
    notes: z.array(
      z.object({
        id: z.number(),
        entity_id: z.number().nullish(),
        note_type: z.string().nullish(),
        params: z.object({ text: z.string().nullish() }).nullish(),
        created_at: z.number().nullish(),
      }),
    ),
  }),
});

export const usersPageSchema = z.object({
  _page_count: z.number().nullish(),
  _links: z.object({ next: z.object({ href: z.string() }).nullish() }).nullish(),
  _embedded: z.object({
    users: z.array(
      z.object({
        id: z.number(),
        name: z.string().nullish(),
        email: z.string().nullish(),
        rights: z.object({ is_active: z.boolean().nullish() }).nullish(),
      }),
    ),
  }),
});

export const accountSchema = z.object({
  id: z.number(),
  name: z.string().nullish(),
  subdomain: z.string().nullish(),
});

export const pipelinesSchema = z.object({
  _embedded: z.object({
    pipelines: z.array(
      z.object({
        id: z.number(),
        name: z.string(),
        _embedded: z
          .object({
            statuses: z.array(z.object({ id: z.number(), name: z.string(), type: z.number().nullish() })),
          })
          .nullish(),
      }),
    ),
  }),
});

export const customFieldsSchema = z.object({
  _embedded: z.object({ custom_fields: z.array(z.object({ id: z.number(), code: z.string().nullish() })) }),
});

/** problem+json; 400s may carry `validation-errors` with a dot path per item [OFF]/[3P]. */
export const problemSchema = z.object({
  title: z.string().nullish(),
  detail: z.string().nullish(),
  hint: z.string().nullish(),
  'validation-errors': z
    .array(
      z.object({
        request_id: z.string().nullish(),
        errors: z.array(
          z.object({ code: z.string().nullish(), path: z.string().nullish(), detail: z.string().nullish() }),
        ),
      }),
    )
    .nullish(),
});
