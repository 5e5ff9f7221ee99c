import { type FactAnswer, isVerifiedIdentifier } from '../../src/contacts/facts.js';
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
  return {
    contactId: placeholderValue('contactId', contact, links),
    person: placeholderValue('person', contact, links),
    crmId: placeholderValue('crmId', contact, links),
    consoleUrl: placeholderValue('consoleUrl', contact, links),
    crmUrl: placeholderValue('crmUrl', contact, links),
  };
}

/** One placeholder's value (placeholderValues), worked out only when the template names it. */
function placeholderValue(
  name: (typeof crmLinkPlaceholders)[number],
  contact: Contact,
  links: { consoleUrl?: string | undefined },
): string | undefined {
  switch (name) {
    case 'contactId':
      return contact.id;
    case 'person':
      return contact.identities.find((identity) => identity.kind === 'person')?.value;
    case 'crmId': {
      // {crmId}: an identifier of kind `crm` (a CRM's own id, when an adapter or source reports
      // one), else a `crmId` attribute. Our convention: no vendor defines it.
      const crmIdentity = contact.identities.find((identity) => identity.kind === 'crm')?.value;
      const crmAttribute = contact.attributes.crmId?.value;
      return (
        crmIdentity ?? (crmAttribute === undefined || crmAttribute === '' ? undefined : String(crmAttribute))
      );
    }
    case 'consoleUrl':
      return links.consoleUrl;
    case 'crmUrl':
      // {crmUrl}: the CRM record's page, set when a CRM destination linked the contact (DESIGN §10).
      return contact.crmLink ?? undefined;
  }
}

const KNOWN_PLACEHOLDERS: ReadonlySet<string> = new Set<string>([
  'contactId',
  'person',
  'crmId',
  'consoleUrl',
  'crmUrl',
] satisfies (typeof crmLinkPlaceholders)[number][]);

/**
 * A crm_link template cut at its placeholders, once per template (a channel's template is the
 * same for every answer): `literals[i]` comes before `names[i]`, the last literal after the last
 * name. The matches are those of the `\{([^{}]*)\}` expression a global replace would find.
 */
interface CompiledTemplate {
  literals: string[];
  names: string[];
}
const TEMPLATE_CACHE_MAX = 256;
const compiledTemplates = new Map<string, CompiledTemplate>();

function compileTemplate(template: string): CompiledTemplate {
  const known = compiledTemplates.get(template);
  if (known !== undefined) return known;
  const literals: string[] = [];
  const names: string[] = [];
  let last = 0;
  for (const match of template.matchAll(/\{([^{}]*)\}/g)) {
    literals.push(template.slice(last, match.index));
    names.push(match[1] ?? '');
    last = match.index + match[0].length;
  }
  literals.push(template.slice(last));
  const compiled = { literals, names };
  // Templates come from the config (one per channel); the bound is for callers that pass others.
  if (compiledTemplates.size >= TEMPLATE_CACHE_MAX) compiledTemplates.clear();
  compiledTemplates.set(template, compiled);
  return compiled;
}

/**
 * Fill the template; a placeholder without a value leaves the whole link out. The template is
 * cut once (compileTemplate) and only the placeholders it names are worked out: a global replace
 * with a callback and every placeholder's value per answer was most of the answer's own time in
 * the serving bridge (bench/HISTORY.md, twenty-seventh round).
 */
export function fillCrmLink(
  template: string,
  contact: Contact,
  links: { consoleUrl?: string | undefined } = {},
): string | undefined {
  const { literals, names } = compileTemplate(template);
  let filled = literals[0]!;
  let missing = false;
  for (let index = 0; index < names.length; index++) {
    const name = names[index]!;
    const value = KNOWN_PLACEHOLDERS.has(name)
      ? placeholderValue(name as (typeof crmLinkPlaceholders)[number], contact, links)
      : // A name no config accepts (a direct call): looked up in the values object, as it always was.
        (placeholderValues(contact, links) as Record<string, unknown>)[name];
    // A lone surrogate (JSON's "\ud800", from a vendor's attribute or a CRM's id) has no URL
    // form: encodeURIComponent throws on it, an unexpected error (500) for the whole answer after
    // the event was stored. Such a value names nothing a link could reach: the link is left out.
    if (value === undefined || value === '' || !wellFormed(value as string)) {
      missing = true;
      continue;
    }
    // {consoleUrl} and {crmUrl} are whole URLs (our signed agent link, the CRM record's page):
    // encoding them would break them.
    filled +=
      (name === 'consoleUrl' || name === 'crmUrl' ? value : encodeURIComponent(value as string)) +
      literals[index + 1]!;
  }
  return missing ? undefined : safeLink(filled);
}

function contactInfo(contact: Contact): JivoAnswer['contact_info'] {
  const info: NonNullable<JivoAnswer['contact_info']> = {};
  let any = false;
  const name = contact.name ?? contact.names[0];
  const trimmedName = name?.trim();
  if (trimmedName) {
    info.name = truncate(trimmedName, ANSWER_LIMITS.name);
    any = true;
  }
  const email = contact.emails[0];
  if (email && email.length <= ANSWER_LIMITS.email) {
    info.email = email;
    any = true;
  }
  const phone = contact.phones[0];
  if (phone && phone.length <= ANSWER_LIMITS.phone) {
    info.phone = phone;
    any = true;
  }
  const description = contact.attributes.description?.value;
  const trimmedDescription = typeof description === 'string' ? description.trim() : '';
  if (trimmedDescription) {
    info.description = truncate(trimmedDescription, ANSWER_LIMITS.description);
    any = true;
  }
  return any ? info : undefined;
}

/** Whether `value` is one of the contact's e-mails or phones that rest only on visitor-typed values (unverifiedValues). */
function typedByVisitor(contact: Contact, value: string): boolean {
  for (const identity of contact.identities)
    if (
      identity.value === value &&
      (identity.kind === 'email' || identity.kind === 'phone') &&
      !isVerifiedIdentifier(identity)
    )
      return true;
  return false;
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
  // A scan of the few identities, not a Set of them per answer (unverifiedValues gives the same).
  const email = info?.email !== undefined && typedByVisitor(contact, info.email);
  const phone = info?.phone !== undefined && typedByVisitor(contact, info.phone);
  if (!email && !phone) return undefined;
  const which = email && phone ? 'e-mail, phone' : email ? 'e-mail' : 'phone';
  return { title: 'Not verified', content: `${which} (typed by a visitor)` };
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
