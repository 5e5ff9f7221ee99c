import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console names a channel one way: its vendor, then its name (`JivoChat website`; the id when
 * it has no name), as the contact page, its timeline and the timeline filter do. A search result
 * said `JivoChat (shop-site)` of the contact its page, one click on, said `JivoChat website` of.
 */
describe('console channel names', () => {
  let bridge: TestBridge;
  let cookie = '';

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        channels: [
          { id: 'shop-site', vendor: 'jivochat', name: 'website', token: 'site-token-0123456789abcdef' },
          { id: 'app', vendor: 'livetex', token: 'app-token-0123456789abcdef' },
        ],
      },
    });
    for (const [channelId, vendor] of [
      ['shop-site', 'jivochat'],
      ['app', 'livetex'],
    ] as const) {
      const at = new Date().toISOString();
      await bridge.bridge.context.contacts.observe({
        channelId,
        vendor,
        at,
        idempotencyKey: `names-${channelId}`,
        identifiers: [{ kind: 'email', value: 'maria@example.org' }],
        names: ['Maria'],
        timeline: [{ at, type: 'conversation.started', summary: `${channelId} chat` }],
      });
    }
    ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it("a search result names the contact's channels as its page does", async () => {
    const found = await consoleRequest(bridge.url, '/console/contacts?q=maria%40example.org', { cookie });
    expect(found.status).toBe(200);
    const card = /<li class="card">([\s\S]*?)<\/li>/.exec(found.text)?.[1] ?? '';
    expect(card).toContain('JivoChat website, LiveTex app · updated');
    expect(card).not.toContain('(shop-site)');
    const id = /href="\/console\/contacts\/([^"]+)"/.exec(card)?.[1];
    const page = await consoleRequest(bridge.url, `/console/contacts/${id}`, { cookie });
    expect(page.text).toContain('<span class="tag">JivoChat</span> website:');
    expect(page.text).toContain('<span class="tag">LiveTex</span> app:');
  });

  it("the journal names an entry's channel and vendor so too, and its filter offers channels by name", async () => {
    const refused = await fetch(`${bridge.url}/webhooks/livetex/app/app-token-0123456789abcdef`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: 'not json',
    });
    expect(refused.status).toBe(400);
    const journal = await consoleRequest(bridge.url, '/console/journal', { cookie });
    expect(journal.status).toBe(200);
    expect(journal.text).toMatch(/<span class="tag">rejected<\/span> LiveTex app<\/div>/);
    const filter = /<select id="channel" name="channel">([\s\S]*?)<\/select>/.exec(journal.text)![1]!;
    expect([...filter.matchAll(/<option value="([^"]*)"[^>]*>([^<]*)</g)].map((m) => [m[1], m[2]])).toEqual([
      ['', 'any'],
      ['shop-site', 'website'],
      ['app', 'app'],
    ]);
  });
});
