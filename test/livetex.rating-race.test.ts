import { afterEach, describe, expect, it } from 'vitest';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge } from './support/harness.js';

/**
 * Two LiveTex events of one dialog carrying the same rating, arriving together before either is
 * recorded (the dialog's close with rating 5 and the visitor's rated event, 5): each read the
 * dialog's rating before the other had recorded its own, so each took itself for news, under a
 * key of its own (the close's by count, the rated event's by its time), and the dialog had two
 * `conversation.rated` entries (and events) for one rating. Sent one after the other it was one
 * (livetex.rating-change.test.ts). Now both name the place the rating takes among the dialog's
 * ratings (sharedIdempotencyKeys), checked in the engine's one atomic write: no lock.
 */

const LT_TOKEN = 'lt-rating-race-token-0123456';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each(['memory', 'redis'] as const)(
  'LiveTex: one rating in two events at once (%s store)',
  (store) => {
    it('the close carrying rating 5 and its own rated event (5), sent together: one rating', async () => {
      const bridge = await startTestBridge({
        store,
        config: {
          channels: [{ id: 'lt-web', vendor: 'livetex', token: LT_TOKEN }],
          secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        },
      });
      cleanups.push(() => bridge.close());
      const at = '2026-11-02T09:00:00Z';
      const closed = {
        event: 'dialog_closed',
        time: at,
        conversation: { dialogId: 'd1', closedAt: at },
        discourser: { name: 'Anna', personId: 'p-anna-0010' },
        employee: [{ id: '1', name: 'Irina Volkova' }],
        rate: { type: 'fivePoint', value: '5' },
      };
      const rated = {
        event: 'dialog_rated',
        time: '2026-11-02T09:01:00Z',
        conversation: { dialogId: 'd1' },
        discourser: { name: 'Anna', personId: 'p-anna-0010' },
        rate: { type: 'fivePoint', value: '5' },
      };
      const answers = await Promise.all([
        bridge.post(`/webhooks/livetex/lt-web/${LT_TOKEN}`, closed),
        bridge.post(`/webhooks/livetex/lt-web/${LT_TOKEN}`, rated),
      ]);
      expect(answers.map((answer) => answer.status)).toEqual([200, 200]);
      const found = await bridge.admin<{ contacts: Contact[] }>(
        'GET',
        '/api/v1/contacts?identity=person:p-anna-0010',
      );
      const page = await bridge.admin<{ entries: { type: string; summary: string }[] }>(
        'GET',
        `/api/v1/contacts/${found.body.contacts[0]!.id}/timeline?limit=50`,
      );
      expect(
        page.body.entries
          .filter((entry) => entry.type === 'conversation.rated')
          .map((entry) => entry.summary),
      ).toEqual(['Dialog d1 rated 5/5']);
    });
  },
);
