import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TIMELINE_SCAN_ENTRIES } from '../src/contacts/engine.js';
import type { Observation, TimelineEntry } from '../src/contacts/types.js';
import { type AdminResponse, startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The contact timeline filtered by channel and by entry type (admin API `channel`, `type`):
 * non-matching entries are skipped before they count toward `limit`, across every record merged
 * into the contact, the cursor pages on with the filter, and a filter that matches nothing in a
 * long history answers in bounded pages (`partial`) rather than reading it all at once.
 */
const channels = [
  { id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' },
  { id: 'app', vendor: 'jivochat', token: 'app-token-0123456789abcdef' },
];

describe.each(['memory', 'redis'] as const)('timeline filter (%s store)', (storeKind) => {
  let bridge: TestBridge;
  let contactId = '';
  let quietId = '';
  let all: TimelineEntry[] = [];

  const observe = (observation: Observation) => bridge.bridge.context.contacts.observe(observation);
  const minute = (n: number) => new Date(Date.UTC(2026, 10, 1, 10, n)).toISOString();

  async function readAll(query: string, limit: number) {
    const pages: Array<{ entries: TimelineEntry[]; nextCursor: string | null; partial?: true }> = [];
    let before: string | null = null;
    for (let count = 0; count < 200; count++) {
      const answer: AdminResponse = await bridge.admin(
        'GET',
        `/api/v1/contacts/${contactId}/timeline?limit=${limit}${query}${before ? `&before=${before}` : ''}`,
      );
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      pages.push(answer.body);
      before = answer.body.nextCursor;
      if (!before) break;
    }
    return pages;
  }

  beforeAll(async () => {
    bridge = await startTestBridge({ store: storeKind, start: false, config: { channels } });
    // Two records, one per channel, each with its own timeline, merged later by a person id.
    for (let index = 0; index < 30; index++) {
      await observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: minute(2 * index),
        idempotencyKey: `web-${index}`,
        identifiers: [{ kind: 'visitor', value: 'w1', channelId: 'web' }],
        timeline: [
          { at: minute(2 * index), type: 'conversation.finished', summary: `web ${index}`, key: 'f' },
        ],
      });
      await observe({
        channelId: 'app',
        vendor: 'jivochat',
        at: minute(2 * index + 1),
        idempotencyKey: `app-${index}`,
        identifiers: [{ kind: 'visitor', value: 'a1', channelId: 'app' }],
        timeline: [
          {
            at: minute(2 * index + 1),
            type: index % 3 === 0 ? 'conversation.finished' : 'message.received',
            summary: `app ${index}`,
            key: 'm',
          },
        ],
      });
    }
    for (const [channelId, vendor, value] of [
      ['web', 'jivochat', 'w1'],
      ['app', 'jivochat', 'a1'],
    ] as const) {
      const { contact } = await observe({
        channelId,
        vendor,
        at: minute(100),
        idempotencyKey: `join-${channelId}`,
        identifiers: [
          { kind: 'visitor', value, channelId },
          { kind: 'person', value: 'p1' },
        ],
      });
      contactId = contact.id;
    }
    const { contact } = await observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: minute(0),
      idempotencyKey: 'quiet',
      identifiers: [{ kind: 'visitor', value: 'quiet', channelId: 'web' }],
      timeline: [{ at: minute(0), type: 'conversation.started', summary: 'quiet', key: 's' }],
    });
    quietId = contact.id;
    all = (await readAll('', 200)).flatMap((page) => page.entries);
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('has one contact of two records across both channels (the setup the filters need)', async () => {
    const found = await bridge.admin('GET', `/api/v1/contacts/${contactId}`);
    expect(found.body.records).toHaveLength(2);
    expect(all.filter((entry) => entry.type !== 'contact.merged')).toHaveLength(60);
  });

  it.each([
    ['&channel=app', (entry: TimelineEntry) => entry.channelId === 'app'],
    ['&type=conversation.finished', (entry: TimelineEntry) => entry.type === 'conversation.finished'],
    [
      '&channel=app&type=conversation.finished',
      (entry: TimelineEntry) => entry.channelId === 'app' && entry.type === 'conversation.finished',
    ],
    ['&channel=web&type=', (entry: TimelineEntry) => entry.channelId === 'web'],
  ])(
    'pages %s across the merged records: full pages of matching entries, each once',
    async (query, matches) => {
      const expected = all.filter(matches).map((entry) => entry.id);
      expect(expected.length).toBeGreaterThan(7);
      const pages = await readAll(query, 7);
      expect(pages.flatMap((page) => page.entries.map((entry) => entry.id))).toEqual(expected);
      // Every page but the last holds `limit` matching entries: skipped ones do not count.
      for (const page of pages.slice(0, -1)) expect(page.entries).toHaveLength(7);
      expect(pages.every((page) => page.partial === undefined)).toBe(true);
    },
  );

  it('answers an empty page for a filter nothing matches', async () => {
    const answer = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?type=call.updated`);
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ entries: [], nextCursor: null });
  });

  it('takes a cursor of an unfiltered page and reads on with the filter', async () => {
    const first = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?limit=5`);
    const next = await bridge.admin(
      'GET',
      `/api/v1/contacts/${contactId}/timeline?limit=3&channel=web&before=${first.body.nextCursor}`,
    );
    const expected = all
      .slice(5)
      .filter((entry) => entry.channelId === 'web')
      .slice(0, 3)
      .map((entry) => entry.id);
    expect(next.body.entries.map((entry: TimelineEntry) => entry.id)).toEqual(expected);
  });

  it('refuses a channel that is no channel of the bridge or the contact, naming it', async () => {
    for (const [query, parameter] of [
      ['channel=nope', 'channel'],
      ['channel=Not%20A%20Channel', 'channel'],
      ['type=Not%20a%20type', 'type'],
      ['channel=web&channel=app', 'channel'],
      ['type=conversation.finished&type=message.received', 'type'],
      ['kind=rejected', 'kind'],
    ]) {
      const answer = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?${query}`);
      expect(answer.status, query).toBe(400);
      expect(answer.body.error.code, query).toBe('invalid_query');
      expect(
        answer.body.error.issues.map((issue: { path: string }) => issue.path),
        query,
      ).toContain(parameter);
    }
    const nope = await bridge.admin('GET', `/api/v1/contacts/${contactId}/timeline?channel=nope`);
    expect(nope.body.error.issues[0].message).toContain('nope');
    // A configured channel the contact was never seen in is fine: nothing matches.
    const quiet = await bridge.admin('GET', `/api/v1/contacts/${quietId}/timeline?channel=app`);
    expect(quiet.body).toEqual({ entries: [], nextCursor: null });
    // An unknown contact stays a 404, with or without a filter.
    expect((await bridge.admin('GET', '/api/v1/contacts/c_nope/timeline?channel=nope')).status).toBe(404);
  });

  it("takes a channel no longer configured that the contact's history names", async () => {
    const { contact } = await observe({
      channelId: 'gone',
      vendor: 'jivochat',
      at: minute(0),
      idempotencyKey: 'gone-1',
      identifiers: [{ kind: 'visitor', value: 'g1', channelId: 'gone' }],
      timeline: [{ at: minute(0), type: 'conversation.started', summary: 'old', key: 's' }],
    });
    const answer = await bridge.admin('GET', `/api/v1/contacts/${contact.id}/timeline?channel=gone`);
    expect(answer.status).toBe(200);
    expect(answer.body.entries.map((entry: TimelineEntry) => entry.summary)).toEqual(['old']);
  });

  it('bounds what one filtered page reads, and the cursor reads on to the match', async () => {
    // One match below more non-matching entries than a page may pass over.
    const total = TIMELINE_SCAN_ENTRIES + 150;
    let id = '';
    for (let batch = 0; batch * 100 < total; batch++) {
      const { contact } = await observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: minute(0),
        idempotencyKey: `long-${batch}`,
        identifiers: [{ kind: 'visitor', value: 'long', channelId: 'web' }],
        timeline: Array.from({ length: Math.min(100, total - batch * 100) }, (_, index) => ({
          at: new Date(Date.UTC(2026, 10, 2) + (batch * 100 + index) * 1000).toISOString(),
          type: 'message.received',
          summary: `m ${batch * 100 + index}`,
          key: String(index),
        })),
      });
      id = contact.id;
    }
    await observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: minute(0),
      idempotencyKey: 'long-rated',
      identifiers: [{ kind: 'visitor', value: 'long', channelId: 'web' }],
      timeline: [{ at: minute(0), type: 'conversation.rated', summary: 'rated', key: 'r' }],
    });
    const first = await bridge.admin('GET', `/api/v1/contacts/${id}/timeline?type=conversation.rated`);
    expect(first.status).toBe(200);
    expect(first.body.entries).toEqual([]);
    expect(first.body.partial).toBe(true);
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await bridge.admin(
      'GET',
      `/api/v1/contacts/${id}/timeline?type=conversation.rated&before=${first.body.nextCursor}`,
    );
    expect(second.body).toEqual({
      entries: [expect.objectContaining({ summary: 'rated' })],
      nextCursor: null,
    });
  });
});
