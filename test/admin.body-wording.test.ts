import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Every admin request body's problems in the words the query filters and config check use
 * (src/http/validate.ts parseWith, one place for the admin API's own routes and the channels'):
 * an unknown key at its own path with the key meant, an empty string, a wrong type with what was
 * sent, a number out of range. They read zod's own: `(root): Unrecognized key: "foo"`, `Too small:
 * expected string to have >=1 characters`, `Invalid input: expected string, received number`.
 */

interface Issue {
  path: string;
  message: string;
}

describe('admin API: a request body is refused in words a newcomer can act on', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: allVendorChannels } });
  });
  afterAll(() => bridge?.close());

  const refused = async (path: string, body: unknown): Promise<Issue[]> => {
    const answer = await bridge.admin('POST', path, body);
    expect(answer.status, JSON.stringify(body)).toBe(400);
    expect(answer.body.error.code).toBe('invalid_body');
    return answer.body.error.issues as Issue[];
  };
  const merge = '/api/v1/contacts/c_x/merge';
  const unmerge = '/api/v1/contacts/c_x/unmerge';
  const chatUrl = '/api/v1/channels/cobrowse/agent-chat-url';

  it('an unknown key is named at its own path, with the key meant when one is close', async () => {
    expect(await refused(merge, { with: 'c_y', foo: 1 })).toEqual([
      { path: 'foo', message: 'unknown key (allowed here: with)' },
    ]);
    expect(await refused(merge, { wiht: 'c_y' })).toEqual([
      { path: 'with', message: 'required' },
      { path: 'wiht', message: 'unknown key (did you mean "with"?)' },
    ]);
    expect(await refused(chatUrl, { customerId: '7', agentMail: 'a@example.org' })).toEqual([
      { path: 'agentMail', message: 'unknown key (did you mean "agentEmail"?)' },
    ]);
    // Inside a form of the unmerge body, and a key of neither form.
    expect(
      await refused(unmerge, { identifier: { kind: 'email', value: 'a@example.org', chanelId: 'web' } }),
    ).toEqual([{ path: 'identifier.chanelId', message: 'unknown key (did you mean "channelId"?)' }]);
    expect(await refused(unmerge, { recordid: '1' })).toEqual([
      { path: 'recordid', message: 'unknown key (did you mean "recordId"?)' },
    ]);
    // Neither form, or parts of both.
    expect(await refused(unmerge, {})).toEqual([
      { path: '(root)', message: 'required: recordId or identifier' },
    ]);
    expect(
      await refused(unmerge, { recordId: '1', identifier: { kind: 'email', value: 'a@example.org' } }),
    ).toEqual([
      { path: '(root)', message: 'give one of identifier, recordId, not several: each is a form of its own' },
    ]);
  });

  it('an empty string, a wrong type and a value out of range say what was sent', async () => {
    expect(await refused(merge, { with: '' })).toEqual([{ path: 'with', message: 'must not be empty' }]);
    expect(await refused(merge, { with: 5 })).toEqual([
      { path: 'with', message: 'expected a string, got 5' },
    ]);
    expect(await refused(merge, { with: 'x'.repeat(201) })).toEqual([
      { path: 'with', message: 'at most 200 characters, got 201' },
    ]);
    expect(await refused(unmerge, { recordId: '' })).toEqual([
      { path: 'recordId', message: 'must not be empty' },
    ]);
    expect(await refused(chatUrl, { customerId: -1 })).toEqual([
      { path: 'customerId', message: 'at least 0, got -1' },
    ]);
    expect(await refused(chatUrl, { customerId: true })).toEqual([
      { path: 'customerId', message: 'expected a string or a number, got true' },
    ]);
    expect(await refused(chatUrl, { customerId: '7', agentEmail: 'nobody' })).toEqual([
      { path: 'agentEmail', message: 'an e-mail address (name@example.org), got "nobody"' },
    ]);
    // Not an object at all.
    expect(await refused(merge, ['c_y'])).toEqual([
      { path: '(root)', message: 'expected an object, got ["c_y"]' },
    ]);
  });

  it('no message is zod’s own', async () => {
    const bodies: Array<[string, unknown]> = [
      [merge, { with: '', foo: 1 }],
      [merge, { with: null }],
      [merge, 42],
      [unmerge, {}],
      [unmerge, { recordId: 1 }],
      [unmerge, { recordId: '1', identifier: { kind: 'email', value: 'a@example.org' } }],
      [unmerge, { identifier: { kind: 'Email', value: '' } }],
      [chatUrl, { customerId: 1.5 }],
      [chatUrl, { customerId: '' }],
    ];
    for (const [path, body] of bodies) {
      for (const issue of await refused(path, body)) {
        expect(issue.path, JSON.stringify(body)).not.toBe('');
        expect(issue.message, JSON.stringify(body)).not.toMatch(
          /Invalid input|Unrecognized key|Too (small|big)|expected .* received|Invalid (string|option|email)/,
        );
      }
    }
  });
});
