import { serveBaseline } from './lib/baseline.js';

/**
 * The baseline for `npm run bench`: a bare Koa app in its own process that does only what any
 * JSON endpoint must do — read the body, parse it when it is JSON, answer a JSON body of the
 * same size as chatbridge's answer to the same request. The ratio chatbridge / bare is what the
 * bridge's own work costs on this machine (identity resolution, Redis, vendor codecs).
 *
 * Usage: node bench/bare.js <port>. The reply size is set per scenario by the bench through
 * `PUT /__bench/reply {"bytes": N, "contentType": "..."}`.
 */
serveBaseline({
  port: Number(process.argv[2]),
  name: 'bare koa',
  handle(ctx, raw, reply) {
    // Parse what a JSON endpoint would parse (the JOSE lookup body is a compact string: read only).
    if (raw.length > 0 && raw[0] === 0x7b) JSON.parse(raw.toString('utf8'));
    reply.send(ctx);
  },
});
