import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPayloadJournal, type JournalEntry } from '../src/intake/journal.js';
import { createLogger } from '../src/logger.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The payload journal: one bounded ring per channel, pages bounded by entries and bytes, cursors
 * that hold while entries are added, and the list written before the rings still read.
 */
const JIVO_TOKEN = 'site-token-0123456789abcdef';
const LIVETEX_TOKEN = 'app-token-0123456789abcdef';

async function allPages(
  read: (before: string | undefined) => Promise<{ entries: JournalEntry[]; nextCursor: string | null }>,
  between?: () => Promise<void>,
): Promise<JournalEntry[]> {
  const out: JournalEntry[] = [];
  let before: string | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const page = await read(before);
    out.push(...page.entries);
    if (!page.nextCursor) return out;
    before = page.nextCursor;
    await between?.();
  }
  throw new Error('the journal never ended');
}

describe('payload journal', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        limits: { journalBytes: 1024 * 1024, journalEntryBytes: 1024 },
        channels: [
          { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN },
          { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('keeps a quiet channel’s rejected payloads while another channel floods the journal', async () => {
    const quiet = await bridge.post(`/webhooks/livetex/app/${LIVETEX_TOKEN}`, '{"quiet":', {
      'content-type': 'application/json',
    });
    expect(quiet.status).toBe(400);
    // More than the whole journal (1 MiB / (1 KiB + overhead) entries) from one channel: the
    // last over HTTP, the others straight into the journal (the same record() the intake calls).
    for (let index = 0; index < 399; index++) {
      await bridge.bridge.context.journal.record({
        channelId: 'site',
        vendor: 'jivochat',
        kind: 'rejected',
        reason: 'flood',
        rawBody: `{"flood":${index},`,
      });
    }
    const flood = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, '{"flood":399,', {
      'content-type': 'application/json',
    });
    expect(flood.status).toBe(400);
    const app = await bridge.admin('GET', '/api/v1/journal?channel=app');
    expect(app.status).toBe(200);
    expect(app.body.entries.map((entry: JournalEntry) => entry.body)).toEqual(['{"quiet":']);
    const all = await bridge.admin('GET', '/api/v1/journal?limit=500');
    const bodies = all.body.entries.map((entry: JournalEntry) => entry.body) as string[];
    expect(bodies[0]).toBe('{"flood":399,');
    expect(bodies).toContain('{"quiet":');
  });

  it('answers a hostile cursor with 400 naming `before`', async () => {
    for (const before of ['x', '-1', '1e5', '%00', 'L', 'L-1', '12345678901234567890', "1' or 1=1"]) {
      const answer = await bridge.admin('GET', `/api/v1/journal?before=${encodeURIComponent(before)}`);
      expect(answer.status, before).toBe(400);
      expect(answer.body.error.issues[0].path, before).toBe('before');
    }
  });
});

describe.each(['memory', 'redis'] as const)('payload journal on the %s store', (kind) => {
  const opened: Array<() => Promise<void>> = [];
  async function createStore(): Promise<Store> {
    if (kind === 'memory') return createMemoryStore();
    const url = await getTestRedisUrl();
    const prefix = uniquePrefix('journal');
    const store = await createRedisStore({ url, keyPrefix: prefix, logger: createLogger('silent') });
    opened.push(async () => {
      await store.close();
      await cleanupPrefix(url, prefix);
    });
    return store;
  }
  afterAll(async () => {
    for (const close of opened) await close();
  });

  it('bounds a page by bytes as well as by entries, and pages on to every entry once', async () => {
    const store = await createStore();
    const journal = createPayloadJournal(store, () => new Date(), { journalEntryBytes: 64 * 1024 }, ['a']);
    for (let index = 0; index < 60; index++) {
      await journal.record({
        channelId: 'a',
        vendor: 'jivochat',
        kind: 'rejected',
        reason: `r${index}`,
        rawBody: `${index}:${'x'.repeat(60 * 1024)}`,
      });
    }
    const first = await journal.list({ limit: 500 });
    const bytes = first.entries.reduce((sum, entry) => sum + Buffer.byteLength(JSON.stringify(entry)), 0);
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    expect(first.nextCursor).not.toBeNull();
    const reasons = (await allPages((before) => journal.list({ limit: 500, before }))).map(
      (entry) => entry.reason,
    );
    expect(reasons).toEqual(Array.from({ length: 60 }, (_, index) => `r${59 - index}`));
  });

  it('pages across channels newest first without duplicates or gaps while entries are added', async () => {
    const store = await createStore();
    const journal = createPayloadJournal(store, () => new Date(), {}, ['a', 'b', 'c']);
    let written = 0;
    const write = async (channelId: string) =>
      journal.record({
        channelId,
        vendor: 'jivochat',
        kind: written % 3 === 0 ? 'unhandled' : 'rejected',
        reason: `n${written++}`,
        rawBody: '{}',
      });
    for (let index = 0; index < 40; index++) await write(['a', 'b', 'c', 'gone'][index % 4]!);
    const before = written;
    const seen = await allPages(
      (cursor) => journal.list({ limit: 7, before: cursor }),
      // New entries between pages land above the cursor: the pages read on undisturbed.
      async () => {
        await write('a');
        await write('c');
      },
    );
    expect(seen.map((entry) => entry.reason)).toEqual(
      Array.from({ length: before }, (_, index) => `n${before - 1 - index}`),
    );
    const rejected = await allPages((cursor) => journal.list({ limit: 4, kind: 'rejected', before: cursor }));
    expect(rejected.every((entry) => entry.kind === 'rejected')).toBe(true);
    expect(new Set(rejected.map((entry) => entry.id)).size).toBe(rejected.length);
    const gone = await allPages((cursor) => journal.list({ limit: 3, channelId: 'gone', before: cursor }));
    expect(gone.map((entry) => entry.reason)).toEqual([
      'n39',
      'n35',
      'n31',
      'n27',
      'n23',
      'n19',
      'n15',
      'n11',
      'n7',
      'n3',
    ]);
  });

  it('keeps every entry within its byte cap, even a body that JSON escapes six times over', async () => {
    const store = await createStore();
    const journal = createPayloadJournal(store, () => new Date(), { journalEntryBytes: 1024 }, ['a']);
    await journal.record({
      channelId: 'a',
      vendor: 'jivochat',
      kind: 'rejected',
      reason: '\u0001'.repeat(5000),
      rawBody: '\u0000'.repeat(5000),
      contentType: `application/json; ${'\u0002'.repeat(5000)}`,
    });
    const { entries } = await journal.list({ limit: 10 });
    expect(entries).toHaveLength(1);
    expect(Buffer.byteLength(JSON.stringify(entries[0]))).toBeLessThanOrEqual(1024 + 2048);
    expect(entries[0]!.truncated).toBe(true);
    expect(Buffer.from(entries[0]!.body, entries[0]!.encoding)).toEqual(Buffer.alloc(768));
  });

  it('cuts a reason made of escapes before it gives up the body as text', async () => {
    const store = await createStore();
    const journal = createPayloadJournal(store, () => new Date(), { journalEntryBytes: 1024 }, ['a']);
    await journal.record({
      channelId: 'a',
      vendor: 'jivochat',
      kind: 'rejected',
      reason: `bad${'\u0001'.repeat(999)}`,
      rawBody: '{"visitor":"readable"}',
    });
    const [entry] = (await journal.list({ limit: 1 })).entries;
    expect(entry).toMatchObject({ body: '{"visitor":"readable"}', encoding: 'utf8' });
    expect(entry!.reason.startsWith('bad')).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(entry))).toBeLessThanOrEqual(1024 + 2048);
  });

  it('still lists, after the new entries, what the single list held before the upgrade', async () => {
    const store = await createStore();
    const old = (index: number) =>
      JSON.stringify({
        id: `old-${index}`,
        at: '2026-01-01T00:00:00.000Z',
        channelId: index % 2 ? 'a' : 'b',
        vendor: 'jivochat',
        kind: 'rejected',
        reason: `old ${index}`,
        contentType: null,
        body: '{}',
        encoding: 'utf8',
        truncated: false,
      });
    await store.rpush('journal', ...Array.from({ length: 9 }, (_, index) => old(index)));
    const journal = createPayloadJournal(store, () => new Date(), {}, ['a', 'b']);
    for (let index = 0; index < 3; index++) {
      await journal.record({
        channelId: 'a',
        vendor: 'jivochat',
        kind: 'rejected',
        reason: `new ${index}`,
        rawBody: '{}',
      });
    }
    const seen = await allPages((before) => journal.list({ limit: 4, before }));
    expect(seen.map((entry) => entry.reason)).toEqual([
      'new 2',
      'new 1',
      'new 0',
      ...Array.from({ length: 9 }, (_, index) => `old ${8 - index}`),
    ]);
    const onlyA = await allPages((before) => journal.list({ limit: 2, channelId: 'a', before }));
    expect(onlyA.map((entry) => entry.reason)).toEqual([
      'new 2',
      'new 1',
      'new 0',
      'old 7',
      'old 5',
      'old 3',
      'old 1',
    ]);
  });

  it('still lists the entries of a channel removed from the config', async () => {
    const store = await createStore();
    const before = createPayloadJournal(store, () => new Date(), {}, ['a', 'b']);
    const entry = (channelId: string, reason: string) => ({
      channelId,
      vendor: 'jivochat',
      kind: 'rejected' as const,
      reason,
      rawBody: '{}',
    });
    await before.record(entry('b', 'b while configured'));
    await before.record(entry('a', 'a'));
    // Restarted without channel b: its entries stay readable, later ones go to the other ring.
    const after = createPayloadJournal(store, () => new Date(), {}, ['a']);
    await after.record(entry('b', 'b after removal'));
    const reasons = async (channelId?: string) =>
      (await after.list({ limit: 10, ...(channelId ? { channelId } : {}) })).entries.map(
        (each) => each.reason,
      );
    expect(await reasons()).toEqual(['b after removal', 'a', 'b while configured']);
    expect(await reasons('b')).toEqual(['b after removal', 'b while configured']);
    expect(await reasons('a')).toEqual(['a']);
  });

  it('lists under a channel put back in the config what was journalled for it while it was out', async () => {
    const store = await createStore();
    const entry = (channelId: string, reason: string) => ({
      channelId,
      vendor: 'jivochat',
      kind: 'rejected' as const,
      reason,
      rawBody: '{}',
    });
    await createPayloadJournal(store, () => new Date(), {}, ['a', 'b']).record(entry('b', 'b before'));
    // Without channel b for a while (its deferred items are journalled in the other ring)…
    await createPayloadJournal(store, () => new Date(), {}, ['a']).record(entry('b', 'b while out'));
    // …then b is configured again.
    const back = createPayloadJournal(store, () => new Date(), {}, ['a', 'b']);
    await back.record(entry('b', 'b back'));
    await back.record(entry('a', 'a'));
    const reasons = async (channelId?: string) =>
      (await back.list({ limit: 10, ...(channelId ? { channelId } : {}) })).entries.map(
        (each) => each.reason,
      );
    expect(await reasons()).toEqual(['a', 'b back', 'b while out', 'b before']);
    expect(await reasons('b')).toEqual(['b back', 'b while out', 'b before']);
    expect(await reasons('a')).toEqual(['a']);
  });
});
