import { afterEach, describe, expect, it } from 'vitest';
import { consoleRequest, cookieOf, fieldOf } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console behind a TLS-terminating proxy (DESIGN §11: Secure cookies when server.publicUrl is
 * https), over real HTTP on loopback with the headers a proxy sets: the browser talks https to
 * the proxy (Origin: the public URL), the proxy talks http to the bridge's internal address.
 */
const PUBLIC = 'https://bridge.example.com';

async function bridgeBehindProxy(proxyHops: number, trustedProxies?: string[]): Promise<TestBridge> {
  return startTestBridge({
    store: 'memory',
    start: false,
    config: {
      server: {
        port: 0,
        host: '127.0.0.1',
        shutdownTimeoutMs: 2000,
        publicUrl: PUBLIC,
        proxyHops,
        ...(trustedProxies ? { trustedProxies } : {}),
      },
    },
  });
}

/** What the proxy adds, and what the browser sends: Origin is the public URL on every post. */
const fromProxy = {
  'x-forwarded-proto': 'https',
  'x-forwarded-host': 'bridge.example.com',
  'x-forwarded-for': '203.0.113.7',
};
const fromBrowser = { origin: PUBLIC, 'sec-fetch-site': 'same-origin' };

function attributes(setCookie: string[], name: string): string[] {
  const line = setCookie.find((entry) => entry.startsWith(`${name}=`)) ?? '';
  return line
    .split(';')
    .slice(1)
    .map((part) => part.trim().toLowerCase());
}

describe('the console behind a TLS-terminating proxy', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });

  it('signs in, posts a form and signs out with X-Forwarded-Proto/Host, Origin the public URL and Host internal', async () => {
    bridge = await bridgeBehindProxy(1);
    const headers = { ...fromProxy, ...fromBrowser };
    const form = await consoleRequest(bridge.url, '/console/sign-in', { headers: fromProxy });
    expect(form.status).toBe(200);
    // Nothing to warn about: the request came over https as far as the proxy says.
    expect(form.text).not.toContain('server.publicUrl');
    const pre = cookieOf(form.headers, 'chatbridge_console_pre');
    expect(pre).toBeDefined();
    // Trusted, the proxy's https counts: a form posted without its cookie has expired, not
    // lost its cookie to plain http.
    const cookieless = await consoleRequest(bridge.url, '/console/sign-in', {
      headers,
      form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(cookieless.status).toBe(403);
    expect(cookieless.text).toContain('The sign-in form expired');
    expect(attributes(form.headers.getSetCookie(), 'chatbridge_console_pre')).toEqual(
      expect.arrayContaining(['secure', 'httponly', 'samesite=strict']),
    );
    // No Path: the browser's default, the sign-in page's directory as it saw it (console.path-prefix).
    expect(attributes(form.headers.getSetCookie(), 'chatbridge_console_pre').join(';')).not.toContain(
      'path=',
    );

    const signedIn = await consoleRequest(bridge.url, '/console/sign-in', {
      headers,
      cookie: pre!,
      form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/deliveries' },
    });
    expect(signedIn.status).toBe(302);
    // A relative redirect: the browser stays on the public origin whatever Host the bridge saw,
    // and below the path it used (src/console/relative.ts).
    expect(signedIn.headers.get('location')).toBe('../console/deliveries');
    const cookie = cookieOf(signedIn.headers, 'chatbridge_console')!;
    expect(attributes(signedIn.headers.getSetCookie(), 'chatbridge_console')).toEqual(
      expect.arrayContaining(['secure', 'httponly', 'samesite=strict']),
    );

    const page = await consoleRequest(bridge.url, '/console/deliveries', { headers: fromProxy, cookie });
    expect(page.status).toBe(200);
    const csrf = fieldOf(page.text, '_csrf')!;
    const posted = await consoleRequest(bridge.url, '/console/deliveries/replay', {
      headers,
      cookie,
      form: { _csrf: csrf, destination: 'none' },
    });
    // Past the session and CSRF checks (an unknown destination is the form's own answer).
    expect(posted.status).not.toBe(403);
    const out = await consoleRequest(bridge.url, '/console/sign-out', {
      headers,
      cookie,
      form: { _csrf: csrf },
    });
    expect(out.status).toBe(302);
    expect(out.headers.get('location')).toBe('../console/sign-in?notice=signed-out');
  });

  it('with proxyHops 0 ignores X-Forwarded-Proto (the proxy is not trusted), and sign-in still works', async () => {
    bridge = await bridgeBehindProxy(0);
    const form = await consoleRequest(bridge.url, '/console/sign-in', { headers: fromProxy });
    expect(form.status).toBe(200);
    // A form posted without its cookie: the bridge blames plain http (and names the proxy's
    // headers) because, not trusting the proxy, it takes the request as http whatever it says.
    const cookieless = await consoleRequest(bridge.url, '/console/sign-in', {
      headers: { ...fromProxy, ...fromBrowser },
      form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(cookieless.status).toBe(403);
    expect(cookieless.text).toContain(
      'X-Forwarded-Proto: https and connect from an address in server.trustedProxies',
    );
    const pre = cookieOf(form.headers, 'chatbridge_console_pre')!;
    // The cookie is Secure anyway: an https publicUrl means TLS ends in front of the bridge.
    expect(attributes(form.headers.getSetCookie(), 'chatbridge_console_pre')).toContain('secure');
    const signedIn = await consoleRequest(bridge.url, '/console/sign-in', {
      headers: { ...fromProxy, ...fromBrowser },
      cookie: pre,
      form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(signedIn.status).toBe(302);
  });

  it('ignores X-Forwarded-Proto from a proxy whose address is not in server.trustedProxies', async () => {
    // The proxy connects from loopback; only 10.0.0.0/8 is trusted.
    bridge = await bridgeBehindProxy(1, ['10.0.0.0/8']);
    const form = await consoleRequest(bridge.url, '/console/sign-in', { headers: fromProxy });
    const cookieless = await consoleRequest(bridge.url, '/console/sign-in', {
      headers: { ...fromProxy, ...fromBrowser },
      form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
    });
    expect(cookieless.status).toBe(403);
    expect(cookieless.text).toContain('server.trustedProxies');
  });
});
