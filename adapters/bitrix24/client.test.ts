import { afterEach, describe, expect, it } from 'vitest';
import { CrmError } from '../../src/crm/errors.js';
import { createTransport } from '../../src/crm/transport.js';
import { createHttpClient } from '../../src/net/http.js';
import { RATE_LIMIT_PAUSE_MS } from './api.js';
import { createBitrix24Client } from './client.js';
import { type FakeBitrix24, startFakeBitrix24 } from './test-support/fake-bitrix24.js';

/** The Bitrix24 client against the fake portal, below the flow (vendors/bitrix24.md §2.2, §2.11). */
let fake: FakeBitrix24 | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function client() {
  fake = await startFakeBitrix24({ code: 'code0123456789abcdef' });
  const transport = createTransport({
    http: createHttpClient(),
    limiter: { acquire: async () => {} },
    timeoutMs: 5000,
    displayName: 'Bitrix24',
  });
  return { fake, api: createBitrix24Client({ webhookUrl: fake.webhookUrl, sourceId: 'WEB' }, transport) };
}

const seed = (fake: FakeBitrix24, id: string, field: 'PHONE' | 'EMAIL', value: string) =>
  fake.contacts.push({
    ID: id,
    NAME: 'Made by hand',
    ASSIGNED_BY_ID: '1',
    PHONE: field === 'PHONE' ? [{ ID: `${id}1`, VALUE: value, VALUE_TYPE: 'MOBILE' }] : [],
    EMAIL: field === 'EMAIL' ? [{ ID: `${id}1`, VALUE: value, VALUE_TYPE: 'WORK' }] : [],
    SOURCE_ID: 'CALL',
    SOURCE_DESCRIPTION: '',
  });

describe('Bitrix24 client', () => {
  it('findContacts searches every phone variant and every e-mail, beyond findbycomm’s 20 values per call', async () => {
    const { fake, api } = await client();
    // Eight Russian mobiles: three variants each (E.164, digits, 8-trunk) = 24 values.
    const phones = Array.from({ length: 8 }, (_, index) => `+7916000000${index}`);
    const emails = Array.from({ length: 25 }, (_, index) => `person${index}@example.org`);
    seed(fake, '50', 'PHONE', '8 916 000-00-07');
    seed(fake, '60', 'EMAIL', 'Person24@example.org');
    const found = await api.findContacts({ phones, emails });
    expect(found.map((contact) => contact.id).sort()).toEqual(['50', '60']);
    // Within the note's limits: ≤ 20 values per findbycomm, ≤ 50 commands per batch.
    for (const request of fake.requests) {
      const body = JSON.parse(request.body) as { cmd: Record<string, string> };
      expect(Object.keys(body.cmd).length).toBeLessThanOrEqual(50);
      for (const line of Object.values(body.cmd))
        expect(new URLSearchParams(line.split('?')[1]).size - 2).toBeLessThanOrEqual(20);
    }
  });

  /**
   * The portal's batch replaces `$result[key]…` (and $next, $total, $time, $error) in every
   * command's values after decoding them: percent-encoding does not protect a value. A
   * visitor-typed e-mail holding one was searched as something else (an earlier command's answer
   * put in its place), or, where that answer is an array, made PHP refuse the whole batch (500:
   * the delivery retried until it failed, and its 5xx counted towards the destination's breaker).
   * Such a value is now searched in a call of its own, which nothing rewrites.
   */
  it('findContacts searches a value holding a batch reference as it is', async () => {
    const { fake, api } = await client();
    seed(fake, '50', 'PHONE', '+79160000001');
    seed(fake, '71', 'EMAIL', 'a$result[c0][CONTACT][0]@example.org');
    seed(fake, '72', 'EMAIL', 'x$RESULT[c0]@example.org');
    const found = await api.findContacts({
      phones: ['+79160000001'],
      emails: ['a$result[c0][CONTACT][0]@example.org', 'x$RESULT[c0]@example.org', 'plain@example.org'],
    });
    expect(found.map((contact) => contact.id).sort()).toEqual(['50', '71', '72']);
    const refused = await api.findContacts({ phones: [], emails: ['y$result[c0]@example.org'] });
    expect(refused).toEqual([]);
    // Values without one still go in the batch.
    const batched = fake.requests.filter((request) => request.path.endsWith('/batch.json'));
    expect(batched.length).toBeGreaterThan(0);
    for (const request of batched) expect(request.body).not.toContain('%24');
  });

  it('findContacts makes one request for a contact with many values', async () => {
    const { fake, api } = await client();
    const phones = Array.from({ length: 30 }, (_, index) => `+7916000${String(index).padStart(4, '0')}`);
    await api.findContacts({ phones, emails: ['a@example.org'] });
    expect(fake.requests.map((request) => request.path)).toEqual([
      new URL(`${fake.webhookUrl}batch.json`).pathname,
    ]);
  });

  it('a command that fails inside a batch (HTTP 200) is a permanent refusal whose message does not claim an HTTP 400', async () => {
    const { fake, api } = await client();
    fake.failNext(1, {
      status: 200,
      body: JSON.stringify({
        result: {
          result: [],
          result_error: { c0: { error: '', error_description: 'Communication values is not defined.' } },
          result_total: [],
          result_next: [],
          result_time: [],
        },
        time: {},
      }),
    });
    const error = await api.findContacts({ phones: [], emails: ['a@example.org'] }).then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(CrmError);
    expect(error).toMatchObject({ kind: 'permanent' });
    expect((error as CrmError).message).toBe(
      'Bitrix24 rejected crm.duplicate.findbycomm (batch command failed, Communication values is not defined.)',
    );
  });

  it("a 503 QUERY_LIMIT_EXCEEDED without Retry-After (the portal's usual answer) still asks the destination to wait, so its other deliveries do not go on into the limit", async () => {
    const { fake, api } = await client();
    const refusal = async (promise: Promise<unknown>) => {
      const error = await promise.then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(CrmError);
      return error as CrmError;
    };
    expect(RATE_LIMIT_PAUSE_MS).toBeGreaterThan(0);
    const find = () => api.findContacts({ phones: ['+79161234567'], emails: [] });
    fake.failNext(1, {
      status: 503,
      body: JSON.stringify({ error: 'QUERY_LIMIT_EXCEEDED', error_description: 'Too many requests' }),
    });
    expect(await refusal(find())).toMatchObject({
      kind: 'retry',
      httpStatus: 429,
      retryAfterMs: RATE_LIMIT_PAUSE_MS,
    });
    fake.failNext(1, {
      status: 429,
      body: JSON.stringify({ error: 'OPERATION_TIME_LIMIT', error_description: 'Method is blocked' }),
    });
    expect(await refusal(find())).toMatchObject({
      kind: 'retry',
      httpStatus: 429,
      retryAfterMs: RATE_LIMIT_PAUSE_MS,
    });

    // One the portal gives is taken as it is; a 5xx without one sets no pause (the breaker's case).
    fake.failNext(1, {
      status: 503,
      body: JSON.stringify({ error: 'QUERY_LIMIT_EXCEEDED', error_description: 'Too many requests' }),
      headers: { 'retry-after': '7' },
    });
    expect((await refusal(find())).retryAfterMs).toBe(7000);
    fake.failNext(1, { status: 502, body: '<html>Bad gateway</html>' });
    expect((await refusal(find())).retryAfterMs).toBeUndefined();
  });
  it('a task title cut to 250 characters never ends in half an emoji (shown as �)', async () => {
    const { fake, api } = await client();
    // The title is the first line of the visitor's offline message: Russian text and emoji.
    for (const pad of [0, 1]) {
      const text = `${'ж'.repeat(pad)}Перезвоните мне, пожалуйста ${'🙏'.repeat(200)}\nвторая строка`;
      await api.createTask({
        on: { type: 'contact', id: '1' },
        text,
        dueAt: new Date('2026-12-04T10:00:00Z'),
        responsibleUserId: null,
        externalId: `evt_title_${pad}`,
      });
    }
    // Half an emoji went out as a lone surrogate, which the UTF-8 body turns into U+FFFD: the title
    // ended in "�" in the manager's task list.
    expect(fake.tasks.map((task) => task.title.endsWith('🙏') && !task.title.includes('\uFFFD'))).toEqual([
      true,
      true,
    ]);
    expect(fake.tasks.every((task) => task.title.length <= 250)).toBe(true);
  });
  it('findContacts finds a contact whose e-mail the portal holds with its domain in punycode', async () => {
    const { fake, api } = await client();
    seed(fake, '31', 'EMAIL', 'ivan@xn--80a1acny.xn--p1ai');
    const found = await api.findContacts({ phones: [], emails: ['ivan@почта.рф'] });
    expect(found.map((contact) => contact.id)).toEqual(['31']);
  });
});
