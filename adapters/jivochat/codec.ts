import { type FactAnswer, unverifiedValues } from '../../src/contacts/facts.js';
import { isHttpUrl } from '../../src/contacts/links.js';
import { cleanDisplayText } from '../../src/contacts/normalize.js';
import type { Contact, Fact } from '../../src/contacts/types.js';
import { wellFormed } from '../../src/digest.js';
import type { CustomDataItem, crmLinkPlaceholders, JivoAnswer, JivochatSettings } from './schemas.js';

/**
 * The wire format both ways: the documented malformed request body Jivo may send, and the answer
 * Jivo shows to the agent (§6), kept within Jivo's limits.
 */

/**
 * The official client_attribute_updated sample writes `"attributes": [ "key": value, ... ]`
 * (§5.8). If Jivo really sends that, reading the brackets as an object (what the reference
 * advises) keeps the event instead of refusing it. The core tries this only when its one parse
 * of the body failed; decode then accepts the mended body for client_attribute_updated only.
 *
 * What it mends is what the expression `("attributes"\s*:\s*)\[((?:[^[\]"]|"(?:[^"\\]|\\.)*")*)\]`
 * finds: the first `"attributes"` key, `:`, and a list up to its `]` with no bracket of its own
 * outside strings; the brackets become braces. Read by hand in one pass instead: the expression
 * was tried from every `"attributes"` of the body, each try reading on to the body's end, and a
 * 1 MiB invalid body repeating `"attributes":["x\""x\""x\"` held the event loop for 86 s
 * (every other request of the bridge waited, BullMQ lost its job locks). A try that reaches a
 * place an earlier try read in the same state (inside a string or not) would read on exactly as
 * that one did, and it failed: it stops there, so each place is read at most twice.
 */
const ATTRIBUTES_KEY = '"attributes"';

export function repairAttributeList(text: string): string | undefined {
  /** Places an earlier (failed) try read: bit 1 outside a string, bit 2 inside one. */
  let seen: Uint8Array | undefined;
  for (let from = 0; ; ) {
    const at = text.indexOf(ATTRIBUTES_KEY, from);
    if (at === -1) return undefined;
    from = at + 1;
    let index = skipSpace(text, at + ATTRIBUTES_KEY.length);
    if (text[index] !== ':') continue;
    index = skipSpace(text, index + 1);
    if (text[index] !== '[') continue;
    seen ??= new Uint8Array(text.length);
    const close = listEnd(text, index + 1, seen);
    if (close !== -1)
      return `${text.slice(0, index)}{${text.slice(index + 1, close)}}${text.slice(close + 1)}`;
  }
}

/** The first index at or after `index` that is not whitespace (as `\s` reads it). */
function skipSpace(text: string, index: number): number {
  let at = index;
  while (at < text.length && /\s/.test(text[at]!)) at++;
  return at;
}

/**
 * The index of the `]` that ends a list whose items start at `index`: strings (with their
 * escapes) are passed over, any other character but a bracket belongs to the list. -1 when the
 * list does not end so (a bracket, a string left open, an escaped line break, which `\\.` does
 * not take), or when the reading joins an earlier try's.
 */
function listEnd(text: string, index: number, seen: Uint8Array): number {
  let inString = false;
  for (let at = index; at < text.length; ) {
    const mark = inString ? 2 : 1;
    if ((seen[at]! & mark) !== 0) return -1;
    seen[at]! |= mark;
    const char = text.charCodeAt(at);
    if (!inString) {
      if (char === 93 /* ] */) return at;
      if (char === 91 /* [ */) return -1;
      inString = char === 34; /* " */
      at++;
    } else if (char === 34) {
      inString = false;
      at++;
    } else if (char === 92 /* \ */) {
      const next = text.charCodeAt(at + 1);
      if (Number.isNaN(next) || next === 10 || next === 13 || next === 0x2028 || next === 0x2029) return -1;
      at += 2;
    } else at++;
  }
  return -1;
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
  // A string has at least as many UTF-16 units as code points: short enough as it is, it is
  // returned without splitting it (nearly every value, and the split allocated per character).
  if (text.length <= max) return text;
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
  return isHttpUrl(trimmed) ? trimmed : undefined;
}

/** Appended to the title of a fact that rests only on visitor-typed values (issue 10 item 5). */
export const NOT_VERIFIED = ' (not verified)';

export function factToCustomData(fact: Fact): CustomDataItem | undefined {
  // custom_data items are {title, content, link}: the mark goes into the title, kept whole.
  // Labels and values are other channels' attributes and attribute sources' text as sent: cleaned
  // as shown names are (a bidi override reversed the agent's panel after it, controls such as
  // ESC reached it), before the cut so the cut counts what is shown.
  const label = cleanDisplayText(fact.label) ?? '';
  const title =
    fact.verified === false
      ? `${truncate(label, ANSWER_LIMITS.title - NOT_VERIFIED.length)}${NOT_VERIFIED}`
      : truncate(label, ANSWER_LIMITS.title);
  const content = truncate(cleanDisplayText(fact.value) ?? '', ANSWER_LIMITS.content);
  if (content === '') return undefined;
  const link = safeLink(fact.link) ?? (fact.type === 'url' ? safeLink(fact.value) : undefined);
  // Field by field: a conditional spread in the literal cost an object per item (src/extend.ts).
  const item: CustomDataItem = { title, content };
  if (link) item.link = link;
  return item;
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
    // A lone surrogate (JSON's "\ud800", from a vendor's attribute or a CRM's id) has no URL
    // form: encodeURIComponent throws on it, an unexpected error (500) for the whole answer after
    // the event was stored. Such a value names nothing a link could reach: the link is left out.
    if (value === undefined || value === '' || !wellFormed(value)) {
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
  // The first customDataItems of: the unverified mark, then each fact that has something to
  // show. One loop, and no fact past the cut is converted (it was, then dropped).
  const items: CustomDataItem[] = [];
  const unverified = unverifiedContactItem(contact, info);
  if (unverified) items.push(unverified);
  for (const fact of facts?.facts ?? []) {
    if (items.length >= ANSWER_LIMITS.customDataItems) break;
    const item = factToCustomData(fact);
    if (item) items.push(item);
  }
  // Fields in jivoAnswerSchema's order, the order the answer had when it was parsed by it.
  if (items.length > 0) answer.custom_data = items;
  if (info) answer.contact_info = info;
  // An attribute source's link is the CRM's own word on where the card is: it wins.
  const crmLink =
    safeLink(facts?.crmLink) ??
    (reply.crmLink
      ? fillCrmLink(reply.crmLink, contact, {
          consoleUrl: reply.crmLink.includes('{consoleUrl}') ? input.consoleLink?.(contact.id) : undefined,
        })
      : undefined) ??
    safeLink(contact.crmLink);
  answer.enable_assign = reply.enableAssign;
  if (crmLink) answer.crm_link = crmLink;
  // Not parsed again here (~10 µs per answer in the serving bridge): every part above is built
  // from checked values, and a property test (codec.test.ts) holds any contact's and facts' answer
  // to jivoAnswerSchema, so a bug shows in tests rather than as an answer Jivo silently ignores.
  return answer;
}
