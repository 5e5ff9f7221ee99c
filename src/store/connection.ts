import { connect as connectPlain, isIP, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { StoreConfig } from '../config/schema.js';

/**
 * The one client factory for everything that talks to Redis: the store, the BullMQ queues and
 * the locks (DESIGN §12). It reads the three store forms of the config — one server
 * (`store.redis`), Sentinel (`store.sentinel`) or Cluster (`store.cluster`) — and builds the
 * matching ioredis client, so every part of the bridge follows a failover the same way.
 */
export type RedisTarget =
  | { kind: 'redis'; url: string }
  | ({ kind: 'sentinel' } & NonNullable<StoreConfig['sentinel']>)
  | ({ kind: 'cluster' } & NonNullable<StoreConfig['cluster']>);

export type RedisClient = Redis | Cluster;

/** What the client is for: each use needs different failure behaviour. */
export type ClientRole =
  /** The store: fail fast while Redis is away (the HTTP layer answers 503, vendors retry). */
  | 'store'
  /** BullMQ producer side: fail a command after a few seconds so a drain never hangs. */
  | 'queue'
  /** BullMQ workers: block on Redis and wait for it forever (BullMQ requires maxRetriesPerRequest: null). */
  | 'worker';

export interface ClientOptions {
  role: ClientRole;
  /** ioredis keyPrefix (store only: BullMQ refuses clients with one and takes its own prefix). */
  keyPrefix?: string;
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
  /** Where to say that a client ioredis gave up on was started again (see keepConnecting). */
  logger?: Logger;
}

/** The configured Redis, or undefined for the in-memory store. */
export function redisTargetOf(store: StoreConfig): RedisTarget | undefined {
  if (store.redis !== undefined) return { kind: 'redis', url: store.redis };
  if (store.sentinel !== undefined) return { kind: 'sentinel', ...store.sentinel };
  if (store.cluster !== undefined) return { kind: 'cluster', ...store.cluster };
  return undefined;
}

/**
 * The prefix actually used for keys. On a Cluster every multi-key operation (our Lua lock, our
 * batch script, BullMQ's scripts) must stay in one hash slot, so the prefix becomes a hash tag:
 * `chatbridge` -> `{chatbridge}`. A prefix that already has a tag (`{tenant-a}:bridge`) is kept.
 * One bridge then lives on one primary, and bridges with other prefixes spread over the others.
 */
export function effectiveKeyPrefix(store: StoreConfig): string {
  if (store.cluster === undefined || store.keyPrefix.includes('{')) return store.keyPrefix;
  return `{${store.keyPrefix}}`;
}

/**
 * The URL for logs and error messages: never the password. ioredis also reads options from the
 * query (`?password=…`, `?sentinelPassword=…`), so every query value is masked, as in redactUrl.
 */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    const names = [...new Set(parsed.searchParams.keys())];
    parsed.search = names.map((name) => `${encodeURIComponent(name)}=***`).join('&');
    parsed.hash = '';
    return parsed.toString();
  } catch {
    return '(unparseable Redis URL)';
  }
}

/** A one-line description of the store for logs and `config check`; never includes a password. */
export function describeStore(store: StoreConfig): string {
  const target = redisTargetOf(store);
  if (target === undefined) return 'in-memory (nothing survives a restart)';
  const prefix = effectiveKeyPrefix(store);
  const durability =
    store.durability.replicas > 0
      ? `vendors answered after WAIT ${store.durability.replicas} (timeout ${store.durability.timeoutMs} ms)`
      : 'vendors answered without waiting for replicas';
  switch (target.kind) {
    case 'redis':
      return `redis ${redactRedisUrl(target.url)}, keyPrefix ${prefix}, ${durability}`;
    case 'sentinel':
      return (
        `sentinel master '${target.name}' via ${target.nodes.length} sentinel${target.nodes.length === 1 ? '' : 's'} ` +
        `(${target.nodes.join(', ')})${target.password ? ', with password' : ''}${sentinelTlsDescription(target)}, ` +
        `keyPrefix ${prefix}, ${durability}`
      );
    case 'cluster':
      return (
        `cluster seeded from ${target.nodes.length} node${target.nodes.length === 1 ? '' : 's'} ` +
        `(${target.nodes.join(', ')})${target.password ? ', with password' : ''}${target.tls ? ', TLS' : ''}, keyPrefix ${prefix} ` +
        `(one hash slot: this bridge lives on one primary), ${durability}`
      );
  }
}

function sentinelTlsDescription(sentinel: { tls: boolean; sentinelTls?: boolean | undefined }): string {
  const toSentinels = sentinelTlsOf(sentinel);
  if (sentinel.tls && toSentinels) return ', TLS to the Sentinels and the data servers';
  if (sentinel.tls) return ', TLS to the data servers (Sentinels in plain text)';
  if (toSentinels) return ', TLS to the Sentinels (data servers in plain text)';
  return '';
}

/** Reconnect delay: exponential from 50 ms, capped at 2 s, with jitter so instances do not stampede. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(50 * 2 ** Math.min(attempt - 1, 10), 2000);
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

/** Whether the Sentinels themselves are spoken to over TLS: `sentinelTls`, else the same as `tls`. */
export function sentinelTlsOf(sentinel: { tls: boolean; sentinelTls?: boolean | undefined }): boolean {
  return sentinel.sentinelTls ?? sentinel.tls;
}

function parseNode(node: string): { host: string; port: number } {
  const at = node.lastIndexOf(':');
  return { host: node.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(node.slice(at + 1)) };
}

/** After a failover the old primary answers READONLY: reconnect (Sentinel then finds the new one). */
const reconnectOnError = (error: Error): boolean => /^(READONLY|UNBLOCKED)/.test(error.message);

function roleOptions(options: ClientOptions): RedisOptions {
  const base: RedisOptions = {
    connectTimeout: options.connectTimeoutMs ?? 5000,
    // Never give up: every client must come back by itself when Redis does.
    retryStrategy: reconnectDelay,
    reconnectOnError,
  };
  switch (options.role) {
    case 'store':
      return {
        ...base,
        lazyConnect: true,
        // Fail fast while disconnected instead of queueing commands (and webhook requests) forever.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: options.commandTimeoutMs ?? 2000,
        // No auto-pipelining: it saved Redis about a third of its CPU per webhook but none of the
        // bridge's, and with it on, request data survived young-generation collections (a
        // timeline read at one connection: scavenges of 8–10 ms promoting ~2 MB each instead of
        // ~1 ms promoting nothing; page p99 9–12 ms instead of 2–4). Found by bisecting the
        // bench's GC trace; the bridge's CPU per request was within noise either way.
        enableAutoPipelining: false,
      };
    case 'queue':
      return { ...base, maxRetriesPerRequest: 2, commandTimeout: options.commandTimeoutMs ?? 5000 };
    case 'worker':
      return { ...base, maxRetriesPerRequest: null };
  }
}

/**
 * Why a Sentinel or a Cluster node closes the connection, as far as one look at it tells. ioredis
 * keeps the errors of its Sentinel and Cluster node connections to itself and reports only
 * "Connection is closed." (under "Failed to refresh slots cache." on a Cluster): a certificate
 * the bridge does not trust, TLS spoken to a plain-text port and plain text to a TLS port all
 * read the same, and an operator had nothing to go on. One connection to the target's first node
 * made as ioredis makes it (TLS or not), and a PING: a sentence saying what went wrong, or
 * undefined when the node answered (or did not within `timeoutMs`: nothing to add then).
 */
export function probeNode(
  target: Extract<RedisTarget, { kind: 'sentinel' | 'cluster' }>,
  timeoutMs = 2000,
): Promise<string | undefined> {
  const node = target.nodes[0]!;
  const tls = target.kind === 'sentinel' ? sentinelTlsOf(target) : target.tls;
  const what = target.kind === 'sentinel' ? `Sentinel ${node}` : `Cluster node ${node}`;
  const { host, port } = parseNode(node);
  return new Promise((resolve) => {
    let socket: Socket;
    let settled = false;
    const done = (reason: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(reason);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    const ping = () => socket.write('PING\r\n');
    if (tls) {
      socket = connectTls({ host, port, ...(isIP(host) ? {} : { servername: host }) }, ping);
    } else {
      socket = connectPlain({ host, port }, ping);
    }
    socket.once('data', () => done(undefined));
    const plainRefused = () =>
      `${what} closed the connection without answering a plain-text PING; ` +
      `does it serve TLS only on this port? (${target.kind}.tls: true)`;
    socket.once('error', (error: NodeJS.ErrnoException) => {
      // A TLS port resets a connection that speaks plain text to it.
      if (!tls) return done(error.code === 'ECONNRESET' ? plainRefused() : `${what}: ${error.message}`);
      if (/CERT|SIGNATURE|ISSUER|ALTNAME/.test(error.code ?? '')) {
        return done(
          `${what}: ${error.message} (a private CA: start the bridge with NODE_EXTRA_CA_CERTS=/path/to/ca.crt)`,
        );
      }
      done(
        `${what}: no TLS handshake (${error.message}); does it serve TLS on this port? ` +
          (target.kind === 'sentinel'
            ? '(sentinelTls: false asks Sentinels that listen in plain text)'
            : '(cluster.tls: false for nodes that serve plain text)'),
      );
    });
    socket.once('close', () =>
      done(tls ? `${what} closed the connection during the TLS handshake` : plainRefused()),
    );
  });
}

/** Clients closed on purpose (closeRedisClient): the only ones allowed to stay ended. */
const closedOnPurpose = new WeakSet<RedisClient>();

/**
 * Close a client from createRedisClient for good: QUIT, or drop the socket when Redis does not
 * answer within `waitMs` (a client with an offline queue would otherwise wait for a Redis that may
 * never come back, and hold up a shutdown). Every client must be closed through here — any other
 * end is treated as ioredis giving up, and the client is started again (keepConnecting).
 */
export async function closeRedisClient(client: RedisClient, waitMs = 2000): Promise<void> {
  closedOnPurpose.add(client);
  const quit = client.quit().then(
    () => true,
    () => false,
  );
  refuseLaterCommands(client);
  if (!(await settlesWithin(quit, waitMs))) client.disconnect();
  else if (!(await quit)) client.disconnect();
}

/** What a command on a client closed with closeRedisClient fails with. */
export const CLIENT_CLOSED_MESSAGE = 'the Redis client was closed (the bridge is stopping)';

/**
 * Every command after the QUIT fails at once with CLIENT_CLOSED_MESSAGE, not ioredis's
 * "Connection is closed.". BullMQ retries a connection error without any pause while its worker
 * is closing (Worker.retryIfFailed), and a closed client refuses synchronously: a delivery job
 * that ended after its connections were dropped (a SIGTERM while Redis hung) was reported again
 * and again in one microtask loop, so no timer or signal ran any more and the process spun at
 * full CPU until SIGKILL. Any other error ends BullMQ's retries; the store's callers get a 503 as
 * before (toStoreError).
 */
function refuseLaterCommands(client: RedisClient): void {
  const refuse = (command: { reject(error: Error): void; promise: Promise<unknown> }) => {
    command.reject(new Error(CLIENT_CLOSED_MESSAGE));
    return command.promise;
  };
  (client as unknown as { sendCommand: typeof refuse }).sendCommand = refuse;
}

/** Whether `work` settles within `ms` (it is not cancelled either way). */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The retry strategies above never give up, but ioredis can still end a client for good
 * (status `end`, every command then fails with "Connection is closed."). Seen in the Sentinel
 * failover test: after a kill -9 of the primary the client is reconnecting, asking the Sentinels,
 * when the `failoverDetector` of its *previous* connection receives `+switch-master` and calls
 * the connector's disconnect(); the reconnection in progress then rejects and ioredis sets the
 * status to `end` instead of retrying. The store answered 503 for good (and the BullMQ producer
 * and worker connections stopped delivery for good) until the process was restarted. So a client
 * that ends without closeRedisClient is connected again, with the same backoff as a reconnect.
 */
function keepConnecting(client: RedisClient, options: ClientOptions): RedisClient {
  let attempts = 0;
  client.on('ready', () => {
    attempts = 0;
  });
  client.on('end', () => {
    if (closedOnPurpose.has(client)) return;
    attempts += 1;
    options.logger?.warn(
      { role: options.role, attempt: attempts },
      'the Redis client gave up reconnecting (ioredis ended it); connecting it again',
    );
    const timer = setTimeout(() => {
      if (closedOnPurpose.has(client) || client.status !== 'end') return;
      // A failure here ends in 'end' again (this handler) or in ioredis's own reconnect loop.
      client.connect().catch(() => {});
    }, reconnectDelay(attempts));
    timer.unref();
  });
  return client;
}

/**
 * A new ioredis client for the configured Redis. Each call opens its own connection(s): the
 * store keeps one, BullMQ needs one for its producer and one per worker. Close it with
 * closeRedisClient; until then it keeps (re)connecting, whatever happens to Redis.
 */
export function createRedisClient(target: RedisTarget, options: ClientOptions): RedisClient {
  return keepConnecting(buildClient(target, options), options);
}

function buildClient(target: RedisTarget, options: ClientOptions): RedisClient {
  const common = roleOptions(options);
  const prefix = options.keyPrefix === undefined ? {} : { keyPrefix: `${options.keyPrefix}:` };
  switch (target.kind) {
    case 'redis':
      return new Redis(target.url, { ...common, ...prefix });
    case 'sentinel':
      return new Redis({
        ...common,
        ...prefix,
        name: target.name,
        sentinels: target.nodes.map(parseNode),
        role: 'master',
        db: target.db,
        ...(target.username === undefined ? {} : { username: target.username }),
        ...(target.password === undefined ? {} : { password: target.password }),
        ...(target.sentinelUsername === undefined ? {} : { sentinelUsername: target.sentinelUsername }),
        ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
        // ioredis has two switches: `tls` + `enableTLSForSentinelMode` for the data servers the
        // Sentinels name, and `sentinelTLS` for the Sentinels themselves. With only the first, the
        // bridge spoke plain text to a Sentinel group that serves TLS (tls-port, the usual set-up
        // next to TLS data servers), never got an answer and did not start.
        ...(target.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
        ...(sentinelTlsOf(target) ? { sentinelTLS: {} } : {}),
        // Subscribe to the Sentinels' +switch-master and reconnect at once, instead of writing to
        // the old primary until it notices (writes there after a failover would be lost).
        failoverDetector: true,
        // Keep asking the Sentinels while none of them answers (default gives up after a while).
        sentinelRetryStrategy: reconnectDelay,
      });
    case 'cluster': {
      const waitsOutMoves = options.role !== 'store';
      const clusterOptions: ClusterOptions = {
        ...prefix,
        lazyConnect: common.lazyConnect ?? false,
        enableOfflineQueue: common.enableOfflineQueue ?? true,
        clusterRetryStrategy: reconnectDelay,
        // MOVED/ASK/TRYAGAIN during resharding or failover. The store follows a few, then fails
        // (-> 503, the vendor retries). BullMQ's connections wait out a slot move (see
        // QUEUE_REDIRECTIONS), their redirections paced so that the budget is a time.
        maxRedirections: waitsOutMoves ? QUEUE_REDIRECTIONS : STORE_REDIRECTIONS,
        ...(waitsOutMoves ? { retryDelayOnMoved: REDIRECTION_DELAY_MS } : {}),
        retryDelayOnFailover: REDIRECTION_DELAY_MS,
        retryDelayOnClusterDown: REDIRECTION_DELAY_MS,
        retryDelayOnTryAgain: REDIRECTION_DELAY_MS,
        slotsRefreshTimeout: 2000,
        redisOptions: {
          connectTimeout: common.connectTimeout,
          maxRetriesPerRequest: common.maxRetriesPerRequest,
          ...(common.commandTimeout === undefined ? {} : { commandTimeout: common.commandTimeout }),
          reconnectOnError,
          ...(target.username === undefined ? {} : { username: target.username }),
          ...(target.password === undefined ? {} : { password: target.password }),
          ...(target.tls ? { tls: {} } : {}),
        },
      };
      return refreshSlotsWhileReady(new Cluster(target.nodes.map(parseNode), clusterOptions));
    }
  }
}

/** A store command follows this many redirections (MOVED, ASK, TRYAGAIN, CLUSTERDOWN), then fails: 503. */
const STORE_REDIRECTIONS = 16;
/** The pause before following a TRYAGAIN, CLUSTERDOWN or a closed connection (and, for BullMQ, a MOVED). */
const REDIRECTION_DELAY_MS = 100;
/**
 * How many redirections a BullMQ command follows: about a minute of them (each but an ASK waits
 * REDIRECTION_DELAY_MS). While a resharding moves the bridge's hash slot, keys go over to the new
 * primary a batch at a time, and until the last has gone every BullMQ script (moveToActive,
 * moveToFinished, moveToDelayed…: many keys, some of which never exist) is refused with TRYAGAIN
 * on both nodes. With the store's 16 they failed within a second or two: a job whose run had
 * ended could not be moved on (moveToCompleted, then moveToFailed, refused), stayed active with
 * a lock no one renewed, and held its destination's concurrency slot until BullMQ's stalled check
 * took it back, 30–60 s after the move (test/slow/cluster.reshard.test.ts). Waiting costs nothing
 * else here: the workers have no other work while their slot is split, and the producer's
 * commands keep their 5 s timeout.
 */
const QUEUE_REDIRECTIONS = 600;

/**
 * How often a Cluster client reads the slot map again by itself (CLUSTER SLOTS, on a connection
 * of its own). ioredis reads it again only when a command is redirected (MOVED) or a node's
 * connection closes. A primary that stops answering without closing its connections — a host
 * that lost power, a network partition, a frozen process — gives neither: every command for its
 * slots was sent to it and timed out, long after the Cluster had elected its replica, and the
 * bridge answered 503 (and delivered nothing) until the old primary came back, or for good
 * (test/slow/cluster.failover.test.ts, "a primary that hangs"). The new map drops a failed
 * node, and its connection with it, so what was waiting on it is sent to the new primary.
 */
export const SLOTS_REFRESH_MS = 5000;

/**
 * Not ioredis's own `slotsRefreshInterval`: its timer is not unref'd and schedules the next
 * round when a refresh ends, so a client closed while a refresh was under way (likely while
 * nodes time out) kept refreshing, and the process alive, for ever. This one runs while the
 * client is ready, never holds the process, and stops when the client ends. BullMQ makes its
 * workers' blocking connections with duplicate(): those get it too.
 */
function refreshSlotsWhileReady(cluster: Cluster): Cluster {
  let timer: NodeJS.Timeout | undefined;
  cluster.on('ready', () => {
    timer ??= setInterval(() => {
      if (cluster.status === 'ready') cluster.refreshSlotsCache();
    }, SLOTS_REFRESH_MS);
    timer.unref();
  });
  cluster.on('end', () => {
    clearInterval(timer);
    timer = undefined;
  });
  const duplicate = cluster.duplicate.bind(cluster);
  cluster.duplicate = (...args: Parameters<Cluster['duplicate']>) =>
    refreshSlotsWhileReady(duplicate(...args));
  return cluster;
}
