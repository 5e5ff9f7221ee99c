import type Router from '@koa/router';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { EventPublisher } from '../events/outbox.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';
import type { Store } from '../store/types.js';

/**
 * Outbound delivery (DESIGN §8): drains the outbox into per-destination queues and delivers.
 * PLACEHOLDER until the outbound-events issue lands: events stay in the outbox, nothing is lost.
 */
export interface DeliveryDeps {
  config: Config;
  store: Store;
  /** The Redis URL when the store is Redis (BullMQ needs its own connections), else undefined. */
  redisUrl: string | undefined;
  keyPrefix: string;
  events: EventPublisher;
  http: HttpClient;
  logger: Logger;
  metrics: Metrics;
  now(): Date;
}

export interface Delivery {
  /** Start draining and delivering (worker role). */
  start(): Promise<void>;
  /** Admin API routes under /api/v1 (deliveries list and replay); the router already checks the admin token. */
  registerRoutes(router: Router): void;
  close(): Promise<void>;
}

export function createDelivery(_deps: DeliveryDeps): Delivery {
  return {
    async start() {},
    registerRoutes() {},
    async close() {},
  };
}
