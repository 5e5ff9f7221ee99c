import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { sameShown } from '../src/contacts/record.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Contact, Observation } from '../src/contacts/types.js';
import { createOutboxPublisher, OUTBOX_KEY, type OutboxEntry } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * `contact.updated` says that what the contact shows changed (README, Outbox): its names, e-mails,
 * phones (and which is primary: the newest), identities, labels, attribute values, responsible
 * agent or CRM link. Exactly one per observation that changes any of them, none for one that
 * changes none — also when the observation lands on one record of a merged contact, whose other
 * records may already show (or outrank) what it says. A merge itself is told by contact.merged.
 */

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
const prefixes: string[] = [];
let redisUrl: string | undefined;

async function makeStore(kind: 'memory' | 'redis'): Promise<Store> {
  if (kind === 'memory') return createMemoryStore();
  redisUrl ??= await getTestRedisUrl();
  const keyPrefix = uniquePrefix('contact-updated');
  prefixes.push(keyPrefix);
  return createRedisStore({ url: redisUrl, keyPrefix, logger });
}

afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

const at = (second: number) => new Date(Date.UTC(2026, 10, 6, 9, 0, second)).toISOString();
let sequence = 0;

for (const kind of ['memory', 'redis'] as const) {
  describe(`contact.updated on the ${kind} store`, () => {
    let store: Store;
    let contacts: ContactService;

    beforeEach(async () => {
      store = await makeStore(kind);
      contacts = createContactEngine({
        store,
        identity,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
      });
      return () => store.close();
    });

    const observe = (second: number, partial: Partial<Observation> & Pick<Observation, 'identifiers'>) => {
      sequence += 1;
      return contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at: at(second),
        idempotencyKey: `upd-${sequence}-${Math.random()}`,
        ...partial,
      });
    };
    const events = async () =>
      (await store.lrange(OUTBOX_KEY, 0, -1)).map((raw) => (JSON.parse(raw) as OutboxEntry).event.type);
    /** What the next observation stages, and the contact it answers. */
    const staged = async (run: () => Promise<{ contact: Contact }>) => {
      await store.del(OUTBOX_KEY);
      const { contact } = await run();
      return { contact, events: await events() };
    };

    /**
     * Two records merged into one contact: A (person pa, the older: it survives) and B (person pb),
     * joined by the e-mail they share. An observation naming only pb writes to B.
     */
    async function mergedPair(a: Partial<Observation> = {}, b: Partial<Observation> = {}) {
      await observe(1, { identifiers: [{ kind: 'person', value: 'pa' }], ...a });
      await observe(2, { identifiers: [{ kind: 'person', value: 'pb' }], ...b });
      await observe(3, {
        identifiers: [
          { kind: 'person', value: 'pa' },
          { kind: 'email', value: 'shared@example.org' },
        ],
      });
      const merged = await observe(4, {
        identifiers: [
          { kind: 'person', value: 'pb' },
          { kind: 'email', value: 'shared@example.org' },
        ],
      });
      expect(merged.contact.records).toHaveLength(2);
      return merged.contact;
    }
    const onB =
      (second: number, partial: Partial<Observation> = {}) =>
      () =>
        observe(second, { identifiers: [{ kind: 'person', value: 'pb' }], ...partial });

    it('an unassignment on one record that clears the agent another record named is a change', async () => {
      // A: JivoChat names Dmitry at 1 (the newest statement); B: LiveTex named Oleg before him.
      const contact = await mergedPair(
        { responsibleAgent: { email: 'dmitry@shop.example' } },
        { channelId: 'lt', vendor: 'livetex', at: at(0), responsibleAgent: { email: 'oleg@shop.example' } },
      );
      expect(contact.responsibleAgent).toEqual({ email: 'dmitry@shop.example' });
      // JivoChat's card, observed through B, now says nobody: Dmitry goes, LiveTex's Oleg is back.
      const after = await staged(onB(10, { responsibleAgent: null }));
      expect(after.contact.responsibleAgent).toEqual({ email: 'oleg@shop.example' });
      expect(after.events).toEqual(['contact.updated']);
    });

    it("an agent statement on one record that another record's newer agent outranks is no change", async () => {
      // A: JivoChat names Dmitry at 8; B: LiveTex named Oleg at 2. Dmitry is the newest.
      const contact = await mergedPair(
        { at: at(8), responsibleAgent: { email: 'dmitry@shop.example' } },
        { channelId: 'lt', vendor: 'livetex', responsibleAgent: { email: 'oleg@shop.example' } },
      );
      expect(contact.responsibleAgent).toEqual({ email: 'dmitry@shop.example' });
      const lt = { channelId: 'lt', vendor: 'livetex' };
      // LiveTex names Irina on B at 5: B's own agent changes, the contact's (Dmitry, 8) does not.
      const unchanged = await staged(onB(5, { ...lt, responsibleAgent: { email: 'irina@shop.example' } }));
      expect(unchanged.contact.responsibleAgent).toEqual({ email: 'dmitry@shop.example' });
      expect(unchanged.events).toEqual([]);
      // LiveTex names Pavel at 9, newer than Dmitry: the contact's agent changes.
      const changed = await staged(onB(9, { ...lt, responsibleAgent: { email: 'pavel@shop.example' } }));
      expect(changed.contact.responsibleAgent).toEqual({ email: 'pavel@shop.example' });
      expect(changed.events).toEqual(['contact.updated']);
    });

    it('a label, attribute or CRM link another record already shows (or outranks) is no change', async () => {
      await mergedPair({
        labels: ['vip'],
        attributes: { tariff: { value: 'gold' } },
        crmLink: 'https://crm.example/1',
        at: at(1),
      });
      // A label the contact has: nothing.
      expect((await staged(onB(10, { labels: ['vip'] }))).events).toEqual([]);
      // The same attribute value, and an older value than A's: nothing (A's gold, newer, stays).
      expect((await staged(onB(11, { attributes: { tariff: { value: 'gold' } } }))).events).toEqual([]);
      const older = await staged(onB(0, { attributes: { tariff: { value: 'silver' } } }));
      expect(older.contact.attributes.tariff?.value).toBe('gold');
      expect(older.events).toEqual([]);
      // An older CRM link than A's: nothing.
      const link = await staged(onB(0, { crmLink: 'https://crm.example/2' }));
      expect(link.contact.crmLink).toBe('https://crm.example/1');
      expect(link.events).toEqual([]);
      // A name another record has, seen earlier than there: nothing.
      await observe(12, { identifiers: [{ kind: 'person', value: 'pa' }], names: ['Anna'] });
      expect((await staged(onB(0, { names: ['Anna'] }))).events).toEqual([]);
      // What the contact does not show yet is a change, once each.
      const news = await staged(onB(20, { labels: ['new'], attributes: { tariff: { value: 'platinum' } } }));
      expect(news.contact.labels).toEqual(['new', 'vip']);
      expect(news.contact.attributes.tariff?.value).toBe('platinum');
      expect(news.events).toEqual(['contact.updated']);
    });

    it('a value seen again that becomes primary (the newest) is a change', async () => {
      const anna = [{ kind: 'person', value: 'p-anna' }];
      await observe(1, { identifiers: anna, names: ['Anna'] });
      expect((await observe(2, { identifiers: anna, names: ['Anya'] })).contact.name).toBe('Anya');
      // Anna again, newer: she is the name the contact shows.
      const again = await staged(() => observe(3, { identifiers: anna, names: ['Anna'] }));
      expect(again.contact.name).toBe('Anna');
      expect(again.events).toEqual(['contact.updated']);
      // Anna once more: nothing moves.
      expect((await staged(() => observe(4, { identifiers: anna, names: ['Anna'] }))).events).toEqual([]);
    });

    it('an e-mail another record holds, seen again through this one, becomes primary: a change', async () => {
      await mergedPair({ at: at(1) });
      // B gets an e-mail of its own, newer than the shared one: it is primary.
      const own = await staged(
        onB(5, {
          identifiers: [
            { kind: 'person', value: 'pb' },
            { kind: 'email', value: 'b@example.org' },
          ],
        }),
      );
      expect(own.contact.emails).toEqual(['b@example.org', 'shared@example.org']);
      expect(own.events).toEqual(['contact.updated']);
      // The shared e-mail (held by A) seen again through B, newest: primary again.
      const shared = await staged(
        onB(6, {
          identifiers: [
            { kind: 'person', value: 'pb' },
            { kind: 'email', value: 'shared@example.org' },
          ],
        }),
      );
      expect(shared.contact.emails).toEqual(['shared@example.org', 'b@example.org']);
      expect(shared.events).toEqual(['contact.updated']);
    });

    it('a merge is told by contact.merged; contact.updated only for what the observation adds to it', async () => {
      await observe(1, { identifiers: [{ kind: 'person', value: 'pa' }] });
      await observe(2, {
        identifiers: [
          { kind: 'person', value: 'pb' },
          { kind: 'email', value: 'b@example.org' },
        ],
      });
      // Joins B's group through its e-mail, adding nothing else: one contact.merged.
      const merge = await staged(() =>
        observe(3, {
          identifiers: [
            { kind: 'person', value: 'pa' },
            { kind: 'email', value: 'b@example.org' },
          ],
        }),
      );
      expect(merge.contact.records).toHaveLength(2);
      expect(merge.events).toEqual(['contact.merged']);
      await observe(4, {
        identifiers: [
          { kind: 'person', value: 'pc' },
          { kind: 'email', value: 'c@example.org' },
        ],
      });
      // Joins C's group and names the contact: both.
      const named = await staged(() =>
        observe(5, {
          identifiers: [
            { kind: 'person', value: 'pa' },
            { kind: 'email', value: 'c@example.org' },
          ],
          names: ['Anna'],
        }),
      );
      expect(named.contact.records).toHaveLength(3);
      expect(named.events).toEqual(['contact.updated', 'contact.merged']);
    });

    it('an unmerge tells both contacts as they now are (the agent the split-off record named goes with it)', async () => {
      const merged = await mergedPair(
        { responsibleAgent: { email: 'dmitry@shop.example' } },
        { channelId: 'lt', vendor: 'livetex', responsibleAgent: { email: 'oleg@shop.example' } },
      );
      expect(merged.responsibleAgent).toEqual({ email: 'oleg@shop.example' });
      await store.del(OUTBOX_KEY);
      const b = merged.records.find((id) => id !== merged.id)!;
      await contacts.unmerge(merged.id, { recordId: b });
      const staged = (await store.lrange(OUTBOX_KEY, 0, -1)).map(
        (raw) => (JSON.parse(raw) as OutboxEntry).event,
      );
      expect(staged.map((event) => [event.type, event.contact?.id, event.contact?.responsibleAgent])).toEqual(
        [
          ['contact.updated', merged.id, { email: 'dmitry@shop.example' }],
          ['contact.created', b, { email: 'oleg@shop.example' }],
        ],
      );
    });

    it('random observations of one person, merged or not: contact.updated exactly when what the contact shows changed', async () => {
      // xorshift32, seeded: the same steps every run.
      let state = 0x2c0ffee;
      const random = () => {
        state ^= state << 13;
        state >>>= 0;
        state ^= state >>> 17;
        state ^= state << 5;
        state >>>= 0;
        return state / 0x1_0000_0000;
      };
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
      const channels = [
        { channelId: 'web', vendor: 'jivochat' },
        { channelId: 'lt', vendor: 'livetex' },
      ];
      const agents = [{ email: 'dmitry@shop.example' }, { email: 'oleg@shop.example' }, null, undefined];
      let merged = false;
      for (let step = 0; step < 120; step++) {
        // Two records (pa, pb), each with its own e-mail and phone, until step 60 names both: then
        // one contact, whose e-mails and phones either record's observations may bring.
        const person = pick(['pa', 'pb']);
        const identifiers: Observation['identifiers'] = [{ kind: 'person', value: person }];
        const own = person === 'pa' ? 0 : 1;
        const which = () => (step < 60 ? own : Math.floor(random() * 2));
        if (random() < 0.4)
          identifiers.push({ kind: 'email', value: ['a@example.org', 'b@example.org'][which()]! });
        if (random() < 0.3)
          identifiers.push({ kind: 'phone', value: ['+79161234567', '+79161234568'][which()]! });
        if (step === 60) identifiers.push({ kind: 'person', value: person === 'pa' ? 'pb' : 'pa' });
        const agent = pick(agents);
        // The contacts its identifiers lead to: none (a new contact), one, or several (a merge).
        const found = new Map<string, Contact>();
        for (const identifier of identifiers) {
          const contact = await contacts.findByIdentifier(identifier);
          if (contact) found.set(contact.id, contact);
        }
        const before = found.size === 1 ? [...found.values()][0] : undefined;
        const after = await staged(() =>
          observe(Math.floor(random() * 50), {
            ...pick(channels),
            identifiers,
            ...(random() < 0.4 ? { names: [pick(['Anna', 'Anya', 'Anna S.'])] } : {}),
            ...(random() < 0.3 ? { labels: [pick(['vip', 'new'])] } : {}),
            ...(random() < 0.4 ? { attributes: { tariff: { value: pick(['gold', 'silver']) } } } : {}),
            ...(random() < 0.2 ? { crmLink: pick(['https://crm.example/1', 'https://crm.example/2']) } : {}),
            ...(agent === undefined ? {} : { responsibleAgent: agent }),
          }),
        );
        const updates = after.events.filter((type) => type === 'contact.updated').length;
        if (found.size === 0) {
          expect(after.events[0], `step ${step}`).toBe('contact.created');
          continue;
        }
        if (before === undefined) {
          expect(after.events, `step ${step}`).toContain('contact.merged');
          merged = true;
          continue;
        }
        expect(updates, `step ${step}: contact.updated iff the contact shows something else`).toBe(
          sameShown(before, after.contact) ? 0 : 1,
        );
      }
      // The steps did reach a merged contact (two records) and went on with it.
      expect(merged).toBe(true);
      expect((await contacts.findByIdentifier({ kind: 'person', value: 'pa' }))?.records).toHaveLength(2);
    });
  });
}
