import Koa from 'koa';
import { readBody, sizedReply } from './lib/baseline.js';

/**
 * The baseline for `npm run bench`: a bare Koa app in its own process that does only what any
 * JSON endpoint must do — read the body, parse it when it is JSON, answer a JSON body of the
 * same size as chatbridge's answer to the same request. The ratio chatbridge / bare is what the
 * bridge's own work costs on this machine (identity resolution, Redis, vendor codecs).
 *
 * Usage: node bench/bare.js <port>. The reply size is set per scenario by the bench through
 * `PUT /__bench/reply {"bytes": N, "contentType": "..."}`.
 */
const port = Number(process.argv[2]);
const reply = sizedReply();

const app = new Koa();
app.use(async (ctx) => {
  const raw = await readBody(ctx.req);
  if (ctx.path === '/__bench/reply') {
    reply.set(raw);
    ctx.body = { ok: true };
    return;
  }
  // Parse what a JSON endpoint would parse (the JOSE lookup body is a compact string: read only).
  if (raw.length > 0 && raw[0] === 0x7b) JSON.parse(raw.toString('utf8'));
  reply.send(ctx);
});
app.listen(port, '127.0.0.1', () => {
  process.stdout.write(`bare koa listening on ${port}\n`);
});
