import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storedId } from '../src/contacts/keys.js';
import { nameWords } from '../src/contacts/timeline.js';
import type { Store } from '../src/store/types.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console's name search by a common name (Александр, Maria: tens of thousands of contacts in
 * production) read every member of each word's set and intersected them in JavaScript, for a
 * page of 50. It now reads about a page of record ids, intersected in the store, and says when
 * more matched. The ids read are counted where the store answers them (set members returned to
 * the bridge by any set read), on both stores.
 */
const MARIAS = 600;

/** Counts the name index's ids the store hands back (SMEMBERS, or pages of an intersection). */
function countSetReads(store: Store): { ids: number } {
  const counter = { ids: 0 };
  const smembers = store.smembers.bind(store);
  store.smembers = async (key) => {
    const members = await smembers(key);
    if (key.startsWith('sidx:name:')) counter.ids += members.length;
    return members;
  };
  const sinterScan = store.sinterScan.bind(store);
  store.sinterScan = async (keys, cursor, options) => {
    const page = await sinterScan(keys, cursor, options);
    counter.ids += page.members.length;
    return page;
  };
  return counter;
}

describe.each(['redis', 'memory'] as const)('name search by a common name (%s store)', (storeKind) => {
  let bridge: TestBridge;
  let cookie: string;
  let reads: { ids: number };
  const observe = (index: number, names: string[], extra: { email?: string } = {}) =>
    bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: `chat-${index}`,
      identifiers: [
        { kind: 'visitor', value: `v${index}` },
        ...(extra.email ? [{ kind: 'email' as const, value: extra.email }] : []),
      ],
      names,
    });

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: storeKind,
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    for (let start = 0; start < MARIAS; start += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, offset) => {
          const index = start + offset;
          return observe(index, [index % 3 === 0 ? `Maria Ivanova Test${index}` : `Maria Test${index}`]);
        }),
      );
    }
    // Two records of one contact (merged by the e-mail), both named Maria Merged.
    await observe(10_001, ['Maria Merged'], { email: 'merged@example.org' });
    await observe(10_002, ['Maria Merged'], { email: 'merged@example.org' });
    reads = countSetReads(bridge.bridge.store);
    ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
  }, 60_000);
  afterAll(async () => {
    await bridge?.close();
  });

  const search = async (q: string) => {
    reads.ids = 0;
    const page = await consoleRequest(bridge.url, `/console/contacts?q=${encodeURIComponent(q)}`, { cookie });
    expect(page.status).toBe(200);
    const ids = [...page.text.matchAll(/<div class="muted mono">([^<]+)<\/div>/g)].map((match) => match[1]!);
    const names = [...page.text.matchAll(/<a class="title" href="[^"]+">([^<]+)<\/a>/g)].map((m) => m[1]!);
    return { text: page.text, ids, names, idsRead: reads.ids };
  };

  it('lists the first 50 of a word 600 contacts share, says more matched, and reads about a page of ids', async () => {
    const found = await search('maria');
    expect(found.text).toContain('<h2>More than 50 contacts</h2>');
    expect(found.text).toContain('Only the first 50 are listed. Add more of the name');
    expect(found.ids).toHaveLength(50);
    expect(new Set(found.ids).size).toBe(50);
    for (const name of found.names) expect(name).toMatch(/^Maria /);
    // 602 ids in the set: a page (51 contacts asked, one more than listed) and SSCAN's slack.
    expect(found.idsRead).toBeLessThanOrEqual(250);
  });

  it('intersects two words in the store: only common ids are read', async () => {
    const found = await search('Ivanova MARIA');
    expect(found.text).toContain('<h2>More than 50 contacts</h2>');
    expect(found.ids).toHaveLength(50);
    for (const name of found.names) expect(name).toMatch(/^Maria Ivanova Test\d+$/);
    expect(found.idsRead).toBeLessThanOrEqual(250);
  });

  it('finds the same contacts as before within the cap: all matches, a merged contact once', async () => {
    const one = await search('Maria Test7');
    expect(one.names).toEqual(['Maria Test7']);
    expect(one.text).toContain('<h2>1 contact</h2>');
    const merged = await search('merged maria');
    expect(merged.names).toEqual(['Maria Merged']);
    const all = await bridge.bridge.context.contacts.find({ name: 'Maria Ivanova', limit: 1000 });
    expect(all.map((contact) => contact.name).sort()).toEqual(
      Array.from({ length: MARIAS / 3 }, (_, i) => `Maria Ivanova Test${i * 3}`).sort(),
    );
    const nobody = await search('Maria Nobody');
    expect(nobody.text).toContain('No contact matches');
  });

  it('stops after about 1,000 ids that lead to no contact (gone), and says more may match', async () => {
    // Ids of records that no longer exist, in a word's set (the index is never pruned).
    const ghosts = Array.from({ length: 3000 }, (_, i) => String(900_000_000 + i));
    for (let start = 0; start < ghosts.length; start += 500)
      await bridge.bridge.store.sadd('sidx:name:ghost', ...ghosts.slice(start, start + 500));
    const found = await search('ghost');
    expect(found.idsRead).toBeLessThanOrEqual(1300);
    expect(found.text).toContain('Add more of the name');
    expect(found.text).not.toContain('No contact matches');
  });
});

/**
 * nameWords keeps 40 UTF-16 units of a word; `slice(0, 40)` cut a letter outside the BMP (a rare
 * CJK letter, two units) in half. The cut is now between code points, ending in U+FFFD: what Redis
 * stored for the lone half (Node writes it as U+FFFD), so words indexed before are still found.
 */
describe('name words longer than 40 units, cut at a letter outside the BMP', () => {
  const RARE = '\u{2070E}'; // a CJK letter (Extension B): two UTF-16 units, and \p{L}
  const head = 'а'.repeat(39);
  const long = `${head}${RARE}б`; // 42 units; units 40 and 41 are RARE's two halves

  it('keeps whole code points, marking the cut with U+FFFD', () => {
    const [word] = nameWords(`Иван ${long}`).slice(1);
    expect(word).not.toMatch(/\p{Cs}/u); // no lone surrogate
    expect(word).toBe(`${head}\uFFFD`);
    // Shorter words, and a 40-unit word ending in the pair, are kept whole as before.
    expect(nameWords(`${head.slice(1)}${RARE}`)).toEqual([`${head.slice(1)}${RARE}`]);
    expect(nameWords(`${'б'.repeat(45)}`)).toEqual(['б'.repeat(40)]);
  });

  it.each(['redis', 'memory'] as const)(
    'indexes and finds such a name alike (%s store)',
    async (storeKind) => {
      const bridge = await startTestBridge({
        store: storeKind,
        start: false,
        config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
      });
      try {
        const { contact } = await bridge.bridge.context.contacts.observe({
          channelId: 'web',
          vendor: 'jivochat',
          at: '2026-11-01T10:00:00.000Z',
          idempotencyKey: 'long-name',
          identifiers: [{ kind: 'visitor', value: 'v-long' }],
          names: [`Иван ${long}`],
        });
        const found = await bridge.bridge.context.contacts.find({ name: long });
        expect(found.map((each) => each.id)).toEqual([contact.id]);
        const key = `sidx:name:${head}\uFFFD`;
        expect(await bridge.bridge.store.smembers(key)).toEqual([storedId(contact.id)]);
      } finally {
        await bridge.close();
      }
    },
  );

  it('finds a name indexed by the old cut (Redis kept its lone half as U+FFFD)', async () => {
    const bridge = await startTestBridge({
      store: 'redis',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    try {
      const { contact } = await bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: '2026-11-01T10:00:00.000Z',
        idempotencyKey: 'old-index',
        identifiers: [{ kind: 'visitor', value: 'v-old' }],
        names: ['Old Entry'],
      });
      // What the engine wrote before: the word as `slice(0, 40)` left it, ending in a lone half.
      await bridge.bridge.store.sadd(`sidx:name:${long.slice(0, 40)}`, storedId(contact.id));
      const found = await bridge.bridge.context.contacts.find({ name: long });
      expect(found.map((each) => each.id)).toEqual([contact.id]);
    } finally {
      await bridge.close();
    }
  });
});
