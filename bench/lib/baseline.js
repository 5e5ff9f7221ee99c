/**
 * What the bench's baselines (bench/bare.js, bench/floor.js) share: reading a request body, and
 * the reply they answer, sized by the bench (`PUT /__bench/reply {"bytes", "contentType"}`) to
 * the bridge's answer to the same request.
 */
export async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

export function sizedReply() {
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
