// `node bench/name-search.js` (after `npm run build`): what one console name search costs when a
// word is common. Loads BENCH_CONTACTS contacts (default 50,000) through the contact engine, all
// named "Александр <surname>", every second one "Александр Иванов" (the others also "Сергеевич",
// and the first one both), on a private redis-server (or
// REDIS_URL, under a private key prefix), then searches as the console does (find by name, 51
// contacts asked: one more than the page lists) and reports, per search: wall time (median of
// BENCH_SEARCHES, default 20), commands sent, round trips (as bench/trips.js counts them: the
// commands sent before any answer came back share one), bytes Redis answered (read on the
// client's socket) and contacts returned. One search at a time, nothing else running against the Redis.

import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const DIST = join(ROOT, 'dist');
const { benchRedis } = await import('./lib/redis.js');
const { countTrips } = await import('./lib/trips.js');
const { createRedisStore } = await import(`${DIST}/src/store/redis.js`);
const { createContactEngine } = await import(`${DIST}/src/contacts/engine.js`);
const { createOutboxPublisher } = await import(`${DIST}/src/events/outbox.js`);
const { Metrics } = await import(`${DIST}/src/metrics.js`);
const { createLogger } = await import(`${DIST}/src/logger.js`);
const { configSchema } = await import(`${DIST}/src/config/schema.js`);

const CONTACTS = Number(process.env.BENCH_CONTACTS ?? 50_000);
const SEARCHES = Number(process.env.BENCH_SEARCHES ?? 20);

const redis = await benchRedis();
const logger = createLogger('silent');
const prefix = `namesearch${randomBytes(3).toString('hex')}`;
const store = await createRedisStore({ url: redis.url, keyPrefix: prefix, logger });
const engine = createContactEngine({
  store,
  identity: configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
  events: createOutboxPublisher(store),
  metrics: new Metrics({ defaultMetrics: false }),
  logger,
});

const started = performance.now();
for (let start = 0; start < CONTACTS; start += 500) {
  await Promise.all(
    Array.from({ length: Math.min(500, CONTACTS - start) }, (_, offset) => {
      const n = start + offset;
      return engine.observe({
        channelId: 'site',
        vendor: 'jivochat',
        at: new Date(Date.UTC(2026, 10, 1, 12, 0, 0, n)).toISOString(),
        idempotencyKey: `chat-${n}`,
        identifiers: [{ kind: 'person', value: `person-${n}` }],
        names: [
          n === 0
            ? 'Александр Иванов Сергеевич'
            : n % 2 === 0
              ? 'Александр Иванов'
              : `Александр Фамилия${n} Сергеевич`,
        ],
        timeline: [],
      });
    }),
  );
}
process.stdout.write(
  `${CONTACTS} contacts loaded in ${((performance.now() - started) / 1000).toFixed(1)} s ` +
    `(set sizes: александр ${await store.client.scard('sidx:name:александр')}, иванов ${await store.client.scard('sidx:name:иванов')})\n`,
);

let bytes = 0;
store.client.stream.on('data', (chunk) => {
  bytes += chunk.length;
});
const sent = countTrips(store.client);

async function measure(label, name) {
  const times = [];
  let last = { bytes: 0, commands: 0, trips: 0, found: 0 };
  for (let i = 0; i < SEARCHES; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    bytes = 0;
    sent.reset();
    const t0 = performance.now();
    const found = await engine.find({ name, limit: 51 });
    times.push(performance.now() - t0);
    await new Promise((resolve) => setImmediate(resolve));
    last = { bytes, commands: sent.names.length, trips: sent.trips, found: found.length };
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  process.stdout.write(
    `${label.padEnd(34)} ${median.toFixed(1).padStart(8)} ms (median) ${String(last.commands).padStart(5)} commands ${String(last.trips).padStart(4)} trips ` +
      `${(last.bytes / 1024).toFixed(1).padStart(8)} KiB read   ${last.found} contacts\n`,
  );
}

await measure('"Александр" (1 word)', 'Александр');
await measure('"Александр Иванов" (2 words)', 'Александр Иванов');
await measure('"Иванов Сергеевич" (25,000 × 25,000, 1 match)', 'Иванов Сергеевич');
await measure('"Александр Фамилия7" (1 match)', 'Александр Фамилия7');
await measure('"Фамилия7" (1 match)', 'Фамилия7');

// Leave a shared Redis as it was (a private one is killed on exit).
if (!redis.private) {
  let cursor = '0';
  const raw = store.client.duplicate({ keyPrefix: '' });
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await raw.del(...keys);
  } while (cursor !== '0');
  raw.disconnect();
}
await store.close();
await redis.stop();
