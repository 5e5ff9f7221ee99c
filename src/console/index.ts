import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import type { Logger } from 'pino';
import { z } from 'zod';
import { PUBLISHED_TOKENS } from '../config/published.js';
import type { ChannelConfig, Config, CrmDestinationConfig } from '../config/schema.js';
import type { ContactService } from '../contacts/service.js';
import { type Contact, timelineEntryTypeSchema } from '../contacts/types.js';
import type { AdapterDefinition, ChannelRoute, ChannelRuntime } from '../contracts/adapter.js';
import type { ConnectorDefinition } from '../contracts/connector.js';
import { credentialExpiry } from '../crm/credentials.js';
import { changedSinceCheck, readCrmChecks } from '../crm/last-check.js';
import { deliveryIdSchema } from '../delivery/api.js';
import type { Delivery } from '../delivery/index.js';
import { AppError, issuesFromZod, NotFoundError, ValidationError } from '../errors.js';
import { readPlainBody, requireFormBody } from '../http/body.js';
import { type AdminAuthLimit, clientAddress } from '../http/rate-limit.js';
import { runChannelRoute } from '../http/validate.js';
import { readDeferredBacklog } from '../intake/deferred.js';
import type { PayloadJournal } from '../intake/journal.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/types.js';
import { html, query, type SafeHtml } from './html.js';
import type { AgentLinks } from './links.js';
import {
  type AgentSyncProgressView,
  type AgentSyncReportView,
  agentSyncPage,
  agentSyncProgressJson,
  type ChannelView,
  channelsPage,
  type PollReportView,
  type StatusView,
  shownConfigPath,
  statusPage,
} from './ops.js';
import {
  conflictsPage,
  contactSection,
  contactsPage,
  deliveriesPage,
  deliveryPage,
  errorPage,
  journalPage,
  layout,
  SEARCH_MAX_LENGTH,
  signInPage,
  timelineSection,
} from './pages.js';
import { isRootPath, relativeLinks, relativeTo } from './relative.js';
import { createSessions, newToken, type Session, sameToken } from './sessions.js';

/**
 * The web console (DESIGN §11), served by the bridge under /console. Server-rendered HTML plus
 * one static script and one stylesheet from src/console/assets (no build step, nothing from the
 * internet). It calls the same services the admin API calls — the contact engine, the delivery
 * admin, the journal and the channels' own admin routes — so there is one implementation of
 * each operation.
 */
/** A configured channel as the console sees it. */
export interface ConsoleChannel {
  config: ChannelConfig;
  runtime: ChannelRuntime<unknown>;
  adapter: AdapterDefinition;
}

export interface ConsoleDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  store: Store;
  contacts: ContactService;
  journal: PayloadJournal;
  delivery: Delivery;
  channels: ReadonlyMap<string, ConsoleChannel>;
  /** null when there is no master key to sign with: agent links are then refused. */
  agentLinks: AgentLinks | null;
  vendorNames?: ReadonlyMap<string, string>;
  role?: string;
  /** The admin API's limit on failed authentications: sign-in counts against it too. */
  adminAuth: AdminAuthLimit;
  /** The CRM destinations with their connector: the status page's CRM section (token expiry). */
  crmDestinations?: ReadonlyArray<{ destination: CrmDestinationConfig; connector: ConnectorDefinition }>;
  /** The file the config came from (BridgeOptions.configPath): named in the commands the pages show. */
  configPath?: string;
  now: () => Date;
}

export interface WebConsole {
  middleware: Middleware;
  /** Note that a channel received a webhook (shown as "last traffic"); cheap, never throws. */
  noteTraffic(channelId: string): void;
  /** `METHOD /console/...` of every page and form post (for the OpenAPI document). */
  routes: Array<{ method: string; path: string }>;
}

const COOKIE = 'chatbridge_console';
const PRE_COOKIE = 'chatbridge_console_pre';
const TRAFFIC_KEY = 'console:traffic';
/** Deliveries listed on one page of the console (the list says when it was cut there). */
const DELIVERIES_LISTED = 100;
/** Contacts listed for one search (the page says when more matched). */
const CONTACTS_LISTED = 50;
/** Journal entries on one page of the console (an "Older entries" link reads on). */
const JOURNAL_LISTED = 50;
/** Last-traffic writes per channel are spaced out: the console needs minutes, not every webhook. */
const TRAFFIC_WRITE_EVERY_MS = 30_000;

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

const ASSETS: Record<string, string> = {
  'console.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
};

/** Assets are next to this file in src/, and tsc does not copy them: from dist/ look back in src/. */
const ASSET_DIRS = [
  new URL('./assets/', import.meta.url),
  new URL('../../../src/console/assets/', import.meta.url),
];

class ForbiddenError extends AppError {
  constructor(code: string, message: string) {
    super(code, 403, message);
  }
}

const NOTICES: Record<string, string> = {
  replayed: 'Replay queued: the delivery is pending again and will be attempted now.',
  merged: 'Merged: the two contacts are one now. Unmerge in Merges below undoes it.',
  unmerged: 'Unmerged: the record is its own contact again and will not be merged back automatically.',
  revoked: 'Key revoked: LiveTex lookups with it are refused from now on, on every instance.',
  'signed-out': 'You are signed out.',
};

const contactsQuerySchema = z.object({ q: z.string().max(SEARCH_MAX_LENGTH).optional() });
const pageQuerySchema = z.object({
  before: z.string().max(300).optional(),
  /** The timeline filter: checked against the contact (timelineFilterOf); empty is any. */
  channel: z.string().max(64).optional(),
  type: z.string().max(64).optional(),
  notice: z.string().optional(),
  /** After an unmerge: the contact it split off (linked in the notice when it exists). */
  split: z.string().max(100).optional(),
});
const deliveriesQuerySchema = z.object({
  state: z.enum(['pending', 'delivered', 'failed', '']).optional(),
  destination: z.string().max(200).optional(),
  before: z.string().max(200).optional(),
  notice: z.string().optional(),
});
const conflictsQuerySchema = z.object({
  /** Absent or empty: the open ones (those that still wait for a decision). */
  state: z.enum(['open', 'merged', 'resolved', 'all', '']).optional(),
  before: z.string().max(40).optional(),
});

/** Identity conflicts on one page of the console (an "Older conflicts" link reads on). */
const CONFLICTS_LISTED = 50;

const journalQuerySchema = z.object({
  channel: z.string().max(64).optional(),
  kind: z.enum(['rejected', 'unhandled', '']).optional(),
  before: z.string().max(40).optional(),
});

/**
 * What was wrong with one parameter of a console address, in words for a person: zod's own
 * wording ("Invalid option: expected one of \"rejected\"|\"unhandled\"|\"\"") was quoted to
 * support staff who had edited a link by hand.
 */
function queryProblem(issue: z.core.$ZodIssue, given: unknown): string {
  if (Array.isArray(given)) return 'is given more than once; give it once';
  switch (issue.code) {
    case 'invalid_value': {
      const values = issue.values.filter((value) => value !== '').map(String);
      const any = issue.values.includes('');
      const choices =
        values.length <= 1 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values.at(-1)}`;
      return `must be ${choices}${any ? ' (or empty, for any)' : ''}`;
    }
    case 'too_big':
      return `is too long: this page takes at most ${String(issue.maximum)} characters`;
    default:
      return 'is not a value this page takes';
  }
}

/** A 400 for the address's parameters: a sentence naming them; the page lists what each must be. */
function queryError(issues: Array<{ path: string; message: string }>): ValidationError {
  const names = [...new Set(issues.map((issue) => `“${issue.path}”`))];
  const named = names.length === 1 ? names[0]! : `${names.slice(0, -1).join(', ')} and ${names.at(-1)!}`;
  return new ValidationError(
    names.length === 1
      ? `The ${named} value in this address is not one the page takes.`
      : `The ${named} values in this address are not ones the page takes.`,
    issues,
    'invalid_query',
  );
}

function parseWith<T extends z.ZodType>(schema: T, value: Record<string, unknown>): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw queryError(
      issuesFromZod(parsed.error).map((issue, index) => ({
        path: issue.path,
        message: queryProblem(
          parsed.error.issues[index]!,
          value[String(parsed.error.issues[index]!.path[0])],
        ),
      })),
    );
  }
  return parsed.data;
}

/**
 * The timeline filter of a contact page's address: a channel the contact was seen in (the form
 * offers only those) and an entry type of the form types take; empty is any. Anything else is the
 * console's 400 naming the parameter, not an empty timeline that looks like "no chats".
 */
function timelineFilterOf(
  contact: Contact,
  given: { channel?: string | undefined; type?: string | undefined },
): { channel?: string; type?: string } {
  const issues: Array<{ path: string; message: string }> = [];
  const channels = contact.channels.map((each) => each.channelId);
  if (given.channel && !channels.includes(given.channel))
    issues.push({
      path: 'channel',
      message: `must be one of this contact's channels (${channels.join(', ') || 'none yet'}), or empty, for any`,
    });
  if (given.type && !timelineEntryTypeSchema.safeParse(given.type).success)
    issues.push({
      path: 'type',
      message: 'must be an entry type such as conversation.finished, or empty, for any',
    });
  if (issues.length > 0) throw queryError(issues);
  return {
    ...(given.channel ? { channel: given.channel } : {}),
    ...(given.type ? { type: given.type } : {}),
  };
}

/** The engine's form of the console's filter (undefined when there is none). */
function engineFilter(filter: { channel?: string; type?: string }) {
  return filter.channel || filter.type
    ? {
        filter: {
          ...(filter.channel ? { channelId: filter.channel } : {}),
          ...(filter.type ? { type: filter.type } : {}),
        },
      }
    : {};
}

/**
 * A page read at `?before=`: a value the list never gave out (edited by hand) passes the page's
 * schema but not the list's own check, whose words are for the API ("invalid cursor", "not a
 * cursor this API returned"). Said the console's way instead.
 */
async function pageAt<T>(read: () => Promise<T>, start = 'the newest entries'): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (error instanceof ValidationError && error.issues?.some((issue) => issue.path === 'before')) {
      throw queryError([
        {
          path: 'before',
          message: `is not a place in this list; leave it out to start from ${start}`,
        },
      ]);
    }
    throw error;
  }
}

/**
 * Where to go back to after sign-in: a console path of ours with its query (a search's `?q=`),
 * nothing else. Resolved against a placeholder origin, so `..`, `%2e%2e`, `//host` and absolute
 * URLs show up as another path or origin and are refused (no open redirect); backslashes and
 * control characters are refused before that, since browsers read `/\\host` as `//host`.
 */
const NEXT_BASE = 'http://console.invalid';
function safeNext(value: string | undefined): string {
  const fallback = '/console/contacts';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (!value || value.length > 2000 || !value.startsWith('/') || /[\\\u0000-\u001f\u007f]/.test(value))
    return fallback;
  if (!URL.canParse(value, NEXT_BASE)) return fallback;
  const url = new URL(value, NEXT_BASE);
  if (url.origin !== NEXT_BASE) return fallback;
  if (url.pathname !== '/console' && !url.pathname.startsWith('/console/')) return fallback;
  if (url.pathname.includes('//')) return fallback;
  return url.pathname + url.search;
}

/**
 * Whether a search is a phone number, as agents paste them: any dash (a Russian document or CRM
 * card writes 777–01–23 with en dashes), fullwidth digits, an extension at the end ("доб. 12",
 * "ext. 5", "#12", which the phone's key leaves out).
 */
const PHONE_EXTENSION = /\s*(?:доб|ext|x|#)\.?\s*\d+$/iu;
function looksLikePhone(text: string): boolean {
  const plain = text.normalize('NFKC').replace(PHONE_EXTENSION, '');
  return /^[+\d\s().\p{Pd}]+$/u.test(plain) && plain.replace(/\D/g, '').length >= 5;
}

/**
 * Where a 404 page sends the reader: to where what was not found is kept (a delivery among the
 * deliveries, a channel among the channels); anything else (a contact, an address) to the search.
 */
function notFoundLink(code: string | undefined): SafeHtml {
  if (code === 'delivery_not_found') return html`<a href="/console/deliveries">list the deliveries</a>`;
  if (code === 'channel_not_found') return html`<a href="/console/channels">see the channels</a>`;
  return html`<a href="/console/contacts">search for a contact</a>`;
}

export function createConsole(deps: ConsoleDeps): WebConsole {
  const { config, store, contacts, delivery, logger } = deps;
  const sessions = createSessions(store, deps.now, config.admin.token);
  const secure = config.server.publicUrl?.startsWith('https:') ?? false;
  const assets = new Map<string, string>();
  const trafficWritten = new Map<string, number>();

  const vendorName = (vendor: string) => deps.vendorNames?.get(vendor) ?? vendor;
  /**
   * A contact's timeline as its page shows it (the contact page and the agent link alike): 25
   * entries from `before`, the address's filter checked against the contact, and the Older /
   * Newest links and the filter form pointing back at `self` with the filter kept.
   */
  async function timelineOfPage(
    contact: Contact,
    self: string,
    before: string | undefined,
    given: { channel?: string | undefined; type?: string | undefined },
  ) {
    const filter = timelineFilterOf(contact, given);
    const page = await pageAt(() =>
      contacts.timeline(contact.id, { limit: 25, ...(before ? { before } : {}), ...engineFilter(filter) }),
    );
    return {
      ...page,
      olderHref: (cursor: string) => `${self}${query({ ...filter, before: cursor })}#timeline`,
      ...(before ? { newestHref: `${self}${query(filter)}#timeline` } : {}),
      filter: { action: self, channels: contact.channels.map((each) => each.channelId), ...filter },
    };
  }
  const channelName = (channelId: string) => {
    const channel = deps.channels.get(channelId)?.config;
    return channel ? (channel.name ?? channel.id) : channelId;
  };

  /**
   * The cookies name no Path: the browser gives them the directory of the address it used, the
   * console's path as it sees it. Behind a proxy that serves the bridge under a path
   * (https://example.org/chat/ → the bridge's /) that is `/chat/console`, where a `Path=/console`
   * cookie would never be sent back. Every page that sets one sits right in /console/ (the sign-in
   * and the sign-out): a page further down would give its cookie a narrower path, so it may not.
   */
  function cookiePath(ctx: Context): string {
    // A typed-in trailing slash is redirected before a page runs (answer); any other spelling
    // that reached a cookie-setting page is no console page (a 404, never a 500).
    if (ctx.path.lastIndexOf('/') !== '/console'.length)
      throw new NotFoundError('page_not_found', 'There is no such console page.');
    return '';
  }

  /** With an https publicUrl TLS ends in front of us (a proxy): the cookie is Secure regardless. */
  function cookieOptions(ctx: Context, maxAgeMs: number) {
    if (secure) ctx.cookies.secure = true;
    return {
      httpOnly: true,
      sameSite: 'strict' as const,
      secure,
      path: cookiePath(ctx),
      maxAge: maxAgeMs,
      overwrite: true,
    };
  }

  async function readForm(ctx: Context): Promise<URLSearchParams> {
    const type = ctx.get('content-type') || undefined;
    // A declared type that is no form is refused before the body is read.
    if (type) requireFormBody(type, Buffer.alloc(0));
    const raw = await readPlainBody(ctx, 64 * 1024);
    // No type at all: refused unless there was no body either (requireFormBody).
    requireFormBody(type, raw);
    return new URLSearchParams(raw.toString('utf8'));
  }

  async function loadAsset(name: string): Promise<string> {
    const cached = assets.get(name);
    if (cached !== undefined) return cached;
    for (const dir of ASSET_DIRS) {
      try {
        const text = await readFile(fileURLToPath(new URL(name, dir)), 'utf8');
        assets.set(name, text);
        return text;
      } catch {
        // try the next place
      }
    }
    throw new NotFoundError('asset_not_found', `no console asset ${name}`);
  }

  /** Call one of a channel's admin routes exactly as the admin API would. */
  async function callChannel(
    entry: ConsoleChannel,
    method: ChannelRoute['method'],
    path: string,
    options: { query?: Record<string, string>; params?: Record<string, string> } = {},
  ) {
    const route = (entry.runtime.routes ?? []).find(
      (candidate) => candidate.method === method && candidate.path === path,
    );
    if (!route)
      throw new NotFoundError('route_not_found', `channel ${entry.config.id} has no ${method} ${path}`);
    return runChannelRoute(route, {
      params: { ...options.params, channelId: entry.config.id },
      query: options.query ?? {},
      rawBody: Buffer.alloc(0),
    });
  }

  const hasRoute = (runtime: ChannelRuntime<unknown>, method: string, path: string) =>
    (runtime.routes ?? []).some((route) => route.method === method && route.path === path);

  async function jobRuns(): Promise<Map<string, Record<string, number>>> {
    const out = new Map<string, Record<string, number>>();
    const metric = await deps.metrics.jobRuns.get();
    for (const value of metric.values) {
      const id = `${value.labels.channel}:${value.labels.job}`;
      const runs = out.get(id) ?? {};
      runs[String(value.labels.outcome)] = value.value;
      out.set(id, runs);
    }
    return out;
  }

  async function channelViews(
    ctx: Context,
    extra: { newKey?: { channelId: string; kid: string; key: string; createdAt: string } } = {},
  ): Promise<ChannelView[]> {
    const traffic = await store.hgetall(TRAFFIC_KEY);
    const runs = await jobRuns();
    // Without a public URL, the address this page was asked for. Not `ctx.origin`: since Koa 3
    // that is the request's Origin header (absent on a plain GET: it threw), which a client sets.
    const origin = (config.server.publicUrl ?? `${ctx.protocol}://${ctx.host}`).replace(/\/+$/, '');
    const views: ChannelView[] = [];
    for (const entry of deps.channels.values()) {
      const { config: channel, runtime } = entry;
      const view: ChannelView = {
        id: channel.id,
        name: channel.name ?? channel.id,
        vendor: channel.vendor,
        vendorName: vendorName(channel.vendor),
        // The token is a credential: never shown, not even partly.
        intakeUrl: entry.adapter.intake.some((route) => route.kind === 'webhook')
          ? `${origin}/webhooks/${channel.vendor}/${channel.id}/••••••••  (token: see the config)`
          : null,
        lastTraffic: traffic[channel.id] ?? null,
        jobs: (runtime.jobs ?? []).map((job) => ({
          name: job.name,
          schedule: job.schedule,
          runs: runs.get(`${channel.id}:${job.name}`) ?? {},
        })),
      };
      if (hasRoute(runtime, 'GET', 'keys')) {
        try {
          const result = await callChannel(entry, 'GET', 'keys');
          view.keys = (result.body as { keys: NonNullable<ChannelView['keys']> }).keys;
        } catch (error) {
          view.keysError = `The keys could not be read: ${(error as Error).message}`;
        }
        if (extra.newKey?.channelId === channel.id) {
          const { channelId: _ignored, ...key } = extra.newKey;
          view.newKey = key;
        }
      }
      if (hasRoute(runtime, 'GET', 'agent-sync')) {
        try {
          const result = await callChannel(entry, 'GET', 'agent-sync');
          view.agentSync = { reports: (result.body as { reports: AgentSyncReportView[] }).reports };
          // A sync running now (on any instance, started from anywhere): the card links its view.
          if (hasRoute(runtime, 'GET', 'agent-sync/progress'))
            view.agentSync.running = await syncProgressOf(entry);
        } catch (error) {
          view.agentSync = {
            reports: [],
            error: `The reports could not be read: ${(error as Error).message}`,
          };
        }
      }
      if (hasRoute(runtime, 'GET', 'conversation-poll')) {
        try {
          const result = await callChannel(entry, 'GET', 'conversation-poll');
          const body = result.body as { first?: PollReportView | null; recent?: PollReportView[] };
          view.polling = { first: body.first ?? null, recent: body.recent ?? [] };
        } catch (error) {
          view.polling = {
            first: null,
            recent: [],
            error: `The poll reports could not be read: ${(error as Error).message}`,
          };
        }
      }
      views.push(view);
    }
    return views;
  }

  /**
   * Up to CONTACTS_LISTED + 1 contacts: one more than the page lists, so it can say it was cut;
   * `more` when the name search stopped before that (a common name: see findByName).
   */
  async function searchContacts(q: string): Promise<{ contacts: Contact[]; more: boolean }> {
    const text = q.trim();
    let more = false;
    const found = new Map<string, Contact>();
    const limit = CONTACTS_LISTED + 1;
    const add = (list: Contact[]) => {
      for (const contact of list) found.set(contact.id, contact);
    };
    if (/^c_[A-Za-z0-9]{4,64}$/.test(text)) {
      const direct = await contacts.get(text);
      if (direct) add([direct.contact]);
    }
    if (text.includes('@')) add(await contacts.find({ email: text, limit }));
    if (looksLikePhone(text)) add(await contacts.find({ phone: text, limit }));
    const colon = /^([a-z][a-z0-9_]*):(.+)$/.exec(text);
    if (colon?.[1] === 'person')
      add(await contacts.find({ identity: { kind: 'person', value: colon[2]! }, limit }));
    add(await contacts.find({ identity: { kind: 'person', value: text }, limit }));
    if (!text.includes('@')) {
      const byName = await contacts.findByName(text, { limit });
      add(byName.contacts);
      more = byName.more;
    }
    return { contacts: [...found.values()].slice(0, limit), more };
  }

  /**
   * Every /console answer goes through here, matched by the router or not (an unknown page, the
   * /console redirect, a refused form, an error): the security headers are set in this one place
   * and every error becomes the console's error page. Pages are never stored by a cache (they
   * show contacts, and forms carry CSRF tokens); the assets route allows revalidated caching.
   */
  async function answer(ctx: Context, next: () => Promise<unknown>) {
    ctx.set('content-security-policy', CSP);
    ctx.set('x-content-type-options', 'nosniff');
    ctx.set('x-frame-options', 'DENY');
    ctx.set('referrer-policy', 'no-referrer');
    ctx.set('cache-control', 'no-store');
    try {
      // `/console/sign-in/` is the page `/console/sign-in` (the router matches both): sent there,
      // so that its relative addresses and the cookies it sets (their path is the page's
      // directory) are the page's own. 308 keeps a form's method and body.
      if (ctx.path.length > '/console/'.length && ctx.path.endsWith('/')) {
        ctx.status = 308;
        ctx.set('location', ctx.path.replace(/\/+$/, '') + (ctx.querystring ? `?${ctx.querystring}` : ''));
      } else await next();
      if (ctx.body === undefined && ctx.status === 404) {
        // No console route took it. The address is not repeated (it is the asker's text).
        throw new NotFoundError('page_not_found', 'There is no such console page.');
      }
    } catch (error) {
      const session = ctx.state.consoleSession as Session | undefined;
      const status = error instanceof AppError ? error.status : 500;
      if (status >= 500) (ctx.state.logger as Logger).error({ err: error }, 'console error');
      const message =
        error instanceof AppError
          ? error.status >= 500
            ? `${error.message}. Try again in a moment.`
            : error.message
          : 'An unexpected error happened; the bridge log has the details under this request id.';
      const code = error instanceof AppError ? error.code : undefined;
      const nextStep =
        code === 'invalid_link' || ctx.path.startsWith('/console/c/')
          ? // An agent on a read-only link has no admin sign-in (nor search) to go to.
            'Click the CRM link in the chat again: it opens this contact with a fresh link.'
          : status === 404
            ? html`Go back and check the address, or ${notFoundLink(code)}.`
            : status === 403
              ? html`Reload the page (your form may be older than your session) or <a href="/console/sign-in">sign in again</a>, then retry.`
              : status === 400 && error instanceof AppError && error.issues?.length
                ? 'Correct the value named above and try again.'
                : status === 503
                  ? 'The store (Redis) is not reachable: check it, then reload this page.'
                  : status === 429
                    ? // The address's own limit, or the ceiling on all addresses (which spares
                      // addresses that signed in during the last day): src/http/rate-limit.ts.
                      'Too many wrong admin tokens, from this address or from many addresses at once: wait for the time in Retry-After, then sign in again (an address that signed in during the last day is not held back by guesses from elsewhere).'
                    : `Request id: ${String(ctx.state.requestId)}. Go back and try again.`;
      ctx.status = status;
      if (error instanceof AppError)
        for (const [name, value] of Object.entries(error.headers ?? {})) ctx.set(name, value);
      ctx.type = 'text/html; charset=utf-8';
      ctx.body = errorPage({
        status,
        message,
        next: nextStep,
        ...(error instanceof AppError && error.issues?.length ? { issues: error.issues } : {}),
        nav: session !== undefined,
        ...(session ? { csrf: session.csrf } : {}),
      });
    }
    // The console's own addresses, relative to this page (./relative.ts): under a proxy's path
    // (https://example.org/chat/ → the bridge's /) a redirect or link stays below that path.
    const location = ctx.response.get('location');
    if (location && isRootPath(location)) ctx.set('location', relativeTo(ctx.path, location));
    if (typeof ctx.body === 'string' && ctx.response.is('html')) ctx.body = relativeLinks(ctx.path, ctx.body);
  }

  const router = new Router({ prefix: '/console' });

  router.get('/assets/:name', async (ctx) => {
    const name = ctx.params.name!;
    const type = ASSETS[name];
    if (!type) throw new NotFoundError('asset_not_found', 'There is no such console asset.');
    ctx.type = type;
    ctx.set('cache-control', 'no-cache');
    ctx.body = await loadAsset(name);
  });

  // --- sign-in / sign-out --------------------------------------------------------------------
  /**
   * With an https publicUrl the cookies are Secure, and a browser keeps a Secure cookie only
   * from an https page: opened over plain http (no TLS in front), the sign-in could never work
   * and nothing would say why. The form warns when the request says it came over http (Koa reads
   * X-Forwarded-Proto, from a trusted proxy only: src/http/forwarded.ts), and a post without the
   * form's cookie says why. Not on a loopback address: Chromium keeps Secure cookies from
   * http://localhost and 127.0.0.1 (a browser that does not still gets the post's explanation).
   */
  const secureOverHttp = (ctx: Context) =>
    secure &&
    ctx.protocol !== 'https' &&
    !/^(localhost|.+\.localhost|127(\.\d{1,3}){3}|\[?::1\]?)$/i.test(ctx.hostname);
  const secureCookieHelp = () =>
    `This bridge's server.publicUrl is https, so its sign-in cookies are Secure, and a browser keeps them only over https: open the console at ${(config.server.publicUrl ?? '').replace(/\/+$/, '')}/console. If TLS ends at a proxy in front of the bridge, the proxy must send X-Forwarded-Proto: https and connect from an address in server.trustedProxies (loopback and private addresses by default), with server.proxyHops above 0. To run without TLS, on your own machine only, set server.publicUrl to an http:// address or leave it out.`;

  const renderSignIn = (ctx: Context, next: string, error?: string, notice?: string) => {
    // Login CSRF: the form carries a value that must match a cookie only our page can set.
    const pre = newToken();
    ctx.cookies.set(PRE_COOKIE, pre, cookieOptions(ctx, 30 * 60_000));
    const warning = !error && secureOverHttp(ctx) ? secureCookieHelp() : undefined;
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = signInPage({
      pre,
      next,
      ...(PUBLISHED_TOKENS.includes(config.admin.token) ? { publishedToken: config.admin.token } : {}),
      ...(error || warning ? { error: error ?? warning } : {}),
      ...(notice ? { notice } : {}),
    });
  };
  router.get('/sign-in', async (ctx) => {
    const next = safeNext(typeof ctx.query.next === 'string' ? ctx.query.next : undefined);
    if (await sessions.get(ctx.cookies.get(COOKIE))) return ctx.redirect(next);
    renderSignIn(ctx, next, undefined, ctx.query.notice === 'signed-out' ? NOTICES['signed-out'] : undefined);
  });
  router.post('/sign-in', async (ctx) => {
    const form = await readForm(ctx);
    const next = safeNext(form.get('next') ?? undefined);
    const preCookie = ctx.cookies.get(PRE_COOKIE);
    if (!sameToken(form.get('_pre') ?? undefined, preCookie)) {
      ctx.status = 403;
      renderSignIn(
        ctx,
        next,
        // The form's cookie is missing altogether: with Secure cookies, most likely plain http.
        // Not when the post came over https: there the cookie simply expired (it lives 30 min).
        !preCookie && secure && ctx.protocol !== 'https'
          ? `Your browser did not send back the sign-in form's cookie. ${secureCookieHelp()}`
          : 'The sign-in form expired or was not sent from this page. Enter the token again.',
      );
      return;
    }
    // The admin token's limit (429 when this address, or the ceiling, says no) decides whether the
    // token is compared at all, and counts a wrong one: the API's gate does the same.
    const token = (form.get('token') ?? '').trim();
    if (!(await deps.adminAuth.check(clientAddress(ctx), () => sameToken(token, config.admin.token)))) {
      ctx.status = 401;
      logger.warn({ requestId: ctx.state.requestId }, 'console sign-in refused: wrong admin token');
      renderSignIn(
        ctx,
        next,
        'That is not the admin token. It is admin.token in the config (CHATBRIDGE_ADMIN_TOKEN in the example).',
      );
      return;
    }
    // A browser signing in again ends the session it had: one browser, one session (the old
    // one would otherwise stay valid, unreachable, until its TTL).
    const previous = ctx.cookies.get(COOKIE);
    if (previous) await sessions.destroy(previous);
    const session = await sessions.create();
    ctx.cookies.set(PRE_COOKIE, null, { path: cookiePath(ctx) });
    ctx.cookies.set(COOKIE, session.id, cookieOptions(ctx, 12 * 3_600_000));
    ctx.redirect(next);
  });

  /**
   * Sign-out ends the session and lands on the sign-in page. A session that has already ended
   * (expired, revoked, signed out in another tab, a changed admin token) has nothing to end: the
   * same landing, not an error. A live session needs its CSRF token, like every other form.
   */
  router.post('/sign-out', async (ctx) => {
    const session = await sessions.get(ctx.cookies.get(COOKIE));
    if (session) {
      const form = await readForm(ctx);
      if (!sameToken(form.get('_csrf') ?? undefined, session.csrf)) {
        ctx.state.consoleSession = session;
        throw new ForbiddenError(
          'csrf_refused',
          'This request did not carry the page’s security token, so it was refused.',
        );
      }
      await sessions.destroy(session.id);
    }
    ctx.cookies.set(COOKIE, null, { path: cookiePath(ctx) });
    ctx.redirect('/console/sign-in?notice=signed-out');
  });

  // --- agent links: one contact, read-only, no session ---------------------------------------
  router.get('/c/:token', async (ctx) => {
    const verified = deps.agentLinks?.verify(ctx.params.token!) ?? null;
    if (!verified) {
      throw new ForbiddenError(
        'invalid_link',
        'This link is not valid: it was changed, or it has expired. Open the contact again from the chat to get a fresh link.',
      );
    }
    const { before, ...given } = parseWith(pageQuerySchema, ctx.query);
    const found = await contacts.get(verified.contactId);
    if (!found) throw new NotFoundError('contact_not_found', 'This contact no longer exists.');
    const timeline = await timelineOfPage(
      found.contact,
      `/console/c/${encodeURIComponent(ctx.params.token!)}`,
      before,
      given,
    );
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = layout(
      { title: found.contact.name ?? 'Contact' },
      html`<p class="muted small">Read-only view for agents · valid until ${html`<time datetime="${verified.expiresAt.toISOString()}">${verified.expiresAt.toISOString()}</time>`}</p>
${contactSection({ contact: found.contact, channelName, vendorName })}
${timelineSection({ ...timeline, channelName, vendorName })}`,
    );
  });

  // --- everything else needs a session; POSTs need its CSRF token ------------------------------
  router.use(async (ctx: Context, next: Next) => {
    const session = await sessions.get(ctx.cookies.get(COOKIE));
    if (!session) {
      if (ctx.method === 'GET' || ctx.method === 'HEAD') {
        return ctx.redirect(`/console/sign-in${query({ next: ctx.originalUrl })}`);
      }
      throw new ForbiddenError('no_session', 'You are not signed in (or your session ended).');
    }
    ctx.state.consoleSession = session;
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      const form = await readForm(ctx);
      if (!sameToken(form.get('_csrf') ?? undefined, session.csrf)) {
        throw new ForbiddenError(
          'csrf_refused',
          'This request did not carry the page’s security token, so it was refused.',
        );
      }
      ctx.state.form = form;
    }
    return next();
  });

  const sessionOf = (ctx: Context) => ctx.state.consoleSession as Session;
  const formOf = (ctx: Context) => ctx.state.form as URLSearchParams;
  // Own keys only: `?notice=constructor` would otherwise show Object's constructor as the notice.
  const noticeOf = (value: unknown) =>
    typeof value === 'string' && Object.hasOwn(NOTICES, value) ? NOTICES[value] : undefined;

  router.get('/', (ctx) => ctx.redirect('/console/contacts'));

  router.get('/contacts', async (ctx) => {
    const { q } = parseWith(contactsQuerySchema, ctx.query);
    const text = q?.trim() ?? '';
    ctx.type = 'text/html; charset=utf-8';
    const found = text ? await searchContacts(text) : null;
    ctx.body = contactsPage({
      csrf: sessionOf(ctx).csrf,
      q: text,
      contacts: found?.contacts ?? null,
      more: found?.more ?? false,
      limit: CONTACTS_LISTED,
      vendorName,
      channelName,
    });
  });

  router.get('/contacts/:id', async (ctx) => {
    const { before, notice, split, ...given } = parseWith(pageQuerySchema, ctx.query);
    const found = await contacts.get(ctx.params.id!);
    if (!found)
      throw new NotFoundError(
        'contact_not_found',
        'There is no such contact. Search for it by e-mail, phone or name.',
      );
    const contact = found.contact;
    const timeline = await timelineOfPage(
      contact,
      `/console/contacts/${encodeURIComponent(contact.id)}`,
      before,
      given,
    );
    const csrf = sessionOf(ctx).csrf;
    // The contact an unmerge split off, linked only when it is one of its own now: a crafted
    // address cannot put a link to just any contact in the notice.
    const splitOff =
      notice === 'unmerged' && split && split !== contact.id && /^c_[A-Za-z0-9]{4,64}$/.test(split)
        ? await contacts.get(split)
        : null;
    const notices = html`${[
      splitOff && splitOff.contact.id === split
        ? html`Unmerged: <a href="/console/contacts/${encodeURIComponent(split)}">${splitOff.contact.name ?? split}</a> (<span class="mono">${split}</span>) is its own contact again and will not be merged back automatically.`
        : noticeOf(notice),
      found.mergedFrom ? ` ${found.mergedFrom} was merged into this contact.` : undefined,
    ]}`;
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = layout(
      {
        title: contact.name ?? 'Contact',
        nav: true,
        csrf,
        current: '/console/contacts',
        ...(notices.value.trim() ? { notice: notices } : {}),
      },
      html`<p><a href="/console/contacts">← Search</a></p>
${contactSection({ contact, csrf, channelName, vendorName })}
${timelineSection({ ...timeline, channelName, vendorName })}`,
    );
  });

  router.post('/contacts/:id/unmerge', async (ctx) => {
    const recordId = formOf(ctx).get('recordId') ?? '';
    if (!recordId)
      throw new ValidationError('name the record to unmerge', [{ path: 'recordId', message: 'required' }]);
    const result = await contacts.unmerge(ctx.params.id!, { recordId });
    ctx.redirect(
      `/console/contacts/${encodeURIComponent(result.contact.id)}${query({ notice: 'unmerged', split: result.split.id })}`,
    );
  });

  // --- identity conflicts ----------------------------------------------------------------------
  router.get('/conflicts', async (ctx) => {
    const filters = parseWith(conflictsQuerySchema, ctx.query);
    const before = filters.before || undefined;
    const state = filters.state || 'open';
    const page = await pageAt(() =>
      contacts.conflictsPage({
        limit: CONFLICTS_LISTED,
        ...(before ? { before } : {}),
        ...(state === 'all' ? {} : { state }),
      }),
    );
    const conflicts = page.conflicts;
    // The filter in links: the default (open) is left out, as the navigation's link has it.
    const here = state === 'open' ? {} : { state };
    // Each contact as it is now, with its name (a conflict merged since, by hand or by a later
    // chat, shows it): every contact of the page in one batched read, not a few per row.
    const now = await contacts.getMany([...new Set(conflicts.flatMap((item) => item.roots))]);
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = conflictsPage({
      csrf: sessionOf(ctx).csrf,
      conflicts,
      contacts: now,
      state,
      ...(page.partial ? { partial: true } : {}),
      ...(page.nextCursor
        ? { olderHref: `/console/conflicts${query({ ...here, before: page.nextCursor })}` }
        : {}),
      ...(before ? { newestHref: `/console/conflicts${query(here)}` } : {}),
    });
  });

  router.post('/conflicts/merge', async (ctx) => {
    const form = formOf(ctx);
    const [id, other] = [form.get('id') ?? '', form.get('with') ?? ''];
    if (!id || !other)
      throw new ValidationError('name the two contacts to merge', [
        { path: id ? 'with' : 'id', message: 'required' },
      ]);
    const { contact } = await contacts.mergeContacts(id, other, 'console');
    ctx.redirect(`/console/contacts/${encodeURIComponent(contact.id)}${query({ notice: 'merged' })}`);
  });

  // --- deliveries ----------------------------------------------------------------------------
  router.get('/deliveries', async (ctx) => {
    const filters = parseWith(deliveriesQuerySchema, ctx.query);
    const state = filters.state || undefined;
    const destination = filters.destination || undefined;
    const before = filters.before || undefined;
    const [page, paused] = await Promise.all([
      pageAt(
        () =>
          delivery.page({
            limit: DELIVERIES_LISTED,
            ...(state ? { state } : {}),
            ...(destination ? { destination } : {}),
            ...(before ? { before } : {}),
          }),
        'the first deliveries', // oldest first, unlike the journal and the timeline
      ),
      delivery.paused(destination),
    ]);
    const here = { ...(state ? { state } : {}), ...(destination ? { destination } : {}) };
    const notice =
      noticeOf(filters.notice) ??
      // Only a count, as the replay's own redirect writes it: a link with other text in
      // `replayed` must not put that text in the page's notice.
      (typeof ctx.query.replayed === 'string' && /^\d{1,9}$/.test(ctx.query.replayed)
        ? `${ctx.query.replayed} failed deliver${ctx.query.replayed === '1' ? 'y' : 'ies'} replayed.`
        : undefined);
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = deliveriesPage({
      csrf: sessionOf(ctx).csrf,
      ...(state ? { state } : {}),
      ...(destination ? { destination } : {}),
      destinations: config.destinations.map((item) => item.id),
      deliveries: page.deliveries,
      paused,
      ...(page.nextCursor
        ? { nextHref: `/console/deliveries${query({ ...here, before: page.nextCursor })}` }
        : {}),
      ...(before ? { firstHref: `/console/deliveries${query(here)}` } : {}),
      ...(notice ? { notice } : {}),
    });
  });
  router.post('/deliveries/replay', async (ctx) => {
    const destination = formOf(ctx).get('destination') ?? '';
    const { replayed } = await delivery.replayFailed(destination);
    ctx.redirect(`/console/deliveries${query({ destination, replayed: String(replayed.length) })}`);
  });
  router.get('/deliveries/:id', async (ctx) => {
    const id = deliveryIdSchema.safeParse(ctx.params.id);
    const found = id.success ? await delivery.get(id.data) : null;
    if (!found) throw new NotFoundError('delivery_not_found', 'There is no such delivery.');
    const filters = parseWith(deliveriesQuerySchema, ctx.query);
    const notice = noticeOf(filters.notice);
    // A pending one may wait behind its destination's open breaker: said on its page too.
    const paused = found.state === 'pending' ? await delivery.paused(found.destination) : [];
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = deliveryPage({
      csrf: sessionOf(ctx).csrf,
      delivery: found,
      paused,
      ...(notice ? { notice } : {}),
      list: {
        ...(filters.state ? { state: filters.state } : {}),
        ...(filters.destination ? { destination: filters.destination } : {}),
      },
    });
  });
  router.post('/deliveries/:id/replay', async (ctx) => {
    const id = deliveryIdSchema.safeParse(ctx.params.id);
    if (!id.success) throw new NotFoundError('delivery_not_found', 'There is no such delivery.');
    // The list it was opened from, as the page's form carries it: back to the same filters.
    const list = deliveriesQuerySchema.safeParse({
      state: formOf(ctx).get('state') ?? undefined,
      destination: formOf(ctx).get('destination') ?? undefined,
    });
    await delivery.replay(id.data);
    ctx.redirect(
      `/console/deliveries/${encodeURIComponent(id.data)}${query({
        notice: 'replayed',
        ...(list.success ? { state: list.data.state, destination: list.data.destination } : {}),
      })}`,
    );
  });

  // --- journal -------------------------------------------------------------------------------
  router.get('/journal', async (ctx) => {
    const filters = parseWith(journalQuerySchema, ctx.query);
    const channel = filters.channel || undefined;
    const kind = filters.kind || undefined;
    const before = filters.before || undefined;
    const page = await pageAt(() =>
      deps.journal.list({
        limit: JOURNAL_LISTED,
        ...(channel ? { channelId: channel } : {}),
        ...(kind ? { kind } : {}),
        ...(before ? { before } : {}),
      }),
    );
    const here = { ...(channel ? { channel } : {}), ...(kind ? { kind } : {}) };
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = journalPage({
      csrf: sessionOf(ctx).csrf,
      ...(channel ? { channel } : {}),
      ...(kind ? { kind } : {}),
      channels: [...deps.channels.keys()],
      channelName,
      vendorName,
      entries: page.entries,
      ...(page.nextCursor
        ? { olderHref: `/console/journal${query({ ...here, before: page.nextCursor })}` }
        : {}),
      ...(before ? { newestHref: `/console/journal${query(here)}` } : {}),
    });
  });

  // --- channels ------------------------------------------------------------------------------
  const channelEntry = (id: string) => {
    const entry = deps.channels.get(id);
    if (!entry) throw new NotFoundError('channel_not_found', 'There is no such channel.');
    return entry;
  };
  router.get('/channels', async (ctx) => {
    const notice = noticeOf(ctx.query.notice);
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = channelsPage({
      csrf: sessionOf(ctx).csrf,
      channels: await channelViews(ctx),
      ...(notice ? { notice } : {}),
    });
  });
  router.post('/channels/:id/keys', async (ctx) => {
    const entry = channelEntry(ctx.params.id!);
    const result = await callChannel(entry, 'POST', 'keys');
    const generated = result.body as { kid: string; key: string; createdAt: string };
    // Shown in this answer only (no redirect, not cached): the key material is never stored readable.
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = channelsPage({
      csrf: sessionOf(ctx).csrf,
      channels: await channelViews(ctx, { newKey: { channelId: entry.config.id, ...generated } }),
      notice: `Key ${generated.kid} generated for ${entry.config.name ?? entry.config.id}.`,
    });
  });
  router.post('/channels/:id/keys/:kid/revoke', async (ctx) => {
    const entry = channelEntry(ctx.params.id!);
    await callChannel(entry, 'DELETE', 'keys/:kid', { params: { kid: ctx.params.kid! } });
    ctx.redirect(`/console/channels?notice=revoked#channel-${encodeURIComponent(entry.config.id)}`);
  });
  /**
   * An agent sync is started, not waited for: the answer is a redirect to its progress view at
   * once (a sync of many agents, or one Chatvisor rate-limits, would outlast a proxy's read
   * timeout, and the page would show nothing meanwhile). A sync already running (the schedule,
   * the CLI, another tab or instance) is not an error here: the view shows that one.
   */
  router.post('/channels/:id/agent-sync', async (ctx) => {
    const entry = channelEntry(ctx.params.id!);
    const dryRun = formOf(ctx).get('dryRun') === 'true' ? 'true' : 'false';
    const view = `/console/channels/${encodeURIComponent(entry.config.id)}/agent-sync`;
    try {
      await callChannel(entry, 'POST', 'agent-sync/start', { query: { dryRun } });
    } catch (error) {
      if (error instanceof AppError && error.code === 'agent_sync_running')
        return ctx.redirect(`${view}?notice=sync-running`);
      throw error;
    }
    ctx.redirect(view);
  });
  const syncProgressOf = async (entry: ConsoleChannel) =>
    (
      (await callChannel(entry, 'GET', 'agent-sync/progress')).body as {
        progress: AgentSyncProgressView | null;
      }
    ).progress;
  router.get('/channels/:id/agent-sync', async (ctx) => {
    const entry = channelEntry(ctx.params.id!);
    const progress = await syncProgressOf(entry);
    // The finished run's report, from the reports every instance keeps (the progress has its id).
    const reports =
      progress && progress.state !== 'running'
        ? ((await callChannel(entry, 'GET', 'agent-sync')).body as { reports: AgentSyncReportView[] }).reports
        : [];
    // A finished run needs no notice: the view's status line says it, with its counts.
    const notice =
      ctx.query.notice === 'sync-running'
        ? 'An agent sync was already running for this channel, so no other was started: this is its progress.'
        : undefined;
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = agentSyncPage({
      csrf: sessionOf(ctx).csrf,
      channelId: entry.config.id,
      channelName: entry.config.name ?? entry.config.id,
      progress,
      report: reports.find((item) => item.id === progress?.id) ?? null,
      ...(notice ? { notice } : {}),
    });
  });
  /** For console.js, which updates the progress view in place (the page works without it). */
  router.get('/channels/:id/agent-sync/progress', async (ctx) => {
    const entry = channelEntry(ctx.params.id!);
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = agentSyncProgressJson(await syncProgressOf(entry));
  });

  // --- status --------------------------------------------------------------------------------
  router.get('/status', async (ctx) => {
    const status: StatusView = {
      role: deps.role ?? 'all',
      store: { kind: store.kind, ok: true },
      outbox: null,
      deferred: null,
      destinations: [],
      schedules: [],
      // Read from the config alone: a page view never calls the CRM.
      crm: (deps.crmDestinations ?? []).map(({ destination, connector }) => ({
        id: destination.id,
        displayName: connector.displayName,
        expiry: credentialExpiry(connector, destination, deps.now()),
      })),
      now: deps.now(),
      ...(deps.configPath === undefined ? {} : { configFile: shownConfigPath(deps.configPath) }),
    };
    try {
      await store.ping();
      status.outbox = await store.llen('outbox');
      const backlog = await readDeferredBacklog(store);
      status.deferred = {
        size: backlog.size,
        oldestAgeMs: backlog.oldestAt === null ? null : Math.max(0, deps.now().getTime() - backlog.oldestAt),
      };
      // What the last `crm check` (a CLI run) recorded: one read for every destination.
      const checks = await readCrmChecks(
        store,
        status.crm.map((item) => item.id),
      );
      for (const { destination, connector } of deps.crmDestinations ?? []) {
        const item = status.crm.find((entry) => entry.id === destination.id);
        const check = checks.get(destination.id) ?? null;
        if (!item) continue;
        item.lastCheck = check;
        // Checked against the config this instance runs with: the check speaks for that one only.
        if (check)
          item.changedSinceCheck = changedSinceCheck(
            check,
            destination,
            connector.secretsOf(destination),
            config.agents,
            // The config's, as `crm check` keys with (never the memory store's ephemeral key:
            // nothing is recorded there).
            config.secrets.masterKey,
          );
      }
      // A Retry-After pause or an open breaker of a CRM: shown with when it ends (one hash read each).
      if (status.crm.length > 0) {
        const paused = await delivery.paused();
        for (const item of status.crm) item.paused = paused.filter((open) => open.destination === item.id);
      }
      // Counted, not listed: a list capped at 500 said "500+" for exactly 500 and read up to
      // a thousand whole records (bodies included) per destination to say it. The index sizes
      // are exact, one read each, and the numbers the backlog gauges report.
      for (const destination of config.destinations) {
        status.destinations.push({
          id: destination.id,
          pending: await delivery.count('pending', destination.id),
          failed: await delivery.count('failed', destination.id),
        });
      }
    } catch (error) {
      status.store = { kind: store.kind, ok: false, message: (error as Error).message };
    }
    const runs = await jobRuns();
    for (const { config: channel, runtime } of deps.channels.values()) {
      for (const job of runtime.jobs ?? []) {
        status.schedules.push({
          channelId: channel.id,
          job: job.name,
          schedule: job.schedule,
          runs: runs.get(`${channel.id}:${job.name}`) ?? {},
        });
      }
    }
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = statusPage({ csrf: sessionOf(ctx).csrf, status });
  });

  const routes = router.routes();
  return {
    // Not async itself: every request outside /console (vendor intake above all) passes straight
    // on, without a promise of its own resolved with next()'s (two more microtask jobs each).
    middleware: (ctx, next) => {
      if (ctx.path !== '/console' && !ctx.path.startsWith('/console/')) return next();
      return answer(ctx, async () => {
        if (ctx.path === '/console') return ctx.redirect('/console/contacts');
        await routes(ctx as Parameters<typeof routes>[0], async () => {});
      });
    },
    routes: [
      { method: 'GET', path: '/console' }, // the redirect in `middleware` above
      ...router.stack.flatMap((layer) =>
        layer.methods
          .filter((method) => method !== 'HEAD')
          .map((method) => ({ method, path: String(layer.path) })),
      ),
    ],
    noteTraffic(channelId) {
      const now = deps.now().getTime();
      if (now - (trafficWritten.get(channelId) ?? 0) < TRAFFIC_WRITE_EVERY_MS) return;
      trafficWritten.set(channelId, now);
      store.hset(TRAFFIC_KEY, channelId, new Date(now).toISOString()).catch((error: unknown) => {
        logger.debug({ err: error, channelId }, 'last traffic not recorded');
      });
    },
  };
}
