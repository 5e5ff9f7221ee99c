import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/** The admin API's unmerge refusals name what to change (DESIGN §4: JSON errors naming the problem). */
describe('unmerge refusals', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('says that a vendor-local id needs its channel', async () => {
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'one',
      identifiers: [
        { kind: 'visitor', value: 'v1' },
        { kind: 'email', value: 'one@example.org' },
      ],
    });
    const missing = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'visitor', value: 'v1' },
    });
    expect(missing.status).toBe(400);
    expect(missing.body.error.issues).toEqual([
      {
        path: 'identifier.channelId',
        message: 'vendor-local kind "visitor" needs the channel it belongs to',
      },
    ]);
    const given = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'visitor', value: 'v1', channelId: 'web' },
    });
    expect(given.status).toBe(200);
  });

  it('an identity whose kind is no kind at all says so and lists the kinds, not "needs its channel"', async () => {
    // ?identity=foo:bar said 'vendor-local kind "foo" needs its channel', sending the newcomer to
    // add a channel to a kind that does not exist.
    const unknown = await bridge.admin('GET', '/api/v1/contacts?identity=foo:bar');
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.issues).toEqual([
      {
        path: 'identity',
        message:
          '"foo" is not a known kind: person, email or phone (kind:value), or vendor-local visitor, client or customer with its channel (kind:<channelId>:<value>)',
      },
    ]);
    // A vendor-local kind without its channel is still told to add it.
    const local = await bridge.admin('GET', '/api/v1/contacts?identity=visitor:123');
    expect(local.status).toBe(400);
    expect(local.body.error.issues).toEqual([
      {
        path: 'identity',
        message: 'vendor-local kind "visitor" needs its channel: visitor:<channelId>:<value>',
      },
    ]);
  });

  it('an identifier of no kind at all, without a channel, says so and lists the kinds, as ?identity= does', async () => {
    // The body's {"kind":"foo","value":"bar"} was told 'vendor-local kind "foo" needs the channel it
    // belongs to' after the query's foo:bar had been fixed to name the kinds there are.
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'three',
      identifiers: [{ kind: 'email', value: 'three@example.org' }],
    });
    const unknown = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'foo', value: 'bar' },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.issues).toEqual([
      {
        path: 'identifier.kind',
        message:
          '"foo" is not a known kind: person, email or phone, or vendor-local visitor, client or customer with its channelId',
      },
    ]);
  });

  it('quotes what was sent cut: a kind or a channel of 12 000 characters is not sent back whole', async () => {
    // Each issue was the sent value whole (a 12 KB answer for a 12 KB kind), in a query's
    // `identity` too; a 404 quotes at most 80 characters (quotedInput), and so does a 400 now.
    const long = `zz${'a'.repeat(12_000)}`;
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'two',
      identifiers: [{ kind: 'email', value: 'two@example.org' }],
    });
    for (const identifier of [
      { kind: long, value: 'v1' },
      { kind: 'zz', value: 'v1', channelId: long },
    ]) {
      const refused = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, { identifier });
      expect(refused.status).toBe(400);
      expect(JSON.stringify(refused.body).length).toBeLessThan(400);
      expect(refused.body.error.issues[0].message).toContain('aaa…');
    }
    const query = await bridge.admin('GET', `/api/v1/contacts?identity=${long}:x`);
    expect(query.status).toBe(400);
    expect(JSON.stringify(query.body).length).toBeLessThan(400);
    expect(query.body.error.issues).toEqual([
      {
        path: 'identity',
        message: `"zz${'a'.repeat(78)}…" is not a known kind: person, email or phone (kind:value), or vendor-local visitor, client or customer with its channel (kind:<channelId>:<value>)`,
      },
    ]);
  });

  it('a body of one form with a mistake names the mistake, not "(root): Invalid input"', async () => {
    // {"identifier": {"kind": "email"}} and {"recordId": 5} answered `(root): Invalid input`: zod
    // could not tell which of the two bodies was meant, so nothing said which field was wrong.
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'forms',
      identifiers: [{ kind: 'email', value: 'forms@example.org' }],
    });
    const cases: Array<[unknown, string]> = [
      [{ identifier: { kind: 'email' } }, 'identifier.value'],
      // An unknown key is said at its own path (test/admin.body-wording.test.ts).
      [{ identifier: { kind: 'email', value: 'x@example.org', extra: 1 } }, 'identifier.extra'],
      [{ recordId: '' }, 'recordId'],
      [{ recordId: 5 }, 'recordId'],
    ];
    for (const [body, path] of cases) {
      const refused = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.body.error.code).toBe('invalid_body');
      const issues = refused.body.error.issues as Array<{ path: string; message: string }>;
      expect(
        issues.map((issue) => issue.path),
        JSON.stringify(body),
      ).toEqual([path]);
      expect(issues[0]!.message, JSON.stringify(body)).not.toBe('Invalid input');
    }
    // The one the caller left out is required, as everywhere.
    const partial = await bridge.admin('POST', `/api/v1/contacts/${contact.id}/unmerge`, {
      identifier: { kind: 'email' },
    });
    expect(partial.body.error.issues).toEqual([{ path: 'identifier.value', message: 'required' }]);
  });
});
