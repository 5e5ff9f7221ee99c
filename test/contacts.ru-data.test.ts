import { afterAll, describe, expect, it } from 'vitest';
import { normalizeEmail, normalizePhone } from '../src/contacts/normalize.js';
import type { ContactService } from '../src/contacts/service.js';
import type { Observation } from '../src/contacts/types.js';
import { redisEngines } from './support/engine.js';

/**
 * The data the bridge's users have: Russian-speaking visitors (also Kazakh, Ukrainian, Belarusian)
 * with Cyrillic names, phones written the local ways and Cyrillic mail domains. Real Redis.
 */
const engines = redisEngines('ru-data');
afterAll(engines.cleanup);
const engine = engines.create;

let sequence = 0;
function observation(
  partial: Partial<Observation> & { identifiers: Observation['identifiers'] },
): Observation {
  sequence += 1;
  return {
    channelId: 'web',
    vendor: 'jivochat',
    at: new Date(Date.UTC(2026, 10, 1, 12, 0, sequence)).toISOString(),
    idempotencyKey: `ru-${sequence}-${Math.random()}`,
    ...partial,
  };
}

describe('phones as Russian-speaking visitors type them', () => {
  it('one person, every Russian way of writing the number: one contact', async () => {
    const contacts = await engine();
    const forms = [
      '8 (916) 123-45-67',
      '+7 916 1234567',
      '89161234567',
      '7 916 123 45 67',
      '８ ９１６ １２３ ４５ ６７',
    ];
    const ids = new Set<string>();
    for (const value of forms) {
      const { contact } = await contacts.observe(
        observation({ identifiers: [{ kind: 'phone', value, provenance: 'verified' }] }),
      );
      ids.add(contact.id);
    }
    expect(ids.size).toBe(1);
    expect((await contacts.find({ phone: '８９１６１２３４５６７' })).map((c) => c.id)).toEqual([...ids]);
  });

  it('digits typed on a fullwidth or Arabic keyboard are the number, not "no phone"', () => {
    expect(normalizePhone('８ ９１６ １２３ ４５ ６７', 'RU')).toBe('+79161234567');
    expect(normalizePhone('٨٩١٦١٢٣٤٥٦٧', 'RU')).toBe('+79161234567');
  });

  it("a neighbour country's domestic form is not read as a Russian number: a Minsk and a Kyiv visitor never merge", async () => {
    // Belarus writes its mobiles "8 044 …" (A1), Ukraine its Kyiv landlines "044 …": read in RU
    // both became +7 044 123-45-67, a number that does not exist, and joined two strangers.
    expect(normalizePhone('8 044 123 45 67', 'RU')).toBeNull();
    expect(normalizePhone('044 123 45 67', 'RU')).toBeNull();
    expect(normalizePhone('8 029 123 45 67', 'RU')).toBeNull();
    const contacts = await engine();
    const minsk = await contacts.observe(
      observation({
        identifiers: [
          { kind: 'person', value: 'minsk' },
          { kind: 'phone', value: '8 044 123 45 67' },
        ],
      }),
    );
    const kyiv = await contacts.observe(
      observation({
        identifiers: [
          { kind: 'person', value: 'kyiv' },
          { kind: 'phone', value: '044 123 45 67' },
        ],
      }),
    );
    expect(kyiv.contact.id).not.toBe(minsk.contact.id);
    // Written with its country code, the same numbers are theirs.
    expect(normalizePhone('+375 44 123 45 67', 'RU')).toBe('+375441234567');
    expect(normalizePhone('+380 44 123 45 67', 'RU')).toBe('+380441234567');
    expect(normalizePhone('8 10 375 44 123 45 67', 'RU')).toBe('+375441234567');
  });

  it('Kazakhstan shares +7: 8 701 … is the same Kazakh number as +7 701 …, never a Russian one', () => {
    expect(normalizePhone('8 (701) 123-45-67', 'RU')).toBe('+77011234567');
    expect(normalizePhone('+7 701 123 45 67', 'RU')).toBe('+77011234567');
    expect(normalizePhone('8-800-555-35-35', 'RU')).toBe('+78005553535');
  });
});

describe('e-mails with Cyrillic domains', () => {
  it('почта.рф and its punycode form are one address, one contact', async () => {
    expect(normalizeEmail('Ivan@XN--80A1ACNY.XN--P1AI')).toBe('ivan@почта.рф');
    expect(normalizeEmail('Иван@Почта.РФ')).toBe('иван@почта.рф');
    expect(normalizeEmail('ivan@mail.ru')).toBe('ivan@mail.ru');
    const contacts = await engine();
    const typed = await contacts.observe(
      observation({ identifiers: [{ kind: 'email', value: 'Ivan@Почта.рф', provenance: 'verified' }] }),
    );
    const fromCrm = await contacts.observe(
      observation({
        identifiers: [{ kind: 'email', value: 'ivan@xn--80a1acny.xn--p1ai', provenance: 'verified' }],
      }),
    );
    expect(fromCrm.contact.id).toBe(typed.contact.id);
    expect(fromCrm.contact.emails).toEqual(['ivan@почта.рф']);
    expect((await contacts.find({ email: 'IVAN@xn--80a1acny.xn--p1ai' })).map((c) => c.id)).toEqual([
      typed.contact.id,
    ]);
  });
});

describe('name search with Cyrillic names', () => {
  async function named(contacts: ContactService, person: string, name: string) {
    return (
      await contacts.observe(observation({ identifiers: [{ kind: 'person', value: person }], names: [name] }))
    ).contact.id;
  }
  const found = async (contacts: ContactService, query: string) =>
    (await contacts.find({ name: query })).map((c) => c.id).sort();

  it('case, ё/е, NFD, word order and patronymics do not hide a contact', async () => {
    const contacts = await engine();
    const semyon = await named(contacts, 'p1', 'Семён Петрович ИВАНОВ');
    const yosif = await named(contacts, 'p2', 'Йосиф Ґудзь'.normalize('NFD'));
    expect(await found(contacts, 'иванов семен')).toEqual([semyon]);
    expect(await found(contacts, 'Иванов Семён Петрович')).toEqual([semyon]);
    expect(await found(contacts, 'йосиф ґудзь')).toEqual([yosif]);
    const kazakh = await named(contacts, 'p3', 'Әлия Қасымова');
    expect(await found(contacts, 'ӘЛИЯ')).toEqual([kazakh]);
  });

  it('a Latin look-alike letter inside a Cyrillic name (Иванoв with a Latin o) is found by the Cyrillic spelling, and back', async () => {
    const contacts = await engine();
    const ivanov = await named(contacts, 'p1', 'Иванoв Пётр'); // Latin "o"
    const maria = await named(contacts, 'p2', 'Mаria Sокоlova'); // Cyrillic "а"; Cyrillic "око"
    expect(await found(contacts, 'Иванов')).toEqual([ivanov]);
    expect(await found(contacts, 'maria sokolova')).toEqual([maria]);
  });
});
