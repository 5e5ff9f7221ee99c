import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Router from '@koa/router';
import Koa, { type Context, type Middleware, type Next } from 'koa';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isLoopbackHost, publishedCredentials } from '../config/published.js';
import { type ChannelConfig, type Config, channelIdSchema } from '../config/schema.js';
import { type ConsoleChannel, type ConsoleDeps, createConsole } from '../console/index.js';
import type { AgentLinks } from '../console/links.js';
import { TIMELINE_SCAN_ENTRIES } from '../contacts/engine.js';
import type { FactService } from '../contacts/facts.js';
import { quotedInput } from '../contacts/normalize.js';
import { type ContactService, FIND_LIMIT } from '../contacts/service.js';
import {
  conflictSchema,
  conflictStateSchema,
  contactSchema,
  identifierSchema,
  timelineEntrySchema,
  timelineEntryTypeSchema,
  timelineEntryTypes,
} from '../contacts/types.js';
import type { AdapterDefinition, Answer, ChannelRoute, IntakeRoute } from '../contracts/adapter.js';
import type { Delivery } from '../delivery/index.js';
import { NotFoundError, TooManyRequestsError, UnauthorizedError, ValidationError } from '../errors.js';
import { extend } from '../extend.js';
import type { DeferredIntake } from '../intake/deferred.js';
import { JOURNAL_PAGE_BYTES, type PayloadJournal } from '../intake/journal.js';
import {
  createIntakePipeline,
  type IntakeCall,
  type IntakeChannel,
  lookupMetricsFor,
} from '../intake/pipeline.js';
import { createRepeatGate, warnOncePerMinute } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { limitKey } from '../net/address.js';
import type { StoreCheckResult } from '../store/check.js';
import type { Store } from '../store/types.js';
import { readJsonBody, readRawBody } from './body.js';
import { requireHost } from './client-error.js';
import { EarlyContext, KoaWithEarlyPath } from './early.js';
import { errorBody, errorMiddleware } from './errors.js';
import { forwardedHeaders, trustedProxies } from './forwarded.js';
import { isAdminPath, redactPath, tokenEquals } from './guard.js';
import { defensiveHeaders, setDefensiveHeaders } from './headers.js';
import { rebindingGuard } from './host-check.js';
import { type DocumentedRoute, openApiDocument } from './openapi.js';
import {
  type AdminAuthLimit,
  clientAddress,
  createAuthFailureLimit,
  createWebhookTokenLimit,
  WindowLimiter,
} from './rate-limit.js';
import {
  allowedMethods,
  JSON_ONLY,
  mount,
  mountedRoutes,
  type Route,
  type RouteAnswer,
  route,
  STORE_UNAVAILABLE,
} from './routes.js';
import { emptyIsAbsent, queryInt, runChannelRoute } from './validate.js';

/**
 * The Koa app (no listening, no I/O at construction): middleware order, vendor intake, channel
 * routes, the admin API and operations endpoints. Built by the composition root (src/bridge.ts).
 */
export interface AppDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  store: Store;
  /** The bounded, shared "store accepts a write" check behind /readyz and chatbridge_store_up. */
  storeCheck: () => Promise<StoreCheckResult>;
  contacts: ContactService;
  /** The facts shown to agents in vendor answers (the intake pipeline's facts step). */
  facts: FactService;
  /** intake.ackAfterAppend: the deferred intake (null when off). */
  deferred?: DeferredIntake | null;
  journal: PayloadJournal;
  delivery: Delivery;
  channels: ReadonlyMap<string, ConsoleChannel>;
  /** Every registered adapter: its intake routes are mounted whether or not a channel uses it. */
  adapters: readonly AdapterDefinition[];
  /** While false, /readyz answers 503 (set during shutdown). */
  isAccepting(): boolean;
  /** `worker` serves only /healthz, /readyz and /metrics (DESIGN §5); default `all`. */
  role?: 'all' | 'web' | 'worker';
  /** Web console (DESIGN §11): agent links signer (null without a master key), vendor names. */
  agentLinks?: AgentLinks | null;
  vendorNames?: ReadonlyMap<string, string>;
  /** CRM destinations with their connector (the console's status page: token expiry). */
  crmDestinations?: ConsoleDeps['crmDestinations'];
  configPath?: ConsoleDeps['configPath'];
  /** The key of the hash a lookup's subject is logged as (src/intake/pipeline.ts). */
  logKey?: Buffer;
  /**
   * Per vendor with a lookup route that opens (authenticates): the channel a lookup for a channel
   * id that is none of this vendor's is run on (UNKNOWN_CHANNEL_ID, made by the composition root
   * with the adapter's `create`, no keys of its own), so that it answers as a known channel
   * answers a request none of its keys opens. It is run up to `open` only: one that opens there
   * gets the one 404. Without one such a lookup gets the one 404 at once (the ids can then be
   * told apart).
   */
  unknownChannels?: ReadonlyMap<string, IntakeChannel>;
  now?: () => Date;
}

/**
 * Every public 404 is this one body (also the router's own 404, src/http/errors.ts): an unknown
 * channel, a wrong token, a wrong vendor and an unknown sub-path of a known channel look the
 * same, so the URL space cannot be probed for channel ids.
 */
export const NOT_FOUND = errorBody('not_found', 'no such route');
const NO_CHANNEL = NOT_FOUND;
/** What a webhook's token is compared with when its channel does not exist (nothing matches it). */
const UNKNOWN_CHANNEL_TOKEN = randomUUID();
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;
/**
 * The id of each vendor's unknown channel (AppDeps.unknownChannels): no configured channel can
 * have it (ids are a-z, 0-9 and -), so its keys, and its label in the lookup metrics, are its own.
 */
export const UNKNOWN_CHANNEL_ID = '_unknown';

/**
 * A vendor webhook's URL as served ahead of the chain (serveWebhookEarly): vendor, channel id and
 * token each one plain segment (RFC 3986's pchar less `%`, not starting with a dot), nothing else.
 * The router would give these segments as they are (no escape to decode), and the admin gate,
 * the console and the /metrics layer judge none of them.
 */
const SEGMENT = "[\\w~!$&'()*+,;=:@-][\\w.~!$&'()*+,;=:@-]*";
/** The `next` of a layer run on its own (the early path's forwardedHeaders): nothing, at once. */
const DONE = Promise.resolve();
const passOn = () => DONE;
const EARLY_WEBHOOK = new RegExp(`^/webhooks/([a-z0-9-]+)/(${SEGMENT})/(${SEGMENT})$`);

/** A URL of a vendor's webhook served early, for the start-up checks. */
const webhookProbe = (vendor: string) => `/webhooks/${vendor}/channel/token`;

/** A path that a layer skipped by the early routes judges (the admin gate, the console, the /metrics 404). */
const judgedBySkippedLayer = (path: string) =>
  isAdminPath(path) || path === '/metrics' || path.startsWith('/console');

/**
 * What the first middleware keeps on ctx.state for every request. The per-request child logger
 * is built only if something logs through it (most requests log one line, the access line, which
 * does not need it). A class with the lazy getter on its prototype: `Object.defineProperty` of a
 * getter on Koa's fresh `{}` cost ~1.8 µs per request in a loop, a class instance ~0.1.
 */
class RequestState {
  private child: Logger | undefined;
  [key: string]: unknown;
  constructor(
    readonly requestId: string,
    /** performance.now() when the request arrived. */
    readonly receivedAt: number,
    private readonly parent: Logger,
  ) {}
  get logger(): Logger {
    this.child ??= this.parent.child({ requestId: this.requestId });
    return this.child;
  }
}

/**
 * The intake pipeline's view of one HTTP request. A class, not an object literal with a getter:
 * V8 builds such a literal through a slow runtime path (~2.8 µs per request in a loop, against
 * ~0.1 for a class instance); the logger stays lazy, as the request's child logger is.
 */
class HttpIntakeCall implements IntakeCall {
  readonly contentType: string | undefined;
  readonly contentEncoding: string | undefined;
  readonly arrivedAt: number;
  constructor(
    private readonly ctx: Context,
    readonly channel: IntakeChannel,
    private readonly bodyLimit: number,
    readonly infoEnabled: boolean,
    readonly admit?: () => (() => void) | undefined,
  ) {
    this.contentType = ctx.get('content-type') || undefined;
    this.contentEncoding = ctx.get('content-encoding') || undefined;
    this.arrivedAt = (ctx.state as RequestState).receivedAt;
  }
  readBody(): Promise<Buffer> {
    return readRawBody(this.ctx, this.bodyLimit);
  }
  get logger(): Logger {
    return (this.ctx.state as RequestState).logger;
  }
}

/** Every admin route of an app, as `{method, path}` (the security tests walk all of them). */
const adminRouteLists = new WeakMap<Koa, Array<{ method: string; path: string }>>();
export function listAdminRoutes(app: Koa): Array<{ method: string; path: string }> {
  return adminRouteLists.get(app) ?? [];
}

function send(ctx: Context, result: Answer) {
  ctx.status = result.status ?? 200;
  if (result.headers) for (const name in result.headers) ctx.set(name, result.headers[name]!);
  if (result.contentType) ctx.type = result.contentType;
  ctx.body = result.body ?? null;
}

// Empty filters are filters not given (DESIGN §4 writes `?email=&phone=&identity=kind:value`).
const contactQuerySchema = z.strictObject({
  email: emptyIsAbsent(z.string()),
  phone: emptyIsAbsent(z.string()),
  identity: emptyIsAbsent(
    z.string().regex(/^[a-z][a-z0-9_]*:.+$/, 'kind:value (or kind:channelId:value for vendor-local ids)'),
  ),
});

// One channel and one type at most: no admin parameter takes several values (checkQueryKeys).
const timelineQuerySchema = z.strictObject({
  limit: queryInt({ min: 1, max: 200, default: 50 }),
  before: z.string().min(1).max(200).optional(),
  channel: emptyIsAbsent(channelIdSchema).describe(
    "only this channel's entries: a configured channel id, or one the contact was seen in",
  ),
  type: emptyIsAbsent(timelineEntryTypeSchema).describe(
    `only entries of this type (${timelineEntryTypes.join(', ')}, or another an adapter writes)`,
  ),
});

const unmergeBodySchema = z.union([
  z.strictObject({ recordId: z.string().min(1) }),
  z.strictObject({ identifier: identifierSchema.strict() }),
]);

const mergeBodySchema = z.strictObject({
  with: z
    .string()
    .min(1)
    .max(200)
    .describe('the id of the other contact (a merged-away id names its contact)'),
});

const journalQuerySchema = z.strictObject({
  channel: emptyIsAbsent(z.string().max(64)),
  kind: emptyIsAbsent(z.enum(['rejected', 'unhandled'])),
  limit: queryInt({ min: 1, max: 500, default: 50 }),
  before: z.string().min(1).max(40).optional().describe('nextCursor of the previous page'),
});

const conflictsQuerySchema = z.strictObject({
  limit: queryInt({ min: 1, max: 500, default: 50 }),
  before: z.string().min(1).max(40).optional().describe('nextCursor of the previous page'),
  state: emptyIsAbsent(conflictStateSchema).describe(
    'only conflicts in this state now: open (two of its contacts still apart), merged (merged by hand since), resolved (made one contact by a later merge); absent: every state',
  ),
});

const channelListSchema = z.object({
  channels: z.array(
    z.object({
      id: z.string(),
      vendor: z.string(),
      name: z.string(),
      jobs: z.array(z.object({ name: z.string(), schedule: z.string() })),
      routes: z.array(z.string()).describe('METHOD path, below /api/v1/channels/{id}/'),
    }),
  ),
});

const GLOBAL = new Set(['person', 'email', 'phone']);

/** ['a', 'b', 'c'] -> 'a, b or c'. */
const orList = (items: readonly string[]) =>
  items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`;

/**
 * A kind that is neither global nor any adapter's vendor-local kind, said to be none with the
 * kinds there are, in the form the caller writes them (`?identity=` as one `kind:value` string,
 * an unmerge body as `{kind, value, channelId}`). Both were told that such a kind "needs its
 * channel", sending the newcomer to add a channel to a kind that does not exist.
 */
function unknownKindIssue(
  path: string,
  kind: string,
  localKinds: readonly string[],
  form: { global: string; local: string },
) {
  return {
    path,
    message: `"${quotedInput(kind)}" is not a known kind: person, email or phone${form.global}${
      localKinds.length === 0 ? '' : `, or vendor-local ${orList(localKinds)} with its ${form.local}`
    }`,
  };
}

/** `localKinds`: every adapter's vendor-local identifier kinds (AdapterDefinition.identifierKinds). */
function parseIdentity(text: string, localKinds: readonly string[]) {
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (GLOBAL.has(kind)) return { kind, value: rest };
  const second = rest.indexOf(':');
  // kind:channel:value of any kind is searched as given: a store may hold kinds an adapter no
  // longer makes.
  if (second <= 0 && !localKinds.includes(kind)) {
    throw new ValidationError(
      'invalid query',
      [
        unknownKindIssue('identity', kind, localKinds, {
          global: ' (kind:value)',
          local: 'channel (kind:<channelId>:<value>)',
        }),
      ],
      'invalid_query',
    );
  }
  if (second <= 0) {
    throw new ValidationError(
      'invalid query',
      [
        {
          path: 'identity',
          message: `vendor-local kind "${quotedInput(kind)}" needs its channel: ${quotedInput(kind)}:<channelId>:<value>`,
        },
      ],
      'invalid_query',
    );
  }
  return { kind, channelId: rest.slice(0, second), value: rest.slice(second + 1) };
}

const EMPTY = Buffer.alloc(0);

/** A route's own error statuses (`{401: 'why'}`) as documented answers. */
function describeErrors(errors: Record<number, string> | undefined): Record<number, RouteAnswer> {
  return Object.fromEntries(
    Object.entries(errors ?? {}).map(([status, text]) => [status, { description: text }]),
  );
}
const okSchema = z.object({ ok: z.literal(true) });
const PROMETHEUS = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * The main port's 404 for /metrics when metrics.token does not serve it there: where metrics are,
 * instead of "no such route" (DESIGN and the README name `GET /metrics`, and a newcomer tries it
 * on the bridge's port first). Nothing is served and nothing about the listener's address is said.
 */
function metricsElsewhere(metricsPort: number | undefined) {
  const body = errorBody(
    'not_found',
    metricsPort === undefined
      ? 'metrics are not served: set metrics.port (a listener of their own, loopback by default) or metrics.token (on this port, behind a bearer token)'
      : 'metrics are not served on this port: they are on the metrics listener (metrics.port); set metrics.token to serve them here too, behind a bearer token',
  );
  const answer = async (ctx: Context, next: Next) => {
    await next();
    if (ctx.status === 404 && ctx.body === undefined) {
      ctx.status = 404; // said, so that setting the body does not make it Koa's 200
      ctx.body = body;
    }
  };
  // Not async for any other path (vendor intake above all): a promise of its own resolved with
  // next()'s cost every request two more microtask jobs (bench/HISTORY.md, twenty-fifth round).
  // Nothing after it changes ctx.path, so judging the path first is the same test.
  return (ctx: Context, next: Next) => (ctx.path === '/metrics' ? answer(ctx, next) : next());
}

/** GET /metrics: on the metrics listener (open, loopback by default) or on the main port behind metrics.token. */
function metricsRoute(metrics: Metrics, token: string | undefined, limit?: AdminAuthLimit): Route {
  return route({
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus metrics',
    description:
      'Served on the metrics listener (metrics.port, loopback by default), and on the main port only ' +
      'when metrics.token is set (then with that bearer token).',
    tag: 'operations',
    auth: token ? 'metrics' : 'none',
    answers: token
      ? {
          200: { description: 'Prometheus text exposition', contentType: PROMETHEUS },
          429: {
            description:
              'Too many wrong metrics tokens from this address, or from addresses not seen with the token lately; see Retry-After',
          },
        }
      : { 200: { description: 'Prometheus text exposition', contentType: PROMETHEUS } },
    async handle(ctx) {
      if (token) {
        // Failures are limited like the admin token's (scope metrics_auth): unlimited, a wrong
        // token could be guessed at full speed.
        const match = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
        const matches = () => match !== null && tokenEquals(match[1]!.trim(), token);
        if (!(limit ? await limit.check(clientAddress(ctx), matches) : matches()))
          throw new UnauthorizedError();
      }
      ctx.type = metrics.registry.contentType;
      ctx.body = await metrics.registry.metrics();
    },
  });
}

/**
 * The metrics-only app for the `metrics.port` listener (loopback by default): GET /metrics (and
 * HEAD), nothing else. A wrong method on /metrics is answered as on the main port's known paths
 * (allowedMethods, with the error middleware's JSON body): 405 with `Allow`, OPTIONS 204 with
 * `Allow`. It answered 404 before, as if a scraper configured with POST had the wrong path.
 */
export function createMetricsApp(
  metrics: Metrics,
  listener: { bind?: string; allowedHosts?: readonly string[] } = {},
): Koa {
  const app = new Koa();
  app.silent = true;
  app.use(defensiveHeaders());
  app.use(errorMiddleware());
  app.use(requireHost());
  // On loopback (metrics.host's default): a Host no DNS answer controls (rebindingGuard says why).
  if (isLoopbackHost(listener.bind ?? '127.0.0.1'))
    app.use(
      rebindingGuard(
        listener.allowedHosts ?? [],
        'ask the metrics listener by IP address or localhost, or list the name in metrics.allowedHosts',
      ),
    );
  const router = new Router({ sensitive: true, strict: true });
  mount(router, [metricsRoute(metrics, undefined)], { bodyLimitBytes: 0 });
  // Any other path: the error middleware's one JSON 404 (NOT_FOUND). Not a last middleware that
  // sets it: allowedMethods runs after the rest and would keep that body under its 405.
  app.use(router.routes()).use(allowedMethods(router));
  return app;
}

/** The routes an app mounts and documents (exposed for the tests that compare the two). */
export interface AppRoutes {
  /** On the strict router with allowedMethods (405 with Allow for a known path, wrong method). */
  routes: Route[];
  /** Public routes (vendor webhooks, lookups): a wrong method answers the one 404 (a 405 would confirm the path). */
  publicRoutes: Route[];
  /** Described in the document, served by the console's own router. */
  consoleRoutes: DocumentedRoute[];
  /** `METHOD path` of everything the app's routers actually serve (read from their stacks). */
  mounted(): Array<{ method: string; path: string }>;
  /** What GET /api/v1/openapi.json answers (null on a worker, which does not serve it). */
  document(): Record<string, unknown> | null;
}
const appRoutes = new WeakMap<Koa, AppRoutes>();
export function routesOf(app: Koa): AppRoutes | undefined {
  return appRoutes.get(app);
}

/** Console pages are HTML for a browser; the document lists them so that every path is described. */
const SERVICE_DESCRIPTION =
  'a self-hosted bridge between live-chat vendors (JivoChat, LiveTex, Chatvisor) and your CRM';

/** What a worker answers at `/` (it serves no console to redirect to). */
const rootSchema = z.object({
  service: z.literal('chatbridge'),
  description: z.string(),
  role: z.literal('worker'),
  health: z.literal('/healthz'),
  ready: z.literal('/readyz'),
  docs: z.string(),
});

function consoleDocRoutes(list: ReadonlyArray<{ method: string; path: string }>): DocumentedRoute[] {
  const open = new Set(['/console/sign-in', '/console/assets/:name', '/console/c/:token']);
  return list.map(({ method, path }) => ({
    method: method as Route['method'],
    path,
    summary: method === 'GET' ? `Console page ${path}` : `Console form post ${path} (CSRF token in the form)`,
    tag: 'console',
    auth: open.has(path) ? 'none' : 'console',
    answers: (method === 'GET' && path !== '/console' && path !== '/console/c/:token'
      ? {
          200: {
            description: path.startsWith('/console/assets/') ? 'A stylesheet or script' : 'An HTML page',
            contentType: path.startsWith('/console/assets/') ? 'text/plain' : 'text/html',
          },
          // A page behind the session sends a browser without one to the sign-in page.
          ...(open.has(path)
            ? {}
            : {
                302: {
                  description: 'No session: redirect to /console/sign-in?next=…',
                  contentType: 'text/html',
                },
              }),
          404: { description: 'No such page (an HTML page)', contentType: 'text/html' },
        }
      : {
          302: { description: 'Redirect to the next page (Location)', contentType: 'text/html' },
          // The sign-in checks the admin token, and counts against the admin API's failure limit.
          ...(path === '/console/sign-in'
            ? {
                401: {
                  description: 'Not the admin token (the sign-in page again)',
                  contentType: 'text/html',
                },
                429: {
                  description: 'Too many failed authentications from this address; see Retry-After',
                  contentType: 'text/html',
                },
              }
            : {}),
          403: { description: 'Expired form or session (an HTML page)', contentType: 'text/html' },
          413: { description: 'A form over 64 KiB (an HTML page)', contentType: 'text/html' },
          415: {
            description:
              'A body not sent as Content-Type: application/x-www-form-urlencoded, sent without a type or declaring a charset other than UTF-8 (unsupported_media_type); a compressed one (unsupported_content_encoding); an HTML page',
            contentType: 'text/html',
          },
        }) as Record<number, RouteAnswer>,
    // Every form post is read by the console's readForm (src/console/index.ts).
    ...(method === 'POST'
      ? {
          rawBody: {
            contentType: 'application/x-www-form-urlencoded',
            description: 'An HTML form with its CSRF token',
          },
        }
      : {}),
  }));
}

export function createApp(deps: AppDeps): Koa {
  const { config, logger, metrics, store, contacts } = deps;
  const localKinds = [...new Set(deps.adapters.flatMap((adapter) => adapter.identifierKinds ?? []))];
  // X-Forwarded-For (and -Proto, -Host) count only from a trusted proxy (server.trustedProxies),
  // and only as far as `server.proxyHops` of them wrote it: otherwise the client sets them (a
  // per-address limit that anyone could step around, or aim at someone else's address). Koa's
  // `proxy` switch is for the whole app; forwardedHeaders makes it per connection.
  const hops = config.server.proxyHops;
  const app = new KoaWithEarlyPath({ proxy: hops > 0, maxIpsCount: hops });
  // The LiveTex lookup (and any public lookup route) and the vendor webhooks: served ahead of
  // Koa (app.early below), by the same middleware functions minus those that pass them on
  // untouched (earlyRoutes by exact path, earlyWebhooks by vendor; filled once the routes are
  // declared).
  const earlyRoutes = new Map<string, (ctx: Context) => Promise<void>>();
  const earlyWebhooks = new Map<string, (ctx: Context, channelId: string, token: string) => Promise<void>>();
  const forwarded = forwardedHeaders(hops, trustedProxies(config.server.trustedProxies));
  app.use(forwarded);
  const bodyLimit = config.server.bodyLimitBytes;

  app.silent = true; // errors are logged once by the error middleware, with the request id
  // redactPath masks the segment where a webhook route has its token. A URL set up wrongly at a
  // vendor (the channel left out, channel and token swapped) has it elsewhere, every request.
  const channelTokens = config.channels.map((channel) => channel.token);
  const hideChannelTokens = (path: string): string =>
    channelTokens.reduce(
      (hidden, token) => (hidden.includes(token) ? hidden.replaceAll(token, '***') : hidden),
      path,
    );
  /** The request's id (the client's X-Request-Id if it is one we can log, else a new one) and state. */
  const startRequest = (ctx: Context): string => {
    const given = ctx.get('x-request-id');
    const requestId = REQUEST_ID.test(given) ? given : randomUUID();
    ctx.state = new RequestState(requestId, performance.now(), logger);
    return requestId;
  };
  const finishRequest = (ctx: Context) => {
    // Shutting down: Node's server.close() ends only idle connections, so a keep-alive client
    // (a vendor, a load balancer) busy at the signal kept sending on its connection until the
    // grace ran out and the bridge dropped it, a request in flight. Saying close here ends the
    // connection with this answer; the client opens its next one elsewhere.
    if (!deps.isAccepting() && !ctx.headerSent) ctx.set('connection', 'close');
    // Checked first: with log.level warn or above the access line is off, and building it (the
    // path redaction above all) was a cost every request paid for nothing.
    if (logger.isLevelEnabled('info')) {
      const { requestId, receivedAt } = ctx.state as RequestState;
      logger.info(
        {
          requestId,
          method: ctx.method,
          path: hideChannelTokens(redactPath(ctx.path)),
          status: ctx.status,
          ms: Math.round(performance.now() - receivedAt),
        },
        'request',
      );
    }
  };
  const requestLine = async (ctx: Context, next: Next) => {
    ctx.set('x-request-id', startRequest(ctx));
    // On every answer, set first: what a handler, the console or an error sets goes over them.
    setDefensiveHeaders(ctx);
    try {
      await next();
    } finally {
      finishRequest(ctx);
    }
  };
  app.use(requestLine);
  const errors = errorMiddleware();
  app.use(errors);
  // While the config holds a published credential the bridge listens on loopback only
  // (assertSafeToListen), and a page in the machine's browser could reach it by DNS rebinding,
  // with tokens anyone can read: a Host no DNS answer controls, then (src/http/host-check.ts).
  const needHost = requireHost();
  const published = publishedCredentials(config);
  const rebinding =
    published.length > 0
      ? rebindingGuard(
          [],
          `ask the bridge by IP address or localhost: ${published.join(', ')} still hold the example's published credentials (README "Running for real")`,
        )
      : null;
  const host: Middleware = rebinding ? (ctx, next) => needHost(ctx, () => rebinding(ctx, next)) : needHost;
  app.use(host);

  /**
   * A request served ahead of Koa (serveEarly, serveWebhookEarly): the layers the chain runs for
   * it, in the chain's order — forwarded headers, request line, errors, Host — then its handler,
   * on an EarlyContext, answered as Koa's `respond` answers (src/http/early.ts says why).
   */
  const ahead = async (
    req: IncomingMessage,
    res: ServerResponse,
    handle: (ctx: Context) => Promise<void>,
  ): Promise<void> => {
    const early = new EarlyContext(req, res, app.mediaType);
    const ctx = early as unknown as Context;
    try {
      forwarded(ctx, passOn);
      // requestLine's work, its headers set into the answer at once, in its order.
      early.startAnswer(startRequest(ctx));
      try {
        await errors(ctx, () => host(ctx, () => handle(ctx)));
      } finally {
        finishRequest(ctx);
      }
      early.answer();
    } catch (error) {
      // What escaped the layers, or came up while answering: Koa's onerror's.
      early.fail(app, error);
    }
  };
  // Every other request pays one method compare (a POST a map read and a prefix test) before Koa.
  app.early = (req, res) => {
    if (req.method !== 'POST') return undefined;
    const url = req.url!;
    const lookup = earlyRoutes.get(url);
    if (lookup !== undefined) return ahead(req, res, lookup);
    if (url.startsWith('/webhooks/')) {
      const match = EARLY_WEBHOOK.exec(url);
      const webhook = match === null ? undefined : earlyWebhooks.get(match[1]!);
      if (webhook !== undefined) return ahead(req, res, (ctx) => webhook(ctx, match![2]!, match![3]!));
    }
    return undefined;
  };

  // The admin gate runs before any router and judges the *normalised* path, so no spelling of
  // an /api/v1 path (case, slashes, %-escapes) reaches a handler without the token. The routers
  // themselves match exactly (case-sensitive, strict), so odd spellings end in a 404 anyway.
  // Failed authentications are limited per address and by a ceiling (issue 10 item 16): once
  // over, every admin request from that address gets 429 until the window ends.
  const rate = config.limits.rate;
  const rateLimited = metrics.counter(
    'chatbridge_rate_limited_total',
    'Requests refused, by scope: with 429 (admin_auth, metrics_auth, lookup_address, lookup_channel), and webhooks refused with their 404 past the limit on wrong URL tokens (webhook_token)',
    ['scope'],
  );
  /**
   * Failed authentications with one token, limited per address and by a ceiling on all
   * addresses together that holds back only addresses not seen with the right token lately
   * (src/http/rate-limit.ts says why). On Redis the counts are shared by every instance.
   */
  function authFailureLimit(scope: 'admin_auth' | 'metrics_auth'): AdminAuthLimit {
    const clock = deps.now;
    return createAuthFailureLimit({
      scope,
      perAddress: rate.adminAuthFailuresPerAddress,
      ceiling: rate.adminAuthFailuresCeiling,
      windowMs: rate.window,
      ipv6PrefixLength: rate.ipv6PrefixLength,
      shared: store.kind === 'redis' ? store : null,
      logger,
      onRefused: () => rateLimited.inc({ scope }),
      // The bridge's clock, as everything else here: its windows and the shared store's
      // cool-down move with it, so a test can pin them rather than race the machine's speed.
      ...(clock ? { now: () => clock().getTime() } : {}),
    });
  }
  // The console's sign-in checks the same admin token, so it counts against the same limits:
  // an address locked out of the API cannot keep guessing through the sign-in form.
  const adminAuth = authFailureLimit('admin_auth');
  // metrics.token has counters of its own (same limits): a scraper left with an old token does
  // not lock the admins of its address out, and a locked-out admin address still gets scraped.
  const metricsAuth = authFailureLimit('metrics_auth');
  // A worker serves neither the admin API nor the console (DESIGN §5): its 404 below answers.
  if (deps.role !== 'worker') {
    const adminGate = async (ctx: Context, next: Next) => {
      // HEAD too: Koa answers it as the GET without a body, and a client checking the
      // document (its ETag-less freshness, its size) got a 401 where GET got the document.
      const open = (ctx.method === 'GET' || ctx.method === 'HEAD') && ctx.path === '/api/v1/openapi.json';
      if (!open) {
        const match = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
        const matches = () => match !== null && tokenEquals(match[1]!.trim(), config.admin.token);
        if (!(await adminAuth.check(clientAddress(ctx), matches))) throw new UnauthorizedError();
      }
      return next();
    };
    // Not async itself: every other request (vendor intake above all) passes straight on, without
    // a promise of its own resolved with next()'s (two more microtask jobs per request).
    app.use((ctx: Context, next: Next) => (isAdminPath(ctx.path) ? adminGate(ctx, next) : next()));
  }

  const webConsole = createConsole({
    config,
    logger,
    metrics,
    store,
    contacts,
    journal: deps.journal,
    delivery: deps.delivery,
    channels: deps.channels,
    agentLinks: deps.agentLinks ?? null,
    ...(deps.vendorNames ? { vendorNames: deps.vendorNames } : {}),
    ...(deps.role ? { role: deps.role } : {}),
    ...(deps.crmDestinations ? { crmDestinations: deps.crmDestinations } : {}),
    ...(deps.configPath === undefined ? {} : { configPath: deps.configPath }),
    adminAuth,
    now: deps.now ?? (() => new Date()),
  });
  if (deps.role !== 'worker') app.use(webConsole.middleware);

  // --- operations -------------------------------------------------------------------------
  const readinessRepeats = createRepeatGate();
  const operations: Route[] = [
    route({
      method: 'GET',
      path: '/',
      summary: "The bridge's own address, opened in a browser: the console, or what this instance is",
      description:
        'An all or web instance redirects to its web console (Location `console`, relative to the address the ' +
        'browser used). A worker serves no console: it says what it is and where its health, readiness and the ' +
        'API document are.',
      tag: 'operations',
      auth: 'none',
      answers: {
        200: { description: 'A --role worker instance (no console): what it is', schema: rootSchema },
        302: { description: 'To the web console (an all or web instance)', contentType: 'text/html' },
      },
      handle(ctx) {
        if (deps.role === 'worker') {
          ctx.body = {
            service: 'chatbridge',
            description: SERVICE_DESCRIPTION,
            role: 'worker',
            health: '/healthz',
            ready: '/readyz',
            docs: 'README.md; the admin API, its document (GET /api/v1/openapi.json) and the console (/console) are served by --role all and --role web instances',
          };
          return;
        }
        // Relative, as the browser resolves it against the address it used: behind a proxy that
        // serves the bridge under a path (https://example.org/bridge/ -> http://bridge:3000/), a
        // Location of /console left that path.
        ctx.redirect('console');
      },
    }),
    route({
      method: 'GET',
      path: '/healthz',
      summary: 'Liveness: the process answers',
      tag: 'operations',
      auth: 'none',
      answers: { 200: { description: 'Alive', schema: okSchema } },
      handle(ctx) {
        ctx.body = { ok: true };
      },
    }),
    route({
      method: 'GET',
      path: '/readyz',
      summary: 'Readiness: the store accepts writes and the bridge is not shutting down',
      tag: 'operations',
      auth: 'none',
      answers: {
        200: {
          description: 'Ready',
          schema: z.object({
            ok: z.literal(true),
            store: z.string(),
            /** Redis only: standalone, sentinel or cluster (added; `store` stays `redis`). */
            topology: z.enum(['standalone', 'sentinel', 'cluster']).optional(),
          }),
        },
        503: { description: 'Shutting down (shutting_down) or the store is unavailable (store_unavailable)' },
      },
      async handle(ctx) {
        if (!deps.isAccepting()) {
          ctx.status = 503;
          ctx.body = errorBody('shutting_down', 'the bridge is shutting down');
          return;
        }
        // Ready means "accepts writes" (DESIGN §12): a reachable replica after a failover, or a
        // primary without its required replicas, would only answer 503 to vendors. The check is
        // bounded and shared by every probe and scrape asking meanwhile: unauthenticated, each
        // request made its own store write, waited as long as the store hung (a minute of WAIT
        // with durability.replicas), and ran at whatever rate anyone sent requests.
        const result = await deps.storeCheck();
        metrics.storeUp.set(result.ok ? 1 : 0);
        if (result.ok) {
          ctx.body = { ok: true, store: store.kind, ...(store.topology ? { topology: store.topology } : {}) };
        } else {
          ctx.status = 503;
          // No internal message here: /readyz is unauthenticated (issue 10 item 15).
          // Probes come every few seconds for as long as the outage lasts: said once a minute.
          warnOncePerMinute(
            ctx.state.logger as Logger,
            readinessRepeats,
            'readyz',
            { err: result.error },
            'readiness check failed',
          );
          ctx.body = errorBody('store_unavailable', 'the store is unavailable');
        }
      },
    }),
  ];
  // On the public port only behind metrics.token; otherwise on the metrics listener (createMetricsApp).
  const metricsToken = config.metrics.token;
  if (metricsToken) operations.push(metricsRoute(metrics, metricsToken, metricsAuth));

  const router = new Router({ sensitive: true, strict: true });
  const publicRouter = new Router({ sensitive: true, strict: true });

  if (deps.role === 'worker') {
    // A worker takes no vendor traffic and no admin calls: those go to web instances.
    mount(router, operations, { bodyLimitBytes: bodyLimit });
    // The worker's 404 is set once the router and allowedMethods are done: as a last middleware
    // it was reached before allowedMethods decided, and a wrong method got its 405 with this body.
    app.use(async (ctx, next) => {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        ctx.status = 404;
        ctx.body = errorBody(
          'not_found',
          'this instance runs --role worker: vendor webhooks and the admin API are served by web instances',
        );
      }
    });
    // Inside the worker's 404: /metrics is said to be elsewhere rather than a web instance's.
    if (!metricsToken) app.use(metricsElsewhere(config.metrics.port));
    app.use(router.routes()).use(allowedMethods(router));
    appRoutes.set(app, {
      routes: operations,
      publicRoutes: [],
      consoleRoutes: [],
      mounted: () => mountedRoutes(router),
      document: () => null,
    });
    return app;
  }

  // --- vendor intake ----------------------------------------------------------------------
  // Every registered adapter's intake routes, mounted once per vendor (documented with the
  // vendor's own bodies), each request run through the one intake pipeline (src/intake/).
  const pipeline = createIntakePipeline(
    {
      ...(deps.logKey ? { logKey: deps.logKey } : {}),
      contacts,
      facts: deps.facts,
      journal: deps.journal,
      metrics,
      store,
      now: deps.now ?? (() => new Date()),
      consoleLink: (contactId) => deps.agentLinks?.url(contactId),
      deferred: deps.deferred ?? null,
      onAccepted: (channelId) => webConsole.noteTraffic(channelId),
    },
    lookupMetricsFor(metrics, deps.adapters),
  );
  const webhookTokens = createWebhookTokenLimit({
    perAddress: rate.webhookTokenFailuresPerAddress,
    windowMs: rate.window,
    ipv6PrefixLength: rate.ipv6PrefixLength,
    logger,
    onRefused: () => rateLimited.inc({ scope: 'webhook_token' }),
    ...(deps.now ? { now: () => deps.now!().getTime() } : {}),
  });
  const lookupsByAddress = new WindowLimiter(rate.lookupsPerAddress, rate.window);
  // One allowance per address across every channel id as well: the limit above is per address
  // *and channel id*, and an id that is no channel answers as a known one (the URL tells no id
  // from another), so each made-up id was a fresh allowance and one address could send lookups
  // without end by rotating it. lookupsPerAddress times the lookup channels there are: a vendor
  // address within each channel's own limit never reaches it. Counted alike for every id, known
  // or not, so running it out tells nothing about which ids exist.
  const lookupVendors = new Set(
    deps.adapters
      .filter((adapter) => adapter.intake.some((each) => each.kind !== 'webhook'))
      .map((adapter) => adapter.vendor),
  );
  let lookupChannels = 0;
  for (const { config: channel } of deps.channels.values())
    if (lookupVendors.has(channel.vendor)) lookupChannels++;
  const lookupsByAddressAll = new WindowLimiter(
    rate.lookupsPerAddress * Math.max(1, lookupChannels),
    rate.window,
  );
  const lookupsByChannel = new WindowLimiter(rate.lookupsPerChannel, rate.window);
  const unknownChannels = deps.unknownChannels;
  /**
   * A request that opened on an unknown channel goes no further, whatever its adapter's `open`
   * made of it: the one 404. LiveTex's cannot open there (the channel has no keys); an adapter
   * whose `open` is not bound to its channel is refused here, not looked up for a made-up id.
   */
  const refuseOpenedUnknown = (): never => {
    throw new NotFoundError('not_found', 'no such route');
  };
  /** Counts a lookup in its channel's budget (or refuses it: 429); answers how to give it back. */
  function admitToChannel(channelId: string): () => void {
    const wait = lookupsByChannel.take(channelId);
    if (wait > 0) {
      rateLimited.inc({ scope: 'lookup_channel' });
      throw new TooManyRequestsError(wait);
    }
    const takenAt = lookupsByChannel.now();
    return () => lookupsByChannel.giveBack(channelId, takenAt);
  }

  /** The channel a vendor request is for, or null (the one 404): unknown, another vendor's. */
  function channelFor(vendor: string, channelId: string): IntakeChannel | null {
    const entry = deps.channels.get(channelId);
    return entry && entry.config.vendor === vendor ? entry : null;
  }

  /**
   * Not async, nor is the webhook's handler that returns it: each async layer around the
   * pipeline's promise cost a vendor request a promise and microtask jobs of its own
   * (bench/HISTORY.md, twenty-fifth round).
   */
  function runIntake(
    ctx: Context,
    vendor: string,
    each: IntakeRoute<unknown, unknown>,
    channel: IntakeChannel,
    admit?: () => (() => void) | undefined,
  ): Promise<void> {
    return pipeline
      .run(vendor, each, new HttpIntakeCall(ctx, channel, bodyLimit, logger.isLevelEnabled('info'), admit))
      .then((reply) => send(ctx, reply.answer));
  }

  function webhookRoute(adapter: AdapterDefinition, each: IntakeRoute<unknown, unknown>): Route {
    const { vendor } = adapter;
    const { doc } = each;
    return route({
      method: 'POST',
      path: `/webhooks/${vendor}/:channelId/:token`,
      summary: doc.summary,
      description:
        'The URL carries the channel token. An unknown channel and a wrong token answer the same 404, ' +
        'so the URL space cannot be probed. Wrong tokens are limited per client address ' +
        '(limits.rate.webhookTokenFailuresPerAddress): past it, every webhook from that address gets the same 404, ' +
        'its right token included, until the window ends, unless the address presented a right token in the last 24 h. ' +
        'A payload refused with 4xx is kept in the journal.',
      tag: 'intake',
      auth: 'url-token',
      rawBody: {
        contentType: doc.contentType ?? 'application/json',
        description: 'As the vendor sends it (read leniently by the adapter)',
        ...(doc.body ? { schema: doc.body } : {}),
      },
      answers: {
        200: {
          description: 'Recorded (durable before this answer)',
          ...(doc.answer ? { schema: doc.answer } : {}),
          ...(doc.answerContentType ? { contentType: doc.answerContentType } : {}),
        },
        400: { description: 'Not JSON, too deep, or not this vendor’s payload (kept in the journal)' },
        404: {
          description:
            'No such channel, a wrong token, or too many wrong tokens from this address (the one 404 body)',
        },
        413: { description: 'Body over server.bodyLimitBytes (its first bytes kept in the journal)' },
        503: { description: 'The store is unavailable: the vendor retries, intake dedupes' },
        ...describeErrors(doc.errors),
      },
      handle(ctx) {
        const { channelId, token } = ctx.params as { channelId: string; token: string };
        const channel = channelFor(vendor, channelId);
        // One answer for "no such channel" and "wrong token", so the URL space cannot be probed;
        // and the same work: the presented token is hashed and compared for an unknown channel
        // too, else that answer came sooner (by a digest of up to 16 KiB of path) than a wrong token's.
        const matches = tokenEquals(token, channel ? channel.config.token : UNKNOWN_CHANNEL_TOKEN);
        // Failures are limited per address, and the one 404 is also the answer past the limit
        // (webhookTokens); a right token costs nothing more while no token has failed lately.
        if (!webhookTokens.admits(ctx, channel !== null && matches) || !channel) {
          ctx.status = 404;
          ctx.body = NO_CHANNEL;
          return;
        }
        return runIntake(ctx, vendor, each, channel);
      },
    });
  }

  function lookupRoute(adapter: AdapterDefinition, each: IntakeRoute<unknown, unknown>): Route {
    const { vendor, displayName } = adapter;
    const { doc } = each;
    return route({
      method: 'POST',
      path: `/${vendor}/:channelId/${each.path}`,
      summary: doc.summary,
      description: `Exists on ${displayName} channels only.`,
      tag: 'intake',
      auth: 'sealed',
      paramNotes: { channelId: { description: `the id of a ${displayName} channel` } },
      rawBody: {
        contentType: doc.contentType ?? 'application/json',
        description: 'Read by the channel',
        ...(doc.body ? { schema: doc.body } : {}),
      },
      answers: <Record<number, RouteAnswer>>{
        200: {
          description: 'OK',
          ...(doc.answer ? { schema: doc.answer } : {}),
          ...(doc.answerContentType ? { contentType: doc.answerContentType } : {}),
        },
        404: {
          description: each.open
            ? 'Not for a channel id: one that is no channel answers as a known channel answers a request none of its keys opens (the one 404 body only if one opened there)'
            : 'No such channel (the one 404 body)',
        },
        413: { description: 'Body over server.bodyLimitBytes (payload_too_large)' },
        429: {
          description: each.open
            ? 'Too many lookups from this address, or too many authenticated ones for this channel'
            : 'Too many lookups from this address or for this channel',
        },
        503: { description: 'The store is unavailable (store_unavailable); retry' },
        ...describeErrors(doc.errors),
      },
      // Not async: the pipeline's promise is the answer's (an async layer around it cost each
      // lookup a promise and microtask jobs of its own); a refusal here throws to the errors layer.
      handle(ctx) {
        const { channelId } = ctx.params as { channelId: string };
        // An id that is none of this vendor's channels runs on the vendor's unknown channel: it
        // has no keys, so it answers as a known channel answers a request none of its keys opens
        // (the same status, body, headers and store read), and the URL does not tell channel ids
        // apart. The webhook route does the like with its token.
        // A route without `open` authenticates nothing: the channel id is all there is, and an
        // unknown one gets the one 404.
        const known = channelFor(vendor, channelId);
        const channel = known ?? (each.open ? unknownChannels?.get(vendor) : undefined);
        if (!channel) {
          ctx.status = 404;
          ctx.body = NO_CHANNEL;
          return;
        }
        // Limited per address (an IPv6 one by its prefix: limitKey) and channel, every request,
        // first; an unknown channel's id as a known one's (up to the longest id a channel can
        // have: a longer one can be no channel, and a key of 16 KiB of path is not kept); then
        // per address across every channel id (lookupsByAddressAll).
        const address = limitKey(clientAddress(ctx), rate.ipv6PrefixLength);
        let waitAddress = lookupsByAddress.take(
          `${channelId.length <= 64 ? channelId : '_long'}\n${address}`,
        );
        if (waitAddress <= 0) waitAddress = lookupsByAddressAll.take(address);
        if (waitAddress > 0) {
          rateLimited.inc({ scope: 'lookup_address' });
          throw new TooManyRequestsError(waitAddress);
        }
        // The channel's own budget is spent only by requests that authenticate (open under one
        // of its keys): counted before them, anyone could spend it with garbage from a few
        // addresses and deny the channel its real lookups. A route without `open`: every request.
        if (!each.open) admitToChannel(channelId);
        return runIntake(
          ctx,
          vendor,
          each,
          channel,
          known ? (each.open ? () => admitToChannel(channelId) : undefined) : refuseOpenedUnknown,
        );
      },
    });
  }

  const publicRoutes: Route[] = [];
  for (const adapter of deps.adapters) {
    for (const each of adapter.intake) {
      // Both are public (no admin token): a wrong method gets the one 404 of an unknown path,
      // never a 405 that would tell which vendors and paths exist.
      if (each.kind === 'webhook') {
        const webhook = webhookRoute(adapter, each);
        publicRoutes.push(webhook);
        serveWebhookEarly(adapter.vendor, webhook);
        continue;
      }
      const lookup = lookupRoute(adapter, each);
      publicRoutes.push(lookup);
      for (const { config: channel } of deps.channels.values()) {
        if (channel.vendor === adapter.vendor)
          serveEarly(`/${adapter.vendor}/${channel.id}/${each.path}`, lookup);
      }
    }
  }

  /**
   * A lookup of a configured channel, POSTed to its route's exact path (no query, no other
   * spelling), is served ahead of the chain: by the same middleware, in the same order, less the
   * layers that would pass it on untouched (the admin gate, the console and /metrics judge other
   * paths; checked here) and the router's match, which gives the same route and parameter. The
   * route stays the one declared and documented above, mounted on the public router for every
   * other spelling and method (a wrong method's one 404, a %-escaped channel id). In a loop,
   * koa-compose and @koa/router were ~4 µs of a lookup's ~120 µs of CPU, the passing layers
   * a fraction of one (bench/HISTORY.md, twenty-sixth round). Served ahead of Koa itself, on an
   * EarlyContext answered with one writeHead (app.early, src/http/early.ts: twenty-eighth round).
   */
  function serveEarly(path: string, each: Route) {
    if (judgedBySkippedLayer(path))
      throw new TypeError(`a public lookup at ${path} would pass a layer that judges its path`);
    const channelId = path.split('/')[2]!;
    const handle = (ctx: Context) => {
      ctx.params = { channelId };
      return each.handle(ctx, { params: ctx.params, query: undefined, body: undefined }) as Promise<void>;
    };
    earlyRoutes.set(path, handle);
  }

  /**
   * A vendor's webhook, POSTed to `/webhooks/<vendor>/<channel id>/<token>` with both segments
   * spelt plainly (EARLY_WEBHOOK: no query, no %-escape, no other spelling), is served ahead of
   * the chain as a lookup at its exact path is (serveEarly): the forwarded headers, the request
   * line (its access line masks the token by the same redactPath), the errors layer, requireHost,
   * then the route's own declared handler with the parameters the router would have given (for
   * these spellings the router's decoding changes nothing). For *any* channel id and token, not
   * only configured ones: a right token, a wrong one and an unknown channel take the same path and
   * the same work, so the time of an answer tells no more than it did through the chain (past the
   * per-address limit a right token's 404 must look like a wrong one's). The route stays declared,
   * documented and mounted once; every other spelling and method reaches it, or the one 404,
   * through the chain. checkEarlyWebhooks (after the routers are filled) refuses at start-up a
   * route that such a URL would have reached instead.
   */
  function serveWebhookEarly(vendor: string, each: Route) {
    // A vendor id EARLY_WEBHOOK does not spell: served through the chain only.
    if (!EARLY_WEBHOOK.test(webhookProbe(vendor))) return;
    if (judgedBySkippedLayer(webhookProbe(vendor)))
      throw new TypeError(`the ${vendor} webhook would pass a layer that judges its path`);
    // The first route of the path for POST is the one the router runs; so here.
    if (earlyWebhooks.has(vendor)) return;
    const handle = (ctx: Context, channelId: string, token: string) => {
      ctx.params = { channelId, token };
      return each.handle(ctx, { params: ctx.params, query: undefined, body: undefined }) as Promise<void>;
    };
    earlyWebhooks.set(vendor, handle);
  }

  /**
   * Once the routers are filled: every URL served early reaches, through the chain, the webhook
   * route it is served by, and no other route. No mounted route but a webhook starts with a
   * segment `webhooks` or a parameter (only those could match such a URL), and the public
   * router's first route for POST at a probe of each early vendor is that vendor's webhook.
   */
  function checkEarlyWebhooks(mounted: ReadonlyArray<{ method: string; path: string }>) {
    // Each vendor's webhook route has its vendor's id as a literal: none matches another's URLs.
    const webhooks = new Set(deps.adapters.map((adapter) => `/webhooks/${adapter.vendor}/:channelId/:token`));
    for (const { method, path } of mounted) {
      const first = path.split('/')[1] ?? '';
      if (!webhooks.has(path) && (first === 'webhooks' || /^[:*({]/.test(first)))
        throw new TypeError(`${method} ${path} would be shadowed by the webhooks served ahead of the chain`);
    }
    for (const vendor of earlyWebhooks.keys()) {
      const [layer] = publicRouter.match(webhookProbe(vendor), 'POST').pathAndMethod;
      if (String(layer?.path) !== `/webhooks/${vendor}/:channelId/:token`)
        throw new TypeError(`the router does not give POST ${webhookProbe(vendor)} to the ${vendor} webhook`);
    }
  }

  // --- channel admin routes ---------------------------------------------------------------
  // Declared by each channel's runtime; mounted once per (vendor, method, path) with the channel
  // as a path parameter, so the document describes each once. Their query and body are validated
  // here with the route's own schemas, once.
  interface ChannelRouteGroup {
    spec: ChannelRoute;
    vendor: string;
    byChannel: Map<string, { config: ChannelConfig; route: ChannelRoute }>;
  }
  const groups = new Map<string, ChannelRouteGroup>();
  for (const { config: channel, runtime } of deps.channels.values()) {
    for (const each of runtime.routes ?? []) {
      const key = `${channel.vendor} ${each.method} ${each.path}`;
      let group = groups.get(key);
      if (!group) {
        group = { spec: each, vendor: channel.vendor, byChannel: new Map() };
        groups.set(key, group);
      }
      group.byChannel.set(channel.id, { config: channel, route: each });
    }
  }

  function channelRoute(group: ChannelRouteGroup): Route {
    const { spec, vendor } = group;
    const name = deps.vendorNames?.get(vendor) ?? vendor;
    return route({
      method: spec.method,
      path: `/api/v1/channels/:id/${spec.path}`,
      summary: spec.summary,
      description: `Exists on ${name} channels only.`,
      tag: 'channels',
      auth: 'admin',
      paramNotes: { id: { description: `the id of a ${name} channel` } },
      ...(spec.query ? { rawQuery: spec.query } : {}),
      ...(spec.body
        ? { rawBody: { contentType: 'application/json', description: 'Validated', schema: spec.body } }
        : {}),
      answers: channelAnswers(spec),
      async handle(ctx) {
        const { id: channelId, ...params } = ctx.params as Record<string, string>;
        const found = group.byChannel.get(channelId!);
        if (!found)
          throw new NotFoundError('channel_not_found', `no ${name} channel ${quotedInput(channelId!)}`);
        // A POST or PUT without a body of its own was read and refused by mount() (refusesBody):
        // what came was nothing or `{}`.
        const rawBody =
          spec.body && (ctx.method === 'POST' || ctx.method === 'PUT')
            ? await readJsonBody(ctx, bodyLimit)
            : EMPTY;
        params.channelId = channelId!;
        send(ctx, await runChannelRoute(found.route, { params, query: ctx.query, rawBody }));
      },
    });
  }

  /**
   * What a channel route answers: its success status, what the core answers for every channel
   * route (runChannelRoute reads and checks the body of every POST and PUT, so even a route that
   * takes none can answer 400 and 413), and the route's own errors; a status both name gets both
   * descriptions.
   */
  function channelAnswers(spec: ChannelRoute): Record<number, RouteAnswer> {
    const readsBody = spec.method === 'POST' || spec.method === 'PUT';
    // A channel's routes keep their state (keys, reports, cursors) in the store.
    const core: Record<number, string> = {
      404: 'No such channel (channel_not_found)',
      503: STORE_UNAVAILABLE.description,
    };
    if (spec.body) core[400] = 'Invalid query or body (invalid_query, invalid_json, invalid_body)';
    else if (readsBody) {
      core[400] =
        `${spec.query ? 'Invalid query (invalid_query), or a' : 'A'} body, which this route does not take ` +
        '(invalid_body; nothing or {} is fine), or one that is not JSON (invalid_json)';
    } else if (spec.query) core[400] = 'Invalid query (invalid_query)';
    if (readsBody) core[413] = 'Body over server.bodyLimitBytes (payload_too_large)';
    if (readsBody) core[415] = JSON_ONLY;
    const answers: Record<number, RouteAnswer> = {
      [spec.status ?? 200]: { description: 'OK', ...(spec.response ? { schema: spec.response } : {}) },
      ...describeErrors(core),
    };
    for (const [status, text] of Object.entries(spec.errors ?? {})) {
      const code = Number(status);
      answers[code] = { description: answers[code] ? `${answers[code].description}; ${text}` : text };
    }
    return answers;
  }

  const channelAdmin: Route[] = [...groups.values()].map(channelRoute);

  // --- admin API --------------------------------------------------------------------------
  let document: Record<string, unknown> | undefined;
  const admin: Route[] = [
    route({
      method: 'GET',
      path: '/api/v1/openapi.json',
      summary: 'This document (open: it names no channel and no secret)',
      tag: 'operations',
      auth: 'none',
      answers: { 200: { description: 'OpenAPI 3.1', schema: z.record(z.string(), z.unknown()) } },
      handle(ctx) {
        ctx.body = describe();
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/contacts',
      summary:
        'Find contacts by e-mail, phone or identity (kind:value, or kind:channelId:value for vendor-local ids)',
      tag: 'admin',
      auth: 'admin',
      query: contactQuerySchema,
      answers: {
        200: {
          description: `Matching contacts, at most ${FIND_LIMIT}; \`truncated\` when more matched (a search-only e-mail or phone typed by many visitors, a switchboard's number)`,
          schema: z.object({ contacts: z.array(contactSchema), truncated: z.boolean() }),
        },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        if (!query.email && !query.phone && !query.identity) {
          throw new ValidationError(
            'give email, phone or identity',
            [{ path: 'query', message: 'at least one of email, phone, identity' }],
            'invalid_query',
          );
        }
        const found = await contacts.find({
          ...(query.email ? { email: query.email } : {}),
          ...(query.phone ? { phone: query.phone } : {}),
          ...(query.identity ? { identity: parseIdentity(query.identity, localKinds) } : {}),
          limit: FIND_LIMIT + 1,
        });
        ctx.body = { contacts: found.slice(0, FIND_LIMIT), truncated: found.length > FIND_LIMIT };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/contacts/:id',
      summary: 'One contact; an id merged away answers with the surviving contact and mergedFrom',
      tag: 'admin',
      auth: 'admin',
      answers: {
        200: {
          description: 'The contact',
          schema: contactSchema.extend({ mergedFrom: z.string().optional() }),
        },
        404: { description: 'No such contact (contact_not_found)' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx) {
        const id = ctx.params.id!;
        const found = await contacts.get(id);
        if (!found) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(id)}`);
        ctx.body = found.mergedFrom ? extend(found.contact, { mergedFrom: found.mergedFrom }) : found.contact;
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/contacts/:id/timeline',
      summary: 'Unified cross-channel timeline, newest first, cursor-paged',
      tag: 'admin',
      auth: 'admin',
      query: timelineQuerySchema,
      answers: {
        200: {
          description:
            'One page: at most `limit` entries and about 1 MiB of them (always at least one); `nextCursor` (as `before`) reads on, and is null on the last page. ' +
            'With `channel` or `type`, only matching entries count toward `limit`; a page passes over at most ' +
            `${TIMELINE_SCAN_ENTRIES} entries that do not match, then answers with what it found, \`partial: true\` and a \`nextCursor\` to read on`,
          schema: z.object({
            entries: z.array(timelineEntrySchema),
            nextCursor: z.string().nullable(),
            partial: z
              .literal(true)
              .optional()
              .describe(
                'filtered page cut short by the scan bound: fewer than `limit` (maybe none); read on',
              ),
          }),
        },
        400: {
          description:
            'Invalid query (invalid_query), also a `channel` that is no channel of the bridge or of the contact',
        },
        404: { description: 'No such contact (contact_not_found)' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        const id = ctx.params.id!;
        // A channel taken out of the config still names the contact's older entries, so only an
        // id that is neither configured nor one of the contact's channels is refused (a typo
        // would otherwise look like "no entries").
        if (query.channel && !deps.channels.has(query.channel)) {
          const found = await contacts.get(id);
          if (!found) throw new NotFoundError('contact_not_found', `no contact ${quotedInput(id)}`);
          if (!found.contact.channels.some((each) => each.channelId === query.channel)) {
            throw new ValidationError(
              'invalid query',
              [
                {
                  path: 'channel',
                  message: `no channel ${query.channel}: not configured, and not one of this contact's`,
                },
              ],
              'invalid_query',
            );
          }
        }
        const filter = {
          ...(query.channel ? { channelId: query.channel } : {}),
          ...(query.type ? { type: query.type } : {}),
        };
        // The page's JSON as bytes, made from the stored entries' own JSON (timelineJson): what
        // JSON.stringify of timeline()'s page gives, without parsing and serialising each entry.
        ctx.body = await contacts.timelineJson(id, {
          limit: query.limit,
          ...(query.before ? { before: query.before } : {}),
          ...(query.channel || query.type ? { filter } : {}),
        });
        ctx.type = 'json';
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/contacts/:id/unmerge',
      summary: 'Undo a merge: split off a merged record, or one identifier into a contact of its own',
      description: 'Body: {"recordId": "..."} or {"identifier": {"kind", "value", "channelId"?}}.',
      tag: 'admin',
      auth: 'admin',
      body: unmergeBodySchema,
      bodyHint: 'give {"recordId": "..."} or {"identifier": {"kind", "value", "channelId"?}}',
      answers: {
        200: {
          description: 'The contact and the part split off',
          schema: z.object({ contact: contactSchema, split: contactSchema }),
        },
        404: { description: 'No such contact (contact_not_found)' },
        409: { description: 'The contact changed while being split (identity_contention); retry' },
        413: { description: 'Body over server.bodyLimitBytes' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { body }) {
        // As ?identity= does (parseIdentity): a kind that is none, without a channel, is said to
        // be none, not told to add a channel (the engine's refusal for a vendor-local kind). With
        // a channel any kind is looked up as given, as a search is.
        if ('identifier' in body) {
          const { kind, channelId } = body.identifier;
          if (!GLOBAL.has(kind) && channelId === undefined && !localKinds.includes(kind)) {
            throw new ValidationError('identifier cannot be split off', [
              unknownKindIssue('identifier.kind', kind, localKinds, { global: '', local: 'channelId' }),
            ]);
          }
        }
        ctx.body = await contacts.unmerge(ctx.params.id!, body);
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/contacts/:id/merge',
      summary: 'Merge two contacts by hand (an identity conflict decided by staff)',
      description:
        'Body: {"with": "<other contact id>"}. The same merge a chat naming both contacts makes: the oldest contact survives, ' +
        'the merge is in its timeline and merges, contact.merged is sent, and POST .../unmerge undoes it. ' +
        'The identity.maxMergeSize cap holds; an earlier unmerge of the two does not (a person decided).',
      tag: 'admin',
      auth: 'admin',
      body: mergeBodySchema,
      bodyHint: 'give {"with": "<other contact id>"}',
      answers: {
        200: { description: 'The merged contact', schema: z.object({ contact: contactSchema }) },
        404: { description: 'No such contact, either of the two (contact_not_found)' },
        409: {
          description:
            'Already one contact (same_contact); together over identity.maxMergeSize records (too_large); ' +
            'the contacts changed while being merged (identity_contention), retry',
        },
        413: { description: 'Body over server.bodyLimitBytes' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { body }) {
        ctx.body = await contacts.mergeContacts(ctx.params.id!, body.with, 'api');
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/identity/conflicts',
      summary:
        'Identity conflicts, newest first, each with its state now (open, merged by hand, resolved by a later merge): merges the guard rails refused (size cap, earlier unmerge), and identifiers the contact re-index found held by another contact (reason renormalized)',
      tag: 'admin',
      auth: 'admin',
      query: conflictsQuerySchema,
      answers: {
        200: {
          description:
            'At most `limit` conflicts, newest first, each with its `state` now (and, merged or resolved, the contact they are one of: `mergedInto`); `nextCursor` (as `before`) reads on, and is null on the last page. ' +
            'Conflicts refused while paging are newer than any page after the first, so none is skipped or repeated. ' +
            'Filtered by `state`, a page looks at no more than 1,000 conflicts: then it answers with those it found (maybe none), `partial: true` and a `nextCursor` to read on',
          schema: z.object({
            conflicts: z.array(conflictSchema),
            nextCursor: z.string().nullable(),
            partial: z.literal(true).optional(),
          }),
        },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        ctx.body = await contacts.conflictsPage({
          limit: query.limit,
          ...(query.before ? { before: query.before } : {}),
          ...(query.state ? { state: query.state } : {}),
        });
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/journal',
      summary: 'Vendor payloads that were rejected or could not be used, newest first',
      tag: 'admin',
      auth: 'admin',
      query: journalQuerySchema,
      answers: {
        200: {
          description: `Journal entries, newest first: at most \`limit\`, and a page stops at about ${JOURNAL_PAGE_BYTES / 1024 / 1024} MiB of entries (always at least one); \`nextCursor\` (as \`before\`) reads on, and is null on the last page`,
          schema: z.object({ entries: z.array(z.unknown()), nextCursor: z.string().nullable() }),
        },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        ctx.body = await deps.journal.list({
          limit: query.limit,
          ...(query.channel ? { channelId: query.channel } : {}),
          ...(query.kind ? { kind: query.kind } : {}),
          ...(query.before ? { before: query.before } : {}),
        });
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/channels',
      summary: 'Configured channels, their jobs and admin routes',
      tag: 'admin',
      auth: 'admin',
      answers: { 200: { description: 'The channels', schema: channelListSchema } },
      handle(ctx) {
        ctx.body = {
          channels: [...deps.channels.values()].map(({ config: channel, runtime }) => ({
            id: channel.id,
            vendor: channel.vendor,
            name: channel.name ?? channel.id,
            jobs: (runtime.jobs ?? []).map((job) => ({ name: job.name, schedule: job.schedule })),
            routes: (runtime.routes ?? []).map((each) => `${each.method} ${each.path}`),
          })),
        };
      },
    }),
    ...deps.delivery.routes(),
  ];

  const routes = [...operations, ...admin, ...channelAdmin];
  const consoleRoutes = consoleDocRoutes(webConsole.routes);
  function describe() {
    // Built on first request, then kept: the routes do not change while the app runs.
    document ??= openApiDocument([
      ...routes,
      ...(metricsToken ? [] : [metricsRoute(metrics, undefined)]),
      ...publicRoutes,
      ...consoleRoutes,
    ]);
    return document;
  }

  mount(publicRouter, publicRoutes, {
    bodyLimitBytes: bodyLimit,
    wrongMethod(ctx) {
      ctx.status = 404;
      ctx.body = NO_CHANNEL;
    },
  });
  mount(router, routes, { bodyLimitBytes: bodyLimit });
  checkEarlyWebhooks([...mountedRoutes(publicRouter), ...mountedRoutes(router), ...webConsole.routes]);
  // Public routes (webhooks, lookups): a wrong method gets the one 404, not a 405 that would confirm the path.
  if (!metricsToken) app.use(metricsElsewhere(config.metrics.port));
  app.use(publicRouter.routes());
  app.use(router.routes()).use(allowedMethods(router));
  appRoutes.set(app, {
    routes,
    publicRoutes,
    consoleRoutes,
    mounted: () => [
      ...mountedRoutes(router),
      ...mountedRoutes(publicRouter),
      ...webConsole.routes,
      // Served by the metrics listener (createMetricsApp) when not on this port.
      ...(metricsToken ? [] : [{ method: 'GET', path: '/metrics' }]),
    ],
    document: describe,
  });
  adminRouteLists.set(app, [
    ...mountedRoutes(router).filter(
      (each) => isAdminPath(each.path) && !each.path.includes('/channels/:id/'),
    ),
    // Each channel's own routes, spelt out per channel (the security walk tries each one).
    ...[...groups.values()].flatMap((group) =>
      [...group.byChannel.keys()].map((id) => ({
        method: group.spec.method,
        path: `/api/v1/channels/${id}/${group.spec.path}`,
      })),
    ),
  ]);
  return app;
}
