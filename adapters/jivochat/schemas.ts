import { z } from 'zod';
import { boolLike, intLike } from '../../src/config/schema.js';
import { soft, softArray, softId, softText, softTime, wireId } from '../../src/intake/wire.js';

/**
 * JivoChat Webhooks API: what Jivo POSTs (tolerant) and what we answer (strict), plus the
 * channel settings. Field facts and oddities: /work/shared/vendors/jivochat.md §4–§6, §9.
 *
 * Vendor schemas are deliberately forgiving: Jivo's own docs disagree with its samples (ids as
 * numbers in one event and strings in the next, objects that are null, missing or `{}`), so a
 * field of an unexpected shape is dropped rather than failing the whole event. Every field is
 * optional; the mapper decides what is worth recording. Unknown fields pass through
 * (looseObject) and the raw payload is kept on the timeline entry.
 */

/** Ids arrive as "2016" or 2016 in the same payload (§9.1): always compare and store strings. */
export const jivoIdSchema = wireId;

/*
 * Fields below: softText (free text; a number where text is expected, a phone sent as
 * 79161234567, is kept as text), softId (ids as strings), softTime (Unix seconds as a number or
 * numeric string, read with isoTime, which also takes ISO text): src/intake/wire.ts.
 */

export const jivoVisitorSchema = z.looseObject({
  name: softText,
  email: softText,
  phone: softText,
  description: softText,
  number: softId(),
  social: soft(z.record(z.string(), z.unknown())),
  chats_count: soft(z.number()),
});
export type JivoVisitor = z.infer<typeof jivoVisitorSchema>;

export const jivoAgentSchema = z.looseObject({
  id: softId(),
  name: softText,
  email: softText,
  phone: softText,
});
export type JivoAgent = z.infer<typeof jivoAgentSchema>;

const namedSchema = z.looseObject({ id: softId(), name: softText });
const titledSchema = z.looseObject({ id: softId(), title: softText });

export const jivoTopicSchema = z.looseObject({
  topic_id: softId(),
  title: softText,
  parent_id: softId(),
});

export const jivoGeoIpSchema = z.looseObject({
  region_code: softText,
  country_code: softText,
  country: softText,
  region: softText,
  city: softText,
  latitude: softText,
  longitude: softText,
  organization: softText,
  isp: softText,
});

const utmKeys = ['source', 'medium', 'campaign', 'content', 'term'] as const;

export const jivoSessionSchema = z.looseObject({
  geoip: soft(jivoGeoIpSchema),
  /** `source=google|medium=cpc`: prefer utm_json when both are there (§9.7). */
  utm: softText,
  utm_json: soft(z.looseObject(Object.fromEntries(utmKeys.map((key) => [key, softText])))),
  ip_addr: softText,
  user_agent: softText,
});

export const jivoPageSchema = z.looseObject({ url: softText, title: softText });

export const jivoMessageSchema = z.looseObject({
  message: softText,
  timestamp: softTime,
  /** "visitor" or "agent" per the docs; other values (bots, system notes) are kept as they come. */
  type: softText,
  agent_id: softId(),
});
export type JivoMessage = z.infer<typeof jivoMessageSchema>;

export const jivoChatSchema = z.looseObject({
  /** Typed "object" in the docs, an array in every sample (§9.4). */
  messages: softArray(jivoMessageSchema),
  blacklisted: soft(z.boolean()),
  /** "positive" / "negative" / null per third-party libraries; anything else is kept as text. */
  rate: softText,
  invitation: softText,
});

export const jivoCallSchema = z.looseObject({
  type: softText,
  phone: softText,
  status: softText,
  reason: softText,
  record_url: softText,
});

/**
 * `attributes` of client_attribute_updated. The official sample writes `key: value` pairs inside
 * `[...]` (invalid JSON, §5.8); the reference reads it as an object. We also accept the two
 * array shapes a fixed sample could plausibly take: `[{"age": 42}, ...]` and
 * `[{"key": "age", "value": 42}, ...]` (our assumption).
 */
const attributeValueSchema = z.union([z.string(), z.number().finite(), z.boolean(), z.null()]);
export const jivoAttributesSchema = z.unknown().transform((input, ctx) => {
  // Checked by hand: z.record would silently drop a key named "__proto__".
  if (typeof input !== 'object' || input === null) {
    ctx.addIssue({ code: 'custom', message: 'an object or an array' });
    return z.NEVER;
  }
  // A Map, not an object: an attribute named "__proto__" must stay an attribute.
  const out = new Map<string, string | number | boolean | null>();
  const put = (key: unknown, value: unknown) => {
    if ((typeof key !== 'string' && typeof key !== 'number') || String(key).trim() === '') return;
    const parsed = attributeValueSchema.safeParse(value);
    if (parsed.success) out.set(String(key).trim(), parsed.data);
  };
  if (!Array.isArray(input)) {
    for (const [key, value] of Object.entries(input as Record<string, unknown>)) put(key, value);
    return Object.fromEntries(out);
  }
  for (const item of input) {
    if (!item || typeof item !== 'object' || Array.isArray(item)) continue;
    const record = item as Record<string, unknown>;
    const named = record.key ?? record.name ?? record.id;
    if (named !== undefined && 'value' in record) put(named, record.value);
    else for (const [key, value] of Object.entries(record)) put(key, value);
  }
  return Object.fromEntries(out);
});

export const knownEvents = [
  'call_event',
  'chat_accepted',
  'chat_updated',
  'chat_assigned',
  'chat_finished',
  'offline_message',
  'client_updated',
  'client_attribute_updated',
] as const;
export type JivoEventName = (typeof knownEvents)[number];

export function isKnownEvent(name: string): name is JivoEventName {
  return (knownEvents as readonly string[]).includes(name);
}

/** One envelope for every event: which fields appear depends on `event_name` (§4.1). */
export const jivoEnvelopeSchema = z.looseObject({
  event_name: z.string(),
  widget_id: softId(),
  user_token: softText,
  chat_id: softId(),
  visitor: soft(jivoVisitorSchema),
  organization: soft(namedSchema),
  status: soft(titledSchema),
  /** The client's responsible agent in Jivo's CRM, not the agent on the chat (§9.5). */
  assigned_agent: soft(jivoAgentSchema),
  tags: softArray(titledSchema),
  topic: soft(jivoTopicSchema),
  department: soft(namedSchema),
  session: soft(jivoSessionSchema),
  page: soft(jivoPageSchema),
  analytics: soft(z.record(z.string(), z.unknown())),
  agent: soft(jivoAgentSchema),
  agents: softArray(jivoAgentSchema),
  call: soft(jivoCallSchema),
  chat: soft(jivoChatSchema),
  plain_messages: softText,
  html_messages: softText,
  message: softText,
  /** 13 digits (beyond int32, §9.2): kept as a string. */
  offline_message_id: softId(),
  client_id: softId(),
  attributes: soft(jivoAttributesSchema),
  /** chat_assigned: the crm_link the agent linked the chat to. */
  assign_to: softText,
});
export type JivoEnvelope = z.infer<typeof jivoEnvelopeSchema>;

// ---------------------------------------------------------------------------------------------
// Our answer (§6). Strict: this is what we send.

export const httpUrlSchema = z.url({ protocol: /^https?$/ });

export const customDataItemSchema = z.strictObject({
  title: z.string(),
  content: z.string(),
  link: httpUrlSchema.optional(),
});
export type CustomDataItem = z.infer<typeof customDataItemSchema>;

export const jivoAnswerSchema = z.strictObject({
  /** Exactly lowercase ASCII "ok": anything else makes Jivo discard the rest (§9.13). */
  result: z.literal('ok'),
  custom_data: z.array(customDataItemSchema).max(10).optional(),
  contact_info: z
    .strictObject({
      name: z.string().optional(),
      email: z.string().optional(),
      phone: z.string().optional(),
      description: z.string().optional(),
    })
    .optional(),
  enable_assign: z.boolean().optional(),
  crm_link: httpUrlSchema.optional(),
});
export type JivoAnswer = z.infer<typeof jivoAnswerSchema>;

// ---------------------------------------------------------------------------------------------
// Channel settings (config/bridge.yaml `channels[]` with `vendor: jivochat`).

export const crmLinkPlaceholders = ['contactId', 'person', 'crmId', 'consoleUrl', 'crmUrl'] as const;

const crmLinkTemplateSchema = z.string().superRefine((template, ctx) => {
  const unknown = [...template.matchAll(/\{([^{}]*)\}/g)]
    .map((match) => match[1] ?? '')
    .filter((name) => !(crmLinkPlaceholders as readonly string[]).includes(name));
  if (unknown.length > 0) {
    ctx.addIssue({
      code: 'custom',
      message: `unknown placeholder {${unknown[0]}}; use {contactId}, {person}, {crmId}, {consoleUrl} or {crmUrl}`,
    });
    return;
  }
  // {consoleUrl} and {crmUrl} are whole URLs (the bridge's signed agent link, the CRM record's
  // page, DESIGN §10-11); the others are path parts.
  const sample = template
    .replace(/\{consoleUrl\}/g, 'https://console.invalid/c/x')
    .replace(/\{crmUrl\}/g, 'https://crm.example/x')
    .replace(/\{[^{}]*\}/g, 'x');
  if (!/^https?:\/\//i.test(sample) || !URL.canParse(sample)) {
    ctx.addIssue({
      code: 'custom',
      message: 'an absolute http(s) URL, e.g. https://crm.example/contacts/{crmId}',
    });
  }
});

const replyDefaults = { enableAssign: false, deadlineMs: 2000 };

export const jivochatSettingsSchema = z.object({
  /**
   * Which payload field carries the company's own customer id (identifier kind `person`); a
   * dotted path reaches into objects (`visitor.description`). Jivo echoes `user_token` from the
   * site's `jivo_api.setUserToken(...)`.
   */
  personIdFrom: z
    .string()
    .regex(/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/, 'a payload field name or dotted path, e.g. user_token')
    .default('user_token'),
  /**
   * When set, payloads whose widget_id differs are refused (400, journalled): the URL token is
   * the only credential Jivo offers (§9.16), this is a second check.
   */
  widgetId: z.preprocess(
    (value) => (value === '' || value === null ? undefined : value),
    z.string().optional(),
  ),
  reply: z
    .strictObject({
      /** Link for the agent's "Open in CRM" button; placeholders {contactId}, {person}, {crmId}, {consoleUrl}, {crmUrl}. */
      crmLink: z.preprocess(
        (value) => (value === '' || value === null ? undefined : value),
        crmLinkTemplateSchema.optional(),
      ),
      enableAssign: boolLike.default(false),
      /** Budget for the chat_accepted / chat_updated answer, from when the request arrived. */
      deadlineMs: intLike(z.number().int().min(100).max(30_000)).default(2000),
    })
    .default(replyDefaults),
});
export type JivochatSettings = z.infer<typeof jivochatSettingsSchema>;
