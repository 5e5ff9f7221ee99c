import { afterEach, describe, expect, it } from 'vitest';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A LiveTex rating can change (adapters/livetex/README.md, rated): the rating is an event the
 * visitor sends (the Visitor API's RatingEvent, ../shared/vendors/livetex.md §3), nothing says a
 * dialog is rated once, and a rating may come after the close. So a dialog rated 3 and then 5 is
 * two ratings, the newest 5; the same rating delivered again is a repeat, and so is a standalone
 * rating the close already carried. A rating changed back (3 → 5 → 3) is a third rating: a new
 * rating event has its own time, a redelivery the time it had (adapters/livetex/README.md, rated).
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
  const rated = (dialogId: string, at: string | undefined, value: string, comment?: string) => ({
    event: 'dialog_rated',
    ...(at === undefined ? {} : { time: at }),
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

  it('a rating changed back (3 → 5 → 3) is recorded; redeliveries of each, late ones too, are not', async () => {
    const bridge = await livetex();
    await send(bridge, closed('d3', '2026-11-02T11:00:00Z'));
    await send(bridge, rated('d3', '2026-11-02T11:01:00Z', '3'));
    await send(bridge, rated('d3', '2026-11-02T11:02:00Z', '5'));
    await send(bridge, rated('d3', '2026-11-02T11:03:00Z', '3'));
    expect(await ratings(bridge)).toEqual([
      'Dialog d3 rated 3/5',
      'Dialog d3 rated 5/5',
      'Dialog d3 rated 3/5',
    ]);
    // LiveTex delivers each again, the oldest last; and the close, which carried no rating.
    await send(bridge, rated('d3', '2026-11-02T11:03:00Z', '3'));
    await send(bridge, rated('d3', '2026-11-02T11:02:00Z', '5'));
    await send(bridge, rated('d3', '2026-11-02T11:01:00Z', '3'));
    await send(bridge, closed('d3', '2026-11-02T11:00:00Z'));
    expect(await ratings(bridge)).toHaveLength(3);
  });

  it('without a time of their own: changes are recorded, the rating the dialog has again is not', async () => {
    const bridge = await livetex();
    await send(bridge, closed('d4', '2026-11-02T12:00:00Z'));
    await send(bridge, rated('d4', undefined, '3'));
    await send(bridge, rated('d4', undefined, '3'));
    await send(bridge, rated('d4', undefined, '5'));
    await send(bridge, rated('d4', undefined, '5'));
    await send(bridge, rated('d4', undefined, '3'));
    expect(await ratings(bridge)).toEqual([
      'Dialog d4 rated 3/5',
      'Dialog d4 rated 5/5',
      'Dialog d4 rated 3/5',
    ]);
  });

  it('a rating delivered before the close that carries it, or a close redelivered after a newer rating, adds none', async () => {
    const bridge = await livetex();
    await send(bridge, rated('d5', '2026-11-02T13:00:00Z', '4'));
    await send(bridge, closed('d5', '2026-11-02T13:00:10Z', { type: 'fivePoint', value: '4' }));
    expect(await ratings(bridge)).toEqual(['Dialog d5 rated 4/5']);
    await send(bridge, rated('d5', '2026-11-02T13:05:00Z', '2'));
    await send(bridge, closed('d5', '2026-11-02T13:00:10Z', { type: 'fivePoint', value: '4' }));
    expect(await ratings(bridge)).toEqual(['Dialog d5 rated 2/5', 'Dialog d5 rated 4/5']);
  });
});
