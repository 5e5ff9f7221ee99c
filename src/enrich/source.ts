import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { AttributeSourceConfig } from '../config/schema.js';
import type { FactSource, FactSourceResult } from '../contacts/facts.js';
import { isHttpLink } from '../contacts/links.js';
import { attributeTypeSchema, type Fact } from '../contacts/types.js';
import type { Metrics } from '../metrics.js';
import { type HttpClient, HttpNetworkError } from '../net/http.js';

/**
 * One attribute source (DESIGN §3 attributeSources): `POST {contact}` to the company's URL,
 * answer `{attributes: [{key, label, value, type}], crmLink?}`. The request carries the
 * caller's abort signal and the source's own strict timeout, whichever comes first; either
 * cancels the HTTP request (undici closes the socket), so nothing outlives the vendor's deadline.
 *
 * Answers: 2xx with the shape above -> facts (entries that do not fit are dropped and logged);
 * 404 -> "nothing known" (no facts, cached like an answer); anything else, an unusable body, a
 * timeout or a network error -> the lookup fails and the FactService leaves the source out.
 * Only answers are cached; failures are retried on the next lookup.
 */

export class AttributeSourceError extends Error {
  constructor(
    readonly sourceId: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(`attribute source ${sourceId}: ${message}`, options);
    this.name = 'AttributeSourceError';
  }
}

/** Tolerant where it costs nothing (label, type), strict where the answer would be meaningless. */
const answerSchema = z.object({
  attributes: z.array(z.unknown()),
  crmLink: z.string().nullish(),
});
const attributeSchema = z.object({
  key: z.string().min(1).max(200),
  label: z.string().nullish(),
  value: z.union([z.string(), z.number(), z.boolean()]),
  type: z.string().nullish(),
});

/**
 * What one answer may hold: an agent is shown at most 50 facts (the fact service's default), so
 * more are never used; labels and values as limits.fieldLength and limits.attributeValueLength
 * default to. The cut keeps the cache (cacheMaxEntries answers) small whatever a source sends.
 */
const FACTS_PER_ANSWER = 100;
const FACT_LABEL_LENGTH = 2000;
const FACT_VALUE_LENGTH = 4000;

const clip = (value: string, limit: number) =>
  value.length > limit ? `${value.slice(0, limit - 1)}…` : value;

export interface AttributeSourceOptions {
  http: HttpClient;
  logger: Logger;
  metrics: Metrics;
  /** Clock for the cache; tests pin it. */
  now?: () => number;
  /** Contacts remembered per source (default 10 000). */
  cacheMaxEntries?: number;
}

export function createHttpAttributeSource(
  config: AttributeSourceConfig,
  options: AttributeSourceOptions,
): FactSource {
  const { http } = options;
  const logger = options.logger.child({ attributeSource: config.id });
  const lookups = options.metrics.counter(
    'chatbridge_attribute_source_lookups_total',
    'Attribute source lookups, by source and outcome (hit, ok, not_found, invalid, error, timeout, aborted)',
    ['source', 'outcome'],
  );
  const seconds = options.metrics.histogram(
    'chatbridge_attribute_source_seconds',
    'Duration of attribute source requests (cache hits excluded), by source',
    ['source'],
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  );
  // In process on purpose: the cache takes a CRM round trip out of a vendor answer with a
  // deadline of a second or two, so it must cost nothing to read (a Redis trip would eat into the
  // same budget); a per-instance copy at most cacheTtlSeconds stale is what the config promises.
  // cacheTtlSeconds 0 turns it off. lru-cache only bounds the entries; the expiry is
  // kept with each answer and checked here, not left to lru-cache's ttl: that one serves an entry
  // until strictly past its ttl, and never expires an entry stored when the clock read 0 (it
  // takes a start of 0 for "no ttl"), which a test's pinned clock does.
  const maxEntries = options.cacheMaxEntries ?? 10_000;
  const ttl = config.cacheTtlSeconds * 1000;
  const now = options.now ?? Date.now;
  const entries =
    ttl > 0 && maxEntries > 0
      ? new LRUCache<string, { value: FactSourceResult; expiresAt: number }>({ max: maxEntries })
      : undefined;
  const cache = entries && {
    get(key: string): FactSourceResult | undefined {
      const entry = entries.get(key);
      if (!entry) return undefined;
      if (entry.expiresAt > now()) return entry.value;
      entries.delete(key);
      return undefined;
    },
    set(key: string, value: FactSourceResult): void {
      entries.set(key, { value, expiresAt: now() + ttl });
    },
  };
  const count = (outcome: string) => lookups.inc({ source: config.id, outcome });

  function toResult(body: unknown): FactSourceResult {
    const answer = answerSchema.safeParse(body);
    if (!answer.success) {
      const issue = answer.error.issues[0];
      throw new AttributeSourceError(
        config.id,
        `unusable answer (${issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'not JSON'})`,
      );
    }
    const facts: Fact[] = [];
    let dropped = 0;
    let cut = false;
    for (const item of answer.data.attributes) {
      if (facts.length >= FACTS_PER_ANSWER) {
        cut = true;
        break;
      }
      const attribute = attributeSchema.safeParse(item);
      if (!attribute.success) {
        dropped += 1;
        continue;
      }
      const type = attributeTypeSchema.safeParse(attribute.data.type);
      const label = attribute.data.label || attribute.data.key;
      const value = String(attribute.data.value);
      if (label.length > FACT_LABEL_LENGTH || value.length > FACT_VALUE_LENGTH) cut = true;
      facts.push({
        key: attribute.data.key,
        label: clip(label, FACT_LABEL_LENGTH),
        value: clip(value, FACT_VALUE_LENGTH),
        type: type.success ? type.data : 'string',
      });
    }
    if (cut) {
      options.metrics.truncated().inc({ what: 'attribute_source' });
      logger.warn(
        { attributes: answer.data.attributes.length },
        `attribute source answer cut to ${FACTS_PER_ANSWER} entries, labels and values to ${FACT_LABEL_LENGTH} and ${FACT_VALUE_LENGTH} characters`,
      );
    }
    if (dropped > 0)
      logger.warn(
        { dropped },
        'attribute source answer had entries without key or value; they were left out',
      );
    const link = answer.data.crmLink;
    const crmLink = link && isHttpLink(link) ? link : undefined;
    if (link && !crmLink) logger.warn('attribute source crmLink is not an http(s) URL; left out');
    return { facts, ...(crmLink ? { crmLink } : {}) };
  }

  return {
    id: config.id,
    async lookup(contact, signal) {
      signal.throwIfAborted();
      const cached = cache?.get(contact.id);
      if (cached) {
        count('hit');
        return cached;
      }
      const started = performance.now();
      let response: Awaited<ReturnType<HttpClient['send']>>;
      try {
        response = await http.send({
          method: 'POST',
          url: config.url,
          headers: { accept: 'application/json', ...config.headers },
          body: { contact },
          timeoutMs: config.timeoutMs,
          signal,
        });
      } catch (error) {
        if (signal.aborted) {
          count('aborted');
          throw new AttributeSourceError(config.id, 'lookup cancelled (the vendor answer did not wait)', {
            cause: error,
          });
        }
        const timedOut = error instanceof HttpNetworkError && error.timedOut;
        count(timedOut ? 'timeout' : 'error');
        throw new AttributeSourceError(config.id, (error as Error).message, { cause: error });
      } finally {
        seconds.observe({ source: config.id }, (performance.now() - started) / 1000);
      }
      if (response.status === 404) {
        count('not_found');
        const nothing: FactSourceResult = { facts: [] };
        cache?.set(contact.id, nothing);
        return nothing;
      }
      if (response.status < 200 || response.status >= 300) {
        count('error');
        throw new AttributeSourceError(config.id, `answered HTTP ${response.status}`);
      }
      let result: FactSourceResult;
      try {
        result = toResult(response.json);
      } catch (error) {
        count('invalid');
        throw error;
      }
      count('ok');
      cache?.set(contact.id, result);
      return result;
    },
  };
}
