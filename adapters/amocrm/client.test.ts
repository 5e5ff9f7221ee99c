import { afterEach, describe, expect, it } from 'vitest';
import { CrmError } from '../../src/crm/errors.js';
import { createTransport } from '../../src/crm/transport.js';
import { createHttpClient } from '../../src/net/http.js';
import { RATE_LIMIT_PAUSE_MS } from './api.js';
import { createAmoClient } from './client.js';
import { type FakeAmo, startFakeAmo } from './test-support/fake-amocrm.js';

/** The amoCRM client against the fake account, below the flow (vendors/amocrm.md §3). */
const TOKEN = 'amo-long-lived-token-0123456789abcdef';
let fake: FakeAmo | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function client() {
  fake = await startFakeAmo({ token: TOKEN });
  const transport = createTransport({
    http: createHttpClient(),
    limiter: { acquire: async () => {} },
    timeoutMs: 5000,
    displayName: 'amoCRM',
  });
  return { fake, api: createAmoClient({ baseUrl: fake.url, token: TOKEN }, transport) };
}

async function refusal(promise: Promise<unknown>): Promise<CrmError> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(CrmError);
  return error as CrmError;
}

describe('amoCRM client', () => {
  it("a 429 without Retry-After (amoCRM's bare page) still asks the destination to wait, so the other deliveries do not go on hitting the limit", async () => {
    const { fake, api } = await client();
    fake.failNext(1, { status: 429, body: '<html>Too Many Requests</html>' });
    const bare = await refusal(api.findContacts({ phones: ['+79161234567'], emails: [] }));
    expect(bare).toMatchObject({ kind: 'retry', httpStatus: 429, retryAfterMs: RATE_LIMIT_PAUSE_MS });

    // One the CRM gives is taken as it is; a 5xx without one sets no pause (the breaker's case).
    fake.failNext(1, { status: 429, body: 'Too Many Requests', headers: { 'retry-after': '7' } });
    expect((await refusal(api.findContacts({ phones: ['+79161234567'], emails: [] }))).retryAfterMs).toBe(
      7000,
    );
    fake.failNext(1, { status: 502, body: '<html>Bad gateway</html>' });
    expect(
      (await refusal(api.findContacts({ phones: ['+79161234567'], emails: [] }))).retryAfterMs,
    ).toBeUndefined();
  });
  it('findContacts finds a contact whose e-mail the CRM holds with its domain in punycode', async () => {
    const { fake, api } = await client();
    // A mail integration stores ivan@xn--80a1acny.xn--p1ai; the bridge's key is ivan@почта.рф.
    fake.contacts.push({
      id: 77,
      name: 'Иван Петров',
      responsible_user_id: 1,
      fields: { EMAIL: [{ value: 'Ivan@XN--80A1ACNY.XN--P1AI', enum_code: 'WORK' }] },
      tags: [],
      leads: [],
    });
    const found = await api.findContacts({ phones: [], emails: ['ivan@почта.рф'] });
    expect(found.map((contact) => contact.id)).toEqual(['77']);
  });
});
