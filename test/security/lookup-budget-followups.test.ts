import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClaims, sealRequest } from '../../adapters/livetex/codec.js';
import { ADMIN, startLoggedBridge } from './support.js';

type Running = Awaited<ReturnType<typeof startLoggedBridge>>;

async function newKey(running: Running, channel: string) {
  const created = await fetch(`${running.url}/api/v1/channels/${channel}/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  expect(created.status).toBe(201);
  return (await created.json()) as { kid: string; key: string };
}

async function sealed(key: { kid: string; key: string }, jti = randomUUID()) {
  const claims = buildClaims({
    subject: { personId: 'cust-0001' },
    requestId: randomUUID(),
    jti,
    iat: Date.now() / 1000,
  });
  return sealRequest(claims, key.kid, new Uint8Array(Buffer.from(key.key, 'base64url')));
}

async function lookup(running: Running, channel: string, body: string, address: string) {
  const response = await fetch(`${running.url}/livetex/${channel}/attributes`, {
    method: 'POST',
    headers: { 'content-type': 'application/jose', 'x-forwarded-for': address },
    body,
  });
  const text = await response.text();
  return { status: response.status, code: response.status === 200 ? null : JSON.parse(text).error.code };
}

/**
 * A replayed lookup (a jti already spent) is refused 401 `replayed_token`, but it was counted in
 * the channel's budget first (the budget is taken once the request opens, the jti claimed after):
 * one captured token, sent again from a few addresses for the five minutes it stays valid, spent
 * the channel's budget and denied LiveTex its real lookups. A replay now gives back what it took.
 */
describe('LiveTex lookup: a replay spends nothing of the channel budget', () => {
  let running: Running;
  let key: { kid: string; key: string };
  beforeAll(async () => {
    running = await startLoggedBridge({
      channels: [{ id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' }],
      limits: { rate: { lookupsPerAddress: 100, lookupsPerChannel: 3, window: '1h' } },
    });
    key = await newKey(running, 'app');
  });
  afterAll(() => running?.close());

  it('answers the replays 401 and the next real lookups 200', async () => {
    const captured = await sealed(key);
    expect((await lookup(running, 'app', captured, '198.51.100.1')).status).toBe(200);
    for (let index = 0; index < 5; index++)
      expect(await lookup(running, 'app', captured, `203.0.113.${10 + index}`)).toEqual({
        status: 401,
        code: 'replayed_token',
      });
    // The budget of 3 had one real lookup spent: two more are the channel's, then its limit.
    expect((await lookup(running, 'app', await sealed(key), '198.51.100.2')).status).toBe(200);
    expect((await lookup(running, 'app', await sealed(key), '198.51.100.3')).status).toBe(200);
    expect(await lookup(running, 'app', await sealed(key), '198.51.100.4')).toEqual({
      status: 429,
      code: 'rate_limited',
    });
  });
});

/**
 * The per-address limit counted by address *and channel id*, and an id that is no channel answers
 * as a known one (so that the URL does not tell ids apart): each made-up id was a new allowance,
 * and one address sent lookups without end (each a JWE parse and a store read) by rotating the id.
 * An address now also has one allowance across every channel id: lookupsPerAddress times the
 * number of lookup channels, which no vendor address within the per-channel limit reaches. It is
 * counted alike for known and unknown ids, so running it out tells no id from another.
 */
describe('LiveTex lookup: rotating made-up channel ids does not lift the per-address limit', () => {
  let running: Running;
  let key: { kid: string; key: string };
  beforeAll(async () => {
    running = await startLoggedBridge({
      channels: [
        { id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' },
        { id: 'app2', vendor: 'livetex', token: 'app2-webhook-token-0123456789' },
      ],
      limits: { rate: { lookupsPerAddress: 3, lookupsPerChannel: 1000, window: '1h' } },
    });
    key = await newKey(running, 'app');
  });
  afterAll(() => running?.close());

  it('refuses an address past lookupsPerAddress × lookup channels, whatever ids it names', async () => {
    const attacker = '192.0.2.77';
    const statuses: number[] = [];
    for (let index = 0; index < 10; index++)
      statuses.push((await lookup(running, `made-up-${index}`, await sealed(key), attacker)).status);
    // Two LiveTex channels, 3 each: 6 answered as a known channel answers (401 unknown_key), then 429.
    expect(statuses).toEqual([401, 401, 401, 401, 401, 401, 429, 429, 429, 429]);
    // Known and unknown ids alike once the address is over: nothing tells them apart.
    expect((await lookup(running, 'app', await sealed(key), attacker)).status).toBe(429);
    expect((await lookup(running, 'made-up-99', await sealed(key), attacker)).status).toBe(429);
  });

  it('leaves a vendor address within the per-channel limits alone', async () => {
    const vendor = '198.51.100.50';
    for (let index = 0; index < 3; index++)
      expect((await lookup(running, 'app', await sealed(key), vendor)).status).toBe(200);
    for (let index = 0; index < 3; index++)
      expect((await lookup(running, 'app2', 'not-a-jwe', vendor)).status).toBe(400);
    // Each channel's own per-address limit still comes first.
    expect((await lookup(running, 'app', await sealed(key), vendor)).status).toBe(429);
  });
});
