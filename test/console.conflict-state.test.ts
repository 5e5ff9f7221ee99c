import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { key } from '../src/contacts/keys.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * Identity conflicts are history (the list keeps each one as it was recorded), but what staff need
 * is which of them still wait for a decision. Each conflict's state is read from its contacts as
 * they are now: `open` while two of them are still apart, `merged` once staff merged them by hand
 * (the console, the API, the CLI), `resolved` once a later merge (a chat naming both) made them
 * one. The API says so on every conflict and filters by it; the console lists the open ones
 * unless asked for others. Over HTTP on loopback, on both stores.
 */

interface Conflict {
  at: string;
  reason: string;
  roots: string[];
  state: string;
  mergedInto?: string;
}

describe.each(['memory', 'redis'] as const)('identity conflicts and their state (%s store)', (store) => {
  let bridge: TestBridge;
  let cookie: string;
  let seq = 0;
  const ids = {} as Record<'a' | 'b' | 'c' | 'c2' | 'd' | 'e' | 'f', string>;

  /** A chat naming these e-mails; `seq` orders them (the oldest contact survives a merge). */
  async function chat(...emails: string[]) {
    seq += 1;
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: new Date(Date.UTC(2026, 10, 1, 10, 0, seq)).toISOString(),
      idempotencyKey: `chat-${seq}`,
      identifiers: emails.map((value) => ({ kind: 'email', value, provenance: 'verified' as const })),
      names: [`Person ${emails[0]}`],
    });
    return contact.id;
  }
  const unmerge = async (id: string, recordId: string) =>
    expect((await bridge.admin('POST', `/api/v1/contacts/${id}/unmerge`, { recordId })).status).toBe(200);
  const conflicts = async (query = '') => {
    const answer = await bridge.admin('GET', `/api/v1/identity/conflicts${query}`);
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    return answer.body as { conflicts: Conflict[]; nextCursor: string | null; partial?: true };
  };
  const rootsOf = (items: Conflict[]) => items.map((item) => [...item.roots].sort());
  const pair = (x: string, y: string) => [x, y].sort();

  beforeAll(async () => {
    bridge = await startTestBridge({
      store,
      config: {
        channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
        identity: { maxMergeSize: 2 },
      },
    });
    // A and B: merged by a chat, split by staff, named together again (refused: unmerged before),
    // then merged by hand.
    ids.a = await chat('a@example.org');
    ids.b = await chat('b@example.org');
    await chat('a@example.org', 'b@example.org');
    await unmerge(ids.a, ids.b);
    await chat('a@example.org', 'b@example.org');
    expect((await bridge.admin('POST', `/api/v1/contacts/${ids.b}/merge`, { with: ids.a })).status).toBe(200);
    // C (two records) and D: one chat naming both would make three records (over 2): refused.
    // Staff split C's second record off; a later chat naming C and D merges them.
    ids.c = await chat('c@example.org');
    ids.c2 = await chat('c2@example.org');
    await chat('c@example.org', 'c2@example.org');
    ids.d = await chat('d@example.org');
    await chat('c@example.org', 'd@example.org');
    await unmerge(ids.c, ids.c2);
    expect(await chat('c@example.org', 'd@example.org')).toBe(ids.c);
    // E and F: split by staff, named together again: still open.
    ids.e = await chat('e@example.org');
    ids.f = await chat('f@example.org');
    await chat('e@example.org', 'f@example.org');
    await unmerge(ids.e, ids.f);
    await chat('e@example.org', 'f@example.org');
    ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
  }, 60_000);
  afterAll(async () => {
    await bridge?.close();
  });

  it('the API says each conflict’s state, and which contact a decided one is now', async () => {
    const { conflicts: all } = await conflicts();
    expect(rootsOf(all)).toEqual([pair(ids.e, ids.f), pair(ids.c, ids.d), pair(ids.a, ids.b)]);
    expect(all.map((item) => [item.reason, item.state, item.mergedInto])).toEqual([
      ['unmerged_before', 'open', undefined],
      ['too_large', 'resolved', ids.c],
      ['unmerged_before', 'merged', ids.a],
    ]);
  });

  it('filters by state; an unknown state is a 400 naming it', async () => {
    expect(rootsOf((await conflicts('?state=open')).conflicts)).toEqual([pair(ids.e, ids.f)]);
    expect(rootsOf((await conflicts('?state=merged')).conflicts)).toEqual([pair(ids.a, ids.b)]);
    expect(rootsOf((await conflicts('?state=resolved')).conflicts)).toEqual([pair(ids.c, ids.d)]);
    expect((await conflicts('?state=open')).nextCursor).toBeNull();
    const bad = await bridge.admin('GET', '/api/v1/identity/conflicts?state=decided');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_query');
    expect(JSON.stringify(bad.body.error.issues)).toContain('state');
  });

  it('the console lists the open ones by default, and every one with its state on request', async () => {
    const page = await consoleRequest(bridge.url, '/console/conflicts', { cookie });
    expect(page.status).toBe(200);
    const entries = page.text.match(/<li class="entry[^"]*">/g) ?? [];
    expect(entries).toHaveLength(1);
    expect(page.text).toContain(`href="/console/contacts/${ids.e}"`);
    expect(page.text).not.toContain(`href="/console/contacts/${ids.a}"`);
    expect(page.text).toMatch(/<span class="state state-open">Open<\/span>/);
    expect(page.text).toMatch(/<form method="post" action="\/console\/conflicts\/merge"/);
    // The filter, labelled, with Open chosen.
    expect(page.text).toMatch(
      /<label for="conflict-state">State<\/label><select id="conflict-state" name="state">/,
    );
    expect(page.text).toContain('<option value="open" selected>Open</option>');
    expect(page.text).toContain('<option value="all">All</option>');

    const all = await consoleRequest(bridge.url, '/console/conflicts?state=all', { cookie });
    expect(all.status).toBe(200);
    expect(all.text.match(/<li class="entry[^"]*">/g)).toHaveLength(3);
    expect(all.text).toContain('<option value="all" selected>All</option>');
    expect(all.text).toMatch(/<span class="state state-merged">Merged by hand<\/span>/);
    expect(all.text).toMatch(/<span class="state state-resolved">Resolved by a later merge<\/span>/);
    // One Merge button: the open conflict's. The decided ones say what they are now.
    expect(all.text.match(/action="\/console\/conflicts\/merge"/g)).toHaveLength(1);
    expect(all.text).toContain(`(now part of ${ids.a})`);

    const merged = await consoleRequest(bridge.url, '/console/conflicts?state=merged', { cookie });
    expect(merged.text.match(/<li class="entry[^"]*">/g)).toHaveLength(1);
    expect(merged.text).toContain(`href="/console/contacts/${ids.b}"`);
    // The conflict holds ids only: each row's link is not the survivor's name twice (both read
    // "Person a@…" before), but A by its contact's name and B by its own record's, saying which
    // contact it is part of (test/console.conflict-names.test.ts has more).
    const linkText = (id: string) =>
      new RegExp(`<a href="/console/contacts/${id}"[^>]*>(.*?)</a>`).exec(merged.text)?.[1];
    const survivorName = (await bridge.admin('GET', `/api/v1/contacts/${ids.a}`)).body.name as string;
    expect(linkText(ids.a)).toBe(`<bdi>${survivorName}</bdi>`);
    expect(linkText(ids.b)).toBe('<bdi>Person b@example.org</bdi>');
    expect(merged.text).toContain(`(now part of ${ids.a})`);
    // The survivor's name: its row, and what the conflict is now.
    expect(merged.text.split(`<bdi>${survivorName}</bdi>`)).toHaveLength(3);
    expect(merged.text).toContain(
      `Staff merged them by hand: now <a href="/console/contacts/${ids.a}"><bdi>${survivorName}</bdi></a>`,
    );
    const bad = await consoleRequest(bridge.url, '/console/conflicts?state=decided', { cookie });
    expect(bad.status).toBe(400);
  });

  it('a conflict merged by hand and unmerged again is open again', async () => {
    await unmerge(ids.a, ids.b);
    expect(rootsOf((await conflicts('?state=open')).conflicts)).toEqual([
      pair(ids.e, ids.f),
      pair(ids.a, ids.b),
    ]);
    const page = await consoleRequest(bridge.url, '/console/conflicts', { cookie });
    expect(page.text.match(/<li class="entry[^"]*">/g)).toHaveLength(2);
    expect(await chat('a@example.org', 'b@example.org')).toBe(ids.a); // refused again: one more conflict
    expect((await bridge.admin('POST', `/api/v1/contacts/${ids.a}/merge`, { with: ids.b })).status).toBe(200);
    expect(rootsOf((await conflicts('?state=open')).conflicts)).toEqual([pair(ids.e, ids.f)]);
  });

  it('a filtered page looks at a bounded stretch of the list, then says it is partial and reads on', async () => {
    // 1,200 decided conflicts newer than the open one (a contact's id twice: one contact).
    const batch = bridge.bridge.store.batch();
    const decided = JSON.stringify({
      at: '2026-11-02T00:00:00.000Z',
      reason: 'too_large',
      roots: [ids.c, ids.d],
      via: { kind: 'email', value: 'c@example.org' },
      channelId: 'web',
    });
    for (let i = 0; i < 1200; i++) batch.rpush(key.conflicts, decided);
    expect(await batch.exec()).toBe(true);
    const first = await conflicts('?state=open&limit=5');
    expect(first.conflicts).toEqual([]);
    expect(first.partial).toBe(true);
    expect(first.nextCursor).not.toBeNull();
    const second = await conflicts(`?state=open&limit=5&before=${encodeURIComponent(first.nextCursor!)}`);
    expect(rootsOf(second.conflicts)).toEqual([pair(ids.e, ids.f)]);
    // The console says so, and links on.
    const page = await consoleRequest(bridge.url, '/console/conflicts', { cookie });
    expect(page.text).toContain('Older conflicts');
    expect(page.text).toContain('No open conflicts in this stretch of the list');
  });
});
