import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, type PrivateRedis, pingRaw, startPrivateRedis } from './redis.js';

/**
 * Real Redis topologies for the slow tier, on free loopback ports in private directories, built
 * from startPrivateRedis (so every process is killed when the test process exits):
 * - a Sentinel group: one primary, two replicas, three Sentinels (quorum 2);
 * - a Cluster of three primaries, without replicas or with one each, created with
 *   `redis-cli --cluster create`.
 */

const run = promisify(execFile);

const HOW_TO_GET_TOOLS =
  'Topology tests need redis-server, redis-sentinel and redis-cli (Debian: apt-get install redis-server redis-sentinel; ' +
  'macOS: brew install redis).';

function privateDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `chatbridge-${name}-`));
}

async function poll(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function withClient<T>(port: number, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

export interface SentinelTopology {
  name: string;
  /** `127.0.0.1:port` of each Sentinel, for store.sentinel.nodes. */
  sentinelNodes: string[];
  /** The three data servers (index 0 was the first primary). */
  servers: PrivateRedis[];
  sentinels: PrivateRedis[];
  /** The port of the current primary, as the Sentinels see it. */
  primaryPort(): Promise<number>;
  /** The data server that is the primary now. */
  primary(): Promise<PrivateRedis>;
  /** `SENTINEL FAILOVER <name>`, then wait until the Sentinels name a new primary. */
  failover(): Promise<number>;
  /** Wait until the Sentinels name a primary other than `oldPort`, and it accepts writes. */
  waitForNewPrimary(oldPort: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

/**
 * One primary and two replicas with `min-replicas-to-write 1` (a primary that lost its replicas
 * refuses writes rather than accepting what a failover would lose) and AOF persistence (a killed
 * server comes back with its data), watched by three Sentinels that fail over after 1 s.
 */
export async function startSentinelTopology(name = 'chatbridge-test'): Promise<SentinelTopology> {
  const dirs: string[] = [];
  const dataArgs = (dir: string) => [
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--min-replicas-to-write',
    '1',
    '--min-replicas-max-lag',
    '10',
    '--repl-diskless-sync',
    'yes',
    '--repl-diskless-sync-delay',
    '0',
  ];
  const servers: PrivateRedis[] = [];
  try {
    const firstDir = privateDir('sentinel-data');
    dirs.push(firstDir);
    servers.push(await startPrivateRedis({ args: dataArgs(firstDir) }));
    const primaryPort = servers[0]!.port;
    for (let i = 0; i < 2; i++) {
      const dir = privateDir('sentinel-data');
      dirs.push(dir);
      servers.push(
        await startPrivateRedis({
          args: [...dataArgs(dir), '--replicaof', '127.0.0.1', String(primaryPort)],
        }),
      );
    }
    await poll('both replicas in sync', 20_000, () =>
      withClient(primaryPort, async (client) => {
        const info = await client.info('replication');
        return (info.match(/state=online/g) ?? []).length === 2;
      }),
    );
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()));
    throw new Error(`${(error as Error).message}. ${HOW_TO_GET_TOOLS}`);
  }

  const sentinels: PrivateRedis[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = privateDir('sentinel');
    dirs.push(dir);
    const configFile = join(dir, 'sentinel.conf');
    writeFileSync(
      configFile,
      [
        `sentinel monitor ${name} 127.0.0.1 ${servers[0]!.port} 2`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    sentinels.push(await startPrivateRedis({ configFile, sentinel: true, args: ['--dir', dir] }));
  }

  const askSentinel = async (): Promise<number> => {
    for (const sentinel of sentinels) {
      try {
        const reply = await withClient(sentinel.port, (client) =>
          client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name),
        );
        if (Array.isArray(reply)) return Number(reply[1]);
      } catch {
        // that Sentinel is not answering; ask the next
      }
    }
    throw new Error('no Sentinel answered');
  };
  const writable = (port: number) =>
    withClient(port, async (client) => (await client.set('topology:probe', '1')) === 'OK');
  // The Sentinels must know the replicas and each other before a failover can be asked for.
  await poll('Sentinels to see the replicas and each other', 30_000, async () =>
    withClient(sentinels[0]!.port, async (client) => {
      const master = (await client.call('SENTINEL', 'MASTER', name)) as string[];
      const field = (key: string) => Number(master[master.indexOf(key) + 1]);
      return field('num-slaves') === 2 && field('num-other-sentinels') === 2;
    }),
  );

  const waitForNewPrimary = async (oldPort: number, timeoutMs = 30_000): Promise<number> => {
    let port = oldPort;
    await poll('a new primary', timeoutMs, async () => {
      port = await askSentinel();
      return port !== oldPort && (await writable(port));
    });
    return port;
  };

  return {
    name,
    sentinelNodes: sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`),
    servers,
    sentinels,
    primaryPort: askSentinel,
    async primary() {
      const port = await askSentinel();
      const server = servers.find((candidate) => candidate.port === port);
      if (!server) throw new Error(`primary on unknown port ${port}`);
      return server;
    },
    async failover() {
      const old = await askSentinel();
      await poll('SENTINEL FAILOVER to be accepted', 10_000, async () => {
        await withClient(sentinels[0]!.port, (client) => client.call('SENTINEL', 'FAILOVER', name));
        return true;
      });
      return waitForNewPrimary(old);
    },
    waitForNewPrimary,
    async stop() {
      await Promise.all([...sentinels, ...servers].map((process) => process.stop()));
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ClusterTopology {
  /** `127.0.0.1:port` of every node (primaries first, as created), for store.cluster.nodes. */
  nodes: string[];
  /** Every node: the first three were created as primaries, the rest as their replicas. */
  servers: PrivateRedis[];
  /** Which server (index into `servers`) is the primary serving the hash slot of `key` now. */
  ownerOf(key: string): Promise<number>;
  /** The servers (indexes) that replicate `primary` now, as it reports them. */
  replicasOf(primary: number): Promise<number[]>;
  /**
   * `CLUSTER FAILOVER` on a replica of the primary serving `key` (the graceful, lossless kind: the
   * primary stops its clients until the replica has caught up); resolves with the new owner once
   * every live node agrees on it and the cluster is `ok`.
   */
  failover(key: string): Promise<number>;
  /**
   * Wait until every live node names a primary other than `old` for `key`, the cluster is `ok` and
   * the new one is a primary (it may still refuse writes while it has no replica).
   */
  waitForNewOwner(key: string, old: number, timeoutMs?: number): Promise<number>;
  /**
   * Move the hash slot of `key`, with its keys, to the primary `to` (resharding as
   * `redis-cli --cluster reshard` does it: IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE); resolves
   * once every live node names `to` as its owner. While the keys move the slot is split between
   * the two nodes (commands get ASK or TRYAGAIN): `options` sets how many keys one MIGRATE moves
   * and what to await between two of them, so a test can keep its traffic running through that.
   */
  migrateSlot(key: string, to: number, options?: MigrateOptions): Promise<void>;
  /** `CONFIG SET name value` on one server. */
  configSet(server: number, name: string, value: string): Promise<void>;
  /** Wait until `server` is a replica whose link to its primary is up (after a restart it rejoins as one). */
  waitForReplica(server: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface MigrateOptions {
  /** Keys per MIGRATE (redis-cli's --cluster-pipeline; default 100). */
  keysPerBatch?: number;
  /** Full key names the first MIGRATE moves (a test's chosen split), instead of the first batch. */
  firstKeys?: string[];
  /** Awaited after every MIGRATE that left keys behind (the slot is IMPORTING/MIGRATING then). */
  betweenBatches?: () => Promise<void>;
}

export interface ClusterOptions {
  /** Replicas per primary: 0 (three nodes) or 1 (six nodes). Default 0. */
  replicas?: 0 | 1;
  /** cluster-node-timeout: how long a silent primary takes to be failed over. Default 2000. */
  nodeTimeoutMs?: number;
}

/**
 * Three primaries sharing the 16,384 slots, with no replicas or one each. With replicas every
 * node also has what README "Running highly available" asks of a data server: AOF persistence (a
 * killed node comes back with its data and its nodes.conf, and rejoins as a replica) and
 * `min-replicas-to-write 1` (a primary that lost its replica refuses writes); max-lag is 60 s
 * rather than the README's 10 so that a test that stops a replica on purpose has time to write.
 * `cluster-replica-validity-factor 0` lets a replica that lost its link for a while still take
 * over, as a restarted or stopped one must here.
 */
export async function startClusterTopology(options: ClusterOptions = {}): Promise<ClusterTopology> {
  const replicas = options.replicas ?? 0;
  const dirs: string[] = [];
  const servers: PrivateRedis[] = [];
  try {
    for (let i = 0; i < 3 * (1 + replicas); i++) {
      const dir = privateDir('cluster');
      dirs.push(dir);
      servers.push(
        await startPrivateRedis({
          args: [
            '--dir',
            dir,
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-node-timeout',
            String(options.nodeTimeoutMs ?? 2000),
            ...(replicas === 0
              ? []
              : [
                  '--appendonly',
                  'yes',
                  '--appendfsync',
                  'everysec',
                  '--min-replicas-to-write',
                  '1',
                  '--min-replicas-max-lag',
                  '60',
                  '--cluster-replica-validity-factor',
                  '0',
                  '--repl-diskless-sync',
                  'yes',
                  '--repl-diskless-sync-delay',
                  '0',
                ]),
          ],
        }),
      );
    }
    const nodes = servers.map((server) => `127.0.0.1:${server.port}`);
    // redis-cli makes the first three primaries and gives each one of the others (it warns that
    // a replica shares its primary's host: all of them are on 127.0.0.1 here).
    await run('redis-cli', [
      '--cluster',
      'create',
      ...nodes,
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ]);
    const indexOfPort = (port: number) => servers.findIndex((server) => server.port === port);

    /** Ask the live nodes in turn (any of them may be the one killed). */
    const askAny = async <T>(use: (client: Redis) => Promise<T>): Promise<T> => {
      let last: unknown;
      for (const server of servers) {
        try {
          return await withClient(server.port, use);
        } catch (error) {
          last = error;
        }
      }
      throw last;
    };
    const slotOf = (key: string) =>
      askAny(async (client) => Number(await client.call('CLUSTER', 'KEYSLOT', key)));
    /** The owner of `slot` as the node on `port` sees it, or -1 when it names none. */
    const ownerSeenBy = (port: number, slot: number) =>
      withClient(port, async (client) => {
        const shards = (await client.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
        const owner = shards.find(([from, to]) => slot >= from && slot <= to);
        return owner === undefined ? -1 : indexOfPort(owner[2][1]);
      });
    const liveNodes = async () => {
      const up: number[] = [];
      for (const [index, server] of servers.entries())
        if (await pingRaw('127.0.0.1', server.port, 300)) up.push(index);
      return up;
    };
    const clusterOk = (port: number) =>
      withClient(port, async (client) =>
        ((await client.call('CLUSTER', 'INFO')) as string).includes('cluster_state:ok'),
      );
    const replication = (index: number) =>
      withClient(servers[index]!.port, (client) => client.info('replication'));
    const replicasOf = async (primary: number) => {
      const info = await replication(primary);
      return [...info.matchAll(/slave\d+:ip=[^,]+,port=(\d+),state=online/g)].map((match) =>
        indexOfPort(Number(match[1])),
      );
    };

    await poll('cluster_state:ok on every node', 30_000, async () => {
      for (const server of servers) if (!(await clusterOk(server.port))) return false;
      return true;
    });
    if (replicas > 0) {
      await poll('every primary to have its replica online', 30_000, async () => {
        for (let primary = 0; primary < 3; primary++)
          if ((await replicasOf(primary)).length !== 1) return false;
        return true;
      });
    }

    const ownerOf = async (key: string) => {
      const slot = await slotOf(key);
      const [first] = await liveNodes();
      if (first === undefined) throw new Error('no node of the cluster is up');
      return ownerSeenBy(servers[first]!.port, slot);
    };

    const waitForNewOwner = async (key: string, old: number, timeoutMs = 60_000) => {
      const slot = await slotOf(key);
      let owner = old;
      await poll(`a new primary for ${key}`, timeoutMs, async () => {
        const live = await liveNodes();
        const seen = new Set<number>();
        for (const index of live) {
          if (!(await clusterOk(servers[index]!.port))) return false;
          seen.add(await ownerSeenBy(servers[index]!.port, slot));
        }
        if (seen.size !== 1) return false;
        owner = [...seen][0]!;
        if (owner === old || owner === -1) return false;
        // It says so itself (it may still refuse writes: min-replicas-to-write wants a replica).
        return withClient(servers[owner]!.port, async (client) => {
          const [role] = (await client.call('ROLE')) as [string];
          return role === 'master';
        });
      });
      return owner;
    };

    return {
      nodes,
      servers,
      ownerOf,
      replicasOf,
      async failover(key) {
        const old = await ownerOf(key);
        const [replica] = await replicasOf(old);
        if (replica === undefined) throw new Error(`the primary for ${key} has no replica online`);
        await withClient(servers[replica]!.port, (client) => client.call('CLUSTER', 'FAILOVER'));
        return waitForNewOwner(key, old);
      },
      waitForNewOwner,
      async migrateSlot(key, to, options = {}) {
        const slot = await slotOf(key);
        const from = await ownerOf(key);
        const idOf = (index: number) =>
          withClient(servers[index]!.port, async (client) => String(await client.call('CLUSTER', 'MYID')));
        const [fromId, toId] = [await idOf(from), await idOf(to)];
        const setSlot = (index: number, ...args: string[]) =>
          withClient(servers[index]!.port, (client) => client.call('CLUSTER', 'SETSLOT', slot, ...args));
        await setSlot(to, 'IMPORTING', fromId);
        await setSlot(from, 'MIGRATING', toId);
        await withClient(servers[from]!.port, async (client) => {
          for (let moved = 0; ; moved++) {
            if (moved > 0) await options.betweenBatches?.();
            const keys =
              moved === 0 && options.firstKeys !== undefined
                ? options.firstKeys
                : ((await client.call(
                    'CLUSTER',
                    'GETKEYSINSLOT',
                    slot,
                    options.keysPerBatch ?? 100,
                  )) as string[]);
            if (keys.length === 0) return;
            await client.call('MIGRATE', '127.0.0.1', servers[to]!.port, '', 0, 5000, 'KEYS', ...keys);
          }
        });
        // The new owner first, then the old one, then every other primary (SETSLOT is refused on
        // a replica; replicas learn it from their primaries).
        await setSlot(to, 'NODE', toId);
        await setSlot(from, 'NODE', toId);
        for (const index of await liveNodes()) {
          if (index === to || index === from) continue;
          const reply = await withClient(servers[index]!.port, (client) => client.call('ROLE'));
          const [role] = reply as [string];
          if (role === 'master') await setSlot(index, 'NODE', toId);
        }
        await poll(`every live node to name node ${to} for ${key}`, 30_000, async () => {
          for (const index of await liveNodes())
            if ((await ownerSeenBy(servers[index]!.port, slot)) !== to) return false;
          return true;
        });
      },
      async configSet(server, name, value) {
        await withClient(servers[server]!.port, (client) => client.config('SET', name, value));
      },
      async waitForReplica(server, timeoutMs = 60_000) {
        await poll(`node ${server} to be an online replica`, timeoutMs, async () => {
          const info = await replication(server);
          return info.includes('role:slave') && info.includes('master_link_status:up');
        });
        // ... and its primary counts it (min-replicas-to-write).
        await poll(`node ${server} to be counted by its primary`, timeoutMs, async () => {
          const info = await replication(server);
          const port = Number(/master_port:(\d+)/.exec(info)?.[1]);
          return (await replicasOf(indexOfPort(port))).includes(server);
        });
      },
      async stop() {
        await Promise.all(servers.map((server) => server.stop()));
        for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start a Redis Cluster: ${(error as Error).message}. ${HOW_TO_GET_TOOLS}`);
  }
}

export interface TlsSentinelTopology {
  name: string;
  /** The CA that signed every server's certificate (for NODE_EXTRA_CA_CERTS). */
  caFile: string;
  /** `127.0.0.1:port` of each Sentinel's TLS port (plain text is not served there). */
  tlsSentinelNodes: string[];
  /** `127.0.0.1:port` of each Sentinel's plain-text port. */
  plainSentinelNodes: string[];
  stop(): Promise<void>;
}

/**
 * A primary that serves its data over TLS only to the Sentinels' clients (the Sentinels monitor
 * its TLS port, so that is the address they name), watched by two Sentinels that each listen on a
 * TLS port and on a plain-text one. Certificates come from a private CA made with openssl, for
 * 127.0.0.1. The plain-text ports exist for the helpers' PING and for the `sentinelTls: false` case.
 */
export async function startTlsSentinelTopology(name = 'chatbridge-tls'): Promise<TlsSentinelTopology> {
  const certs = privateDir('tls-certs');
  const dirs = [certs];
  const file = (leaf: string) => join(certs, leaf);
  const processes: PrivateRedis[] = [];
  const stop = async () => {
    await Promise.all(processes.map((process) => process.stop()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=chatbridge-test-ca',
      '-keyout',
      file('ca.key'),
      '-out',
      file('ca.crt'),
    ]);
    await run('openssl', [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      '/CN=127.0.0.1',
      '-keyout',
      file('server.key'),
      '-out',
      file('server.csr'),
    ]);
    writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    await run('openssl', [
      'x509',
      '-req',
      '-days',
      '2',
      '-in',
      file('server.csr'),
      '-CA',
      file('ca.crt'),
      '-CAkey',
      file('ca.key'),
      '-CAcreateserial',
      '-extfile',
      file('ext.cnf'),
      '-out',
      file('server.crt'),
    ]);
    const tlsArgs = async () => {
      const port = await freePort();
      return {
        port,
        args: [
          '--tls-port',
          String(port),
          '--tls-cert-file',
          file('server.crt'),
          '--tls-key-file',
          file('server.key'),
          '--tls-ca-cert-file',
          file('ca.crt'),
          '--tls-auth-clients',
          'no',
          '--tls-replication',
          'yes',
        ],
      };
    };
    const data = await tlsArgs();
    const dataDir = privateDir('tls-data');
    dirs.push(dataDir);
    processes.push(await startPrivateRedis({ args: ['--dir', dataDir, ...data.args] }));

    const tlsSentinelNodes: string[] = [];
    const plainSentinelNodes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const dir = privateDir('tls-sentinel');
      dirs.push(dir);
      const configFile = join(dir, 'sentinel.conf');
      writeFileSync(configFile, `sentinel monitor ${name} 127.0.0.1 ${data.port} 1\n`);
      const tls = await tlsArgs();
      const sentinel = await startPrivateRedis({
        configFile,
        sentinel: true,
        args: ['--dir', dir, ...tls.args],
      });
      processes.push(sentinel);
      tlsSentinelNodes.push(`127.0.0.1:${tls.port}`);
      plainSentinelNodes.push(`127.0.0.1:${sentinel.port}`);
    }
    // The Sentinels reach the primary over TLS (tls-replication) before anyone asks them for it.
    await poll('the Sentinels to see the TLS primary', 30_000, async () => {
      for (const node of plainSentinelNodes) {
        const port = Number(node.split(':')[1]);
        const up = await withClient(port, async (client) => {
          const master = (await client.call('SENTINEL', 'MASTER', name)) as string[];
          const flags = master[master.indexOf('flags') + 1] ?? '';
          return flags === 'master';
        });
        if (!up) return false;
      }
      return true;
    });
    return { name, caFile: file('ca.crt'), tlsSentinelNodes, plainSentinelNodes, stop };
  } catch (error) {
    await stop();
    throw new Error(
      `could not start a TLS Sentinel group: ${(error as Error).message}. ${HOW_TO_GET_TOOLS} It also needs openssl.`,
    );
  }
}

/**
 * The webhook destination the topology tests' bridges deliver to (id `crm`): a test receiver, and
 * retries close together, so a delivery that failed during a failover or a slot move is sent
 * again well within the test.
 */
export function topologyDestination(receiverUrl: string, secret: string, events: string[]) {
  return {
    id: 'crm',
    url: receiverUrl,
    secret,
    events,
    retrySchedule: ['0s', '200ms', '500ms', '1s', '1s', '1s', '1s', '1s', '1s', '1s'],
  };
}

/**
 * The channels and destination a failover test's bridge runs (test/slow/sentinel.test.ts,
 * cluster.failover.test.ts): JivoChat intake, a Chatvisor poll every second under the scheduler's
 * tick claim and run lock, and conversation.started delivered to a receiver with quick retries.
 */
export function failoverBridgeChannels(given: {
  jivoToken: string;
  chatvisorToken: string;
  chatvisor: { apiUrl: string; token: string };
  receiverUrl: string;
  secret: string;
}) {
  return {
    channels: [
      { id: 'site', vendor: 'jivochat', token: given.jivoToken, personIdFrom: 'user_token' },
      {
        id: 'cv',
        vendor: 'chatvisor',
        token: given.chatvisorToken,
        apiUrl: given.chatvisor.apiUrl,
        apiToken: given.chatvisor.token,
        maxRetries: 0,
        backfillWindow: '0s',
        // node-cron with seconds: a poll every second, under the scheduler's tick claim and run lock.
        schedules: { conversationPoll: '* * * * * *' },
      },
    ],
    destinations: [topologyDestination(given.receiverUrl, given.secret, ['conversation.started'])],
  };
}
