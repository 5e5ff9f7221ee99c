import { AppError } from '../errors.js';
import { scrubSecrets } from '../net/http.js';

/**
 * What a CRM call came to when it did not succeed. `retry`: 429, 503 QUERY_LIMIT_EXCEEDED, 5xx,
 * network errors and timeouts (retried on the destination's schedule, Retry-After honoured);
 * `permanent`: 401/403 and validation errors, with the CRM's own reason. Messages never carry a
 * URL or a credential: they end up in delivery records, logs and the admin API.
 */
export class CrmError extends AppError {
  readonly kind: 'retry' | 'permanent';
  readonly httpStatus: number | null;
  readonly retryAfterMs: number | undefined;
  /** 401/403: the credential was refused (counted apart in metrics). */
  readonly auth: boolean;
  /**
   * The request reached the CRM but its answer did not reach us (a timeout, a connection cut
   * after sending, a gateway's 504): a create may have been done. The flow then looks the
   * object up before creating it again.
   */
  readonly maybeApplied: boolean;

  constructor(
    kind: 'retry' | 'permanent',
    httpStatus: number | null,
    message: string,
    options: { retryAfterMs?: number | undefined; auth?: boolean; maybeApplied?: boolean } = {},
  ) {
    super('crm_error', 502, message);
    this.kind = kind;
    this.httpStatus = httpStatus;
    this.retryAfterMs = options.retryAfterMs;
    this.auth = options.auth ?? false;
    this.maybeApplied = options.maybeApplied ?? false;
  }
}

/** A gateway that gave up waiting for the CRM: the CRM may still have done the request. */
export const GATEWAY_TIMEOUT = 504;

/** Keep an operator-facing excerpt of a CRM's answer short and on one line. */
export function excerpt(text: string, max = 300): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/** Remove every secret from a text (belt and braces: CRMs may echo what they were sent). */
export function scrub(text: string, secrets: readonly string[]): string {
  return scrubSecrets(
    text,
    secrets.filter((secret) => secret.length >= 4),
  );
}
