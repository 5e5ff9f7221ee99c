import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { createContactEngine } from '../../src/contacts/engine.js';
import { key } from '../../src/contacts/keys.js';
import { identifierLabel, normalizeIdentifier } from '../../src/contacts/normalize.js';
import { entryId, eventId } from '../../src/contacts/timeline.js';
import { digest as storeDigest } from '../../src/digest.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { startTestBridge } from '../support/harness.js';
import { allVendorChannels } from './support.js';

const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const options = { blocklist: new Set(identity.blocklist), defaultCountry: identity.defaultCountry };

function engine() {
  const store = createMemoryStore();
  return createContactEngine({
    store,
    identity,
    events: createOutboxPublisher(store, { enabled: false }),
    metrics: new Metrics(),
    logger: createLogger('silent'),
    now: () => new Date('2026-11-01T12:00:00Z'),
  });
}

describe('identifiers and attribute names from vendors (issue 10 items 13, 14)', () => {
  it('item 13: NFC-normalises, and refuses NUL, bidi controls and lone surrogates', () => {
    const composed = normalizeIdentifier({ kind: 'person', value: 'jos\u00e9' }, options)!;
    const decomposed = normalizeIdentifier({ kind: 'person', value: 'jose\u0301' }, options)!;
    expect(identifierLabel(composed)).toBe(identifierLabel(decomposed));
    for (const value of ['abc\u0000', 'abc\u202Edef', '\u2066abc', 'ab\u200Bc', 'abc\uD800', '\uDC00abc']) {
      expect(normalizeIdentifier({ kind: 'person', value }, options)).toBeNull();
      expect(normalizeIdentifier({ kind: 'email', value: `${value}@x.org` }, options)).toBeNull();
    }
    expect(normalizeIdentifier({ kind: 'person', value: ' p-1\n' }, options)).toEqual({
      kind: 'person',
      value: 'p-1',
    });
  });

  it('item 13: two person ids that differ by a control character never share a contact', async () => {
    const contacts = engine();
    const plain = await contacts.observe({
      channelId: 'web',
      vendor: 'echo',
      at: '2026-11-01T12:00:00Z',
      idempotencyKey: 'a',
      identifiers: [{ kind: 'person', value: 'p-100' }],
    });
    const sneaky = await contacts.observe({
      channelId: 'web',
      vendor: 'echo',
      at: '2026-11-01T12:00:01Z',
      idempotencyKey: 'b',
      identifiers: [
        { kind: 'visitor', value: 'v-2' },
        { kind: 'person', value: 'p-100\u0000' },
      ],
    });
    expect(sneaky.contact.id).not.toBe(plain.contact.id);
  });

  it('item 14: attributes named constructor, toString or __proto__ are kept, also across a merge', async () => {
    const contacts = engine();
    const attributes = JSON.parse(
      '{"constructor":{"value":"c"},"toString":{"value":"t"},"__proto__":{"value":"p"},"hasOwnProperty":{"value":"h"}}',
    );
    await contacts.observe({
      channelId: 'web',
      vendor: 'echo',
      at: '2026-11-01T12:00:00Z',
      idempotencyKey: 'one',
      identifiers: [
        { kind: 'visitor', value: 'v1' },
        { kind: 'email', value: 'a@x.org' },
      ],
      attributes,
    });
    const merged = await contacts.observe({
      channelId: 'app',
      vendor: 'echo',
      at: '2026-11-01T12:00:05Z',
      idempotencyKey: 'two',
      identifiers: [
        { kind: 'visitor', value: 'v9' },
        { kind: 'email', value: 'a@x.org' },
      ],
      attributes: JSON.parse('{"valueOf":{"value":"v"}}'),
    });
    const shown = JSON.parse(JSON.stringify(merged.contact.attributes));
    expect(Object.keys(shown).sort()).toEqual([
      '__proto__',
      'constructor',
      'hasOwnProperty',
      'toString',
      'valueOf',
    ]);
    expect(shown.constructor.value).toBe('c');
  });
});

describe('ids that differ only in lone surrogates (UTF-8 would make both U+FFFD)', () => {
  it('never share a dedupe key, an event id or an entry id', () => {
    const [a, b] = ['77\ud800', '77\ud801'];
    expect(key.dedupe('site', a)).not.toBe(key.dedupe('site', b));
    expect(eventId('salt', 'site', a, 'finished')).not.toBe(eventId('salt', 'site', b, 'finished'));
    expect(entryId('site', a, 'finished')).not.toBe(entryId('site', b, 'finished'));
    expect(storeDigest('sha256', a, 'hex')).not.toBe(storeDigest('sha256', b, 'hex'));
    // Nor with the text a lossy encoding would make of them.
    expect(storeDigest('sha256', a, 'hex')).not.toBe(storeDigest('sha256', '77\ufffd', 'hex'));
  });

  it('JivoChat and LiveTex: the second event is recorded on its own contact, not dropped as a duplicate', async () => {
    const bridge = await startTestBridge({ config: { channels: allVendorChannels } });
    try {
      const jivo = (chat: string, person: string) =>
        bridge.post(
          '/webhooks/jivochat/site/jivo-token-000000000001',
          `{"event_name":"chat_finished","chat_id":"${chat}","user_token":"${person}","visitor":{"name":"V"}}`,
          { 'content-type': 'application/json' },
        );
      const livetex = (dialog: string, person: string) =>
        bridge.post(
          '/webhooks/livetex/app/livetex-token-00000000001',
          `{"Conversation":{"id":"${dialog}"},"discourser":{"personId":"${person}"}}`,
          { 'content-type': 'application/json' },
        );
      // JSON escapes: the bodies are ASCII, the ids hold lone surrogates once parsed.
      expect((await jivo('77\\ud800', 'sur-userA')).status).toBe(200);
      expect((await jivo('77\\ud801', 'sur-userB')).status).toBe(200);
      expect((await livetex('sur-\\ud800', 'sur-lt-A')).status).toBe(200);
      expect((await livetex('sur-\\ud801', 'sur-lt-B')).status).toBe(200);
      for (const person of ['sur-userA', 'sur-userB', 'sur-lt-A', 'sur-lt-B']) {
        const found = await bridge.admin('GET', `/api/v1/contacts?identity=person:${person}`);
        expect(found.body.contacts, person).toHaveLength(1);
        const timeline = await bridge.admin('GET', `/api/v1/contacts/${found.body.contacts[0].id}/timeline`);
        expect(
          timeline.body.entries.map((entry: { type: string }) => entry.type),
          person,
        ).toContain('conversation.finished');
      }
    } finally {
      await bridge.close();
    }
  });
});
