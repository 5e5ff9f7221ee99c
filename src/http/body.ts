import type { Context } from 'koa';
import { PayloadTooLargeError } from '../errors.js';

/**
 * Read the raw request body up to `limit` bytes. Vendors' bodies are kept raw (JivoChat sends
 * JSON with no documented content type; LiveTex sends application/jose), and each route decides
 * how to parse. Beyond the limit: 413, and the connection is not read further.
 */
export async function readRawBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) throw new PayloadTooLargeError(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      // Stop reading; Koa closes the connection after the 413 because the body was not consumed.
      ctx.req.unpipe();
      ctx.set('connection', 'close');
      throw new PayloadTooLargeError(limit);
    }
    chunks.push(chunk as Buffer);
  }
  // One chunk (the usual small webhook) is returned as is: no copy.
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}
