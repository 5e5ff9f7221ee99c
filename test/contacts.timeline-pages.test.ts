import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminResponse, startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A timeline page is bounded by bytes as well as by entries: finished chats carry their
 * transcripts (up to limits.timelineEntryBytes each), so 200 of them would be a page of ~12 MiB.
 */
describe('timeline pages', () => {
  let bridge: TestBridge;
  let contactId = '';

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    for (let index = 0; index < 40; index++) {
      const { contact } = await bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T10:00:00.000Z',
        idempotencyKey: `chat-${index}`,
        identifiers: [{ kind: 'visitor', value: 'v1' }],
        timeline: [
          {
            at: new Date(Date.UTC(2026, 10, 1, 10, index)).toISOString(),
            type: 'conversation.finished',
            summary: `chat ${index}`,
            key: `chat-${index}`,
            data: { notes: 'x'.repeat(50_000) },
          },
        ],
      });
      contactId = contact.id;
    }
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('stops a page at about 1 MiB and pages on to every entry once', async () => {
    const first = await fetch(`${bridge.url}/api/v1/contacts/${contactId}/timeline?limit=200`, {
      headers: { authorization: `Bearer ${bridge.adminToken}` },
    });
    expect(first.status).toBe(200);
    const text = await first.text();
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
    const summaries: string[] = [];
    let before: string | null = null;
    for (let pages = 0; pages < 50; pages++) {
      const page: AdminResponse = await bridge.admin(
        'GET',
        `/api/v1/contacts/${contactId}/timeline?limit=200${before ? `&before=${before}` : ''}`,
      );
      summaries.push(...page.body.entries.map((entry: { summary: string }) => entry.summary));
      before = page.body.nextCursor;
      if (!before) break;
    }
    expect(summaries).toEqual(Array.from({ length: 40 }, (_, index) => `chat ${39 - index}`));
  });
});
