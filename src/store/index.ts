import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { createMemoryStore } from './memory.js';
import { createRedisStore } from './redis.js';
import type { Store } from './types.js';

export { createMemoryStore, type MemoryStoreOptions } from './memory.js';
export { createRedisStore, type RedisStore, type RedisStoreOptions } from './redis.js';
export type * from './types.js';

/** Redis when `store.redis` is configured, otherwise the in-memory store (DESIGN §2). */
export async function createStore(config: Config['store'], logger: Logger): Promise<Store> {
  if (config.redis === undefined) {
    logger.warn('store.redis is not set: using the in-memory store, NOTHING survives a restart');
    return createMemoryStore();
  }
  return createRedisStore({ url: config.redis, keyPrefix: config.keyPrefix, logger });
}
