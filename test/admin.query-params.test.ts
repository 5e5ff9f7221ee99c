import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The admin API reads its query strictly: a parameter the route does not take, a number written
 * any way but plain digits, or a single-valued parameter given twice is a 400 naming the
 * parameter, never ignored and never read as something else (`limit=1e2` was 100, `limit=0x10`
 * 16, `limit= 5` 5; `?foo=1` on a route without a query was ignored).
 */

interface Issue {
  path: string;
  message: string;
}

describe('admin API query parameters are parsed strictly', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: allVendorChannels } });
  });
  afterAll(() => bridge?.close());

  async function refused(method: string, path: string, parameter: string): Promise<Issue[]> {
    const answer = await bridge.admin(method, path, method === 'POST' ? {} : undefined);
    expect(answer.status, `${method} ${path}`).toBe(400);
    expect(answer.body.error.code, `${method} ${path}`).toBe('invalid_query');
    const issues = answer.body.error.issues as Issue[];
    expect(
      issues.map((issue) => issue.path),
      `${method} ${path}: ${JSON.stringify(issues)}`,
    ).toContain(parameter);
    return issues;
  }

  const LIMITED = [
    '/api/v1/deliveries',
    '/api/v1/journal',
    '/api/v1/identity/conflicts',
    '/api/v1/contacts/c_x/timeline',
  ];

  it('refuses a limit that is not plain digits, naming the parameter and the form it takes', async () => {
    for (const path of LIMITED) {
      for (const value of ['abc', '-1', '1e2', '1e3', '0x10', '%205', '5.0', '1.5', '', '+5', '0']) {
        const issues = await refused('GET', `${path}?limit=${value}`, 'limit');
        const about = issues.find((issue) => issue.path === 'limit')!;
        expect(about.message, `${path}?limit=${value}`).toMatch(/whole number|at least|at most/);
      }
      const form = await refused('GET', `${path}?limit=1e2`, 'limit');
      expect(form.find((issue) => issue.path === 'limit')!.message).toContain('whole number');
    }
  });

  it('still takes a plain limit', async () => {
    for (const path of ['/api/v1/deliveries', '/api/v1/journal', '/api/v1/identity/conflicts']) {
      expect((await bridge.admin('GET', `${path}?limit=2`)).status, path).toBe(200);
      expect((await bridge.admin('GET', `${path}?limit=500`)).status, path).toBe(200);
      expect((await bridge.admin('GET', path)).status, path).toBe(200);
    }
    expect((await bridge.admin('GET', '/api/v1/contacts/c_x/timeline?limit=2')).status).toBe(404);
  });

  it('refuses a single-valued parameter given twice', async () => {
    await refused('GET', '/api/v1/deliveries?limit=1&limit=2', 'limit');
    await refused('GET', '/api/v1/deliveries?destination=a&destination=b', 'destination');
    await refused('GET', '/api/v1/deliveries?state=failed&state=failed', 'state');
    await refused('GET', '/api/v1/journal?before=a&before=b', 'before');
    await refused('GET', '/api/v1/contacts?email=a@b.c&email=d@e.f', 'email');
    await refused('POST', '/api/v1/deliveries/replay?destination=a&destination=b', 'destination');
    const issues = await refused('GET', '/api/v1/deliveries?limit=1&limit=1', 'limit');
    expect(issues.find((issue) => issue.path === 'limit')!.message).toContain('more than once');
  });

  it('refuses a parameter the route does not take, naming it', async () => {
    const issues = await refused('GET', '/api/v1/deliveries?limt=5', 'limt');
    expect(issues.find((issue) => issue.path === 'limt')!.message).toContain('unknown');
    await refused('GET', '/api/v1/journal?cursor=x', 'cursor');
    await refused('GET', '/api/v1/contacts?email=a@b.c&name=x', 'name');
    await refused('POST', '/api/v1/deliveries/replay?destination=crm&force=1', 'force');
    await refused('POST', '/api/v1/channels/cobrowse/agent-sync?dryrun=1', 'dryrun');
  });

  it('refuses any parameter on a route that takes no query', async () => {
    await refused('GET', '/api/v1/channels?limit=5', 'limit');
    await refused('GET', '/api/v1/contacts/c_x?x=1', 'x');
    await refused('GET', '/api/v1/deliveries/dlv_x?expand=body', 'expand');
    await refused('POST', '/api/v1/deliveries/dlv_x/replay?force=1', 'force');
    await refused('POST', '/api/v1/contacts/c_x/unmerge?recordId=r1', 'recordId');
    await refused('GET', '/api/v1/channels/app/keys?all=1', 'all');
    await refused('POST', '/api/v1/channels/app/keys?ttl=1', 'ttl');
    // A bare `?` carries no parameter: still fine.
    expect((await bridge.admin('GET', '/api/v1/channels?')).status).toBe(200);
  });

  it('a filter given a value it does not take says which values it takes, not "Invalid input"', async () => {
    const cases: Array<[string, string, string[]]> = [
      ['/api/v1/deliveries?state=bogus', 'state', ['pending', 'delivered', 'failed']],
      ['/api/v1/journal?kind=bogus', 'kind', ['rejected', 'unhandled']],
      ['/api/v1/identity/conflicts?state=bogus', 'state', ['open', 'merged', 'resolved']],
    ];
    for (const [path, parameter, values] of cases) {
      const issues = await refused('GET', path, parameter);
      const message = issues.find((issue) => issue.path === parameter)!.message;
      expect(message, path).not.toBe('Invalid input');
      for (const value of values) expect(message, path).toContain(value);
    }
  });

  it("says the values a parameter takes as the config and the console do, not in zod's words", async () => {
    // The admin API answered 'Invalid option: expected one of "pending"|"delivered"|"failed"'
    // where config check says 'one of …; got …' and the console 'must be pending, delivered or
    // failed': zod's wording, with its quotes and bars, about the same mistake.
    const cases: Array<[string, string, string, string]> = [
      ['GET', '/api/v1/deliveries?state=bogus', 'state', 'one of pending, delivered, failed; got "bogus"'],
      ['GET', '/api/v1/journal?kind=Rejected', 'kind', 'one of rejected, unhandled; got "Rejected"'],
      ['GET', '/api/v1/identity/conflicts?state=all', 'state', 'one of open, merged, resolved; got "all"'],
      [
        'POST',
        '/api/v1/channels/cobrowse/agent-sync?dryRun=yes',
        'dryRun',
        'one of 0, 1, true, false; got "yes"',
      ],
    ];
    for (const [method, path, parameter, said] of cases) {
      const issues = await refused(method, path, parameter);
      expect(issues, path).toEqual([{ path: parameter, message: said }]);
    }
  });

  it('keeps empty filters as filters not given', async () => {
    expect((await bridge.admin('GET', '/api/v1/deliveries?state=&destination=')).status).toBe(200);
    expect((await bridge.admin('GET', '/api/v1/journal?channel=&kind=')).status).toBe(200);
    expect((await bridge.admin('GET', '/api/v1/contacts?email=&phone=&identity=person:p-1')).status).toBe(
      200,
    );
  });
});
