import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { FactSource } from '../contacts/facts.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';
import { createHttpAttributeSource } from './source.js';

export { AttributeSourceError, createHttpAttributeSource } from './source.js';

/**
 * Attribute sources (DESIGN §3 attributeSources): the company's CRM lookups that enrich vendor
 * answers (JivoChat custom_data, LiveTex attributes) through the FactService, which applies the
 * vendor's deadline and aborts what is late.
 */
export function createAttributeSources(deps: {
  config: Config;
  http: HttpClient;
  logger: Logger;
  metrics: Metrics;
  /** Clock for the answer cache (tests). */
  now?: () => number;
  /** Contacts remembered per source (default 10 000). */
  cacheMaxEntries?: number;
}): FactSource[] {
  return deps.config.attributeSources.map((source) =>
    createHttpAttributeSource(source, {
      http: deps.http,
      logger: deps.logger,
      metrics: deps.metrics,
      ...(deps.now ? { now: deps.now } : {}),
      ...(deps.cacheMaxEntries !== undefined ? { cacheMaxEntries: deps.cacheMaxEntries } : {}),
    }),
  );
}
