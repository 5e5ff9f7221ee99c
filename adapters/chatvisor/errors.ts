import { AppError } from '../../src/errors.js';
import type { OperationName } from './operations.js';

/**
 * Chatvisor failures as typed errors, decided once at the client's edge. They are AppErrors so an
 * admin route that hits one answers a clear status (never a bare 500): the vendor's own failures
 * become 502 (bad gateway: our upstream failed, not the caller), an unknown customer 404, and
 * throttling 429 with Retry-After.
 */
export interface ChatvisorErrorDetails {
  operation: OperationName;
  /** The vendor's HTTP status; undefined for network errors and timeouts. */
  vendorStatus?: number | undefined;
  cause?: unknown;
  headers?: Record<string, string>;
}

export abstract class ChatvisorApiError extends AppError {
  readonly vendor = 'chatvisor';
  readonly operation: OperationName;
  readonly vendorStatus: number | undefined;
  /** Whether trying the same call later may succeed. */
  abstract readonly retryable: boolean;

  constructor(code: string, status: number, message: string, details: ChatvisorErrorDetails) {
    super(code, status, message, {
      cause: details.cause,
      ...(details.headers ? { headers: details.headers } : {}),
    });
    this.operation = details.operation;
    this.vendorStatus = details.vendorStatus;
  }
}

/** The example config's apiToken, refused before it is sent: what to set instead. */
export const EXAMPLE_TOKEN_MESSAGE =
  "the channel's apiToken is the example config's placeholder, not a Chatvisor API token (nothing was sent): set your account's apiToken and apiUrl (CHATVISOR_API_TOKEN and CHATVISOR_API_URL in the example)";

/**
 * 401/403: the API token is wrong, revoked or lacks rights; or (`exampleToken`) it is the example
 * config's published placeholder, refused before any call. Retrying cannot help.
 *
 * The placeholder is no upstream failure but the bridge's own config, found before anything was
 * sent: 409 `chatvisor_example_token` with its message shown (what to set), not the 502 whose
 * body hides the reason in the log. A newcomer trying the admin API on the example meets it first.
 */
export class ChatvisorAuthError extends ChatvisorApiError {
  readonly retryable = false;
  constructor(details: ChatvisorErrorDetails & { exampleToken?: boolean }) {
    super(
      details.exampleToken ? 'chatvisor_example_token' : 'chatvisor_auth_failed',
      details.exampleToken ? 409 : 502,
      details.exampleToken
        ? EXAMPLE_TOKEN_MESSAGE
        : `Chatvisor refused the channel's API token (HTTP ${details.vendorStatus}); check apiToken`,
      details,
    );
  }
}

/**
 * 404. Either the thing does not exist, or — for an operation whose path is only assumed — the
 * path is wrong and operations.ts needs the real one; the message says both.
 */
export class ChatvisorNotFoundError extends ChatvisorApiError {
  readonly retryable = false;
  constructor(details: ChatvisorErrorDetails & { what: string; pathAssumed: boolean }) {
    super(
      'chatvisor_not_found',
      404,
      details.pathAssumed
        ? `Chatvisor does not know ${details.what} (or the assumed path of ${details.operation} is wrong; see adapters/chatvisor/operations.ts)`
        : `Chatvisor does not know ${details.what}`,
      details,
    );
  }
}

/** 429 that outlasted our retries, or asked us to wait longer than we are willing to. */
export class ChatvisorRateLimitedError extends ChatvisorApiError {
  readonly retryable = true;
  readonly retryAfterMs: number | undefined;
  constructor(details: ChatvisorErrorDetails & { retryAfterMs?: number | undefined }) {
    super('chatvisor_rate_limited', 429, 'Chatvisor is rate-limiting the bridge; try again later', {
      ...details,
      ...(details.retryAfterMs === undefined
        ? {}
        : { headers: { 'retry-after': String(Math.max(1, Math.ceil(details.retryAfterMs / 1000))) } }),
    });
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** 5xx, timeouts and network errors that outlasted our retries. */
export class ChatvisorUnavailableError extends ChatvisorApiError {
  readonly retryable = true;
  constructor(details: ChatvisorErrorDetails & { reason: string }) {
    super('chatvisor_unavailable', 502, `Chatvisor is unavailable: ${details.reason}`, details);
  }
}

/** Another 4xx (400, 409, 422 ...): Chatvisor rejected what we sent. */
export class ChatvisorRejectedError extends ChatvisorApiError {
  readonly retryable = false;
  constructor(details: ChatvisorErrorDetails & { detail: string }) {
    super(
      'chatvisor_rejected',
      502,
      `Chatvisor rejected ${details.operation} (HTTP ${details.vendorStatus}): ${details.detail}`,
      details,
    );
  }
}

/** A 2xx whose body is not the shape we expect (the assumed schema is wrong, or the vendor changed). */
export class ChatvisorBadResponseError extends ChatvisorApiError {
  readonly retryable = false;
  constructor(details: ChatvisorErrorDetails & { detail: string }) {
    super(
      'chatvisor_bad_response',
      502,
      `Chatvisor answered ${details.operation} with an unexpected body: ${details.detail}`,
      details,
    );
  }
}

/** An agent sync finished but some agents could not be written (the CLI exits 1 on it). */
export class AgentSyncIncompleteError extends AppError {
  constructor(failed: number) {
    super(
      'agent_sync_incomplete',
      502,
      `${failed} agent${failed === 1 ? '' : 's'} could not be synced; see the report`,
    );
  }
}

/**
 * `sync agents` asked to stop (SIGINT, SIGTERM: CliIo.signal) before its end: the message says
 * where the run stopped and whether its interruption is recorded (the CLI exits 1 on it).
 */
export class AgentSyncStoppedError extends AppError {
  constructor(message: string) {
    super('agent_sync_stopped', 503, message);
  }
}
