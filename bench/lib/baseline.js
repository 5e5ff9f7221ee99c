import Koa from 'koa';

/**
 * What the bench's baselines (bench/bare.js, bench/floor.js) share: a Koa app in its own process
 * that reads each request's body, answers `PUT /__bench/reply {"bytes", "contentType"}` (the
 * reply size, set per scenario to the bridge's answer to the same request) and hands every other
 * request to `handle(ctx, raw, reply)`, where `reply.send(ctx)` answers with that size and type.
 */
export function serveBaseline({ port, name, handle }) {
  const reply = sizedReply();
  const app = new Koa();
  app.use(async (ctx) => {
    const raw = await readBody(ctx.req);
    if (ctx.path === '/__bench/reply') {
      reply.set(raw);
      ctx.body = { ok: true };
      return;
    }
    await handle(ctx, raw, reply);
  });
  app.listen(port, '127.0.0.1', () => {
    process.stdout.write(`${name} listening on ${port}\n`);
  });
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function sizedReply() {
  let reply = { bytes: 16, contentType: 'application/json; charset=utf-8' };
  // {"result":"ok","pad":"…"} is 25 bytes plus the padding.
  const bodyOfSize = (bytes) => ({ result: 'ok', pad: 'x'.repeat(Math.max(0, bytes - 25)) });
  let template = bodyOfSize(reply.bytes);
  let text = 'x'.repeat(reply.bytes);
  return {
    /** Takes the body of `PUT /__bench/reply`. */
    set(raw) {
      reply = JSON.parse(raw.toString('utf8'));
      template = bodyOfSize(reply.bytes);
      text = 'x'.repeat(reply.bytes);
    },
    /** Answers with the set size and type. */
    send(ctx) {
      ctx.type = reply.contentType;
      ctx.body = reply.contentType.startsWith('application/json') ? { ...template } : text;
    },
  };
}
