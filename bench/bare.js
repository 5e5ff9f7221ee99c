import Koa from 'koa';

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
let reply = { bytes: 16, contentType: 'application/json; charset=utf-8' };

function bodyOfSize(bytes) {
  // {"result":"ok","pad":"…"} is 25 bytes plus the padding.
  return { result: 'ok', pad: 'x'.repeat(Math.max(0, bytes - 25)) };
}
let template = bodyOfSize(reply.bytes);
let text = 'x'.repeat(reply.bytes);

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

const app = new Koa();
app.use(async (ctx) => {
  const raw = await readBody(ctx.req);
  if (ctx.path === '/__bench/reply') {
    reply = JSON.parse(raw.toString('utf8'));
    template = bodyOfSize(reply.bytes);
    text = 'x'.repeat(reply.bytes);
    ctx.body = { ok: true };
    return;
  }
  // Parse what a JSON endpoint would parse (the JOSE lookup body is a compact string: read only).
  if (raw.length > 0 && raw[0] === 0x7b) JSON.parse(raw.toString('utf8'));
  ctx.type = reply.contentType;
  ctx.body = reply.contentType.startsWith('application/json') ? { ...template } : text;
});
app.listen(port, '127.0.0.1', () => {
  process.stdout.write(`bare koa listening on ${port}\n`);
});
