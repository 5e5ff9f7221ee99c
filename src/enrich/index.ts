import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { FactSource } from '../contacts/facts.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';

/**
 * Attribute sources (DESIGN §3 attributeSources): the company's CRM lookups that enrich vendor
 * answers. PLACEHOLDER until the outbound-events issue lands: no sources.
 */
export function createAttributeSources(_deps: {
  config: Config;
  http: HttpClient;
  logger: Logger;
  metrics: Metrics;
}): FactSource[] {
  return [];
}
