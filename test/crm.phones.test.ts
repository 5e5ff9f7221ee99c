import { afterEach, describe, expect, it } from 'vitest';
import { jivo, settled, startCrmBridge } from './support/crm-bridge.js';
import { amoWorld, bitrixWorld, jivoPayloads } from './support/crm-worlds.js';

/**
 * CRM contacts whose phone field holds several numbers in one value ("+7 905 777-01-23, +7 926
 * 000-11-22"), as managers type them: each number is a phone of the contact, as the bridge reads
 * such a field from a chat vendor (src/contacts/normalize.ts splitPhones). Real bridge, fake CRMs.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const TWO_NUMBERS = '+7 905 777-01-23, 8 (926) 000-11-22';

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('CRM phone fields with several numbers: %s', (_name, makeWorld) => {
  async function world() {
    const made = await makeWorld();
    cleanups.push(() => made.close());
    return made;
  }

  it('a contact found by e-mail whose one phone value holds the chat phone among others gets no copy of it', async () => {
    const crm = await world();
    const id = crm.seedContact(TWO_NUMBERS, 'svetlana@example.org');
    const bridge = await startCrmBridge(crm);
    cleanups.push(() => bridge.close());
    // The second number of the field, as the visitor gives it in the chat.
    const { offline } = jivoPayloads(
      { name: 'Svetlana', email: 'svetlana@example.org', phone: '+79260001122' },
      21000,
    );
    await jivo(bridge, offline);
    const deliveries = await settled(bridge, 1);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    const state = crm.state();
    expect(state.contacts).toEqual([{ id, phones: [TWO_NUMBERS], emails: ['svetlana@example.org'] }]);
    expect(state.deals[0]!.contacts).toEqual([id]);
  });
});

describe('CRM phone fields with several numbers: amoCRM search', () => {
  it('finds the contact by any number of its field (the search is client-side checked), adds the e-mail it lacks, makes no second contact', async () => {
    const crm = await amoWorld();
    cleanups.push(() => crm.close());
    const id = crm.seedContact(TWO_NUMBERS, 'old@example.org');
    const bridge = await startCrmBridge(crm);
    cleanups.push(() => bridge.close());
    const { offline } = jivoPayloads(
      { name: 'Svetlana', email: 'svetlana@example.org', phone: '+79260001122' },
      22000,
    );
    await jivo(bridge, offline);
    const deliveries = await settled(bridge, 1);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    const state = crm.state();
    expect(state.contacts).toHaveLength(1);
    expect(state.contacts[0]).toMatchObject({ id, phones: [TWO_NUMBERS] });
    expect(state.contacts[0]!.emails.sort()).toEqual(['old@example.org', 'svetlana@example.org']);
  });
});
