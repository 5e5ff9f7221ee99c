import { type Dispatcher, request } from 'undici';
import { combineSignals } from './signals.js';

/**
 * The one outbound HTTP client. Every call to a vendor API, a CRM destination or an attribute
 * source goes through here, so timeouts, the dispatcher (injectable for tests: undici MockAgent
 * or a dispatcher pointed at a fake server) and user-agent are the same everywhere.
 * Retries are the caller's policy (see src/net/retry.ts): what is safe to retry differs.
 */
export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  /** A string or Buffer is sent as is; anything else as JSON. */
  body?: unknown;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Read at most this many bytes of the answer (default: the client's maxResponseBytes). */
  maxResponseBytes?: number;
  /**
   * The status is the answer (a webhook delivery): once it has arrived, a body that is still
   * coming when the timeout fires, or that breaks off, leaves `text` as what arrived instead of
   * turning the answer into a network error. Without it a receiver that said 200 and then kept
   * the body open was retried as a timeout, and failed in the end, although it had accepted
   * every attempt.
   */
  statusIsAnswer?: boolean;
  /**
   * Whether the answer's body is wanted, by its status (default: always). When it is not, the
   * answer is returned as soon as its status and headers are in, with `text` empty, and the body
   * is read away in the background (the connection is kept for reuse when it ends within
   * maxResponseBytes and the timeout, dropped otherwise). A webhook receiver that answered 200
   * and then sent its body slowly held the delivery for its whole timeout, and with it the
   * destination's concurrency slot and every later event of the contact.
   */
  bodyWanted?: (status: number) => boolean;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  /** The body as text (bounded by maxResponseBytes). */
  text: string;
  /** JSON.parse(text), or undefined when it is not JSON. */
  json: unknown;
}

export class HttpNetworkError extends Error {
  readonly timedOut: boolean;
  constructor(message: string, options: { cause?: unknown; timedOut?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.name = 'HttpNetworkError';
    this.timedOut = options.timedOut ?? false;
  }
}

export interface HttpClientOptions {
  dispatcher?: Dispatcher;
  userAgent?: string;
  /** Responses larger than this are cut (default 4 MiB): a vendor must not exhaust our memory. */
  maxResponseBytes?: number;
}

export interface HttpClient {
  send(request: HttpRequest): Promise<HttpResponse>;
}

/**
 * An escape of one UTF-16 surrogate (`\ud800`–`\udfff`) after an even run of backslashes (so it
 * is an escape, not an escaped backslash followed by text). JSON.stringify writes a surrogate pair
 * as its character and escapes only a lone surrogate, so every such escape it writes is a lone one.
 */
const LONE_SURROGATE_ESCAPE = /(?<!\\)((?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;

/**
 * JSON for another system: JSON.stringify with every lone surrogate written as U+FFFD. A vendor's
 * text can hold one (an emoji cut in half by a length limit, or hostile input), and JSON.stringify
 * keeps it as `\ud83d`, which strict parsers refuse for the whole body — PHP's json_decode
 * (JSON_ERROR_UTF16; amoCRM and Bitrix24 are PHP), Go's and Rust's decoders replace or refuse it —
 * so one half emoji would fail a delivery for good. Used for every body chatbridge sends: webhook
 * deliveries (signed over these bytes) and CRM calls.
 */
export function wireJson(value: unknown): string {
  const text = JSON.stringify(value);
  return text.includes('\\ud') ? text.replace(LONE_SURROGATE_ESCAPE, '$1\\ufffd') : text;
}

export function createHttpClient(options: HttpClientOptions = {}): HttpClient {
  const userAgent = options.userAgent ?? 'chatbridge/0.1';
  const maxBytes = options.maxResponseBytes ?? 4 * 1024 * 1024;
  return {
    async send(input) {
      const headers: Record<string, string> = { 'user-agent': userAgent, ...input.headers };
      let body: string | Buffer | undefined;
      if (input.body === undefined) body = undefined;
      else if (typeof input.body === 'string' || Buffer.isBuffer(input.body)) body = input.body;
      else {
        body = wireJson(input.body);
        headers['content-type'] ??= 'application/json';
      }
      const timeout = AbortSignal.timeout(input.timeoutMs);
      // Not AbortSignal.any: on Node 20 it leaks into a long-lived caller signal (src/net/signals.ts).
      const combined = input.signal ? combineSignals([input.signal, timeout]) : undefined;
      const signal = combined?.signal ?? timeout;
      /** The body is being read away in the background: `combined` is let go of when that ends. */
      let reading = false;
      try {
        const response = await request(input.url, {
          method: input.method,
          headers,
          body,
          signal,
          ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
        });
        const limit = input.maxResponseBytes ?? maxBytes;
        if (input.bodyWanted && !input.bodyWanted(response.statusCode)) {
          // Not awaited: bounded by `signal` (the timeout, or the caller's shutdown) and by `limit`.
          // `combined` stays attached to both until then: disposed at the return below, it never
          // aborted, and a receiver that kept its 2xx body open held the connection for good.
          reading = true;
          response.body
            .dump({ limit, signal })
            .catch(() => undefined)
            .finally(() => combined?.dispose());
          return {
            status: response.statusCode,
            headers: flatHeaders(response.headers),
            text: '',
            json: undefined,
          };
        }
        const chunks: Buffer[] = [];
        let size = 0;
        try {
          for await (const chunk of response.body) {
            size += (chunk as Buffer).length;
            if (size > limit) {
              response.body.destroy();
              break;
            }
            chunks.push(chunk as Buffer);
          }
        } catch (error) {
          // Our own shutdown still ends the request as aborted (the caller does not count it).
          if (!input.statusIsAnswer || input.signal?.aborted) throw error;
          response.body.destroy();
        }
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        return { status: response.statusCode, headers: flatHeaders(response.headers), text, json };
      } catch (error) {
        if (input.signal?.aborted) throw error;
        const timedOut = timeout.aborted;
        // The library's error may carry the URL with its credentials, and errors are logged and
        // shown in the deliveries API: the message and the cause chain are kept, scrubbed.
        throw new HttpNetworkError(
          timedOut
            ? `${input.method} ${redactUrl(input.url)} timed out after ${input.timeoutMs} ms`
            : `${input.method} ${redactUrl(input.url)} failed: ${scrubUrlSecrets((error as Error).message, input.url)}`,
          { cause: scrubbedCause(error, input.url), timedOut },
        );
      } finally {
        if (!reading) combined?.dispose();
      }
    },
  };
}

/** Response headers as one lower-cased string each (a repeated header joined with ', '). */
function flatHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

/**
 * A path segment that is probably a credential (a token in a webhook URL): long, or a mix of
 * letters and digits. Words like `hooks` or `v1` stay readable.
 */
function secretSegment(segment: string): boolean {
  return segment.length >= 16 || (segment.length >= 8 && /\d/.test(segment) && /[a-z]/i.test(segment));
}

/**
 * Hide credentials that may sit in a URL before it is shown anywhere (logs, errors, API, CLI):
 * user and password, every query value whatever its name (`sig`, `auth`, `code`, ...), the
 * fragment, and path segments that look like tokens. Scheme, host, port and plain path words stay.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.username) parsed.username = '***';
    if (parsed.password) parsed.password = '***';
    parsed.pathname = parsed.pathname
      .split('/')
      .map((segment) => (secretSegment(segment) ? '***' : segment))
      .join('/');
    const names = [...new Set(parsed.searchParams.keys())];
    parsed.search = names.map((name) => `${encodeURIComponent(name)}=***`).join('&');
    parsed.hash = '';
    return parsed.toString();
  } catch {
    return '(unparsable url)';
  }
}

/** The parts of a URL that `redactUrl` hides, as written and decoded. */
export function urlSecrets(url: string): string[] {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return [url];
  }
  const found = [parsed.username, parsed.password, parsed.hash.slice(1)];
  for (const segment of parsed.pathname.split('/')) if (secretSegment(segment)) found.push(segment);
  for (const pair of parsed.search.slice(1).split('&')) {
    const value = pair.slice(pair.indexOf('=') + 1);
    if (pair.includes('=')) found.push(value);
  }
  for (const value of parsed.searchParams.values()) found.push(value);
  const all = new Set<string>();
  for (const value of found) {
    if (value.length < 3) continue; // too short to hide without mangling ordinary text
    all.add(value);
    try {
      all.add(decodeURIComponent(value));
    } catch {
      // keep the raw form only
    }
  }
  return [...all].sort((a, b) => b.length - a.length);
}

/** A copy of an error's cause chain (name, code, message) with the URL's secrets scrubbed. */
function scrubbedCause(error: unknown, url: string, depth = 0): Error | undefined {
  if (!(error instanceof Error) || depth > 5) return undefined;
  const copy = new Error(scrubUrlSecrets(error.message, url), {
    cause: scrubbedCause((error as { cause?: unknown }).cause, url, depth + 1),
  });
  copy.name = error.name;
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined) (copy as NodeJS.ErrnoException).code = code;
  return copy;
}

/** Replace every secret part of `url` found in `text` (an error message, a receiver's answer). */
export function scrubUrlSecrets(text: string, url: string): string {
  return scrubSecrets(text, urlSecrets(url));
}

/**
 * The values of configured request headers (a destination's or an attribute source's `headers`),
 * as sent and, for `<scheme> <credential>` (Bearer, Basic, Token ...), the credential alone:
 * receivers that refuse often echo the request's headers, or just the token, in their answer.
 * Every configured value counts as a credential (the config does not say which ones are); values
 * under 4 characters are left, as they would mangle ordinary text and guard nothing.
 */
export function headerSecrets(headers: Readonly<Record<string, string>> | undefined): string[] {
  const found: string[] = [];
  for (const raw of Object.values(headers ?? {})) {
    const value = raw.trim();
    found.push(value);
    const credential = /^[A-Za-z][\w.-]*\s+(\S.*)$/.exec(value)?.[1];
    if (credential !== undefined) found.push(credential.trim());
    // Basic: a receiver may quote the decoded `user:password`, or the password alone.
    const basic = /^basic\s+([A-Za-z0-9+/=_-]+)$/i.exec(value)?.[1];
    if (basic !== undefined) {
      const decoded = Buffer.from(basic, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0) found.push(decoded, decoded.slice(colon + 1));
    }
  }
  return found.filter((value) => value.length >= 4);
}

/**
 * Replace every secret found in `text` with `***`, longest first (so a secret that contains
 * another is hidden whole). The one place a text shown to people (an error kept in a delivery
 * record, a log line, an API answer) is scrubbed of the credentials the request carried.
 */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  const ordered = [...new Set(secrets)].filter((secret) => secret !== '').sort((a, b) => b.length - a.length);
  for (const secret of ordered) out = out.split(secret).join('***');
  return out;
}
