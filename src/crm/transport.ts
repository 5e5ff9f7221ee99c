import type { CrmTransport } from '../contracts/connector.js';
import { type HttpClient, HttpNetworkError, scrubSecrets } from '../net/http.js';
import { CrmError } from './errors.js';
import type { RateLimiter } from './limiter.js';

/** Network error codes that mean the request never reached the CRM. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * The HTTP transport a connector gets: the shared rate limit before every call, the
 * destination's timeout, and network failures turned into retryable CrmErrors that name the
 * CRM but neither the URL (a Bitrix24 webhook URL *is* its credential) nor a token.
 */
export function createTransport(options: {
  http: HttpClient;
  limiter: RateLimiter;
  timeoutMs: number;
  displayName: string;
  signal?: AbortSignal;
  onRequest?(): void;
  /**
   * The destination's credentials (connector.secretsOf): hidden in the answer's text before a
   * connector quotes it. Connectors cut a CRM's error page to an excerpt; scrubbed only after the
   * cut, a token the cut ran through was no longer found whole and its first characters showed.
   */
  secrets?: readonly string[];
}): CrmTransport {
  return {
    async send(request) {
      await options.limiter.acquire(options.signal);
      options.onRequest?.();
      try {
        const response = await options.http.send({
          method: request.method,
          url: request.url,
          headers: { accept: 'application/json', ...request.headers },
          ...(request.body !== undefined ? { body: request.body } : {}),
          timeoutMs: options.timeoutMs,
          ...(options.signal ? { signal: options.signal } : {}),
        });
        // Only the text (what connectors quote); the parsed JSON they read ids from is left as is.
        const secrets = options.secrets ?? [];
        return secrets.length === 0 ? response : { ...response, text: scrubSecrets(response.text, secrets) };
      } catch (error) {
        if (error instanceof HttpNetworkError) {
          const code = (error.cause as { code?: string; cause?: { code?: string } } | undefined)?.code;
          const reason = error.timedOut
            ? `timed out after ${options.timeoutMs} ms`
            : `network error${code ? ` (${code})` : ''}`;
          // Refused or unresolved: nothing was sent. Anything else (a timeout, a reset) may have
          // been cut after the CRM got the request.
          const notSent = code !== undefined && NOT_SENT.has(code);
          throw new CrmError('retry', null, `${options.displayName} unreachable: ${reason}`, {
            maybeApplied: !notSent,
          });
        }
        throw error;
      }
    },
  };
}
