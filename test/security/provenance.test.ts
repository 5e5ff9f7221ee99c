import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { createContactEngine } from '../../src/contacts/engine.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createMemoryStore } from '../../src/store/memory.js';

/** Issue 10 item 5: merges on visitor-typed values are a configurable choice. */
function engine(identity: Record<string, unknown> = {}) {
  const config = configSchema.parse({ admin: { token: 'x'.repeat(16) }, identity });
  const store = createMemoryStore();
  return createContactEngine({
    store,
    identity: config.identity,
    events: createOutboxPublisher(store, { enabled: false }),
    metrics: new Metrics(),
    logger: createLogger('silent'),
    now: () => new Date('2026-11-01T12:00:00Z'),
  });
}

let sequence = 0;
async function scenario(contacts: ReturnType<typeof engine>, typed: 'visitor' | 'verified' | undefined) {
  // Maria, known by her customer id and e-mail from the authorised app.
  const maria = await contacts.observe({
    channelId: 'app',
    vendor: 'livetex',
    at: '2026-11-01T12:00:00Z',
    idempotencyKey: `m-${++sequence}`,
    identifiers: [
      { kind: 'person', value: `p-maria-${sequence}` },
      { kind: 'email', value: `maria${sequence}@example.org`, provenance: 'verified' },
    ],
  });
  // A website visitor types Maria's e-mail into the chat form.
  const stranger = await contacts.observe({
    channelId: 'site',
    vendor: 'jivochat',
    at: '2026-11-01T12:01:00Z',
    idempotencyKey: `s-${sequence}`,
    identifiers: [
      { kind: 'visitor', value: `v-${sequence}` },
      { kind: 'email', value: `maria${sequence}@example.org`, ...(typed ? { provenance: typed } : {}) },
    ],
  });
  return { maria: maria.contact, stranger: stranger.contact };
}

describe('identifier provenance', () => {
  it('by default keeps today’s merge on a typed e-mail (what the vendors document)', async () => {
    const { maria, stranger } = await scenario(engine(), undefined);
    expect(stranger.id).toBe(maria.id);
  });

  it('with mergeOnVisitorTyped: [person] a typed e-mail does not merge, and Maria’s data stays hers', async () => {
    const contacts = engine({ mergeOnVisitorTyped: ['person'] });
    const { maria, stranger } = await scenario(contacts, undefined);
    expect(stranger.id).not.toBe(maria.id);
    expect(stranger.identities.map((identity) => identity.kind)).not.toContain('person');
    // Still findable by the e-mail (search only): both contacts come back.
    const found = await contacts.find({ email: maria.emails[0]! });
    expect(found.map((contact) => contact.id).sort()).toEqual([maria.id, stranger.id].sort());
  });

  it('a verified e-mail still merges under the strict setting', async () => {
    const { maria, stranger } = await scenario(engine({ mergeOnVisitorTyped: ['person'] }), 'verified');
    expect(stranger.id).toBe(maria.id);
  });
});
