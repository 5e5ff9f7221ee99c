import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * A contact is often several merged records, each holding the name: a find is bounded by
 * contacts, so "one more than shown" still tells a caller that the list was cut.
 */
describe('finding contacts by a name when each contact is several merged records', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    const observe = (
      key: string,
      identifiers: Array<{ kind: string; value: string; provenance?: 'verified' }>,
    ) =>
      bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T10:00:00.000Z',
        idempotencyKey: key,
        identifiers,
        names: ['Anna Test'],
      });
    // 60 contacts, each two records (two visitor ids) merged by a verified e-mail.
    for (let index = 0; index < 60; index++) {
      const email = { kind: 'email', value: `p${index}@example.com`, provenance: 'verified' as const };
      await observe(`a-${index}`, [{ kind: 'visitor', value: `a${index}` }]);
      await observe(`b-${index}`, [{ kind: 'visitor', value: `b${index}` }, email]);
      await observe(`c-${index}`, [{ kind: 'visitor', value: `a${index}` }, email]);
    }
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('loads as many contacts as asked, however many records each has', async () => {
    const [one] = await bridge.bridge.context.contacts.find({ email: 'p3@example.com' });
    expect(one?.records).toHaveLength(2);
    const found = await bridge.bridge.context.contacts.find({ name: 'Anna Test', limit: 51 });
    expect(found).toHaveLength(51);
    expect(new Set(found.map((contact) => contact.id)).size).toBe(51);
    expect(await bridge.bridge.context.contacts.find({ name: 'Anna Test' })).toHaveLength(60);
  });

  it('says in the console that more contacts matched than it lists', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/contacts?q=Anna%20Test', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h2>More than 50 contacts</h2>');
    expect(page.text.match(/<li class="card">/g)).toHaveLength(50);
  });
});
