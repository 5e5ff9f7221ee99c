import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AdapterDefinition } from '../src/contracts/adapter.js';
import { expectMissingHostAlike, expectWrongMethod404 } from './support/early-spellings.js';
import { echoAdapter } from './support/echo-adapter.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger, type LogLine } from './support/logs.js';
import { type RawAnswer as Answer, headLines, rawPost } from './support/raw-http.js';

/**
 * A vendor webhook POSTed to `/webhooks/<vendor>/<channel>/<token>` with plain segments is served
 * ahead of the middleware chain (serveWebhookEarly in src/http/app.ts), whatever the channel and
 * token; every other spelling of the same route — a query string, a %-escaped channel id — goes
 * through the whole chain and the router, as every webhook did before. Each request here is sent
 * in all three spellings, and they must answer alike: status, body, headers (request id, the
 * defensive headers, Connection), the access line (its token masked) and every other log line of
 * the request, the journal entry of a refused payload, the intake and rate-limit metrics, and the
 * per-address limit on wrong tokens (counted across spellings, by the forwarded address).
 */

const TOKEN = 'site-webhook-token-0123456789';
const OTHER = 'app-webhook-token-0123456789';
const spellings = (channel: string, token: string) =>
  [
    `/webhooks/jivochat/${channel}/${token}`,
    `/webhooks/jivochat/${channel}/${token}?via=chain`,
    `/webhooks/jivochat/${channel.replace(/^s/, '%73')}/${token}`,
  ] as const;
const SPELLINGS = spellings('site', TOKEN);
const accepted = JSON.parse(
  readFileSync(new URL('../adapters/jivochat/__fixtures__/chat_accepted.json', import.meta.url), 'utf8'),
) as Record<string, unknown>;

const post = (bridge: TestBridge, path: string, body: string, headers: Record<string, string> = {}) =>
  rawPost(bridge, path, body, { 'content-type': 'application/json', ...headers });

/**
 * The answer with what differs per request (its id, the date) left out; its header lines as sent
 * (order and letter case: the plain path writes them itself, not through Koa's respond).
 */
function said(answer: Answer) {
  const { 'x-request-id': requestId, date: _date, ...headers } = answer.headers;
  expect(requestId).toMatch(/^[A-Za-z0-9._-]{1,128}$/);
  return {
    status: answer.status,
    headers,
    lines: headLines(answer),
    body: JSON.parse(answer.text) as unknown,
  };
}

/** What the bridge logged for one request: its lines without time and duration; the access line's path apart. */
function loggedFor(lines: LogLine[], requestId: string) {
  const own = lines.filter((line) => line.requestId === requestId);
  const access = own.filter((line) => line.msg === 'request');
  expect(access).toHaveLength(1);
  return {
    path: access[0]!.path,
    lines: own.map(
      ({ time: _time, ms: _ms, pid: _pid, hostname: _host, requestId: _id, path: _path, ...rest }) => rest,
    ),
  };
}

/** The masked path the access line must show for a spelling: as sent, query off, token hidden. */
const masked = (path: string, token: string) => path.split('?')[0]!.replace(token, '***');

async function metricLines(bridge: TestBridge) {
  return (await bridge.bridge.metrics.registry.metrics())
    .split('\n')
    .filter((line) => /^chatbridge_(intake_total|rate_limited_total)\{/.test(line));
}

/** Each counter's increase between two scrapes (absent before: from 0). */
function increase(before: string[], after: string[]) {
  const values = (lines: string[]) =>
    new Map(
      lines.map((line) => [
        line.slice(0, line.lastIndexOf(' ')),
        Number(line.slice(line.lastIndexOf(' ') + 1)),
      ]),
    );
  const old = values(before);
  const out: Record<string, number> = {};
  for (const [name, value] of values(after))
    if (value !== (old.get(name) ?? 0)) out[name] = value - (old.get(name) ?? 0);
  return out;
}

interface Sent {
  answer: ReturnType<typeof said>;
  logged: ReturnType<typeof loggedFor>;
  metrics: Record<string, number>;
}

async function bridgeWith(config: Record<string, unknown> = {}) {
  const logs = capturingLogger('info');
  const bridge = await startTestBridge({
    logger: logs.logger,
    config: {
      channels: [
        { id: 'site', vendor: 'jivochat', token: TOKEN },
        { id: 'app', vendor: 'livetex', token: OTHER },
      ],
      ...config,
    },
  });
  let sent = 0;
  /** One request, with what the bridge answered, logged and counted for it. */
  async function send(path: string, body: string, headers: Record<string, string> = {}): Promise<Sent> {
    const requestId = `req-early-${sent++}`;
    const before = await metricLines(bridge);
    const answer = await post(bridge, path, body, { 'x-request-id': requestId, ...headers });
    expect(answer.headers['x-request-id']).toBe(requestId);
    return {
      answer: said(answer),
      logged: loggedFor(logs.lines, requestId),
      metrics: increase(before, await metricLines(bridge)),
    };
  }
  return { bridge, lines: logs.lines, send };
}

/** All three spellings alike (the access line's path is each one's own, masked). */
function expectAlike(results: Sent[], paths: readonly string[], token: string) {
  for (const [index, result] of results.entries())
    expect(result.logged.path).toBe(masked(paths[index]!, token));
  const [first, ...rest] = results.map(({ logged: { lines }, ...others }) => ({ ...others, lines }));
  for (const each of rest) expect(each).toEqual(first);
}

describe('a webhook at its plain path answers as it does through the chain', () => {
  let bridge: TestBridge;
  let lines: LogLine[];
  let send: Awaited<ReturnType<typeof bridgeWith>>['send'];

  beforeAll(async () => {
    ({ bridge, lines, send } = await bridgeWith({ server: { bodyLimitBytes: 4096 } }));
    // The person is known before the compared requests: each of them then answers alike.
    expect((await send(SPELLINGS[0], JSON.stringify({ ...accepted, chat_id: 1 }))).answer.status).toBe(200);
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('chat_accepted: the same rich answer, headers, log lines and intake metrics', async () => {
    const results = [];
    for (const [index, path] of SPELLINGS.entries())
      results.push(await send(path, JSON.stringify({ ...accepted, chat_id: 100 + index })));
    expect(results[0]!.answer).toMatchObject({
      status: 200,
      headers: { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' },
      body: { result: 'ok' },
    });
    expect(Object.values(results[0]!.metrics)).toEqual([1]);
    expectAlike(results, SPELLINGS, TOKEN);
  });

  it('a redelivery: the same answer again', async () => {
    const body = JSON.stringify({ ...accepted, chat_id: 100 });
    const results = [];
    for (const path of SPELLINGS) results.push(await send(path, body));
    expectAlike(results, SPELLINGS, TOKEN);
  });

  it('journalled payloads: the same 400, 413 or 200, and the same journal entry', async () => {
    const cases = [
      { body: 'not json at all', status: 400, kind: 'rejected' },
      { body: '{"event_name":"chat_accepted","chat_id":[', status: 400, kind: 'rejected' },
      { body: `{"event_name":"chat_accepted","pad":"${'x'.repeat(8192)}"}`, status: 413, kind: 'rejected' },
      // A known event with junk identifiers is answered, and kept as unhandled.
      {
        body: JSON.stringify({ event_name: 'chat_accepted', chat_id: 'x', visitor: 'nobody' }),
        status: 200,
        kind: 'unhandled',
      },
    ];
    for (const { body, status, kind } of cases) {
      const results = [];
      const entries = [];
      for (const path of SPELLINGS) {
        results.push(await send(path, body));
        const journal = await bridge.admin('GET', '/api/v1/journal?channel=site&limit=1');
        const { id: _id, at: _at, ...entry } = journal.body.entries[0];
        entries.push(entry);
      }
      expect(results[0]!.answer.status).toBe(status);
      if (status !== 200) expect(results[0]!.answer.body).toHaveProperty('error.code');
      expectAlike(results, SPELLINGS, TOKEN);
      expect(entries[0]).toMatchObject({ channelId: 'site', vendor: 'jivochat', kind });
      expect(entries[1]).toEqual(entries[0]);
      expect(entries[2]).toEqual(entries[0]);
    }
  });

  it('a wrong token, an unknown channel, another vendor’s channel: the same 404', async () => {
    const body = JSON.stringify({ ...accepted, chat_id: 200 });
    for (const [channel, token] of [
      ['site', 'wrong-token-0123456789'],
      ['nowhere', TOKEN],
      ['app', OTHER],
    ] as const) {
      // %73 spells the channel's first letter `s`; other channels' escaped spelling is %-escaped by hand.
      const paths = [
        `/webhooks/jivochat/${channel}/${token}`,
        `/webhooks/jivochat/${channel}/${token}?via=chain`,
        `/webhooks/jivochat/%${channel.charCodeAt(0).toString(16)}${channel.slice(1)}/${token}`,
      ];
      const results = [];
      for (const path of paths) results.push(await send(path, body));
      expect(results[0]!.answer).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
      expectAlike(results, paths, token);
    }
    expect(JSON.stringify(lines)).not.toContain(TOKEN);
    expect(JSON.stringify(lines)).not.toContain('wrong-token-0123456789');
  });

  it('an HTTP/1.1 request without Host: the same 400 missing_host', async () => {
    await expectMissingHostAlike(bridge, SPELLINGS);
  });

  it('a wrong method at the plain path is the one 404, as at the other spellings', async () => {
    await expectWrongMethod404(bridge, SPELLINGS);
  });
});

describe.each([
  ['from a trusted proxy: counted by X-Forwarded-For', {}, true],
  ['from an untrusted peer: X-Forwarded-For ignored', { server: { trustedProxies: ['192.0.2.1'] } }, false],
] as const)('the wrong-token limit counts every spelling together, %s', (_name, config, forwarded) => {
  it('past the limit the right token gets the same 404 in every spelling; another address is served', async () => {
    const { bridge, lines, send } = await bridgeWith({
      ...config,
      limits: { rate: { webhookTokenFailuresPerAddress: 3 } },
    });
    try {
      const body = (chat: number) => JSON.stringify({ ...accepted, chat_id: 300 + chat });
      const from = { 'x-forwarded-for': '203.0.113.7' };
      const wrong = spellings('site', 'wrong-token-0123456789');
      for (const path of wrong) expect((await send(path, body(0), from)).answer.status).toBe(404);
      const held = [];
      for (const path of SPELLINGS) held.push(await send(path, body(1), from));
      expect(held[0]!.answer).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
      expect(held[0]!.metrics).toEqual({ 'chatbridge_rate_limited_total{scope="webhook_token"}': 1 });
      // The refusal's warning is said once per address and window (on the first), so after it alike.
      expectAlike(held.slice(1), SPELLINGS.slice(1), TOKEN);
      expect(held[1]).toMatchObject({ answer: held[0]!.answer, metrics: held[0]!.metrics });
      const warned = lines.filter((line) => line.msg.startsWith('webhook token limits'));
      expect(warned).toEqual([
        expect.objectContaining({ address: forwarded ? '203.0.113.7' : '127.0.0.1', limit: 3 }),
      ]);
      // Another client address (forwarded) is not held back; without trust, X-Forwarded-For is
      // no other address: the same 127.0.0.1, held back.
      const other = [];
      for (const [index, path] of SPELLINGS.entries())
        other.push(await send(path, body(2 + index), { 'x-forwarded-for': '198.51.100.9' }));
      expect(other.map((each) => each.answer.status)).toEqual(forwarded ? [200, 200, 200] : [404, 404, 404]);
      expectAlike(other, SPELLINGS, TOKEN);
    } finally {
      await bridge.close();
    }
  });
});

describe('the start-up check', () => {
  it('refuses a route that a webhook URL served early would have reached through the chain', async () => {
    // A vendor named `webhooks` whose lookup is at /webhooks/:channelId/x/y, declared before
    // echo's webhook: the router gives POST /webhooks/echo/x/y to that lookup, so serving it as
    // echo's webhook ahead of the chain would answer another route's request.
    const lookup = echoAdapter.intake.find((each) => each.kind === 'lookup')!;
    const shadowing: AdapterDefinition = {
      ...echoAdapter,
      vendor: 'webhooks',
      displayName: 'Shadow',
      intake: [{ ...lookup, path: 'x/y' }],
    };
    await expect(
      startTestBridge({
        adapters: [shadowing, echoAdapter],
        config: { channels: [{ id: 'site', vendor: 'echo', token: TOKEN }] },
      }),
    ).rejects.toThrow(
      'POST /webhooks/:channelId/x/y would be shadowed by the webhooks served ahead of the chain',
    );
  });
});
