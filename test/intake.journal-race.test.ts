import { afterAll, describe, expect, it } from 'vitest';
import { createPayloadJournal } from '../src/intake/journal.js';
import { createLogger } from '../src/logger.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * An entry whose write is still on its way when a reader pages past it: the reader's cursor
 * must not already be below it (the README: paging on neither repeats nor skips an entry).
 */
describe('payload journal pages while a write is in flight', () => {
  it('never leaves behind the cursor an entry whose write was under way while a page was read', async () => {
    const base = createMemoryStore();
    // The 'slow' entry's ring write is held back until released, as a slow connection would.
    let hold: Promise<void> | undefined;
    let release: () => void = () => {};
    const store: Store = new Proxy(base, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (typeof value !== 'function') return value;
        if (name === 'zadd' || name === 'batch') {
          return (...args: unknown[]) => {
            const gate = hold;
            if (gate && name === 'zadd')
              return gate.then(() => (value as (...a: unknown[]) => unknown).apply(target, args));
            if (gate && name === 'batch') {
              const batch = (value as (...a: unknown[]) => { exec: () => Promise<boolean> }).apply(
                target,
                args,
              );
              const exec = batch.exec.bind(batch);
              batch.exec = () => gate.then(exec);
              return batch;
            }
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return value.bind(target);
      },
    });
    const journal = createPayloadJournal(store, () => new Date(), {}, ['a']);
    const write = (reason: string) =>
      journal.record({ channelId: 'a', vendor: 'jivochat', kind: 'rejected', reason, rawBody: '{}' });
    await write('first');
    await write('second');
    hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = write('slow');
    // Let the slow write take whatever it takes before its ring write.
    for (let tick = 0; tick < 20; tick++) await new Promise((resolve) => setImmediate(resolve));
    hold = undefined;
    await write('fast');
    const page = await journal.list({ limit: 2 });
    release();
    await slow;
    const seen = page.entries.map((entry) => entry.reason);
    // Paging on from the first page reads every entry that page was above, once each; only an
    // entry newer than the whole first page (listed above it on a fresh read) is not read again.
    let cursor = page.nextCursor;
    while (cursor) {
      const next = await journal.list({ limit: 2, before: cursor });
      seen.push(...next.entries.map((entry) => entry.reason));
      cursor = next.nextCursor;
    }
    const all = (await journal.list({ limit: 10 })).entries.map((entry) => entry.reason);
    expect(all).toHaveLength(4);
    expect(all.slice(all.length - seen.length)).toEqual(seen);
  });

  const opened: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const close of opened) await close();
  });

  it.each(['memory', 'redis'] as const)(
    'gives writers at once one entry each, none lost (%s store)',
    async (kind) => {
      let store: Store = createMemoryStore();
      if (kind === 'redis') {
        const url = await getTestRedisUrl();
        const prefix = uniquePrefix('journal-race');
        store = await createRedisStore({ url, keyPrefix: prefix, logger: createLogger('silent') });
        const redis = store;
        opened.push(async () => {
          await redis.close();
          await cleanupPrefix(url, prefix);
        });
      }
      const journal = createPayloadJournal(store, () => new Date(), {}, ['a', 'b']);
      await Promise.all(
        Array.from({ length: 60 }, (_, index) =>
          journal.record({
            channelId: index % 2 ? 'a' : 'b',
            vendor: 'jivochat',
            kind: 'rejected',
            reason: `w${index}`,
            rawBody: '{}',
          }),
        ),
      );
      const listed = (await journal.list({ limit: 100 })).entries.map((entry) => entry.reason);
      expect(new Set(listed)).toEqual(new Set(Array.from({ length: 60 }, (_, index) => `w${index}`)));
      expect(listed).toHaveLength(60);
    },
  );
});
