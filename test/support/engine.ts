import { type Config, configSchema } from '../../src/config/schema.js';
import { createContactEngine } from '../../src/contacts/engine.js';
import type { ContactService } from '../../src/contacts/service.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createRedisStore } from '../../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './redis.js';

/**
 * Contact engines on real Redis with the default identity settings, each under a key prefix of
 * its own (named after `tag`); `cleanup` (for afterAll) removes every prefix made.
 */
export function redisEngines(tag: string) {
  const logger = createLogger('silent');
  const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
  const prefixes: string[] = [];
  let redisUrl: string | undefined;
  return {
    async create(limits: Partial<Config['limits']> = {}): Promise<ContactService> {
      redisUrl ??= await getTestRedisUrl();
      const keyPrefix = uniquePrefix(tag);
      prefixes.push(keyPrefix);
      const store = await createRedisStore({ url: redisUrl, keyPrefix, logger });
      return createContactEngine({
        store,
        identity,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
        limits,
      });
    },
    async cleanup(): Promise<void> {
      if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
    },
  };
}
