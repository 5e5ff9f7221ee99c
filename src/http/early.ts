import assert from 'node:assert';
import {
  type IncomingMessage,
  type ServerResponse,
  STATUS_CODES,
  validateHeaderName,
  validateHeaderValue,
} from 'node:http';
import { Stream } from 'node:stream';
import { format } from 'node:util';
import Koa from 'koa';
import { DEFENSIVE_HEADERS } from './headers.js';

/**
 * The vendor webhooks and lookups served ahead of Koa (src/http/app.ts, serveEarly and
 * serveWebhookEarly). They were served ahead of Koa's middleware chain, from its first
 * middleware, but each still had Koa build its context (three objects and their delegating
 * getters), listen for the response's end (on-finished, ee-first) and answer through `respond`,
 * which sets every header with its own `res.setHeader` call. Under load those were most of the
 * HTTP layer's ~8–10 % of a webhook's CPU (bench/HISTORY.md, twenty-eighth round). Here the
 * server's request handler (KoaWithEarlyPath.callback) hands them an EarlyContext instead, and
 * the answer goes out with one `res.writeHead(status, [name, value, ...])` and `res.end(body)`
 * (one that states neither its length nor chunking, rare, through setHeader as Koa's: write()).
 *
 * EarlyContext is the part of Koa's context those requests use — the request's headers, the
 * client address forwardedHeaders sets, `state`, `params`, the answer's status, headers, type and
 * body — with Koa's semantics (koa/lib/response.js, 3.x) for each, so that the same middleware
 * functions and route handlers run on it unchanged and answer byte for byte as through the chain:
 * the same status line, the same headers in the same order and letter case, the same body
 * (test/http.webhook-early.test.ts and test/http.lookup-early.test.ts hold each spelling to it;
 * test/http.early-context.test.ts each kind of answer, run through Koa and through this).
 * A body is what an intake answer is (src/contracts/adapter.ts, Answer): JSON, a string, bytes or
 * nothing; a stream is refused (Koa would pipe it: no route served here answers one).
 */

/** Statuses whose answers have no body (the `statuses` package's `empty`, which Koa reads). */
const EMPTY_BODY = new Set([204, 205, 304]);

/** Headers whose removal Node's ServerResponse remembers (removeHeader). */
const FRAMING = new Set(['connection', 'content-length', 'transfer-encoding', 'date']);

type HeaderValue = string | number | readonly string[];

/** A Content-Type as Koa's `type` setter makes it (`json` -> `application/json; charset=utf-8`). */
type MediaType = (type: string) => string | undefined;

export class EarlyContext {
  /** `ctx.request.ip` and `ctx.request.socket` (clientAddress, forwardedHeaders) are the context's own. */
  readonly request: this = this;
  ip = '';
  state: unknown = {};
  params: Record<string, string> = {};
  readonly method: string;
  /** The URL as sent: served here only with no query (the early paths take none). */
  readonly path: string;
  private statusCode = 404;
  private explicitStatus = false;
  private explicitNullBody = false;
  private current: unknown;
  /** The answer's headers in the order first set, as Node keeps them: [name, value, name, value, ...]. */
  private headers: Array<string | HeaderValue> = [];
  /** Each header's name in lower case, at half its index in `headers`. */
  private keys: string[] = [];

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    private readonly mediaType: MediaType,
  ) {
    this.method = req.method!;
    this.path = req.url!;
  }

  get socket() {
    return this.req.socket;
  }

  /** A request header, as Koa's `ctx.get` reads it ('' when absent). */
  get(field: string): string {
    const name = field.toLowerCase();
    const { headers } = this.req;
    const value =
      name === 'referer' || name === 'referrer' ? headers.referrer || headers.referer : headers[name];
    return (value as string | undefined) || '';
  }

  /** `ctx.response.get`: an answer header (only the errors layer's 405 reads one). */
  get response() {
    return { get: (field: string) => this.header(field) };
  }

  get headerSent(): boolean {
    return this.res.headersSent;
  }

  /**
   * The request id and the defensive headers, first, as the chain's request line sets them
   * (known to be valid: the id matched REQUEST_ID or is a UUID).
   */
  startAnswer(requestId: string): void {
    this.put('x-request-id', requestId);
    for (const name in DEFENSIVE_HEADERS) this.put(name, DEFENSIVE_HEADERS[name]!);
  }

  /** Koa's `ctx.set(name, value)`: checked as `res.setHeader` checks it, where it checks it. */
  set(field: string, value: HeaderValue): void {
    if (this.res.headersSent || !field) return;
    let given: HeaderValue = value;
    if (typeof given === 'object' && this.isSingleValue(field)) {
      assert(given.length === 1, `${field} must contain exactly one value`);
      given = given[0]!;
    }
    validateHeaderName(field);
    // Typed for strings; res.setHeader hands it numbers and lists too (it reads them as text).
    validateHeaderValue(field, given as string);
    this.put(field, given);
  }

  remove(field: string): void {
    if (this.res.headersSent) return;
    const key = field.toLowerCase();
    // Node remembers these removals (no Content-Length or chunking of its own, no Date), whether
    // or not the header was set: told at once, as Koa's res.removeHeader tells it.
    if (FRAMING.has(key)) this.res.removeHeader(key);
    const at = this.keys.indexOf(key);
    if (at === -1) return;
    this.keys.splice(at, 1);
    this.headers.splice(at * 2, 2);
  }

  has(field: string): boolean {
    return this.keys.includes(field.toLowerCase());
  }

  get status(): number {
    return this.statusCode;
  }

  set status(code: number) {
    if (this.res.headersSent) return;
    assert(Number.isInteger(code), 'status code must be a number');
    assert(code >= 100 && code <= 999, `invalid status code: ${code}`);
    this.explicitStatus = true;
    this.statusCode = code;
    if (this.current && EMPTY_BODY.has(code)) this.body = null;
  }

  get type(): string {
    const type = this.header('content-type');
    if (typeof type !== 'string') return '';
    const semicolon = type.indexOf(';');
    return semicolon === -1 ? type : type.slice(0, semicolon);
  }

  set type(type: string) {
    const made = this.mediaType(type);
    if (made) this.set('Content-Type', made);
    else this.remove('Content-Type');
  }

  set length(bytes: number) {
    if (!this.has('Transfer-Encoding')) this.set('Content-Length', bytes);
  }

  get body(): unknown {
    return this.current;
  }

  set body(value: unknown) {
    this.current = value;
    if (value === null || value === undefined) {
      if (!EMPTY_BODY.has(this.statusCode)) {
        if (this.type === 'application/json') {
          this.current = 'null';
          return;
        }
        this.status = 204;
      }
      if (value === null) this.explicitNullBody = true;
      this.remove('Content-Type');
      this.remove('Content-Length');
      this.remove('Transfer-Encoding');
      return;
    }
    if (!this.explicitStatus) this.status = 200;
    const setType = !this.has('Content-Type');
    if (typeof value === 'string') {
      if (setType) this.type = /^\s*</.test(value) ? 'html' : 'text';
      this.length = Buffer.byteLength(value);
      return;
    }
    if (Buffer.isBuffer(value)) {
      if (setType) this.type = 'bin';
      this.length = value.length;
      return;
    }
    if (
      value instanceof Stream ||
      typeof (value as { pipe?: unknown }).pipe === 'function' ||
      value instanceof ReadableStream ||
      value instanceof Blob ||
      value instanceof Response
    )
      throw new TypeError('an answer served ahead of the chain is JSON, a string or bytes, not a stream');
    this.remove('Content-Length');
    if (!this.type || !/\bjson\b/i.test(this.type)) this.type = 'json';
  }

  /** What Koa's `respond` writes once the middleware is done, as one writeHead and one end. */
  answer(): void {
    const { res } = this;
    if (!writable(res)) {
      res.end();
      return;
    }
    const code = this.statusCode;
    if (EMPTY_BODY.has(code)) {
      this.body = null;
      this.write(undefined);
      return;
    }
    let body = this.current;
    if (body === null || body === undefined) {
      if (this.explicitNullBody) {
        this.remove('Content-Type');
        this.remove('Transfer-Encoding');
        this.length = 0;
        this.write(undefined);
        return;
      }
      // Koa's ctx.message: the status message it set (the `statuses` table, Node's own here).
      const text = STATUS_CODES[code] || String(code);
      this.type = 'text';
      this.length = Buffer.byteLength(text);
      this.write(text);
      return;
    }
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      this.write(body);
      return;
    }
    body = JSON.stringify(body);
    // A number is a valid header value: put as Koa's `ctx.length` puts it, without the check.
    if (!this.has('Transfer-Encoding')) this.put('Content-Length', Buffer.byteLength(body as string));
    this.write(body as string);
  }

  /**
   * What Koa's `ctx.onerror` does with an error that escaped the middleware (here: one thrown
   * while answering): tell the app, and unless the answer is under way, a text/plain answer with
   * the error's status (500 unless it has a known one) and only the error's own headers.
   */
  fail(app: Koa, caught: unknown): void {
    if (caught === null || caught === undefined) return;
    const error = (
      Object.prototype.toString.call(caught) === '[object Error]' || caught instanceof Error
        ? caught
        : new Error(format('non-error thrown: %j', caught))
    ) as Error & {
      headerSent?: boolean;
      headers?: Record<string, string>;
      status?: unknown;
      statusCode?: unknown;
      expose?: boolean;
    };
    const sent = this.res.headersSent || !writable(this.res);
    if (sent) error.headerSent = true;
    app.emit('error', error, this);
    if (sent) return;
    this.headers = [];
    this.keys = [];
    for (const name of Object.keys(error.headers ?? {})) {
      const lower = name.toLowerCase();
      if (lower !== 'content-type' && lower !== 'content-length') this.set(name, error.headers![name]!);
    }
    this.type = 'text';
    let code = error.status ?? error.statusCode;
    if (typeof code !== 'number' || !STATUS_CODES[code]) code = 500;
    const text = error.expose ? error.message : STATUS_CODES[code as number]!;
    this.status = code as number;
    error.status = code;
    this.length = Buffer.byteLength(text);
    this.write(text);
  }

  private write(body: string | Buffer | undefined): void {
    const { res } = this;
    if (this.has('content-length') || this.has('transfer-encoding')) {
      res.writeHead(this.statusCode, this.headers as Array<string | string[]>);
      res.end(body);
      return;
    }
    // Neither said (a `null` JSON body, no body): Node frames it from what `end` is given, which
    // it knows only when `end` writes the head itself. Rare, so through setHeader as Koa does.
    res.statusCode = this.statusCode;
    const { headers } = this;
    for (let index = 0; index < headers.length; index += 2)
      res.setHeader(headers[index] as string, headers[index + 1] as HeaderValue);
    res.end(body);
  }

  private header(field: string): HeaderValue | undefined {
    const at = this.keys.indexOf(field.toLowerCase());
    return at === -1 ? undefined : (this.headers[at * 2 + 1] as HeaderValue);
  }

  /** As `res.setHeader` keeps it: a header set again keeps its place and takes the new name's case. */
  private put(name: string, value: HeaderValue): void {
    const key = name.toLowerCase();
    const at = this.keys.indexOf(key);
    if (at === -1) {
      this.keys.push(key);
      this.headers.push(name, value);
    } else {
      this.headers[at * 2] = name;
      this.headers[at * 2 + 1] = value;
    }
  }

  private isSingleValue(field: string): boolean {
    const name = field.toLowerCase();
    return name === 'content-type' || name === 'content-length';
  }
}

/** Koa's `ctx.writable`: the answer not ended, and its socket (if any yet) writable. */
function writable(res: ServerResponse): boolean {
  if (res.writableEnded) return false;
  const { socket } = res;
  return socket ? socket.writable : true;
}

/** A request served ahead of Koa, answered through an EarlyContext: its promise, or undefined (Koa's). */
export type EarlyListener = (req: IncomingMessage, res: ServerResponse) => Promise<void> | undefined;

/**
 * The app of the main port: Koa, whose request handler (`callback()`: the bridge's server, and
 * every test and benchmark handing it requests) first offers each request to `early`.
 */
export class KoaWithEarlyPath extends Koa {
  /** Set by createApp once its early routes are known; none until then. */
  early: EarlyListener = () => undefined;
  /** Koa's own `type` setter (mime-types' contentType), its answers kept per type asked. */
  readonly mediaType: MediaType;

  constructor(options: { proxy: boolean; maxIpsCount: number }) {
    super(options);
    const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(this.response), 'type')?.set;
    if (!setter) throw new TypeError("Koa's response has no `type` setter");
    const made = new Map<string, string | undefined>();
    this.mediaType = (type) => {
      if (made.has(type)) return made.get(type);
      let result: string | undefined;
      setter.call(
        {
          set: (_name: string, value: string) => {
            result = value;
          },
          remove: () => {
            result = undefined;
          },
        },
        type,
      );
      // The types asked are a handful (the adapters' answers, json, text, bin): a bound all the same.
      if (made.size < 64) made.set(type, result);
      return result;
    };
  }

  override callback(): ReturnType<Koa['callback']> {
    const chain = super.callback();
    return (req, res) => this.early(req as IncomingMessage, res as ServerResponse) ?? chain(req, res);
  }
}
