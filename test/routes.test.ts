import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { Validator } from '@seriousme/openapi-schema-validator';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBridge } from '../src/bridge.js';
import { parseConfig } from '../src/config/load.js';
import { routesOf } from '../src/http/app.js';
import { isAdminPath, normalisedSegments, redactPath } from '../src/http/guard.js';
import { openApiPath } from '../src/http/openapi.js';
import { createLogger } from '../src/logger.js';
import { defaultRegistry } from '../src/registry.js';
import { ADMIN, allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Issue 12 item 3: one route model. The OpenAPI document is generated from the same
 * declarations the routers mount, so every served route is described and every described route
 * is served; and the document is a valid OpenAPI 3.1 document.
 */
const SECRET_CHANNEL = 'zz-secret-channel-id';
const FAST_FAIL = 'chatvisor-down';

describe('the route model and its OpenAPI document', () => {
  let bridge: TestBridge;
  let document: any;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: [
          ...allVendorChannels,
          { id: SECRET_CHANNEL, vendor: 'jivochat', token: 'jivo-token-000000000002' },
          // Chatvisor at a closed port without retries: its routes answer 502 at once.
          {
            ...allVendorChannels.find((each) => each.vendor === 'chatvisor')!,
            id: FAST_FAIL,
            // Its own token: one token for two channels is a config problem.
            token: 'chatvisor-fast-fail-token-01',
            maxRetries: 0,
          },
        ],
      },
    });
    const response = await fetch(`${bridge.url}/api/v1/openapi.json`);
    expect(response.status).toBe(200);
    document = await response.json();
    // For the Redocly lint in the README: OPENAPI_OUT=file npx vitest run test/routes.test.ts
    if (process.env.OPENAPI_OUT) writeFileSync(process.env.OPENAPI_OUT, JSON.stringify(document, null, 2));
  });
  afterAll(() => bridge.close());

  it('describes exactly the routes the app serves (both directions)', () => {
    const routes = routesOf(bridge.bridge.app)!;
    const mounted = new Set(
      routes.mounted().map((route) => `${route.method.toLowerCase()} ${openApiPath(route.path)}`),
    );
    const described = new Set(
      Object.entries(document.paths as Record<string, Record<string, unknown>>).flatMap(([path, item]) =>
        Object.keys(item).map((method) => `${method} ${path}`),
      ),
    );
    expect([...mounted].filter((route) => !described.has(route))).toEqual([]);
    expect([...described].filter((route) => !mounted.has(route))).toEqual([]);
    // Sanity: the walk covered every family of routes.
    expect([...described]).toEqual(
      expect.arrayContaining([
        'get /healthz',
        'get /readyz',
        'get /metrics',
        'get /api/v1/openapi.json',
        'get /api/v1/contacts',
        'post /api/v1/deliveries/{id}/replay',
        'post /api/v1/channels/{id}/keys',
        'post /api/v1/channels/{id}/agent-sync',
        'post /webhooks/jivochat/{channelId}/{token}',
        'post /webhooks/livetex/{channelId}/{token}',
        'post /webhooks/chatvisor/{channelId}/{token}',
        'post /livetex/{channelId}/attributes',
        'get /console/contacts',
        'post /console/sign-in',
      ]),
    );
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await new Validator().validate(structuredClone(document));
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(document.openapi).toBe('3.1.0');
    const ids = Object.values(document.paths as Record<string, Record<string, any>>).flatMap((item) =>
      Object.values(item).map((operation) => operation.operationId),
    );
    expect(new Set(ids).size).toBe(ids.length);
    // Every $ref points at something in the document.
    for (const [, name] of JSON.stringify(document).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)) {
      expect(document.components.schemas[name!], name).toBeDefined();
    }
  });

  it('documents inputs, answers and credentials from the declarations', () => {
    const contacts = document.paths['/api/v1/contacts'].get;
    expect(contacts.security).toEqual([{ adminToken: [] }]);
    expect(contacts.parameters.map((parameter: any) => parameter.name)).toEqual([
      'email',
      'phone',
      'identity',
    ]);
    expect(Object.keys(contacts.responses)).toEqual(['200', '400', '401', '429', '503']);
    const replay = document.paths['/api/v1/deliveries/{id}/replay'].post;
    expect(Object.keys(replay.responses)).toEqual(expect.arrayContaining(['202', '404', '409']));
    expect(replay.parameters[0].schema.pattern).toBeDefined();
    const jivo = document.paths['/webhooks/jivochat/{channelId}/{token}'].post;
    expect(jivo.requestBody.content['application/json'].schema.properties.event_name).toBeDefined();
    expect(jivo.responses['404']).toBeDefined();
    const lookup = document.paths['/livetex/{channelId}/attributes'].post;
    expect(Object.keys(lookup.requestBody.content)).toEqual(['application/jose']);
    expect(Object.keys(lookup.responses['200'].content)).toEqual(['application/jose']);
    expect(document.paths['/healthz'].get.security).toEqual([]);
    expect(document.paths['/console/contacts'].get.responses['200'].content['text/html']).toBeDefined();
  });

  it("README's Redocly result still counts what the document holds: operations without a 2xx, without a 4xx", () => {
    // Redocly's operation-2xx-response and operation-4xx-response rules warn for an operation that
    // documents no answer of that class (a 302 is not a 2xx). The README states the counts; an
    // operation added without updating them (the console's conflict merge, a 302) made it wrong.
    const METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);
    const operations = Object.values(document.paths as Record<string, Record<string, any>>).flatMap((item) =>
      Object.entries(item)
        .filter(([method]) => METHODS.has(method))
        .map(([, operation]) => Object.keys(operation.responses ?? {})),
    );
    const without2xx = operations.filter((statuses) => !statuses.some((status) => /^2/.test(status))).length;
    const without4xx = operations.filter((statuses) => !statuses.some((status) => /^4/.test(status))).length;
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const said =
      /reports \*\*0 errors and (\d+) warnings\*\*[\s\S]*?(\d+)\s+`operation-2xx-response`[\s\S]*?(\d+)\s+`operation-4xx-response`/.exec(
        readme,
      );
    expect(said, 'README "HTTP routes": the Redocly lint result').not.toBeNull();
    expect(said!.slice(1).map(Number)).toEqual([without2xx + without4xx, without2xx, without4xx]);
  });

  it('names no channel id and no secret (it is served without the token)', () => {
    const text = JSON.stringify(document);
    expect(text).not.toContain(SECRET_CHANNEL);
    expect(text).not.toContain('jivo-token-');
    expect(text).not.toContain(bridge.adminToken);
  });

  it("documents every status the routes answer (success statuses, the core's and the adapters' errors)", async () => {
    const livetex = allVendorChannels.find((channel) => channel.vendor === 'livetex')!.id;
    const chatvisor = allVendorChannels.find((channel) => channel.vendor === 'chatvisor')!.id;
    // [method, path as sent, the route's path, body (a string is sent as is), the expected status]
    const cases: Array<[string, string, string, unknown, number]> = [
      ['POST', `/api/v1/channels/${livetex}/keys`, '/api/v1/channels/{id}/keys', {}, 201],
      ['POST', `/api/v1/channels/${livetex}/keys`, '/api/v1/channels/{id}/keys', '{"ttl":60}', 400],
      [
        'POST',
        `/api/v1/channels/${livetex}/keys`,
        '/api/v1/channels/{id}/keys',
        'x'.repeat(1024 * 1024 + 1),
        413,
      ],
      ['GET', `/api/v1/channels/${livetex}/keys`, '/api/v1/channels/{id}/keys', undefined, 200],
      ['DELETE', `/api/v1/channels/${livetex}/keys/nope`, '/api/v1/channels/{id}/keys/{kid}', undefined, 404],
      ['GET', '/api/v1/channels/nope/keys', '/api/v1/channels/{id}/keys', undefined, 404],
      [
        'POST',
        `/api/v1/channels/${chatvisor}/agent-sync`,
        '/api/v1/channels/{id}/agent-sync',
        '{"x":1}',
        400,
      ],
      [
        'POST',
        `/api/v1/channels/${chatvisor}/agent-sync?dryRun=no`,
        '/api/v1/channels/{id}/agent-sync',
        undefined,
        400,
      ],
      ['GET', `/api/v1/channels/${chatvisor}/agent-sync`, '/api/v1/channels/{id}/agent-sync', undefined, 200],
      [
        'POST',
        `/api/v1/channels/${FAST_FAIL}/agent-sync`,
        '/api/v1/channels/{id}/agent-sync',
        undefined,
        502,
      ],
      ['GET', `/api/v1/channels/${FAST_FAIL}/visibility`, '/api/v1/channels/{id}/visibility', undefined, 502],
      [
        'POST',
        `/api/v1/channels/${FAST_FAIL}/agent-chat-url`,
        '/api/v1/channels/{id}/agent-chat-url',
        { customerId: 'c1' },
        502,
      ],
      [
        'POST',
        `/api/v1/channels/${chatvisor}/agent-chat-url`,
        '/api/v1/channels/{id}/agent-chat-url',
        {},
        400,
      ],
      ['GET', '/api/v1/contacts/c_nope', '/api/v1/contacts/{id}', undefined, 404],
      ['GET', '/api/v1/contacts/c_nope/timeline', '/api/v1/contacts/{id}/timeline', undefined, 404],
      ['GET', '/api/v1/contacts/c_nope/timeline?limit=0', '/api/v1/contacts/{id}/timeline', undefined, 400],
      ['POST', '/api/v1/contacts/c_nope/unmerge', '/api/v1/contacts/{id}/unmerge', { recordId: 'r' }, 404],
      ['POST', '/api/v1/contacts/c_nope/merge', '/api/v1/contacts/{id}/merge', { with: 'c_other' }, 404],
    ];
    for (const [method, sent, path, body, expected] of cases) {
      const answer = await fetch(`${bridge.url}${sent}`, {
        method,
        headers: { authorization: `Bearer ${bridge.adminToken}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      });
      await answer.arrayBuffer();
      expect(answer.status, `${method} ${sent}`).toBe(expected);
      const responses = document.paths[path][method.toLowerCase()].responses;
      expect(Object.keys(responses), `${method} ${path} documents ${expected}`).toContain(String(expected));
    }
    // A created key is 201, not 200; and what cannot be provoked here is declared all the same.
    expect(Object.keys(document.paths['/api/v1/channels/{id}/keys'].post.responses)).not.toContain('200');
    const sync = document.paths['/api/v1/channels/{id}/agent-sync'].post.responses;
    expect(sync['409'].description).toContain('agent_sync_running');
    expect(sync['429'].description).toContain('chatvisor_rate_limited');
    // Every POST or PUT channel route reads a body, so each can answer 400 and 413.
    for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, any>>)) {
      if (!path.startsWith('/api/v1/channels/{id}/')) continue;
      for (const method of ['post', 'put']) {
        if (item[method])
          expect(Object.keys(item[method].responses), `${method} ${path}`).toEqual(
            expect.arrayContaining(['400', '404', '413']),
          );
      }
    }
  });

  it('validates at the boundary once: a bad query is a 400 naming the parameter', async () => {
    const response = await bridge.admin('GET', '/api/v1/journal?limit=0');
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_query');
    expect(response.body.error.issues[0].path).toBe('limit');
    const params = await bridge.admin('GET', '/api/v1/deliveries/not-a-delivery');
    expect(params.status).toBe(400);
    expect(params.body.error.issues[0].path).toBe('id');
  });

  it('answers a known public path with a wrong method like an unknown one (no 405)', async () => {
    const wrong = await fetch(`${bridge.url}/livetex/app/attributes`);
    const unknown = await fetch(`${bridge.url}/livetex/nope/attributes`);
    expect(wrong.status).toBe(404);
    expect(await wrong.text()).toBe(await unknown.text());
    // Webhooks too: a 405 for a vendor's path would tell which vendors exist.
    const unknownVendor = await fetch(`${bridge.url}/webhooks/zzz/a/b`, { method: 'PUT' });
    expect(unknownVendor.status).toBe(404);
    const unknownText = await unknownVendor.text();
    for (const vendor of ['jivochat', 'livetex', 'chatvisor']) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const answer = await fetch(`${bridge.url}/webhooks/${vendor}/any/any`, { method });
        expect(answer.status, `${method} ${vendor}`).toBe(404);
        expect(await answer.text()).toBe(unknownText);
      }
    }
  });

  it('refuses what a route does not take: a body on a body-less route, a malformed identity query', async () => {
    const livetex = allVendorChannels.find((channel) => channel.vendor === 'livetex')!;
    for (const body of ['garbage', '{"ttl":60}', '[1]']) {
      const answer = await fetch(`${bridge.url}/api/v1/channels/${livetex.id}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${bridge.adminToken}`, 'content-type': 'application/json' },
        body,
      });
      expect(answer.status, body).toBe(400);
    }
    // Nothing, or an empty object, is no option at all: the key is made.
    const made = await bridge.admin('POST', `/api/v1/channels/${livetex.id}/keys`, {});
    expect(made.status).toBe(201);
    const identity = await bridge.admin('GET', '/api/v1/contacts?identity=visitor:nochannel');
    expect(identity.status).toBe(400);
    expect(identity.body.error).toMatchObject({ code: 'invalid_query', issues: [{ path: 'identity' }] });
  });

  it('answers a wrong method on an admin route with a JSON 405 naming the allowed ones', async () => {
    const wrong = await fetch(`${bridge.url}/api/v1/contacts/c_1/unmerge`, {
      headers: { authorization: `Bearer ${bridge.adminToken}` },
    });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toContain('POST');
    expect(wrong.headers.get('content-type')).toMatch(/application\/json/);
    expect(await wrong.json()).toMatchObject({
      error: { code: 'method_not_allowed', message: expect.stringContaining('POST') },
    });
  });
});

describe('the per-request logger (issue 12 item 4)', () => {
  it('builds no child logger for a request that logs only its access line, and still logs the request id', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(chunk.toString());
        callback();
      },
    });
    const logger = createLogger('info', sink);
    let children = 0;
    const child = logger.child.bind(logger);
    logger.child = ((...args: Parameters<typeof child>) => {
      children++;
      return child(...args);
    }) as typeof logger.child;
    const registry = defaultRegistry();
    const config = parseConfig(
      {
        admin: { token: ADMIN },
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 1000 },
        channels: [allVendorChannels[0]],
      },
      registry,
      {},
    );
    const bridge = await createBridge({ config, registry, logger });
    const server = await bridge.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const before = children;
      for (let index = 0; index < 5; index++) {
        const response = await fetch(`${url}/healthz`, { headers: { 'x-request-id': `probe-${index}` } });
        expect(response.status).toBe(200);
      }
      const answer = await fetch(`${url}/api/v1/contacts?email=a@b.c`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect(answer.status).toBe(200);
      expect(children - before).toBe(0);
      const access = lines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'request');
      expect(access.map((entry) => entry.requestId).slice(0, 5)).toEqual(
        [0, 1, 2, 3, 4].map((i) => `probe-${i}`),
      );
    } finally {
      await bridge.close();
    }
  });
});

describe('the admin-path and redaction fast paths (issue 12 item 4)', () => {
  it('agree with the normalised and the written reading on every spelling', () => {
    const pieces = ['/', '//', 'api', 'API', 'Api', 'v1', 'V1', 'webhooks', 'WebHooks', 'console', 'c', 'C'];
    const more = ['x', '.', '..', '%61', '%2561', '%2F', '\\', 'tok', 'openapi.json', 'v1x', '%'];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...pieces, ...more), { maxLength: 8 }), (parts) => {
        const path = `/${parts.join('')}`;
        const [first, second] = normalisedSegments(path);
        // Under /api/v1 as written (what the routers match) or once normalised.
        expect(isAdminPath(path)).toBe(
          (first === 'api' && second === 'v1') || /^\/api\/v1(?:\/|$)/i.test(path),
        );
        // A path that reaches /webhooks or /console/c at any point as it is read (its token may
        // be followed by `..` that climbs back out) is masked; any other stays as sent.
        const secret = parts.some((_part, index) => {
          const [head, next] = normalisedSegments(`/${parts.slice(0, index + 1).join('')}`);
          return head === 'webhooks' || (head === 'console' && next === 'c');
        });
        if (!secret) expect(redactPath(path)).toBe(path);
      }),
      { numRuns: 5000 },
    );
  });
});
