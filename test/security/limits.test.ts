import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { ContactTooLargeError, createContactEngine } from '../../src/contacts/engine.js';
import { key } from '../../src/contacts/keys.js';
import { wellFormed } from '../../src/digest.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createPayloadJournal } from '../../src/intake/journal.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createMemoryStore } from '../../src/store/memory.js';

/** Issue 10 item 4: one request must not fill the store. */
function setup(limits: Record<string, unknown> = {}, options: { events?: boolean } = {}) {
  const config = configSchema.parse({ admin: { token: 'x'.repeat(16) }, limits });
  const store = createMemoryStore();
  const metrics = new Metrics();
  const contacts = createContactEngine({
    store,
    identity: config.identity,
    events: createOutboxPublisher(store, { enabled: options.events ?? false }),
    metrics,
    logger: createLogger('silent'),
    now: () => new Date('2026-11-01T12:00:00Z'),
    limits: config.limits,
  });
  return { store, metrics, contacts, config };
}

let sequence = 0;
const base = (person: string) => ({
  channelId: 'site',
  vendor: 'jivochat',
  at: '2026-11-01T12:00:00Z',
  idempotencyKey: `k-${++sequence}`,
  identifiers: [{ kind: 'person', value: person }],
});

describe('size caps', () => {
  it('a chat with 100k messages keeps its summary and the first and last messages, not 19 MB of transcript', async () => {
    const { contacts, metrics, store } = setup({}, { events: true });
    const messages = Array.from({ length: 100_000 }, (_, index) => ({ text: `message ${index}`, at: index }));
    const result = await contacts.observe({
      ...base('p-chat'),
      timeline: [
        {
          at: '2026-11-01T12:00:00Z',
          type: 'conversation.finished',
          summary: 'Chat finished',
          data: { messages },
        },
      ],
      events: [{ type: 'conversation.finished', key: 'finished', data: { messages } }],
    });
    const page = await contacts.timeline(result.contact.id, { limit: 10 });
    const entry = page.entries[0]!;
    expect(entry.summary).toBe('Chat finished');
    // limits.messagesPerTranscript (500): the first 250 and the last 250, and a line saying how many are left out.
    const kept = (entry.data as { messages: { text: string }[] }).messages;
    expect(kept).toHaveLength(501);
    expect(kept[0]!.text).toBe('message 0');
    expect(kept[250]).toEqual({ at: null, author: { type: 'system' }, text: '… 99500 messages left out …' });
    expect(kept[500]!.text).toBe('message 99999');
    expect(JSON.stringify(page).length).toBeLessThan(64 * 1024);
    // The outbound event (the CRM's transcript note) carries the same cut transcript, not 2 MB.
    const outbox = (await store.lrange('outbox', 0, -1)).map((text) => ({ text, entry: JSON.parse(text) }));
    const finished = outbox.find(({ entry }) => entry.event.type === 'conversation.finished')!;
    expect(Buffer.byteLength(finished.text)).toBeLessThan(64 * 1024);
    expect(finished.entry.event.data.messages).toHaveLength(501);
    expect(await metrics.registry.metrics()).toMatch(/chatbridge_truncated_total\{what="transcript"\} 2/);
  });

  it('a transcript over limits.timelineEntryBytes still keeps its summary only', async () => {
    const { contacts, metrics } = setup();
    const messages = Array.from({ length: 400 }, (_, index) => ({ text: `${index} ${'x'.repeat(1000)}` }));
    const result = await contacts.observe({
      ...base('p-long-chat'),
      timeline: [
        {
          at: '2026-11-01T12:00:00Z',
          type: 'conversation.finished',
          summary: 'Chat finished',
          data: { messages },
        },
      ],
    });
    const entry = (await contacts.timeline(result.contact.id, { limit: 10 })).entries[0]!;
    expect(entry.data).toMatchObject({ truncated: true });
    expect(await metrics.registry.metrics()).toMatch(/chatbridge_truncated_total\{what="timeline_entry"\} 1/);
  });

  it('timelineEntryBytes counts UTF-8 bytes, not characters: Cyrillic over it is cut, under it kept', async () => {
    const { contacts, metrics } = setup({ timelineEntryBytes: 4096 });
    // `{"text":"…"}` is 11 bytes of JSON around the text; "ж" is 1 character and 2 bytes.
    const entry = (text: string) => ({
      at: '2026-11-01T12:00:00Z',
      type: 'conversation.finished',
      summary: 'Chat finished',
      data: { text },
    });
    const over = 'ж'.repeat(2043); // 2,054 characters (under 4096), 4,097 bytes (over)
    const under = 'ж'.repeat(2042); // 4,095 bytes
    const cut = await contacts.observe({ ...base('p-bytes'), timeline: [entry(over)] });
    const kept = await contacts.observe({ ...base('p-bytes'), timeline: [entry(under)] });
    const page = await contacts.timeline(cut.contact.id, { limit: 10 });
    const byText = page.entries.map((e) => e.data);
    expect(byText).toContainEqual({ truncated: true, originalBytes: 4097 });
    expect(byText).toContainEqual({ text: under });
    expect(kept.contact.id).toBe(cut.contact.id);
    expect(await metrics.registry.metrics()).toMatch(/chatbridge_truncated_total\{what="timeline_entry"\} 1/);
  });

  it('12k attributes make no 2.7 MB contact: count and value length are capped and counted', async () => {
    const { contacts, metrics } = setup();
    const attributes: Record<string, { value: string }> = {};
    for (let index = 0; index < 12_000; index++) attributes[`attr_${index}`] = { value: 'v'.repeat(200) };
    attributes.attr_0 = { value: 'w'.repeat(100_000) };
    const result = await contacts.observe({ ...base('p-attrs'), attributes });
    const kept = Object.keys(result.contact.attributes);
    expect(kept.length).toBe(200);
    expect(String(result.contact.attributes.attr_0!.value).length).toBe(4000);
    expect(String(result.contact.attributes.attr_0!.value).endsWith('…')).toBe(true);
    // A later observation cannot add more names either.
    const again = await contacts.observe({ ...base('p-attrs'), attributes: { extra: { value: 'x' } } });
    expect(Object.keys(again.contact.attributes)).not.toContain('extra');
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/chatbridge_truncated_total\{what="attribute_count"\} [1-9]/);
    expect(text).toMatch(/chatbridge_truncated_total\{what="attribute"\} [1-9]/);
  });

  it('refuses an observation that would make the record larger than contactRecordBytes, writing nothing', async () => {
    const { contacts } = setup({ contactRecordBytes: 4096 });
    const names = Array.from({ length: 20 }, (_, index) => `${index}${'n'.repeat(1999)}`);
    await expect(contacts.observe({ ...base('p-huge'), names })).rejects.toBeInstanceOf(ContactTooLargeError);
    expect(await contacts.findByIdentifier({ kind: 'person', value: 'p-huge' })).toBeNull();
  });

  it('keeps a name whole up to limits.fieldLength, and cuts a longer one with … (counted)', async () => {
    const { contacts, metrics } = setup();
    const long = `Anna ${'N'.repeat(495)}`;
    const kept = await contacts.observe({ ...base('p-long-name'), names: [long] });
    expect(kept.contact.names).toEqual([long]);
    expect((await contacts.get(kept.contact.id))!.contact.names).toEqual([long]);
    expect((await contacts.find({ name: 'anna' })).map((contact) => contact.id)).toContain(kept.contact.id);
    expect(await metrics.registry.metrics()).not.toMatch(/chatbridge_truncated_total\{what="field"\}/);

    const over = await contacts.observe({ ...base('p-longer-name'), names: ['M'.repeat(2500)] });
    expect(over.contact.names).toEqual([`${'M'.repeat(1999)}…`]);
    expect(await metrics.registry.metrics()).toMatch(/chatbridge_truncated_total\{what="field"\} 1/);
  });

  it('a cut never ends in half an emoji: names, labels and attribute values stay well-formed text', async () => {
    const { contacts } = setup();
    // 1998 + one emoji (2 UTF-16 units) + more: the cut at 1999 units fell inside the emoji.
    const name = `${'M'.repeat(1998)}🫖${'M'.repeat(10)}`;
    const value = `${'v'.repeat(3998)}🫖${'v'.repeat(10)}`;
    const result = await contacts.observe({
      ...base('p-emoji-cut'),
      names: [name],
      attributes: { tariff: { value, label: name } },
    });
    const stored = (await contacts.get(result.contact.id))!.contact;
    for (const text of [
      stored.names[0]!,
      String(stored.attributes.tariff!.value),
      stored.attributes.tariff!.label!,
    ]) {
      expect(text.endsWith('…')).toBe(true);
      expect(wellFormed(text)).toBe(true);
    }
    expect(stored.names[0]).toBe(`${'M'.repeat(1998)}…`);
  });

  it('one observation with 3,000 e-mails attaches limits.identifiersPerKind of them, keeps its other ids, and counts the cut', async () => {
    const { contacts, metrics } = setup();
    const emails = Array.from({ length: 3000 }, (_, index) => ({
      kind: 'email',
      value: `visitor${index}@example.com`,
      provenance: 'visitor' as const,
    }));
    const phones = Array.from({ length: 500 }, (_, index) => ({
      kind: 'phone',
      value: `+7900${1_000_000 + index}`,
    }));
    const result = await contacts.observe({
      ...base('p-many-ids'),
      identifiers: [
        { kind: 'person', value: 'p-many-ids' },
        ...emails,
        ...phones,
        // Channel-scoped ids come last in the adapters' lists: a cut must not cost them.
        { kind: 'visitor', value: 'v-many-ids', channelId: 'site' },
      ],
    });
    expect(result.contact.emails.length).toBe(20);
    expect(result.contact.phones.length).toBe(20);
    expect(result.contact.emails).toContain('visitor0@example.com');
    expect(await contacts.findByIdentifier({ kind: 'email', value: 'visitor20@example.com' })).toBeNull();
    const byVisitor = await contacts.findByIdentifier({
      kind: 'visitor',
      value: 'v-many-ids',
      channelId: 'site',
    });
    expect(byVisitor?.id).toBe(result.contact.id);
    expect(await metrics.registry.metrics()).toMatch(
      /chatbridge_truncated_total\{what="identifier_count"\} 1/,
    );
  });

  it('limits.identifiersPerKind is configurable; names and labels past their caps are counted', async () => {
    const { contacts, metrics } = setup({ identifiersPerKind: 2, labelsPerObservation: 3 });
    const result = await contacts.observe({
      ...base('p-few-ids'),
      identifiers: [
        { kind: 'person', value: 'p-few-ids' },
        ...['a', 'b', 'c'].map((name) => ({ kind: 'email', value: `${name}@example.com` })),
      ],
      names: Array.from({ length: 25 }, (_, index) => `Name ${index}`),
      labels: ['l1', 'l2', 'l3', 'l4'],
    });
    expect(result.contact.emails).toEqual(expect.arrayContaining(['a@example.com', 'b@example.com']));
    expect(result.contact.emails.length).toBe(2);
    expect(result.contact.labels).toEqual(['l1', 'l2', 'l3']);
    expect(result.contact.names.length).toBe(20);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/chatbridge_truncated_total\{what="identifier_count"\} 1/);
    expect(text).toMatch(/chatbridge_truncated_total\{what="label_count"\} 1/);
    expect(text).toMatch(/chatbridge_truncated_total\{what="name_count"\} 1/);
  });

  it('keeps a timeline only as long as limits.timelineRetention says', async () => {
    const { contacts, store } = setup({ timelineRetention: '1h' });
    const result = await contacts.observe({
      ...base('p-ret'),
      timeline: [{ at: '2026-11-01T12:00:00Z', type: 'message.received', summary: 'hi' }],
    });
    const ttl = await store.pttl(key.timeline(result.contact.records[0]!));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
  });

  it('caps the journal by bytes and reads it in pages', async () => {
    const store = createMemoryStore();
    const journal = createPayloadJournal(store, () => new Date(), {
      journalBytes: 1024 * 1024,
      journalEntryBytes: 4096,
    });
    for (let index = 0; index < 600; index++) {
      await journal.record({
        channelId: 'site',
        vendor: 'jivochat',
        kind: 'rejected',
        reason: `bad ${index}`,
        rawBody: `${index}:${'b'.repeat(50_000)}`,
      });
    }
    const stored = await store.zrangeByScore('journal:ring:_other', 0, 0);
    const bytes = stored.reduce((sum, entry) => sum + Buffer.byteLength(entry), 0);
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    const newest = (await journal.list({ limit: 300 })).entries;
    expect(newest[0]!.reason).toBe('bad 599');
    expect(newest[0]!.truncated).toBe(true);
    expect(newest.length).toBe(Math.min(stored.length, 300));
  });
});
