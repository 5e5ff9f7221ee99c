import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, cookieOf, fieldOf, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * Console sessions and the answers around them (DESIGN §11): a session ends when the admin token
 * changes or when the browser signs in again, sign-out always ends at the sign-in page, sign-in
 * returns to the address asked for (query included, never elsewhere), and every /console answer
 * carries the security headers without echoing the address it was asked for.
 */
describe('console sessions and answers', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({ store: 'memory', start: false });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  /** A hidden field's value as a browser posts it (the page escapes it as HTML). */
  const fromHtml = (value: string) =>
    value.replace(
      /&(amp|lt|gt|quot|#39|#96);/g,
      (_all, name: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#96': '`' })[name]!,
    );

  /** Sign in from the form, sending `cookie` along (a browser that already has a session). */
  async function signInWith(base: string, next: string, cookie = '') {
    const form = await consoleRequest(base, `/console/sign-in?next=${encodeURIComponent(next)}`);
    const pre = cookieOf(form.headers, 'chatbridge_console_pre')!;
    return consoleRequest(base, '/console/sign-in', {
      cookie: [cookie, pre].filter(Boolean).join('; '),
      form: {
        _pre: fieldOf(form.text, '_pre')!,
        token: TEST_ADMIN_TOKEN,
        next: fromHtml(fieldOf(form.text, 'next')!),
      },
    });
  }

  it('ends every session when the admin token changes', async () => {
    const before = await startTestBridge({ store: 'redis', start: false });
    let after: TestBridge | undefined;
    try {
      const { cookie } = await signIn(before.url, TEST_ADMIN_TOKEN);
      expect((await consoleRequest(before.url, '/console/status', { cookie })).status).toBe(200);
      // The same store, a new admin token (the config changed and the bridge restarted).
      after = await startTestBridge({
        store: 'redis',
        start: false,
        keyPrefix: before.keyPrefix,
        config: { admin: { token: 'the-new-admin-token-9876543210' } },
      });
      const old = await consoleRequest(after.url, '/console/status', { cookie });
      expect(old.status).toBe(302);
      expect(old.location).toContain('/console/sign-in');
      const fresh = await signIn(after.url, 'the-new-admin-token-9876543210');
      expect((await consoleRequest(after.url, '/console/status', { cookie: fresh.cookie })).status).toBe(200);
    } finally {
      await after?.close();
      await before.close();
    }
  });

  it('during a rolling change of the admin token, an instance on the old token leaves the new sessions alone', async () => {
    // It deleted every session whose token it did not know: a request that reached an instance
    // not yet restarted signed the user out of the ones that were.
    const old = await startTestBridge({ store: 'redis', start: false });
    let renewed: TestBridge | undefined;
    try {
      renewed = await startTestBridge({
        store: 'redis',
        start: false,
        keyPrefix: old.keyPrefix,
        config: { admin: { token: 'the-new-admin-token-9876543210' } },
      });
      const { cookie } = await signIn(renewed.url, 'the-new-admin-token-9876543210');
      expect((await consoleRequest(renewed.url, '/console/status', { cookie })).status).toBe(200);
      // Not a session on the instance still on the old token ...
      const elsewhere = await consoleRequest(old.url, '/console/status', { cookie });
      expect(elsewhere.status).toBe(302);
      expect(elsewhere.location).toContain('/console/sign-in');
      // ... and still one on the instance that has the new token.
      expect((await consoleRequest(renewed.url, '/console/status', { cookie })).status).toBe(200);
    } finally {
      await renewed?.close();
      await old.close();
    }
  });

  it('signs out to the sign-in page even when the session already ended', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const first = await consoleRequest(bridge.url, '/console/sign-out', { cookie, form: { _csrf: csrf } });
    expect(first.status).toBe(302);
    expect(first.location).toBe('/console/sign-in?notice=signed-out');
    // The tab still shows the old page: its Sign out button posts the ended session.
    const again = await consoleRequest(bridge.url, '/console/sign-out', { cookie, form: { _csrf: csrf } });
    expect(again.status).toBe(302);
    expect(again.location).toBe('/console/sign-in?notice=signed-out');
    const none = await consoleRequest(bridge.url, '/console/sign-out', { form: {} });
    expect(none.status).toBe(302);
    expect(none.location).toBe('/console/sign-in?notice=signed-out');
    // A live session is still not ended by a post without its CSRF token.
    const live = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const forged = await consoleRequest(bridge.url, '/console/sign-out', { cookie: live.cookie, form: {} });
    expect(forged.status).toBe(403);
    expect((await consoleRequest(bridge.url, '/console/status', { cookie: live.cookie })).status).toBe(200);
  });

  it('returns to the address asked for after sign-in, query included, and never elsewhere', async () => {
    for (const path of [
      '/console/contacts?q=Anna+Smith',
      '/console/contacts?q=%2B7+912+345',
      '/console/contacts?q=person:42',
      '/console/contacts?q=anna@example.org',
      '/console/journal?channel=site&kind=rejected',
    ]) {
      const anonymous = await consoleRequest(bridge.url, path);
      expect(anonymous.status).toBe(302);
      const next = new URL(anonymous.location!, bridge.url).searchParams.get('next')!;
      expect(next).toBe(path);
      const answer = await signInWith(bridge.url, next);
      expect(answer.status, path).toBe(302);
      expect(answer.location, path).toBe(path);
    }
    for (const hostile of [
      'https://evil.example/console/contacts',
      '//evil.example/console/contacts',
      '/\\evil.example/console',
      '/console/../api/v1/contacts',
      '/console/%2e%2e/api',
      '/console//evil.example',
      'javascript:alert(1)',
      '/console/contacts?q=x\r\nSet-Cookie: a=b',
    ]) {
      const answer = await signInWith(bridge.url, hostile);
      expect(answer.status, hostile).toBe(302);
      expect(answer.location, hostile).toBe('/console/contacts');
    }
  });

  it('ends the previous session of the browser when it signs in again', async () => {
    const first = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const second = await signInWith(bridge.url, '/console/status', first.cookie);
    expect(second.status).toBe(302);
    const cookie = cookieOf(second.headers, 'chatbridge_console')!;
    expect(cookie).not.toBe(first.cookie);
    expect((await consoleRequest(bridge.url, '/console/status', { cookie })).status).toBe(200);
    const old = await consoleRequest(bridge.url, '/console/status', { cookie: first.cookie });
    expect(old.status).toBe(302);
    expect(old.location).toContain('/console/sign-in');
  });

  it('puts the security headers on every /console answer', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const answers = {
      redirect: await consoleRequest(bridge.url, '/console'),
      'to sign-in': await consoleRequest(bridge.url, '/console/status'),
      'sign-in': await consoleRequest(bridge.url, '/console/sign-in'),
      page: await consoleRequest(bridge.url, '/console/status', { cookie }),
      'unknown page': await consoleRequest(bridge.url, '/console/no-such-page', { cookie }),
      'unknown page, no session': await consoleRequest(bridge.url, '/console/no/such/page'),
      'no contact': await consoleRequest(bridge.url, '/console/contacts/c_0000000000', { cookie }),
      'bad query': await consoleRequest(bridge.url, '/console/deliveries?state=nope', { cookie }),
      'csrf refused': await consoleRequest(bridge.url, '/console/deliveries/replay', { cookie, form: {} }),
      'form redirect': await consoleRequest(bridge.url, '/console/deliveries/replay', {
        cookie,
        form: { _csrf: csrf, destination: 'none' },
      }),
      'wrong method': await consoleRequest(bridge.url, '/console/contacts', { cookie, method: 'PUT' }),
      asset: await consoleRequest(bridge.url, '/console/assets/console.css'),
      'no asset': await consoleRequest(bridge.url, '/console/assets/nope.js'),
    };
    for (const [name, answer] of Object.entries(answers)) {
      const { headers } = answer;
      expect(headers.get('content-security-policy'), name).toContain("frame-ancestors 'none'");
      expect(headers.get('content-security-policy'), name).toContain("default-src 'none'");
      expect(headers.get('x-content-type-options'), name).toBe('nosniff');
      expect(headers.get('x-frame-options'), name).toBe('DENY');
      expect(headers.get('referrer-policy'), name).toBe('no-referrer');
      // The stylesheet and script are the same for everyone (revalidated); nothing else is kept.
      expect(headers.get('cache-control'), name).toBe(name === 'asset' ? 'no-cache' : 'no-store');
    }
    expect(answers.page.status).toBe(200);
    expect(answers['unknown page'].status).toBe(404);
    expect(answers['no contact'].status).toBe(404);
    expect(answers['no asset'].status).toBe(404);
  });

  it('does not echo the address asked for on its not-found pages', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const planted = 'Your-session-expired-call-555-0100';
    for (const [path, form] of [
      [`/console/contacts/c_${planted}`, undefined],
      [`/console/deliveries/${planted}`, undefined],
      [`/console/deliveries/${planted}/replay`, { _csrf: csrf }],
      [`/console/channels/${planted}/keys`, { _csrf: csrf }],
      [`/console/channels/${planted}/agent-sync`, { _csrf: csrf }],
      [`/console/assets/${planted}.js`, undefined],
      [`/console/${planted}`, undefined],
    ] as const) {
      const answer = await consoleRequest(bridge.url, path, { cookie, ...(form ? { form } : {}) });
      expect(answer.status, path).toBe(404);
      expect(answer.text, path).not.toContain('555-0100');
    }
  });

  it('links the sign-in from a refused form and the search from a not-found page', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const refused = await consoleRequest(bridge.url, '/console/deliveries/replay', { cookie, form: {} });
    expect(refused.status).toBe(403);
    expect(refused.text).toMatch(/<a href="\/console\/sign-in">[^<]+<\/a>/);
    const missing = await consoleRequest(bridge.url, '/console/contacts/c_0000000000', { cookie });
    expect(missing.status).toBe(404);
    expect(missing.text).toMatch(/<a href="\/console\/contacts">[^<]+<\/a>/);
    const unknown = await consoleRequest(bridge.url, '/console/nothing-here');
    expect(unknown.status).toBe(404);
    expect(unknown.text).toMatch(/<a href="\/console\/contacts">[^<]+<\/a>/);
  });

  it('says why sign-in cannot work when a Secure cookie comes over plain http', async () => {
    const secure = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: 'https://bridge.example' },
      },
    });
    try {
      // Over plain http (no TLS in front, or a proxy without it): the form warns at once.
      const form = await consoleRequest(secure.url, '/console/sign-in', {
        headers: { 'x-forwarded-host': 'bridge.internal:3000' },
      });
      expect(form.text).toContain('server.publicUrl');
      expect(form.text).toContain('https://bridge.example/console');
      // Not on a loopback address: browsers keep Secure cookies from http://localhost.
      for (const host of ['127.0.0.1:3000', 'localhost:3000', '[::1]:3000']) {
        const local = await consoleRequest(secure.url, '/console/sign-in', {
          headers: { 'x-forwarded-host': host },
        });
        expect(local.status).toBe(200);
        expect(local.text, host).not.toContain('server.publicUrl');
      }
      // Behind a TLS proxy (X-Forwarded-Proto: https) there is nothing to warn about.
      const proxied = await consoleRequest(secure.url, '/console/sign-in', {
        headers: { 'x-forwarded-host': 'bridge.internal:3000', 'x-forwarded-proto': 'https' },
      });
      expect(proxied.status).toBe(200);
      expect(proxied.text).not.toContain('server.publicUrl');
      // A browser that dropped the Secure cookie posts the form without it: the answer says why.
      const posted = await consoleRequest(secure.url, '/console/sign-in', {
        form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
      });
      expect(posted.status).toBe(403);
      expect(posted.text).toContain('Secure');
      expect(posted.text).toContain('https://bridge.example/console');
    } finally {
      await secure.close();
    }
  });

  it('over https, a sign-in form whose cookie is gone (expired) says it expired, not that TLS is missing', async () => {
    // The form's cookie lives 30 minutes: a form posted later comes without it, over https too.
    // The answer blamed plain http and the proxy's X-Forwarded-Proto, which were fine.
    const secure = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: 'https://bridge.example' },
      },
    });
    try {
      const overTls = { 'x-forwarded-host': 'bridge.internal:3000', 'x-forwarded-proto': 'https' };
      const form = await consoleRequest(secure.url, '/console/sign-in', { headers: overTls });
      const posted = await consoleRequest(secure.url, '/console/sign-in', {
        headers: overTls,
        form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
      });
      expect(posted.status).toBe(403);
      expect(posted.text).toContain('The sign-in form expired');
      expect(posted.text).not.toContain('server.publicUrl');
    } finally {
      await secure.close();
    }
  });
});
