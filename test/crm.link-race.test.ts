import { afterEach, describe, expect, it } from 'vitest';
import { JIVO_TOKEN, jivo, settled } from './support/crm-bridge.js';
import { amoWorld, bitrixWorld, jivoPayloads } from './support/crm-worlds.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * Two bridge contacts the identity rules keep apart, found on ONE CRM contact at the same time by
 * two bridge instances on one Redis. The CRM contact was made by hand with an e-mail and a phone;
 * one visitor gives the e-mail, another the phone. Their find-or-create locks differ (nothing of
 * theirs is shared), so both searches run at once: the fake CRM holds the two searches, then the
 * two reads of the found contact, until both arrived (a barrier, no sleeps). Each then links its
 * bridge contact back to the CRM contact at the same moment. The CRM id may become an identity of
 * only one of them: as an identity of both it merges them (an identity joins the contacts holding
 * it), which the rules refused. Real bridges, real Redis, fake CRMs, outcomes only.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('two bridge contacts linked to one CRM contact at once: %s', (_name, makeWorld) => {
  it('stay two contacts, both linked to it, and the CRM contact is not made twice', async () => {
    const crm = await makeWorld();
    cleanups.push(() => crm.close());
    const redisUrl = await getTestRedisUrl();
    const keyPrefix = uniquePrefix('crm-link-race');
    cleanups.push(() => cleanupPrefix(redisUrl, keyPrefix));
    const config = {
      channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: JIVO_TOKEN }],
      destinations: [
        crm.destination({ events: ['offline_message.received'], retrySchedule: ['0s', '50ms', '50ms'] }),
      ],
    };
    const bridges: TestBridge[] = [];
    for (let index = 0; index < 2; index++) {
      const bridge = await startTestBridge({ store: 'redis', keyPrefix, config });
      cleanups.push(() => bridge.close());
      bridges.push(bridge);
    }
    const [first, second] = bridges as [TestBridge, TestBridge];

    const shared = crm.seedContact('+79261110000', 'team@corp.example');
    const searches = crm.hold('search', 2);
    const reads = crm.hold('read', 2);
    // Anna writes the office e-mail, Boris the office phone: nothing in common in the bridge.
    const anna = jivoPayloads({ name: 'Anna', email: 'team@corp.example', phone: '' }, 61000);
    const boris = jivoPayloads({ name: 'Boris', email: '', phone: '+79261110000' }, 62000);
    boris.offline.visitor.number = '620001';
    const sent = await Promise.all([jivo(first, anna.offline), jivo(second, boris.offline)]);
    expect(sent.map((answer) => answer.status)).toEqual([200, 200]);
    const deliveries = await settled(first, 2);
    expect(deliveries.map((delivery) => delivery.state)).toEqual(['delivered', 'delivered']);
    // Both searches and both reads overlapped: the race was run, not skipped by timing.
    expect([searches(), reads()]).toEqual([2, 2]);

    const byEmail = await first.admin('GET', '/api/v1/contacts?email=team%40corp.example');
    const byPhone = await first.admin('GET', '/api/v1/contacts?phone=%2B79261110000');
    expect(byEmail.body.contacts).toHaveLength(1);
    expect(byPhone.body.contacts).toHaveLength(1);
    const [annas, boriss] = [byEmail.body.contacts[0], byPhone.body.contacts[0]];
    // Two contacts, as without a CRM: neither merged into the other.
    expect(annas.id).not.toBe(boriss.id);
    expect([annas.names, boriss.names]).toEqual([['Anna'], ['Boris']]);
    expect([annas.merges, boriss.merges]).toEqual([[], []]);
    // Both linked to the one CRM contact ("Open in CRM"), which holds both chats' tasks.
    expect([annas.crmLink, boriss.crmLink]).toEqual([crm.contactUrl(shared), crm.contactUrl(shared)]);
    const state = crm.state();
    expect(state.contacts.map((contact) => contact.id)).toEqual([shared]);
    expect(state.tasks).toHaveLength(2);
    // The CRM id is an identity of one of them only (an identity of both would join them).
    const holders = [annas, boriss].filter((contact) =>
      contact.identities.some(
        (identity: { kind: string; value: string }) => identity.kind === 'crm' && identity.value === shared,
      ),
    );
    expect(holders).toHaveLength(1);
  });
});
