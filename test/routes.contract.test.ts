import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { createLivetexLookupClient } from '../adapters/livetex/client.js';
import { routesOf } from '../src/http/app.js';
import { errorSchema, openApiPath } from '../src/http/openapi.js';
import type { RouteAnswer } from '../src/http/routes.js';
import { allVendorChannels, rawRequest } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { type PrivateRedis, startPrivateRedis } from './support/redis.js';

/**
 * The served OpenAPI document is the contract: a real bridge on loopback (Redis, its own key
 * prefix), and for every operation of the document it serves, valid requests and the usual wrong
 * ones (no or a wrong credential, unknown, repeated and ill-typed query parameters, wrong bodies,
 * wrong content types and encodings, unknown and odd ids, wrong methods, HEAD). Every answer must
 * have a status the document lists for that operation, the Content-Type it documents for that
 * status, and a body that fits the documented schema. The document is generated from zod
 * declarations (src/http/openapi.ts), so bodies are checked with those very schemas, strictly (a
 * key the schema does not name is a mismatch, as `additionalProperties: false` in the document).
 */
const SECRET = `whsec_${Buffer.from('contract-test-secret-0123456789ab').toString('base64')}`;
const METRICS = 'contract-metrics-token-0123456789';
const BODY_LIMIT = 64 * 1024;
const fixture = (path: string) => readFileSync(new URL(`../adapters/${path}`, import.meta.url), 'utf8');
const channelOf = (vendor: string) => allVendorChannels.find((each) => each.vendor === vendor)!;

type Operation = { path: string; method: string; doc: any; answers: Record<number, RouteAnswer> };
interface Sent {
  label: string;
  op: Operation;
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: string;
}

describe('the served OpenAPI document is what the bridge answers', () => {
  let bridge: TestBridge;
  let receiver: Receiver;
  let document: any;
  let operations: Operation[];
  let contactId: string;
  let deliveryId: string;
  const problems: string[] = [];

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
    bridge = await startTestBridge({
      store: 'redis',
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, bodyLimitBytes: BODY_LIMIT },
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        // On the main port, so that the documented GET /metrics is served where the document is.
        metrics: { token: METRICS },
        // The sweep sends hundreds of wrong credentials: the 429 is its own test, not this one's.
        limits: { rate: { adminAuthFailuresPerAddress: 100_000, adminAuthFailuresCeiling: 100_000 } },
        channels: allVendorChannels,
        destinations: [{ id: 'crm', url: receiver.url, secret: SECRET, timeoutMs: 1000 }],
      },
    });
    const served = await fetch(`${bridge.url}/api/v1/openapi.json`);
    expect(served.status).toBe(200);
    document = await served.json();

    // Declarations by `METHOD /openapi/path`: their zod schemas are what the document was made of.
    const routes = routesOf(bridge.bridge.app)!;
    const declared = new Map(
      [...routes.routes, ...routes.publicRoutes, ...routes.consoleRoutes].map((each) => [
        `${each.method} ${openApiPath(each.path)}`,
        each.answers,
      ]),
    );
    operations = Object.entries(document.paths as Record<string, Record<string, any>>).flatMap(
      ([path, item]) =>
        Object.entries(item).map(([method, doc]) => ({
          path,
          method: method.toUpperCase(),
          doc,
          answers: declared.get(`${method.toUpperCase()} ${path}`) ?? {},
        })),
    );

    // Something to find: a contact (and the deliveries its events made).
    const jivo = channelOf('jivochat');
    const posted = await bridge.post(
      `/webhooks/jivochat/${jivo.id}/${jivo.token}`,
      fixture('jivochat/__fixtures__/chat_accepted.json'),
      { 'content-type': 'application/json' },
    );
    expect(posted.status).toBe(200);
    const found = await bridge.admin('GET', '/api/v1/contacts?email=s.orlova@example.org');
    contactId = found.body.contacts[0].id;
    for (let tries = 0; tries < 100 && !deliveryId; tries++) {
      const listed = await bridge.admin('GET', '/api/v1/deliveries');
      deliveryId = listed.body.deliveries?.[0]?.id;
      if (!deliveryId) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(deliveryId).toBeDefined();
  });
  afterAll(async () => {
    await bridge?.close();
    await receiver?.close();
  });

  const admin = () => ({ authorization: `Bearer ${bridge.adminToken}` });
  const credentials = (op: Operation): Record<string, string> => {
    const security = op.doc.security as Array<Record<string, unknown>>;
    if (security.some((each) => 'adminToken' in each)) return admin();
    if (security.some((each) => 'metricsToken' in each)) return { authorization: `Bearer ${METRICS}` };
    return {};
  };

  /** A valid value for each path parameter of an operation. */
  function pathFor(op: Operation, overrides: Record<string, string> = {}): string {
    return op.path.replace(/\{([A-Za-z0-9_]+)\}/g, (_match, name: string) => {
      if (name in overrides) return overrides[name]!;
      if (op.path.startsWith('/webhooks/')) {
        const channel = channelOf(op.path.split('/')[2]!);
        return name === 'token' ? channel.token : channel.id;
      }
      if (op.path.startsWith('/livetex/')) return channelOf('livetex').id;
      if (op.path.startsWith('/api/v1/channels/{id}/') && name === 'id') {
        const vendor = /of a (\w+) channel/.exec(op.doc.parameters[0].description)?.[1]?.toLowerCase();
        return channelOf(vendor!).id;
      }
      if (op.path.startsWith('/api/v1/contacts/')) return contactId;
      if (op.path.startsWith('/api/v1/deliveries/')) return deliveryId;
      return 'nope';
    });
  }

  /** A body the operation takes (vendor payloads from the adapters' fixtures). */
  function validBody(op: Operation): string | undefined {
    if (!op.doc.requestBody) return undefined;
    const path = op.path;
    if (path.startsWith('/webhooks/jivochat/')) return fixture('jivochat/__fixtures__/chat_finished.json');
    if (path.startsWith('/webhooks/livetex/')) return fixture('livetex/__fixtures__/dialog_closed.web.json');
    if (path.startsWith('/webhooks/chatvisor/'))
      return fixture('chatvisor/__fixtures__/webhook-message.json');
    if (path.endsWith('/unmerge')) return JSON.stringify({ recordId: 'r_nope' });
    if (path.endsWith('/merge')) return JSON.stringify({ with: 'c_nope' });
    if (path.endsWith('/agent-chat-url')) return JSON.stringify({ customerId: 'c1' });
    return '{}';
  }

  function contentTypeOf(op: Operation): string {
    // A POST that documents no body is sent none; here its type is "none" (not JSON).
    if (!op.doc.requestBody) return op.method === 'POST' ? 'none' : 'application/json';
    return Object.keys(op.doc.requestBody.content)[0]!;
  }

  /** Send one request and judge its answer against the document and the declaration. */
  async function check(sent: Sent): Promise<{ status: number; text: string }> {
    const answer = await rawRequest(bridge.url, sent.method, sent.url, {
      headers: sent.headers ?? {},
      ...(sent.body === undefined ? {} : { body: sent.body }),
    });
    const where = `${sent.label}: ${sent.method} ${sent.url.slice(0, 80)} → ${answer.status}`;
    const documented = sent.op.doc.responses[String(answer.status)];
    const type = String(answer.headers['content-type'] ?? '');
    if (!documented) {
      problems.push(`${where}: status not documented (${answer.text.slice(0, 120)})`);
      return { status: answer.status, text: answer.text };
    }
    const media = Object.keys(documented.content ?? {})[0];
    if (sent.method === 'HEAD') {
      if (answer.text !== '') problems.push(`${where}: HEAD with a body`);
    } else if (media && type.split(';')[0]!.trim() !== media.split(';')[0]!.trim()) {
      problems.push(`${where}: Content-Type ${type}, documented ${media}`);
    } else if (media === 'application/json') {
      const declared = sent.op.answers[answer.status];
      const schema: z.ZodType | undefined =
        declared?.schema ?? (answer.status >= 400 ? (errorSchema as z.ZodType) : undefined);
      let body: unknown;
      try {
        body = JSON.parse(answer.text);
      } catch {
        problems.push(`${where}: not JSON (${answer.text.slice(0, 120)})`);
      }
      if (schema && body !== undefined) {
        const parsed = schema.safeParse(body);
        if (!parsed.success)
          problems.push(`${where}: body does not fit: ${parsed.error.message.slice(0, 300)}`);
        // zod strips keys it does not name; the document says additionalProperties: false.
        else if (JSON.stringify(parsed.data) !== JSON.stringify(body))
          problems.push(`${where}: keys the schema does not name: ${answer.text.slice(0, 200)}`);
      }
    }
    return { status: answer.status, text: answer.text };
  }

  it('answers every request to every operation with a documented status, type and body', async () => {
    const seen = new Map<string, Set<number>>();
    const note = (op: Operation, status: number) => {
      const key = `${op.method} ${op.path}`;
      seen.set(key, (seen.get(key) ?? new Set()).add(status));
    };
    for (const op of operations) {
      const auth = credentials(op);
      const type = contentTypeOf(op);
      const body = validBody(op);
      const typed: Record<string, string> = body === undefined ? {} : { 'content-type': type };
      const base = pathFor(op);
      const withBody = (extra: Partial<Sent> = {}): Sent => ({
        label: 'valid',
        op,
        method: op.method,
        url: base,
        headers: { ...auth, ...typed },
        ...(body === undefined ? {} : { body }),
        ...extra,
      });
      const requests: Sent[] = [withBody()];
      if (op.method === 'GET') requests.push(withBody({ label: 'HEAD', method: 'HEAD' }));
      if (Object.keys(auth).length > 0) {
        requests.push(withBody({ label: 'no credential', headers: typed }));
        requests.push(
          withBody({
            label: 'wrong credential',
            headers: { authorization: 'Bearer wrong', ...typed },
          }),
        );
      }
      // Query parameters: unknown, repeated, ill-typed, empty.
      requests.push(withBody({ label: 'unknown parameter', url: `${base}?zz=1` }));
      for (const parameter of (op.doc.parameters ?? []).filter((each: any) => each.in === 'query')) {
        for (const value of ['x'.repeat(300), '-1', '1e2', '', '%E0%A4%A']) {
          requests.push(
            withBody({ label: `query ${parameter.name}`, url: `${base}?${parameter.name}=${value}` }),
          );
        }
        requests.push(
          withBody({
            label: `${parameter.name} twice`,
            url: `${base}?${parameter.name}=1&${parameter.name}=2`,
          }),
        );
      }
      // Path parameters: unknown, odd and long ids.
      for (const parameter of (op.doc.parameters ?? []).filter((each: any) => each.in === 'path')) {
        for (const value of ['nope', '%2e%2e', '..', 'a%2Fb', '%E0%A4%A', '%00', 'x'.repeat(2000)]) {
          requests.push(
            withBody({
              label: `path ${parameter.name}=${value.slice(0, 10)}`,
              url: pathFor(op, { [parameter.name]: value }),
            }),
          );
        }
      }
      // Bodies: none, not JSON, the wrong JSON, the wrong type or encoding, too large, too deep.
      if (op.doc.requestBody) {
        const headers = { ...auth, 'content-type': type };
        for (const [label, sent] of [
          ['no body', ''],
          ['not JSON', 'not json'],
          ['an array', '[]'],
          ['unknown field', '{"zz":1}'],
          ['too deep', `${'['.repeat(100)}${']'.repeat(100)}`],
          ['too large', `"${'x'.repeat(BODY_LIMIT + 10)}"`],
        ] as const) {
          requests.push(withBody({ label, headers, body: sent }));
        }
        requests.push(withBody({ label: 'gzip', headers: { ...headers, 'content-encoding': 'gzip' } }));
        requests.push(withBody({ label: 'text/plain', headers: { ...auth, 'content-type': 'text/plain' } }));
        requests.push(
          withBody({
            label: 'form',
            headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
          }),
        );
      }
      // A body where the document names none (or names a form): what comes back is documented too.
      if (op.method === 'POST' && contentTypeOf(op) !== 'application/json') {
        for (const [label, type, sent] of [
          ['JSON body', 'application/json', '{}'],
          ['a JSON option', 'application/json', '{"zz":1}'],
          ['text/plain body', 'text/plain', '{}'],
        ] as const) {
          requests.push(withBody({ label, headers: { ...auth, 'content-type': type }, body: sent }));
        }
      }
      for (const request of requests) note(op, (await check(request)).status);
    }
    expect(problems).toEqual([]);
    // The sweep reached past the gate: a success on every admin route but those that need a
    // reachable vendor (Chatvisor is at a closed port here).
    for (const op of operations.filter((each) => each.path.startsWith('/api/v1/'))) {
      const statuses = [...(seen.get(`${op.method} ${op.path}`) ?? [])];
      expect(
        statuses.some((status) => status < 300 || status === 502 || status === 404),
        `${op.method} ${op.path}`,
      ).toBe(true);
    }
  });

  it('answers a method a path does not take with the JSON error body (405 with Allow, or the one 404)', async () => {
    for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, any>>)) {
      if (path.startsWith('/console')) continue;
      const op = { path, method: 'GET', doc: Object.values(item)[0], answers: {} } as Operation;
      for (const method of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH']) {
        if (item[method.toLowerCase()]) continue;
        const answer = await rawRequest(bridge.url, method, pathFor(op), { headers: admin() });
        const where = `${method} ${path} → ${answer.status}`;
        // 400: the path is another operation's too (GET /api/v1/deliveries/replay is GET …/{id}).
        expect([400, 404, 405], where).toContain(answer.status);
        expect(answer.headers['content-type'], where).toMatch(/^application\/json/);
        expect(errorSchema.strict().safeParse(JSON.parse(answer.text)).success, where).toBe(true);
        if (answer.status === 405) expect(answer.headers.allow, where).toBeTruthy();
      }
    }
  });

  it('answers OPTIONS with 204 and the Allow a 405 carries; the one JSON 404 where a 405 would be too', async () => {
    for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, any>>)) {
      if (path.startsWith('/console')) continue;
      const op = { path, method: 'GET', doc: Object.values(item)[0], answers: {} } as Operation;
      const url = pathFor(op);
      const options = await rawRequest(bridge.url, 'OPTIONS', url, { headers: admin() });
      const where = `OPTIONS ${path} → ${options.status}`;
      const wrong = await rawRequest(bridge.url, 'PATCH', url, { headers: admin() });
      if (wrong.status === 404) {
        // A public path (a vendor webhook, the LiveTex lookup): nothing confirms that it exists.
        expect(options.status, where).toBe(404);
        expect(options.text, where).toBe(wrong.text);
        continue;
      }
      expect(wrong.status, path).toBe(405);
      expect(options.status, where).toBe(204);
      expect(options.text, where).toBe('');
      expect(options.headers['content-type'], where).toBeUndefined();
      expect(options.headers.allow, where).toBe(wrong.headers.allow);
      for (const method of Object.keys(item))
        expect(String(options.headers.allow).split(', '), where).toContain(method.toUpperCase());
    }
    // An unknown path: the JSON 404, as for any other method.
    const unknown = await rawRequest(bridge.url, 'OPTIONS', '/api/v1/nope', { headers: admin() });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.text)).toEqual({ error: { code: 'not_found', message: 'no such route' } });
    // The admin API's OPTIONS is behind the token like its other methods.
    expect((await rawRequest(bridge.url, 'OPTIONS', '/api/v1/contacts')).status).toBe(401);
  });

  it('answers unknown routes, trailing slashes and other spellings with the one JSON 404', async () => {
    for (const path of [
      '/nope',
      '/api/v1/nope',
      '/api/v1/contacts/',
      '/healthz/',
      '/readyz/',
      '/api/v1/channels/',
    ]) {
      const answer = await rawRequest(bridge.url, 'GET', path, { headers: admin() });
      expect(answer.status, path).toBe(404);
      expect(answer.headers['content-type'], path).toMatch(/^application\/json/);
      expect(JSON.parse(answer.text), path).toEqual({
        error: { code: 'not_found', message: 'no such route' },
      });
    }
  });

  it('documents each `limit` as the whole number it takes, with the bounds and default it applies', async () => {
    const paged = operations.filter((op) =>
      (op.doc.parameters ?? []).some((each: any) => each.in === 'query' && each.name === 'limit'),
    );
    expect(paged.length).toBeGreaterThanOrEqual(4);
    for (const op of paged) {
      const where = `${op.method} ${op.path}`;
      const schema = op.doc.parameters.find((each: any) => each.name === 'limit').schema;
      // A client generated from the document types it as a number and checks its bounds.
      expect(schema, where).toMatchObject({ type: 'integer', minimum: 1, maximum: expect.any(Number) });
      expect(schema.default, where).toBeGreaterThanOrEqual(schema.minimum);
      const ask = async (limit: number) =>
        (await rawRequest(bridge.url, op.method, `${pathFor(op)}?limit=${limit}`, { headers: admin() }))
          .status;
      expect(await ask(schema.maximum), `${where} at its maximum`).toBe(200);
      expect(await ask(schema.minimum), `${where} at its minimum`).toBe(200);
      expect(await ask(schema.maximum + 1), `${where} over its maximum`).toBe(400);
      expect(await ask(schema.minimum - 1), `${where} under its minimum`).toBe(400);
    }
  });

  it('documents the LiveTex lookup with its real answers (a sealed JWE in, a sealed JWE out)', async () => {
    const op = operations.find((each) => each.path === '/livetex/{channelId}/attributes')!;
    const created = await bridge.admin('POST', `/api/v1/channels/${channelOf('livetex').id}/keys`);
    expect(created.status).toBe(201);
    const answers: Array<{ status: number; type: string | null }> = [];
    const client = createLivetexLookupClient({
      url: `${bridge.url}${pathFor(op)}`,
      kid: created.body.kid,
      key: created.body.key,
      async fetch(url, init) {
        const response = await fetch(url, init);
        answers.push({ status: response.status, type: response.headers.get('content-type') });
        return response;
      },
    });
    const answer = await client.lookup({ personId: 'cust_7d41e9b2c0' });
    expect(answer.found).toBe(true);
    expect(answers[0]!.status).toBe(200);
    expect(Object.keys(op.doc.responses['200'].content)).toEqual([answers[0]!.type!.split(';')[0]]);
    // A key that is not known: 401, documented, as the JSON error.
    const stranger = createLivetexLookupClient({
      url: `${bridge.url}${pathFor(op)}`,
      kid: 'k_unknown',
      key: created.body.key,
    });
    await expect(stranger.lookup({ personId: 'cust_7d41e9b2c0' })).rejects.toMatchObject({ status: 401 });
    expect(op.doc.responses['401']).toBeDefined();
  });
});

describe('the served document while Redis is down', () => {
  let redis: PrivateRedis;
  let bridge: TestBridge;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    bridge = await startTestBridge({
      config: {
        store: { redis: redis.url },
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        channels: allVendorChannels,
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await redis?.stop();
  });

  it('documents the 503 of every route that needs the store (an integrator retries it, not a 4xx)', async () => {
    const document = (await (await fetch(`${bridge.url}/api/v1/openapi.json`)).json()) as any;
    await redis.stop();
    const problems: string[] = [];
    const admin = { authorization: `Bearer ${bridge.adminToken}`, 'content-type': 'application/json' };
    const jivo = channelOf('jivochat');
    const requests: Array<[string, string, string, Record<string, string>, string?]> = [
      ['GET', '/api/v1/contacts?email=a@example.org', '/api/v1/contacts', admin],
      ['GET', '/api/v1/contacts/c_1', '/api/v1/contacts/{id}', admin],
      ['GET', '/api/v1/contacts/c_1/timeline', '/api/v1/contacts/{id}/timeline', admin],
      ['POST', '/api/v1/contacts/c_1/unmerge', '/api/v1/contacts/{id}/unmerge', admin, '{"recordId":"r"}'],
      ['POST', '/api/v1/contacts/c_1/merge', '/api/v1/contacts/{id}/merge', admin, '{"with":"c_2"}'],
      ['GET', '/api/v1/identity/conflicts', '/api/v1/identity/conflicts', admin],
      ['GET', '/api/v1/journal', '/api/v1/journal', admin],
      ['GET', '/api/v1/deliveries', '/api/v1/deliveries', admin],
      ['GET', '/api/v1/deliveries/dlv_1', '/api/v1/deliveries/{id}', admin],
      ['POST', '/api/v1/deliveries/dlv_1/replay', '/api/v1/deliveries/{id}/replay', admin],
      ['GET', '/api/v1/channels/app/keys', '/api/v1/channels/{id}/keys', admin],
      ['POST', '/api/v1/channels/app/keys', '/api/v1/channels/{id}/keys', admin, '{}'],
      ['DELETE', '/api/v1/channels/app/keys/k_1', '/api/v1/channels/{id}/keys/{kid}', admin],
      ['GET', '/api/v1/channels/cobrowse/agent-sync', '/api/v1/channels/{id}/agent-sync', admin],
      [
        'GET',
        '/api/v1/channels/cobrowse/conversation-poll',
        '/api/v1/channels/{id}/conversation-poll',
        admin,
      ],
      ['GET', '/readyz', '/readyz', {}],
      [
        'POST',
        `/webhooks/jivochat/${jivo.id}/${jivo.token}`,
        '/webhooks/jivochat/{channelId}/{token}',
        { 'content-type': 'application/json' },
        fixture('jivochat/__fixtures__/chat_accepted.json'),
      ],
      [
        'POST',
        '/livetex/app/attributes',
        '/livetex/{channelId}/attributes',
        { 'content-type': 'application/jose' },
        'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoia18xIn0..aaaa.bbbb.cccc',
      ],
    ];
    for (const [method, sent, path, headers, body] of requests) {
      const answer = await rawRequest(bridge.url, method, sent, { headers, ...(body ? { body } : {}) });
      const where = `${method} ${sent} → ${answer.status}`;
      const operation = document.paths[path]?.[method.toLowerCase()];
      if (!operation) problems.push(`${where}: no such operation in the document`);
      else if (!operation.responses[String(answer.status)]) problems.push(`${where}: status not documented`);
      if (answer.status >= 400 && !errorSchema.strict().safeParse(JSON.parse(answer.text)).success)
        problems.push(`${where}: not the error body: ${answer.text.slice(0, 200)}`);
    }
    expect(problems).toEqual([]);
  });
});

describe('the served document and the limits on failed authentications', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        metrics: { token: METRICS },
        limits: { rate: { adminAuthFailuresPerAddress: 2, adminAuthFailuresCeiling: 100 } },
      },
    });
  });
  afterAll(() => bridge?.close());

  it('answers 429 with Retry-After and the error body, documented for the operation', async () => {
    const document = (await (await fetch(`${bridge.url}/api/v1/openapi.json`)).json()) as any;
    for (const [path, headers] of [
      ['/api/v1/contacts', { authorization: 'Bearer wrong' }],
      ['/metrics', { authorization: 'Bearer wrong' }],
    ] as const) {
      let answer = await rawRequest(bridge.url, 'GET', path, { headers });
      for (let tries = 0; tries < 5 && answer.status !== 429; tries++)
        answer = await rawRequest(bridge.url, 'GET', path, { headers });
      expect(answer.status, path).toBe(429);
      expect(document.paths[path].get.responses['429'], path).toBeDefined();
      expect(answer.headers['retry-after'], path).toMatch(/^[0-9]+$/);
      // …and the document says so, for a client that should wait rather than guess.
      expect(document.paths[path].get.responses['429'].headers?.['Retry-After'], path).toBeDefined();
      expect(answer.headers['content-type'], path).toMatch(/^application\/json/);
      expect(errorSchema.strict().parse(JSON.parse(answer.text)).error.code, path).toBe('rate_limited');
    }
  });
});
