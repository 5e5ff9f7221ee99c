import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerSchema, messageSchema } from '../adapters/chatvisor/schemas.js';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import type { Contact } from '../src/contacts/types.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Numbers a vendor's JSON may hold that JavaScript cannot: integers past 2^53 (64-bit ids, which
 * JSON.parse rounds, so 9007199254740993 reads as 9007199254740992) and 1e400 (Infinity). Read as
 * text they are not what the vendor sent: two customers' ids would become one identifier (merging
 * their contacts), and Infinity would become the id "Infinity", shared by every such payload. They
 * are read as no value instead; and an attribute holding one is left out, not the whole event.
 * The bodies are written as JSON text, as a vendor sends them (a JS number literal cannot hold
 * these values).
 */
const JIVO = 'jivo-numbers-token-0123456789';
const LIVETEX = 'livetex-numbers-token-012345';
const CHATVISOR = 'chatvisor-numbers-token-0123';

describe('vendor numbers JavaScript cannot hold exactly', () => {
  let bridge: TestBridge;
  let fake: FakeChatvisor;

  beforeAll(async () => {
    fake = await startFakeChatvisor();
    bridge = await startTestBridge({
      config: {
        channels: [
          { id: 'site', vendor: 'jivochat', token: JIVO, personIdFrom: 'user_token' },
          { id: 'app', vendor: 'livetex', token: LIVETEX },
          fake.channel('cv', CHATVISOR),
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
  });

  const post = (path: string, text: string) =>
    bridge.post(path, text, { 'content-type': 'application/json' });

  async function contactsBy(query: string): Promise<Contact[]> {
    const found = await bridge.admin<{ contacts: Contact[] }>('GET', `/api/v1/contacts?${query}`);
    expect(found.status).toBe(200);
    return found.body.contacts;
  }

  it('JivoChat: two visitors whose user_token are 64-bit numbers stay two contacts', async () => {
    const accepted = (token: string, chat: number, email: string) =>
      `{"event_name":"chat_accepted","chat_id":${chat},"user_token":${token},` +
      `"visitor":{"name":"V ${chat}","email":"${email}"}}`;
    // Both read as 9007199254740992 by JSON.parse.
    expect(
      (
        await post(
          `/webhooks/jivochat/site/${JIVO}`,
          accepted('9007199254740993', 7001, 'first@numbers.example'),
        )
      ).status,
    ).toBe(200);
    expect(
      (
        await post(
          `/webhooks/jivochat/site/${JIVO}`,
          accepted('9007199254740992', 7002, 'second@numbers.example'),
        )
      ).status,
    ).toBe(200);
    const first = await contactsBy('email=first@numbers.example');
    const second = await contactsBy('email=second@numbers.example');
    expect(first).toHaveLength(1);
    expect(second).toHaveLength(1);
    expect(first[0]!.id).not.toBe(second[0]!.id);
    expect(first[0]!.emails).toEqual(['first@numbers.example']);
    // The rounded number is no person id of anyone.
    expect(await contactsBy('identity=person:9007199254740992')).toEqual([]);
  });

  it('LiveTex: a personId of 1e400 or past 2^53 identifies nobody, and two such customers stay apart', async () => {
    const closed = (dialog: string, personId: string, where: 'field' | 'attribute', email: string) =>
      `{"Conversation":{"id":"${dialog}"},"discourser":{"name":"C ${dialog}",` +
      (where === 'field' ? `"personId":${personId},` : `"attributes":{"personId":${personId}},`) +
      `"contacts":[{"type":"email","value":"${email}"}]}}`;
    for (const [index, [personId, where]] of (
      [
        ['1e400', 'attribute'],
        ['1e400', 'attribute'],
        ['18446744073709551615', 'field'],
        ['18446744073709551614', 'field'],
      ] as const
    ).entries()) {
      const answer = await post(
        `/webhooks/livetex/app/${LIVETEX}`,
        closed(`numbers-${index}`, personId, where, `lt${index}@numbers.example`),
      );
      expect(answer.status, `${personId} in ${where}`).toBe(200);
    }
    const ids = new Set<string>();
    for (let index = 0; index < 4; index++) {
      const [contact, ...others] = await contactsBy(`email=lt${index}@numbers.example`);
      expect(others).toEqual([]);
      expect(contact!.emails).toEqual([`lt${index}@numbers.example`]);
      ids.add(contact!.id);
    }
    expect(ids.size).toBe(4);
    expect(await contactsBy('identity=person:Infinity')).toEqual([]);
    expect(await contactsBy('identity=person:18446744073709552000')).toEqual([]);
  });

  it('Chatvisor: customers whose ids are 64-bit numbers are not taken for one customer', async () => {
    const message = (id: string, customer: string) =>
      `{"id":"${id}","customerId":${customer},"text":"hello","sender":"CUSTOMER","createdAt":"2024-05-14T09:31:12.418Z"}`;
    const one = await post(`/webhooks/chatvisor/cv/${CHATVISOR}`, message('m-1', '9007199254740993'));
    const two = await post(`/webhooks/chatvisor/cv/${CHATVISOR}`, message('m-2', '9007199254740992'));
    expect(one.status).toBeLessThan(500);
    expect(two.status).toBeLessThan(500);
    // Both would be customer 9007199254740992: one contact, one Chatvisor customer state.
    expect(await contactsBy(`identity=${encodeURIComponent('customer:cv:9007199254740992')}`)).toEqual([]);
  });

  it('an attribute of 1e400 is left out; the event and its other attributes are kept (JivoChat, LiveTex)', async () => {
    const jivo = await post(
      `/webhooks/jivochat/site/${JIVO}`,
      '{"event_name":"chat_accepted","chat_id":7100,"user_token":"numbers-attr-jivo",' +
        '"visitor":{"name":"Attr"},"attributes":{"orders_total":1e400,"segment":"wholesale"}}',
    );
    expect(jivo.status).toBe(200);
    const [jivoContact] = await contactsBy('identity=person:numbers-attr-jivo');
    expect(jivoContact!.attributes['client.segment']).toMatchObject({ value: 'wholesale' });
    expect(jivoContact!.attributes['client.orders_total']).toBeUndefined();

    const livetex = await post(
      `/webhooks/livetex/app/${LIVETEX}`,
      '{"Conversation":{"id":"numbers-attr"},"discourser":{"personId":"numbers-attr-lt",' +
        '"attributes":{"tariff":1e400,"debt":-1e400,"plan":"gold"}}}',
    );
    expect(livetex.status).toBe(200);
    const [ltContact] = await contactsBy('identity=person:numbers-attr-lt');
    expect(ltContact!.attributes.plan).toMatchObject({ value: 'gold' });
    expect(ltContact!.attributes.tariff).toBeUndefined();
    expect(ltContact!.attributes.debt).toBeUndefined();
  });

  it('Chatvisor REST data: a rounded externalId or message id is none, and the customer or message is kept', () => {
    const customer = customerSchema.parse(
      JSON.parse('{"customerId":"cv-77","id":9223372036854775807,"email":"a@numbers.example"}'),
    );
    expect(customer).toMatchObject({ customerId: 'cv-77', externalId: null, email: 'a@numbers.example' });
    expect(customerSchema.parse({ customerId: 'cv-78', id: 4411 }).externalId).toBe('4411');
    const message = messageSchema.parse(
      JSON.parse('{"id":18446744073709551615,"customerId":"cv-77","text":"hi","sender":"CUSTOMER"}'),
    );
    expect(message).toMatchObject({ id: null, customerId: 'cv-77', text: 'hi' });
  });
});
