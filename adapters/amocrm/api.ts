import { z } from 'zod';

/**
 * amoCRM API v4 facts the connector relies on, in one place so they can be corrected
 * (source: ../shared/vendors/amocrm.md; labels: [OFF] official docs, [SDK] official PHP SDK,
 * [3P] third-party code/issues, [INF] inferred — verify against a real account).
 */

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
 * digits of their PHONE values [3P]/[INF]; e-mails are searched as written and re-checked
 * case-insensitively. That a digits-only query also finds phones stored with formatting
 * ("8 (916) 123-45-67") is assumed [INF]; the fake server behaves so.
 */
export const PHONE_QUERY_DIGITS = 10;
/** Nothing found is 204 with an empty body, not an empty list [SDK]/[3P]. */
export const EMPTY_SEARCH_STATUS = 204;
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
  custom_fields_values: z.array(multitextSchema).nullish(),
  _embedded: z.object({ leads: z.array(z.object({ id: z.number() })).nullish() }).nullish(),
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
        status_id: z.number(),
        pipeline_id: z.number(),
        is_deleted: z.boolean().nullish(),
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
