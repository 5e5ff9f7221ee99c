import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, cookieOf, fieldOf, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console's forms are HTML forms, posted as application/x-www-form-urlencoded (what every
 * browser sends for them). A body with no Content-Type was read as a form all the same, while the
 * admin API refuses a body without its type (415, since issue 12): now the console refuses it too,
 * with a 415 page saying what to send. A post with no body at all needs no type (it has nothing
 * to declare; its missing CSRF token refuses it).
 */

/** A POST whose headers are exactly these: fetch would add `text/plain` to a string body. */
function post(
  base: string,
  path: string,
  headers: Record<string, string>,
  body: string,
): Promise<{ status: number; type: string | undefined; text: string; location: string | undefined }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: res.headers['content-type'],
            text: Buffer.concat(chunks).toString(),
            location: res.headers.location,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('console forms need their type', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({});
  });
  afterAll(() => bridge.close());

  async function signInForm() {
    const page = await consoleRequest(bridge.url, '/console/sign-in');
    const pre = cookieOf(page.headers, 'chatbridge_console_pre')!;
    const body = new URLSearchParams({
      _pre: fieldOf(page.text, '_pre') ?? '',
      next: '/console/contacts',
      token: TEST_ADMIN_TOKEN,
    }).toString();
    return { cookie: pre, body };
  }

  it('refuses a sign-in form sent without a Content-Type: 415, saying what to send', async () => {
    const { cookie, body } = await signInForm();
    const refused = await post(bridge.url, '/console/sign-in', { cookie }, body);
    expect(refused.status).toBe(415);
    expect(refused.type).toMatch(/^text\/html/);
    expect(refused.text).toContain('came without a Content-Type');
    expect(refused.text).toContain('application/x-www-form-urlencoded');
    // The same form with its type signs in.
    const taken = await post(
      bridge.url,
      '/console/sign-in',
      { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    );
    // Relative to the page (src/console/relative.ts): /console/contacts from /console/sign-in.
    expect([taken.status, taken.location]).toEqual([302, '../console/contacts']);
  });

  it('refuses an action form without a Content-Type, or of another type, with 415 and does nothing', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const body = new URLSearchParams({ _csrf: csrf }).toString();
    for (const type of [undefined, 'text/plain', 'application/json', 'multipart/form-data; boundary=x']) {
      const refused = await post(
        bridge.url,
        '/console/sign-out',
        { cookie, ...(type ? { 'content-type': type } : {}) },
        body,
      );
      expect(refused.status, String(type)).toBe(415);
      expect(refused.text, String(type)).toContain('application/x-www-form-urlencoded');
    }
    // Still signed in: none of them was taken.
    expect((await consoleRequest(bridge.url, '/console/contacts', { cookie })).status).toBe(200);
    // A form of the right type, with or without a charset, is taken.
    const out = await post(
      bridge.url,
      '/console/sign-out',
      { cookie, 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      body,
    );
    expect([out.status, out.location]).toEqual([302, '../console/sign-in?notice=signed-out']);
  });

  it('refuses a form declaring a charset other than UTF-8 with 415 naming it, and does nothing', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const body = new URLSearchParams({ _csrf: csrf }).toString();
    for (const charset of ['windows-1251', 'ISO-8859-1', '"koi8-r"']) {
      const refused = await post(
        bridge.url,
        '/console/sign-out',
        { cookie, 'content-type': `application/x-www-form-urlencoded; charset=${charset}` },
        body,
      );
      expect(refused.status, charset).toBe(415);
      expect(refused.type).toMatch(/^text\/html/);
      expect(refused.text, charset).toContain(charset.replace(/"/g, ''));
      expect(refused.text, charset).toContain('UTF-8');
    }
    expect((await consoleRequest(bridge.url, '/console/contacts', { cookie })).status).toBe(200);
    // What browsers send: UTF-8 in any case, or no charset at all.
    const out = await post(
      bridge.url,
      '/console/sign-out',
      { cookie, 'content-type': 'application/x-www-form-urlencoded;charset=utf-8' },
      body,
    );
    expect([out.status, out.location]).toEqual([302, '../console/sign-in?notice=signed-out']);
  });

  it('refuses a post with no body and no type for its missing CSRF token, not its type', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const empty = await post(bridge.url, '/console/deliveries/replay', { cookie }, '');
    expect(empty.status).toBe(403);
    expect(empty.text).toContain('security token');
  });
});
