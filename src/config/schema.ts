// The phone library's build and metadata that src/contacts/normalize.ts parses with (one copy loaded).
import { type CountryCode, getCountries, isSupportedCountry } from 'libphonenumber-js/core/es6';
import metadata from 'libphonenumber-js/min/metadata';
import { z } from 'zod';
import { cliCommand } from '../cli/named.js';
import { DEFAULT_TRUSTED_PROXIES } from '../http/forwarded.js';
import { DEFAULT_IPV6_PREFIX_LENGTH, parseAddressRange } from '../net/address.js';
import { closest } from './closest.js';

/**
 * The config file's schema (DESIGN §3). Keys here are a public contract: add, never rename.
 * Vendor-specific channel settings are not listed here: each adapter declares its own schema
 * and `loadConfig` checks every channel against its adapter's schema (see src/registry.ts).
 */

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const DURATION_MESSAGE = 'a duration like 0s, 5s, 5m, 2h or 1d, or a whole number of milliseconds';

/**
 * "5s", "5m", "2h", "1d", "250ms" or a plain number of milliseconds, as a number or (from
 * `${VAR}` substitution) a string: "5000". Anything else is named as what it should be.
 */
export const durationSchema = z
  .union([z.number(), z.string()], { error: DURATION_MESSAGE })
  .transform((value, ctx) => {
    const match = typeof value === 'string' ? /^(\d+)(ms|s|m|h|d)?$/.exec(value) : null;
    const milliseconds =
      typeof value === 'number'
        ? value
        : match
          ? Number(match[1]) * DURATION_UNITS[(match[2] ?? 'ms') as keyof typeof DURATION_UNITS]
          : Number.NaN;
    if (!Number.isSafeInteger(milliseconds) || milliseconds < 0) {
      ctx.addIssue({ code: 'custom', message: DURATION_MESSAGE });
      return z.NEVER;
    }
    return milliseconds;
  });

/**
 * How long something is kept (a timeline, a failed delivery): 0 keeps it for good; anything else
 * is at least an hour. 500ms passed and deleted what it was meant to keep before anyone could
 * read or replay it, as a 0s agent link expired before it was clicked (linkTtl's 5m, cooldown's
 * 100ms: each minimum is the least that still does the key's job).
 */
const retentionSchema = (shorter: string) =>
  durationSchema.pipe(
    z
      .number()
      .refine(
        (ms) => ms === 0 || ms >= 3_600_000,
        `0 (keep for good) or at least 1h (a shorter one ${shorter})`,
      ),
  );

/**
 * Numbers and booleans may come from `${VAR}` substitution as strings: accept "3000" as 3000 and
 * "true" as true, but not "". Core keys and every vendor's channel settings use these two.
 */
export const intLike = (schema: z.ZodNumber) =>
  z.preprocess((value) => (typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value), schema);
export const boolLike = z.preprocess(
  (value) => (value === 'true' ? true : value === 'false' ? false : value),
  z.boolean(),
);

const emptyToUndefined = (value: unknown) => (value === '' || value === null ? undefined : value);

/**
 * URLs the bridge sends requests (and credentials) to: http or https only, so a config cannot
 * point a destination or a source at file:, gopher: or javascript: (issue 10 item 17).
 */
/**
 * The country code a defaultCountry not written as one most likely means: the code in small
 * letters (`ru`), or a country's name in English or Russian (`Russia`, `Россия`, `germany`),
 * exactly or within a typo (`Rusia`), of the countries the phone library knows. The names come
 * from Node's ICU, read only when a config gets this wrong.
 */
function countryMeant(text: string): CountryCode | undefined {
  const given = text.trim();
  const countries = getCountries(metadata);
  const upper = given.toUpperCase();
  const code = countries.find((country) => country === upper);
  if (code) return code;
  const byName = new Map<string, CountryCode>();
  for (const locale of ['en', 'ru']) {
    const names = new Intl.DisplayNames([locale], { type: 'region', fallback: 'none' });
    for (const country of countries) {
      const name = names.of(country);
      if (name !== undefined && !byName.has(name.toLowerCase())) byName.set(name.toLowerCase(), country);
    }
  }
  const name = closest(given.toLowerCase(), [...byName.keys()]);
  return name === undefined ? undefined : byName.get(name);
}

export const HTTP_URL_MESSAGE = 'an http:// or https:// URL';
export const httpUrlSchema = z.url({
  protocol: /^https?$/,
  // A URL left out is required (as every other missing key reads), not "written wrong". One
  // written wrong is said with what the file holds (src/config/issues.ts), as every URL key is.
  error: (issue) => (issue.input === undefined ? 'required' : HTTP_URL_MESSAGE),
});

/**
 * Delivery waits (retry delays, breaker cooldown, attempt timeout) run on Node timers, which hold
 * at most 2^31-1 ms (24.8 days): a longer one fires after 1 ms. A 30d retry delay made every
 * retry of the schedule go at once, and a timeout that long aborted every attempt before it was
 * sent. 24 days is the longest whole-day wait that fits.
 */
export const MAX_DELIVERY_WAIT_MS = 24 * 86_400_000;
const deliveryWaitSchema = durationSchema.pipe(
  z.number().max(MAX_DELIVERY_WAIT_MS, 'at most 24d (Node timers hold no longer a wait)'),
);

/** Standard Webhooks secrets are 24 to 64 random bytes; anything shorter is guessable. */
export const MIN_SECRET_BYTES = 24;

/**
 * How a message asking for `secrets.masterKey` says to make one. Both ways of running the CLI:
 * the config is checked before anything knows how the bridge was started (`npm start` and `node
 * bin/chatbridge.js` in a checkout, where no `chatbridge` is on the PATH; the installed package's
 * `chatbridge`; `createBridge` from a library), and a newcomer in a checkout told only
 * `chatbridge keys master` got "command not found".
 */
export const MAKE_MASTER_KEY = `run ${cliCommand('keys master')} to make one`;

export const identifierKinds = ['person', 'email', 'phone'] as const;
export const identifierKindSchema = z.enum(identifierKinds);

export const outboundEventTypes = [
  'contact.created',
  'contact.updated',
  'contact.merged',
  'conversation.started',
  'conversation.assigned',
  'conversation.finished',
  'conversation.rated',
  'message.received',
  'offline_message.received',
  'call.updated',
  'agents.synced',
] as const;
export const outboundEventTypeSchema = z.enum(outboundEventTypes);

export const channelIdSchema = z
  .string()
  .regex(/^[a-z0-9-]+$/, 'only a-z, 0-9 and - are allowed')
  .max(64);

/** What every channel has, whatever its vendor. Vendor settings are checked by the adapter. */
export const baseChannelSchema = z.looseObject({
  id: channelIdSchema,
  vendor: z.string().min(1),
  /** Shown to agents in other channels ("Mobile app: 3 conversations"); defaults to the id. */
  name: z.string().min(1).optional(),
  token: z.string().min(16, 'at least 16 characters: the token is the only credential in the webhook URL'),
});
export type ChannelConfig = z.infer<typeof baseChannelSchema>;

export const agentSchema = z.strictObject({
  email: z.email().transform((value) => value.toLowerCase()),
  name: z.string().min(1),
  crmUserId: z.union([z.string(), z.number()]).transform(String).optional(),
  teams: z.array(z.string()).default([]),
  role: z.string().optional(),
});
export type AgentConfig = z.infer<typeof agentSchema>;

/**
 * Extra request headers (webhook destinations, attribute sources), names lower-cased. On the
 * wire names are case-insensitive, in an object they are not: `Content-Type` here went out next
 * to the bridge's own `content-type` (two of them; the receiver read the first), and
 * `Webhook-Id` next to the signed `webhook-id` made the signature unverifiable. Lower-cased, one
 * of each name is sent: for a destination the bridge's own (content-type and the three Standard
 * Webhooks ones) win; for an attribute source the configured one replaces the default.
 */
const extraHeadersSchema = z
  .record(z.string(), z.string())
  .default({})
  .superRefine((headers, ctx) => {
    const seen = new Set<string>();
    for (const name of Object.keys(headers)) {
      if (seen.has(name.toLowerCase()))
        ctx.addIssue({ code: 'custom', path: [name], message: 'given twice (header names ignore case)' });
      seen.add(name.toLowerCase());
    }
  })
  .transform((headers) =>
    Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value])),
  );

export const attributeSourceSchema = z.strictObject({
  id: z.string().min(1),
  url: httpUrlSchema,
  timeoutMs: intLike(z.number().int().positive().max(10_000)).default(800),
  cacheTtlSeconds: intLike(z.number().int().nonnegative()).default(60),
  headers: extraHeadersSchema,
});
export type AttributeSourceConfig = z.infer<typeof attributeSourceSchema>;

const webhookSecretSchema = z
  .string()
  // Padding only at the end: Node's decoder stops at the first '=' and signs with the bytes
  // before it, while the receivers' Standard Webhooks libraries refuse such a secret outright.
  // One problem per value: a malformed secret ('nope') was also said to be too short. The format's
  // message says the length too, and ends the checks (abort).
  .regex(/^whsec_[A-Za-z0-9+/]+={0,2}$/, {
    error: `a Standard Webhooks secret: whsec_ followed by base64 of at least ${MIN_SECRET_BYTES} random bytes (whsec_ and the output of openssl rand -base64 32)`,
    abort: true,
  })
  .refine(
    (value) => Buffer.from(value.slice('whsec_'.length), 'base64').length >= MIN_SECRET_BYTES,
    `too short: whsec_ followed by at least ${MIN_SECRET_BYTES} random bytes in base64`,
  );

export const webhookDestinationSchema = z.strictObject({
  id: z.string().min(1),
  /** `webhook` (the default): the signed JSON event of DESIGN §8. CRM kinds: see crmDestinationSchema. */
  kind: z.literal('webhook').default('webhook'),
  url: httpUrlSchema,
  secret: webhookSecretSchema,
  /**
   * The secret being rotated out: while it is set every request carries two signatures (new and
   * old, the Standard Webhooks list), so receivers can move to the new secret when they are
   * ready instead of at the moment the bridge does. Empty (an unset `${VAR:-}`) is absent.
   */
  previousSecret: z.preprocess(emptyToUndefined, webhookSecretSchema.optional()),
  events: z
    .array(outboundEventTypeSchema)
    .min(1)
    .default([...outboundEventTypes]),
  /** Delay before each attempt: the first entry before the first attempt, and so on (jittered ±10%). */
  retrySchedule: z
    .array(deliveryWaitSchema)
    .min(1)
    .default(
      ['0s', '5s', '5m', '30m', '2h', '5h', '10h', '14h', '20h', '24h'].map((d) => durationSchema.parse(d)),
    ),
  timeoutMs: intLike(
    z.number().int().positive().max(MAX_DELIVERY_WAIT_MS, 'at most 24d (Node timers hold no longer a wait)'),
  ).default(10_000),
  concurrency: intLike(z.number().int().positive().max(100)).default(4),
  /** Extra request headers (e.g. an Authorization header the CRM wants besides the signature). */
  headers: extraHeadersSchema,
  /** After `failureThreshold` failed attempts in a row, stop sending to this destination for `cooldown`. */
  circuitBreaker: z
    .strictObject({
      failureThreshold: intLike(z.number().int().positive()).default(5),
      // 0s "opened" the breaker (said at warn) and let the next attempt through at once: a
      // failing receiver was never given a rest. (Tests run it at 100ms; nothing needs less.)
      cooldown: deliveryWaitSchema
        .pipe(
          z.number().min(100, 'at least 100ms (a shorter cooldown holds nothing off a failing destination)'),
        )
        .default(30_000),
    })
    .prefault({}),
  /**
   * How long a failed delivery is kept for replay before its record (body included) is deleted;
   * 0 keeps it for good. A receiver that refuses everything otherwise grows the store without
   * bound. A store time, not a Node timer: no 24d cap.
   */
  failedRetention: retentionSchema('deletes a failed delivery before anyone can replay it').default(0),
  filter: z
    .strictObject({
      channels: z.array(channelIdSchema).optional(),
      vendors: z.array(z.string()).optional(),
    })
    .default({}),
  map: z
    .strictObject({
      pipeline: z
        .strictObject({
          byChannel: z.record(z.string(), z.string()).default({}),
          default: z.string().optional(),
        })
        .optional(),
      /** Template for routing.source: {vendor}, {vendorName}, {channel}, {channelName}. */
      source: z.string().optional(),
      /** When the agent is not in `agents` (or has no crmUserId): an agent e-mail from `agents`, or a CRM user id. */
      responsibleFallback: z.string().optional(),
      /** Tasks made from offline messages are due this long after the message. */
      taskDueIn: durationSchema.default(3_600_000),
    })
    .prefault({}),
});
export type WebhookDestinationConfig = z.infer<typeof webhookDestinationSchema>;

/** A CRM id from YAML: 7001 or "7001" (Bitrix24 stage ids are strings like C9:NEW). */
const crmIdSchema = z.union([z.number().int().nonnegative(), z.string().min(1)]).transform(String);
const crmIdMapSchema = (nullable: boolean) =>
  z
    .strictObject({
      byChannel: z.record(channelIdSchema, nullable ? crmIdSchema.nullable() : crmIdSchema).default({}),
      default: (nullable ? crmIdSchema.nullable() : crmIdSchema).optional(),
    })
    .prefault({});

/**
 * DESIGN §10: a destination whose `kind` names a CRM connector (adapters/index.ts `connectors`)
 * writes into the CRM instead of POSTing the event. The `crm` block is the same for every CRM;
 * what the connector needs to reach its CRM (baseUrl + token, webhookUrl, ...) is checked by the
 * connector's own schema when the config is loaded (src/config/load.ts), as channel settings are.
 */
export const crmSettingsSchema = z.strictObject({
  /** amoCRM pipeline_id / Bitrix24 CATEGORY_ID, per channel. */
  pipeline: crmIdMapSchema(false),
  /** amoCRM status_id / Bitrix24 STAGE_ID, per channel; null (or absent) = the pipeline's first stage. */
  stage: crmIdMapSchema(true),
  /** The CRM user when no CRM user has the agent's e-mail and the agent has no crmUserId. */
  responsible: z.strictObject({ default: crmIdSchema.optional() }).prefault({}),
  /** {vendor}, {vendorName}, {channel}, {channelName}. */
  source: z.string().min(1).default('{vendorName}: {channelName}'),
  deals: z.enum(['one-open', 'per-conversation', 'none']).default('one-open'),
  /** {vendorName}, {channelName}, {chatId}, {contactName}. */
  dealName: z.string().min(1).default('{vendorName} #{chatId} - {contactName}'),
  offlineTask: z
    .strictObject({
      /** {text}, {contactName}, {vendorName}, {channelName}. */
      text: z.string().min(1).default('Offline message: {text}'),
      dueIn: durationSchema.default(3_600_000),
    })
    .prefault({}),
  transcriptNote: boolLike.default(true),
  /** Requests per second to the CRM, shared by every instance; defaults to the connector's limit. */
  rateLimit: intLike(z.number().int().positive().max(100)).optional(),
});
export type CrmSettings = z.infer<typeof crmSettingsSchema>;

const crmCommon = webhookDestinationSchema.pick({
  id: true,
  events: true,
  retrySchedule: true,
  timeoutMs: true,
  concurrency: true,
  circuitBreaker: true,
  failedRetention: true,
  filter: true,
});

export const crmDestinationSchema = z
  .looseObject({
    ...crmCommon.shape,
    kind: z.string().regex(/^[a-z0-9-]+$/, 'webhook, amocrm or bitrix24'),
    crm: crmSettingsSchema.prefault({}),
  })
  .transform((destination) => ({
    ...destination,
    // Routing (src/delivery/routing.ts) computes source, task due time, note text and the
    // agents[].crmUserId fallback for every destination; for a CRM they come from `crm`.
    map: {
      source: destination.crm.source,
      taskDueIn: destination.crm.offlineTask.dueIn,
      ...(destination.crm.responsible.default !== undefined
        ? { responsibleFallback: destination.crm.responsible.default }
        : {}),
    } as WebhookDestinationConfig['map'],
  }));
/** The webhook-only keys are absent (typed so code reading a DestinationConfig must narrow). */
export type CrmDestinationConfig = z.infer<typeof crmDestinationSchema> & {
  url?: undefined;
  secret?: undefined;
  previousSecret?: undefined;
  headers?: undefined;
};

/** `kind` picks the schema (absent = webhook), so problems are reported against the right one. */
export const destinationSchema = z.unknown().transform((value, ctx) => {
  const kind =
    value && typeof value === 'object' && 'kind' in value ? (value as { kind: unknown }).kind : undefined;
  const schema = kind === undefined || kind === 'webhook' ? webhookDestinationSchema : crmDestinationSchema;
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data as DestinationConfig;
  for (const issue of parsed.error.issues) ctx.addIssue({ ...issue } as never);
  return z.NEVER;
});
export type DestinationConfig = WebhookDestinationConfig | CrmDestinationConfig;

export function isCrmDestination(destination: DestinationConfig): destination is CrmDestinationConfig {
  return destination.kind !== 'webhook';
}

/** `host:port` of a Sentinel or Cluster node (IPv6 in brackets: `[::1]:6379`). */
const redisNodeSchema = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/, 'host:port, like 10.0.0.1:6379');

const optionalSecret = z.preprocess(emptyToUndefined, z.string().optional());

/**
 * What ioredis would do wrong with this URL, if anything. It reads the database from the path
 * (else `?db=`) and, when SELECT fails, says so only in an error event and goes on in database 0:
 * `/99` silently wrote into database 0 and `/abc` (SELECT NaN) crashed the process with a stack
 * trace once it was listening. A URL it cannot parse throws from its constructor.
 */
function redisUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a valid URL (percent-encode special characters in the password, e.g. %23 for #)';
  }
  const fromPath = parsed.pathname.replace(/^\//, '');
  const db = fromPath !== '' ? fromPath : (parsed.searchParams.get('db') ?? '');
  if (db !== '' && !(/^\d{1,2}$/.test(db) && Number(db) <= 15))
    return `the database must be a number 0-15, like redis://host:6379/0 (got "${db}")`;
  return undefined;
}

/**
 * Where the store lives (DESIGN §3, §12): exactly one of `redis` (one server, a URL), `sentinel`
 * (a primary watched by Redis Sentinel, failed over automatically) or `cluster` (Redis Cluster);
 * none of them means the in-memory store.
 */
export const storeSchema = z
  .strictObject({
    redis: z.preprocess(
      emptyToUndefined,
      z
        .string()
        // Said alone (abort): the URL checks below read `localhost:6379` as the scheme
        // `localhost:` with the database "6379", a second problem nobody had written.
        // What was written is not quoted: the URL may hold the password.
        .regex(/^rediss?:\/\//, {
          error: 'a redis:// or rediss:// URL, like redis://127.0.0.1:6379/0 (it starts with neither)',
          abort: true,
        })
        // ioredis reads one host from a URL: "redis://a:6379,b:6379" would quietly use a broken
        // host. Say where a list of nodes belongs instead.
        .refine((url) => !/^rediss?:\/\/[^/]*,/.test(url), {
          message: 'one server only; for several nodes use store.cluster.nodes or store.sentinel.nodes',
        })
        .superRefine((url, ctx) => {
          const problem = redisUrlProblem(url);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .optional(),
    ),
    sentinel: z
      .strictObject({
        /** The master group name Sentinel watches (`sentinel monitor <name> ...`). */
        name: z.string().min(1),
        nodes: z.array(redisNodeSchema).min(1, 'at least one Sentinel, like 10.0.0.1:26379'),
        username: optionalSecret,
        password: optionalSecret,
        sentinelUsername: optionalSecret,
        sentinelPassword: optionalSecret,
        db: intLike(z.number().int().min(0).max(15)).default(0),
        /** TLS to the data servers and, unless `sentinelTls` says otherwise, to the Sentinels. */
        tls: boolLike.default(false),
        /**
         * TLS to the Sentinels; absent: the same as `tls`. A Sentinel group in front of TLS data
         * servers usually serves TLS itself (`tls-port`); `false` is for one that listens in plain text.
         */
        sentinelTls: boolLike.optional(),
      })
      .optional(),
    cluster: z
      .strictObject({
        nodes: z.array(redisNodeSchema).min(1, 'at least one Cluster node, like 10.0.0.1:6379'),
        username: optionalSecret,
        password: optionalSecret,
        tls: boolLike.default(false),
      })
      .optional(),
    /**
     * Prepended to every key. On a Cluster it is used as a hash tag (`chatbridge` -> `{chatbridge}`)
     * unless it already has one, so that one bridge's keys share a hash slot.
     */
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_.:{}-]+$/, 'only A-Z, a-z, 0-9 and _ . : - { }')
      .refine((prefix) => /^[^{}]*(\{[^{}]+\}[^{}]*)?$/.test(prefix), {
        message: 'at most one hash tag, like {tenant-a} or {tenant-a}:bridge',
      })
      .default('chatbridge'),
    /**
     * With `replicas` > 0 a vendor is answered only after its webhook's writes reached that many
     * replicas (Redis WAIT), so a failover cannot lose what was acknowledged. If they do not
     * within `timeoutMs`, the vendor gets 503 and retries.
     */
    durability: z
      .strictObject({
        replicas: intLike(z.number().int().min(0).max(16)).default(0),
        timeoutMs: intLike(z.number().int().positive().max(60_000)).default(500),
      })
      .default({ replicas: 0, timeoutMs: 500 }),
  })
  .superRefine((store, ctx) => {
    const forms = (['redis', 'sentinel', 'cluster'] as const).filter((form) => store[form] !== undefined);
    for (const form of forms.slice(1)) {
      ctx.addIssue({
        code: 'custom',
        path: [form],
        message: `store.${forms[0]} is set too: use exactly one of store.redis, store.sentinel, store.cluster`,
      });
    }
    if (forms.length === 0 && store.durability.replicas > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['durability', 'replicas'],
        message:
          'the in-memory store has no replicas: set store.redis, store.sentinel or store.cluster, or use 0',
      });
    }
  })
  .default({ keyPrefix: 'chatbridge', durability: { replicas: 0, timeoutMs: 500 } });
export type StoreConfig = z.infer<typeof storeSchema>;

/** One entry of server.trustedProxies: an IP address or a CIDR range, each problem named. */
const trustedProxySchema = z.string().superRefine((entry, ctx) => {
  const range = parseAddressRange(entry);
  if ('problem' in range) ctx.addIssue({ code: 'custom', message: range.problem });
});

export const configSchema = z.strictObject({
  server: z
    .strictObject({
      port: intLike(z.number().int().min(0).max(65_535)).default(3000),
      host: z.string().default('0.0.0.0'),
      publicUrl: z.preprocess(emptyToUndefined, httpUrlSchema.optional()),
      bodyLimitBytes: intLike(z.number().int().positive()).default(1024 * 1024),
      shutdownTimeoutMs: intLike(z.number().int().positive()).default(10_000),
      /**
       * Reverse proxies in front of the bridge that append the client's address to
       * X-Forwarded-For. The client address (per-address rate limits) is found by walking the
       * header from the right, at most this many entries, each taken only while the address in
       * hand is a trusted proxy's (trustedProxies; src/http/forwarded.ts forwardedClient).
       * Entries further left are whatever the client sent, never trusted. 0: the headers are
       * ignored (clients connect directly); 1 (default): one proxy (nginx, an ingress, a load
       * balancer).
       */
      proxyHops: intLike(z.number().int().min(0).max(10)).default(1),
      /**
       * The addresses (and CIDR ranges) the proxies connect from: X-Forwarded-For, -Proto and
       * -Host count only on a connection from one of them. By default loopback and the private,
       * link-local and unique-local ranges, so a client on the internet reaching the bridge
       * directly cannot choose its address; a proxy on a public address must be listed.
       */
      trustedProxies: z.array(trustedProxySchema).default([...DEFAULT_TRUSTED_PROXIES]),
    })
    .default({
      port: 3000,
      host: '0.0.0.0',
      bodyLimitBytes: 1024 * 1024,
      shutdownTimeoutMs: 10_000,
      proxyHops: 1,
      trustedProxies: [...DEFAULT_TRUSTED_PROXIES],
    }),
  store: storeSchema,
  admin: z.strictObject({
    token: z.string().min(16, 'at least 16 characters'),
  }),
  secrets: z
    .strictObject({
      masterKey: z.preprocess(
        emptyToUndefined,
        z
          .string()
          .refine(
            (value) => Buffer.from(value, 'base64').length === 32,
            `32 bytes, base64-encoded; ${MAKE_MASTER_KEY}`,
          )
          .optional(),
      ),
    })
    .default({}),
  identity: z
    .strictObject({
      mergeOn: z.array(identifierKindSchema).default(['person', 'email', 'phone']),
      /**
       * Kinds that may merge contacts on a visitor-typed value (issue 10 item 5). The default keeps
       * the vendors' documented behaviour (a typed e-mail merges); `[person]` makes typed e-mails
       * and phones search-only, so a visitor who types someone else's e-mail is not merged with her.
       */
      mergeOnVisitorTyped: z.array(identifierKindSchema).default(['person', 'email', 'phone']),
      blocklist: z.array(z.string()).default(['', 'null', 'undefined', '0', '-1', 'anonymous']),
      defaultCountry: z
        .string()
        // Not two capitals (`Russia`, `ru`): what the file holds and, when it names a country,
        // that country's code, as other config problems quote the value and suggest one.
        .superRefine((code, ctx) => {
          if (/^[A-Z]{2}$/.test(code)) return;
          const meant = countryMeant(code);
          ctx.addIssue({
            code: 'custom',
            message: `an ISO 3166-1 alpha-2 country code like RU, got the text ${JSON.stringify(
              code.length > 40 ? `${code.slice(0, 40)}…` : code,
            )}${meant === undefined ? '' : ` (did you mean "${meant}"?)`}`,
          });
        })
        // Two capitals are not yet a country: with one the phone library does not know (UK for
        // GB is the usual slip) every number typed without its +code normalises to nothing and
        // is left off the contact, with no word said.
        .superRefine((code, ctx) => {
          if (/^[A-Z]{2}$/.test(code) && !isSupportedCountry(code as CountryCode, metadata))
            ctx.addIssue({
              code: 'custom',
              message: `"${code}" is not a country code the phone library knows: ${
                code === 'UK' ? 'the United Kingdom is GB' : 'an ISO 3166-1 alpha-2 code like RU, GB or DE'
              }`,
            });
        })
        .default('RU'),
      /** A merge that would make one contact out of more records than this is refused. */
      maxMergeSize: intLike(z.number().int().min(2)).default(10),
      /** How long a delivery's idempotency key is remembered. */
      dedupeTtlSeconds: intLike(z.number().int().positive()).default(7 * 24 * 3600),
      /**
       * How long the key of a snapshot (an event that restates a state: a JivoChat client card, a
       * Chatvisor conversation's status or customer profile, a LiveTex dialog's operators) is remembered, at most
       * dedupeTtlSeconds. Within it the same state again is a vendor's redelivery (Jivo's retries
       * span about three minutes); after it, a return to that state, recorded.
       */
      snapshotDedupeSeconds: intLike(z.number().int().positive()).default(15 * 60),
    })
    .default({
      mergeOn: ['person', 'email', 'phone'],
      mergeOnVisitorTyped: ['person', 'email', 'phone'],
      blocklist: ['', 'null', 'undefined', '0', '-1', 'anonymous'],
      defaultCountry: 'RU',
      maxMergeSize: 10,
      dedupeTtlSeconds: 7 * 24 * 3600,
      snapshotDedupeSeconds: 15 * 60,
    }),
  /**
   * Prometheus metrics are not on the public port (issue 10 item 2: counters by outcome tell an
   * outsider whether a lookup found someone). `port` starts a metrics-only listener on `host`
   * (loopback unless you say otherwise); `token` also serves /metrics on the main port, behind
   * `Authorization: Bearer <token>`. With neither, /metrics is not served.
   */
  metrics: z
    .strictObject({
      port: z.preprocess(emptyToUndefined, intLike(z.number().int().min(0).max(65_535)).optional()),
      host: z.string().default('127.0.0.1'),
      /**
       * Names the metrics listener answers for when bound to loopback, besides IP addresses,
       * localhost and *.localhost: any other Host is refused (DNS rebinding, src/http/host-check.ts).
       */
      allowedHosts: z.array(z.string().min(1)).default([]),
      token: z.preprocess(emptyToUndefined, z.string().min(16, 'at least 16 characters').optional()),
      /**
       * Resolution of the event-loop delay monitor behind nodejs_eventloop_lag_* (prom-client's
       * default metrics, perf_hooks.monitorEventLoopDelay). At 10 ms an idle process wakes 100
       * times a second for it (8.5–9.8 ms of CPU per second, bench/HISTORY.md); coarser costs
       * less and misses stalls shorter than itself.
       */
      eventLoopResolutionMs: intLike(z.number().int().min(1).max(1000)).default(10),
    })
    .prefault({}),
  /**
   * Vendor intake (issue 12). `ackAfterAppend`: events whose vendor answer carries no contact
   * data and whose route reads nothing before decode (JivoChat's {"result":"ok"} events) are
   * answered after one durable append and recorded by a worker a moment later (README "How it
   * works"); off, every event is recorded before its answer. LiveTex dialog webhooks always are:
   * they read and write the dialog memory before decoding. `maxBacklog`: past this many waiting items, events are
   * recorded inline again (vendors are slowed down rather than the store filled).
   */
  intake: z
    .strictObject({
      ackAfterAppend: boolLike.default(false),
      maxBacklog: intLike(z.number().int().positive()).default(10_000),
    })
    .prefault({}),
  /** Abuse limits (issue 10 items 4, 16); every default is in README "Security". */
  limits: z
    .strictObject({
      rate: z
        .strictObject({
          /**
           * Failed admin authentications per client address per window; then 429 until it ends.
           * On Redis counted across every instance sharing the keyPrefix (src/http/rate-limit.ts).
           */
          adminAuthFailuresPerAddress: intLike(z.number().int().positive()).default(10),
          /**
           * Failed admin authentications per window from all addresses together; past it, only
           * addresses that presented the right token in the last 24 h may try. On Redis the
           * bridge's, across instances. Its old name, adminAuthFailuresPerInstance (from when it
           * was counted per instance), is still taken with a warning (RENAMED_KEYS in load.ts).
           */
          adminAuthFailuresCeiling: intLike(z.number().int().positive()).default(100),
          /**
           * Requests to public channel routes (the LiveTex lookup) per client address and channel;
           * and per address across every channel id, made-up ones included, this times the number
           * of lookup channels (src/http/app.ts lookupsByAddressAll).
           */
          lookupsPerAddress: intLike(z.number().int().positive()).default(600),
          /**
           * Requests to public channel routes per channel, all addresses together: only those
           * that authenticate (a LiveTex lookup sealed under one of the channel's keys) and are
           * no replay (a replayed jti gives back what it took).
           */
          lookupsPerChannel: intLike(z.number().int().positive()).default(6000),
          /**
           * Wrong webhook URL tokens (or unknown channels) per client address per window, per
           * instance (README "Security" says why it is not shared through the store); then
           * that address's webhooks get the one 404, right token included, until it ends, unless
           * it presented a right token in the last 24 h (src/http/rate-limit.ts).
           */
          webhookTokenFailuresPerAddress: intLike(z.number().int().positive()).default(30),
          // Each count lives one window: 0s (or a few ms) counted nothing, so it limited nothing,
          // and the store refuses a window that is not a positive number of milliseconds.
          window: durationSchema
            .pipe(z.number().min(1000, 'at least 1s (a shorter window counts nothing, so it limits nothing)'))
            .default(60_000),
          /**
           * An IPv6 client counts, in every limit above, by this many leading bits of its address
           * (src/net/address.ts limitKey): one subscriber usually holds a whole /64 and can
           * pick any address in it. 128: each address apart (the old behaviour).
           */
          ipv6PrefixLength: intLike(z.number().int().min(32).max(128)).default(DEFAULT_IPV6_PREFIX_LENGTH),
        })
        .prefault({}),
      /** Longest name, label or other text field kept from a vendor (longer ones are cut, marked with …). */
      fieldLength: intLike(z.number().int().min(16)).default(2000),
      /**
       * Most identifiers of one kind (e-mails, phones, person ids, …) one observation attaches to a
       * contact; further ones are dropped and counted (a payload listing 3,000 e-mails names nobody).
       */
      identifiersPerKind: intLike(z.number().int().positive()).default(20),
      /** Most labels one observation adds; further ones are dropped and counted. */
      labelsPerObservation: intLike(z.number().int().positive()).default(100),
      /**
       * Most messages one transcript keeps (`data.messages` of a timeline entry or an outbound
       * event): the first half and the last half, with a line saying how many were left out.
       */
      messagesPerTranscript: intLike(z.number().int().min(2)).default(500),
      /** Most attributes one contact record keeps; further new names are dropped and counted. */
      attributesPerContact: intLike(z.number().int().positive()).default(200),
      /** Longest attribute value (characters); longer ones are cut and marked with …. */
      attributeValueLength: intLike(z.number().int().min(16)).default(4000),
      /** Largest timeline entry (bytes of JSON); a larger one keeps its summary, its data is replaced by a truncation marker. */
      timelineEntryBytes: intLike(z.number().int().min(1024)).default(64 * 1024),
      /** Largest stored contact record (bytes); an observation that would exceed it is refused with 413 contact_too_large. */
      contactRecordBytes: intLike(z.number().int().min(4096)).default(256 * 1024),
      /** A record's timeline is dropped after this long without a new entry; 0 keeps it forever. */
      timelineRetention: retentionSchema('drops a timeline before anyone reads it').default(0),
      /** Upper bound on the payload journal's size in bytes (oldest entries go first). */
      journalBytes: intLike(
        z
          .number()
          .int()
          .min(1024 * 1024),
      ).default(64 * 1024 * 1024),
      /** Largest payload body kept per journal entry (bytes); longer bodies are cut and marked truncated. */
      journalEntryBytes: intLike(z.number().int().min(1024)).default(64 * 1024),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .default({ level: 'info' }),
  console: z
    .strictObject({
      /**
       * How long an agent link (`{consoleUrl}` in reply.crmLink) stays valid. 0s passed and made
       * every link expire as it was made: the agent's button opened only a refusal.
       */
      linkTtl: durationSchema
        .pipe(z.number().min(300_000, 'at least 5m (a shorter link has expired before an agent opens it)'))
        .default(12 * 3_600_000),
    })
    .default({ linkTtl: 12 * 3_600_000 }),
  agents: z.array(agentSchema).default([]),
  channels: z.array(baseChannelSchema).default([]),
  attributeSources: z.array(attributeSourceSchema).default([]),
  destinations: z.array(destinationSchema).default([]),
});

export type Config = z.infer<typeof configSchema>;
