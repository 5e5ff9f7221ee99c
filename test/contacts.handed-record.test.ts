import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createContactEngine } from '../src/contacts/engine.js';
import { key } from '../src/contacts/keys.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Contact, Observation } from '../src/contacts/types.js';
import { createOutboxPublisher } from '../src/events/outbox.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { createRedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * A known contact's next observation in this process is planned on the record object its last
 * write left (LaneState.decoded), not on that record's text decoded again. The two must not be
 * told apart: one engine observing a person again and again (each observation after the first
 * planned on the handed-over record) and, on a store of its own, a new engine for every
 * observation (each one decoding the stored text) must store the same record texts and answer
 * the same contacts, step by step — whatever the observations say, including statements of the
 * responsible agent from two channels at equal times (where the order of a record's statements
 * decides; record.ts asDecoded), values seen again at older times, attributes that change type or
 * label, and new identifiers (which make the engine read instead).
 */

const logger = createLogger('silent');
const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
/** One prefix for the test's stores (each its own part of it), removed with one scan at the end. */
const base = uniquePrefix('handed-record');
let stores = 0;
let redisUrl: string | undefined;

afterAll(async () => {
  if (redisUrl) await cleanupPrefix(redisUrl, base);
});

async function store(): Promise<Store> {
  redisUrl ??= await getTestRedisUrl();
  return createRedisStore({ url: redisUrl, keyPrefix: `${base}:${stores++}`, logger });
}

// Later than every observation's time, so that each is recorded at its own (notAfter).
const now = () => new Date('2030-01-01T00:00:00.000Z');

function engineOn(on: Store): ContactService {
  return createContactEngine({
    store: on,
    identity,
    events: createOutboxPublisher(on),
    metrics: new Metrics(),
    logger,
    now,
  });
}

const TIMES = ['2026-01-01T10:00:00.000Z', '2026-01-01T10:00:01.000Z', '2026-01-01T10:00:02.000Z'];
const step = fc.record({
  channel: fc.constantFrom('site', 'app'),
  at: fc.constantFrom(...TIMES),
  names: fc.array(fc.constantFrom('Anna', 'Anna Petrova', 'Анна'), { maxLength: 2 }),
  // Few identifiers, and mostly the same ones: an observation whose identifiers the last write
  // did not hold is planned on a read (nothing handed over).
  email: fc.option(fc.constantFrom('anna@example.org', 'a.petrova@example.org'), { nil: undefined, freq: 1 }),
  phone: fc.option(fc.constant('+79161234567'), { nil: undefined, freq: 1 }),
  visitor: fc.boolean(),
  verified: fc.boolean(),
  attributes: fc.dictionary(
    fc.constantFrom('tier', 'city', 'constructor', '__proto__', '7'),
    fc.record(
      {
        value: fc.oneof(
          fc.constantFrom('gold', 'Novosibirsk'),
          fc.integer({ min: -2, max: 2 }),
          fc.boolean(),
        ),
        label: fc.constantFrom('Tier', 'City'),
        type: fc.constantFrom('string' as const, 'number' as const),
      },
      { requiredKeys: ['value'] },
    ),
    { maxKeys: 3 },
  ),
  labels: fc.array(fc.constantFrom('vip', 'returns'), { maxLength: 2 }),
  agent: fc.option(
    fc.oneof(
      fc.constant(null),
      fc.record(
        {
          email: fc.constantFrom('Oleg@Shop.example', 'dmitry@store.example'),
          name: fc.constantFrom('Oleg', 'Dmitry'),
          id: fc.constantFrom('1', '2'),
        },
        { requiredKeys: [] },
      ),
    ),
    { nil: undefined },
  ),
  crmLink: fc.option(fc.constantFrom('https://crm.example/1', 'https://crm.example/2'), { nil: undefined }),
  finished: fc.boolean(),
});
type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

function observationOf(item: Step, index: number): Observation {
  const observation: Observation = {
    channelId: item.channel,
    vendor: item.channel === 'site' ? 'jivochat' : 'livetex',
    at: item.at,
    idempotencyKey: `event-${index}`,
    identifiers: [
      { kind: 'person', value: 'person-1' },
      ...(item.email === undefined
        ? []
        : [
            { kind: 'email', value: item.email, provenance: item.verified ? 'verified' : 'visitor' } as const,
          ]),
      ...(item.phone === undefined ? [] : [{ kind: 'phone', value: item.phone }]),
      ...(item.visitor ? [{ kind: 'visitor', value: `v-${item.channel}`, channelId: item.channel }] : []),
    ],
    names: item.names,
    attributes: Object.setPrototypeOf({ ...item.attributes }, null),
    labels: item.labels,
    timeline: item.finished
      ? [{ key: 'finished', at: item.at, type: 'conversation.finished', summary: 'Chat finished', data: {} }]
      : [],
    events: [],
  };
  if (item.agent !== undefined) observation.responsibleAgent = item.agent;
  if (item.crmLink !== undefined) observation.crmLink = item.crmLink;
  return observation;
}

/** A contact with its record ids left out (each store makes its own). */
function withoutIds(contact: Contact): unknown {
  return { ...contact, id: undefined, records: contact.records.length, merges: contact.merges.length };
}

function recordText(on: Store, contact: Contact): Promise<string | null> {
  return on.get(key.record(contact.records[0]!));
}

describe('a record handed to the next plan (LaneState.decoded)', () => {
  it('plans as the stored text decoded again would, observation by observation', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 2, maxLength: 8 }), async (steps) => {
        const handedStore = await store();
        const decodedStore = await store();
        const handing = engineOn(handedStore);
        try {
          for (const [index, item] of steps.entries()) {
            const handed = await handing.observe(observationOf(item, index));
            // A fresh engine remembers nothing: it reads the person and decodes the stored record.
            const decoded = await engineOn(decodedStore).observe(observationOf(item, index));
            expect(withoutIds(handed.contact)).toEqual(withoutIds(decoded.contact));
            expect(await recordText(handedStore, handed.contact)).toBe(
              await recordText(decodedStore, decoded.contact),
            );
          }
        } finally {
          await handedStore.close();
          await decodedStore.close();
        }
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
