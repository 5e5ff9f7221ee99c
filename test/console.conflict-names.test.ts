import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { key } from '../src/contacts/keys.js';
import { OUTBOX_KEY } from '../src/events/outbox.js';
import type { Store } from '../src/store/types.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The Conflicts page names each side of a conflict: its display name (escaped: names are a
 * vendor's, typed by anyone) beside its id, read when the page is made (the conflict keeps ids,
 * not the names they had then). A side merged away since is named by its own record's name, so
 * the two sides of a merged pair read apart; the contact it is part of now, the Merge button and
 * its confirmation name names too. The page reads every contact it shows in one batched read,
 * whatever the number of rows. Over HTTP on loopback, on both stores.
 */
const HOSTILE = '<script>alert("x")</script> Ёлка';
const QUOTED = `Bob "the" <img src=x onerror=alert(1)> & Co`;

describe.each(['memory', 'redis'] as const)(
  'console: names on the Conflicts page (%s store)',
  (storeKind) => {
    let bridge: TestBridge;
    let cookie: string;
    let seq = 0;
    const ids = {} as Record<'x' | 'y' | 'anna' | 'boris', string>;

    async function chat(emails: string[], name: string) {
      seq += 1;
      const { contact } = await bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: new Date(Date.UTC(2026, 10, 1, 10, 0, seq)).toISOString(),
        idempotencyKey: `names-${seq}`,
        identifiers: emails.map((value) => ({ kind: 'email', value, provenance: 'verified' as const })),
        names: [name],
      });
      return contact.id;
    }
    const unmerge = async (id: string, recordId: string) =>
      expect((await bridge.admin('POST', `/api/v1/contacts/${id}/unmerge`, { recordId })).status).toBe(200);
    const page = async (path: string) => {
      const answer = await consoleRequest(bridge.url, path, { cookie });
      expect(answer.status).toBe(200);
      return answer.text;
    };
    /** One conflict's entry on the page, by one of its contacts' ids. */
    const entryOf = (text: string, id: string) =>
      text.split('<li class="entry">').find((entry) => entry.includes(`/console/contacts/${id}"`)) ?? '';

    beforeAll(async () => {
      bridge = await startTestBridge({
        store: storeKind,
        config: {
          channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
          identity: { maxMergeSize: 2 },
        },
      });
      // X and Y: merged by a chat, split by staff, named together again: an open conflict.
      ids.x = await chat(['x@example.org'], HOSTILE);
      ids.y = await chat(['y@example.org'], QUOTED);
      await chat(['x@example.org', 'y@example.org'], HOSTILE);
      await unmerge(ids.x, ids.y);
      await chat(['x@example.org', 'y@example.org'], HOSTILE);
      // Anna and Boris: the same, then merged by hand (Boris into Anna).
      ids.anna = await chat(['anna@example.org'], 'Anna Petrova');
      ids.boris = await chat(['boris@example.org'], 'Boris Ivanov');
      await chat(['anna@example.org', 'boris@example.org'], 'Anna Petrova');
      await unmerge(ids.anna, ids.boris);
      await chat(['anna@example.org', 'boris@example.org'], 'Anna Petrova');
      expect(
        (await bridge.admin('POST', `/api/v1/contacts/${ids.anna}/merge`, { with: ids.boris })).status,
      ).toBe(200);
      ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
    }, 60_000);
    afterAll(async () => {
      await bridge?.close();
    });

    it('names both sides of an open conflict beside their ids, escaped, and in its Merge button', async () => {
      const text = await page('/console/conflicts');
      const entry = entryOf(text, ids.x);
      expect(entry).toContain(
        `<a href="/console/contacts/${ids.x}"><bdi>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Ёлка</bdi></a> <span class="mono small">${ids.x}</span>`,
      );
      expect(entry).toContain(
        `<a href="/console/contacts/${ids.y}"><bdi>Bob &quot;the&quot; &lt;img src=x onerror=alert(1)&gt; &amp; Co</bdi></a> <span class="mono small">${ids.y}</span>`,
      );
      // The button says whom it merges, by name and id (what a screen reader and the question read).
      expect(entry).toContain(
        `aria-label="Merge Bob &quot;the&quot; &lt;img src=x onerror=alert(1)&gt; &amp; Co (${ids.y}) with &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Ёлка (${ids.x})"`,
      );
      expect(entry).toContain(
        `data-confirm="Merge Bob &quot;the&quot; &lt;img src=x onerror=alert(1)&gt; &amp; Co (${ids.y}) with &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Ёлка (${ids.x})?`,
      );
      // Nothing of the names became markup.
      expect(text).not.toContain('<script>alert');
      expect(text).not.toContain('<img src=x');
    });

    it('names the side merged away by its own record, and the contact both are now', async () => {
      const text = await page('/console/conflicts?state=merged');
      const entry = entryOf(text, ids.boris);
      expect(entry).toContain(
        `<a href="/console/contacts/${ids.anna}"><bdi>Anna Petrova</bdi></a> <span class="mono small">${ids.anna}</span>`,
      );
      // Boris is part of Anna's contact now: his row still says who he was.
      expect(entry).toContain(
        `<a href="/console/contacts/${ids.boris}"><bdi>Boris Ivanov</bdi></a> <span class="mono small">${ids.boris}</span> <span class="muted small">(now part of ${ids.anna})</span>`,
      );
      expect(entry).toContain(
        `Staff merged them by hand: now <a href="/console/contacts/${ids.anna}"><bdi>Anna Petrova</bdi></a> <span class="mono small">${ids.anna}</span>. Nothing to decide.`,
      );
    });

    it('reads the contacts of a page in one batched read, however many rows it has', async () => {
      const store = bridge.bridge.context.store as Store;
      /** Store calls made while the page is read, by method. */
      async function callsFor(path: string): Promise<Record<string, number>> {
        const calls: Record<string, number> = {};
        const originals = new Map<string, unknown>();
        for (const name of [
          'get',
          'mget',
          'readGroups',
          'hget',
          'hgetall',
          'smembers',
          'lrange',
          'llen',
        ] as const) {
          const original = store[name] as (...args: unknown[]) => unknown;
          originals.set(name, original);
          (store as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
            // The delivery's outbox poll (every second, src/delivery/index.ts) may land while
            // the page loads: it is not the page's read.
            if (args[0] !== OUTBOX_KEY) calls[name] = (calls[name] ?? 0) + 1;
            return original.apply(store, args);
          };
        }
        try {
          await page(path);
        } finally {
          for (const [name, original] of originals)
            (store as unknown as Record<string, unknown>)[name] = original;
        }
        return calls;
      }
      const few = await callsFor('/console/conflicts?state=all');
      expect(few.readGroups).toBe(1);
      // 20 more open conflicts (40 more contacts on the page), recorded as the engine records them.
      const batch = store.batch();
      for (let index = 0; index < 20; index++) {
        const left = await chat([`left-${index}@example.org`], `Left ${index}`);
        const right = await chat([`right-${index}@example.org`], `Right ${index}`);
        batch.rpush(
          key.conflicts,
          JSON.stringify({
            at: new Date(Date.UTC(2026, 10, 2, 0, 0, index)).toISOString(),
            reason: 'unmerged_before',
            roots: [left, right],
            via: { kind: 'email', value: `left-${index}@example.org` },
            channelId: 'web',
          }),
        );
      }
      expect(await batch.exec()).toBe(true);
      const many = await callsFor('/console/conflicts?state=all');
      expect((await page('/console/conflicts?state=all')).match(/<li class="entry">/g)).toHaveLength(22);
      expect(many).toEqual(few);
    });
  },
);
