import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { z } from 'zod';
import { readJsonBody } from './body.js';
import { parseJson } from './json.js';
import { checkQueryKeys, parseQuery, parseWith, refuseBody } from './validate.js';

/**
 * The one route model for all HTTP (issue 12 item 3). A route is declared once, as data: method,
 * path, the zod schemas of what it takes and answers, its status codes and who may call it.
 * `mount()` puts the declarations on a @koa/router and `openApiDocument()` (src/http/openapi.ts)
 * describes the very same list, so a route cannot be served without being documented or the
 * other way round (test/routes.test.ts checks both directions).
 *
 * Inputs are validated here, once, at the boundary: a handler gets parsed values and does not
 * parse them again.
 */

/** Who may call a route; each maps to one OpenAPI security scheme. */
export type RouteAuth =
  /** Open (operations, the public OpenAPI document). */
  | 'none'
  /** `Authorization: Bearer <admin.token>`, checked by the admin gate before any router. */
  | 'admin'
  /** `Authorization: Bearer <metrics.token>` (only when /metrics is served on the main port). */
  | 'metrics'
  /** The channel's token in the URL (vendor webhooks): a wrong one answers the one 404. */
  | 'url-token'
  /** Encrypted and signed by a channel key (LiveTex lookup): the body is the credential. */
  | 'sealed'
  /** The web console's session cookie (or a signed agent link). */
  | 'console';

export interface RouteAnswer {
  description: string;
  /** The body's shape; without one the body is described by `contentType` only. */
  schema?: z.ZodType;
  /** Defaults to application/json. */
  contentType?: string;
}

/** A body the handler reads itself (vendor intake: the raw bytes are journaled when refused). */
export interface RawBody {
  contentType: string;
  description: string;
  /** What the vendor documents it sends; the adapter reads it leniently, so it is not enforced here. */
  schema?: z.ZodType;
}

type Parsed<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteInput<P, Q, B> {
  params: Parsed<P>;
  query: Parsed<Q>;
  body: Parsed<B>;
}

export interface RouteSpec<
  P extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** @koa/router syntax (`:param`), matched case-sensitively and strictly. */
  path: string;
  summary: string;
  description?: string;
  /** One OpenAPI tag (admin, channels, intake, operations, console, …). */
  tag: string;
  auth: RouteAuth;
  /** Path parameters; without a schema each `:param` is a plain string. */
  params?: P;
  query?: Q;
  /**
   * A JSON body, read (size limit), declared as JSON (415 otherwise), parsed (depth guard) and
   * validated before the handler.
   */
  body?: B;
  /** The message of a 400 for a body that does not fit (defaults to "invalid body"). */
  bodyHint?: string;
  rawBody?: RawBody;
  /** A query the handler validates itself (a channel route's own schema): documented, not parsed here. */
  rawQuery?: z.ZodType;
  /** Every status the route answers with itself (successes and the errors it throws). */
  answers: Record<number, RouteAnswer>;
  /** Extra text for path parameters in the document (e.g. which channels a route exists on). */
  paramNotes?: Record<string, { description: string; enum?: string[] }>;
  handle(ctx: Context, input: RouteInput<P, Q, B>): unknown;
}

// biome-ignore lint/suspicious/noExplicitAny: a list of routes holds each route's own input types
export type Route = RouteSpec<any, any, any>;

/**
 * The answer of a route that reads or writes the store while Redis is down or a lock is contended
 * (StoreUnavailableError, StoreBusyError, src/errors.ts). Declared by each such route: a client
 * written from the document must know that this one is passing and to be retried.
 */
export const STORE_UNAVAILABLE: RouteAnswer = {
  description: 'The store is unavailable or busy (store_unavailable, store_busy); retry after Retry-After',
};

/** The 415 of a route whose body is JSON (readJsonBody), as the document describes it. */
export const JSON_ONLY =
  'A body not sent as Content-Type: application/json in UTF-8, or sent without a type (unsupported_media_type); ' +
  'a compressed one (unsupported_content_encoding)';

/** Declare a route; the identity function that gives the handler its typed input. */
export function route<
  P extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(spec: RouteSpec<P, Q, B>): Route {
  return spec as Route;
}

/**
 * An admin POST or PUT that declares no body and does not read one itself (`rawBody`): mount()
 * reads what comes and refuses anything but nothing or `{}` (refuseBody), declared as JSON like
 * every admin body (readJsonBody). It ignored a body before, so `{"force": true}` sent to a
 * replay looked as if it had been applied.
 */
export function refusesBody(each: Pick<Route, 'auth' | 'method' | 'body' | 'rawBody'>): boolean {
  return (
    each.auth === 'admin' && !each.body && !each.rawBody && (each.method === 'POST' || each.method === 'PUT')
  );
}

export interface MountOptions {
  bodyLimitBytes: number;
  /**
   * Answer a known path with a method it does not take like this instead of letting
   * allowedMethods answer 405 (public channel routes: a 405 would confirm the channel exists).
   */
  wrongMethod?: (ctx: Context) => void;
}

const WRONG_METHOD = 'wrong-method';

/** Mount routes on a router; the router's own prefix is not part of `route.path`. */
export function mount(router: Router, routes: readonly Route[], options: MountOptions): void {
  for (const each of routes) {
    const { params, query, body } = each;
    // A route that takes no parameters, query or body (vendor intake: it reads its body itself)
    // is handed its input without an async wrapper of its own around the handler's promise.
    if (!params && !query && !body && !refusesBody(each) && !(each.auth === 'admin' && !each.rawQuery)) {
      router.register(each.path, [each.method], (ctx) =>
        each.handle(ctx as unknown as Context, { params: ctx.params, query: undefined, body: undefined }),
      );
      continue;
    }
    router.register(each.path, [each.method], async (ctx) => {
      // The admin API reads its query strictly (a route without one refuses any parameter); a
      // channel route's query (rawQuery) is checked the same way by runChannelRoute. Vendor
      // webhooks, probes and scrapes stay lenient: a vendor or a scraper may add parameters.
      if (each.auth === 'admin' && !query && !each.rawQuery) checkQueryKeys(undefined, ctx.query);
      // undefined, not {}, when a route takes nothing: no allocation on the hot path.
      const input = {
        params: params ? parseWith(params, ctx.params, 'invalid params', 'invalid_params') : ctx.params,
        query: query ? parseQuery(query, ctx.query) : undefined,
        body: body
          ? parseWith(
              body,
              parseJson((await readJsonBody(ctx, options.bodyLimitBytes)).toString('utf8')),
              each.bodyHint ?? 'invalid body',
              'invalid_body',
            )
          : undefined,
      };
      if (refusesBody(each)) refuseBody(await readJsonBody(ctx, options.bodyLimitBytes));
      await each.handle(ctx as unknown as Context, input);
    });
  }
  const { wrongMethod } = options;
  if (wrongMethod) {
    // After the routes: reached only when no route of the path took the method.
    for (const path of new Set(routes.map((each) => each.path))) {
      router.register(path, router.methods, (ctx) => wrongMethod(ctx as unknown as Context), {
        name: WRONG_METHOD,
      });
    }
  }
}

/**
 * The router's answers for a known path and a method it has no route for: 405 with `Allow` for
 * a method it takes elsewhere (its JSON body is the error middleware's, src/http/errors.ts), and
 * OPTIONS answered 204 No Content with the same `Allow`. @koa/router answers OPTIONS with 200 and
 * an empty text/plain body: a status that promises content, and a type no answer of the bridge
 * otherwise has. An unknown path stays the JSON 404.
 *
 * A method no router takes at all (TRACE, PROPFIND, M-SEARCH: scanners send them) is answered the
 * same way: 405 on a path that takes other methods, the JSON 404 elsewhere. @koa/router answers
 * 501 Not Implemented for it on every path, a 5xx for a wrong request (alerting counts it as the
 * bridge failing; test/http.unknown-methods.test.ts). A public vendor path is no route of this
 * router: it gets the 404, so nothing confirms that it exists.
 */
export function allowedMethods(router: Router): Middleware {
  const answer = router.allowedMethods({ throw: false });
  return async (ctx, next) => {
    await answer(ctx as Parameters<typeof answer>[0], next);
    if (ctx.method === 'OPTIONS' && ctx.status === 200 && ctx.response.get('allow')) {
      ctx.status = 204;
      ctx.body = null;
    } else if (ctx.status === 501 && ctx.body == null) {
      // This router's own routes for the path: @koa/router's Allow also names the methods of
      // another router's routes that matched it (the public router's, whose wrong methods are 404).
      const allowed = new Set(router.match(ctx.path, ctx.method).path.flatMap((layer) => layer.methods));
      if (allowed.size > 0) {
        ctx.status = 405;
        ctx.set('allow', [...allowed].join(', '));
      } else {
        // As if nothing had answered: the error middleware writes the one JSON 404.
        ctx.remove('allow');
        ctx.status = 404;
      }
    }
  };
}

/** `METHOD /path` of every route a router serves (its prefix included), for tests and the gate's walk. */
export function mountedRoutes(router: Router): Array<{ method: string; path: string }> {
  return router.stack.flatMap((layer) =>
    (layer.name === WRONG_METHOD ? [] : layer.methods)
      .filter((method) => method !== 'HEAD')
      .map((method) => ({ method, path: String(layer.path) })),
  );
}
