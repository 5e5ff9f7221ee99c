import { afterEach, describe, expect, it } from 'vitest';
import { startFakeAmo } from './test-support/fake-amocrm.js';

/** The fake amoCRM follows the documented shapes (../shared/vendors/amocrm.md §7). */
const TOKEN = 'amo-token-0123456789abcdefghij';
let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
});

describe('fake amoCRM', () => {
  it('204 on an empty search, _embedded wrappers, /leads/complex as a bare array, 400 validation-errors, 401/403/429', async () => {
    const fake = await startFakeAmo({ token: TOKEN });
    close = fake.close;
    const call = (method: string, path: string, body?: unknown, token = TOKEN) =>
      fetch(`${fake.url}/api/v4${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    const empty = await call('GET', '/contacts?query=9161234567');
    expect(empty.status).toBe(204);
    expect(await empty.text()).toBe('');

    const complex = await call('POST', '/leads/complex', [
      {
        name: 'Chat',
        _embedded: {
          contacts: [
            {
              first_name: 'Ivan',
              custom_fields_values: [
                { field_code: 'PHONE', values: [{ value: '+79161234567', enum_code: 'MOB' }] },
              ],
            },
          ],
        },
        request_id: 'r1',
      },
    ]);
    const created = (await complex.json()) as any[];
    expect(Array.isArray(created)).toBe(true);
    expect(created[0]).toMatchObject({ request_id: ['r1'], merged: false });
    expect(typeof created[0].id).toBe('number');

    const found = (await (await call('GET', '/contacts?query=9161234567')).json()) as any;
    expect(found._embedded.contacts[0].id).toBe(created[0].contact_id);
    expect(found._embedded.contacts[0].custom_fields_values[0]).toMatchObject({
      field_code: 'PHONE',
      values: [{ value: '+79161234567' }],
    });

    const invalid = await call('POST', '/contacts', [
      { name: 'X', custom_fields_values: [{ field_code: 'NOPE', values: [] }], request_id: 'q' },
    ]);
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as any)['validation-errors'][0]).toMatchObject({
      request_id: 'q',
      errors: [{ code: 'NotSupportedChoice', path: 'custom_fields_values.0.field_code' }],
    });
    // Phone types are WORK, WORKDD, MOB, FAX, HOME, OTHER; e-mail types WORK, PRIV, OTHER.
    const badType = await call('POST', '/contacts', [
      {
        name: 'X',
        custom_fields_values: [
          { field_code: 'EMAIL', values: [{ value: 'x@example.org', enum_code: 'PRIV' }] },
          { field_code: 'PHONE', values: [{ value: '+79161234568', enum_code: 'MOBILE' }] },
        ],
        request_id: 't',
      },
    ]);
    expect(badType.status).toBe(400);
    expect(((await badType.json()) as any)['validation-errors'][0]).toMatchObject({
      request_id: 't',
      errors: [{ code: 'NotSupportedChoice', path: 'custom_fields_values.1.values.0.enum_code' }],
    });

    expect((await call('GET', '/account', undefined, 'wrong')).status).toBe(401);
    fake.nonAdminToken = true;
    expect((await call('GET', '/users')).status).toBe(403);
    fake.failNext(1, { status: 429, body: 'Too Many Requests' });
    const limited = await call('GET', '/account');
    expect(limited.status).toBe(429);
    expect(await limited.text()).toBe('Too Many Requests');
  });

  it("lists a lead's tasks and notes (filter by entity, newest first), with created_at on what it made", async () => {
    const fake = await startFakeAmo({ token: TOKEN });
    close = fake.close;
    const call = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${fake.url}/api/v4${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return {
        status: response.status,
        json: response.status === 204 ? null : ((await response.json()) as any),
      };
    };
    const task = (entity_id: number, text: string) => ({
      text,
      complete_till: 1767254400,
      entity_id,
      entity_type: 'leads',
    });
    await call('POST', '/tasks', [task(1, 'first'), task(2, 'other lead'), task(1, 'second')]);
    const tasks = await call(
      'GET',
      '/tasks?filter[entity_type]=leads&filter[entity_id][]=1&order[id]=desc&limit=250',
    );
    expect(tasks.json._embedded.tasks.map((item: any) => item.text)).toEqual(['second', 'first']);
    expect(typeof tasks.json._embedded.tasks[0].created_at).toBe('number');
    expect((await call('GET', '/tasks?filter[entity_type]=contacts&filter[entity_id][]=1')).status).toBe(204);

    await call('POST', '/leads/notes', [
      { entity_id: 1, note_type: 'common', params: { text: 'transcript' } },
    ]);
    const notes = await call('GET', '/leads/1/notes?order[id]=desc&limit=250');
    expect(notes.json._embedded.notes).toMatchObject([
      { entity_id: 1, note_type: 'common', params: { text: 'transcript' } },
    ]);
    expect((await call('GET', '/leads/2/notes')).status).toBe(204);
  });
});
