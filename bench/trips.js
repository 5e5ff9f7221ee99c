// `node bench/trips.js` (after `npm run build`): Redis commands and round trips per observation
// of the contact engine, and per LiveTex attribute lookup (over HTTP, through the whole bridge),
// on a private redis-server (or REDIS_URL), one request at a time.
// Commands are counted where the client sends them (ioredis sendCommand, so MULTI and EXEC count
// as commands); a round trip is the commands sent before any answer came back. A script counts
// as one command (what it runs inside Redis is neither a command sent nor a trip).

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
const { parseConfig } = await import(`${DIST}/src/config/load.js`);
const { defaultRegistry } = await import(`${DIST}/src/registry.js`);
const { createBridge } = await import(`${DIST}/src/bridge.js`);
const { buildClaims, sealRequest } = await import(`${DIST}/adapters/livetex/codec.js`);

const redis = await benchRedis();
const logger = createLogger('silent');
const store = await createRedisStore({
  url: redis.url,
  keyPrefix: `trips${randomBytes(3).toString('hex')}`,
  logger,
});
const engine = createContactEngine({
  store,
  identity: configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
  events: createOutboxPublisher(store),
  metrics: new Metrics({ defaultMetrics: false }),
  logger,
});

const sent = countTrips(store.client);

const observation = (n, extra = {}) => ({
  channelId: 'site',
  vendor: 'jivochat',
  at: new Date(Date.UTC(2026, 10, 1, 12, 0, n)).toISOString(),
  idempotencyKey: `chat-${n}`,
  identifiers: [
    { kind: 'person', value: `person-${extra.person ?? n}` },
    { kind: 'email', value: `p${extra.person ?? n}@example.com` },
    { kind: 'phone', value: `+7916${String(extra.person ?? n).padStart(7, '0')}` },
    { kind: 'visitor', value: `v${extra.person ?? n}`, channelId: 'site' },
  ],
  names: ['Anna Petrova'],
  timeline: [
    { key: 'accepted', at: new Date().toISOString(), type: 'conversation.started', summary: 'chat' },
  ],
});

async function count(label, run) {
  const samples = [];
  for (let i = 0; i < 20; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    sent.reset();
    await run(i);
    await new Promise((resolve) => setImmediate(resolve));
    samples.push({ commands: sent.names.length, trips: sent.trips, names: sent.names.join(' ') });
  }
  const last = samples[samples.length - 1];
  const avg = (field) => samples.reduce((sum, s) => sum + s[field], 0) / samples.length;
  process.stdout.write(
    `${label.padEnd(40)} ${avg('commands').toFixed(1).padStart(5)} commands ${avg('trips').toFixed(1).padStart(4)} trips   (${last.names})\n`,
  );
}

await engine.observe(observation(0)); // the installation salt is read once per process
await count('new contact', (i) => engine.observe(observation(1000 + i)));
await count('known contact (new chat)', (i) => engine.observe(observation(2000 + i, { person: 1000 })));
// A vendor's retry is of a person's latest event (its answer was late); an older one is rarer.
await count('repeated delivery (the latest)', () => engine.observe(observation(2019, { person: 1000 })));
await count('repeated delivery (an older one)', () => engine.observe(observation(2000, { person: 1000 })));
// One person, 20 new chats at once (the bench's one-person scenario in small): per observation.
{
  sent.reset();
  await Promise.all(
    Array.from({ length: 20 }, (_, i) => engine.observe(observation(3000 + i, { person: 1000 }))),
  );
  await new Promise((resolve) => setImmediate(resolve));
  process.stdout.write(
    `${'one person, 20 at once (per observation)'.padEnd(40)} ${(sent.names.length / 20).toFixed(1).padStart(5)} commands ${(sent.trips / 20).toFixed(1).padStart(4)} trips\n`,
  );
}

// The LiveTex attribute lookup, over HTTP through a bridge on its own store (nothing started in
// the background, so every command counted is the request's).
const lookupStore = await createRedisStore({
  url: redis.url,
  keyPrefix: `tripslt${randomBytes(3).toString('hex')}`,
  logger,
});
sent.watch(lookupStore.client);
const registry = defaultRegistry();
const config = parseConfig(
  {
    admin: { token: 'x'.repeat(16) },
    server: { port: 0, host: '127.0.0.1' },
    log: { level: 'silent' },
    secrets: { masterKey: randomBytes(32).toString('base64') },
    channels: [{ id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' }],
  },
  registry,
  {},
);
const bridge = await createBridge({ config, registry, logger, store: lookupStore });
const server = await bridge.listen(0, '127.0.0.1');
const base = `http://127.0.0.1:${server.address().port}`;
const generated = await (
  await fetch(`${base}/api/v1/channels/app/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${'x'.repeat(16)}` },
  })
).json();
const kid = generated.kid;
const material = new Uint8Array(Buffer.from(generated.key, 'base64url'));
await bridge.context.contacts.observe({ ...observation(1), channelId: 'app', vendor: 'livetex' });
let jti = 0;
async function lookup(personId) {
  const claims = buildClaims({
    subject: { personId },
    requestId: `r-${jti}`,
    jti: `jti-${jti++}`,
    iat: Date.now() / 1000,
  });
  const body = await sealRequest(claims, kid, material);
  const response = await fetch(`${base}/livetex/app/attributes`, {
    method: 'POST',
    headers: { 'content-type': 'application/jose' },
    body,
  });
  await response.text();
  if (response.status !== 200) throw new Error(`lookup answered ${response.status}`);
}
await lookup('person-1'); // warm: first request of a kid
await count('LiveTex lookup, found', () => lookup('person-1'));
await count('LiveTex lookup, not found', () => lookup('person-nobody'));
await bridge.close();
await store.close();
await redis.stop();
