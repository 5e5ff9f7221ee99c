import { afterEach, describe, expect, it } from 'vitest';
import { startFakeBitrix24 } from './test-support/fake-bitrix24.js';

/** The fake Bitrix24 follows the documented shapes (../shared/vendors/bitrix24.md §7). */
let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
});

describe('fake Bitrix24', () => {
  it('/rest/<user>/<code>/<method>.json, integer ids from add and string ids from get, batch, 401, 503 limits', async () => {
    const fake = await startFakeBitrix24({ code: 'code0123456789' });
    close = fake.close;
    const call = (method: string, body: unknown, base = fake.webhookUrl) =>
      fetch(`${base}${method}.json`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const added = (await (
      await call('crm.contact.add', {
        fields: { NAME: 'Ivan', PHONE: [{ VALUE: '+79161234567', VALUE_TYPE: 'WORK' }] },
      })
    ).json()) as any;
    expect(typeof added.result).toBe('number');
    expect(added.time).toBeDefined();
    const got = (await (await call('crm.contact.get', { id: added.result })).json()) as any;
    expect(got.result.ID).toBe(String(added.result));
    expect(typeof got.result.PHONE[0].ID).toBe('string');

    const batch = (await (
      await call('batch', {
        halt: 0,
        cmd: {
          hit: 'crm.duplicate.findbycomm?entity_type=CONTACT&type=PHONE&values[0]=%2B79161234567',
          miss: 'crm.duplicate.findbycomm?entity_type=CONTACT&type=EMAIL&values[0]=nobody%40example.org',
          bad: 'crm.duplicate.findbycomm?entity_type=CONTACT',
        },
      })
    ).json()) as any;
    expect(batch.result.result.hit).toEqual({ CONTACT: [added.result] });
    expect(batch.result.result.miss).toEqual([]);
    expect(batch.result.result_error.bad).toEqual({
      error: '',
      error_description: 'Communication type is not defined.',
    });

    const denied = await call('user.get', {}, fake.webhookUrl.replace('code0123456789', 'wrong'));
    expect(denied.status).toBe(401);
    expect(((await denied.json()) as any).error).toBe('NO_AUTH_FOUND');

    fake.bucket = { size: 1, perSecond: 0.001 };
    expect((await call('user.get', {})).status).toBe(200);
    const limited = await call('user.get', {});
    expect(limited.status).toBe(503);
    expect(((await limited.json()) as any).error).toBe('QUERY_LIMIT_EXCEEDED');
  });

  it('crm.timeline.comment.add on a deal or contact the portal does not have: 400 OWNER_NOT_FOUND; crm.deal.list filters by ID', async () => {
    const fake = await startFakeBitrix24({ code: 'code0123456789' });
    close = fake.close;
    const call = async (method: string, body: unknown) => {
      const response = await fetch(`${fake.webhookUrl}${method}.json`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: response.status, json: (await response.json()) as any };
    };
    const deal = (await call('crm.deal.add', { fields: { TITLE: 'Chat' } })).json.result;
    const comment = (id: number) =>
      call('crm.timeline.comment.add', { fields: { ENTITY_ID: id, ENTITY_TYPE: 'deal', COMMENT: 'hi' } });
    expect((await comment(deal)).status).toBe(200);
    expect(await comment(deal + 1000)).toEqual({
      status: 400,
      json: { error: 'OWNER_NOT_FOUND', error_description: 'Owner entity not found' },
    });
    expect((await call('crm.deal.list', { filter: { ID: deal }, select: ['ID'] })).json.result).toEqual([
      { ID: String(deal), CATEGORY_ID: '0', STAGE_ID: 'NEW' },
    ]);
    expect((await call('crm.deal.list', { filter: { ID: deal + 1000 } })).json.result).toEqual([]);
  });

  it('crm.contact.list and crm.deal.list filter by ORIGIN_ID / ORIGINATOR_ID (newest first on order ID DESC) and refuse unknown filter keys', async () => {
    const fake = await startFakeBitrix24({ code: 'code0123456789' });
    close = fake.close;
    const call = async (method: string, body: unknown) =>
      (await (
        await fetch(`${fake.webhookUrl}${method}.json`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        })
      ).json()) as any;
    const fields = (origin: string) => ({ NAME: 'Ivan', ORIGINATOR_ID: 'chatbridge', ORIGIN_ID: origin });
    const first = (await call('crm.contact.add', { fields: fields('c-1') })).result;
    await call('crm.contact.add', { fields: fields('c-2') });
    const again = (await call('crm.contact.add', { fields: fields('c-1') })).result;
    const list = (filter: unknown, method = 'crm.contact.list') =>
      call(method, { filter, select: ['ID'], order: { ID: 'DESC' } });
    expect((await list({ ORIGINATOR_ID: 'chatbridge', ORIGIN_ID: 'c-1' })).result).toEqual([
      { ID: String(again) },
      { ID: String(first) },
    ]);
    expect((await list({ ORIGIN_ID: 'nobody' })).result).toEqual([]);
    const deal = (await call('crm.deal.add', { fields: { TITLE: 'Chat', ORIGIN_ID: 'd-1' } })).result;
    expect((await list({ ORIGIN_ID: 'd-1' }, 'crm.deal.list')).result).toEqual([
      { ID: String(deal), CATEGORY_ID: '0', STAGE_ID: 'NEW' },
    ]);
    expect((await list({ TITLE: 'Chat' }, 'crm.deal.list')).error_description).toMatch(/not supported/);
  });

  it('user.get pages like a portal: 50 a page sorted by ID, total, next while more remain, FILTER.ACTIVE honoured', async () => {
    const users = Array.from({ length: 61 }, (_, index) => ({
      ID: String(61 - index),
      NAME: `User${61 - index}`,
      EMAIL: `user${61 - index}@shop.example`,
      ...(61 - index === 3 ? { ACTIVE: false } : {}),
    }));
    const fake = await startFakeBitrix24({ code: 'code0123456789', users });
    close = fake.close;
    const call = async (method: string, body: unknown) =>
      (await (
        await fetch(`${fake.webhookUrl}${method}.json`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        })
      ).json()) as any;
    const first = await call('user.get', { FILTER: { ACTIVE: true } });
    expect(first.result).toHaveLength(50);
    expect(first.result[0].ID).toBe('1');
    expect(first.result.map((user: any) => user.ID)).not.toContain('3');
    expect(first.total).toBe(60);
    expect(first.next).toBe(50);
    const last = await call('user.get', { FILTER: { ACTIVE: true }, start: 50 });
    expect(last.result).toHaveLength(10);
    expect(last.next).toBeUndefined();
    const batched = await call('batch', { halt: 1, cmd: { users: 'user.get?FILTER[ACTIVE]=true' } });
    expect(batched.result.result.users).toHaveLength(50);
    expect(batched.result.result_next).toEqual({ users: 50 });
    expect(batched.result.result_total).toEqual({ users: 60 });
  });
});
