import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgentLinks } from '../src/console/links.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console's timeline filter: a GET form above the contact's timeline (a channel of the
 * contact, an entry type), carried by the Older/Newest links, on the signed-in contact page and
 * on agent links alike. Support staff looking for chats far back read 25 matching entries a page
 * instead of paging through everything else.
 */
const MASTER_KEY = Buffer.alloc(32, 7);
const hrefOf = (href: string) => href.replaceAll('&amp;', '&');

describe('console timeline filter', () => {
  let bridge: TestBridge;
  let contactId = '';
  let cookie = '';
  const now = () => new Date('2026-11-05T10:00:00Z');

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      now,
      start: false,
      config: {
        secrets: { masterKey: MASTER_KEY.toString('base64') },
        channels: [
          { id: 'site', vendor: 'jivochat', name: 'Web site', token: 'site-token-0123456789abcdef' },
          { id: 'app', vendor: 'jivochat', name: 'Mobile app', token: 'app-token-0123456789abcdef' },
          { id: 'other', vendor: 'jivochat', token: 'other-token-0123456789abcdef' },
        ],
      },
    });
    for (let index = 0; index < 30; index++) {
      for (const channelId of ['site', 'app']) {
        const at = new Date(
          Date.UTC(2026, 10, 1, 10, 2 * index + (channelId === 'app' ? 1 : 0)),
        ).toISOString();
        const { contact } = await bridge.bridge.context.contacts.observe({
          channelId,
          vendor: 'jivochat',
          at,
          idempotencyKey: `${channelId}-${index}`,
          identifiers: [{ kind: 'person', value: 'filter-person' }],
          names: ['Filip Filter'],
          timeline: [
            {
              at,
              type: channelId === 'site' ? 'conversation.finished' : 'message.received',
              summary: `${channelId} entry ${index}`,
            },
          ],
        });
        contactId = contact.id;
      }
    }
    ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
  });
  afterAll(async () => {
    await bridge?.close();
  });

  const summaries = (text: string) =>
    [...text.matchAll(/<div class="summary">([^<]*)<\/div>/g)].map((match) => match[1]!);
  const olderOf = (text: string) => /<a class="button" href="([^"]+)">Older entries<\/a>/.exec(text)?.[1];

  it("offers the contact's channels and the entry types in a GET form above the timeline", async () => {
    const page = await consoleRequest(bridge.url, `/console/contacts/${contactId}`, { cookie });
    expect(page.status).toBe(200);
    const form = /<form method="get" action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/.exec(page.text);
    expect(form?.[1]).toBe(`/console/contacts/${contactId}#timeline`);
    const channel = /<select id="tl-channel" name="channel">([\s\S]*?)<\/select>/.exec(form![2]!)![1]!;
    // The contact's channels, by name; not a configured channel it was never seen in.
    expect([...channel.matchAll(/<option value="([^"]*)"[^>]*>([^<]*)</g)].map((m) => [m[1], m[2]])).toEqual([
      ['', 'any'],
      ['site', 'Web site'],
      ['app', 'Mobile app'],
    ]);
    const type = /<select id="tl-type" name="type">([\s\S]*?)<\/select>/.exec(form![2]!)![1]!;
    expect(type).toContain('<option value="conversation.finished">conversation.finished</option>');
    expect(type).toContain('<option value="message.received">message.received</option>');
    // No inline script for it (the CSP allows none).
    expect(page.text).not.toMatch(/<script(?![^>]*\bsrc=)/);
  });

  it('shows 25 matching entries a page and carries the filter in Older and Newest links', async () => {
    const first = await consoleRequest(bridge.url, `/console/contacts/${contactId}?channel=app`, { cookie });
    expect(first.status).toBe(200);
    expect(summaries(first.text)).toEqual(Array.from({ length: 25 }, (_, i) => `app entry ${29 - i}`));
    expect(first.text).toContain('<option value="app" selected>Mobile app</option>');
    const older = olderOf(first.text)!;
    expect(older).toMatch(
      new RegExp(`^/console/contacts/${contactId}\\?channel=app&amp;before=[^"&]+#timeline$`),
    );
    const second = await consoleRequest(bridge.url, hrefOf(older), { cookie });
    expect(second.status).toBe(200);
    expect(summaries(second.text)).toEqual(Array.from({ length: 5 }, (_, i) => `app entry ${4 - i}`));
    expect(second.text).toContain(
      `href="/console/contacts/${contactId}?channel=app#timeline">Newest entries</a>`,
    );

    const typed = await consoleRequest(
      bridge.url,
      `/console/contacts/${contactId}?channel=&type=conversation.finished`,
      { cookie },
    );
    expect(summaries(typed.text)).toEqual(Array.from({ length: 25 }, (_, i) => `site entry ${29 - i}`));
    expect(olderOf(typed.text)).toContain('?type=conversation.finished&amp;before=');
    expect(typed.text).toContain('<option value="conversation.finished" selected>');

    const none = await consoleRequest(bridge.url, `/console/contacts/${contactId}?type=call.updated`, {
      cookie,
    });
    expect(none.status).toBe(200);
    expect(summaries(none.text)).toEqual([]);
    expect(none.text).toContain('No entries match this filter.');
  });

  it('refuses a channel the contact was not seen in, or a malformed type, naming the parameter', async () => {
    for (const [query, name] of [
      ['channel=other', 'channel'],
      ['channel=nope', 'channel'],
      ['type=Not%20a%20type', 'type'],
    ]) {
      const page = await consoleRequest(bridge.url, `/console/contacts/${contactId}?${query}`, { cookie });
      expect(page.status, query).toBe(400);
      expect(page.text, query).toContain(`The “${name}” value in this address is not one the page takes.`);
    }
  });

  it('filters on an agent link too, and keeps its links on the agent link', async () => {
    const links = createAgentLinks({ masterKey: MASTER_KEY, ttlMs: 3_600_000, publicUrl: undefined, now });
    const path = links.path(contactId);
    const page = await consoleRequest(bridge.url, `${path}?channel=site`);
    expect(page.status).toBe(200);
    expect(summaries(page.text)).toEqual(Array.from({ length: 25 }, (_, i) => `site entry ${29 - i}`));
    expect(page.text).toContain(`<form method="get" action="${path}#timeline"`);
    const older = olderOf(page.text)!;
    expect(older.startsWith(`${path}?channel=site&amp;before=`)).toBe(true);
    const second = await consoleRequest(bridge.url, hrefOf(older));
    expect(summaries(second.text)).toEqual(Array.from({ length: 5 }, (_, i) => `site entry ${4 - i}`));
    expect(second.text).toContain(`href="${path}?channel=site#timeline">Newest entries</a>`);
  });
});
