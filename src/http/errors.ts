import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { AppError } from '../errors.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';

/**
 * The one place errors become HTTP answers: `{"error":{"code","message","issues"}}`.
 * AppErrors keep their status and code; anything else is a 500 with a generic message (logged
 * once here with the request id, never shown to the caller).
 */
export function errorBody(code: string, message: string, issues?: unknown[]) {
  return {
    error: { code, message, ...(issues && issues.length > 0 ? { issues: boundedIssues(issues) } : {}) },
  };
}

/** At most this many problems in an answer; the rest are counted in one more. */
export const MAX_ANSWER_ISSUES = 20;
/** A problem's path or message is cut past this many characters (UTF-16 units). */
export const MAX_ISSUE_TEXT = 300;

/**
 * An answer's problems, bounded: a body under the size limit can hold tens of thousands of
 * problems, or one whose text echoes all of it (zod's `Unrecognized keys: "k0", "k1", …` at the
 * LiveTex lookup, which anyone may call, answered 700 KB). The first ones say what to fix.
 */
function boundedIssues(issues: unknown[]): unknown[] {
  const bounded = issues.slice(0, MAX_ANSWER_ISSUES).map((issue) => {
    if (issue === null || typeof issue !== 'object') return issue;
    const { path, message } = issue as { path?: unknown; message?: unknown };
    return { ...issue, ...(path === undefined ? {} : { path: cut(path) }), message: cut(message) };
  });
  const more = issues.length - bounded.length;
  if (more > 0)
    bounded.push({
      path: '(root)',
      message: `${more.toLocaleString('en-US')} more problem${more === 1 ? '' : 's'}, not listed`,
    });
  return bounded;
}

function cut(text: unknown): unknown {
  if (typeof text !== 'string' || text.length <= MAX_ISSUE_TEXT) return text;
  // Not between the two halves of a surrogate pair: the JSON would carry a lone one.
  const start = text.slice(0, MAX_ISSUE_TEXT - 40).replace(/[\uD800-\uDBFF]$/, '');
  return `${start}… (${text.length.toLocaleString('en-US')} characters in all)`;
}

/**
 * What a caller sees of a 5xx: the stable code, a fixed sentence for the status and the request
 * id to quote to an operator. Internal messages (which can name contacts, channels, keys or
 * upstream answers) go to the log only.
 */
const GENERIC_5XX: Record<number, string> = {
  502: 'an upstream service failed; see the bridge log with this request id',
  503: 'temporarily unavailable; retry later',
  504: 'an upstream service timed out; see the bridge log with this request id',
};

function serverErrorBody(status: number, code: string, requestId: unknown) {
  const message = GENERIC_5XX[status] ?? 'internal error; see the bridge log with this request id';
  return {
    error: { code, message, ...(typeof requestId === 'string' ? { requestId } : {}) },
  };
}

export function errorMiddleware() {
  const repeats = createRepeatGate();
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        ctx.status = 404;
        ctx.body = errorBody('not_found', 'no such route');
      } else if (ctx.status === 405 && ctx.body == null) {
        // The router's answer for a known path and a wrong method carries only an Allow header;
        // the body would be Koa's plain text. Every error here is JSON.
        ctx.body = errorBody(
          'method_not_allowed',
          `${ctx.method} is not allowed here; allowed: ${ctx.response.get('allow') || 'none'}`,
        );
      }
    } catch (caught) {
      const logger = ctx.state.logger as Logger | undefined;
      if (caught instanceof AppError) {
        ctx.status = caught.status;
        ctx.body =
          caught.status >= 500
            ? serverErrorBody(caught.status, caught.code, ctx.state.requestId)
            : errorBody(caught.code, caught.message, caught.issues);
        for (const [name, value] of Object.entries(caught.headers ?? {})) ctx.set(name, value);
        // A 503 is "not now" (the store is down, a replica lags, shutting down): it comes back
        // on every request until that passes, and its body quotes no request id, so it is said
        // once a minute per code. Other 5xx answers point the caller at this line by request id.
        if (caught.status === 503 && logger)
          warnOncePerMinute(logger, repeats, caught.code, { err: caught }, caught.message);
        else if (caught.status >= 500) logger?.warn({ err: caught }, caught.message);
        return;
      }
      // Koa/body-parser style errors (e.g. from @koa/router) carry a status and `expose`.
      const status = (caught as { status?: number }).status;
      if (
        typeof status === 'number' &&
        status >= 400 &&
        status < 500 &&
        (caught as { expose?: boolean }).expose
      ) {
        ctx.status = status;
        ctx.body = errorBody('bad_request', (caught as Error).message);
        return;
      }
      logger?.error({ err: caught }, 'unhandled error');
      ctx.status = 500;
      ctx.body = serverErrorBody(500, 'internal_error', ctx.state.requestId);
    }
  };
}
