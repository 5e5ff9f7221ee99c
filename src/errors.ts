/**
 * Typed errors with stable codes. Every error that may reach a caller is one of these;
 * `src/http/errors.ts` is the one place that turns them into HTTP answers.
 */
export interface ErrorIssue {
  path: string;
  message: string;
}

export interface AppErrorOptions {
  cause?: unknown;
  issues?: ErrorIssue[];
  /** Extra headers for the HTTP answer (e.g. Retry-After). */
  headers?: Record<string, string>;
}

export class AppError extends Error {
  readonly code: string;
  readonly status: number;
  readonly issues: ErrorIssue[] | undefined;
  readonly headers: Record<string, string> | undefined;
  /** Whether the message is safe to show to the caller (Koa's `expose` semantics). */
  readonly expose: boolean;

  constructor(code: string, status: number, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.issues = options.issues;
    this.headers = options.headers;
    this.expose = status < 500;
  }
}

export class BadRequestError extends AppError {
  constructor(code: string, message: string, options?: AppErrorOptions) {
    super(code, 400, message, options);
  }
}

export class ValidationError extends AppError {
  constructor(message: string, issues: ErrorIssue[], code = 'invalid_body') {
    super(code, 400, message, { issues });
  }
}

/**
 * An observation whose identifiers are all junk (blocklisted, unparseable phones): it identifies
 * nobody. The intake pipeline accepts such a payload and keeps it in the journal; elsewhere it is
 * a 400.
 */
/** A one-time token (the LiveTex lookup's jti) presented again: refused, nothing read. */
export class ReplayedTokenError extends AppError {
  constructor() {
    // No WWW-Authenticate header: DESIGN §6 says the refusal is the JSON error "and nothing else".
    super('replayed_token', 401, 'this token (jti) was already used');
  }
}

export class NoIdentifierError extends BadRequestError {
  constructor() {
    super(
      'no_identifier',
      'the payload carries no usable identifier (person id, e-mail, phone or vendor id)',
    );
  }
}

export class UnauthorizedError extends AppError {
  constructor(code = 'unauthorized', message = 'a valid credential is required') {
    super(code, 401, message, { headers: { 'www-authenticate': 'Bearer' } });
  }
}

export class NotFoundError extends AppError {
  constructor(code = 'not_found', message = 'not found') {
    super(code, 404, message);
  }
}

export class ConflictError extends AppError {
  constructor(code: string, message: string, options?: AppErrorOptions) {
    super(code, 409, message, options);
  }
}

/**
 * A job's work is already running elsewhere (another instance, or an operator's on-demand run holds
 * its lock). An admin route answers 409; the scheduler counts the run `skipped_locked`, as when it
 * finds the job's own run lock held, not as a failure.
 */
export class JobBusyError extends ConflictError {}

export class PayloadTooLargeError extends AppError {
  /**
   * The body's first bytes, as far as they were read before the limit (empty when the declared
   * Content-Length was already over it): the intake journals them, marked cut, so that a
   * vendor's oversized payload is not lost without a trace.
   */
  readonly partial: Buffer;

  constructor(limit: number, partial: Buffer = Buffer.alloc(0)) {
    super('payload_too_large', 413, `request body is larger than ${limit} bytes`);
    this.partial = partial;
  }
}

/**
 * The client closed the request before its body was read: nobody is left to answer (the status
 * is for the logs and metrics only), and nothing was received that could be kept. A vendor that
 * gave up retries the delivery.
 */
export class RequestClosedError extends AppError {
  constructor(options?: Pick<AppErrorOptions, 'cause'>) {
    super('request_closed', 400, 'the request was closed before its body was complete', options);
  }
}

export class UnsupportedMediaTypeError extends AppError {
  constructor(message: string) {
    super('unsupported_media_type', 415, message);
  }
}

/** Too many attempts from one address or on one channel; retry after the window ends. */
export class TooManyRequestsError extends AppError {
  constructor(retryAfterSeconds: number) {
    super('rate_limited', 429, 'too many requests; retry later', {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) },
    });
  }
}

/** The store (Redis) cannot be reached: the caller should retry later, nothing was written. */
export class StoreUnavailableError extends AppError {
  constructor(cause?: unknown) {
    super('store_unavailable', 503, 'the store is unavailable; retry later', {
      cause,
      headers: { 'retry-after': '5' },
    });
  }
}

/** A lock could not be taken in time (heavy contention); safe to retry. */
export class StoreBusyError extends AppError {
  constructor(what: string, message = `could not lock ${what} in time; retry later`) {
    super('store_busy', 503, message, {
      headers: { 'retry-after': '1' },
    });
  }
}

/**
 * An observation's contact kept changing under it until it gave up (heavy contention on one
 * person): passing, like a busy lock, so 503 — a vendor resends after a 5xx but drops a 4xx.
 */
export class IdentityContentionError extends AppError {
  constructor() {
    super('identity_contention', 503, 'the contact changed too often while being written; retry later', {
      headers: { 'retry-after': '1' },
    });
  }
}

/** The config file is wrong; carries every problem with its path. */
export class ConfigError extends AppError {
  constructor(message: string, issues: ErrorIssue[] = []) {
    super('invalid_config', 500, message, { issues });
  }
}

export function isAppError(error: unknown): error is AppError {
  return error instanceof AppError;
}

/** zod issues -> our issue list, with paths written like `channels[2].apiToken`. */
export function issuesFromZod(
  error: { issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }> },
  prefix: ReadonlyArray<PropertyKey> = [],
): ErrorIssue[] {
  return error.issues.map((issue) => ({
    path: formatPath([...prefix, ...issue.path]),
    message: issue.message,
  }));
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}
