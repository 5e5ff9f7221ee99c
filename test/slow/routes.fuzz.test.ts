import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { createLivetexLookupClient } from '../../adapters/livetex/client.js';
import { errorSchema } from '../../src/http/openapi.js';
import { consoleRequest, cookieOf, fieldOf, signIn } from '../support/console.js';
import { amoWorld, type CrmWorld } from '../support/crm-worlds.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Every route of the bridge under hostile requests, over real HTTP to a real bridge on Redis (its
 * own key prefix), with a fake amoCRM as the destination and a fake Chatvisor behind its channel.
 * What vendors put inside their payloads is test/slow/intake.fuzz.test.ts's and hostile.test.ts's;
 * here the vendor routes get the same treatment as every other route.
 *
 * The walk is driven by the OpenAPI document the bridge serves: for each operation in it (admin
 * API, channel routes, deliveries, console pages and forms, vendor webhooks, the LiveTex lookup,
 * metrics, health), a valid request is built (admin or metrics token, console session and CSRF
 * token, a body the route takes, a freshly sealed lookup) and then spoilt in one to three ways at
 * once: path parameters (encoded slashes, NUL, overlong, bad UTF-8, dot segments, prototype
 * names), the request target (absolute form, `*`, doubled slashes, case, raw bytes), query
 * strings (repeated and array keys, `__proto__`, bad escapes, near-valid cursors), headers (huge,
 * many, wrong Content-Type and encodings, odd credentials and cookies, no Host, Expect, chunked),
 * bodies (none, not JSON, deep, huge arrays, prototype keys, bad UTF-8, lone surrogates, over the
 * limit; or one field of the valid body), the HTTP version and the method. Each request is
 * written byte by byte on a socket of its own: no client normalises the path or the headers.
 *
 * What must hold, for every answer: no 5xx (the store is up, the fake CRM and vendor answer); a
 * 4xx is the JSON error body (`{"error": {"code", "message"}}`), or the console's HTML error page
 * for a /console path (what is refused before any route, a missing Host say, is JSON there too);
 * the bridge answers at all. Every 15 requests and after each operation's runs, ordinary requests
 * (health, readiness, a contact, a console page, a webhook) still get their ordinary answers; a
 * vendor payload refused with a 4xx is in the journal; at the end every GET answers as it did
 * before the walk.
 *
 * Seeded (a fixed seed by default, FUZZ_SEED to change it; FUZZ_RUNS runs per operation): a
 * failure names the operation and prints the command that replays it (FUZZ_SEED, FUZZ_OP,
 * FUZZ_PATH), the request as sent, and fast-check's shrunk counterexample.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261204);
const RUNS = Number(process.env.FUZZ_RUNS ?? 80);
const PATH = process.env.FUZZ_PATH;
const BODY_LIMIT = 64 * 1024;
const METRICS_TOKEN = 'fuzz-metrics-token-0123456789';
const PUBLIC_URL = 'http://bridge.fuzz.test';
const CHANNELS = {
  site: {
    id: 'site',
    vendor: 'jivochat',
    token: 'fuzz-jivo-token-0000000001',
    reply: { crmLink: '{consoleUrl}' },
  },
  app: { id: 'app', vendor: 'livetex', token: 'fuzz-livetex-token-000001' },
};
const fixture = (path: string) => readFileSync(new URL(`../../adapters/${path}`, import.meta.url), 'utf8');

// --- raw HTTP over a socket -----------------------------------------------------------------

interface RawRequest {
  method: string;
  /** The request target as written: latin1, so a raw 0xFF byte can be sent. */
  target: string;
  /** Header lines in order; names may repeat. */
  headers: Array<[string, string]>;
  /** Content-Length is written from the body unless a header gives one (or Transfer-Encoding). */
  body: Buffer;
  /** HTTP/1.1 unless spoilt. */
  version?: string;
}

/** The Host header's value in a request: the bridge's own address, filled in when sent. */
const HOST = '(the bridge)';

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

function dechunk(data: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const line = data.indexOf('\r\n', at);
    if (line === -1) break;
    const size = Number.parseInt(data.subarray(at, line).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    out.push(data.subarray(line + 2, line + 2 + size));
    at = line + 2 + size + 2;
  }
  return Buffer.concat(out);
}

/** One request on its own connection (Connection: close); the answer, or why there was none. */
function send(port: number, request: RawRequest, timeoutMs = 15_000): Promise<RawAnswer | string> {
  const names = new Set(request.headers.map(([name]) => name.toLowerCase()));
  const lines = [`${request.method} ${request.target} ${request.version ?? 'HTTP/1.1'}`];
  for (const [name, value] of request.headers)
    lines.push(`${name}: ${value === HOST ? `127.0.0.1:${port}` : value}`);
  if (!names.has('content-length') && !names.has('transfer-encoding') && request.body.length > 0)
    lines.push(`Content-Length: ${request.body.length}`);
  lines.push('Connection: close', '', '');
  const head = Buffer.from(lines.join('\r\n'), 'latin1');
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      let data = Buffer.concat(chunks);
      // Interim answers (100 Continue to an Expect) come before the answer.
      while (/^HTTP\/1\.1 1\d\d /.test(data.subarray(0, 13).toString('latin1')) && data.includes('\r\n\r\n'))
        data = data.subarray(data.indexOf('\r\n\r\n') + 4);
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) {
        resolve(`no answer (${data.length} bytes: ${JSON.stringify(data.toString('latin1').slice(0, 80))})`);
        return;
      }
      const [statusLine = '', ...headerLines] = data.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
      let body: Buffer = data.subarray(end + 4);
      if (headers['transfer-encoding']?.includes('chunked')) body = dechunk(body);
      else if (headers['content-length'] !== undefined)
        body = body.subarray(0, Number(headers['content-length']));
      resolve({ status, headers, body });
    };
    const timer = setTimeout(() => {
      chunks.push(Buffer.from('(timed out)'));
      finish();
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', finish);
    socket.on('close', finish);
    // A refused body (413) closes the connection while it is still being written: the answer
    // came before; EPIPE or ECONNRESET on the write says nothing more.
    socket.on('error', () => {});
    // A body sent with Transfer-Encoding: chunked is framed so (as one chunk and the last one):
    // without the last chunk the bridge would rightly wait for the rest of the body.
    const chunked = request.headers.some(
      ([name, value]) => name.toLowerCase() === 'transfer-encoding' && /chunked/i.test(value),
    );
    socket.on('connect', () => {
      socket.write(head);
      if (chunked) {
        if (request.body.length > 0) socket.write(`${request.body.length.toString(16)}\r\n`);
        if (request.body.length > 0) socket.write(Buffer.concat([request.body, Buffer.from('\r\n')]));
        socket.write('0\r\n\r\n');
      } else if (request.body.length > 0) socket.write(request.body);
    });
  });
}

// --- the operations of the document -----------------------------------------------------------

interface Operation {
  method: string;
  /** OpenAPI path, `{param}` placeholders. */
  path: string;
  doc: {
    parameters?: Array<{ in: string; name: string }>;
    requestBody?: { content: Record<string, unknown> };
    security?: Array<Record<string, unknown>>;
    responses: Record<string, unknown>;
  };
}

/** What a valid request of an operation is built from (filled in beforeAll). */
interface World {
  port: number;
  adminToken: string;
  contactIds: string[];
  canaryContact: string;
  deliveryId: string;
  /** Keys of the LiveTex channel: one for the API to revoke, one for the console's, one for lookups. */
  kid: string;
  consoleKid: string;
  agentLinkToken: string;
  session: { cookie: string; csrf: string };
  /** A session the sign-out route may end (it does, once; after that it has none to end). */
  spareSession: { cookie: string; csrf: string };
  pre: { cookie: string; value: string };
  lookupBody: string;
  recordId: string;
  consoleRecordId: string;
}

const isConsole = (op: Operation) => op.path === '/console' || op.path.startsWith('/console/');
const needs = (op: Operation, scheme: string) => (op.doc.security ?? []).some((each) => scheme in each);
const pathParams = (op: Operation) => (op.doc.parameters ?? []).filter((each) => each.in === 'path');
const queryParams = (op: Operation) => (op.doc.parameters ?? []).filter((each) => each.in === 'query');

function validParam(world: World, op: Operation, name: string): string {
  const { path } = op;
  if (path.startsWith('/webhooks/')) {
    const channel =
      path.split('/')[2] === 'jivochat'
        ? CHANNELS.site
        : path.split('/')[2] === 'livetex'
          ? CHANNELS.app
          : { id: 'cobrowse', token: 'fuzz-chatvisor-token-00001' };
    return name === 'token' ? channel.token : channel.id;
  }
  if (path.startsWith('/livetex/')) return 'app';
  if (path.includes('/channels/{id}')) {
    if (name === 'kid') return path.startsWith('/console/') ? world.consoleKid : world.kid;
    if (/keys/.test(path)) return 'app';
    return 'cobrowse';
  }
  if (path === '/console/contacts/{id}/unmerge') return world.contactIds[5]!;
  if (path.includes('/contacts/{id}')) return world.contactIds[1]!;
  if (path.includes('/deliveries/{id}')) return world.deliveryId;
  if (path === '/console/assets/{name}') return 'console.css';
  if (path === '/console/c/{token}') return world.agentLinkToken;
  return 'nope';
}

function validQuery(op: Operation): string {
  switch (op.path) {
    case '/api/v1/contacts':
      return '?email=s.orlova@example.org';
    case '/api/v1/channels/{id}/agent-sync':
      return op.method === 'POST' ? '?dryRun=true' : '';
    case '/api/v1/deliveries/replay':
      return '?destination=crm';
    default:
      return '';
  }
}

/** A valid body and its type, or none. */
function validBody(world: World, op: Operation): { type: string; text: string } | undefined {
  const { path } = op;
  const form = (fields: Record<string, string>) => ({
    type: 'application/x-www-form-urlencoded',
    text: new URLSearchParams(fields).toString(),
  });
  if (isConsole(op) && op.method === 'POST') {
    if (path === '/console/sign-in')
      return form({ _pre: world.pre.value, next: '/console/contacts', token: world.adminToken });
    const csrf = path === '/console/sign-out' ? world.spareSession.csrf : world.session.csrf;
    if (path.endsWith('/unmerge')) return form({ _csrf: csrf, recordId: world.consoleRecordId });
    if (path === '/console/conflicts/merge')
      return form({ _csrf: csrf, id: world.contactIds[2]!, with: world.contactIds[3]! });
    if (path === '/console/deliveries/replay') return form({ _csrf: csrf, destination: 'crm' });
    if (path.endsWith('/agent-sync')) return form({ _csrf: csrf, dryRun: 'true' });
    return form({ _csrf: csrf });
  }
  if (path.startsWith('/webhooks/jivochat/'))
    return { type: 'application/json', text: fixture('jivochat/__fixtures__/chat_finished.json') };
  if (path.startsWith('/webhooks/livetex/'))
    return { type: 'application/json', text: fixture('livetex/__fixtures__/dialog_closed.web.json') };
  if (path.startsWith('/webhooks/chatvisor/'))
    return { type: 'application/json', text: fixture('chatvisor/__fixtures__/webhook-message.json') };
  if (path.startsWith('/livetex/')) return { type: 'application/jose', text: world.lookupBody };
  if (path.endsWith('/unmerge'))
    return { type: 'application/json', text: JSON.stringify({ recordId: world.recordId }) };
  if (path.endsWith('/merge'))
    return { type: 'application/json', text: JSON.stringify({ with: world.contactIds[3] }) };
  if (path.endsWith('/agent-chat-url'))
    return { type: 'application/json', text: JSON.stringify({ customerId: 'cust-1' }) };
  return undefined;
}

function baseline(world: World, op: Operation, params: Record<string, string> = {}): RawRequest {
  const target =
    op.path.replace(/\{([A-Za-z0-9_]+)\}/g, (_match, name: string) =>
      name in params ? params[name]! : encodeURIComponent(validParam(world, op, name)),
    ) + validQuery(op);
  const headers: Array<[string, string]> = [['Host', HOST]];
  if (needs(op, 'adminToken')) headers.push(['Authorization', `Bearer ${world.adminToken}`]);
  if (needs(op, 'metricsToken')) headers.push(['Authorization', `Bearer ${METRICS_TOKEN}`]);
  if (op.path === '/console/sign-in' && op.method === 'POST') headers.push(['Cookie', world.pre.cookie]);
  else if (op.path === '/console/sign-out') headers.push(['Cookie', world.spareSession.cookie]);
  else if (needs(op, 'consoleSession')) headers.push(['Cookie', world.session.cookie]);
  const body = validBody(world, op);
  if (body) headers.push(['Content-Type', body.type]);
  return { method: op.method, target, headers, body: Buffer.from(body?.text ?? '', 'utf8') };
}

// --- spoiling a valid request -------------------------------------------------------------------

type Mutation =
  | { kind: 'param'; name: string; value: string }
  | { kind: 'query'; text: string }
  | { kind: 'header'; name: string; value: string; replace: boolean; repeat?: number }
  | { kind: 'drop-header'; name: string }
  | { kind: 'body'; body: Buffer; type?: string }
  | { kind: 'method'; method: string }
  /** The request target rewritten (absolute form, `*`, doubled slashes, dot segments, case). */
  | { kind: 'target'; rewrite: string }
  | { kind: 'version'; version: string }
  /** One field of the valid body (a JSON key or a form field) set to a hostile value; the rest kept. */
  | { kind: 'field'; name: string; value: unknown };

const PATH_VALUES = [
  'nope',
  '%2F',
  'a%2Fb',
  '%2f..%2f..%2fetc%2fpasswd',
  '..',
  '.',
  '%2e%2e',
  '%2E',
  '%00',
  'a%00b',
  '%0A',
  '%0D%0A',
  '%',
  '%%',
  '%zz',
  '%C0%AF',
  '%C0%AE%C0%AE',
  '%FF',
  '%FF%FE',
  '%E0%A4%A',
  '%ED%A0%80',
  '%F4%90%80%80',
  '%E2%80%AE',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  '%5F%5Fproto%5F%5F',
  '%3Cscript%3E',
  '%22%3E%3Cimg%20src%3Dx%3E',
  ';',
  '~',
  '*',
  '%20',
  '+',
  '-1',
  '0',
  'null',
  'undefined',
  'NaN',
  '1e400',
  'c_',
  'c_0000',
  'dlv_',
  'k_',
  '\u00ff', // a raw 0xFF byte in the target (latin1)
  '\u00c3\u00a9',
];

const pathValue = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...PATH_VALUES) },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 12_000 }).map((n) => 'x'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 20, max: 3000 }).map((n) => '%FF'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 20, max: 2000 }).map((n) => '%2F'.repeat(n)) },
  {
    weight: 1,
    arbitrary: fc
      .string({ unit: 'binary', minLength: 1, maxLength: 40 })
      .map((text) => encodeURIComponent(text).replace(/%25/g, '%')),
  },
);

const PROTO_QUERIES = [
  '__proto__=x',
  '__proto__[x]=1',
  '__proto__.x=1',
  'constructor=x',
  'constructor[prototype][x]=1',
  'prototype=1',
  'toString=1',
  'hasOwnProperty=1',
  'valueOf=1',
  '__defineGetter__=1',
];

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
/** `before` values that pass a cursor's shape but name no place, or almost pass it. */
const CURSORS = [
  '9999999999999999',
  '9007199254740993',
  '0',
  'L0',
  'L999999999',
  'L-1',
  '999999.AAAAAAAAAAAAAAAA',
  '0.AAAAAAAAAAAAAAAA',
  b64('9999-99-99T99:99:99.999Z|x'),
  b64('0000-00-00T00:00:00.000Z|__proto__'),
  b64('2026-12-04T00:00:00.000Z|'),
  b64('failed|1e400|dlv_x'),
  b64('failed|9999999999999999|dlv_00000000000000000000000000'),
  b64('pending|-0|dlv_'),
  b64('delivered|1|__proto__'),
  b64('|||'),
];
/** The console's own parameters (its pages are documented without them). */
const CONSOLE_QUERY = [
  'q',
  'before',
  'channel',
  'type',
  'notice',
  'split',
  'state',
  'destination',
  'kind',
  'next',
  'replayed',
];
const CONSOLE_VALUES = [
  'unmerged',
  'merged',
  'replayed',
  'signed-out',
  'all',
  'open',
  'failed',
  'rejected',
  'conversation.finished',
  'site',
  'crm',
  '//evil.example',
  '/\\evil.example',
  '/console/../api/v1/contacts',
  'javascript:alert(1)',
  'person:__proto__',
  'c_0000',
  '+7 916 000 00 01',
  '+7 (916) 000–00–01 доб. 12',
  'fuzz.visitor1@example.org',
  'Visitor <b>1</b>',
  '%25',
  '%2525',
  '.*',
  '(a+)+$',
];

function queryArb(op: Operation): fc.Arbitrary<string> {
  const names = [...queryParams(op).map((each) => each.name), ...(isConsole(op) ? CONSOLE_QUERY : [])];
  const name = names.length > 0 ? fc.constantFrom(...names, 'zz') : fc.constant('zz');
  const value = fc.oneof(
    fc.constantFrom('', '1', '-1', '0', '1e2', '0x10', ' 5', 'true', 'all', 'open', 'failed', 'crm', 'site'),
    fc.constantFrom(...CURSORS, ...CONSOLE_VALUES).map(encodeURIComponent),
    fc.constantFrom('%00', '%FF', '%', '%zz', '%E0%A4%A', '%C0%AF', '%2F', '..', '__proto__', '%3Cb%3E'),
    fc.integer({ min: 100, max: 20_000 }).map((n) => 'q'.repeat(n)),
    fc.string({ unit: 'binary', maxLength: 30 }).map(encodeURIComponent),
  );
  return fc.oneof(
    fc.tuple(name, value).map(([key, text]) => `${key}=${text}`),
    fc.tuple(name, value, value).map(([key, a, b]) => `${key}=${a}&${key}=${b}`),
    fc.tuple(name, value).map(([key, text]) => `${key}[]=${text}&${key}[]=${text}`),
    fc.tuple(name, value).map(([key, text]) => `${key}[x]=${text}`),
    fc.constantFrom(...PROTO_QUERIES),
    fc.constantFrom('', '&', '&&&', '=', '==', '=x', '?', '#x', 'a', 'a&a&a', '%3D=%26'),
    fc
      .integer({ min: 50, max: 1500 })
      .map((n) => Array.from({ length: n }, (_, i) => `k${i}=${i}`).join('&')),
    name.map((key) => Array.from({ length: 300 }, () => `${key}=1`).join('&')),
  );
}

const CONTENT_TYPES = [
  '',
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'application/json;;;',
  'application/json; charset',
  'application/json; charset="UTF-8"',
  'APPLICATION/JSON',
  'application/json, text/plain',
  'application/jsonx',
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=koi8-r',
  'multipart/form-data; boundary=x',
  'text/plain',
  'text/html',
  'application/jose',
  'application/xml',
  '*/*',
  ';',
  '\u00ff\u00fe',
  'application/json; charset=utf-8'.repeat(200),
];

const headerArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc
    .constantFrom(...CONTENT_TYPES)
    .map((value) => ({ kind: 'header' as const, name: 'Content-Type', value, replace: true })),
  fc
    .constantFrom('gzip', 'br', 'deflate', 'identity', 'gzip, identity', 'x-nope', '', 'IDENTITY')
    .map((value) => ({ kind: 'header' as const, name: 'Content-Encoding', value, replace: true })),
  fc
    .constantFrom(
      'Bearer',
      'Bearer ',
      'Bearer  ',
      'bearer x',
      'Basic YWRtaW46YWRtaW4=',
      `Bearer ${'t'.repeat(8000)}`,
      'Bearer \u00ff\u00fe',
      'Bearer %00',
      'Bearer __proto__',
      'Token x',
    )
    .map((value) => ({ kind: 'header' as const, name: 'Authorization', value, replace: true })),
  fc
    .constantFrom(
      'chatbridge_console=',
      'chatbridge_console=..%2F..',
      'chatbridge_console=__proto__',
      'chatbridge_console=%',
      'chatbridge_console=%FF',
      'chatbridge_console="x',
      'chatbridge_console_pre=x; chatbridge_console=y; chatbridge_console=z',
      `chatbridge_console=${'c'.repeat(6000)}`,
      '=; ;;; =x',
      '__proto__=x; constructor=y',
    )
    .map((value) => ({ kind: 'header' as const, name: 'Cookie', value, replace: false })),
  fc
    .constantFrom('x'.repeat(200), '../../etc', '\u00ff', 'ok-id', '__proto__', '')
    .map((value) => ({ kind: 'header' as const, name: 'X-Request-Id', value, replace: true })),
  fc
    .constantFrom('1.2.3.4, ::1', 'unknown', '', '\u00ff', 'x'.repeat(3000), '999.999.999.999')
    .map((value) => ({ kind: 'header' as const, name: 'X-Forwarded-For', value, replace: true })),
  fc
    .constantFrom('https', 'gopher', '', 'https, http')
    .map((value) => ({ kind: 'header' as const, name: 'X-Forwarded-Proto', value, replace: true })),
  fc
    .constantFrom('null', 'http://evil.example', '', '\u00ff')
    .map((value) => ({ kind: 'header' as const, name: 'Origin', value, replace: true })),
  fc
    .constantFrom('bytes=0-1', 'bytes=-1', 'bytes=x', 'bytes=0-1,2-3')
    .map((value) => ({ kind: 'header' as const, name: 'Range', value, replace: true })),
  fc
    .constantFrom('100-continue', 'nope')
    .map((value) => ({ kind: 'header' as const, name: 'Expect', value, replace: true })),
  fc
    .constantFrom('websocket', 'h2c')
    .map((value) => ({ kind: 'header' as const, name: 'Upgrade', value, replace: true })),
  fc
    .constantFrom('*/*', 'text/html', 'application/xml', '', 'x'.repeat(4000))
    .map((value) => ({ kind: 'header' as const, name: 'Accept', value, replace: true })),
  fc
    .constantFrom('chunked', 'gzip, chunked', 'identity', 'chunked, chunked')
    .map((value) => ({ kind: 'header' as const, name: 'Transfer-Encoding', value, replace: true })),
  fc
    // Not one larger than the body (but under the limit): the bridge would rightly wait for the rest.
    .constantFrom('0', '-1', '99999999999', 'abc', '1, 2', '', '0x10', '+0')
    .map((value) => ({ kind: 'header' as const, name: 'Content-Length', value, replace: true })),
  // Headers past Node's limit (16 KiB in all) and many headers.
  fc
    .integer({ min: 8_000, max: 40_000 })
    .map((n) => ({ kind: 'header' as const, name: 'X-Huge', value: 'h'.repeat(n), replace: false })),
  fc
    .integer({ min: 100, max: 400 })
    .map((n) => ({ kind: 'header' as const, name: 'X-Many', value: 'v', replace: false, repeat: n })),
  fc.constantFrom('Authorization', 'Cookie', 'Content-Type', 'Host').map((name) => ({
    kind: 'drop-header' as const,
    name,
  })),
);

const deep = (n: number, open: string, close: string) => `${open.repeat(n)}${close.repeat(n)}`;

/** A body mutation, shown in fast-check's counterexample by its size and first bytes (not whole). */
function bodyMutation(body: Buffer): Mutation {
  return {
    kind: 'body',
    body,
    [fc.toStringMethod]: () =>
      `body(${body.length} bytes: ${JSON.stringify(body.subarray(0, 60).toString('latin1'))})`,
  } as Mutation;
}

function bodyArb(op: Operation): fc.Arbitrary<Mutation> {
  const json = (text: string) => bodyMutation(Buffer.from(text, 'utf8'));
  const texts = [
    '',
    ' ',
    'not json',
    '[]',
    'null',
    '0',
    '"x"',
    'true',
    '{}',
    '{"zz":1}',
    '{"__proto__":{"isAdmin":true}}',
    '{"constructor":{"prototype":{"x":1}}}',
    '{"recordId":{"__proto__":1}}',
    '{"with":["c_1"]}',
    '{"with":"__proto__"}',
    '{"with":"constructor"}',
    '{"recordId":"__proto__"}',
    '{"identifier":{"kind":"__proto__","value":"x"}}',
    '{"identifier":{"kind":"email","value":"a@b.c","channelId":"__proto__"}}',
    '{"customerId":"__proto__"}',
    '{"customerId":"../../x"}',
    '{"customerId":"%2F"}',
    '{"with":1e400}',
    '{"with":"x","with":"y"}',
    '{"with":"\\ud800"}',
    '{"with":"a\\u0000b"}',
    '{}garbage',
    '{"a":1}{"b":2}',
    '_csrf=x',
    '_csrf[]=x&_csrf[]=y',
    '_csrf=&_csrf=',
    '__proto__[x]=1&constructor=y',
    'token=%FF&_pre=%',
    'recordId=%00&id=__proto__&with=constructor',
    'destination=__proto__',
    'dryRun=%FF',
  ];
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...texts).map(json) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 65, max: 20_000 }).map((n) => json(deep(n, '[', ']'))),
    },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 65, max: 5_000 })
        .map((n) => json(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`)),
    },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 1_000, max: 30_000 })
        .map((n) => json(`[${Array(n).fill('1').join(',')}]`)),
    },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 100, max: 4_000 })
        .map((n) => json(`{${Array.from({ length: n }, (_, i) => `"k${i}":${i}`).join(',')}}`)),
    },
    {
      weight: 1,
      arbitrary: fc.integer({ min: BODY_LIMIT + 1, max: BODY_LIMIT + 2048 }).map((n) => json('x'.repeat(n))),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(
          Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]),
          Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
          Buffer.from('{"with":"\xff\xfe"}', 'latin1'),
          Buffer.from('_csrf=\xff\xfe&x=\xc0\xaf', 'latin1'),
          Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00]),
          Buffer.alloc(2000, 0),
        )
        .map(bodyMutation),
    },
    {
      weight: 1,
      // The operation's own valid body with hostile keys spliced in.
      arbitrary: fc
        .constantFrom('__proto__', 'constructor', 'prototype', 'toString')
        .map((key) =>
          bodyMutation(
            Buffer.from(
              op.doc.requestBody && 'application/x-www-form-urlencoded' in op.doc.requestBody.content
                ? `${key}=1&${key}[x]=2`
                : `{"${key}":{"x":1}}`,
              'utf8',
            ),
          ),
        ),
    },
  );
}

const FIELD_VALUES: unknown[] = [
  '',
  ' ',
  null,
  0,
  -1,
  1e308,
  true,
  [],
  {},
  ['x'],
  { __proto__: null, x: 1 },
  '__proto__',
  'constructor',
  'toString',
  '../../x',
  '%2F',
  'a\u0000b',
  '\ud800',
  '\u202e',
  '<script>alert(1)</script>',
  'c_0000',
  'r_0000',
  'dlv_0000',
  'x'.repeat(300),
  'x'.repeat(40_000),
];

function fieldArb(op: Operation): fc.Arbitrary<Mutation> | undefined {
  const names: Record<string, string[]> = {
    '/api/v1/contacts/{id}/unmerge': ['recordId', 'identifier', 'zz'],
    '/api/v1/contacts/{id}/merge': ['with', 'zz'],
    '/api/v1/channels/{id}/agent-chat-url': ['customerId', 'zz'],
    '/console/sign-in': ['token', 'next', '_pre', 'zz'],
    '/console/contacts/{id}/unmerge': ['recordId', '_csrf', 'zz'],
    '/console/conflicts/merge': ['id', 'with', 'zz'],
    '/console/deliveries/replay': ['destination', 'zz'],
    '/console/deliveries/{id}/replay': ['state', 'destination', 'zz'],
    '/console/channels/{id}/agent-sync': ['dryRun', 'zz'],
    '/console/channels/{id}/keys': ['zz'],
    '/console/channels/{id}/keys/{kid}/revoke': ['zz'],
    '/console/sign-out': ['zz'],
  };
  const list = names[op.path];
  if (!list) return undefined;
  const identifiers = fc.constantFrom<unknown>(
    { kind: '__proto__', value: 'x' },
    { kind: 'email', value: 'fuzz.visitor4@example.org' },
    { kind: 'email', value: 'x', channelId: '__proto__' },
    { kind: 'jivochat_visitor', value: '41004', channelId: 'site' },
    { kind: 'email', value: ['x'] },
    { kind: 'email', value: '\ud800@example.org' },
    { kind: 'person', value: 'a\udc00' },
    { kind: 'jivochat_visitor', value: '1', channelId: '\ud800' },
  );
  return fc
    .tuple(
      fc.constantFrom(...list),
      fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...FIELD_VALUES) },
        { weight: 1, arbitrary: identifiers },
      ),
    )
    .map(([name, value]) => ({ kind: 'field' as const, name, value }));
}

const METHODS = [
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'HEAD',
  'TRACE',
  'PROPFIND',
  'get',
  'FOO',
  'M-SEARCH',
];

const REWRITES = [
  'absolute',
  'star',
  'no-slash',
  'double-slash',
  'dot-segment',
  'dot-dot',
  'backslash',
  'upper',
  'encoded-letter',
  'trailing-slash',
  'fragment',
  'raw-utf8',
  'tab',
  'empty-query',
];

function rewriteTarget(target: string, rewrite: string): string {
  const [path = '', ...rest] = target.split('?');
  const query = rest.length > 0 ? `?${rest.join('?')}` : '';
  switch (rewrite) {
    case 'absolute':
      return `http://127.0.0.1${target}`;
    case 'star':
      return '*';
    case 'no-slash':
      return target.slice(1);
    case 'double-slash':
      return `/${target}`;
    case 'dot-segment':
      return path.replace(/^\/([^/]+)\//, '/$1/./') + query;
    case 'dot-dot':
      return path.replace(/^\/([^/]+)\//, '/$1/x/../') + query;
    case 'backslash':
      return path.replace(/\//g, '\\') + query;
    case 'upper':
      return path.toUpperCase() + query;
    case 'encoded-letter':
      return path.replace(/[a-z]/, (letter) => `%${letter.charCodeAt(0).toString(16)}`) + query;
    case 'trailing-slash':
      return `${path}/${query}`;
    case 'fragment':
      return `${target}#frag`;
    case 'raw-utf8':
      return `${path}/\u00d1\u008f${query}`;
    case 'tab':
      return `${path}\t${query}`;
    case 'empty-query':
      return `${path}?${query.slice(1)}&`;
    default:
      return target;
  }
}

const hostArb: fc.Arbitrary<Mutation> = fc
  .constantFrom(
    '',
    'evil.example',
    'a b',
    '[::1',
    '127.0.0.1:99999',
    'x'.repeat(5000),
    '\u00ff',
    'bridge.fuzz.test:80',
  )
  .map((value) => ({ kind: 'header' as const, name: 'Host', value, replace: true }));

function mutationArb(op: Operation): fc.Arbitrary<Mutation> {
  const kinds: Array<fc.Arbitrary<Mutation>> = [
    fc.constantFrom(...REWRITES).map((rewrite) => ({ kind: 'target' as const, rewrite })),
    fc
      .constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'HTTP/1.1 extra', 'http/1.1', '')
      .map((version) => ({ kind: 'version' as const, version })),
    hostArb,
    queryArb(op).map((text) => ({ kind: 'query' as const, text })),
    headerArb,
    bodyArb(op),
    fc.constantFrom(...METHODS).map((method) => ({ kind: 'method' as const, method })),
  ];
  const field = fieldArb(op);
  if (field) kinds.push(field, field);
  const params = pathParams(op).map((each) => each.name);
  if (params.length > 0)
    kinds.push(
      fc
        .tuple(fc.constantFrom(...params), pathValue)
        .map(([name, value]) => ({ kind: 'param' as const, name, value })),
    );
  return fc.oneof(...kinds);
}

function apply(world: World, op: Operation, mutations: Mutation[]): RawRequest {
  const params: Record<string, string> = {};
  for (const each of mutations) if (each.kind === 'param') params[each.name] = each.value;
  const request = baseline(world, op, params);
  for (const each of mutations) {
    switch (each.kind) {
      case 'query':
        request.target += (request.target.includes('?') ? '&' : '?') + each.text;
        break;
      case 'header': {
        if (each.replace)
          request.headers = request.headers.filter(
            ([name]) => name.toLowerCase() !== each.name.toLowerCase(),
          );
        const times = each.repeat ?? 1;
        for (let index = 0; index < times; index++) request.headers.push([`${each.name}`, each.value]);
        break;
      }
      case 'drop-header':
        request.headers = request.headers.filter(([name]) => name.toLowerCase() !== each.name.toLowerCase());
        break;
      case 'body':
        request.body = each.body;
        break;
      case 'method':
        request.method = each.method;
        break;
      case 'version':
        request.version = each.version;
        break;
      case 'field': {
        const text = request.body.toString('utf8');
        if (text.startsWith('{')) {
          // A body already spoilt another way (not JSON, or deeper than JSON.stringify goes) stays so.
          try {
            const json = JSON.parse(text) as Record<string, unknown>;
            Object.defineProperty(json, each.name, {
              value: each.value,
              enumerable: true,
              writable: true,
              configurable: true,
            });
            request.body = Buffer.from(JSON.stringify(json), 'utf8');
          } catch {}
        } else {
          const form = new URLSearchParams(text);
          const value = typeof each.value === 'string' ? each.value : JSON.stringify(each.value);
          // Set, or a second value of the same name.
          if (value.length % 2 === 0) form.set(each.name, value);
          else form.append(each.name, value);
          request.body = Buffer.from(form.toString(), 'utf8');
        }
        break;
      }
      default:
        break;
    }
  }
  for (const each of mutations)
    if (each.kind === 'target') request.target = rewriteTarget(request.target, each.rewrite);
  return request;
}

function describeRequest(request: RawRequest): string {
  const headers = request.headers
    .map(
      ([name, value]) => `${name}: ${value.length > 60 ? `${value.slice(0, 60)}…(${value.length})` : value}`,
    )
    .slice(0, 8)
    .join(' | ');
  const body = request.body.toString('latin1');
  return `${request.version ? `(${request.version}) ` : ''}${request.method} ${request.target.length > 160 ? `${request.target.slice(0, 160)}…(${request.target.length})` : request.target} [${headers}${request.headers.length > 8 ? ` | +${request.headers.length - 8} headers` : ''}] body(${request.body.length}): ${JSON.stringify(body.slice(0, 120))}`;
}

/** The codes of the answers given before any route: Node's parser, Host, Expect (client-error.ts). */
const PROTOCOL_CODES =
  /"code":"(bad_http|headers_too_large|request_timeout|missing_host|expectation_failed)"/;

/** What is wrong with an answer, or null. */
function judge(request: RawRequest, answer: RawAnswer | string): string | null {
  if (typeof answer === 'string') return answer;
  const { status, headers, body } = answer;
  if (status >= 500) return `answered ${status}: ${body.toString('utf8').slice(0, 300)}`;
  if (status < 400) return null;
  const type = headers['content-type'] ?? '';
  const text = body.toString('utf8');
  const head = request.method.toUpperCase() === 'HEAD';
  const json = () => {
    if (!/^application\/json/.test(type))
      return `${status} with Content-Type ${JSON.stringify(type)}: ${text.slice(0, 200)}`;
    if (head) return null;
    try {
      const parsed = errorSchema.strict().safeParse(JSON.parse(text));
      return parsed.success ? null : `${status} not the error body: ${text.slice(0, 200)}`;
    } catch {
      return `${status} not JSON: ${text.slice(0, 200)}`;
    }
  };
  // Answers given before any route (src/http/client-error.ts) are JSON on every path; an answer
  // to HEAD has no body to tell them by.
  if (
    /^application\/json/.test(type) &&
    (head ? [400, 408, 417, 431].includes(status) : PROTOCOL_CODES.test(text))
  )
    return json();
  const path = request.target.replace(/^http:\/\/[^/]*/, '').split('?')[0]!;
  if (path === '/console' || path.startsWith('/console/')) {
    if (!/^text\/html/.test(type))
      return `console ${status} with Content-Type ${JSON.stringify(type)}: ${text.slice(0, 200)}`;
    if (!head && !/<!doctype html>/i.test(text))
      return `console ${status} is not the error page: ${text.slice(0, 200)}`;
    return null;
  }
  return json();
}

// --- the walk ---------------------------------------------------------------------------------------

describe('routes fuzz: every operation of the served document under hostile requests', () => {
  let bridge: TestBridge;
  let fake: FakeChatvisor;
  let crm: CrmWorld;
  let document: { paths: Record<string, Record<string, Operation['doc']>> };
  let operations: Operation[];
  const world = {} as World;
  /** Baseline answers of the operations that only read, to compare at the end. */
  const before = new Map<string, number>();

  const admin = (method: string, path: string, body?: unknown) => bridge.admin(method, path, body);
  let sealLookup: () => Promise<unknown> = async () => {};

  beforeAll(async () => {
    fake = await startFakeChatvisor();
    crm = await amoWorld();
    bridge = await startTestBridge({
      store: 'redis',
      config: {
        server: {
          port: 0,
          host: '127.0.0.1',
          shutdownTimeoutMs: 2000,
          bodyLimitBytes: BODY_LIMIT,
          publicUrl: PUBLIC_URL,
          // X-Forwarded-For and -Proto are read (one proxy): the walk sends odd ones.
          proxyHops: 1,
        },
        secrets: { masterKey: Buffer.alloc(32, 9).toString('base64') },
        console: { linkTtl: '1h' },
        metrics: { token: METRICS_TOKEN },
        // The walk sends many wrong credentials and lookups: the 429s have their own tests.
        limits: {
          rate: {
            adminAuthFailuresPerAddress: 1_000_000,
            adminAuthFailuresPerInstance: 1_000_000,
            lookupsPerAddress: 1_000_000,
            lookupsPerChannel: 1_000_000,
          },
        },
        channels: [CHANNELS.site, CHANNELS.app, fake.channel('cobrowse', 'fuzz-chatvisor-token-00001')],
        destinations: [
          crm.destination({
            crm: { pipeline: { default: 7000 }, responsible: { default: 501 }, rateLimit: 50 },
            retrySchedule: ['0s'],
          }),
        ],
      },
    });
    world.port = Number(new URL(bridge.url).port);
    world.adminToken = bridge.adminToken;

    document = (await (await fetch(`${bridge.url}/api/v1/openapi.json`)).json()) as typeof document;
    operations = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item).map(([method, doc]) => ({ method: method.toUpperCase(), path, doc })),
    );

    // Contacts to read, merge and unmerge (each chat its own visitor), and the link an agent gets.
    const jivo = JSON.parse(fixture('jivochat/__fixtures__/chat_accepted.json'));
    const ids: string[] = [];
    for (let index = 0; index < 7; index++) {
      const visitor = {
        ...jivo.visitor,
        email: `fuzz.visitor${index}@example.org`,
        phone: `+7 916 000 00 0${index}`,
        name: `Visitor <b>${index}</b>`,
        number: String(41_000 + index),
      };
      const answer = await bridge.post(
        `/webhooks/jivochat/site/${CHANNELS.site.token}`,
        JSON.stringify({ ...jivo, chat_id: 900_000 + index, visitor, user_token: `fuzz-user-${index}` }),
        { 'content-type': 'application/json' },
      );
      expect(answer.status).toBe(200);
      if (index === 0)
        world.agentLinkToken = String(answer.body.crm_link).slice(`${PUBLIC_URL}/console/c/`.length);
      const found = await admin('GET', `/api/v1/contacts?email=fuzz.visitor${index}@example.org`);
      ids.push(found.body.contacts[0].id);
    }
    world.contactIds = ids;
    world.canaryContact = ids[0]!;
    // Merges to unmerge, one for the API (contacts 1 and 4) and one for the console (5 and 6):
    // the record split off is the one merged in.
    const merged = await admin('POST', `/api/v1/contacts/${ids[1]}/merge`, { with: ids[4] });
    expect(merged.status).toBe(200);
    world.recordId = merged.body.contact.records.at(-1);
    const mergedHere = await admin('POST', `/api/v1/contacts/${ids[5]}/merge`, { with: ids[6] });
    expect(mergedHere.status).toBe(200);
    world.consoleRecordId = mergedHere.body.contact.records.at(-1);
    for (let tries = 0; tries < 200 && !world.deliveryId; tries++) {
      world.deliveryId = (await admin('GET', '/api/v1/deliveries')).body.deliveries?.[0]?.id;
      if (!world.deliveryId) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(world.deliveryId).toBeDefined();
    const keys = [];
    for (let index = 0; index < 3; index++) keys.push(await admin('POST', '/api/v1/channels/app/keys'));
    expect(keys.map((each) => each.status)).toEqual([201, 201, 201]);
    world.kid = keys[0]!.body.kid;
    world.consoleKid = keys[1]!.body.kid;
    const key = keys[2]!;
    // A sealed lookup as LiveTex sends it (a fresh one for each request: each is taken once).
    const client = createLivetexLookupClient({
      url: `${bridge.url}/livetex/app/attributes`,
      kid: key.body.kid,
      key: key.body.key,
      async fetch(_url, init) {
        world.lookupBody = String(init.body);
        return new Response('{}', { status: 418 }) as never;
      },
    });
    sealLookup = () => client.lookup({ personId: 'fuzz-user-1' }).catch(() => {});
    await sealLookup();
    expect(world.lookupBody).toMatch(/^ey/);

    world.session = await signIn(bridge.url, bridge.adminToken);
    world.spareSession = await signIn(bridge.url, bridge.adminToken);
    const form = await consoleRequest(bridge.url, '/console/sign-in');
    world.pre = {
      cookie: cookieOf(form.headers, 'chatbridge_console_pre')!,
      value: fieldOf(form.text, '_pre')!,
    };

    for (const op of operations.filter((each) => each.method === 'GET')) {
      const answer = await send(world.port, baseline(world, op));
      before.set(`${op.method} ${op.path}`, typeof answer === 'string' ? 0 : answer.status);
    }
  });
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
    await crm?.close();
  });

  /** Ordinary requests, answered as before whatever was sent. */
  async function canaries(): Promise<string | null> {
    const checks: Array<[RawRequest, number]> = [
      [{ method: 'GET', target: '/healthz', headers: [['Host', HOST]], body: Buffer.alloc(0) }, 200],
      [{ method: 'GET', target: '/readyz', headers: [['Host', HOST]], body: Buffer.alloc(0) }, 200],
      [
        {
          method: 'GET',
          target: `/api/v1/contacts/${world.canaryContact}`,
          headers: [
            ['Host', HOST],
            ['Authorization', `Bearer ${world.adminToken}`],
          ],
          body: Buffer.alloc(0),
        },
        200,
      ],
      [
        {
          method: 'GET',
          target: '/console/contacts?q=fuzz.visitor0%40example.org',
          headers: [
            ['Host', HOST],
            ['Cookie', world.session.cookie],
          ],
          body: Buffer.alloc(0),
        },
        200,
      ],
      [
        {
          method: 'POST',
          target: `/webhooks/jivochat/site/${CHANNELS.site.token}`,
          headers: [
            ['Host', HOST],
            ['Content-Type', 'application/json'],
          ],
          body: Buffer.from(fixture('jivochat/__fixtures__/chat_updated.json')),
        },
        200,
      ],
    ];
    for (const [request, status] of checks) {
      const answer = await send(world.port, request);
      if (typeof answer === 'string' || answer.status !== status)
        return `ordinary ${describeRequest(request)} → ${typeof answer === 'string' ? answer : `${answer.status} ${answer.body.toString('utf8').slice(0, 200)}`}`;
    }
    return null;
  }

  /** The newest journal entry of a channel (to see that a refused payload was kept). */
  async function newestJournal(channel: string): Promise<string> {
    const page = await admin('GET', `/api/v1/journal?channel=${channel}&limit=1`);
    return JSON.stringify(page.body.entries?.[0] ?? null);
  }

  /** fast-check's report, with the command that sends the failing request again first. */
  async function check(label: string, index: number, run: () => Promise<void>) {
    try {
      await run();
    } catch (error) {
      const path = /path: "([^"]*)"/.exec((error as Error).message)?.[1];
      // fast-check 4 keeps the property's own error (what was wrong, and the request) as the cause.
      const cause = (error as Error).cause;
      throw new Error(
        `replay: FUZZ_SEED=${SEED} FUZZ_OP='${label}'${path ? ` FUZZ_PATH='${path}'` : ''} ` +
          `npx vitest run --config vitest.slow.config.ts test/slow/routes.fuzz.test.ts (seed ${SEED + index} of this operation)\n` +
          `${cause instanceof Error ? cause.message : String(cause ?? '')}\n${(error as Error).message}`,
      );
    }
  }

  async function walk(filter: (op: Operation) => boolean) {
    const chosen = operations.filter(filter);
    const only = process.env.FUZZ_OP;
    expect(chosen.length).toBeGreaterThan(0);
    let sent = 0;
    for (const [index, op] of chosen.entries()) {
      const label = `${op.method} ${op.path}`;
      if (only && only !== label) continue;
      const webhook = op.path.startsWith('/webhooks/');
      const channel = webhook ? validParam(world, op, 'channelId') : '';
      await check(label, index, () =>
        fc.assert(
          fc.asyncProperty(fc.array(mutationArb(op), { minLength: 1, maxLength: 3 }), async (mutations) => {
            if (op.path.startsWith('/livetex/')) await sealLookup();
            const request = apply(world, op, mutations);
            const journalBefore = webhook ? await newestJournal(channel) : '';
            const answer = await send(world.port, request);
            const problem = judge(request, answer);
            if (problem) throw new Error(`${label}: ${problem}\n  request: ${describeRequest(request)}`);
            const status = typeof answer === 'string' ? 0 : answer.status;
            // A vendor payload refused (not a wrong address, not one Node's parser refused) is kept.
            if (
              webhook &&
              status >= 400 &&
              status < 500 &&
              status !== 404 &&
              !PROTOCOL_CODES.test((answer as RawAnswer).body.toString('utf8')) &&
              status !== 417 &&
              request.target.startsWith(`/webhooks/`) &&
              (await newestJournal(channel)) === journalBefore
            )
              throw new Error(
                `${label}: refused with ${status} and not in the journal\n  request: ${describeRequest(request)}`,
              );
            if (++sent % 15 === 0) {
              const broken = await canaries();
              if (broken) throw new Error(`${label}: after ${describeRequest(request)}\n  ${broken}`);
            }
          }),
          // Each operation its own seed, so that the walk tries other combinations on each.
          { seed: SEED + index, numRuns: RUNS, ...(PATH ? { path: PATH } : {}) },
        ),
      );
      const broken = await canaries();
      if (broken) throw new Error(`${label}: after its runs, ${broken}`);
    }
  }

  it("admin API, channel routes and deliveries (the CRM destination's)", async () => {
    await walk((op) => op.path.startsWith('/api/v1/'));
  });

  it('console pages and forms, with a session and its CSRF token', async () => {
    await walk(isConsole);
  });

  it('vendor routes (webhooks, the LiveTex lookup), metrics and health', async () => {
    await walk((op) => !op.path.startsWith('/api/v1/') && !isConsole(op));
  });

  it('answers the ordinary requests it answered before the walk', async () => {
    const problems: string[] = [];
    for (const op of operations.filter((each) => each.method === 'GET')) {
      const answer = await send(world.port, baseline(world, op));
      const status = typeof answer === 'string' ? 0 : answer.status;
      if (status !== before.get(`${op.method} ${op.path}`))
        problems.push(
          `${op.method} ${op.path}: ${before.get(`${op.method} ${op.path}`)} before, ${status} now`,
        );
    }
    expect(problems).toEqual([]);
    expect(await canaries()).toBeNull();
  });
});
