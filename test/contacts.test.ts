import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { type ContactEngineOptions, createContactEngine } from '../src/contacts/engine.js';
import { key } from '../src/contacts/keys.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Observation } from '../src/contacts/types.js';
import { createOutboxPublisher, OUTBOX_KEY, type OutboxEntry } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;

let sequence = 0;
function observation(
  partial: Partial<Observation> & { identifiers: Observation['identifiers'] },
): Observation {
  sequence += 1;
  return {
    channelId: 'web',
    vendor: 'jivochat',
    at: new Date(Date.UTC(2026, 10, 1, 12, 0, sequence)).toISOString(),
    idempotencyKey: `obs-${sequence}-${Math.random()}`,
    ...partial,
  };
}

const prefixes: string[] = [];
let redisUrl: string | undefined;

async function makeStore(kind: 'memory' | 'redis'): Promise<Store> {
  if (kind === 'memory') return createMemoryStore();
  redisUrl ??= await getTestRedisUrl();
  const keyPrefix = uniquePrefix('contacts');
  prefixes.push(keyPrefix);
  return createRedisStore({ url: redisUrl, keyPrefix, logger });
}

afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

function engine(
  store: Store,
  overrides: Partial<typeof identity> = {},
  limits: ContactEngineOptions['limits'] = {},
): ContactService {
  return createContactEngine({
    store,
    identity: { ...identity, ...overrides },
    events: createOutboxPublisher(store),
    metrics: new Metrics(),
    logger,
    limits,
  });
}

async function outbox(store: Store): Promise<OutboxEntry[]> {
  return (await store.lrange(OUTBOX_KEY, 0, -1)).map((raw) => JSON.parse(raw) as OutboxEntry);
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`contact engine on the ${kind} store`, () => {
    let store: Store;
    let contacts: ContactService;

    beforeEach(async () => {
      store = await makeStore(kind);
      contacts = engine(store);
      return () => store.close();
    });

    it('creates a contact with normalised e-mail and E.164 phone, and finds it by either', async () => {
      const result = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: '  Maria@Example.ORG ' },
            { kind: 'phone', value: '8 (916) 123-45-67' },
            { kind: 'visitor', value: '80421' },
          ],
          names: ['Maria Ivanova'],
        }),
      );
      expect(result.created).toBe(true);
      expect(result.contact.emails).toEqual(['maria@example.org']);
      expect(result.contact.phones).toEqual(['+79161234567']);
      expect(result.contact.identities).toContainEqual({ kind: 'visitor', value: '80421', channelId: 'web' });
      const byPhone = await contacts.find({ phone: '+7 916 123 45 67' });
      expect(byPhone.map((contact) => contact.id)).toEqual([result.contact.id]);
      const byEmail = await contacts.find({ email: 'MARIA@example.org' });
      expect(byEmail.map((contact) => contact.id)).toEqual([result.contact.id]);
      const events = await outbox(store);
      expect(events.map((entry) => entry.event.type)).toEqual(['contact.created']);
    });

    it('a repeated idempotency key changes nothing and answers the same contact', async () => {
      const input = observation({
        identifiers: [{ kind: 'email', value: 'a@example.org' }],
        timeline: [{ at: '2026-11-01T10:00:00Z', type: 'conversation.started', summary: 'chat' }],
        events: [{ type: 'conversation.started' }],
      });
      const first = await contacts.observe(input);
      const second = await contacts.observe(input);
      const third = await contacts.observe(input);
      expect(second.duplicate).toBe(true);
      expect(third.contact.id).toBe(first.contact.id);
      const page = await contacts.timeline(first.contact.id, { limit: 10 });
      expect(page.entries).toHaveLength(1);
      expect((await outbox(store)).map((entry) => entry.event.type)).toEqual([
        'contact.created',
        'conversation.started',
      ]);
    });

    it('responsible agent: the newest statement wins, and an explicit unassignment (null) is one', async () => {
      const at = (second: number) => new Date(Date.UTC(2026, 10, 2, 9, 0, second)).toISOString();
      const maria = [{ kind: 'email', value: 'maria@example.org' }];
      const said = (second: number, responsibleAgent: Observation['responsibleAgent']) =>
        contacts.observe(
          observation({
            identifiers: maria,
            at: at(second),
            ...(responsibleAgent === undefined ? {} : { responsibleAgent }),
          }),
        );
      await said(10, { email: 'Dmitry@Store.example', name: 'Dmitry' });
      await store.del(OUTBOX_KEY);
      expect((await said(20, null)).contact.responsibleAgent).toBeNull();
      // Clearing is a change of the contact: destinations hear of it.
      expect((await outbox(store)).map((entry) => entry.event.type)).toEqual(['contact.updated']);
      // Saying nothing leaves it; an older statement arriving late does not bring anyone back.
      expect((await said(30, undefined)).contact.responsibleAgent).toBeNull();
      expect((await said(15, { email: 'oleg@shop.example' })).contact.responsibleAgent).toBeNull();
      // An older unassignment arriving late does not clear a newer agent.
      expect((await said(40, { email: 'oleg@shop.example' })).contact.responsibleAgent).toEqual({
        email: 'oleg@shop.example',
      });
      expect((await said(35, null)).contact.responsibleAgent).toEqual({ email: 'oleg@shop.example' });
    });

    it("responsible agent across a group: one record's newer unassignment outranks another's older agent", async () => {
      const at = (second: number) => new Date(Date.UTC(2026, 10, 3, 9, 0, second)).toISOString();
      // Two records that do not merge yet (vendor-local ids of two channels).
      await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(10),
          identifiers: [{ kind: 'visitor', value: 'a' }],
          responsibleAgent: { email: 'oleg@shop.example' },
        }),
      );
      // This record never had an agent: its unassignment (by the channel that named Oleg on the
      // other record) is kept all the same.
      await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(20),
          identifiers: [{ kind: 'visitor', value: 'b' }],
          responsibleAgent: null,
        }),
      );
      // The same e-mail on both makes them one contact.
      await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(30),
          identifiers: [
            { kind: 'visitor', value: 'a' },
            { kind: 'email', value: 'maria@example.org' },
          ],
        }),
      );
      const merged = await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(40),
          identifiers: [
            { kind: 'visitor', value: 'b' },
            { kind: 'email', value: 'maria@example.org' },
          ],
        }),
      );
      expect(merged.contact.records).toHaveLength(2);
      expect(merged.contact.responsibleAgent).toBeNull();
      expect((await contacts.get(merged.contact.id))?.contact.responsibleAgent).toBeNull();
    });

    it('responsible agent: an unassignment clears only what its own channel said', async () => {
      const at = (second: number) => new Date(Date.UTC(2026, 10, 4, 9, 0, second)).toISOString();
      const maria = [{ kind: 'email', value: 'maria@example.org' }];
      const said = (channelId: string, second: number, responsibleAgent: Observation['responsibleAgent']) =>
        contacts.observe(
          observation({
            channelId,
            vendor: channelId === 'lt' ? 'livetex' : 'jivochat',
            identifiers: maria,
            at: at(second),
            ...(responsibleAgent === undefined ? {} : { responsibleAgent }),
          }),
        );
      const oleg = { email: 'oleg@shop.example' };
      expect((await said('lt', 10, oleg)).contact.responsibleAgent).toEqual(oleg);
      // JivoChat's card says nobody: JivoChat never named Oleg, LiveTex still does.
      await store.del(OUTBOX_KEY);
      expect((await said('web', 20, null)).contact.responsibleAgent).toEqual(oleg);
      expect(await outbox(store)).toEqual([]);
      // JivoChat names Dmitry (the newest statement), then takes him back: LiveTex's Oleg again.
      expect((await said('web', 30, { email: 'dmitry@store.example' })).contact.responsibleAgent).toEqual({
        email: 'dmitry@store.example',
      });
      await store.del(OUTBOX_KEY);
      expect((await said('web', 40, null)).contact.responsibleAgent).toEqual(oleg);
      expect((await outbox(store)).map((entry) => entry.event.type)).toEqual(['contact.updated']);
      // A JivoChat statement older than its own unassignment, arriving late, brings nobody back.
      expect((await said('web', 35, { email: 'irina@shop.example' })).contact.responsibleAgent).toEqual(oleg);
      // The channel that named Oleg unassigns him: nobody is responsible.
      expect((await said('lt', 50, null)).contact.responsibleAgent).toBeNull();
      expect(
        (await contacts.get((await said('web', 60, undefined)).contact.id))?.contact.responsibleAgent,
      ).toBeNull();
    });

    it("responsible agent across a group: another channel's unassignment on another record leaves it", async () => {
      const at = (second: number) => new Date(Date.UTC(2026, 10, 5, 9, 0, second)).toISOString();
      await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(10),
          identifiers: [{ kind: 'visitor', value: 'a' }],
          responsibleAgent: { email: 'oleg@shop.example' },
        }),
      );
      await contacts.observe(
        observation({ at: at(20), identifiers: [{ kind: 'visitor', value: 'b' }], responsibleAgent: null }),
      );
      await contacts.observe(
        observation({
          channelId: 'lt',
          vendor: 'livetex',
          at: at(30),
          identifiers: [
            { kind: 'visitor', value: 'a' },
            { kind: 'email', value: 'maria@example.org' },
          ],
        }),
      );
      const merged = await contacts.observe(
        observation({
          at: at(40),
          identifiers: [
            { kind: 'visitor', value: 'b' },
            { kind: 'email', value: 'maria@example.org' },
          ],
        }),
      );
      expect(merged.contact.records).toHaveLength(2);
      expect(merged.contact.responsibleAgent).toEqual({ email: 'oleg@shop.example' });
      expect((await contacts.get(merged.contact.id))?.contact.responsibleAgent).toEqual({
        email: 'oleg@shop.example',
      });
    });

    it('vendor-local ids never merge across channels, but do within one', async () => {
      const a = await contacts.observe(
        observation({ channelId: 'web', identifiers: [{ kind: 'visitor', value: '7' }] }),
      );
      const b = await contacts.observe(
        observation({ channelId: 'app', identifiers: [{ kind: 'visitor', value: '7' }] }),
      );
      const c = await contacts.observe(
        observation({ channelId: 'web', identifiers: [{ kind: 'visitor', value: '7' }] }),
      );
      expect(a.contact.id).not.toBe(b.contact.id);
      expect(c.contact.id).toBe(a.contact.id);
    });

    it('merges two contacts that turn out to share an identifier, keeping every value, newest first', async () => {
      const web = await contacts.observe(
        observation({ identifiers: [{ kind: 'email', value: 'x@example.org' }], names: ['Old Name'] }),
      );
      const app = await contacts.observe(
        observation({
          channelId: 'app',
          vendor: 'livetex',
          identifiers: [{ kind: 'phone', value: '+79160000001' }],
        }),
      );
      expect(web.contact.id).not.toBe(app.contact.id);
      const bridge = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: 'x@example.org' },
            { kind: 'phone', value: '+79160000001' },
          ],
          names: ['New Name'],
        }),
      );
      // The oldest contact survives.
      expect(bridge.contact.id).toBe(web.contact.id);
      expect(bridge.contact.records.sort()).toEqual([web.contact.id, app.contact.id].sort());
      expect(bridge.contact.names).toEqual(['New Name', 'Old Name']);
      expect(bridge.contact.channels.map((channel) => channel.channelId).sort()).toEqual(['app', 'web']);
      const merged = await contacts.get(app.contact.id);
      expect(merged?.mergedFrom).toBe(app.contact.id);
      expect(merged?.contact.id).toBe(web.contact.id);
      const types = (await outbox(store)).map((entry) => entry.event.type);
      expect(types).toContain('contact.merged');
      const timeline = await contacts.timeline(web.contact.id, { limit: 10 });
      expect(timeline.entries.map((entry) => entry.type)).toContain('contact.merged');
      // The merged-away id pages the same group (read from its root pointer, not its own record).
      expect(await contacts.timeline(app.contact.id, { limit: 10 })).toEqual(timeline);
      await expect(contacts.timeline('c_123456789', { limit: 10 })).rejects.toMatchObject({
        code: 'contact_not_found',
      });
    });

    it('merges transitively: A~B by e-mail, B~C by phone gives one contact', async () => {
      const a = await contacts.observe(observation({ identifiers: [{ kind: 'person', value: 'P-1' }] }));
      const b = await contacts.observe(
        observation({ identifiers: [{ kind: 'email', value: 'b@example.org' }] }),
      );
      const c = await contacts.observe(
        observation({ identifiers: [{ kind: 'phone', value: '+79160000002' }] }),
      );
      await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-1' },
            { kind: 'email', value: 'b@example.org' },
          ],
        }),
      );
      const final = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: 'b@example.org' },
            { kind: 'phone', value: '+79160000002' },
          ],
        }),
      );
      expect(final.contact.id).toBe(a.contact.id);
      expect(final.contact.records.sort()).toEqual([a.contact.id, b.contact.id, c.contact.id].sort());
      for (const id of [b.contact.id, c.contact.id])
        expect((await contacts.get(id))?.contact.id).toBe(a.contact.id);
    });

    it('blocklisted values identify nobody', async () => {
      const one = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'null' },
            { kind: 'visitor', value: '1' },
          ],
        }),
      );
      const two = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'null' },
            { kind: 'visitor', value: '2' },
          ],
        }),
      );
      expect(one.contact.id).not.toBe(two.contact.id);
      expect(one.contact.identities.some((identifier) => identifier.kind === 'person')).toBe(false);
      await expect(
        contacts.observe(observation({ identifiers: [{ kind: 'email', value: 'anonymous' }] })),
      ).rejects.toMatchObject({ code: 'no_identifier', status: 400 });
    });

    it('refuses a merge that would pull more records together than the cap, and reports it', async () => {
      const capped = engine(store, { maxMergeSize: 2 });
      const ids = [];
      for (const value of ['+79160000011', '+79160000012', '+79160000013']) {
        ids.push((await capped.observe(observation({ identifiers: [{ kind: 'phone', value }] }))).contact.id);
      }
      const result = await capped.observe(
        observation({
          identifiers: ['+79160000011', '+79160000012', '+79160000013'].map((value) => ({
            kind: 'phone',
            value,
          })),
        }),
      );
      expect(result.contact.records).toHaveLength(1);
      const conflicts = (await capped.conflictsPage({ limit: 10 })).conflicts;
      expect(conflicts).toHaveLength(1);
      expect(conflicts[0]).toMatchObject({ reason: 'too_large' });
      for (const id of ids) expect((await capped.get(id))?.mergedFrom).toBeUndefined();
    });

    it('pages the conflicts by a cursor that trims at the start and refusals at the end do not move', async () => {
      // As refusalWrites writes them: pushed at the end, the oldest trimmed at the start.
      const push = async (...numbers: number[]) => {
        for (const n of numbers)
          await store.rpush(
            key.conflicts,
            JSON.stringify({
              at: '2026-11-01T10:00:00.000Z',
              reason: 'too_large',
              roots: [`c_page${n}a`, `c_page${n}b`],
              via: { kind: 'email', value: `page${n}@example.org` },
            }),
          );
      };
      const trim = (count: number) => store.batch().ltrim(key.conflicts, count, -1).exec();
      const ns = (page: { conflicts: Array<{ via: { value: string } }> }) =>
        page.conflicts.map((item) => Number(/\d+/.exec(item.via.value)![0]));
      await push(1, 2, 3, 4, 5, 6);
      const first = await contacts.conflictsPage({ limit: 2 });
      expect(ns(first)).toEqual([6, 5]);
      await push(7, 8);
      await trim(1); // 1 is gone; 5 is one place nearer the start
      const second = await contacts.conflictsPage({ limit: 2, before: first.nextCursor! });
      expect(ns(second)).toEqual([4, 3]);
      await trim(2); // 2 and 3 gone: 3 named the place, and nothing older is left
      const third = await contacts.conflictsPage({ limit: 2, before: second.nextCursor! });
      expect(third).toEqual({ conflicts: [], nextCursor: null });
      // The whole list on one page has no next one.
      expect(await contacts.conflictsPage({ limit: 5 })).toMatchObject({ nextCursor: null });
      expect(ns(await contacts.conflictsPage({ limit: 5 }))).toEqual([8, 7, 6, 5, 4]);
    });

    it('unmerges a record, keeps it apart afterwards, and splits an identifier off', async () => {
      const a = await contacts.observe(
        observation({ identifiers: [{ kind: 'email', value: 'family@example.org' }] }),
      );
      const b = await contacts.observe(
        observation({ identifiers: [{ kind: 'phone', value: '+79160000021' }] }),
      );
      const bridgeObservation = () =>
        observation({
          identifiers: [
            { kind: 'email', value: 'family@example.org' },
            { kind: 'phone', value: '+79160000021' },
          ],
        });
      const merged = await contacts.observe(bridgeObservation());
      expect(merged.contact.records).toHaveLength(2);
      const undone = await contacts.unmerge(a.contact.id, { recordId: b.contact.id });
      expect(undone.contact.records).toEqual([a.contact.id]);
      expect(undone.split.id).toBe(b.contact.id);
      expect((await contacts.get(b.contact.id))?.mergedFrom).toBeUndefined();
      // The same bridging observation does not glue them back together.
      const again = await contacts.observe(bridgeObservation());
      expect(again.contact.records).toHaveLength(1);
      expect((await contacts.conflictsPage({ limit: 5 })).conflicts[0]).toMatchObject({
        reason: 'unmerged_before',
      });

      const c = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-9' },
            { kind: 'email', value: 'shared@example.org' },
          ],
        }),
      );
      const split = await contacts.unmerge(c.contact.id, {
        identifier: { kind: 'email', value: 'Shared@Example.org' },
      });
      expect(split.contact.emails).toEqual([]);
      expect(split.split.emails).toEqual(['shared@example.org']);
      expect((await contacts.findByIdentifier({ kind: 'email', value: 'shared@example.org' }))?.id).toBe(
        split.split.id,
      );
      await expect(contacts.unmerge(c.contact.id, { recordId: 'c_nope' })).rejects.toMatchObject({
        status: 400,
      });
    });

    it('pages the timeline newest first across merged records with a cursor', async () => {
      const a = await contacts.observe(
        observation({
          identifiers: [{ kind: 'email', value: 'paging@example.org' }],
          timeline: Array.from({ length: 5 }, (_, index) => ({
            key: `a${index}`,
            at: new Date(Date.UTC(2026, 0, 1, 0, 0, index * 2)).toISOString(),
            type: 'message.received',
            summary: `a${index}`,
          })),
        }),
      );
      await contacts.observe(
        observation({
          channelId: 'app',
          identifiers: [{ kind: 'phone', value: '+79160000031' }],
          timeline: Array.from({ length: 5 }, (_, index) => ({
            key: `b${index}`,
            at: new Date(Date.UTC(2026, 0, 1, 0, 0, index * 2 + 1)).toISOString(),
            type: 'message.received',
            summary: `b${index}`,
          })),
        }),
      );
      await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: 'paging@example.org' },
            { kind: 'phone', value: '+79160000031' },
          ],
        }),
      );
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        const result = await contacts.timeline(a.contact.id, {
          limit: 3,
          ...(cursor ? { before: cursor } : {}),
        });
        seen.push(
          ...result.entries
            .filter((entry) => entry.type === 'message.received')
            .map((entry) => entry.summary),
        );
        if (!result.nextCursor) break;
        cursor = result.nextCursor;
      }
      expect(seen).toEqual(['b4', 'a4', 'b3', 'a3', 'b2', 'a2', 'b1', 'a1', 'b0', 'a0']);
      await expect(contacts.timeline(a.contact.id, { limit: 3, before: 'garbage' })).rejects.toMatchObject({
        status: 400,
      });
    });

    it('an e-mail given again, verified, becomes primary and verified though another record of the group holds it', async () => {
      const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();
      await contacts.observe(
        observation({
          at: at(1),
          identifiers: [
            { kind: 'email', value: 'e1@example.org' },
            { kind: 'phone', value: '+79160000077' },
          ],
        }),
      );
      await contacts.observe(
        observation({
          at: at(2),
          identifiers: [
            { kind: 'person', value: 'P-newest' },
            { kind: 'email', value: 'e2@example.org' },
          ],
        }),
      );
      const merged = await contacts.observe(
        observation({
          at: at(3),
          identifiers: [
            { kind: 'person', value: 'P-newest' },
            { kind: 'phone', value: '+79160000077' },
          ],
        }),
      );
      expect(merged.contact.records).toHaveLength(2);
      const result = await contacts.observe(
        observation({
          at: at(4),
          identifiers: [
            { kind: 'person', value: 'P-newest' },
            { kind: 'email', value: 'e1@example.org', provenance: 'verified' },
          ],
        }),
      );
      const expected = {
        emails: ['e1@example.org', 'e2@example.org'],
        identity: { kind: 'email', value: 'e1@example.org', provenance: 'verified' },
      };
      expect(result.contact.emails).toEqual(expected.emails);
      expect(result.contact.identities).toContainEqual(expected.identity);
      const stored = (await contacts.get(result.contact.id))!.contact;
      expect(stored.emails).toEqual(expected.emails);
      expect(stored.identities).toContainEqual(expected.identity);
    });

    it('a merge on a verified e-mail marks that e-mail verified on the record that typed it', async () => {
      await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: 'typed@example.org', provenance: 'visitor' },
            { kind: 'visitor', value: '1' },
          ],
        }),
      );
      await contacts.observe(
        observation({
          channelId: 'app',
          vendor: 'livetex',
          identifiers: [{ kind: 'person', value: 'P-typed', provenance: 'verified' }],
        }),
      );
      const result = await contacts.observe(
        observation({
          channelId: 'cv',
          vendor: 'chatvisor',
          identifiers: [
            { kind: 'person', value: 'P-typed', provenance: 'verified' },
            { kind: 'email', value: 'typed@example.org', provenance: 'verified' },
          ],
        }),
      );
      expect(result.contact.records).toHaveLength(2);
      const verified = { kind: 'email', value: 'typed@example.org', provenance: 'verified' };
      expect(result.contact.identities).toContainEqual(verified);
      expect((await contacts.get(result.contact.id))!.contact.identities).toContainEqual(verified);
    });

    it('splitting a record off takes the merges its group had made along', async () => {
      const a = await contacts.observe(observation({ identifiers: [{ kind: 'person', value: 'P-ra' }] }));
      const b = await contacts.observe(observation({ identifiers: [{ kind: 'person', value: 'P-rb' }] }));
      const c = await contacts.observe(
        observation({ identifiers: [{ kind: 'phone', value: '+79160000041' }] }),
      );
      // B absorbs C, then A absorbs B's group.
      await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-rb' },
            { kind: 'phone', value: '+79160000041' },
          ],
        }),
      );
      await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-ra' },
            { kind: 'email', value: 'rb@example.org' },
          ],
        }),
      );
      const all = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'email', value: 'rb@example.org' },
            { kind: 'person', value: 'P-rb' },
          ],
        }),
      );
      expect(all.contact.id).toBe(a.contact.id);
      expect(all.contact.merges.map((merge) => merge.recordId)).toEqual([c.contact.id, b.contact.id]);
      const undone = await contacts.unmerge(a.contact.id, { recordId: b.contact.id });
      expect(undone.contact.records).toEqual([a.contact.id]);
      expect(undone.contact.merges).toEqual([]);
      expect(undone.split.records).toEqual([b.contact.id, c.contact.id]);
      expect(undone.split.merges.map((merge) => merge.recordId)).toEqual([c.contact.id]);
      expect((await contacts.get(a.contact.id))!.contact.merges).toEqual([]);
      const split = (await contacts.get(b.contact.id))!.contact;
      expect(split.merges.map((merge) => merge.recordId)).toEqual([c.contact.id]);
      // And that merge can itself be undone from the split-off contact.
      const again = await contacts.unmerge(b.contact.id, { recordId: c.contact.id });
      expect(again.contact.records).toEqual([b.contact.id]);
      expect(again.split.records).toEqual([c.contact.id]);
    });

    it('splitting a verified e-mail off keeps it verified', async () => {
      const result = await contacts.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-split-ok' },
            { kind: 'email', value: 'split-ok@example.org', provenance: 'verified' },
          ],
        }),
      );
      const verified = { kind: 'email', value: 'split-ok@example.org', provenance: 'verified' };
      expect(result.contact.identities).toContainEqual(verified);
      const split = await contacts.unmerge(result.contact.id, {
        identifier: { kind: 'email', value: 'split-ok@example.org' },
      });
      expect(split.split.identities).toContainEqual(verified);
      expect((await contacts.get(split.split.id))!.contact.identities).toContainEqual(verified);
    });

    it('limits.timelineRetention also covers timelines written by merges and unmerges', async () => {
      const hour = 3_600_000;
      const retained = engine(store, {}, { timelineRetention: hour });
      const a = await retained.observe(observation({ identifiers: [{ kind: 'person', value: 'P-ret' }] }));
      const b = await retained.observe(
        observation({ identifiers: [{ kind: 'email', value: 'ret@example.org' }] }),
      );
      await retained.observe(
        observation({
          identifiers: [
            { kind: 'person', value: 'P-ret' },
            { kind: 'email', value: 'ret@example.org' },
          ],
        }),
      );
      const types = (await retained.timeline(a.contact.id, { limit: 10 })).entries.map((entry) => entry.type);
      expect(types).toEqual(['contact.merged']);
      const ttl = () => store.pttl(key.timeline(a.contact.id));
      expect(await ttl()).toBeGreaterThan(0);
      expect(await ttl()).toBeLessThanOrEqual(hour);
      // An unmerge's entry starts it again too (here: on a timeline that had gone).
      await store.del(key.timeline(a.contact.id));
      await retained.unmerge(a.contact.id, { recordId: b.contact.id });
      const after = (await retained.timeline(a.contact.id, { limit: 10 })).entries.map((entry) => entry.type);
      expect(after).toEqual(['contact.unmerged']);
      expect(await ttl()).toBeGreaterThan(0);
      expect(await ttl()).toBeLessThanOrEqual(hour);
    });
  });
}

describe('concurrent writers on Redis (two instances, one Redis)', () => {
  it('the same new person seen at the same moment by two instances ends as ONE contact', async () => {
    redisUrl ??= await getTestRedisUrl();
    const keyPrefix = uniquePrefix('concurrent');
    prefixes.push(keyPrefix);
    const storeA = await createRedisStore({ url: redisUrl, keyPrefix, logger });
    const storeB = await createRedisStore({ url: redisUrl, keyPrefix, logger });
    const instanceA = engine(storeA);
    const instanceB = engine(storeB);
    try {
      for (let round = 0; round < 20; round++) {
        const email = `racer${round}@example.org`;
        const phone = `+7916100${String(round).padStart(4, '0')}`;
        const person = `P-race-${round}`;
        // Different identifier subsets, so the writers also race to merge.
        const results = await Promise.all([
          instanceA.observe(
            observation({
              identifiers: [
                { kind: 'email', value: email },
                { kind: 'person', value: person },
              ],
            }),
          ),
          instanceB.observe(observation({ identifiers: [{ kind: 'email', value: email }] })),
          instanceA.observe(
            observation({
              channelId: 'app',
              identifiers: [
                { kind: 'person', value: person },
                { kind: 'phone', value: phone },
              ],
            }),
          ),
          instanceB.observe(
            observation({
              channelId: 'app',
              identifiers: [
                { kind: 'phone', value: phone },
                { kind: 'email', value: email },
              ],
            }),
          ),
        ]);
        const roots = new Set<string>();
        for (const result of results) roots.add((await instanceA.get(result.contact.id))!.contact.id);
        expect(roots.size).toBe(1);
        const [contact] = await instanceB.find({ email });
        expect(contact?.emails).toEqual([email]);
        expect(contact?.phones).toEqual([phone]);
        expect(await instanceA.find({ phone })).toHaveLength(1);
        expect(await instanceA.find({ identity: { kind: 'person', value: person } })).toHaveLength(1);
      }
    } finally {
      await storeA.close();
      await storeB.close();
    }
  });
});
