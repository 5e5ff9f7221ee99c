import { afterEach, describe, expect, it } from 'vitest';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A LiveTex rating can change (adapters/livetex/README.md, rated): the rating is an event the
 * visitor sends (the Visitor API's RatingEvent, ../shared/vendors/livetex.md §3), nothing says a
 * dialog is rated once, and a rating may come after the close. So a dialog rated 3 and then 5 is
 * two ratings, the newest 5; the same rating delivered again is a repeat, and so is a standalone
 * rating the close already carried.
 */

const LT_TOKEN = 'lt-rating-token-0123456789';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each(['memory', 'redis'] as const)('LiveTex ratings (%s store)', (store) => {
  async function livetex(): Promise<TestBridge> {
    const bridge = await startTestBridge({
      store,
      config: {
        channels: [{ id: 'lt-web', vendor: 'livetex', token: LT_TOKEN }],
        // A LiveTex channel on Redis keeps its keys encrypted with it (never used here).
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
      },
    });
    cleanups.push(() => bridge.close());
    return bridge;
  }
  const send = async (bridge: TestBridge, payload: Record<string, unknown>) => {
    const answer = await bridge.post(`/webhooks/livetex/lt-web/${LT_TOKEN}`, payload);
    expect(answer.status).toBe(200);
  };
  const closed = (dialogId: string, at: string, rate?: unknown) => ({
    event: 'dialog_closed',
    time: at,
    conversation: { dialogId, closedAt: at },
    discourser: { name: 'Anna', personId: 'p-anna-0009' },
    employee: [{ id: '1', name: 'Irina Volkova' }],
    ...(rate === undefined ? {} : { rate }),
  });
  const rated = (dialogId: string, at: string, value: string, comment?: string) => ({
    event: 'dialog_rated',
    time: at,
    conversation: { dialogId },
    rate: { type: 'fivePoint', value, ...(comment === undefined ? {} : { comment }) },
  });
  async function ratings(bridge: TestBridge): Promise<string[]> {
    const found = await bridge.admin<{ contacts: Contact[] }>(
      'GET',
      '/api/v1/contacts?identity=person:p-anna-0009',
    );
    expect(found.body.contacts).toHaveLength(1);
    const page = await bridge.admin<{ entries: { type: string; summary: string }[] }>(
      'GET',
      `/api/v1/contacts/${found.body.contacts[0]!.id}/timeline?limit=50`,
    );
    return page.body.entries
      .filter((entry) => entry.type === 'conversation.rated')
      .map((entry) => entry.summary);
  }

  it('a changed rating is recorded; the same rating delivered again is not', async () => {
    const bridge = await livetex();
    await send(bridge, closed('d1', '2026-11-02T09:00:00Z'));
    await send(bridge, rated('d1', '2026-11-02T09:01:00Z', '3'));
    // The visitor changes their mind a minute later.
    await send(bridge, rated('d1', '2026-11-02T09:02:00Z', '5'));
    // LiveTex delivers that rating again.
    await send(bridge, rated('d1', '2026-11-02T09:02:00Z', '5'));
    expect(await ratings(bridge)).toEqual(['Dialog d1 rated 5/5', 'Dialog d1 rated 3/5']);
    // A comment added to the same score is a change too.
    await send(bridge, rated('d1', '2026-11-02T09:03:00Z', '5', 'Thanks'));
    expect(await ratings(bridge)).toEqual([
      'Dialog d1 rated 5/5 ("Thanks")',
      'Dialog d1 rated 5/5',
      'Dialog d1 rated 3/5',
    ]);
  });

  it('a rating the close carried, delivered alone as well, is recorded once', async () => {
    const bridge = await livetex();
    await send(bridge, closed('d2', '2026-11-02T10:00:00Z', { type: 'fivePoint', value: '4' }));
    await send(bridge, rated('d2', '2026-11-02T10:00:30Z', '4'));
    expect(await ratings(bridge)).toEqual(['Dialog d2 rated 4/5']);
  });
});
