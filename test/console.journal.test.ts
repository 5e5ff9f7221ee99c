import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console's journal page and its error pages: what the user is told when a list is cut or an
 * input is wrong (DESIGN §11: "empty and error states that say what to do").
 */
const JIVO_TOKEN = 'site-token-0123456789abcdef';

describe('console journal and error pages', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        channels: [
          { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN },
          { id: 'app', vendor: 'livetex', token: 'app-token-0123456789abcdef' },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('names the input that was wrong on a 400 page', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/journal?kind=bogus', { cookie });
    expect(page.status).toBe(400);
    // A sentence naming the parameter, and what it takes: not zod's "Invalid option: expected
    // one of \"rejected\"|\"unhandled\"|\"\"".
    expect(page.text).toContain(
      '<p class="error" role="alert">The “kind” value in this address is not one the page takes.</p>',
    );
    expect(page.text).toContain(
      '<li><code>kind</code>: must be rejected or unhandled (or empty, for any)</li>',
    );
    expect(page.text).toContain('Correct the value named above');
    expect(page.text).not.toMatch(/Invalid option|expected one of|&quot;rejected&quot;/);

    const deliveries = await consoleRequest(bridge.url, '/console/deliveries?state=lost', { cookie });
    expect(deliveries.status).toBe(400);
    expect(deliveries.text).toContain(
      '<li><code>state</code>: must be pending, delivered or failed (or empty, for any)</li>',
    );

    const long = await consoleRequest(bridge.url, `/console/journal?before=${'9'.repeat(41)}`, { cookie });
    expect(long.status).toBe(400);
    expect(long.text).toContain(
      '<li><code>before</code>: is too long: this page takes at most 40 characters</li>',
    );
    expect(long.text).not.toMatch(/Too big|expected string/);

    const twice = await consoleRequest(bridge.url, '/console/journal?kind=rejected&kind=unhandled', {
      cookie,
    });
    expect(twice.status).toBe(400);
    expect(twice.text).toContain('<li><code>kind</code>: is given more than once; give it once</li>');

    // A cursor the list never gave out: the list's own API wording ("invalid cursor") is not shown.
    const cursor = await consoleRequest(bridge.url, '/console/journal?before=not-a-cursor', { cookie });
    expect(cursor.status).toBe(400);
    expect(cursor.text).toContain(
      '<p class="error" role="alert">The “before” value in this address is not one the page takes.</p>',
    );
    expect(cursor.text).toContain(
      '<li><code>before</code>: is not a place in this list; leave it out to start from the newest entries</li>',
    );
    expect(cursor.text).not.toMatch(/invalid cursor|this API returned/);

    const both = await consoleRequest(bridge.url, '/console/journal?kind=x&channel=y&channel=z', { cookie });
    expect(both.text).toContain(
      'The “channel” and “kind” values in this address are not ones the page takes.',
    );
  });

  it('says when the journal list is cut, and pages on to the older entries', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (let index = 0; index < 60; index++) {
      await bridge.bridge.context.journal.record({
        channelId: index % 2 ? 'site' : 'app',
        vendor: index % 2 ? 'jivochat' : 'livetex',
        kind: 'rejected',
        reason: `reason-${index}.`,
        rawBody: '{}',
      });
    }
    const reasons = (text: string) => [...text.matchAll(/reason-(\d+)\./g)].map((match) => Number(match[1]));
    const first = await consoleRequest(bridge.url, '/console/journal', { cookie });
    expect(first.status).toBe(200);
    expect(reasons(first.text)).toEqual(Array.from({ length: 50 }, (_, index) => 59 - index));
    expect(first.text).toContain('older ones on the next page');
    const older = /<a class="button" href="([^"]+)">Older entries<\/a>/
      .exec(first.text)![1]!
      .replaceAll('&amp;', '&');
    const second = await consoleRequest(bridge.url, older, { cookie });
    expect(second.status).toBe(200);
    expect(reasons(second.text)).toEqual(Array.from({ length: 10 }, (_, index) => 9 - index));
    expect(second.text).toContain('that is all of them');
    expect(second.text).not.toContain('Older entries');
    expect(second.text).toContain('<a href="/console/journal">Newest entries</a>');

    // The filters are kept on the way on.
    const site = await consoleRequest(bridge.url, '/console/journal?channel=site&kind=rejected', { cookie });
    expect(reasons(site.text)).toEqual(Array.from({ length: 30 }, (_, index) => 59 - 2 * index));
    expect(site.text).not.toContain('Older entries');

    const hostile = await consoleRequest(bridge.url, '/console/journal?before=%3Cscript%3E', { cookie });
    expect(hostile.status).toBe(400);
    expect(hostile.text).toMatch(/<code>before<\/code>/);
    expect(hostile.text).not.toContain('<script>');
  });

  it('shows hostile journal payloads as text', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    await bridge.bridge.context.journal.record({
      channelId: 'site',
      vendor: 'jivochat<img src=x onerror=alert(1)>',
      kind: 'unhandled',
      reason: '<script>alert("reason")</script>',
      rawBody: '</pre><script>alert("body")</script><a href="javascript:alert(1)">x</a>',
      contentType: 'text/html"><svg onload=alert(1)>',
    });
    const page = await consoleRequest(bridge.url, '/console/journal?kind=unhandled', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).not.toMatch(/<script>alert|<img src=x|<svg onload|<\/pre><script|<a href="javascript/);
    expect(page.text).toContain('&lt;script&gt;alert(&quot;reason&quot;)&lt;/script&gt;');
    expect(page.text).toContain('&lt;/pre&gt;&lt;script&gt;alert(&quot;body&quot;)');
  });
});
