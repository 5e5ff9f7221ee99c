import { randomUUID } from 'node:crypto';
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ChannelConfig, Config } from '../config/schema.js';
import { createConsole } from '../console/index.js';
import type { AgentLinks } from '../console/links.js';
import type { ContactService } from '../contacts/service.js';
import { identifierSchema } from '../contacts/types.js';
import type { Delivery } from '../delivery/index.js';
import {
  AppError,
  issuesFromZod,
  NotFoundError,
  TooManyRequestsError,
  UnauthorizedError,
  ValidationError,
} from '../errors.js';
import type { PayloadJournal } from '../intake/journal.js';
import type { Metrics } from '../metrics.js';
import type { ChannelRoute, ChannelRuntime, InboundRequest, RouteResult } from '../spec/adapter.js';
import type { Store } from '../store/types.js';
import { readRawBody } from './body.js';
import { errorBody, errorMiddleware } from './errors.js';
import { isAdminPath, redactPath, tokenEquals } from './guard.js';
import { parseJson } from './json.js';
import { buildOpenApi } from './openapi.js';
import { WindowLimiter } from './rate-limit.js';
import { parseQuery } from './validate.js';

/**
 * The Koa app (no listening, no I/O at construction): middleware order, vendor intake, channel
 * routes, the admin API and operations endpoints. Built by the composition root (src/bridge.ts).
 */
export interface AppDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  store: Store;
  contacts: ContactService;
  journal: PayloadJournal;
  delivery: Delivery;
  channels: ReadonlyMap<string, { config: ChannelConfig; runtime: ChannelRuntime }>;
  vendors: readonly string[];
  /** While false, /readyz answers 503 (set during shutdown). */
  isAccepting(): boolean;
  /** `worker` serves only /healthz, /readyz and /metrics (DESIGN §5); default `all`. */
  role?: 'all' | 'web' | 'worker';
  /** Web console (DESIGN §11): agent links signer (null without a master key), vendor names. */
  agentLinks?: AgentLinks | null;
  vendorNames?: ReadonlyMap<string, string>;
  now?: () => Date;
}

/**
 * Every public 404 is this one body (also the router's own 404, src/http/errors.ts): an unknown
 * channel, a wrong token, a wrong vendor and an unknown sub-path of a known channel look the
 * same, so the URL space cannot be probed for channel ids.
 */
export const NOT_FOUND = errorBody('not_found', 'no such route');
const NO_CHANNEL = NOT_FOUND;
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Every admin route of an app, as `{method, path}` (the security tests walk all of them). */
const adminRouteLists = new WeakMap<Koa, Array<{ method: string; path: string }>>();
export function listAdminRoutes(app: Koa): Array<{ method: string; path: string }> {
  return adminRouteLists.get(app) ?? [];
}

function matchPath(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split('/').filter(Boolean);
  const have = path.split('/').filter(Boolean);
  if (want.length !== have.length) return null;
  const params: Record<string, string> = {};
  for (let index = 0; index < want.length; index++) {
    const segment = want[index]!;
    const actual = have[index]!;
    if (segment.startsWith(':')) {
      try {
        params[segment.slice(1)] = decodeURIComponent(actual);
      } catch {
        return null;
      }
    } else if (segment !== actual) return null;
  }
  return params;
}

function inbound(
  ctx: Context,
  channel: ChannelConfig,
  rawBody: Buffer,
  params: Record<string, string>,
): InboundRequest {
  let parsed: { value: unknown } | undefined;
  return {
    channel,
    rawBody,
    headers: ctx.headers,
    query: ctx.query,
    params,
    contentType: ctx.get('content-type') || undefined,
    requestId: ctx.state.requestId as string,
    logger: ctx.state.logger as Logger,
    receivedAt: ctx.state.receivedAt as number,
    json() {
      // One JSON guard for every route (depth and validity; size is readRawBody's): a hostile
      // body is refused here, before any adapter has written anything.
      parsed ??= { value: parseJson(rawBody.toString('utf8')) };
      return parsed.value;
    },
  };
}

function send(ctx: Context, result: RouteResult) {
  ctx.status = result.status ?? 200;
  for (const [name, value] of Object.entries(result.headers ?? {})) ctx.set(name, value);
  if (result.contentType) ctx.type = result.contentType;
  ctx.body = result.body ?? null;
}

const contactQuerySchema = z.strictObject({
  email: z.string().min(1).optional(),
  phone: z.string().min(1).optional(),
  identity: z
    .string()
    .regex(/^[a-z][a-z0-9_]*:.+$/, 'kind:value (or kind:channelId:value for vendor-local ids)')
    .optional(),
});

const timelineQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  before: z.string().min(1).max(200).optional(),
});

const unmergeBodySchema = z.union([
  z.strictObject({ recordId: z.string().min(1) }),
  z.strictObject({ identifier: identifierSchema.strict() }),
]);

const journalQuerySchema = z.strictObject({
  channel: z.string().optional(),
  kind: z.enum(['rejected', 'unhandled']).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});

const GLOBAL = new Set(['person', 'email', 'phone']);

function parseIdentity(text: string) {
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (GLOBAL.has(kind)) return { kind, value: rest };
  const second = rest.indexOf(':');
  if (second <= 0) {
    throw new ValidationError('invalid query', [
      {
        path: 'identity',
        message: `vendor-local kind "${kind}" needs its channel: ${kind}:<channelId>:<value>`,
      },
    ]);
  }
  return { kind, channelId: rest.slice(0, second), value: rest.slice(second + 1) };
}

/** The metrics-only app for the `metrics.port` listener (loopback by default): GET /metrics, nothing else. */
export function createMetricsApp(metrics: Metrics): Koa {
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx) => {
    if (ctx.method !== 'GET' || ctx.path !== '/metrics') {
      ctx.status = 404;
      ctx.body = NOT_FOUND;
      return;
    }
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  return app;
}

export function createApp(deps: AppDeps): Koa {
  const { config, logger, metrics, store, contacts } = deps;
  const app = new Koa({ proxy: true });
  const bodyLimit = config.server.bodyLimitBytes;

  app.silent = true; // errors are logged once by the error middleware, with the request id
  app.use(async (ctx: Context, next: Next) => {
    const given = ctx.get('x-request-id');
    const requestId = REQUEST_ID.test(given) ? given : randomUUID();
    ctx.state.requestId = requestId;
    ctx.state.logger = logger.child({ requestId });
    ctx.set('x-request-id', requestId);
    const started = performance.now();
    ctx.state.receivedAt = started;
    try {
      await next();
    } finally {
      (ctx.state.logger as Logger).info(
        {
          method: ctx.method,
          path: redactPath(ctx.path),
          status: ctx.status,
          ms: Math.round(performance.now() - started),
        },
        'request',
      );
    }
  });
  app.use(errorMiddleware());

  // The admin gate runs before any router and judges the *normalised* path, so no spelling of
  // an /api/v1 path (case, slashes, %-escapes) reaches a handler without the token. The routers
  // themselves match exactly (case-sensitive, strict), so odd spellings end in a 404 anyway.
  // Failed authentications are limited per address and per instance (issue 10 item 16): once
  // over, every admin request from that address gets 429 until the window ends.
  const rate = config.limits.rate;
  const authFailuresByAddress = new WindowLimiter(rate.adminAuthFailuresPerAddress, rate.window);
  const authFailures = new WindowLimiter(rate.adminAuthFailuresPerInstance, rate.window);
  const rateLimited = metrics.counter(
    'chatbridge_rate_limited_total',
    'Requests refused with 429, by scope (admin_auth, lookup_address, lookup_channel)',
    ['scope'],
  );
  app.use(async (ctx: Context, next: Next) => {
    if (isAdminPath(ctx.path)) {
      const open = ctx.method === 'GET' && ctx.path === '/api/v1/openapi.json';
      if (!open) {
        const wait = Math.max(authFailuresByAddress.blockedFor(ctx.ip), authFailures.blockedFor('all'));
        if (wait > 0) {
          rateLimited.inc({ scope: 'admin_auth' });
          throw new TooManyRequestsError(wait);
        }
        const match = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
        if (!match || !tokenEquals(match[1]!.trim(), config.admin.token)) {
          authFailuresByAddress.hit(ctx.ip);
          authFailures.hit('all');
          throw new UnauthorizedError();
        }
      }
    }
    return next();
  });

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
    now: deps.now ?? (() => new Date()),
  });
  app.use(webConsole.middleware);

  const router = new Router({ sensitive: true, strict: true });

  // --- operations -------------------------------------------------------------------------
  router.get('/healthz', (ctx) => {
    ctx.body = { ok: true };
  });
  router.get('/readyz', async (ctx) => {
    if (!deps.isAccepting()) {
      ctx.status = 503;
      ctx.body = errorBody('shutting_down', 'the bridge is shutting down');
      return;
    }
    try {
      // Ready means "accepts writes" (DESIGN §12): a reachable replica after a failover, or a
      // primary without its required replicas, would only answer 503 to vendors.
      await (store.probeWrite ? store.probeWrite() : store.ping());
      metrics.storeUp.set(1);
      ctx.body = { ok: true, store: store.kind };
    } catch (error) {
      metrics.storeUp.set(0);
      ctx.status = 503;
      // No internal message here: /readyz is unauthenticated (issue 10 item 15).
      (ctx.state.logger as Logger).warn({ err: error }, 'readiness check failed');
      ctx.body = errorBody('store_unavailable', 'the store is unavailable');
    }
  });
  // On the public port only behind metrics.token; otherwise on the metrics listener (createMetricsApp).
  const metricsToken = config.metrics.token;
  if (metricsToken) {
    router.get('/metrics', async (ctx) => {
      const match = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
      if (!match || !tokenEquals(match[1]!.trim(), metricsToken)) throw new UnauthorizedError();
      ctx.type = metrics.registry.contentType;
      ctx.body = await metrics.registry.metrics();
    });
  }

  if (deps.role === 'worker') {
    // A worker takes no vendor traffic and no admin calls: those go to web instances.
    app.use(router.routes()).use(router.allowedMethods({ throw: false }));
    app.use((ctx) => {
      ctx.status = 404;
      ctx.body = errorBody(
        'not_found',
        'this instance runs --role worker: vendor webhooks and the admin API are served by web instances',
      );
    });
    return app;
  }

  // --- vendor intake ----------------------------------------------------------------------
  router.post('/webhooks/:vendor/:channelId/:token', async (ctx) => {
    const { vendor, channelId, token } = ctx.params as { vendor: string; channelId: string; token: string };
    const entry = deps.channels.get(channelId);
    // One answer for "no such channel" and "wrong token", so the URL space cannot be probed.
    if (
      !entry ||
      entry.config.vendor !== vendor ||
      !tokenEquals(token, entry.config.token) ||
      !entry.runtime.handleWebhook
    ) {
      ctx.status = 404;
      ctx.body = NO_CHANNEL;
      return;
    }
    const started = performance.now();
    let event = 'unknown';
    let rawBody: Buffer | undefined;
    try {
      rawBody = await readRawBody(ctx, bodyLimit);
      const result = await entry.runtime.handleWebhook(inbound(ctx, entry.config, rawBody, { channelId }));
      // store.durability: answer only once the writes reached the replicas (else 503, the vendor
      // retries and intake dedupes), so a failover cannot lose an acknowledged webhook.
      await store.confirmWrites?.();
      event = result.event ?? event;
      webConsole.noteTraffic(channelId);
      metrics.intake.inc({ vendor, event, outcome: result.outcome ?? 'ok' });
      send(ctx, result);
    } catch (error) {
      const status = error instanceof AppError ? error.status : 500;
      metrics.intake.inc({
        vendor,
        event,
        outcome: status === 503 ? 'unavailable' : status < 500 ? 'rejected' : 'error',
      });
      if (status < 500 && rawBody) {
        // Nothing is lost: a payload we refuse is kept for an operator to read back.
        await deps.journal
          .record({
            channelId,
            vendor,
            kind: 'rejected',
            reason: (error as Error).message,
            rawBody,
            contentType: ctx.get('content-type'),
          })
          .catch((journalError: unknown) =>
            (ctx.state.logger as Logger).warn({ err: journalError }, 'could not journal a rejected payload'),
          );
      }
      throw error;
    } finally {
      metrics.replyLatency.observe({ vendor, event }, (performance.now() - started) / 1000);
    }
  });

  // --- channel routes (public: /<vendor>/:channelId/<path>) --------------------------------
  const publicPrefixes = deps.vendors.map((vendor) => `/${vendor}/`);
  const lookupsByAddress = new WindowLimiter(rate.lookupsPerAddress, rate.window);
  const lookupsByChannel = new WindowLimiter(rate.lookupsPerChannel, rate.window);
  app.use(async (ctx: Context, next: Next) => {
    if (!publicPrefixes.some((prefix) => ctx.path.startsWith(prefix))) return next();
    const [, vendor, channelId, ...rest] = ctx.path.split('/');
    const entry = channelId ? deps.channels.get(channelId) : undefined;
    if (!entry || entry.config.vendor !== vendor) {
      ctx.status = 404;
      ctx.body = NO_CHANNEL;
      return;
    }
    // Public channel routes (the LiveTex lookup) are limited per address and per channel.
    const waitAddress = lookupsByAddress.take(`${channelId}\n${ctx.ip}`);
    const waitChannel = waitAddress > 0 ? 0 : lookupsByChannel.take(channelId!);
    if (waitAddress > 0 || waitChannel > 0) {
      rateLimited.inc({ scope: waitAddress > 0 ? 'lookup_address' : 'lookup_channel' });
      throw new TooManyRequestsError(Math.max(waitAddress, waitChannel));
    }
    await dispatchChannelRoute(ctx, entry, 'public', rest.join('/'), async () => {
      // A known channel's unknown sub-path answers like an unknown channel.
      ctx.status = 404;
      ctx.body = NO_CHANNEL;
    });
  });

  async function dispatchChannelRoute(
    ctx: Context,
    entry: { config: ChannelConfig; runtime: ChannelRuntime },
    scope: ChannelRoute['scope'],
    subPath: string,
    next: Next,
  ) {
    const routes = (entry.runtime.routes ?? []).filter((route) => route.scope === scope);
    let methodMismatch = false;
    for (const route of routes) {
      const params = matchPath(route.path, subPath);
      if (!params) continue;
      if (route.method !== ctx.method) {
        methodMismatch = true;
        continue;
      }
      const rawBody =
        ctx.method === 'GET' || ctx.method === 'DELETE' ? Buffer.alloc(0) : await readRawBody(ctx, bodyLimit);
      send(
        ctx,
        await route.handle(inbound(ctx, entry.config, rawBody, { ...params, channelId: entry.config.id })),
      );
      return;
    }
    if (methodMismatch && scope === 'public') {
      // A 405 would confirm that the channel exists: public routes answer the one 404.
      ctx.status = 404;
      ctx.body = NO_CHANNEL;
      return;
    }
    if (methodMismatch) {
      ctx.status = 405;
      ctx.body = errorBody('method_not_allowed', `${ctx.method} is not allowed here`);
      return;
    }
    return next();
  }

  // --- admin API --------------------------------------------------------------------------
  const admin = new Router({ prefix: '/api/v1', sensitive: true, strict: true });
  admin.get('/openapi.json', (ctx) => {
    ctx.body = buildOpenApi({
      routes: [...deps.channels.values()].flatMap((entry) => entry.runtime.routes ?? []),
    });
  });

  admin.get('/contacts', async (ctx) => {
    const query = parseQuery(contactQuerySchema, ctx.query);
    if (!query.email && !query.phone && !query.identity) {
      throw new ValidationError(
        'give email, phone or identity',
        [{ path: 'query', message: 'at least one of email, phone, identity' }],
        'invalid_query',
      );
    }
    ctx.body = {
      contacts: await contacts.find({
        ...(query.email ? { email: query.email } : {}),
        ...(query.phone ? { phone: query.phone } : {}),
        ...(query.identity ? { identity: parseIdentity(query.identity) } : {}),
      }),
    };
  });
  admin.get('/contacts/:id', async (ctx) => {
    const found = await contacts.get(ctx.params.id!);
    if (!found) throw new NotFoundError('contact_not_found', `no contact ${ctx.params.id}`);
    ctx.body = found.mergedFrom ? { ...found.contact, mergedFrom: found.mergedFrom } : found.contact;
  });
  admin.get('/contacts/:id/timeline', async (ctx) => {
    const query = parseQuery(timelineQuerySchema, ctx.query);
    ctx.body = await contacts.timeline(ctx.params.id!, {
      limit: query.limit,
      ...(query.before ? { before: query.before } : {}),
    });
  });
  admin.post('/contacts/:id/unmerge', async (ctx) => {
    const raw = await readRawBody(ctx, bodyLimit);
    const body = unmergeBodySchema.safeParse(parseJson(raw.toString('utf8')));
    if (!body.success) {
      throw new ValidationError(
        'give {"recordId": "..."} or {"identifier": {"kind", "value", "channelId"?}}',
        issuesFromZod(body.error),
      );
    }
    ctx.body = await contacts.unmerge(ctx.params.id!, body.data);
  });
  admin.get('/identity/conflicts', async (ctx) => {
    const { limit } = parseQuery(
      z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(50) }),
      ctx.query,
    );
    ctx.body = { conflicts: await contacts.conflicts(limit) };
  });
  admin.get('/journal', async (ctx) => {
    const query = parseQuery(journalQuerySchema, ctx.query);
    ctx.body = {
      entries: await deps.journal.list({
        limit: query.limit,
        ...(query.channel ? { channelId: query.channel } : {}),
        ...(query.kind ? { kind: query.kind } : {}),
      }),
    };
  });
  admin.get('/channels', (ctx) => {
    ctx.body = {
      channels: [...deps.channels.values()].map(({ config: channel, runtime }) => ({
        id: channel.id,
        vendor: channel.vendor,
        name: channel.name ?? channel.id,
        jobs: (runtime.jobs ?? []).map((job) => ({ name: job.name, schedule: job.schedule })),
        routes: (runtime.routes ?? [])
          .filter((route) => route.scope === 'admin')
          .map((route) => `${route.method} ${route.path}`),
      })),
    };
  });
  admin.all('/channels/:id/*rest', async (ctx, next) => {
    const entry = deps.channels.get(ctx.params.id!);
    if (!entry) throw new NotFoundError('channel_not_found', `no channel ${ctx.params.id}`);
    const subPath = ctx.path.slice(`/api/v1/channels/${ctx.params.id}/`.length);
    await dispatchChannelRoute(ctx, entry, 'admin', subPath, next);
  });
  deps.delivery.registerRoutes(admin);

  app.use(router.routes()).use(router.allowedMethods({ throw: false }));
  app.use(admin.routes()).use(admin.allowedMethods({ throw: false }));
  adminRouteLists.set(app, [
    ...admin.stack.flatMap((layer) =>
      layer.methods
        .filter((method) => method !== 'HEAD')
        .map((method) => ({ method, path: String(layer.path) })),
    ),
    ...[...deps.channels.values()].flatMap(({ config: channel, runtime }) =>
      (runtime.routes ?? [])
        .filter((route) => route.scope === 'admin')
        .map((route) => ({ method: route.method, path: `/api/v1/channels/${channel.id}/${route.path}` })),
    ),
  ]);
  return app;
}
