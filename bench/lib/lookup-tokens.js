// LiveTex lookup requests for the bench's tools, sealed with the bridge's own codec of a build.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { personOf } from './payloads.js';

/**
 * A sealer of lookup requests with `root`'s build (its dist/adapters/livetex/codec.js) under the
 * channel key `{ kid, key }` (as the admin API's POST /api/v1/channels/<id>/keys answers it):
 * `seal(n)` resolves to the compact JWE of a lookup of `personOf(pool, n % people)` with request
 * id `<prefix>-<n>`, a fresh jti (the bridge takes each once) and a life of 300 s from `iat`
 * (default: when it is sealed). The codec and the key's bytes are read once; sealing is the
 * caller's cost, about 30 µs a token.
 */
export async function lookupSealer(root, { kid, key }, { pool = 'known', people, prefix, iat } = {}) {
  if (!people || !prefix) throw new Error('lookupSealer: people and prefix are required');
  const codec = await import(pathToFileURL(join(root, 'dist', 'adapters', 'livetex', 'codec.js')).href);
  const keyBytes = codec.decodeKey(key);
  return (n) =>
    codec.sealRequest(
      codec.buildClaims({
        subject: { personId: personOf(pool, n % people).person },
        requestId: `${prefix}-${n}`,
        jti: randomUUID(),
        iat: iat ?? Date.now() / 1000,
        ttlSeconds: 300,
      }),
      kid,
      keyBytes,
    );
}
