import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * The admin lists that take a `limit` page on with `nextCursor` (as `before`), as the timeline
 * and the journal do: past the largest page the rest was out of reach of the API, the CLI and
 * the console. Over HTTP, on Redis under the test's own key prefix.
 */

const SECRET = `whsec_${Buffer.from('pages-test-secret-0123456789abcdef').toString('base64')}`;
const TOKEN = 'echo-channel-token-pages01';
/** The conflicts test's channel: its observations are routed to no destination (see beforeAll). */
const PEOPLE_TOKEN = 'echo-channel-token-pages02';

describe('cursor-paged admin lists', () => {
  let crm: Receiver;
  let bridge: TestBridge;
  let visitor = 0;

  beforeAll(async () => {
    crm = await startReceiver({ secret: SECRET });
    crm.respond(() => ({ kind: 'status', status: 422, body: 'no such pipeline' }));
    bridge = await startTestBridge({
      store: 'redis',
      adapters: [echoAdapter],
      config: {
        channels: [
          { id: 'site', vendor: 'echo', token: TOKEN },
          { id: 'people', vendor: 'echo', token: PEOPLE_TOKEN },
        ],
        destinations: [
          {
            id: 'crm',
            url: crm.url,
            secret: SECRET,
            events: ['message.received'],
            retrySchedule: ['0s'],
            timeoutMs: 1000,
            // Only the deliveries the delivery tests make: every echo webhook has a
            // message.received event, and the conflicts test's ten (eight in one contact's lane,
            // attempted one after another) were still failing on a loaded machine when the console
            // test counted: its wait ended early or never, and the console listed one more than `all`.
            filter: { channels: ['site'] },
          },
        ],
        identity: { maxMergeSize: 2 },
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await crm?.close();
  });

  const failedCount = async () =>
    (await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=500')).body.deliveries.length as number;

  /**
   * `count` new failed deliveries (the receiver refuses each with a 422), waited for by outcome:
   * until each webhook's contact has its failed delivery, then exactly one each, none more. (A
   * wait for the total to reach before + count was ended early, or never, by any delivery of
   * an earlier test still arriving.) The tests that call it allow for its 30 s wait.
   */
  async function failMore(count: number) {
    const before = await failedCount();
    const contacts: string[] = [];
    for (let i = 0; i < count; i++) {
      visitor += 1;
      const posted = await bridge.post(`/webhooks/echo/site/${TOKEN}`, {
        event: 'message',
        visitor: `v${visitor}`,
        text: `hello ${visitor}`,
      });
      expect(posted.status).toBe(200);
      contacts.push(posted.body.contactId);
    }
    const waiting = async () => {
      const failed = new Set(
        (await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=500')).body.deliveries.map(
          (item: { contactId: string }) => item.contactId,
        ),
      );
      return contacts.filter((contact) => !failed.has(contact));
    };
    await expect.poll(waiting, { timeout: 30_000, interval: 50 }).toEqual([]);
    expect(await failedCount()).toBe(before + count);
  }

  async function walk(
    path: string,
    key: 'deliveries' | 'conflicts',
    between?: (page: number) => Promise<void>,
  ) {
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 50; page++) {
      const separator = path.includes('?') ? '&' : '?';
      const response: { status: number; body: any } = await bridge.admin(
        'GET',
        cursor === null ? path : `${path}${separator}before=${encodeURIComponent(cursor)}`,
      );
      expect(response.status).toBe(200);
      seen.push(
        ...response.body[key].map((item: { id?: string; at?: string }) => JSON.stringify(item.id ?? item)),
      );
      cursor = response.body.nextCursor;
      expect(cursor === null || typeof cursor === 'string').toBe(true);
      if (cursor === null) return seen;
      await between?.(page);
    }
    throw new Error('no last page in 50');
  }

  it('GET /deliveries reads on past a page with nextCursor, none skipped or repeated while new ones arrive', async () => {
    await failMore(5);
    const seen = await walk('/api/v1/deliveries?state=failed&limit=2', 'deliveries', async (page) => {
      if (page === 0) await failMore(2); // arrive between the first and the second page
    });
    const all = (await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=500')).body.deliveries.map(
      (item: { id: string }) => JSON.stringify(item.id),
    );
    expect(all).toHaveLength(7);
    expect(seen).toEqual(all);

    // Across the states too (no `state`), one at a time.
    const everyOne = await walk('/api/v1/deliveries?limit=1', 'deliveries');
    expect(everyOne).toEqual(
      (await bridge.admin('GET', '/api/v1/deliveries?limit=500')).body.deliveries.map(
        (item: { id: string }) => JSON.stringify(item.id),
      ),
    );

    // One page holding everything says so: no cursor to an empty page.
    const whole = await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=7');
    expect(whole.body.deliveries).toHaveLength(7);
    expect(whole.body.nextCursor).toBeNull();
    // Room for failMore's two waits (up to 30 s each) past the default 20 s.
  }, 90_000);

  it('GET /deliveries refuses a cursor it did not give out, naming `before`', async () => {
    const first = await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=1');
    expect(typeof first.body.nextCursor).toBe('string');
    const forged = Buffer.from('failed|soon|dlv_x').toString('base64url');
    for (const before of ['nonsense', forged]) {
      const bad = await bridge.admin('GET', `/api/v1/deliveries?state=failed&before=${before}`);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('invalid_query');
      expect(bad.body.error.issues[0].path).toBe('before');
    }
    // A failed listing's cursor is no place in the pending one.
    const other = await bridge.admin(
      'GET',
      `/api/v1/deliveries?state=pending&before=${first.body.nextCursor}`,
    );
    expect(other.status).toBe(400);
    expect(other.body.error.issues[0].path).toBe('before');
  });

  it('GET /identity/conflicts reads on past a page with nextCursor, none skipped or repeated while new ones come', async () => {
    const observe = async (body: Record<string, string>) =>
      expect(
        (await bridge.post(`/webhooks/echo/people/${PEOPLE_TOKEN}`, { event: 'seen', ...body })).status,
      ).toBe(200);
    await observe({ visitor: 'c1', email: 'c1@example.org' });
    await observe({ visitor: 'c2', phone: '+79160000031' });
    await observe({ visitor: 'c3', person: 'p3' });
    // Three records for one observation, over identity.maxMergeSize (2): refused, one conflict each.
    let refusals = 0;
    const refuse = async (count: number) => {
      for (let i = 0; i < count; i++) {
        refusals += 1;
        await observe({
          visitor: 'c3',
          email: 'c1@example.org',
          phone: '+79160000031',
          at: new Date(Date.UTC(2026, 0, 1, 0, 0, refusals)).toISOString(),
        });
      }
    };
    await refuse(5);
    const before = (await bridge.admin('GET', '/api/v1/identity/conflicts?limit=500')).body;
    expect(before.conflicts).toHaveLength(5);
    expect(before.nextCursor).toBeNull();
    const seen = await walk('/api/v1/identity/conflicts?limit=2', 'conflicts', async (page) => {
      if (page === 0) await refuse(2); // newer than every page after the first
    });
    expect(seen).toEqual(before.conflicts.map((item: unknown) => JSON.stringify(item)));
    expect((await bridge.admin('GET', '/api/v1/identity/conflicts?limit=500')).body.conflicts).toHaveLength(
      7,
    );

    const bad = await bridge.admin('GET', '/api/v1/identity/conflicts?before=nonsense');
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues[0].path).toBe('before');
  });

  it('the console lists every delivery, a page of 100 at a time, by the Next deliveries link', async () => {
    await failMore(101 - Math.min(100, await failedCount()));
    const all = (await bridge.admin('GET', '/api/v1/deliveries?state=failed&limit=500')).body.deliveries.map(
      (item: { id: string }) => item.id,
    );
    expect(all.length).toBeGreaterThan(100);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const seen: string[] = [];
    let path: string | undefined = '/console/deliveries?state=failed';
    let pages = 0;
    while (path !== undefined && pages < 10) {
      const page = await consoleRequest(bridge.url, path, { cookie });
      expect(page.status).toBe(200);
      for (const match of page.text.matchAll(/<a class="mono" href="\/console\/deliveries\/(dlv_[^"?]+)/g))
        seen.push(match[1]!);
      path = /<a class="button" href="([^"]+)">Next deliveries<\/a>/
        .exec(page.text)?.[1]
        ?.replaceAll('&amp;', '&');
      pages += 1;
    }
    expect(pages).toBe(2);
    expect(seen).toEqual(all);
    // About a hundred webhooks, each delivered and refused: on a machine at load 15–20 this test
    // took up to 37 s, past the default 20 s.
  }, 120_000);
});
