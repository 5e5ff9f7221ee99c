import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { jivochatSettingsSchema } from '../adapters/jivochat/schemas.js';
import { decodeWebhook, jivochatWebhook } from '../adapters/jivochat/webhook.js';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { cleanDisplayText } from '../src/contacts/normalize.js';
import { timelineMember } from '../src/contacts/timeline.js';
import type { Observation, TimelineEntry } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { parseIntakeRequest } from '../src/intake/pipeline.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import { encodeCall } from '../src/store/script-command.js';
import type { Store } from '../src/store/types.js';
import { ENCODE_TRANSCODED_UNITS, utf8Bytes } from '../src/utf8.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A long timeline member (a chat_finished's entry) is handed to the store as its UTF-8 bytes
 * (engine.ts, timed) instead of as text: what Redis stores, and what the in-memory store reads
 * back, must be what the text gave — byte for byte — whatever the transcript holds: HTML, quotes
 * and backslashes, control and bidi characters, astral characters, lone surrogates (which
 * JSON.stringify escapes), hundreds of messages (capped), a body past the entry's size limit.
 */

const RECEIVED = new Date('2026-12-05T10:00:00.000Z');
const channel = { id: 'site', settings: jivochatSettingsSchema.parse({}) };
const fixture = JSON.parse(
  readFileSync(new URL('../adapters/jivochat/__fixtures__/chat_finished.json', import.meta.url), 'utf8'),
) as Record<string, unknown>;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const hostileText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 120 }),
  fc.constantFrom(
    '<script>alert("x")</script><b>жирный</b> &amp; &lt;',
    'Добрый день! Хочу вернуть чайник 🫖',
    'quote " backslash \\ slash / tab\t newline\n cr\r nul\u0000 bell\u0007',
    '\u202Eevil\u202C \u2066isolate\u2069 \u200Bzw \uFEFFbom',
    'lone \ud800 high, lone \udfff low, pair 😀, reversed \udc00\ud800',
    '中文字符和表情😀'.repeat(40),
  ),
);

function chatFinished(seed: number, texts: string[], name: string): Record<string, unknown> {
  return {
    ...fixture,
    chat_id: String(9_000_000 + seed),
    visitor: {
      ...(fixture.visitor as object),
      name,
      number: String(seed),
      email: `v${seed}@member.example`,
      phone: `+7905${String(seed).padStart(7, '0')}`,
    },
    chat: {
      ...(fixture.chat as object),
      messages: texts.map((message, index) => ({
        message,
        timestamp: 1_764_900_000 + index * 30,
        type: index % 2 === 0 ? 'visitor' : 'agent',
        ...(index % 2 === 0 ? {} : { agent_id: 55120 }),
      })),
    },
  };
}

function decoded(body: object): Observation[] {
  const request = parseIntakeRequest(jivochatWebhook, Buffer.from(JSON.stringify(body)), undefined, RECEIVED);
  const result = decodeWebhook(request, channel);
  if (result.kind !== 'observe') throw new Error(`not an observation: ${result.kind}`);
  return result.observations;
}

/**
 * The member text main's engine handed the store: the entry as timelineMember writes it, its data
 * capped as capObservation caps it (a transcript over limits.messagesPerTranscript, an entry over
 * limits.timelineEntryBytes). `at` and `id` are the stored member's own (the time of recording).
 */
function expectedMember(entry: NonNullable<Observation['timeline']>[number], stored: string): string {
  const [at, id] = stored.split('|', 2) as [string, string];
  let data = entry.data as Record<string, unknown>;
  const messages = data.messages;
  if (Array.isArray(messages) && messages.length > 500) {
    const line = {
      at: null,
      author: { type: 'system' },
      text: `… ${messages.length - 500} messages left out …`,
    };
    data = { ...data, messages: [...messages.slice(0, 250), line, ...messages.slice(messages.length - 250)] };
  }
  const bytes = Buffer.byteLength(JSON.stringify(data), 'utf8');
  if (bytes > 64 * 1024) data = { truncated: true, originalBytes: bytes };
  const full: TimelineEntry = {
    id,
    at,
    channelId: 'site',
    vendor: 'jivochat',
    type: entry.type,
    summary: cleanDisplayText(entry.summary.slice(0, 500)) ?? '',
    data,
  };
  return timelineMember(full);
}

/** The store, with every member its batches were given for a sorted set (text or bytes). */
function recording(store: Store): { store: Store; members: Array<string | Buffer> } {
  const members: Array<string | Buffer> = [];
  const batch = store.batch.bind(store);
  store.batch = () => {
    const inner = batch();
    const zadd = inner.zadd.bind(inner);
    inner.zadd = (key, score, member) => {
      if (key.includes(':tl:') || key.startsWith('tl:')) members.push(member);
      return zadd(key, score, member);
    };
    return inner;
  };
  return { store, members };
}

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const prefixes: string[] = [];
let redisUrl: string | undefined;
afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

describe('long timeline members as bytes', () => {
  it("utf8Bytes gives Buffer.from(text, 'utf8')'s bytes, lone surrogates and all", () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 9000 }),
      fc.string({ unit: 'grapheme', minLength: ENCODE_TRANSCODED_UNITS, maxLength: 12_000 }),
      fc
        .tuple(
          fc.string({ unit: 'grapheme', minLength: 5000, maxLength: 8000 }),
          fc.nat(),
          fc.constantFrom('\ud800', '\udfff'),
        )
        .map(([long, at, lone]) => long.slice(0, at % long.length) + lone + long.slice(at % long.length)),
      fc.constant('Ж'.repeat(70_000)), // past utf8Bytes' scratch: V8 encodes it
    );
    fc.assert(
      fc.property(text, (value) => {
        expect(utf8Bytes(value).equals(Buffer.from(value, 'utf8'))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('frames a member given as bytes exactly as the same member given as text', () => {
    fc.assert(
      fc.property(fc.array(hostileText, { minLength: 20, maxLength: 120 }), (texts) => {
        const member = `2026-12-05T10:00:00.000Z|id|${JSON.stringify({ data: texts })}`;
        const args = ['zadd', 2, '0'];
        const asText = encodeCall('evalsha', 'f'.repeat(40), ['k'], 'p:', [...args, member]);
        const asBytes = encodeCall('evalsha', 'f'.repeat(40), ['k'], 'p:', [...args, utf8Bytes(member)]);
        expect(asBytes.equals(asText)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  for (const kind of ['redis', 'memory'] as const) {
    it(`stores a chat_finished's entry as main stored it (${kind}): fixtures and generated transcripts`, async () => {
      let store: Store;
      let prefix = '';
      if (kind === 'redis') {
        redisUrl ??= await getTestRedisUrl();
        prefix = uniquePrefix('h28-perf-finished-members');
        prefixes.push(prefix);
        store = await createRedisStore({ url: redisUrl, keyPrefix: prefix, logger });
      } else {
        store = createMemoryStore();
      }
      const { members } = recording(store);
      const engine = createContactEngine({
        store,
        identity,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
        now: () => RECEIVED,
      });
      const raw = kind === 'redis' ? new Redis(redisUrl!) : undefined;
      try {
        const bodies: object[] = [fixture];
        const samples = fc.sample(
          fc.tuple(fc.array(hostileText, { minLength: 1, maxLength: 120 }), hostileText),
          { numRuns: 40, seed: 28 },
        );
        for (const [index, [texts, name]] of samples.entries()) bodies.push(chatFinished(index, texts, name));
        // Hundreds of messages (capped to 500), and an entry past 64 KB (kept as its size).
        bodies.push(
          chatFinished(
            1001,
            Array.from({ length: 620 }, (_, i) => `сообщение ${i} <i>x</i>`),
            'Анна',
          ),
        );
        bodies.push(
          chatFinished(
            1002,
            Array.from({ length: 300 }, (_, i) => `${'Ж'.repeat(120)} ${i}`),
            'Big',
          ),
        );
        let long = 0;
        for (const body of bodies) {
          for (const observation of decoded(body)) {
            const oracle = structuredClone(observation);
            const entries = oracle.timeline ?? [];
            const before = members.length;
            const { contact } = await engine.observe(observation);
            const made = members.slice(before);
            expect(made).toHaveLength(entries.length);
            for (const [index, member] of made.entries()) {
              const text = typeof member === 'string' ? member : member.toString('utf8');
              const expected = expectedMember(entries[index]!, text);
              expect(LONE_SURROGATE.test(expected)).toBe(false); // JSON escapes them
              if (typeof member !== 'string') {
                long++;
                expect(expected.length).toBeGreaterThanOrEqual(ENCODE_TRANSCODED_UNITS);
              }
              expect(Buffer.from(text, 'utf8').equals(Buffer.from(expected, 'utf8'))).toBe(true);
              expect(text).toBe(expected);
            }
            // What the store holds: Redis's bytes, the memory store's text, and the page read.
            if (raw) {
              const keys: string[] = [];
              let cursor = '0';
              do {
                const [next, found] = await raw.scan(cursor, 'MATCH', `${prefix}:tl:*`, 'COUNT', 1000);
                cursor = next;
                keys.push(...found);
              } while (cursor !== '0');
              const stored = (await Promise.all(keys.map((key) => raw.zrangeBuffer(key, 0, -1)))).flat();
              for (const member of made) {
                const bytes = typeof member === 'string' ? Buffer.from(member, 'utf8') : member;
                expect(stored.some((held) => held.equals(bytes))).toBe(true);
              }
            }
            const page = await engine.timeline(contact.id, { limit: 100 });
            for (const [index, entry] of entries.entries()) {
              const expected = expectedMember(
                entry,
                typeof made[index] === 'string'
                  ? (made[index] as string)
                  : (made[index] as Buffer).toString('utf8'),
              );
              const json = JSON.parse(expected.slice(expected.indexOf('|', expected.indexOf('|') + 1) + 1));
              expect(page.entries.find((shown) => shown.id === json.id)).toEqual(json);
            }
          }
        }
        // The fixture's and most generated entries are short; enough of them went as bytes.
        expect(long).toBeGreaterThan(5);
      } finally {
        raw?.disconnect();
        await store.close();
      }
    }, 60_000);
  }
});
