import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * A search-only e-mail or phone (identity.mergeOnVisitorTyped: [person]) is shared by every
 * contact whose visitor typed it, however many: a find is bounded and says when it was cut.
 */
describe('finding contacts by a value many contacts share', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        identity: { mergeOnVisitorTyped: ['person'] },
        channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
      },
    });
    for (let index = 0; index < 130; index++) {
      await bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T10:00:00.000Z',
        idempotencyKey: `typed-${index}`,
        identifiers: [
          { kind: 'visitor', value: `v${index}` },
          { kind: 'phone', value: '+79123456789', provenance: 'visitor' },
        ],
        names: [`Visitor ${index}`],
      });
    }
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('answers at most 100 contacts from the admin API, with truncated: true', async () => {
    const answer = await bridge.admin('GET', '/api/v1/contacts?phone=89123456789');
    expect(answer.status).toBe(200);
    expect(answer.body.contacts).toHaveLength(100);
    expect(answer.body.truncated).toBe(true);
    const one = await bridge.admin('GET', '/api/v1/contacts?identity=visitor:web:v7');
    expect(one.body.contacts.map((contact: { names: string[] }) => contact.names)).toEqual([['Visitor 7']]);
    expect(one.body.truncated).toBe(false);
  });

  it('says in the console that more contacts matched than it lists', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(
      bridge.url,
      `/console/contacts?q=${encodeURIComponent('8 912 345-67-89')}`,
      {
        cookie,
      },
    );
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h2>More than 50 contacts</h2>');
    expect(page.text).toContain('Only the first 50 are listed');
    expect(page.text.match(/<li class="card">/g)).toHaveLength(50);
    const one = await consoleRequest(bridge.url, '/console/contacts?q=Visitor%20129', { cookie });
    expect(one.text).toContain('<h2>1 contact</h2>');
    expect(one.text).not.toContain('Only the first');
  });
});
