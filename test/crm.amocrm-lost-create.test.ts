import { afterEach, describe, expect, it } from 'vitest';
import { jivo, settled, startCrmBridge } from './support/crm-bridge.js';
import { amoWorld, jivoPayloads } from './support/crm-worlds.js';
import { startLateProxy } from './support/late-proxy.js';

/**
 * amoCRM keeps no id of ours: a contact create whose answer was lost is looked up by what was
 * sent, among the newest contacts its name finds (adapters/amocrm/README.md). Real bridge, fake
 * account behind a proxy that turns the create's answer into a gateway's 504.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('amoCRM: a lost contact create, looked up by name', () => {
  it('is found among the newest of many namesakes (a common name), not made twice', async () => {
    const crm = await amoWorld();
    cleanups.push(() => crm.close());
    // 60 older contacts of the same name and source: more than one page of the search's default.
    const hourAgo = Math.floor(Date.now() / 1000) - 3600;
    for (let index = 0; index < 60; index++) {
      crm.fake.contacts.push({
        id: 500 + index,
        name: 'Анна',
        responsible_user_id: 501,
        fields: {},
        tags: ['JivoChat: Shop site'],
        leads: [],
        created_at: hourAgo,
      });
    }
    const proxy = await startLateProxy(crm.url);
    cleanups.push(() => proxy.close());
    proxy.replace(crm.isCreate('contact'), 504);
    const bridge = await startCrmBridge(crm, { ...crm.via(proxy.url), timeoutMs: 300 });
    cleanups.push(() => bridge.close());
    // A visitor known by her name only: no phone or e-mail to find the made contact by.
    const { accepted } = jivoPayloads(
      { name: 'Анна', email: 'anna.x@example.com', phone: '+79260001155' },
      41000,
    );
    delete accepted.visitor.email;
    delete accepted.visitor.phone;
    await jivo(bridge, accepted);
    const deliveries = await settled(bridge, 1);
    expect(deliveries.filter((item) => item.state !== 'delivered')).toEqual([]);
    const made = crm.fake.contacts.filter((contact) => contact.id < 500 || contact.id >= 560);
    expect(made).toHaveLength(1);
    expect(crm.state().deals[0]!.contacts).toEqual([String(made[0]!.id)]);
  });
});
