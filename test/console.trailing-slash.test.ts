import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, cookieOf, fieldOf } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * A console address typed with a trailing slash (`/console/sign-in/`): the router matches it as
 * the page, but the page's cookies take their path from the address's directory (they name no
 * Path, so that the console works under a proxy's path prefix), which would be
 * `/console/sign-in`: a session no other page is sent. The sign-in form posted there answered 500
 * (the slow tier's route fuzzer found it). Now such an address is redirected to the page's own,
 * 308 so that a posted form keeps its method and body, and a cookie-setting page reached by any
 * other spelling is no console page (404).
 */
describe('console addresses with a trailing slash', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ store: 'memory', start: false });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('redirects a page, with its query, to the address without the slash', async () => {
    const page = await consoleRequest(bridge.url, '/console/sign-in/?next=%2Fconsole%2Fjournal');
    expect(page.status).toBe(308);
    expect(page.location).toBe('/console/sign-in?next=%2Fconsole%2Fjournal');
    // Relative, as every console redirect is (a proxy's path prefix stays).
    expect(page.headers.get('location')).toBe('../../console/sign-in?next=%2Fconsole%2Fjournal');
    expect((await consoleRequest(bridge.url, '/console/contacts//')).location).toBe('/console/contacts');
  });

  it('a sign-in posted there is sent on (308, never 500), and the page itself signs in', async () => {
    const form = await consoleRequest(bridge.url, '/console/sign-in');
    const pre = cookieOf(form.headers, 'chatbridge_console_pre') ?? '';
    const fields = {
      _pre: fieldOf(form.text, '_pre') ?? '',
      next: '/console/contacts',
      token: TEST_ADMIN_TOKEN,
    };
    const slashed = await consoleRequest(bridge.url, '/console/sign-in/', { cookie: pre, form: fields });
    expect(slashed.status).toBe(308);
    expect(slashed.location).toBe('/console/sign-in');
    expect(slashed.headers.getSetCookie()).toEqual([]);
    const signedIn = await consoleRequest(bridge.url, slashed.location!, { cookie: pre, form: fields });
    expect(signedIn.status).toBe(302);
    expect(cookieOf(signedIn.headers, 'chatbridge_console')).toBeDefined();
  });

  it('leaves /console/ itself as it was (signed out: to the sign-in page, then back there)', async () => {
    const root = await consoleRequest(bridge.url, '/console/');
    expect(root.status).toBe(302);
    expect(root.location).toBe('/console/sign-in?next=%2Fconsole%2F');
  });
});
