import { randomUUID } from 'node:crypto';
import { type Dispatcher, fetch as undiciFetch } from 'undici';
import { combineSignals } from '../../src/net/signals.js';
import {
  buildClaims,
  decodeKey,
  JOSE_CONTENT_TYPE,
  type LookupAnswer,
  type LookupSubject,
  MAX_TOKEN_LIFETIME_SECONDS,
  openAnswer,
  sealRequest,
} from './codec.js';

/**
 * The caller's side of the attribute lookup, exported as `chatbridge/livetex-client`, so that a
 * company's developers (or a LiveTex-side integration) call the bridge in a few lines:
 *
 *   const client = createLivetexLookupClient({ url, kid, key });
 *   const answer = await client.lookup({ personId: 'c7a1…' });
 *
 * Each call makes a fresh token (new jti, iat = now), so retrying a failed call is safe.
 */

export type { LookupAnswer, LookupSubject } from './codec.js';
export { LookupAnswerError } from './codec.js';

type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ status: number; headers: { get(name: string): string | null }; text(): Promise<string> }>;

export interface LivetexLookupClientOptions {
  /** The bridge's lookup URL: `https://bridge.example.com/livetex/<channelId>/attributes`. */
  url: string;
  /** The key id and key from `POST /api/v1/channels/:id/keys` (or `chatbridge keys generate`). */
  kid: string;
  /** base64url, 32 bytes. */
  key: string;
  /** Any fetch-compatible function (default: undici's fetch). */
  fetch?: FetchLike;
  /** An undici dispatcher for the default fetch (proxies, tests). */
  dispatcher?: Dispatcher;
  /** Token lifetime in seconds (default 60; the bridge accepts at most 300). */
  ttlSeconds?: number;
  /** Give up after this long (default 5000 ms). */
  timeoutMs?: number;
  /** Clock for iat (tests). */
  now?: () => Date;
}

export interface LookupCallOptions {
  /** Echoed in the answer; default a random UUID. */
  requestId?: string;
  signal?: AbortSignal;
}

/** The bridge refused the call (its JSON error code) or answered something unexpected. */
export class LivetexLookupError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
    this.name = 'LivetexLookupError';
  }
}

export interface LivetexLookupClient {
  lookup(subject: LookupSubject, options?: LookupCallOptions): Promise<LookupAnswer>;
}

export function createLivetexLookupClient(options: LivetexLookupClientOptions): LivetexLookupClient {
  const key = decodeKey(options.key);
  const ttlSeconds = options.ttlSeconds ?? 60;
  if (ttlSeconds <= 0 || ttlSeconds > MAX_TOKEN_LIFETIME_SECONDS) {
    throw new RangeError(`ttlSeconds must be between 1 and ${MAX_TOKEN_LIFETIME_SECONDS}`);
  }
  const now = options.now ?? (() => new Date());
  const send: FetchLike =
    options.fetch ??
    ((url, init) =>
      undiciFetch(url, { ...init, ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}) }));

  return {
    async lookup(subject, call = {}) {
      const requestId = call.requestId ?? randomUUID();
      const claims = buildClaims({
        subject,
        requestId,
        jti: randomUUID(),
        iat: now().getTime() / 1000,
        ttlSeconds,
      });
      const token = await sealRequest(claims, options.kid, key);
      const timeout = AbortSignal.timeout(options.timeoutMs ?? 5000);
      // Not AbortSignal.any: on Node 20 it leaks into a long-lived caller signal (src/net/signals.ts).
      const combined = call.signal ? combineSignals([call.signal, timeout]) : undefined;
      let response: Awaited<ReturnType<FetchLike>>;
      let body: string;
      try {
        response = await send(options.url, {
          method: 'POST',
          headers: { 'content-type': JOSE_CONTENT_TYPE, accept: JOSE_CONTENT_TYPE },
          body: token,
          signal: combined?.signal ?? timeout,
        });
        body = await response.text();
      } finally {
        combined?.dispose();
      }
      if (response.status !== 200) {
        let code = 'http_error';
        try {
          const parsed = JSON.parse(body) as { error?: { code?: unknown } };
          if (typeof parsed.error?.code === 'string') code = parsed.error.code;
        } catch {
          // Not our JSON error (a proxy's page, say): the status tells enough.
        }
        throw new LivetexLookupError(
          `the bridge answered ${response.status} (${code})`,
          response.status,
          code,
        );
      }
      const contentType = response.headers.get('content-type')?.split(';')[0]?.trim().toLowerCase();
      if (contentType !== JOSE_CONTENT_TYPE) {
        throw new LivetexLookupError(
          `expected ${JOSE_CONTENT_TYPE}, got ${contentType ?? 'nothing'}`,
          200,
          'bad_answer',
        );
      }
      const answer = await openAnswer(body, options.kid, key);
      if (answer.requestId !== requestId) {
        throw new LivetexLookupError('the answer is for another request', 200, 'bad_answer');
      }
      return answer;
    },
  };
}
