import { afterEach, describe, expect, it } from 'vitest';
import { JIVO_TOKEN, jivo, settled, startCrmBridge } from './support/crm-bridge.js';
import { amoWorld, bitrixWorld, jivoPayloads } from './support/crm-worlds.js';
import { startTestBridge } from './support/harness.js';

/**
 * The CRM link and the identity rules: the CRM contact's id becomes a `crm` identity of the
 * bridge contact, and an identity joins the contacts that hold it. It must not join contacts the
 * rules keep apart: e-mails and phones typed by visitors under `mergeOnVisitorTyped: [person]`,
 * and phones with an extension (a switchboard's colleagues) whatever the settings. Real bridge,
 * fake CRMs, outcomes only.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('the CRM link and the identity rules: %s', (_name, makeWorld) => {
  async function world() {
    const made = await makeWorld();
    cleanups.push(() => made.close());
    return made;
  }

  it("with mergeOnVisitorTyped: [person], a visitor who types a customer's e-mail is neither merged with her nor put on her CRM contact", async () => {
    const crm = await world();
    const bridge = await startTestBridge({
      config: {
        identity: { mergeOnVisitorTyped: ['person'] },
        channels: [
          {
            id: 'shop-site',
            vendor: 'jivochat',
            name: 'Shop site',
            token: JIVO_TOKEN,
            personIdFrom: 'user_token',
          },
        ],
        destinations: [
          crm.destination({
            events: ['conversation.started', 'offline_message.received'],
            retrySchedule: ['0s', '50ms'],
          }),
        ],
      },
    });
    cleanups.push(() => bridge.close());
    // The customer, signed in on the site (her verified person id), with her e-mail.
    const customer = jivoPayloads(
      { name: 'Vera', email: 'vera.k@example.org', phone: '+79261230001' },
      51000,
    );
    customer.accepted.user_token = 'cust-vera';
    await jivo(bridge, customer.accepted);
    await settled(bridge, 1);
    expect(crm.state().contacts).toHaveLength(1);
    const hers = crm.state().contacts[0]!.id;

    // Someone else, not signed in, types her e-mail (and a phone of his own).
    const other = jivoPayloads(
      { name: 'Mallory', email: 'vera.k@example.org', phone: '+79269990000' },
      52000,
    );
    other.accepted.visitor.number = '777001';
    await jivo(bridge, other.accepted);
    await settled(bridge, 2);
    const next = await jivo(bridge, { ...other.accepted, chat_id: 52001 });
    await settled(bridge, 3);

    // Two contacts in the bridge, as without a CRM.
    const found = await bridge.admin('GET', '/api/v1/contacts?phone=%2B79269990000');
    const his = found.body.contacts[0];
    expect(his.names).toEqual(['Mallory']);
    expect(his.merges).toEqual([]);
    expect(his.identities).not.toContainEqual(expect.objectContaining({ kind: 'person' }));
    // Nothing of hers in the answer to his chat, and his chats are not on her CRM contact.
    expect(JSON.stringify(next.body)).not.toContain('cust-vera');
    expect(next.body.crm_link).not.toBe(crm.contactUrl(hers));
    const state = crm.state();
    const onHers = state.deals.filter((deal) => deal.contacts.includes(hers));
    expect(onHers).toHaveLength(1);
    expect(state.contacts.find((contact) => contact.id === hers)!.phones).toEqual(['+79261230001']);
  });

  it('two colleagues behind one switchboard (extensions 101 and 102) stay two contacts in the bridge', async () => {
    const crm = await world();
    const bridge = await startCrmBridge(crm, { events: ['offline_message.received'] });
    cleanups.push(() => bridge.close());
    const ivan = jivoPayloads(
      { name: 'Ivan', email: 'ivan@corp.example', phone: '+7 495 123-45-67 доб. 101' },
      53000,
    );
    await jivo(bridge, ivan.offline);
    await settled(bridge, 1);
    const olga = jivoPayloads(
      { name: 'Olga', email: 'olga@corp.example', phone: '+7 495 123-45-67 доб. 102' },
      54000,
    );
    await jivo(bridge, olga.offline);
    await settled(bridge, 2);
    const everyone = await bridge.admin(
      'GET',
      `/api/v1/contacts?phone=${encodeURIComponent('+7 495 123-45-67')}`,
    );
    expect(everyone.body.contacts.map((contact: { names: string[] }) => contact.names).sort()).toEqual([
      ['Ivan'],
      ['Olga'],
    ]);
  });
});
