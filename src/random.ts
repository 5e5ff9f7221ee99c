import { randomFillSync } from 'node:crypto';

/**
 * Random bytes for the hot paths, `size` at a time from a buffer refilled every `draws` calls:
 * one `randomBytes()` per call is a crypto job each (~30 µs of CPU measured under load), a
 * draw from the pool a subarray. The bytes are the CSPRNG's either way. A draw is a view into
 * the pool: read or copy it before `draws` more calls refill it (every caller here uses it at once).
 */
export function randomPool(size: number, draws: number): () => Buffer {
  const pool = Buffer.alloc(size * draws);
  let at = pool.length;
  return () => {
    if (at === pool.length) {
      randomFillSync(pool);
      at = 0;
    }
    const drawn = pool.subarray(at, at + size);
    at += size;
    return drawn;
  };
}
