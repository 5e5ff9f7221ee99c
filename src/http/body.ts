import type { Context } from 'koa';
import { AppError, PayloadTooLargeError, RequestClosedError, UnsupportedMediaTypeError } from '../errors.js';

/**
 * Read the raw request body up to `limit` bytes. Vendors' bodies are kept raw (JivoChat sends
 * JSON with no documented content type; LiveTex sends application/jose), and each route decides
 * how to parse. Beyond the limit: 413, and the connection is not read further.
 *
 * Plain 'data'/'end' listeners rather than `for await`: the async iterator costs every webhook
 * an iterator, a promise per chunk and their garbage, for bodies that are one chunk.
 */
export function readRawBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new PayloadTooLargeError(limit));
  const req = ctx.req;
  // Read before (a second reader): nothing is left, as `for await` over an ended stream gave.
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0));
  // The client went away before anyone read the body (while an earlier step awaited something):
  // its 'close' has already fired, so listeners added now would wait forever, and so would the
  // request (its memory, and a graceful shutdown waiting for it).
  if (req.destroyed) return Promise.reject(new RequestClosedError());
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Stop reading; Koa closes the connection after the 413 because the body was not consumed.
        cleanup();
        req.pause();
        ctx.set('connection', 'close');
        reject(new PayloadTooLargeError(limit, Buffer.concat(chunks)));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      // One chunk (the usual small webhook) is returned as is: no copy.
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    // A client that goes away mid-body makes Node emit 'error' ("aborted", ECONNRESET) before
    // 'close': that is the same closed request, not a failure of the bridge (no 500).
    const onError = (error: Error) => {
      cleanup();
      reject(
        (error as NodeJS.ErrnoException).code === 'ECONNRESET'
          ? new RequestClosedError({ cause: error })
          : error,
      );
    };
    // The client went away before the end: nothing more will come.
    const onClose = () => {
      cleanup();
      reject(new RequestClosedError());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * Bodies are read as they come: nothing here inflates them (a gzip bomb of a few kilobytes would
 * otherwise be the bridge's to unpack). A body sent with a Content-Encoding other than identity
 * is refused with 415 naming the encoding; before, a gzipped body was parsed as JSON and refused
 * as `invalid_json` with the compressed bytes quoted as the reason, which said nothing of why.
 */
export function refuseEncodedBody(contentEncoding: string | undefined): void {
  const encoding = contentEncoding?.trim().toLowerCase();
  if (!encoding || encoding === 'identity') return;
  throw new AppError(
    'unsupported_content_encoding',
    415,
    `Content-Encoding ${JSON.stringify(contentEncoding!.trim().slice(0, 100))} is not supported: send the body uncompressed`,
  );
}

/** readRawBody, then refused (415) when it came compressed: for every route but vendor intake. */
export async function readPlainBody(ctx: Context, limit: number): Promise<Buffer> {
  const body = await readRawBody(ctx, limit);
  refuseEncodedBody(ctx.get('content-encoding') || undefined);
  return body;
}

/**
 * The admin API takes JSON (DESIGN §4), and a body declared as anything else was parsed as JSON
 * all the same: `fetch` with a string body sends `text/plain`, `curl -d` a form type, and such a
 * client never learnt that it declared the wrong thing (anything that reads the body by its
 * declared type, a proxy's log, a client library, reads it otherwise). A body must
 * say `Content-Type: application/json`, in UTF-8 (RFC 8259) when it names a charset: anything
 * else, no type included, is a 415 naming what was sent and what is expected. No body at all
 * needs no type (a POST that takes none: `curl -X POST …`). Vendor intake never comes here:
 * vendors send what they send (JivoChat documents no type), and their adapters read it leniently.
 */
export function requireJsonBody(contentType: string | undefined, body: Buffer): void {
  if (body.length === 0) return;
  const [type = '', ...parameters] = (contentType ?? '').split(';');
  const sent = contentType?.trim() ? JSON.stringify(contentType.trim().slice(0, 100)) : undefined;
  if (type.trim().toLowerCase() !== 'application/json') {
    throw new UnsupportedMediaTypeError(
      sent
        ? `Content-Type ${sent} is not accepted: send the body as JSON, with Content-Type: application/json`
        : 'the body came without a Content-Type: send it as JSON, with Content-Type: application/json',
    );
  }
  if (declaredCharset(parameters) !== undefined)
    throw new UnsupportedMediaTypeError(
      `Content-Type ${sent} is not accepted: JSON is read as UTF-8; send it in UTF-8 (charset=utf-8, or no charset)`,
    );
}

/**
 * The charset a Content-Type's parameters declare when it is not UTF-8 (as written, quotes off),
 * else undefined (UTF-8, or none declared).
 */
function declaredCharset(parameters: readonly string[]): string | undefined {
  for (const parameter of parameters) {
    const [name = '', value = ''] = parameter.split('=');
    if (name.trim().toLowerCase() !== 'charset') continue;
    const charset = value.trim().replace(/^"(.*)"$/, '$1');
    if (charset.toLowerCase() !== 'utf-8' && charset.toLowerCase() !== 'utf8') return charset;
  }
  return undefined;
}

/** readPlainBody, then refused (415) unless it is declared JSON (requireJsonBody): the admin API's bodies. */
export async function readJsonBody(ctx: Context, limit: number): Promise<Buffer> {
  const body = await readPlainBody(ctx, limit);
  requireJsonBody(ctx.get('content-type') || undefined, body);
  return body;
}

const FORM = 'application/x-www-form-urlencoded';

/**
 * The console takes HTML forms, which every browser posts as application/x-www-form-urlencoded
 * (its forms have no `enctype`). A body declared as anything else, or sent without a type, was
 * read as a form all the same while the admin API refuses such a body (requireJsonBody): a 415
 * naming what was sent and what is expected; so is a form declaring a charset other than UTF-8
 * (it was read as UTF-8). No body at all needs no type (a post without its CSRF token is refused
 * for that).
 */
export function requireFormBody(contentType: string | undefined, body: Buffer): void {
  const [first = '', ...parameters] = (contentType ?? '').split(';');
  const type = first.trim().toLowerCase();
  if (type === FORM) {
    // Read as UTF-8 (the percent-escapes too): a form in another charset would have its letters
    // silently turned into others. Browsers send UTF-8 pages' forms in UTF-8, with no charset or
    // charset=UTF-8.
    const charset = declaredCharset(parameters);
    if (charset !== undefined)
      throw new UnsupportedMediaTypeError(
        `the form's charset ${JSON.stringify(charset.slice(0, 40))} is not accepted: the console reads forms as UTF-8; send it in UTF-8 (charset=UTF-8, or no charset)`,
      );
    return;
  }
  if (!contentType?.trim()) {
    if (body.length === 0) return;
    throw new UnsupportedMediaTypeError(
      `the form came without a Content-Type: the console takes HTML forms, sent as ${FORM}`,
    );
  }
  throw new UnsupportedMediaTypeError(
    `Content-Type ${JSON.stringify(contentType.trim().slice(0, 100))} is not accepted: the console takes HTML forms, sent as ${FORM}`,
  );
}
