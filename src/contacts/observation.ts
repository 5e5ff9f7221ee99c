import { z } from 'zod';
import { issuesFromZod, ValidationError } from '../errors.js';
import { withoutPrototype } from './record.js';
import {
  type AttributeValue,
  type Identifier,
  type Observation,
  observationSchema,
  type ParsedObservation,
} from './types.js';

/**
 * The engine's check of an observation (pure). Callers hand it typed observations (adapters build
 * them from vendor payloads they validated at their own boundary; the CRM link-back builds one
 * from a contact), so a full zod parse here was mostly a second validation of the same data —
 * about 20 µs of the ~300 µs an observation costs. What types cannot promise is still checked,
 * by hand: timestamps in ISO 8601, identifier kinds and lengths, attribute values, plain-object
 * data. Anything that does not pass goes through observationSchema itself, so what is accepted,
 * the defaults applied and the errors reported are exactly the schema's (a property test holds
 * the two to it). The result is a fresh copy: the engine caps and rewrites it, never the caller's.
 * Other invariants (http-only crmLink, size caps, control characters in ids) are enforced by the
 * engine after this step, as before.
 */

const ISO_DATETIME = z.regexes.datetime({ offset: true });
const IDENTIFIER_KIND = /^[a-z][a-z0-9_]*$/;
const ATTRIBUTE_TYPES = new Set(['string', 'number', 'boolean', 'date', 'url', 'email', 'phone']);

/** Not what the fast path accepts: the schema decides (and reports). */
class Unchecked extends Error {}
const UNCHECKED = new Unchecked();

function string(value: unknown, min = 0, max = Number.POSITIVE_INFINITY): string {
  if (typeof value !== 'string' || value.length < min || value.length > max) throw UNCHECKED;
  return value;
}

function optionalString(value: unknown): string | undefined {
  return value === undefined ? undefined : string(value);
}

function strings(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw UNCHECKED;
  for (const item of value) string(item);
  return value.slice();
}

/** Each item of an array (holes included, as the schema sees them: undefined). */
function each<T>(value: unknown, item: (raw: unknown) => T): T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw UNCHECKED;
  const out = new Array<T>(value.length);
  for (let index = 0; index < value.length; index++) out[index] = item(value[index]);
  return out;
}

function object(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw UNCHECKED;
  return value as Record<string, unknown>;
}

/**
 * zod's record(string, unknown): a plain object, copied without an own `__proto__` key and
 * refused with symbol keys. Such objects are left to the schema; the rest are kept as given
 * (the same JSON either way, and nothing mutates them).
 */
function data(value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  const given = object(value);
  const prototype = Object.getPrototypeOf(given);
  if (prototype !== Object.prototype && prototype !== null) throw UNCHECKED;
  if (Object.hasOwn(given, '__proto__') || Object.getOwnPropertySymbols(given).length > 0) throw UNCHECKED;
  return given;
}

function timestamp(value: unknown): string {
  if (typeof value !== 'string' || !ISO_DATETIME.test(value)) throw UNCHECKED;
  return value;
}

function identifier(value: unknown): Identifier {
  const given = object(value);
  const kind = string(given.kind);
  if (!IDENTIFIER_KIND.test(kind)) throw UNCHECKED;
  const out: Identifier = { kind, value: string(given.value, 1, 512) };
  if (given.channelId !== undefined) out.channelId = string(given.channelId);
  if (given.provenance !== undefined) {
    if (given.provenance !== 'verified' && given.provenance !== 'visitor') throw UNCHECKED;
    out.provenance = given.provenance;
  }
  return out;
}

function attributes(value: unknown): Record<string, AttributeValue> {
  // No prototype (issue 10 item 14), in V8's fast mode (withoutPrototype says why).
  const out = withoutPrototype<AttributeValue>();
  if (value === undefined) return out;
  for (const [name, raw] of Object.entries(object(value))) {
    const given = object(raw);
    const item = given.value;
    if (
      typeof item !== 'string' &&
      typeof item !== 'boolean' &&
      !(typeof item === 'number' && Number.isFinite(item))
    )
      throw UNCHECKED;
    const attribute: AttributeValue = { value: item };
    if (given.label !== undefined) attribute.label = string(given.label);
    if (given.type !== undefined) {
      if (typeof given.type !== 'string' || !ATTRIBUTE_TYPES.has(given.type)) throw UNCHECKED;
      attribute.type = given.type as NonNullable<AttributeValue['type']>;
    }
    out[name] = attribute;
  }
  return out;
}

function fastCheck(input: unknown): ParsedObservation {
  const given = object(input);
  const observation: ParsedObservation = {
    channelId: string(given.channelId),
    vendor: string(given.vendor),
    at: timestamp(given.at),
    idempotencyKey: string(given.idempotencyKey, 1, 512),
    identifiers: each(given.identifiers, identifier),
    names: strings(given.names),
    attributes: attributes(given.attributes),
    labels: strings(given.labels),
    timeline: each(given.timeline, (raw) => {
      const entry = object(raw);
      return {
        key: entry.key === undefined ? '0' : string(entry.key, 1),
        at: timestamp(entry.at),
        type: string(entry.type, 1),
        summary: string(entry.summary),
        data: data(entry.data),
      };
    }),
    events: each(given.events, (raw) => {
      const event = object(raw);
      return {
        type: string(event.type),
        key: event.key === undefined ? '0' : string(event.key),
        data: data(event.data),
      };
    }),
  };
  // null is an explicit unassignment (types.ts), kept as null.
  if (given.responsibleAgent === null) observation.responsibleAgent = null;
  else if (given.responsibleAgent !== undefined) {
    const agent = object(given.responsibleAgent);
    const email = optionalString(agent.email);
    const name = optionalString(agent.name);
    const id = optionalString(agent.id);
    // Built field by field: a literal that starts with a spread is slow on Node 20 (src/extend.ts).
    const responsible: NonNullable<Observation['responsibleAgent']> = {};
    if (email !== undefined) responsible.email = email;
    if (name !== undefined) responsible.name = name;
    if (id !== undefined) responsible.id = id;
    observation.responsibleAgent = responsible;
  }
  const crmLink = optionalString(given.crmLink);
  if (crmLink !== undefined) observation.crmLink = crmLink;
  if (given.formerIdempotencyKeys !== undefined) {
    const former = each(given.formerIdempotencyKeys, (raw) => string(raw, 1, 512));
    if (former.length > 4) throw UNCHECKED;
    observation.formerIdempotencyKeys = former;
  }
  if (given.sharedIdempotencyKeys !== undefined) {
    const shared = each(given.sharedIdempotencyKeys, (raw) => string(raw, 1, 512));
    if (shared.length > 4) throw UNCHECKED;
    observation.sharedIdempotencyKeys = shared;
  }
  if (given.snapshot !== undefined) {
    if (typeof given.snapshot !== 'boolean') throw UNCHECKED;
    observation.snapshot = given.snapshot;
  }
  return observation;
}

/** The observation as observationSchema would parse it; ValidationError (invalid_observation) if not. */
export function checkObservation(input: Observation): ParsedObservation {
  try {
    return fastCheck(input);
  } catch (error) {
    if (!(error instanceof Unchecked)) throw error;
  }
  const parsed = observationSchema.safeParse(input);
  if (!parsed.success) {
    throw new ValidationError('invalid observation', issuesFromZod(parsed.error), 'invalid_observation');
  }
  return parsed.data;
}

/** Identifier kinds one observation may carry (the adapters use five); further kinds are dropped. */
export const IDENTIFIER_KINDS_PER_OBSERVATION = 16;

/**
 * At most `perKind` identifiers of each kind, the first ones given, and at most
 * IDENTIFIER_KINDS_PER_OBSERVATION kinds (limits.identifiersPerKind): per kind rather than in
 * total, so that 3,000 e-mails listed before a visitor token do not cost the token. The same
 * array when nothing is cut; a list no longer than `perKind` is not walked.
 */
export function capIdentifiersPerKind<T extends { kind: string }>(identifiers: T[], perKind: number): T[] {
  if (identifiers.length <= perKind) return identifiers;
  const counts = new Map<string, number>();
  const kept = identifiers.filter((identifier) => {
    const count = counts.get(identifier.kind) ?? 0;
    if (count === 0 && counts.size >= IDENTIFIER_KINDS_PER_OBSERVATION) return false;
    if (count >= perKind) return false;
    counts.set(identifier.kind, count + 1);
    return true;
  });
  return kept.length < identifiers.length ? kept : identifiers;
}
