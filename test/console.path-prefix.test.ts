import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The bridge served under a path by a reverse proxy (https://example.org/chat/ → the bridge's /),
 * over real HTTP on loopback: a tiny proxy strips `/chat` and passes everything else through
 * unchanged (Location and Set-Cookie included), as nginx's `location /chat/ { proxy_pass
 * http://bridge/; }` does. A browser-like client follows redirects and links, and keeps cookies
 * by their Path: every address the console sends it to must stay below /chat/.
 */
const PREFIX = '/chat';

function startPrefixProxy(): Promise<{ server: Server; origin: string; target: { port: number } }> {
  const target = { port: 0 };
  const server = createServer((incoming, answer) => {
    const path = incoming.url ?? '/';
    if (path === PREFIX) {
      // nginx's answer to the prefix without its slash.
      answer.writeHead(301, { location: `${PREFIX}/` }).end();
      return;
    }
    if (!path.startsWith(`${PREFIX}/`)) {
      answer.writeHead(404, { 'content-type': 'text/plain' }).end(`not served by this proxy: ${path}`);
      return;
    }
    const upstream = request(
      {
        host: '127.0.0.1',
        port: target.port,
        method: incoming.method,
        path: path.slice(PREFIX.length),
        headers: incoming.headers,
      },
      (response) => {
        answer.writeHead(response.statusCode ?? 502, response.headers);
        response.pipe(answer);
      },
    );
    upstream.on('error', () => answer.writeHead(502).end());
    incoming.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, origin: `http://127.0.0.1:${port}`, target });
    });
  });
}

/** Cookies as a browser keeps them: by name and Path (RFC 6265's default-path when none is given). */
class CookieJar {
  private readonly cookies = new Map<string, { value: string; path: string }>();

  take(url: URL, setCookie: string[]) {
    for (const line of setCookie) {
      const [pair, ...attributes] = line.split(';').map((part) => part.trim());
      const [name, value] = [pair!.slice(0, pair!.indexOf('=')), pair!.slice(pair!.indexOf('=') + 1)];
      const given = attributes.find((part) => /^path=/i.test(part))?.slice(5);
      const directory = url.pathname.slice(0, url.pathname.lastIndexOf('/')) || '/';
      const path = given?.startsWith('/') ? given : directory;
      const expired = attributes.some((part) => /^expires=.*1970/i.test(part) || /^max-age=0$/i.test(part));
      const key = `${name}; ${path}`;
      if (expired || value === '') this.cookies.delete(key);
      else this.cookies.set(key, { value, path });
    }
  }

  header(url: URL): string {
    return [...this.cookies.entries()]
      .filter(
        ([, cookie]) =>
          url.pathname === cookie.path || url.pathname.startsWith(`${cookie.path.replace(/\/$/, '')}/`),
      )
      .map(([key, cookie]) => `${key.split(';')[0]}=${cookie.value}`)
      .join('; ');
  }
}

interface Visit {
  url: URL;
  status: number;
  text: string;
  /** Every address the browser was sent through on the way (redirects), then the page's own. */
  path: string[];
}

function browser(origin: string) {
  const jar = new CookieJar();
  async function go(address: string, form?: Record<string, string>): Promise<Visit> {
    let url = new URL(address, origin);
    const path: string[] = [];
    let body = form ? new URLSearchParams(form).toString() : undefined;
    for (let hop = 0; hop < 10; hop++) {
      path.push(url.pathname + url.search);
      const response = await fetch(url, {
        method: body === undefined ? 'GET' : 'POST',
        redirect: 'manual',
        headers: {
          accept: 'text/html',
          cookie: jar.header(url),
          ...(body === undefined
            ? {}
            : {
                'content-type': 'application/x-www-form-urlencoded',
                origin,
                'sec-fetch-site': 'same-origin',
              }),
        },
        ...(body === undefined ? {} : { body }),
      });
      jar.take(url, response.headers.getSetCookie());
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        await response.text();
        url = new URL(location, url);
        body = undefined;
        continue;
      }
      return { url, status: response.status, text: await response.text(), path };
    }
    throw new Error(`too many redirects: ${path.join(' → ')}`);
  }
  return { go, jar };
}

/**
 * Every address in a page's markup (links, forms, assets, the poll address) that leads to this
 * origin, resolved as a browser does (a `data:` icon is no address).
 */
function addresses(visit: Visit): string[] {
  return [...visit.text.matchAll(/\s(?:href|action|src|data-poll)="([^"]*)"/g)]
    .map((match) => new URL(match[1]!.replaceAll('&amp;', '&'), visit.url))
    .filter((url) => url.protocol === 'http:')
    .map((url) => url.pathname);
}

const field = (text: string, name: string) =>
  new RegExp(`name="${name}" value="([^"]*)"`).exec(text)?.[1] ?? '';

describe('the console under a path prefix, through a prefix-stripping proxy', () => {
  let proxy: Awaited<ReturnType<typeof startPrefixProxy>>;
  let bridge: TestBridge;
  beforeAll(async () => {
    proxy = await startPrefixProxy();
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        server: {
          port: 0,
          host: '127.0.0.1',
          shutdownTimeoutMs: 2000,
          publicUrl: `${proxy.origin}${PREFIX}/`,
        },
      },
    });
    proxy.target.port = Number(new URL(bridge.url).port);
  });
  afterAll(async () => {
    await bridge?.close();
    await new Promise((resolve) => proxy?.server.close(resolve));
  });

  it('from the prefix itself to the sign-in page, every redirect stays below it', async () => {
    const { go } = browser(proxy.origin);
    for (const start of [
      PREFIX,
      `${PREFIX}/`,
      `${PREFIX}/console`,
      `${PREFIX}/console/`,
      `${PREFIX}/console/deliveries`,
    ]) {
      const visit = await go(start);
      expect(visit.status, `${start}: ${visit.path.join(' → ')}`).toBe(200);
      for (const hop of visit.path) expect(hop, visit.path.join(' → ')).toMatch(/^\/chat(\/|$)/);
      expect(visit.url.pathname).toBe('/chat/console/sign-in');
    }
  });

  it('signs in, follows the pages, their links, forms and assets, and signs out, all below the prefix', async () => {
    const { go } = browser(proxy.origin);
    const form = await go(`${PREFIX}/`);
    expect(form.url.pathname + form.url.search).toBe('/chat/console/sign-in?next=%2Fconsole%2Fcontacts');
    for (const address of addresses(form)) expect(address).toMatch(/^\/chat\/console\//);
    // The page's stylesheet and script load through the proxy.
    for (const asset of ['/chat/console/assets/console.css', '/chat/console/assets/console.js']) {
      expect(addresses(form)).toContain(asset);
      expect((await go(asset)).status, asset).toBe(200);
    }

    const action = form.text.match(/<form method="post" action="([^"]*)"/)![1]!;
    const signedIn = await go(new URL(action, form.url).href, {
      _pre: field(form.text, '_pre'),
      next: field(form.text, 'next'),
      token: TEST_ADMIN_TOKEN,
    });
    // The session cookie came back (the browser kept it for the path it saw): the page is the
    // contacts search, not the sign-in form again.
    expect(signedIn.path.join(' → ')).toBe('/chat/console/sign-in → /chat/console/contacts');
    expect(signedIn.status).toBe(200);
    expect(signedIn.text).toContain('Sign out');

    // Every page of the navigation, and every address on it, under the prefix; so is a page
    // two levels down (an unknown delivery: the error page and its links).
    const pages = [...new Set(addresses(signedIn).filter((address) => !address.includes('/assets/')))];
    expect(pages).toEqual(
      expect.arrayContaining(['/chat/console/deliveries', '/chat/console/status', '/chat/console/sign-out']),
    );
    for (const page of [
      ...pages.filter((address) => !address.endsWith('/sign-out')),
      '/chat/console/contacts/c_nobody',
    ]) {
      const visit = await go(page);
      expect(visit.status, page).toBe(page.endsWith('c_nobody') ? 404 : 200);
      for (const address of addresses(visit))
        expect(address, `${page} links ${address}`).toMatch(/^\/chat\/console\//);
    }
    const nobody = await go('/chat/console/contacts/c_nobody');
    expect(addresses(nobody)).toContain('/chat/console/contacts');

    const out = await go('/chat/console/sign-out', { _csrf: field(signedIn.text, '_csrf') });
    expect(out.path.join(' → ')).toBe('/chat/console/sign-out → /chat/console/sign-in?notice=signed-out');
    expect(out.status).toBe(200);
    // Signed out for good: the session cookie was cleared at the path it was set for.
    const after = await go('/chat/console/status');
    expect(after.url.pathname).toBe('/chat/console/sign-in');
  });
});
