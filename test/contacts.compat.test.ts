import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Contact, Observation } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createMemoryStore } from '../src/store/memory.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Data written before record ids became `c_<digits>` (stored as their digits, src/contacts/keys.ts)
 * and records took their shorter forms (src/contacts/record.ts) must keep working without a
 * migration: read, found by every index, updated, merged with new records either way, unmerged
 * and split. The fixture holds the keys, byte for byte, that the engine of commit b4ca38b wrote
 * for a few contacts (ids `c_` + 20 hex; two renamed to hex ids of decimal digits only, which that
 * engine could make too), and what it answered for them; it is loaded raw, then used by this code.
 */

interface FixtureKey {
  key: string;
  type: 'string' | 'set' | 'zset' | 'list';
  value?: string;
  members?: string[];
  values?: string[];
  ttl?: true;
}
type Name = 'anna' | 'boris' | 'carol' | 'dora' | 'eve' | 'frank';
interface Fixture {
  identity: { mergeOnVisitorTyped: Array<'person' | 'email' | 'phone'> };
  ids: Record<Name, string>;
  observations: Record<string, Observation>;
  keys: FixtureKey[];
  views: Record<Name, { contact: Contact; mergedFrom?: string }>;
  timeline: { anna: unknown };
}

const fixture = JSON.parse(
  readFileSync(new URL('./__fixtures__/contacts-before-digit-ids.json', import.meta.url), 'utf8'),
) as Fixture;
const { ids } = fixture;
const logger = createLogger('silent');
const identity = {
  ...configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity,
  ...fixture.identity,
};
const DAY_MS = 24 * 3600 * 1000;
/** A record id as this code makes them (newRecordId). */
const NEW_ID = /^c_[1-9][0-9]{17,18}$/;

const prefixes: string[] = [];
let redisUrl: string | undefined;

async function load(store: Store): Promise<void> {
  const batch = store.batch();
  for (const entry of fixture.keys) {
    if (entry.type === 'string') batch.set(entry.key, entry.value!, entry.ttl ? 7 * DAY_MS : undefined);
    else if (entry.type === 'set') batch.sadd(entry.key, ...entry.members!);
    else if (entry.type === 'zset') for (const member of entry.members!) batch.zadd(entry.key, 0, member);
    else batch.rpush(entry.key, ...entry.values!);
  }
  await batch.exec();
}

let sequence = 0;
function observation(at: string, identifiers: Observation['identifiers'], names: string[] = []): Observation {
  sequence += 1;
  return {
    channelId: 'web',
    vendor: 'jivochat',
    at,
    idempotencyKey: `compat-${sequence}`,
    identifiers,
    names,
  };
}
const verified = (kind: 'email' | 'phone', value: string) => ({
  kind,
  value,
  provenance: 'verified' as const,
});

afterAll(async () => {
  if (redisUrl) for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

for (const kind of ['memory', 'redis'] as const) {
  describe(`contacts written before c_<digits> ids, on the ${kind} store`, () => {
    let store: Store;
    let contacts: ContactService;
    /** Redis only: what a key's value is kept as (OBJECT ENCODING). */
    let encodingOf: (key: string) => Promise<string | null>;

    beforeEach(async () => {
      let raw: Redis | undefined;
      if (kind === 'memory') {
        store = createMemoryStore();
        encodingOf = async () => null;
      } else {
        redisUrl ??= await getTestRedisUrl();
        const keyPrefix = uniquePrefix('compat');
        prefixes.push(keyPrefix);
        store = await createRedisStore({ url: redisUrl, keyPrefix, logger });
        const client = new Redis(redisUrl);
        raw = client;
        encodingOf = (key) => client.object('ENCODING', `${keyPrefix}:${key}`) as Promise<string | null>;
      }
      await load(store);
      contacts = createContactEngine({
        store,
        identity,
        events: createOutboxPublisher(store),
        metrics: new Metrics(),
        logger,
      });
      return async () => {
        raw?.disconnect();
        await store.close();
      };
    });

    it('reads every contact and timeline as the engine before answered them', async () => {
      for (const name of Object.keys(ids) as Name[]) {
        expect(await contacts.get(ids[name]), name).toEqual(fixture.views[name]);
      }
      expect(await contacts.timeline(ids.anna, { limit: 10 })).toEqual(fixture.timeline.anna);
    });

    it('finds the old contacts by every index, with and without the one-step claim', async () => {
      const anna = fixture.views.anna.contact;
      for (const query of [
        { email: 'anna@example.org' },
        { email: 'boris@example.org' },
        { phone: '+79161234567' },
        { identity: { kind: 'person', value: 'p-anna' } },
        { identity: { kind: 'visitor', value: '200', channelId: 'web' } },
        { name: 'ivanov' },
      ]) {
        expect(await contacts.find(query), JSON.stringify(query)).toEqual([anna]);
      }
      // The visitor-typed e-mail kept search-only (sidx), and a name word two contacts share.
      expect(await contacts.find({ email: 'carol@example.org' })).toEqual([fixture.views.carol.contact]);
      const smirnova = await contacts.find({ name: 'Smirnova' });
      expect(smirnova.map((contact) => contact.id).sort()).toEqual([ids.carol, ids.dora].sort());
      // The readGroups script (claim, then the holder's group) builds keys from what it reads.
      const claimed = await contacts.claimAndFind(
        { kind: 'visitor', value: '100', channelId: 'web' },
        { claim: { key: 'jti:compat-1', ttlMs: 60_000 }, evenWork: true },
      );
      expect(claimed).toEqual({ claimed: true, contact: anna });
    });

    it('answers a repeated delivery of an old observation with its contact, writing nothing', async () => {
      const result = await contacts.observe(structuredClone(fixture.observations.anna!));
      expect(result).toEqual({ contact: fixture.views.anna.contact, created: false, duplicate: true });
    });

    it('updates an old contact where it is and leaves its index as written', async () => {
      const result = await contacts.observe(
        observation('2025-06-03T09:00:00.000Z', [{ kind: 'person', value: 'p-anna' }], ['Anna Sidorova']),
      );
      expect(result.created).toBe(false);
      expect(result.contact.id).toBe(ids.anna);
      expect(result.contact.names[0]).toBe('Anna Sidorova');
      expect(await store.get(`idx:person:*:p-anna`)).toBe(ids.anna);
      expect(await store.get(`rec:${ids.anna}`)).toContain('Anna Sidorova');
      expect((await contacts.find({ name: 'sidorova' })).map((contact) => contact.id)).toEqual([ids.anna]);
    });

    it('new contacts get c_<digits> ids, stored as digits (integers in Redis), next to the old ones', async () => {
      const zoe = await contacts.observe(
        observation(
          '2025-06-03T09:00:00.000Z',
          [verified('email', 'zoe@example.org'), { kind: 'visitor', value: '700' }],
          ['Zoe Smirnova'],
        ),
      );
      expect(zoe.created).toBe(true);
      const id = zoe.contact.id;
      expect(id).toMatch(NEW_ID);
      const digits = id.slice(2);
      expect(await store.get('idx:email:*:zoe@example.org')).toBe(digits);
      expect(await store.get('idx:visitor:web:700')).toBe(digits);
      expect(await store.get(`rec:${digits}`)).toContain('zoe@example.org');
      expect(await store.get(`rec:${id}`)).toBeNull();
      expect(await store.smembers('sidx:name:zoe')).toEqual([digits]);
      if (kind === 'redis') {
        expect(await encodingOf('idx:email:*:zoe@example.org')).toBe('int');
        // A small set of new ids only is an intset; one an old id shares stays as it was.
        expect(await encodingOf('sidx:name:zoe')).toBe('intset');
        expect(await encodingOf('sidx:name:smirnova')).toBe('hashtable');
        // Old values stay strings, as written.
        expect(await encodingOf('idx:email:*:anna@example.org')).toBe('embstr');
      }
      const smirnova = await contacts.find({ name: 'smirnova' });
      expect(smirnova.map((contact) => contact.id).sort()).toEqual([ids.carol, ids.dora, id].sort());
      expect(await contacts.findByIdentifier({ kind: 'email', value: 'zoe@example.org' })).toEqual(
        zoe.contact,
      );
      expect((await contacts.get(id))?.contact).toEqual(zoe.contact);
      // Its digits alone name no contact (they are how the id is stored, not an id).
      expect(await contacts.get(digits)).toBeNull();
      // A repeated delivery finds it through the idempotency key, which holds the digits too.
      const again = await contacts.observe(
        observation('2025-06-03T09:00:00.000Z', [verified('email', 'zoe@example.org')]),
      );
      expect(again.contact.id).toBe(id);
    });

    it('merges an old record into a new one and a new record into an old one, and unmerges both', async () => {
      // Gina is new but older than Frank (an earlier observation time): she survives their merge.
      const gina = await contacts.observe(
        observation('2025-06-01T09:00:00.000Z', [verified('email', 'gina@example.org')], ['Gina Orlova']),
      );
      const ginaId = gina.contact.id;
      expect(ginaId).toMatch(NEW_ID);
      const joined = await contacts.observe(
        observation('2025-06-03T10:00:00.000Z', [
          verified('email', 'frank@example.org'),
          verified('email', 'gina@example.org'),
        ]),
      );
      expect(joined.contact.id).toBe(ginaId);
      expect(joined.contact.records).toEqual([ginaId, ids.frank]);
      expect(await store.get(`root:${ids.frank}`)).toBe(ginaId.slice(2));
      expect(await store.smembers(`members:${ginaId.slice(2)}`)).toEqual([ids.frank]);
      expect(await contacts.get(ids.frank)).toEqual({ contact: joined.contact, mergedFrom: ids.frank });
      expect(await contacts.findByIdentifier({ kind: 'visitor', value: '600', channelId: 'web' })).toEqual(
        joined.contact,
      );

      // Hugo is new and younger than Dora (old): Dora survives.
      const hugo = await contacts.observe(
        observation('2025-06-03T11:00:00.000Z', [verified('phone', '+79160000002')], ['Hugo Orlov']),
      );
      const hugoId = hugo.contact.id;
      const withDora = await contacts.observe(
        observation('2025-06-03T11:05:00.000Z', [
          { kind: 'person', value: 'p-dora' },
          verified('phone', '+79160000002'),
        ]),
      );
      expect(withDora.contact.id).toBe(ids.dora);
      expect(withDora.contact.records).toEqual([ids.dora, hugoId]);
      expect(await store.get(`root:${hugoId.slice(2)}`)).toBe(ids.dora);
      expect(await store.smembers(`members:${ids.dora}`)).toEqual([hugoId.slice(2)]);
      const orlov = await contacts.find({ name: 'orlov' });
      expect(orlov.map((contact) => contact.id).sort()).toEqual([ginaId, ids.dora].sort());

      // Unmerged by this code: each leaves its group, and the two are kept apart from then on.
      const frankAgain = await contacts.unmerge(ginaId, { recordId: ids.frank });
      expect(frankAgain.contact.records).toEqual([ginaId]);
      expect(frankAgain.split.id).toBe(ids.frank);
      const hugoAgain = await contacts.unmerge(ids.dora, { recordId: hugoId });
      expect(hugoAgain.contact.records).toEqual([ids.dora]);
      expect(hugoAgain.split.id).toBe(hugoId);
      expect(await store.smembers(`apart:${ids.dora}`)).toEqual(
        expect.arrayContaining([ids.eve, hugoId.slice(2)]),
      );
      expect(await store.smembers(`apart:${hugoId.slice(2)}`)).toEqual([ids.dora]);
      expect(await contacts.get(hugoId)).toEqual({ contact: hugoAgain.split });
      const refused = await contacts.observe(
        observation('2025-06-03T12:00:00.000Z', [
          { kind: 'person', value: 'p-dora' },
          verified('phone', '+79160000002'),
        ]),
      );
      expect(refused.contact.records).toEqual([ids.dora]);
      expect((await contacts.conflictsPage({ limit: 1 })).conflicts[0]).toMatchObject({
        reason: 'unmerged_before',
      });
    });

    it('keeps an old unmerge: the records it split stay apart', async () => {
      const result = await contacts.observe(
        observation('2025-06-03T12:00:00.000Z', [
          { kind: 'person', value: 'p-dora' },
          verified('email', 'eve@example.org'),
        ]),
      );
      expect(result.contact.records).toEqual([ids.dora]);
      expect((await contacts.conflictsPage({ limit: 1 })).conflicts[0]).toMatchObject({
        reason: 'unmerged_before',
        roots: expect.arrayContaining([ids.dora, ids.eve]),
      });
    });

    it('unmerges an old merge and splits an identifier off an old contact into a new record', async () => {
      const undone = await contacts.unmerge(ids.anna, { recordId: ids.boris });
      expect(undone.contact.records).toEqual([ids.anna]);
      expect(undone.split.id).toBe(ids.boris);
      expect(await store.get(`root:${ids.boris}`)).toBeNull();
      expect((await contacts.findByIdentifier({ kind: 'email', value: 'boris@example.org' }))?.id).toBe(
        ids.boris,
      );

      const split = await contacts.unmerge(ids.anna, {
        identifier: { kind: 'phone', value: '+79161234567' },
      });
      expect(split.contact.phones).toEqual([]);
      expect(split.split.id).toMatch(NEW_ID);
      expect(await store.get('idx:phone:*:+79161234567')).toBe(split.split.id.slice(2));
      expect(await contacts.findByIdentifier({ kind: 'phone', value: '+79161234567' })).toEqual(split.split);
      expect((await store.smembers(`apart:${ids.anna}`)).sort()).toEqual(
        [ids.boris, split.split.id.slice(2)].sort(),
      );
      expect(await contacts.get(ids.anna)).toEqual({ contact: split.contact });
    });
  });
}
