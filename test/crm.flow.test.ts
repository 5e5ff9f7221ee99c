import { describe, expect, it } from 'vitest';
import { type CrmDestinationConfig, crmDestinationSchema } from '../src/config/schema.js';
import type { ContactService } from '../src/contacts/service.js';
import type { CrmApi, CrmContact } from '../src/contracts/connector.js';
import { CrmError } from '../src/crm/errors.js';
import { createCrmFlow } from '../src/crm/flow.js';
import type { DeliveredBody } from '../src/delivery/routing.js';
import { createMemoryStore } from '../src/store/memory.js';
import type { Lock, Store } from '../src/store/types.js';
import { until } from './support/until.js';

/**
 * The find-or-create of a CRM contact (src/crm/flow.ts) runs under a store lock. A search that
 * takes longer than the lock's ttl (many phones and e-mails, each a request of up to timeoutMs)
 * must not let a second instance in to make the same contact. The flow here runs against an
 * in-memory CRM; the lock ttl is shortened so that the search outlasts it.
 */

function world() {
  const crm: CrmContact[] = [];
  const api = (hooks: { onSearch?: () => Promise<void> } = {}): CrmApi => ({
    async findContacts({ phones, emails }) {
      await hooks.onSearch?.();
      return crm.filter(
        (contact) =>
          contact.phones.some((phone) => phones.includes(phone)) ||
          contact.emails.some((email) => emails.includes(email)),
      );
    },
    getContact: async (id) => crm.find((contact) => contact.id === id) ?? null,
    async createContact(input) {
      const id = String(100 + crm.length);
      crm.push({ id, phones: [...input.phones], emails: [...input.emails] });
      return id;
    },
    addContactValues: async () => {},
    findOpenDeal: async () => null,
    dealExists: async () => true,
    createDeal: () => Promise.reject(new Error('no deals here')),
    createTask: () => Promise.reject(new Error('no tasks here')),
    createNote: () => Promise.reject(new Error('no notes here')),
    findCreated: async () => ({ state: 'absent' }),
    listUsers: async () => [],
    check: () => Promise.reject(new Error('unused')),
    contactUrl: (id) => `https://crm.example/contacts/${id}`,
  });
  return { crm, api };
}

/** The store, with every lock taken through it recorded (and its renewals counted). */
function watchedStore() {
  const store = createMemoryStore();
  const locks: { lock: Lock; renewed: number }[] = [];
  const lock = store.lock.bind(store);
  store.lock = async (keys, options) => {
    const held = await lock(keys, options);
    const entry = { lock: held, renewed: 0 };
    locks.push(entry);
    return {
      keys: held.keys,
      release: () => held.release(),
      async renew(ttlMs) {
        const ok = await held.renew(ttlMs);
        if (ok) entry.renewed += 1;
        return ok;
      },
    };
  };
  return { store: store as Store, locks };
}

function flowOn(store: Store, ttlMs: number) {
  const destination = crmDestinationSchema.parse({
    id: 'crm',
    kind: 'amocrm',
    crm: { deals: 'none' },
  }) as CrmDestinationConfig;
  return createCrmFlow({
    destination,
    displayName: 'amoCRM',
    store,
    contacts: {
      observe: async () => ({}),
      get: async () => null,
      findByIdentifier: async () => null,
    } as unknown as ContactService,
    channels: [],
    vendorNames: new Map(),
    defaultCountry: 'RU',
    agents: [],
    responsibleByEmail: async () => null,
    now: () => new Date(),
    lock: { ttlMs, waitMs: 10_000 },
  });
}

/** contact.updated of a bridge contact with these values (no deal, task or note). */
function event(contactId: string): DeliveredBody {
  return {
    id: `evt-${contactId}`,
    type: 'contact.updated',
    occurredAt: new Date().toISOString(),
    channel: { id: 'site', vendor: 'jivochat' },
    contact: {
      id: contactId,
      name: 'Many Phones',
      phones: ['+79160000001', '+79160000002'],
      emails: ['many@example.org'],
      identities: [],
      records: [contactId],
      attributes: {},
    },
    data: {},
    routing: { destination: 'crm', pipeline: null, source: null, responsibleCrmUserId: null },
  } as unknown as DeliveredBody;
}

const noCheckpoint = async () => {};

describe('CRM flow: the contact find-or-create lock', () => {
  it('a search that outlasts the lock ttl keeps the lock: a second instance waits, then finds the contact instead of making another', async () => {
    const { store, locks } = watchedStore();
    const { crm, api } = world();
    const ttlMs = 150;
    const first = flowOn(store, ttlMs);
    const second = flowOn(store, ttlMs);
    let secondSearched = false;
    let searchedDuringFirst: boolean | undefined;
    let secondRun: Promise<unknown> | undefined;
    const firstApi = api({
      async onSearch() {
        // Meanwhile, the same person's event of another bridge contact reaches another instance.
        secondRun = second.run(
          event('b'),
          api({
            onSearch: async () => {
              secondSearched = true;
            },
          }),
          {},
          noCheckpoint,
        );
        // The search goes on for well over the lock's ttl (four renewals at ttl / 3), unless the
        // second instance got in first.
        await until(() => secondSearched || (locks[0]?.renewed ?? 0) >= 4, 'a long search');
        searchedDuringFirst = secondSearched;
      },
    });
    const done = await first.run(event('a'), firstApi, {}, noCheckpoint);
    expect(searchedDuringFirst).toBe(false);
    const other = await secondRun!;
    expect(crm).toHaveLength(1);
    expect(done.contact).toBe(crm[0]!.id);
    expect((other as { contact: string }).contact).toBe(crm[0]!.id);
  });

  it('a lock lost during the search (expired and taken) stops the step with a retry instead of creating', async () => {
    const { store, locks } = watchedStore();
    const { crm, api } = world();
    const flow = flowOn(store, 60_000);
    const firstApi = api({
      async onSearch() {
        const keys = locks[0]!.lock.keys;
        // As if the store had been unreachable past the ttl: the lock expires, another takes it.
        await store.del(...keys.map((key) => `lock:${key}`));
        await store.lock(keys, { ttlMs: 60_000, waitMs: 0 });
      },
    });
    const error = await flow.run(event('a'), firstApi, {}, noCheckpoint).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CrmError);
    expect((error as CrmError).kind).toBe('retry');
    expect((error as CrmError).message).toMatch(/lock .*expired before the create/);
    expect(crm).toHaveLength(0);
  });
});
