import type { Logger } from 'pino';
import type { ChannelConfig } from '../config/schema.js';
import { extend } from '../extend.js';
import type { Metrics } from '../metrics.js';
import { isHttpLink } from './links.js';
import type { Contact, Fact, Identifier } from './types.js';

/**
 * "What we know about this person", for agents: JivoChat's custom_data and LiveTex's attributes
 * are both built here, so the two vendors show the same facts in the same order.
 */

export interface FactSourceResult {
  facts: Fact[];
  crmLink?: string;
}

/** A company-side lookup (attributeSources in the config) or any other enrichment. */
export interface FactSource {
  id: string;
  /** Must give up when `signal` aborts: the vendor's answer does not wait for it. */
  lookup(contact: Contact, signal: AbortSignal): Promise<FactSourceResult>;
}

export interface FactRequest {
  /** The channel asking: its own activity is not news to its agent. */
  channelId: string;
  /** Sources that have not answered by then are left out. */
  deadlineMs: number;
  /** At most this many facts (JivoChat shows 10). */
  max?: number;
  /**
   * Whether the asking chat names this contact by a verified value (a person id, a verified
   * e-mail or phone) — issue 10 item 5. When it does not (the chat only typed an e-mail), every
   * fact about the contact rests on that visitor-typed value and is marked `verified: false`.
   * Absent: decided from the contact (it has a person id or a verified e-mail/phone).
   */
  anchored?: boolean;
}

export interface FactAnswer {
  facts: Fact[];
  /** From an attribute source, if one gave it. */
  crmLink?: string;
  /** Sources left out because they were late or failed. */
  missing: string[];
}

/** Global identifiers of an observation or contact that count as verified (issue 10 item 5). */
export function isVerifiedIdentifier(identifier: Identifier): boolean {
  if (identifier.channelId !== undefined) return false;
  const provenance = identifier.provenance ?? (identifier.kind === 'person' ? 'verified' : 'visitor');
  const kind = identifier.kind;
  return provenance === 'verified' && (kind === 'person' || kind === 'email' || kind === 'phone');
}

/**
 * Whether an observation's identifiers name this contact by a verified value (the `anchored` of
 * a FactRequest). Compared loosely (trimmed, case-folded); a value the engine normalised
 * differently (a phone's spelling) just counts as not anchoring — the safe side.
 */
export function anchoredBy(contact: Contact, identifiers: readonly Identifier[]): boolean {
  // Plain loops: this runs for every webhook whose answer shows facts (two closures each before).
  for (const given of identifiers) {
    if (!isVerifiedIdentifier(given)) continue;
    const value = given.value.trim().normalize('NFC').toLowerCase();
    for (const known of contact.identities)
      if (known.kind === given.kind && isVerifiedIdentifier(known) && known.value.toLowerCase() === value)
        return true;
  }
  return false;
}

/**
 * The contact's e-mails and phones that rest only on visitor-typed values (never given as
 * verified), for answers that show them ("e-mail (not verified)").
 */
export function unverifiedValues(contact: Contact): Set<string> {
  const out = new Set<string>();
  for (const identity of contact.identities) {
    if ((identity.kind === 'email' || identity.kind === 'phone') && !isVerifiedIdentifier(identity))
      out.add(identity.value);
  }
  return out;
}

/**
 * Whether the facts of this contact rest only on visitor-typed values for the asking chat: the
 * chat does not name it by a verified value, or the group was built by a merge on a
 * visitor-typed value (then the records it joined came with that value, not with proof).
 * Merges logged before provenance existed read with the old defaults (person verified,
 * e-mail and phone visitor-typed).
 */
export function restsOnVisitorTyped(contact: Contact, anchored?: boolean): boolean {
  const mergedOnTyped = contact.merges.some(
    (merge) =>
      merge.verified === false ||
      // Logged before merges said so: judged by the identifier that found the other group.
      (merge.via.provenance === undefined &&
        merge.via.channelId === undefined &&
        !isVerifiedIdentifier(merge.via)),
  );
  if (mergedOnTyped) return true;
  return !(anchored ?? contact.identities.some(isVerifiedIdentifier));
}

export interface FactService {
  forContact(contact: Contact, request: FactRequest): Promise<FactAnswer>;
  /**
   * The same answer as forContact, at once, when there is nothing to wait for (no attribute
   * source); undefined when there is (then forContact). The intake path asks this first: a
   * promise and its await per webhook for an answer that was ready cost it microtask jobs and
   * allocations (bench/HISTORY.md, twenty-fifth round).
   */
  forContactNow(contact: Contact, request: FactRequest): FactAnswer | undefined;
  addSource(source: FactSource): void;
  /** How many attribute sources answers wait for (the LiveTex lookup's even wait, issue 10 item 2). */
  sourceCount(): number;
}

const dateFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' });
/**
 * "14 Mar" for an ISO time (UTC), remembered by day: formatting through ICU cost ~6 µs per fact in
 * the serving bridge (profiled; ~1 µs in a loop), and the days shown repeat. Bounded: cleared when
 * full. Anything else (an offset, not a time) is formatted as before, unremembered.
 */
const DAY_CACHE_MAX = 4096;
const dayLabels = new Map<string, string>();
const UTC_TIME = /^\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,3})?Z$/;
export function dayLabel(iso: string): string {
  // Only a UTC time as toISOString writes it (what the engine stores) names its day in its first
  // ten characters: not an offset, and not 24:00, which Date reads as the next day.
  const day = UTC_TIME.test(iso) ? iso.slice(0, 10) : undefined;
  const known = day === undefined ? undefined : dayLabels.get(day);
  if (known !== undefined) return known;
  const label = dateFormat.format(new Date(iso));
  if (day !== undefined) {
    if (dayLabels.size >= DAY_CACHE_MAX) dayLabels.clear();
    dayLabels.set(day, label);
  }
  return label;
}

export function createFactService(options: {
  channels: readonly ChannelConfig[];
  vendorNames: ReadonlyMap<string, string>;
  logger: Logger;
  /** Counts links dropped for not being http(s). */
  metrics?: Metrics;
}): FactService {
  const droppedLinks = options.metrics?.counter(
    'chatbridge_unsafe_links_dropped_total',
    'Links for agents dropped because they were not http(s) (javascript:, data: ...), by where they came from',
    ['where'],
  );
  /** A url-type fact must be an http(s) URL, and so must any fact's link; otherwise it is left out. */
  function safeFact(fact: Fact): Fact | undefined {
    if (fact.type === 'url' && !isHttpLink(fact.value)) {
      droppedLinks?.inc({ where: 'fact' });
      return undefined;
    }
    if (fact.link !== undefined && !isHttpLink(fact.link)) {
      droppedLinks?.inc({ where: 'fact_link' });
      const { link: _dropped, ...rest } = fact;
      return rest;
    }
    return fact;
  }
  const sources: FactSource[] = [];
  const channelById = new Map(options.channels.map((channel) => [channel.id, channel]));

  /** Other channels' activity, labels, responsible agent: what the agent cannot see in their own tool. */
  function leadingFacts(contact: Contact, channelId: string): Fact[] {
    const facts: Fact[] = [];
    const others = contact.channels
      .filter(
        (entry) =>
          entry.channelId !== channelId &&
          // A CRM destination's link-back (DESIGN §10) is recorded like a channel; it is not chat activity.
          (channelById.has(entry.channelId) || options.vendorNames.has(entry.vendor)),
      )
      .sort((a, b) => b.lastSeen.localeCompare(a.lastSeen));
    for (const entry of others) {
      const channel = channelById.get(entry.channelId);
      const vendor = options.vendorNames.get(entry.vendor) ?? entry.vendor;
      const name = channel?.name ?? entry.channelId;
      const [count, noun] =
        entry.conversations > 0 ? [entry.conversations, 'conversation'] : [entry.observations, 'event'];
      facts.push({
        key: `channel.${entry.channelId}`,
        label: `${vendor} ${name}`,
        value: `${count} ${noun}${count === 1 ? '' : 's'}, last ${dayLabel(entry.lastSeen)}`,
        type: 'string',
      });
    }
    if (contact.labels.length > 0) {
      facts.push({ key: 'labels', label: 'Labels', value: contact.labels.join(', '), type: 'string' });
    }
    if (contact.responsibleAgent?.name || contact.responsibleAgent?.email) {
      facts.push({
        key: 'responsibleAgent',
        label: 'Responsible',
        value: contact.responsibleAgent.name ?? contact.responsibleAgent.email ?? '',
        type: 'string',
      });
    }
    return facts;
  }

  /** The person id and what other channels' vendors reported (the asking channel's agent sees its own). */
  function trailingFacts(contact: Contact, channelId: string): Fact[] {
    const facts: Fact[] = [];
    const person = contact.identities.find((identity) => identity.kind === 'person');
    if (person) facts.push({ key: 'personId', label: 'Customer id', value: person.value, type: 'string' });
    for (const key in contact.attributes) {
      const attribute = contact.attributes[key]!;
      if (attribute.channelId === channelId) continue;
      facts.push({
        key: `attr.${key}`,
        label: attribute.label ?? key,
        value: String(attribute.value),
        type: attribute.type ?? 'string',
      });
    }
    return facts;
  }

  /** The answer from the contact and what the sources gave (none: no sources). */
  function compose(
    contact: Contact,
    request: FactRequest,
    results: ReadonlyMap<string, FactSourceResult> | undefined,
    missing: ReadonlySet<string> | undefined,
  ): FactAnswer {
    const max = request.max ?? 50;
    // Order (most useful first): other channels, labels, responsible agent, the company's
    // attribute sources, then what vendors reported. A key appears once (first wins).
    const facts: Fact[] = [];
    const seen = new Set<string>();
    const add = (given: Fact) => {
      const fact = safeFact(given);
      if (!fact || seen.has(fact.key)) return;
      seen.add(fact.key);
      facts.push(fact);
    };
    let crmLink: string | undefined;
    leadingFacts(contact, request.channelId).forEach(add);
    for (const source of sources) {
      const result = results?.get(source.id);
      if (!result) continue;
      result.facts.forEach(add);
      if (result.crmLink !== undefined && !isHttpLink(result.crmLink))
        droppedLinks?.inc({ where: 'crm_link' });
      else crmLink ??= result.crmLink;
    }
    trailingFacts(contact, request.channelId).forEach(add);
    // Every fact here is about the contact beyond what the asking chat itself said: when the
    // contact is known to this chat only through visitor-typed values, none of it is proven.
    const marked = restsOnVisitorTyped(contact, request.anchored)
      ? facts.map((fact): Fact => extend(fact, { verified: false as const }))
      : facts;
    // Field by field: a spread in the middle of a literal costs an object and a slow copy (src/extend.ts).
    const answer: FactAnswer = { facts: marked.slice(0, max), missing: missing ? [...missing] : [] };
    if (crmLink) answer.crmLink = crmLink;
    return answer;
  }

  return {
    addSource(source) {
      sources.push(source);
    },
    sourceCount() {
      return sources.length;
    },
    async forContact(contact, request) {
      if (sources.length === 0) return compose(contact, request, undefined, undefined);
      // The deadline, its timer, the abort signal and what the sources answered exist only when
      // there is something to wait for: without attribute sources (the common install) a
      // request allocates none of them.
      const missing = new Set<string>();
      const results = new Map<string, FactSourceResult>();
      for (const source of sources) missing.add(source.id);
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, request.deadlineMs));
      });
      const lookups = sources.map(async (source) => {
        try {
          const result = await source.lookup(contact, controller.signal);
          if (!controller.signal.aborted) {
            results.set(source.id, result);
            missing.delete(source.id);
          }
        } catch (error) {
          options.logger.warn(
            { source: source.id, err: error },
            'attribute source failed; left out of the answer',
          );
        }
      });
      await Promise.race([Promise.all(lookups), deadline]);
      clearTimeout(timer);
      controller.abort();
      return compose(contact, request, results, missing);
    },
    forContactNow(contact, request) {
      return sources.length === 0 ? compose(contact, request, undefined, undefined) : undefined;
    },
  };
}
