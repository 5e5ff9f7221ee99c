import { createSecretKey } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { serveBaseline } from './lib/baseline.js';

/**
 * The second baseline of `npm run bench`, "the floor": bare Koa (as bench/bare.js) plus the least
 * any intake that is durable before it answers must do on this machine — one Redis script per
 * request, on one ioredis connection set up as the bridge's (no auto-pipelining). It answers what
 * bare Koa answers, so floor / bare is what one trip to Redis per request costs here, and
 * bridge / floor what the bridge's own code costs on top of that physical minimum.
 *
 * - A JSON body: parsed, then one script stores it (SET NX of a per-request idempotency key, SET
 *   of the body as the "record"; both expire, and record keys are reused modulo 10,000 so that
 *   the run's memory stays bounded).
 * - A JOSE body (the LiveTex lookup): opened with the bridge's own JWE codec and the channel key
 *   the bench gives it, one script (SET NX of the jti as a replay guard, GET of a record), the
 *   answer sealed with the same codec. No identity lookup, no attribute rules: only the protocol
 *   and the trip.
 *
 * Usage: node bench/floor.js <port> <redisUrl> <keyPrefix>. The reply size is set as for bare
 * Koa (`PUT /__bench/reply`); the lookup key with `PUT /__bench/lookup-key {"kid", "key"}`.
 */
const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const { bridgeJweCodec, decodeKey, JOSE_CONTENT_TYPE } = await import(
  join(ROOT, 'dist', 'adapters', 'livetex', 'codec.js')
);

const [portArg, redisUrl, prefix] = process.argv.slice(2);
const port = Number(portArg);
const redis = new Redis(redisUrl, { enableAutoPipelining: false, keyPrefix: `${prefix}:` });
redis.defineCommand('floorStore', {
  numberOfKeys: 2,
  lua: `if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`,
});
redis.defineCommand('floorLookup', {
  numberOfKeys: 2,
  lua: `if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
return redis.call('GET', KEYS[2])`,
});
const TTL_MS = 120_000;
const RECORD_SLOTS = 10_000;
let counter = 0;

let lookupKey = null;

async function handle(ctx, raw, reply) {
  if (ctx.path === '/__bench/lookup-key') {
    const { kid, key } = JSON.parse(raw.toString('utf8'));
    lookupKey = { kid, key: createSecretKey(decodeKey(key)) };
    // The record the lookup reads: about what the bridge's contact record weighs.
    await redis.set('record', JSON.stringify({ names: ['Anna Petrova'], pad: 'x'.repeat(1500) }));
    ctx.body = { ok: true };
    return;
  }
  if (ctx.path === '/ready') {
    ctx.body = { ok: true };
    return;
  }
  const n = counter++;
  if (raw.length > 0 && raw[0] === 0x7b) {
    const text = raw.toString('utf8');
    JSON.parse(text);
    await redis.floorStore(`seen:${n}`, `rec:${n % RECORD_SLOTS}`, text, TTL_MS);
    reply.send(ctx);
    return;
  }
  if (lookupKey === null) throw new Error('floor: PUT /__bench/lookup-key first');
  const sealed = bridgeJweCodec.readRequest(raw, JOSE_CONTENT_TYPE);
  const claims = await bridgeJweCodec.openRequest(sealed, lookupKey.key, {
    now: new Date(),
    maxSkewSeconds: 30,
  });
  // The bench cycles its sealed tokens through the floor (it outruns the pool): the request number
  // in the key keeps each guard new, so the work stays a real SET NX of a key never seen.
  const record = await redis.floorLookup(`jti:${claims.jti}:${n}`, 'record', TTL_MS);
  if (record === null) {
    ctx.status = 401;
    ctx.body = { error: 'replayed' };
    return;
  }
  const sealedAnswer = await bridgeJweCodec.sealAnswer(
    {
      requestId: claims.requestId,
      found: true,
      attributes: [{ key: 'name', label: 'Name', value: JSON.parse(record).names[0], type: 'string' }],
    },
    lookupKey.kid,
    lookupKey.key,
  );
  ctx.type = sealedAnswer.contentType;
  ctx.body = sealedAnswer.body;
}

serveBaseline({ port, name: 'floor (koa + redis)', handle });
