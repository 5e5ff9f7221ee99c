import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compactDecrypt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClaims, sealRequest } from '../adapters/livetex/codec.js';
import { expectMissingHostAlike, expectWrongMethod404 } from './support/early-spellings.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger, type LogLine } from './support/logs.js';
import { type RawAnswer as Answer, headLines, rawPost } from './support/raw-http.js';

/**
 * A lookup POSTed to its route's exact path is served ahead of the middleware chain (serveEarly in
 * src/http/app.ts); every other spelling of the same route — a query string, a %-escaped channel
 * id — goes through the whole chain and the router, as every request did before. Each request
 * here is sent in all three spellings, and the answers must be the same: status, body, the
 * headers the chain sets (request id, Retry-After, cache-control), the access line and the
 * lookup's line, the rate limits counted together.
 */

const PERSON = 'p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10';
const EARLY = '/livetex/app/attributes';
const SPELLINGS = [EARLY, `${EARLY}?via=chain`, '/livetex/%61pp/attributes'] as const;
const fixture = readFileSync(
  new URL('../adapters/livetex/__fixtures__/dialog_closed.web.json', import.meta.url),
  'utf8',
);

interface Key {
  kid: string;
  key: string;
}

const post = (bridge: TestBridge, path: string, body: string, headers: Record<string, string> = {}) =>
  rawPost(bridge, path, body, { 'content-type': 'application/jose', ...headers });

const sealed = (key: Key, claims: Record<string, unknown> = {}) =>
  sealRequest(
    {
      ...buildClaims({
        subject: { personId: PERSON },
        requestId: randomUUID(),
        jti: randomUUID(),
        iat: Date.now() / 1000,
      }),
      ...claims,
    },
    key.kid,
    new Uint8Array(Buffer.from(key.key, 'base64url')),
  );

/** What the answer says, with what differs per request (the request id) left out; its header lines as sent. */
async function said(answer: Answer, key: Key) {
  const { 'x-request-id': requestId, date: _date, ...headers } = answer.headers;
  expect(requestId).toMatch(/^[A-Za-z0-9._-]{1,128}$/);
  const body =
    answer.headers['content-type'] === 'application/jose'
      ? JSON.parse(
          Buffer.from(
            (await compactDecrypt(answer.text, new Uint8Array(Buffer.from(key.key, 'base64url')))).plaintext,
          ).toString('utf8'),
        )
      : JSON.parse(answer.text);
  return { status: answer.status, headers, lines: headLines(answer), body };
}

async function bridgeWith(rate: Record<string, number> = {}) {
  const logs = capturingLogger('info');
  const bridge = await startTestBridge({
    logger: logs.logger,
    config: {
      channels: [{ id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' }],
      limits: { rate },
    },
  });
  const made = await bridge.admin<Key>('POST', '/api/v1/channels/app/keys');
  expect(made.status).toBe(201);
  const seeded = await bridge.post('/webhooks/livetex/app/app-webhook-token-0123456789', fixture, {
    'content-type': 'application/json',
  });
  expect(seeded.status).toBe(200);
  return { bridge, key: made.body, lines: logs.lines };
}

describe('a lookup at its exact path answers as it does through the chain', () => {
  let bridge: TestBridge;
  let key: Key;
  let lines: LogLine[];

  beforeAll(async () => {
    ({ bridge, key, lines } = await bridgeWith());
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('found: the same sealed answer, headers and log lines', async () => {
    const answers = [];
    for (const path of SPELLINGS) {
      const requestId = `req-${randomUUID()}`;
      const answer = await post(bridge, path, await sealed(key, { requestId }), {
        'x-request-id': requestId,
      });
      expect(answer.headers['x-request-id']).toBe(requestId);
      const { body, ...rest } = await said(answer, key);
      expect(body).toMatchObject({ requestId, found: true });
      answers.push({ ...rest, body: { ...body, requestId: undefined } });
      const access = lines.filter((line) => line.msg === 'request' && line.requestId === requestId);
      expect(access).toEqual([
        expect.objectContaining({ method: 'POST', path: path.split('?')[0], status: 200, level: 30 }),
      ]);
      const lookup = lines.filter(
        (line) => line.msg === 'livetex attribute lookup' && line.requestId === requestId,
      );
      expect(lookup).toEqual([
        expect.objectContaining({ found: true, held: false, vendorRequestId: requestId }),
      ]);
    }
    expect(answers[0]!.status).toBe(200);
    expect(answers[0]!.headers).toMatchObject({
      'cache-control': 'no-store',
      'content-type': 'application/jose',
    });
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
  });

  it('refusals: the same status and error body (not a JWE, an unknown key, a replay)', async () => {
    const cases: Array<() => Promise<string>> = [
      async () => 'not a token',
      () => sealed({ ...key, kid: 'no-such-kid' }),
      async () => {
        const once = await sealed(key);
        expect((await post(bridge, EARLY, once)).status).toBe(200);
        return once;
      },
    ];
    for (const body of cases) {
      const answers = [];
      for (const path of SPELLINGS) answers.push(await said(await post(bridge, path, await body()), key));
      expect(answers[0]!.status).toBeGreaterThanOrEqual(400);
      expect(answers[0]!.body).toHaveProperty('error.code');
      expect(answers[1]).toEqual(answers[0]);
      expect(answers[2]).toEqual(answers[0]);
    }
  });

  it('an HTTP/1.1 request without Host: the same 400 missing_host', async () => {
    await expectMissingHostAlike(bridge, SPELLINGS);
  });

  it('a wrong method at the exact path is the one 404, as at the other spellings', async () => {
    await expectWrongMethod404(bridge, SPELLINGS);
  });
});

describe('the lookup limits count every spelling together', () => {
  it('per address: the fourth lookup of any spelling is refused with 429 and Retry-After', async () => {
    const { bridge, key } = await bridgeWith({ lookupsPerAddress: 3 });
    try {
      for (const path of SPELLINGS) expect((await post(bridge, path, await sealed(key))).status).toBe(200);
      const answers = [];
      for (const path of SPELLINGS)
        answers.push(await said(await post(bridge, path, await sealed(key)), key));
      expect(answers[0]).toMatchObject({ status: 429, headers: { 'retry-after': expect.any(String) } });
      expect(answers[0]!.body).toHaveProperty('error.code', 'rate_limited');
      expect(answers[1]).toEqual(answers[0]);
      expect(answers[2]).toEqual(answers[0]);
    } finally {
      await bridge.close();
    }
  });
});
