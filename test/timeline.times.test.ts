import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { isoOf, notAfter } from '../src/contacts/timeline.js';
import type { Contact, TimelineEntry } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Vendor times on the timeline and the contact, over real HTTP, on both stores: an event dated
 * after it reached the bridge (a vendor clock ahead, a bad field) is dated when it was recorded,
 * so it neither sits on top of the timeline for good nor outranks the values of later events.
 */

const fixture = JSON.parse(
  readFileSync(new URL('../adapters/livetex/__fixtures__/dialog_closed.web.json', import.meta.url), 'utf8'),
) as Record<string, any>;
const TOKEN = 'web-webhook-token-0123456789';
const PERSON = 'p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10';

function dialog(id: number, closedAt: string, tariff: string, operator: string) {
  const body = structuredClone(fixture);
  body.Conversation.id = id;
  body.Conversation.createdAt = closedAt;
  body.Conversation.closedAt = closedAt;
  body.discourser.attributes = { tariff };
  body.employee = [{ id: operator.length, name: operator }];
  return JSON.stringify(body);
}

for (const store of ['memory', 'redis'] as const) {
  describe(`vendor times (${store} store)`, () => {
    let bridge: TestBridge | undefined;
    afterEach(async () => {
      await bridge?.close();
      bridge = undefined;
    });

    it('a dialog dated in the future is dated when recorded: the later dialog is on top and its values win', async () => {
      let clock = new Date('2026-03-01T10:00:00.000Z');
      bridge = await startTestBridge({
        store,
        now: () => clock,
        config: {
          channels: [{ id: 'web', name: 'website', vendor: 'livetex', token: TOKEN }],
          secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        },
      });
      const post = (body: string) =>
        bridge!.post(`/webhooks/livetex/web/${TOKEN}`, body, { 'content-type': 'application/json' });
      // The vendor's clock (or the field) says 2031 for a dialog that closed at 10:00.
      expect((await post(dialog(9001, '2031-01-01T00:00:00Z', 'gold', 'Oleg Petrov'))).status).toBe(200);
      clock = new Date('2026-03-01T11:00:00.000Z');
      expect((await post(dialog(9002, '2026-03-01T10:59:00Z', 'silver', 'Ivan Orlov'))).status).toBe(200);

      const found = await bridge.admin<{ contacts: Contact[] }>(
        'GET',
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${PERSON}`)}`,
      );
      const contact = found.body.contacts[0]!;
      expect(contact.attributes.tariff).toMatchObject({ value: 'silver', at: '2026-03-01T10:59:00.000Z' });
      expect(contact.responsibleAgent).toMatchObject({ name: 'Ivan Orlov' });
      expect(contact.updatedAt).toBe('2026-03-01T10:59:00.000Z');

      const page = await bridge.admin<{ entries: TimelineEntry[] }>(
        'GET',
        `/api/v1/contacts/${contact.id}/timeline?limit=200`,
      );
      const finished = page.body.entries.filter((entry) => entry.type === 'conversation.finished');
      expect(finished.map((entry) => [entry.at, entry.summary.slice(0, 11)])).toEqual([
        ['2026-03-01T10:59:00.000Z', 'Dialog 9002'],
        ['2026-03-01T10:00:00.000Z', 'Dialog 9001'],
      ]);
      // What the vendor said is still there, in the entry's data.
      expect(finished[1]!.data.endedAt).toBe('2031-01-01T00:00:00.000Z');
    });

    it('pages entries of one millisecond across merged records once each, also while older ones arrive', async () => {
      bridge = await startTestBridge({
        store,
        start: false,
        config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
      });
      const contacts = bridge.bridge.context.contacts;
      const SAME = '2026-11-01T10:00:00.000Z';
      const observe = (channelId: string, identifier: string, index: number, at = SAME) =>
        contacts.observe({
          channelId,
          vendor: 'jivochat',
          at,
          idempotencyKey: `${channelId}-${index}`,
          identifiers: [{ kind: 'email', value: identifier }],
          timeline: [{ at, type: 'message.received', summary: `${channelId} ${index}`, key: 'm' }],
        });
      // Two records (two e-mails), 15 entries each in one millisecond, then one contact.
      for (let index = 0; index < 15; index++) {
        await observe('web', 'one@example.org', index);
        await observe('app', 'two@example.org', index);
      }
      const { contact } = await contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-10-01T00:00:00.000Z',
        idempotencyKey: 'join',
        identifiers: [
          { kind: 'email', value: 'one@example.org' },
          { kind: 'email', value: 'two@example.org' },
        ],
      });
      const page = async (before?: string) => {
        const answer = await bridge!.admin<{ entries: TimelineEntry[]; nextCursor: string | null }>(
          'GET',
          `/api/v1/contacts/${contact.id}/timeline?limit=4${before ? `&before=${before}` : ''}`,
        );
        expect(answer.status).toBe(200);
        return answer.body;
      };
      const seen: string[] = [];
      let cursor: string | null | undefined;
      let pages = 0;
      do {
        const body = await page(cursor ?? undefined);
        seen.push(
          ...body.entries.filter((entry) => entry.type === 'message.received').map((entry) => entry.summary),
        );
        cursor = body.nextCursor;
        // While the client pages: entries at the same millisecond (one may sort either side of
        // the cursor) and an older one arrive.
        if (pages === 2) {
          await observe('web', 'one@example.org', 100);
          await observe('app', 'two@example.org', 100, '2026-11-01T09:00:00.000Z');
        }
        pages++;
      } while (cursor);
      const messages = seen;
      expect(new Set(messages).size).toBe(messages.length);
      for (let index = 0; index < 15; index++) {
        expect(messages).toContain(`web ${index}`);
        expect(messages).toContain(`app ${index}`);
      }
      // The older entry that arrived while paging is on a later page, at the end.
      expect(messages[messages.length - 1]).toBe('app 100');
      // Read again from the top, the order is the one paging gave.
      const all = await bridge.admin<{ entries: TimelineEntry[] }>(
        'GET',
        `/api/v1/contacts/${contact.id}/timeline?limit=200`,
      );
      const fresh = all.body.entries
        .filter((entry) => entry.type === 'message.received')
        .map((entry) => entry.summary);
      expect(fresh.filter((summary) => messages.includes(summary))).toEqual(messages);
    });
  });
}

describe('notAfter', () => {
  it('takes the limit for a time past year 9999, which isoOf writes with a signed six-digit year', () => {
    const limit = '2026-03-01T10:00:00.000Z';
    // Valid ISO input (a four-digit year) that is in year 10000 in UTC.
    const far = isoOf('9999-12-31T23:00:00-14:00');
    expect(far.startsWith('+010000-')).toBe(true);
    expect(notAfter(far, limit)).toBe(limit);
    expect(notAfter('2031-01-01T00:00:00.000Z', limit)).toBe(limit);
    expect(notAfter('2020-01-01T00:00:00.000Z', limit)).toBe('2020-01-01T00:00:00.000Z');
  });
});
