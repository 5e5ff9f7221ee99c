import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, type PrivateRedis, startPrivateRedis } from './redis.js';

/**
 * Real Redis topologies for the slow tier, on free loopback ports in private directories, built
 * from startPrivateRedis (so every process is killed when the test process exits):
 * - a Sentinel group: one primary, two replicas, three Sentinels (quorum 2);
 * - a Cluster of three primaries (no replicas), created with `redis-cli --cluster create`.
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
  /** `127.0.0.1:port` of each primary, for store.cluster.nodes. */
  nodes: string[];
  servers: PrivateRedis[];
  /** Which primary (index into `servers`) serves the hash slot of `key`. */
  ownerOf(key: string): Promise<number>;
  stop(): Promise<void>;
}

/** Three primaries sharing the 16,384 slots, no replicas. */
export async function startClusterTopology(): Promise<ClusterTopology> {
  const dirs: string[] = [];
  const servers: PrivateRedis[] = [];
  try {
    for (let i = 0; i < 3; i++) {
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
            '2000',
          ],
        }),
      );
    }
    const nodes = servers.map((server) => `127.0.0.1:${server.port}`);
    await run('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes']);
    await poll('cluster_state:ok on every node', 30_000, async () => {
      for (const server of servers) {
        const ok = await withClient(server.port, async (client) =>
          ((await client.call('CLUSTER', 'INFO')) as string).includes('cluster_state:ok'),
        );
        if (!ok) return false;
      }
      return true;
    });
    return {
      nodes,
      servers,
      async ownerOf(key) {
        const slot = Number(
          await withClient(servers[0]!.port, (client) => client.call('CLUSTER', 'KEYSLOT', key)),
        );
        const shards = (await withClient(servers[0]!.port, (client) =>
          client.call('CLUSTER', 'SLOTS'),
        )) as Array<[number, number, [string, number]]>;
        const owner = shards.find(([from, to]) => slot >= from && slot <= to);
        if (!owner) throw new Error(`no owner for slot ${slot}`);
        return servers.findIndex((server) => server.port === owner[2][1]);
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
