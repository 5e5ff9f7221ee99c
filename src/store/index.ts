import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { describeStore, effectiveKeyPrefix, redisTargetOf } from './connection.js';
import { createMemoryStore } from './memory.js';
import { createRedisStore } from './redis.js';
import type { Store } from './types.js';

export {
  type ClientRole,
  closeRedisClient,
  createRedisClient,
  describeStore,
  effectiveKeyPrefix,
  type RedisClient,
  type RedisTarget,
  redisTargetOf,
} from './connection.js';
export { createMemoryStore, type MemoryStoreOptions } from './memory.js';
export { createRedisStore, type RedisStore, type RedisStoreOptions } from './redis.js';
export type * from './types.js';

/**
 * Redis (one server, Sentinel or Cluster) when the config names one, otherwise the in-memory
 * store (DESIGN §2, §12).
 */
export async function createStore(config: Config['store'], logger: Logger): Promise<Store> {
  const target = redisTargetOf(config);
  if (target === undefined) {
    logger.warn('store.redis is not set: using the in-memory store, NOTHING survives a restart');
    return createMemoryStore();
  }
  logger.info({ store: describeStore(config) }, 'store configured');
  return createRedisStore({
    target,
    keyPrefix: effectiveKeyPrefix(config),
    logger,
    durability: config.durability,
  });
}
