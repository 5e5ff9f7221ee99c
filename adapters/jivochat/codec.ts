import { type FactAnswer, unverifiedValues } from '../../src/contacts/facts.js';
import type { Contact, Fact } from '../../src/contacts/types.js';
import { BadRequestError, ValidationError } from '../../src/errors.js';
import { jsonDepthExceeds, MAX_JSON_DEPTH } from '../../src/http/json.js';
import {
  type CustomDataItem,
  type crmLinkPlaceholders,
  httpUrlSchema,
  type JivoAnswer,
  type JivochatSettings,
  jivoAnswerSchema,
} from './schemas.js';

/**
 * The wire format both ways: the request body Jivo sends (JSON, with one documented sample that
 * is not JSON) and the answer Jivo shows to the agent (§6), kept within Jivo's limits.
 */

export interface DecodedPayload {
  payload: Record<string, unknown> & { event_name: string };
  /** The body was the docs' invalid `attributes: [ "k": v ]` form and was read as an object. */
  repaired: boolean;
}

/**
 * The official client_attribute_updated sample writes `"attributes": [ "key": value, ... ]`
 * (§5.8). If Jivo really sends that, reading the brackets as an object (what the reference
 * advises) keeps the event instead of refusing it. Only that one field of that one event is
 * rewritten, and only when the body is otherwise unparseable.
 */
const BRACKETED_ATTRIBUTES = /("attributes"\s*:\s*)\[((?:[^[\]"]|"(?:[^"\\]|\\.)*")*)\]/;

function repairAttributeList(text: string): Record<string, unknown> | undefined {
  if (!BRACKETED_ATTRIBUTES.test(text)) return undefined;
  try {
    const value: unknown = JSON.parse(text.replace(BRACKETED_ATTRIBUTES, '$1{$2}'));
    if (isRecord(value) && value.event_name === 'client_attribute_updated') return value;
  } catch {
    // Not the documented shape either: the caller refuses the body.
  }
  return undefined;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Raw body -> the event object, or a 400 (the core answers it and journals the body as rejected). */
export function decodePayload(rawBody: Buffer): DecodedPayload {
  // Content-Type is undocumented for Jivo's webhooks (§2): read the body as UTF-8 JSON whatever it says.
  const text = rawBody.toString('utf8').replace(/^\uFEFF/, '');
  let value: unknown;
  let repaired = false;
  if (jsonDepthExceeds(text)) {
    throw new BadRequestError('json_too_deep', `the body nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  try {
    value = JSON.parse(text);
  } catch (error) {
    const fixed = repairAttributeList(text);
    if (!fixed) {
      throw new BadRequestError('invalid_json', 'the body is not valid JSON', { cause: error });
    }
    value = fixed;
    repaired = true;
  }
  if (!isRecord(value)) {
    throw new ValidationError('the body must be a JSON object', [
      {
        path: '(root)',
        message: `expected an object, got ${Array.isArray(value) ? 'an array' : typeof value}`,
      },
    ]);
  }
  if (typeof value.event_name !== 'string' || value.event_name.trim() === '') {
    throw new ValidationError('the body has no event_name', [
      { path: 'event_name', message: 'a non-empty string is required' },
    ]);
  }
  return { payload: value as DecodedPayload['payload'], repaired };
}

// ---------------------------------------------------------------------------------------------
// The answer

/**
 * Jivo documents no field lengths for the webhook answer (§6.1, §12.6). These caps are ours:
 * generous enough for real data, small enough that the agent's side panel stays readable.
 * Text is cut (with an ellipsis) rather than refused; URLs, e-mails and phones are never cut,
 * because a cut one is wrong: they are left out instead.
 */
export const ANSWER_LIMITS = {
  customDataItems: 10,
  title: 100,
  content: 500,
  name: 200,
  description: 1000,
  email: 254,
  phone: 32,
  url: 2048,
} as const;

export const OK_ANSWER = { result: 'ok' } as const satisfies JivoAnswer;

/** Cut to `max` code points, so an emoji or a Cyrillic letter is never split in half. */
export function truncate(text: string, max: number): string {
  const points = Array.from(text);
  if (points.length <= max) return text;
  return `${points.slice(0, max - 1).join('')}…`;
}

/**
 * Links work in Jivo only for the channel's "Safe URL" (§9.15), which we cannot see; we send
 * only absolute http(s) URLs of sane length and leave anything else out.
 */
export function safeLink(value: string | null | undefined): string | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (trimmed.length === 0 || trimmed.length > ANSWER_LIMITS.url) return undefined;
  return httpUrlSchema.safeParse(trimmed).success ? trimmed : undefined;
}

/** Appended to the title of a fact that rests only on visitor-typed values (issue 10 item 5). */
export const NOT_VERIFIED = ' (not verified)';

export function factToCustomData(fact: Fact): CustomDataItem | undefined {
  // custom_data items are {title, content, link}: the mark goes into the title, kept whole.
  const title =
    fact.verified === false
      ? `${truncate(fact.label.trim(), ANSWER_LIMITS.title - NOT_VERIFIED.length)}${NOT_VERIFIED}`
      : truncate(fact.label.trim(), ANSWER_LIMITS.title);
  const content = truncate(fact.value.trim(), ANSWER_LIMITS.content);
  if (content === '') return undefined;
  const link = safeLink(fact.link) ?? (fact.type === 'url' ? safeLink(fact.value) : undefined);
  return { title, content, ...(link ? { link } : {}) };
}

/** What fills the crm_link template's placeholders; undefined = not known for this contact. */
export function placeholderValues(
  contact: Contact,
  links: { consoleUrl?: string | undefined } = {},
): Record<(typeof crmLinkPlaceholders)[number], string | undefined> {
  const person = contact.identities.find((identity) => identity.kind === 'person')?.value;
  // {crmId}: an identifier of kind `crm` (a CRM's own id, when an adapter or source reports one),
  // else a `crmId` attribute. Our convention: no vendor defines it.
  const crmIdentity = contact.identities.find((identity) => identity.kind === 'crm')?.value;
  const crmAttribute = contact.attributes.crmId?.value;
  const crmId =
    crmIdentity ?? (crmAttribute === undefined || crmAttribute === '' ? undefined : String(crmAttribute));
  // {crmUrl}: the CRM record's page, set when a CRM destination linked the contact (DESIGN §10).
  return {
    contactId: contact.id,
    person,
    crmId,
    consoleUrl: links.consoleUrl,
    crmUrl: contact.crmLink ?? undefined,
  };
}

/** Fill the template; a placeholder without a value leaves the whole link out. */
export function fillCrmLink(
  template: string,
  contact: Contact,
  links: { consoleUrl?: string | undefined } = {},
): string | undefined {
  const values = placeholderValues(contact, links);
  let missing = false;
  const filled = template.replace(/\{([^{}]*)\}/g, (_match, name: string) => {
    const value = values[name as keyof typeof values];
    if (value === undefined || value === '') {
      missing = true;
      return '';
    }
    // {consoleUrl} and {crmUrl} are whole URLs (our signed agent link, the CRM record's page):
    // encoding them would break them.
    return name === 'consoleUrl' || name === 'crmUrl' ? value : encodeURIComponent(value);
  });
  return missing ? undefined : safeLink(filled);
}

function contactInfo(contact: Contact): JivoAnswer['contact_info'] {
  const info: NonNullable<JivoAnswer['contact_info']> = {};
  const name = contact.name ?? contact.names[0];
  if (name?.trim()) info.name = truncate(name.trim(), ANSWER_LIMITS.name);
  const email = contact.emails[0];
  if (email && email.length <= ANSWER_LIMITS.email) info.email = email;
  const phone = contact.phones[0];
  if (phone && phone.length <= ANSWER_LIMITS.phone) info.phone = phone;
  const description = contact.attributes.description?.value;
  if (typeof description === 'string' && description.trim()) {
    info.description = truncate(description.trim(), ANSWER_LIMITS.description);
  }
  return Object.keys(info).length > 0 ? info : undefined;
}

/**
 * contact_info's e-mail and phone must stay plain values (Jivo writes them into the client's
 * card), so when they rest only on what a visitor typed, a custom_data item says so, first, where
 * the 10-item cut cannot drop it (issue 10 item 5).
 */
function unverifiedContactItem(
  contact: Contact,
  info: JivoAnswer['contact_info'] | undefined,
): CustomDataItem | undefined {
  const unverified = unverifiedValues(contact);
  const which = [
    info?.email !== undefined && unverified.has(info.email) ? 'e-mail' : undefined,
    info?.phone !== undefined && unverified.has(info.phone) ? 'phone' : undefined,
  ].filter((part) => part !== undefined);
  if (which.length === 0) return undefined;
  return { title: 'Not verified', content: `${which.join(', ')} (typed by a visitor)` };
}

/**
 * The chat_accepted / chat_updated answer (§6.1) from the unified contact and the shared facts.
 * `facts` is null when the facts were not ready in time: the answer goes out without them.
 */
export function buildRichAnswer(input: {
  contact: Contact;
  facts: FactAnswer | null;
  reply: JivochatSettings['reply'];
  /** The bridge's signed console link for a contact (AdapterContext.consoleLink). */
  consoleLink?: ((contactId: string) => string | undefined) | undefined;
}): JivoAnswer {
  const { contact, facts, reply } = input;
  const answer: JivoAnswer = { result: 'ok' };
  const info = contactInfo(contact);
  if (info) answer.contact_info = info;
  const items = [unverifiedContactItem(contact, info), ...(facts?.facts ?? []).map(factToCustomData)]
    .filter((item): item is CustomDataItem => item !== undefined)
    .slice(0, ANSWER_LIMITS.customDataItems);
  if (items.length > 0) answer.custom_data = items;
  // An attribute source's link is the CRM's own word on where the card is: it wins.
  const crmLink =
    safeLink(facts?.crmLink) ??
    (reply.crmLink
      ? fillCrmLink(reply.crmLink, contact, {
          consoleUrl: reply.crmLink.includes('{consoleUrl}') ? input.consoleLink?.(contact.id) : undefined,
        })
      : undefined) ??
    safeLink(contact.crmLink);
  if (crmLink) answer.crm_link = crmLink;
  answer.enable_assign = reply.enableAssign;
  // A bug here must show in tests, not as an answer Jivo silently ignores.
  return jivoAnswerSchema.parse(answer);
}
