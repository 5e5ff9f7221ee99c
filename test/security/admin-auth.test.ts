import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routesOf } from '../../src/http/app.js';
import { isAdminPath } from '../../src/http/guard.js';
import type { Route } from '../../src/http/routes.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { allVendorChannels, rawRequest } from './support.js';

/**
 * A guard against an admin route added without authentication. The admin gate is path-based
 * (everything under /api/v1 but the OpenAPI document needs the token), while a route declares its
 * `auth` as data: this walks the declarations and checks the two agree, and that every declared
 * admin route, for every channel that has it, answers 401 without the token and with a wrong one,
 * whatever it would take as input.
 */

const METRICS_TOKEN = 'metrics-token-admin-auth-0123';

function fill(path: string, channelId: string): string {
  return path
    .replace(/\/channels\/:id(?=\/)/, `/channels/${channelId}`)
    .replace(/\/deliveries\/:id(?=\/|$)/, '/deliveries/dlv_x')
    .replace(/:id(?=\/|$)/g, 'c_x')
    .replace(/:[a-zA-Z]+/g, 'x');
}

describe('every admin route answers 401 without the admin token', () => {
  let bridge: TestBridge;
  let declared: Route[];
  beforeAll(async () => {
    // Rate limits out of the way: this walk is about the 401 (rate-limit.test.ts has the 429).
    bridge = await startTestBridge({
      config: {
        channels: allVendorChannels,
        metrics: { token: METRICS_TOKEN },
        limits: { rate: { adminAuthFailuresPerAddress: 1_000_000, adminAuthFailuresCeiling: 1_000_000 } },
      },
    });
    declared = routesOf(bridge.bridge.app)!.routes;
  });
  afterAll(() => bridge?.close());

  it('declares as admin exactly the routes the gate protects', () => {
    const admin = declared.filter((each) => each.auth === 'admin');
    expect(admin.length).toBeGreaterThan(10);
    for (const each of declared) {
      const gated = isAdminPath(each.path) && each.path !== '/api/v1/openapi.json';
      expect(each.auth === 'admin', `${each.method} ${each.path} (auth ${each.auth})`).toBe(gated);
    }
    // Every route the app actually serves under /api/v1 is declared (nothing mounted on the side).
    const known = new Set(declared.map((each) => `${each.method} ${each.path}`));
    for (const { method, path } of routesOf(bridge.bridge.app)!.mounted()) {
      if (isAdminPath(path)) expect(known.has(`${method} ${path}`), `${method} ${path}`).toBe(true);
    }
  });

  it('answers 401 to each declared admin route, for every channel, without or with a wrong token', async () => {
    const tried: string[] = [];
    for (const each of declared.filter((route) => route.auth === 'admin')) {
      const channels = each.path.includes('/channels/:id/') ? allVendorChannels.map((c) => c.id) : [''];
      for (const channelId of channels) {
        const path = fill(each.path, channelId);
        for (const headers of [
          {},
          { authorization: 'Bearer wrong-token-0000000000000' },
          { authorization: `Basic ${Buffer.from(`admin:${bridge.adminToken}`).toString('base64')}` },
          { authorization: `Bearer${bridge.adminToken}` },
        ] as Array<Record<string, string>>) {
          const sends = each.method === 'POST' || each.method === 'PUT';
          const answer = await rawRequest(bridge.url, each.method, `${path}?limit=1`, {
            headers,
            ...(sends ? { body: '{"recordId":"r1","ttl":60}' } : {}),
          });
          expect(answer.status, `${each.method} ${path} ${JSON.stringify(headers)}`).toBe(401);
          expect(JSON.parse(answer.text).error.code).toBe('unauthorized');
          expect(answer.headers['www-authenticate']).toBe('Bearer');
        }
        tried.push(`${each.method} ${path}`);
      }
    }
    // The channels' own routes are in the walk too, once per channel that has them.
    expect(tried).toEqual(
      expect.arrayContaining([
        'GET /api/v1/contacts',
        'POST /api/v1/deliveries/dlv_x/replay',
        'POST /api/v1/channels/app/keys',
        'POST /api/v1/channels/cobrowse/agent-sync',
      ]),
    );
    // With the token the same requests get past the gate (not 401).
    const open = await bridge.admin('GET', '/api/v1/channels');
    expect(open.status).toBe(200);
  }, 60_000);

  it('answers 401 to /metrics on the main port without metrics.token, and to the admin token', async () => {
    const metricsRoute = declared.find((each) => each.path === '/metrics');
    expect(metricsRoute?.auth).toBe('metrics');
    for (const headers of [{}, { authorization: `Bearer ${bridge.adminToken}` }] as Array<
      Record<string, string>
    >) {
      expect((await rawRequest(bridge.url, 'GET', '/metrics', { headers })).status).toBe(401);
    }
    const right = await rawRequest(bridge.url, 'GET', '/metrics', {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(right.status).toBe(200);
  });
});
