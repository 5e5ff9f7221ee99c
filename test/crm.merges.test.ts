import { afterEach, describe, expect, it } from 'vitest';
import { jivo, settled, startCrmBridge } from './support/crm-bridge.js';
import { amoWorld, bitrixWorld, type CrmWorld, jivoPayloads } from './support/crm-worlds.js';
import type { TestBridge } from './support/harness.js';

/**
 * Merges in the bridge and the CRM: two bridge contacts, each linked to a CRM contact of its
 * own, merged by a chat that names both. The CRM merges nothing (the bridge never merges or
 * deletes CRM records); what must hold is that the merged contact's events go on one CRM contact
 * and that "Open in CRM" shows that one. Real bridge, fake CRMs, outcomes only.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const anna = { name: 'Anna', email: 'anna.m@example.org', phone: '+79261110001' };
const boris = { name: 'Boris', email: 'boris.m@example.org', phone: '+79261110002' };

async function contactOf(bridge: TestBridge, email: string) {
  const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(email)}`);
  return found.body.contacts[0];
}

/** The CRM contact the task of the offline message with `text` went on (through its deal). */
function taskContact(crm: CrmWorld, text: string): string {
  const state = crm.state();
  const task = state.tasks.find((item) => item.text.includes(text))!;
  const deal = state.deals.find((item) => `deal:${item.id}` === task.on)!;
  return deal.contacts[0]!;
}

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('a merge of two contacts linked to two CRM contacts: %s', (_name, makeWorld) => {
  it('"Open in CRM" shows the CRM contact that gets the merged contact\'s events; after an unmerge each goes on with its own', async () => {
    const crm = await makeWorld();
    cleanups.push(() => crm.close());
    const bridge = await startCrmBridge(crm, {
      events: ['offline_message.received', 'conversation.started'],
    });
    cleanups.push(() => bridge.close());
    const offline = (visitor: typeof anna, chatId: number, text: string) => {
      const payload = jivoPayloads(visitor, chatId).offline;
      payload.message = text;
      return payload;
    };
    // One after the other: Anna's contact is the older (it survives the merge), Boris's CRM
    // link the newer.
    await jivo(bridge, offline(anna, 31000, 'Anna first'));
    await settled(bridge, 1);
    await jivo(bridge, offline(boris, 32000, 'Boris first'));
    await settled(bridge, 2);
    const annaCrm = taskContact(crm, 'Anna first');
    const borisCrm = taskContact(crm, 'Boris first');
    expect(annaCrm).not.toBe(borisCrm);

    // Boris's visitor gives Anna's e-mail too: the bridge merges the two contacts.
    const merging = jivoPayloads(boris, 33000).accepted;
    merging.visitor.email = anna.email;
    await jivo(bridge, merging);
    await settled(bridge, 3);
    const merged = await contactOf(bridge, anna.email);
    expect(merged.records).toHaveLength(2);
    expect((await contactOf(bridge, boris.email)).id).toBe(merged.id);

    // The merged person's next offline message: its task goes on one CRM contact, and that is
    // the one the contact's CRM link and JivoChat's crm_link show.
    await jivo(bridge, offline(boris, 34000, 'Merged next'));
    await settled(bridge, 4);
    const used = taskContact(crm, 'Merged next');
    expect([annaCrm, borisCrm]).toContain(used);
    const after = await bridge.admin('GET', `/api/v1/contacts/${merged.id}`);
    expect((after.body.contact ?? after.body).crmLink).toBe(crm.contactUrl(used));
    const answer = await jivo(bridge, { ...merging, chat_id: 35000 });
    expect(answer.body.crm_link).toBe(crm.contactUrl(used));
    // Nothing was made in the CRM for the merge: still the two contacts.
    expect(crm.state().contacts).toHaveLength(2);
    await settled(bridge, 5);

    // Unmerged, each person goes on with the CRM contact it had, and shows it.
    const split = merged.records.find((id: string) => id !== merged.id);
    expect(
      (await bridge.admin('POST', `/api/v1/contacts/${merged.id}/unmerge`, { recordId: split })).status,
    ).toBe(200);
    const annaAfter = await contactOf(bridge, anna.email);
    const borisAfter = await bridge.admin('GET', `/api/v1/contacts/${split}`);
    const links = [annaAfter.crmLink, (borisAfter.body.contact ?? borisAfter.body).crmLink];
    expect(links.sort()).toEqual([crm.contactUrl(annaCrm), crm.contactUrl(borisCrm)].sort());
    await jivo(bridge, offline(anna, 36000, 'Anna after'));
    await settled(bridge, 6);
    expect(crm.contactUrl(taskContact(crm, 'Anna after'))).toBe(annaAfter.crmLink);
  });
});
