import { personOf } from './payloads.js';

/**
 * The timeline scenario's contact (bench/run.js, bench/cpu.js): one person with `entries` entries
 * (message.received, a Russian text and a summary each), written through the engine of the
 * checkout whose `dist` is given, in process, on the bridge's Redis and key prefix, 100 entries
 * per observation. Resolves to the contact's id.
 */
export async function seedTimeline({ dist, redisUrl, keyPrefix, entries }) {
  const { createRedisStore } = await import(`${dist}/src/store/redis.js`);
  const { createContactEngine } = await import(`${dist}/src/contacts/engine.js`);
  const { createOutboxPublisher } = await import(`${dist}/src/events/outbox.js`);
  const { Metrics } = await import(`${dist}/src/metrics.js`);
  const { createLogger } = await import(`${dist}/src/logger.js`);
  const { configSchema } = await import(`${dist}/src/config/schema.js`);
  const logger = createLogger('silent');
  const store = await createRedisStore({ url: redisUrl, keyPrefix, logger });
  const engine = createContactEngine({
    store,
    identity: configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
    events: createOutboxPublisher(store),
    metrics: new Metrics({ defaultMetrics: false }),
    logger,
  });
  const who = personOf('timeline', 0);
  const perObservation = 100;
  let contactId;
  const base = Date.parse('2025-01-01T00:00:00.000Z');
  for (let batch = 0; batch < entries / perObservation; batch++) {
    const timeline = Array.from({ length: perObservation }, (_, offset) => {
      const n = batch * perObservation + offset;
      return {
        key: String(n),
        at: new Date(base + n * 60_000).toISOString(),
        type: 'message.received',
        summary: `Message ${n} from ${who.name}: where is my order?`,
        data: {
          text: `Добрый день! Где мой заказ ${n}? Он должен был прийти вчера.`,
          author: { type: 'visitor', name: who.name },
        },
      };
    });
    const { contact } = await engine.observe({
      channelId: 'site',
      vendor: 'jivochat',
      at: new Date(base + batch * perObservation * 60_000).toISOString(),
      idempotencyKey: `bench:timeline:${batch}`,
      identifiers: [
        { kind: 'person', value: who.person },
        { kind: 'email', value: who.email },
      ],
      names: [who.name],
      timeline,
    });
    contactId = contact.id;
  }
  await store.close();
  return contactId;
}
