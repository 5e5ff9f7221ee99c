import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorBody } from '../src/http/errors.js';
import { allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * An error answer lists a bounded number of problems, each of bounded length, however many the
 * body has. A body of 60,000 unknown keys (under the 1 MB limit) was answered with every one of
 * them: 3.7 MB from an admin route (one issue per key), and from the LiveTex lookup, which anyone
 * may call, 700 KB echoing the keys back in one message. The first problems name what to fix;
 * the rest are counted.
 */
describe('an error answer to a body with very many problems', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: allVendorChannels } });
  });
  afterAll(() => bridge?.close());

  const manyKeys = Object.fromEntries(Array.from({ length: 60_000 }, (_, index) => [`k${index}`, 1]));

  it('names the first unknown keys, counts the rest, and stays small', async () => {
    const answer = await bridge.admin('POST', '/api/v1/contacts/c_x/merge', manyKeys);
    expect(answer.status).toBe(400);
    const { issues } = answer.body.error as { issues: { path: string; message: string }[] };
    expect(issues).toEqual([
      { path: 'with', message: 'required' },
      ...Array.from({ length: 10 }, (_, index) => ({
        path: `k${index}`,
        message: 'unknown key (allowed here: with)',
      })),
      { path: '(root)', message: '59,990 more unknown keys (allowed here: with)' },
    ]);
    // Each of the 60,000 keys had been looked up against the schema (10 s of CPU, loaded).
    expect(JSON.stringify(answer.body).length).toBeLessThan(4_000);
  });

  it('lists at most 20 problems, and says how many more', () => {
    const issues = Array.from({ length: 25 }, (_, index) => ({ path: `p${index}`, message: 'bad' }));
    const listed = errorBody('invalid_body', 'invalid body', issues).error.issues!;
    expect(listed).toHaveLength(21);
    expect(listed.slice(0, 20)).toEqual(issues.slice(0, 20));
    expect(listed[20]).toEqual({ path: '(root)', message: '5 more problems, not listed' });
    expect(errorBody('invalid_body', 'invalid body', issues.slice(0, 20)).error.issues).toEqual(
      issues.slice(0, 20),
    );
  });

  it('cuts a problem whose text is very long (the lookup, which anyone may call)', async () => {
    const answer = await bridge.post('/livetex/app/attributes', manyKeys, {
      'content-type': 'application/json',
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('malformed_request');
    const { issues } = answer.body.error as { issues: { path: string; message: string }[] };
    expect(issues[0]).toEqual({ path: 'payload', message: 'required' });
    for (const issue of issues) expect(issue.message.length).toBeLessThanOrEqual(300);
    expect(issues[1]!.message).toMatch(/^Unrecognized keys: "k0", "k1", .*… \([\d,]+ characters in all\)$/);
    expect(JSON.stringify(answer.body).length).toBeLessThan(4_000);
  });
});
