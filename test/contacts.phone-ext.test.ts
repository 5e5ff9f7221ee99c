import { afterAll, describe, expect, it } from 'vitest';
import { normalizePhone } from '../src/contacts/normalize.js';
import type { Observation } from '../src/contacts/types.js';
import { redisEngines } from './support/engine.js';

/**
 * Phones as office people give them: one switchboard number and an extension each, two numbers
 * in one field, the extension written "д." or "доп.". Real Redis, the default identity settings
 * (visitor-typed phones may merge).
 */
const engines = redisEngines('phone-ext');
afterAll(engines.cleanup);
const engine = engines.create;

let sequence = 0;
/** A chat of visitor `visitor` in `channelId` giving `phone` (as verified: the strongest case). */
function chat(channelId: string, visitor: string, phone: string): Observation {
  sequence += 1;
  return {
    channelId,
    vendor: channelId === 'lt' ? 'livetex' : 'jivochat',
    at: new Date(Date.UTC(2026, 11, 1, 12, 0, sequence)).toISOString(),
    idempotencyKey: `ext-${sequence}-${Math.random()}`,
    identifiers: [
      { kind: 'visitor', value: visitor, channelId },
      { kind: 'phone', value: phone, provenance: 'verified' },
    ],
  };
}

const ids = (contacts: { id: string }[]) => contacts.map((contact) => contact.id).sort();

describe('a phone with an extension (one switchboard, many people)', () => {
  it('two colleagues with different extensions stay two contacts, each with the E.164 number', async () => {
    const contacts = await engine();
    for (const [first, second] of [
      ['+7 495 123-45-67 доб. 101', '+7 495 123-45-67 доб. 102'],
      ['+7 495 222-33-44 ext. 5', '+7 495 222-33-44 x6'],
      ['+7 495 333-44-55 #5', '8 (495) 333-44-55 доб 7'],
    ] as const) {
      const a = await contacts.observe(chat('web', `a-${first}`, first));
      const b = await contacts.observe(chat('web', `b-${second}`, second));
      expect(b.contact.id, `${first} / ${second}`).not.toBe(a.contact.id);
      // The contract: phones are E.164, the extension is not part of them.
      expect(a.contact.phones).toEqual([normalizePhone(first, 'RU')]);
      expect(b.contact.phones).toEqual([normalizePhone(second, 'RU')]);
    }
  });

  it('the same person with the same extension in two vendors is found by one phone search, a colleague is not', async () => {
    const contacts = await engine();
    const web = await contacts.observe(chat('web', 'ivan', '+7 495 123-45-67 доб. 101'));
    const lt = await contacts.observe(chat('lt', 'client-9', '8 (495) 123-45-67 ext. 101'));
    const colleague = await contacts.observe(chat('web', 'olga', '+7 495 123-45-67 доб. 102'));
    const found = await contacts.find({ phone: '+7 495 1234567 доб. 101' });
    expect(ids(found)).toEqual(ids([web.contact, lt.contact]));
    expect(ids(await contacts.find({ phone: '84951234567 x102' }))).toEqual([colleague.contact.id]);
    // The number without an extension lists everyone reached through it.
    expect(ids(await contacts.find({ phone: '+7 495 123-45-67' }))).toEqual(
      ids([web.contact, lt.contact, colleague.contact]),
    );
    // A lookup (one contact for one identifier) with the extension answers with that person.
    expect((await contacts.findByIdentifier({ kind: 'phone', value: '+7 495 123-45-67 доб. 102' }))?.id).toBe(
      colleague.contact.id,
    );
    // So does the claiming lookup the vendors' lookups use (its one-step read sees only the
    // number's own index, which no extension claims).
    const claimed = await contacts.claimAndFind(
      { kind: 'phone', value: '+7 495 123-45-67 ext 102' },
      { claim: { key: `claim-${Math.random()}`, ttlMs: 60_000 } },
    );
    expect(claimed).toMatchObject({ claimed: true, contact: { id: colleague.contact.id } });
  });

  it('the switchboard number without an extension still merges as any phone does', async () => {
    const contacts = await engine();
    const first = await contacts.observe(chat('web', 'desk-1', '+7 495 123-45-67'));
    const again = await contacts.observe(chat('lt', 'desk-2', '8 495 123 45 67'));
    const person = await contacts.observe(chat('web', 'ivan', '+7 495 123-45-67 доб. 101'));
    expect(again.contact.id).toBe(first.contact.id);
    expect(person.contact.id).not.toBe(first.contact.id);
    // A search with an extension finds the number's own contact too (as before).
    expect(ids(await contacts.find({ phone: '+7 495 123-45-67 доб. 101' }))).toEqual(
      ids([first.contact, person.contact]),
    );
  });

  it('"д. 5" and "доп. 5" are extensions like "доб. 5": the number is kept, colleagues stay apart', async () => {
    expect(normalizePhone('+7 495 123-45-67 д. 5', 'RU')).toBe('+74951234567');
    expect(normalizePhone('+7 495 123-45-67 доп. 5', 'RU')).toBe('+74951234567');
    expect(normalizePhone('8 (495) 123-45-67, доп.5', 'RU')).toBe('+74951234567');
    const contacts = await engine();
    const a = await contacts.observe(chat('web', 'a', '+7 495 123-45-67 д. 5'));
    const b = await contacts.observe(chat('lt', 'b', '8 495 123 45 67 доп. 5'));
    const c = await contacts.observe(chat('web', 'c', '+7 495 123-45-67 доб. 6'));
    expect(a.contact.phones).toEqual(['+74951234567']);
    expect(new Set([a.contact.id, b.contact.id, c.contact.id]).size).toBe(3);
    expect(ids(await contacts.find({ phone: '+7 495 123-45-67 доб. 5' }))).toEqual(
      ids([a.contact, b.contact]),
    );
  });
});

describe('two phones in one field', () => {
  it('each number becomes a phone of the contact, whatever the separator', async () => {
    const contacts = await engine();
    for (const [value, first, second] of [
      ['+7 916 123-45-67, +7 926 765-43-21', '+79161234567', '+79267654321'],
      ['8 916 111-22-33; 8 926 444-55-66', '+79161112233', '+79264445566'],
      ['+7 916 777-88-99 / +7 (926) 000-11-22', '+79167778899', '+79260001122'],
    ] as const) {
      const { contact } = await contacts.observe(chat('web', `v-${value}`, value));
      expect(contact.phones, value).toEqual(expect.arrayContaining([first, second]));
      expect(contact.phones).toHaveLength(2);
      expect(ids(await contacts.find({ phone: second }))).toEqual([contact.id]);
      expect(ids(await contacts.find({ phone: first }))).toEqual([contact.id]);
    }
  });

  it('a comma before the extension does not split the number', async () => {
    const contacts = await engine();
    const a = await contacts.observe(chat('web', 'a', '+7 495 123-45-67, доб. 101'));
    const b = await contacts.observe(chat('web', 'b', '+7 495 123-45-67, доб. 102'));
    expect(a.contact.phones).toEqual(['+74951234567']);
    expect(b.contact.id).not.toBe(a.contact.id);
  });

  it('at most limits.identifiersPerKind phones from one observation', async () => {
    const contacts = await engine({ identifiersPerKind: 3 });
    const many = Array.from({ length: 6 }, (_, i) => `+7 916 000-00-0${i}`).join(', ');
    const { contact } = await contacts.observe(chat('web', 'many', many));
    expect(contact.phones).toHaveLength(3);
  });
});
