import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { DEFAULT_TRUSTED_PROXIES, forwardedClient, trustedProxies } from '../../src/http/forwarded.js';
import { defaultRegistry } from '../../src/registry.js';
import { consoleRequest, cookieOf, fieldOf } from '../support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';
import { rawRequest } from './support.js';

/**
 * X-Forwarded-For and X-Forwarded-Proto are taken only from a trusted proxy: a connection whose own
 * address is in server.trustedProxies (default loopback, private, link-local and unique-local
 * ranges). They used to be taken from any connection while server.proxyHops was above 0 (1 by
 * default, with server.host 0.0.0.0), so a client reaching the bridge directly chose its address:
 * a new one per request stepped around every per-address limit, and a staff member's address
 * (known: it presented the right admin token lately) passed the failure ceiling.
 */

/** A documentation address (RFC 5737): public, in none of the default trusted ranges. */
const PUBLIC_CLIENT = '203.0.113.50';

/**
 * The bridge's app on a server of its own on loopback whose connections all say they come from
 * `address`: a client on the internet connecting directly, with no proxy in front (tests run on
 * loopback, which is a trusted proxy's address by default).
 */
async function reachedDirectlyFrom(
  bridge: TestBridge,
  address: string,
): Promise<{ url: string; server: Server }> {
  const server = createServer(bridge.bridge.app.callback());
  // Before Node's own connection listener: Koa reads the address from the socket later.
  server.prependListener('connection', (socket: Socket) => {
    Object.defineProperty(socket, 'remoteAddress', { value: address, configurable: true });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** GET /api/v1/channels with a bearer token and the given X-Forwarded-For. */
function api(url: string, token: string, forwardedFor: string) {
  return rawRequest(url, 'GET', '/api/v1/channels', {
    headers: { 'x-forwarded-for': forwardedFor, authorization: `Bearer ${token}` },
  });
}

/** The attempt (0-based) answered 429 first, or null; every other answer must be 401. */
async function failuresUntilRefused(url: string, forwardedFor: (attempt: number) => string, tries = 10) {
  for (let attempt = 0; attempt < tries; attempt++) {
    const answer = await api(url, `guess-${attempt}-0000000000`, forwardedFor(attempt));
    if (answer.status === 429) return attempt;
    expect(answer.status).toBe(401);
  }
  return null;
}

/** An HTTP request from a chosen local address (any of 127.0.0.0/8 is this machine on Linux). */
function requestFrom(
  localAddress: string,
  url: string,
  path: string,
  headers: Record<string, string>,
): Promise<number> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(
      { host: target.hostname, port: target.port, path, localAddress, headers },
      (answer) => {
        answer.resume();
        answer.on('end', () => resolve(answer.statusCode ?? 0));
      },
    );
    outgoing.on('error', reject);
    outgoing.end();
  });
}

describe('X-Forwarded-For counts only from a trusted proxy (server.trustedProxies)', () => {
  const bridges: TestBridge[] = [];
  const servers: Server[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    for (const bridge of bridges.splice(0)) await bridge.close();
  });
  async function bridgeWith(config: Record<string, unknown>): Promise<TestBridge> {
    const bridge = await startTestBridge({ config, start: false });
    bridges.push(bridge);
    return bridge;
  }
  async function direct(bridge: TestBridge, address: string): Promise<string> {
    const { url, server } = await reachedDirectlyFrom(bridge, address);
    servers.push(server);
    return url;
  }
  const limits = { rate: { adminAuthFailuresPerAddress: 2, window: '1h' } };

  it('counts a public client that connects directly by its own address, whatever X-Forwarded-For it writes (default config)', async () => {
    const bridge = await bridgeWith({ limits });
    const url = await direct(bridge, PUBLIC_CLIENT);
    // A new made-up address per request: before, each was a counter of its own and no guess was
    // ever refused.
    expect(await failuresUntilRefused(url, (attempt) => `198.51.100.${attempt + 1}`)).toBe(2);
    // The same over IPv6: a direct client counts by its own /64, not by what it writes.
    const v6 = await direct(bridge, '2001:db8:5::50');
    expect(await failuresUntilRefused(v6, (attempt) => `2001:db8:${attempt + 100}::1`)).toBe(2);
    // Through the trusted proxy (loopback) the entry it appended counts: 198.51.100.1 is not
    // the address that guessed above.
    expect((await api(bridge.url, TEST_ADMIN_TOKEN, '198.51.100.1')).status).toBe(200);
  });

  it('does not let a direct client claim a staff address to pass the failure ceiling', async () => {
    const bridge = await bridgeWith({
      limits: { rate: { adminAuthFailuresPerAddress: 50, adminAuthFailuresCeiling: 3, window: '1h' } },
    });
    const staff = '198.51.100.7';
    // Staff sign in through the proxy: their address is known (spared by the ceiling) for a day.
    expect((await api(bridge.url, TEST_ADMIN_TOKEN, staff)).status).toBe(200);
    // Someone on the internet who knows that address writes it in X-Forwarded-For: counted as
    // itself, a stranger, it meets the ceiling after 3 failures. Before, as the staff address,
    // it could guess up to the per-address limit (50) whatever the ceiling said.
    const url = await direct(bridge, PUBLIC_CLIENT);
    expect(await failuresUntilRefused(url, () => staff)).toBe(3);
    // Staff themselves are still let in.
    expect((await api(bridge.url, TEST_ADMIN_TOKEN, staff)).status).toBe(200);
  });

  it('limits the LiveTex lookup by a direct client’s own address', async () => {
    const bridge = await bridgeWith({
      channels: [{ id: 'app', vendor: 'livetex', token: 'livetex-token-00000000001' }],
      limits: { rate: { lookupsPerAddress: 3, lookupsPerChannel: 1000, window: '1h' } },
    });
    const url = await direct(bridge, PUBLIC_CLIENT);
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const answer = await rawRequest(url, 'POST', '/livetex/app/attributes', {
        headers: { 'x-forwarded-for': `198.51.100.${attempt + 1}`, 'content-type': 'application/jose' },
        body: 'not-a-jwe',
      });
      statuses.push(answer.status);
    }
    expect(statuses.slice(3)).toEqual([429, 429]);
    expect(statuses.slice(0, 3)).not.toContain(429);
  });

  it('takes no X-Forwarded-Proto or -Host from a direct client: the console knows it came over plain http', async () => {
    const bridge = await bridgeWith({
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: 'https://bridge.example' },
    });
    const forged = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'bridge.example' };
    const url = await direct(bridge, PUBLIC_CLIENT);
    // The sign-in form warns that its Secure cookie needs https (at a non-loopback Host): the
    // client's X-Forwarded-Proto said https and hid that warning.
    const warned = await rawRequest(url, 'GET', '/console/sign-in', {
      headers: { ...forged, host: 'bridge.example' },
    });
    expect(warned.status).toBe(200);
    expect(warned.text).toContain('https://bridge.example/console');
    // A form posted without its cookie: over plain http the cookie was lost, and the answer says
    // why; taken as https it said the form had expired.
    const form = await consoleRequest(url, '/console/sign-in', { headers: forged });
    const cookieless = await consoleRequest(url, '/console/sign-in', {
      headers: forged,
      form: { _pre: fieldOf(form.text, '_pre') ?? '', token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(cookieless.status).toBe(403);
    expect(cookieless.text).toContain('did not send back the sign-in form');
    // Through the trusted proxy (loopback), its https counts.
    const proxiedForm = await consoleRequest(bridge.url, '/console/sign-in', { headers: forged });
    const proxied = await consoleRequest(bridge.url, '/console/sign-in', {
      headers: forged,
      form: {
        _pre: fieldOf(proxiedForm.text, '_pre') ?? '',
        token: TEST_ADMIN_TOKEN,
        next: '/console/status',
      },
    });
    expect(proxied.status).toBe(403);
    expect(proxied.text).toContain('The sign-in form expired');
    // Sign-in itself works for the direct client (the form's cookie sent back by hand).
    const signedIn = await consoleRequest(url, '/console/sign-in', {
      headers: forged,
      cookie: cookieOf(form.headers, 'chatbridge_console_pre') ?? '',
      form: { _pre: fieldOf(form.text, '_pre') ?? '', token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(signedIn.status).toBe(302);
  });

  it('walks proxyHops trusted hops and stops at the first address that is not a trusted proxy', async () => {
    // Two proxies (a cloud load balancer, then nginx), both on private addresses. The client
    // puts a made-up entry first; the outer proxy appends the client's real address after it.
    const bridge = await bridgeWith({
      limits,
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, proxyHops: 2 },
    });
    // Client 198.51.100.9 -> load balancer 10.0.0.2 -> nginx (loopback): the real address counts.
    expect(
      await failuresUntilRefused(bridge.url, (attempt) => `192.0.2.${attempt}, 198.51.100.9, 10.0.0.2`),
    ).toBe(2);
    // A client reaching nginx directly (past the load balancer): nginx appends its address, the
    // entry left of it is the client's own text. Its address is not a trusted proxy's, so the
    // walk stops there: before, the second entry from the right (made up) counted.
    expect(
      await failuresUntilRefused(bridge.url, (attempt) => `192.0.2.${attempt + 50}, 198.51.100.10`),
    ).toBe(2);
  });

  it('takes the header from the addresses listed in server.trustedProxies only', async () => {
    // Only 127.0.0.1 is the proxy: a connection from 127.0.0.2 is a client of its own.
    const bridge = await bridgeWith({
      limits,
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, trustedProxies: ['127.0.0.1'] },
    });
    const fromClient = async (attempt: number) =>
      requestFrom('127.0.0.2', bridge.url, '/api/v1/channels', {
        'x-forwarded-for': `198.51.100.${attempt + 1}`,
        authorization: `Bearer guess-${attempt}-0000000000`,
      });
    expect([await fromClient(0), await fromClient(1), await fromClient(2)]).toEqual([401, 401, 429]);
    // The proxy's entries still count as the clients' addresses.
    expect(await failuresUntilRefused(bridge.url, (attempt) => `198.51.100.${attempt + 1}`, 1)).toBeNull();
    expect(await failuresUntilRefused(bridge.url, () => '198.51.100.20')).toBe(2);
  });

  it('with an empty server.trustedProxies takes no header from anyone', async () => {
    const bridge = await bridgeWith({
      limits,
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, trustedProxies: [] },
    });
    expect(await failuresUntilRefused(bridge.url, (attempt) => `198.51.100.${attempt + 1}`)).toBe(2);
  });
});

describe('server.trustedProxies in the config', () => {
  const registry = defaultRegistry();
  function problems(trustedProxies: unknown): string[] {
    try {
      parseConfig(
        { admin: { token: 'a-real-admin-token-0123456789' }, server: { trustedProxies } },
        registry,
        {},
      );
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    }
  }

  it('defaults to the loopback, private, link-local and unique-local ranges', () => {
    const config = parseConfig({ admin: { token: 'a-real-admin-token-0123456789' } }, registry, {});
    expect(config.server.trustedProxies).toEqual([
      '127.0.0.0/8',
      '::1',
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '169.254.0.0/16',
      'fc00::/7',
      'fe80::/10',
    ]);
    expect(config.server.proxyHops).toBe(1);
  });

  it('takes addresses and CIDR ranges of both families', () => {
    expect(
      problems([
        '192.0.2.10',
        '198.51.100.0/24',
        '2001:db8::/32',
        '2001:db8::7',
        '::ffff:192.0.2.11',
        '0.0.0.0/0',
      ]),
    ).toEqual([]);
    expect(problems([])).toEqual([]);
  });

  it('names every entry that is not an address or a range, each with its place in the list', () => {
    expect(
      problems([
        '10.0.0.0/8',
        '10.0.0.300',
        '10/8',
        '192.168.0.0/33',
        'fd00::/129',
        'nginx.internal',
        'fe80::1%eth0',
        '10.0.0.0/8/8',
        '10.0.0.0/',
        '::ffff:10.0.0.0/104',
        7,
      ]),
    ).toEqual([
      'server.trustedProxies[1]: "10.0.0.300" is not an IP address or CIDR range (such as 10.0.0.5, 10.0.0.0/8 or fd00::/8)',
      'server.trustedProxies[2]: "10/8" is not an IP address or CIDR range (such as 10.0.0.5, 10.0.0.0/8 or fd00::/8)',
      'server.trustedProxies[3]: "192.168.0.0/33": an IPv4 range has a prefix length of 0 to 32',
      'server.trustedProxies[4]: "fd00::/129": an IPv6 range has a prefix length of 0 to 128',
      'server.trustedProxies[5]: "nginx.internal" is not an IP address or CIDR range (such as 10.0.0.5, 10.0.0.0/8 or fd00::/8)',
      'server.trustedProxies[6]: "fe80::1%eth0": leave out the zone (%eth0); addresses are compared without it',
      'server.trustedProxies[7]: "10.0.0.0/8/8" is not an IP address or CIDR range (such as 10.0.0.5, 10.0.0.0/8 or fd00::/8)',
      'server.trustedProxies[8]: "10.0.0.0/" is not an IP address or CIDR range (such as 10.0.0.5, 10.0.0.0/8 or fd00::/8)',
      'server.trustedProxies[9]: "::ffff:10.0.0.0/104": write an IPv4 range in IPv4 form (10.0.0.0/8): IPv4 clients are compared as IPv4 addresses',
      'server.trustedProxies[10]: expected text, got the number 7: write it in quotes ("...")',
    ]);
  });
});

describe('forwardedClient: the walk of X-Forwarded-For (as proxy-addr does it)', () => {
  const trusted = trustedProxies([...DEFAULT_TRUSTED_PROXIES]);
  const walk = (peer: string, header: string, hops = 1) => forwardedClient(peer, header, trusted, hops);

  it('takes nothing from a connection that is not a trusted proxy', () => {
    expect(walk('203.0.113.50', '198.51.100.1')).toBe('203.0.113.50');
    expect(walk('2001:db8::50', '198.51.100.1', 3)).toBe('2001:db8::50');
    // The connection's address in its one spelling: a dual-stack socket's IPv4-mapped form.
    expect(walk('::ffff:203.0.113.50', '198.51.100.1')).toBe('203.0.113.50');
  });

  it('takes the entry a trusted proxy appended, in its one spelling', () => {
    expect(walk('127.0.0.1', '192.0.2.1, 198.51.100.1')).toBe('198.51.100.1');
    expect(walk('::ffff:10.1.2.3', '198.51.100.1:4431')).toBe('198.51.100.1');
    expect(walk('fe80::1%eth0', ' [2001:DB8:0::7]:443 ')).toBe('2001:db8::7');
    expect(walk('::1', '')).toBe('::1');
  });

  it('walks further only through trusted proxies, and at most proxyHops entries', () => {
    expect(walk('10.0.0.1', '192.0.2.1, 198.51.100.1, 10.0.0.2', 2)).toBe('198.51.100.1');
    expect(walk('10.0.0.1', '192.0.2.1, 198.51.100.1, 10.0.0.2', 3)).toBe('198.51.100.1');
    expect(walk('10.0.0.1', '192.0.2.1, 10.0.0.3, 10.0.0.2', 3)).toBe('192.0.2.1');
    expect(walk('10.0.0.1', '192.0.2.1, 10.0.0.3, 10.0.0.2', 2)).toBe('10.0.0.3');
    // A header shorter than the hops: its last trusted address (a client on the private network).
    expect(walk('10.0.0.1', '10.0.0.9', 3)).toBe('10.0.0.9');
  });

  it('counts an entry that is no IP address against the proxy that passed it on', () => {
    expect(walk('127.0.0.1', 'not-an-address')).toBe('127.0.0.1');
    expect(walk('10.0.0.1', 'made-up, 10.0.0.2', 2)).toBe('10.0.0.2');
    expect(walk('10.0.0.1', '198.51.100.1,', 2)).toBe('10.0.0.1');
  });
});
