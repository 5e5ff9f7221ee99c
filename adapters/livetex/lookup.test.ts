import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { compactDecrypt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact } from '../../src/contacts/types.js';
import { startTestBridge, type TestBridge } from '../../test/support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../../test/support/redis.js';
import { createLivetexLookupClient, LivetexLookupError } from './client.js';
import { buildClaims, sealRequest } from './codec.js';
import { jtiClaim } from './keys.js';

/**
 * The encrypted attribute lookup over real HTTP (DESIGN §6): keys through the admin API, the
 * client helper against a bridge on 127.0.0.1, every refusal, rotation, and two instances on one
 * Redis.
 */

const PERSON = 'p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10';
const fixture = (name: string) => readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8');
const livetexChannel = (id: string, settings: Record<string, unknown> = {}) => ({
  id,
  vendor: 'livetex',
  token: `${id}-webhook-token-0123456789`,
  ...settings,
});

interface GeneratedKey {
  kid: string;
  key: string;
  createdAt: string;
}

async function generateKey(bridge: TestBridge, channelId: string): Promise<GeneratedKey> {
  const response = await bridge.admin<GeneratedKey>('POST', `/api/v1/channels/${channelId}/keys`);
  expect(response.status).toBe(201);
  return response.body;
}

const lookupUrl = (bridge: TestBridge, channelId: string) => `${bridge.url}/livetex/${channelId}/attributes`;

/** A raw POST: the answer is a JWE, or a JSON error. */
async function postLookup(
  bridge: TestBridge,
  channelId: string,
  body: string,
  contentType = 'application/jose',
) {
  const response = await fetch(lookupUrl(bridge, channelId), {
    method: 'POST',
    headers: { 'content-type': contentType },
    body,
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

async function refusalOf(bridge: TestBridge, channelId: string, body: string, contentType?: string) {
  const response = await postLookup(bridge, channelId, body, contentType);
  let code: unknown;
  try {
    code = (JSON.parse(response.text) as { error: { code: string } }).error.code;
  } catch {
    code = `not JSON: ${response.text.slice(0, 80)}`;
  }
  return { status: response.status, code, headers: response.headers };
}

function claimsFor(subject: Record<string, string>, overrides: Record<string, unknown> = {}) {
  return {
    ...buildClaims({
      subject: subject as { personId: string },
      requestId: randomUUID(),
      jti: randomUUID(),
      iat: Date.now() / 1000,
    }),
    ...overrides,
  };
}

async function token(key: GeneratedKey, claims: Record<string, unknown>) {
  return sealRequest(claims, key.kid, new Uint8Array(Buffer.from(key.key, 'base64url')));
}

describe('livetex lookup over HTTP (in-memory store)', () => {
  let bridge: TestBridge;
  let key: GeneratedKey;

  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        agents: [{ email: 'oleg@shop.example', name: 'Oleg Petrov' }],
        channels: [livetexChannel('app')],
      },
    });
    key = await generateKey(bridge, 'app');
    const webhook = await bridge.post(
      `/webhooks/livetex/app/app-webhook-token-0123456789`,
      fixture('dialog_closed.web.json'),
      {
        'content-type': 'application/json',
      },
    );
    expect(webhook.status).toBe(200);
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('answers a known person with the contact card and the shared facts, encrypted under the same kid', async () => {
    const client = createLivetexLookupClient({ url: lookupUrl(bridge, 'app'), kid: key.kid, key: key.key });
    const answer = await client.lookup({ personId: PERSON }, { requestId: 'req-1' });
    expect(answer).toMatchObject({
      requestId: 'req-1',
      found: true,
      contact: {
        id: expect.any(String),
        name: 'Anna Smirnova',
        emails: ['anna.smirnova@mail.example'],
        phones: ['+79123456789'],
        labels: [],
      },
    });
    // The same facts JivoChat shows (src/contacts/facts.ts): the responsible agent and the person
    // id; what LiveTex itself reported on this channel is left out, its operator sees it already.
    expect(answer.attributes).toEqual(
      expect.arrayContaining([
        { key: 'responsibleAgent', label: 'Responsible', value: 'Oleg Petrov', type: 'string' },
        { key: 'personId', label: 'Customer id', value: PERSON, type: 'string' },
      ]),
    );
    const contact = await bridge.admin<Contact>('GET', `/api/v1/contacts/${answer.contact!.id}`);
    expect(contact.body.identities).toEqual(
      expect.arrayContaining([{ kind: 'person', value: PERSON, provenance: 'verified' }]),
    );
  });

  it('answers customVisitorToken with the same contact: one identifier kind', async () => {
    const client = createLivetexLookupClient({ url: lookupUrl(bridge, 'app'), kid: key.kid, key: key.key });
    const web = await client.lookup({ personId: PERSON });
    const mobile = await client.lookup({ customVisitorToken: PERSON });
    expect(mobile.found).toBe(true);
    expect(mobile.contact?.id).toBe(web.contact?.id);
  });

  it('answers an unknown person with found:false, the same status, content type and ciphertext length', async () => {
    const known = await postLookup(bridge, 'app', await token(key, claimsFor({ personId: PERSON })));
    const unknown = await postLookup(bridge, 'app', await token(key, claimsFor({ personId: 'p-nobody' })));
    expect(known.status).toBe(200);
    expect(unknown.status).toBe(200);
    expect(unknown.headers.get('content-type')).toBe('application/jose');
    expect(known.headers.get('content-type')).toBe('application/jose');
    expect(unknown.text.length).toBe(known.text.length);

    const client = createLivetexLookupClient({ url: lookupUrl(bridge, 'app'), kid: key.kid, key: key.key });
    expect(await client.lookup({ personId: 'p-nobody' }, { requestId: 'r-x' })).toEqual({
      requestId: 'r-x',
      found: false,
      attributes: [],
    });
  });

  it('accepts the JSON envelope {"payload": "<jwe>"}', async () => {
    const body = JSON.stringify({ payload: await token(key, claimsFor({ personId: PERSON })) });
    const response = await postLookup(bridge, 'app', body, 'application/json');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/jose');
  });

  it('refuses key, crypto, time and replay problems with 401 and a JSON code, and nothing else', async () => {
    const good = claimsFor({ personId: PERSON });
    const now = Math.floor(Date.now() / 1000);

    const wrongKid = await sealRequest(good, 'k_doesnotexist', new Uint8Array(randomBytes(32)));
    expect(await refusalOf(bridge, 'app', wrongKid)).toMatchObject({ status: 401, code: 'unknown_key' });

    const genuine = await token(key, claimsFor({ personId: PERSON }));
    const parts = genuine.split('.');
    const ciphertext = Buffer.from(parts[3]!, 'base64url');
    ciphertext[5] = ciphertext[5]! ^ 0x40;
    const tampered = [parts[0], parts[1], parts[2], ciphertext.toString('base64url'), parts[4]].join('.');
    const refused = await refusalOf(bridge, 'app', tampered);
    expect(refused).toMatchObject({ status: 401, code: 'decryption_failed' });
    expect(refused.headers.get('www-authenticate')).toBeNull();
    expect(refused.headers.get('content-type')).toContain('application/json');

    const underOtherKey = await sealRequest(good, key.kid, new Uint8Array(randomBytes(32)));
    expect(await refusalOf(bridge, 'app', underOtherKey)).toMatchObject({
      status: 401,
      code: 'decryption_failed',
    });

    const expired = await token(key, claimsFor({ personId: PERSON }, { iat: now - 400, exp: now - 120 }));
    expect(await refusalOf(bridge, 'app', expired)).toMatchObject({ status: 401, code: 'token_expired' });

    const future = await token(key, claimsFor({ personId: PERSON }, { iat: now + 120, exp: now + 180 }));
    expect(await refusalOf(bridge, 'app', future)).toMatchObject({
      status: 401,
      code: 'token_not_yet_valid',
    });

    const once = await token(key, claimsFor({ personId: PERSON }));
    expect((await postLookup(bridge, 'app', once)).status).toBe(200);
    expect(await refusalOf(bridge, 'app', once)).toMatchObject({ status: 401, code: 'replayed_token' });
    // `good` was only refused before its jti counted (unknown key, wrong key): first use passes;
    // a fresh encryption of the same claims (new IV, new ciphertext) is still a replay.
    expect((await postLookup(bridge, 'app', await token(key, good))).status).toBe(200);
    expect(await refusalOf(bridge, 'app', await token(key, good))).toMatchObject({
      status: 401,
      code: 'replayed_token',
    });
  });

  it('refuses malformed bodies and claims with 400', async () => {
    const both = await token(key, claimsFor({ personId: PERSON, customVisitorToken: PERSON }));
    expect(await refusalOf(bridge, 'app', both)).toMatchObject({ status: 400, code: 'invalid_claims' });
    const neither = await token(key, claimsFor({}));
    expect(await refusalOf(bridge, 'app', neither)).toMatchObject({ status: 400, code: 'invalid_claims' });
    const noJti = await token(key, claimsFor({ personId: PERSON }, { jti: undefined }));
    expect(await refusalOf(bridge, 'app', noJti)).toMatchObject({ status: 400, code: 'invalid_claims' });
    const now = Math.floor(Date.now() / 1000);
    const tooLong = await token(key, claimsFor({ personId: PERSON }, { iat: now, exp: now + 600 }));
    expect(await refusalOf(bridge, 'app', tooLong)).toMatchObject({ status: 400, code: 'invalid_claims' });

    expect(await refusalOf(bridge, 'app', 'not a jwe')).toMatchObject({
      status: 400,
      code: 'malformed_request',
    });
    expect(await refusalOf(bridge, 'app', '{"payload":', 'application/json')).toMatchObject({
      status: 400,
      code: 'invalid_json',
    });
    expect(await refusalOf(bridge, 'app', '{"token":"abc"}', 'application/json')).toMatchObject({
      status: 400,
      code: 'malformed_request',
    });
    expect(await refusalOf(bridge, 'app', '')).toMatchObject({ status: 400, code: 'malformed_request' });
  });

  it("says what is wrong with a JSON envelope in words, not zod's", async () => {
    // {} answered `payload: Invalid input: expected string, received undefined`, and
    // {"payload": ""} `Too small: expected string to have >=1 characters`.
    const cases: Array<[string, string]> = [
      ['{}', 'required'],
      ['{"payload":5}', 'the compact JWE, as a string'],
      ['{"payload":""}', 'the compact JWE, as a string'],
    ];
    for (const [body, said] of cases) {
      const response = await postLookup(bridge, 'app', body, 'application/json');
      expect(response.status, body).toBe(400);
      const { error } = JSON.parse(response.text) as { error: { code: string; issues: unknown[] } };
      expect(error.code, body).toBe('malformed_request');
      expect(error.issues, body).toEqual([{ path: 'payload', message: said }]);
    }
  });

  it('does not answer for another channel: there the key is no key (as an unknown kid on a known channel)', async () => {
    const response = await postLookup(bridge, 'nope', await token(key, claimsFor({ personId: PERSON })));
    expect(response.status).toBe(401);
  });

  it('reports refusals through the client helper with their code', async () => {
    const client = createLivetexLookupClient({
      url: lookupUrl(bridge, 'app'),
      kid: 'k_unknownkid',
      key: randomBytes(32).toString('base64url'),
    });
    await expect(client.lookup({ personId: PERSON })).rejects.toMatchObject({
      name: 'LivetexLookupError',
      status: 401,
      code: 'unknown_key',
    });
    await expect(client.lookup({ personId: PERSON })).rejects.toBeInstanceOf(LivetexLookupError);
  });
});

describe('livetex lookup: one answer size whatever the card holds', () => {
  const MANY = 'p-many-typed-emails';
  let bridge: TestBridge;
  let key: GeneratedKey;

  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: [livetexChannel('app')] } });
    key = await generateKey(bridge, 'app');
    // 100 visitor-typed e-mails of ~120 characters: a card far over the answer size. One
    // observation attaches at most limits.identifiersPerKind (20) e-mails, so five dialogs.
    for (let dialog = 0; dialog < 5; dialog++) {
      const contacts = Array.from({ length: 20 }, (_, index) => ({
        type: 'email',
        value: `visitor.typed.${dialog * 20 + index}.${'p'.repeat(90)}@mail.example`,
      }));
      const webhook = await bridge.post('/webhooks/livetex/app/app-webhook-token-0123456789', {
        event: 'dialog_closed',
        conversation: { conversationId: `c-many-${dialog}`, startedAt: 1741950000, endedAt: 1741950600 },
        discourser: { name: 'Many', personId: MANY, contacts },
        employee: [],
      });
      expect(webhook.status).toBe(200);
    }
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('seals a found answer with a huge card to the length of a not-found one', async () => {
    const known = await postLookup(bridge, 'app', await token(key, claimsFor({ personId: MANY })));
    const unknown = await postLookup(bridge, 'app', await token(key, claimsFor({ personId: 'p-nobody' })));
    expect(known.status).toBe(200);
    expect(unknown.status).toBe(200);
    expect(known.text.length).toBe(unknown.text.length);

    const client = createLivetexLookupClient({ url: lookupUrl(bridge, 'app'), kid: key.kid, key: key.key });
    const answer = await client.lookup({ personId: MANY });
    expect(answer.found).toBe(true);
    expect(answer.truncated).toBe(true);
    const emails = answer.contact?.emails ?? [];
    expect(emails.length).toBeGreaterThan(0);
    // Only values still on the card are listed as not verified, and these all are.
    expect(answer.contact?.notVerified).toEqual(emails);
  });
});

describe("livetex lookup: other channels' values reach LiveTex's agents shown safely", () => {
  const VISITOR = 'p-hostile-attributes';
  let bridge: TestBridge;
  let key: GeneratedKey;

  beforeAll(async () => {
    // Another channel (the web) reports the attributes; the app channel's operator is shown them.
    bridge = await startTestBridge({ config: { channels: [livetexChannel('web'), livetexChannel('app')] } });
    key = await generateKey(bridge, 'app');
    // Raw JSON so that the escapes reach the bridge as a vendor would send them.
    const webhook = await bridge.post(
      '/webhooks/livetex/web/web-webhook-token-0123456789',
      `{"Conversation":{"id":"c-hostile"},"discourser":{"personId":"${VISITOR}","attributes":{` +
        `"bidi":"\\u202egnp.exe","control":"red\\u001b[31m alert\\u0007","emoji":"${'x'.repeat(1023)}\\ud83d\\ude00",` +
        `"lone":"a\\ud800b","\\u202elabel":"v"}},"employee":[]}`,
      { 'content-type': 'application/json' },
    );
    expect(webhook.status).toBe(200);
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('drops controls and bidi overrides, never cuts an emoji in half, and writes no lone surrogate', async () => {
    const response = await postLookup(bridge, 'app', await token(key, claimsFor({ personId: VISITOR })));
    expect(response.status).toBe(200);
    const { plaintext } = await compactDecrypt(
      response.text,
      new Uint8Array(Buffer.from(key.key, 'base64url')),
    );
    const json = new TextDecoder().decode(plaintext);
    // `\ud83d` alone makes strict JSON readers (PHP's json_decode, Rust's serde_json) refuse the whole card.
    expect(json).not.toMatch(/\\ud[89a-f][0-9a-f]{2}/i);
    const answer = JSON.parse(json) as {
      found: boolean;
      attributes: { key: string; label: string; value: string }[];
    };
    expect(answer.found).toBe(true);
    const shown = new Map(answer.attributes.map((attribute) => [attribute.key, attribute]));
    expect(shown.get('attr.bidi')?.value).toBe('gnp.exe');
    expect(shown.get('attr.control')?.value).toBe('red[31m alert');
    expect(shown.get('attr.lone')?.value).toBe('a\uFFFDb');
    // 1023 + the emoji's two UTF-16 units is over 1024: the emoji goes whole, not its first half.
    expect(shown.get('attr.emoji')?.value).toBe('x'.repeat(1023));
    const label = [...shown.values()].find((attribute) => attribute.value === 'v')?.label;
    expect(label).toBe('label');
    for (const attribute of answer.attributes) {
      expect(`${attribute.label}${attribute.value}`).not.toMatch(/[\p{Cc}\u202A-\u202E\u2066-\u2069]/u);
    }
  });

  it('refuses a requestId with a lone surrogate (400): it could not be echoed as sent', async () => {
    expect(
      await refusalOf(
        bridge,
        'app',
        await token(key, claimsFor({ personId: VISITOR }, { requestId: 'r\ud800' })),
      ),
    ).toMatchObject({ status: 400, code: 'invalid_claims' });
  });
});

describe('livetex keys through the admin API', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: [livetexChannel('app')] }, start: false });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('generates (201, key shown once), lists (never the key) and revokes (404 for an unknown kid)', async () => {
    const generated = await generateKey(bridge, 'app');
    expect(generated).toEqual({
      kid: expect.any(String),
      key: expect.any(String),
      createdAt: expect.any(String),
    });
    expect(Buffer.from(generated.key, 'base64url')).toHaveLength(32);

    const listed = await bridge.admin('GET', '/api/v1/channels/app/keys');
    expect(listed.status).toBe(200);
    expect(listed.body).toEqual({
      keys: [{ kid: generated.kid, createdAt: generated.createdAt, revokedAt: null }],
    });
    expect(JSON.stringify(listed.body)).not.toContain(generated.key);

    const revoked = await bridge.admin('DELETE', `/api/v1/channels/app/keys/${generated.kid}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ kid: generated.kid, revokedAt: expect.any(String) });
    const unknown = await bridge.admin('DELETE', '/api/v1/channels/app/keys/k_unknown');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('unknown_key');
  });

  it('needs the admin token', async () => {
    const response = await fetch(`${bridge.url}/api/v1/channels/app/keys`, { method: 'POST' });
    expect(response.status).toBe(401);
  });

  it('rotates: two kids valid at once; revoking one stops it at once and leaves the other working', async () => {
    const oldKey = await generateKey(bridge, 'app');
    const newKey = await generateKey(bridge, 'app');
    const oldClient = createLivetexLookupClient({
      url: lookupUrl(bridge, 'app'),
      kid: oldKey.kid,
      key: oldKey.key,
    });
    const newClient = createLivetexLookupClient({
      url: lookupUrl(bridge, 'app'),
      kid: newKey.kid,
      key: newKey.key,
    });
    expect((await oldClient.lookup({ personId: 'p-1' })).found).toBe(false);
    expect((await newClient.lookup({ personId: 'p-1' })).found).toBe(false);

    expect((await bridge.admin('DELETE', `/api/v1/channels/app/keys/${oldKey.kid}`)).status).toBe(200);
    await expect(oldClient.lookup({ personId: 'p-1' })).rejects.toMatchObject({
      status: 401,
      code: 'revoked_key',
    });
    expect((await newClient.lookup({ personId: 'p-1' })).requestId).toEqual(expect.any(String));
  });
});

describe('livetex lookup deadline', () => {
  let bridge: TestBridge;
  let crm: Server;
  let crmUrl: string;
  const pending = new Set<NodeJS.Timeout>();

  beforeAll(async () => {
    // A fake company CRM: /fast answers at once, /slow after 3 s.
    crm = createServer((request, response) => {
      const answer = () => {
        response.setHeader('content-type', 'application/json');
        response.end(
          JSON.stringify({
            attributes: [
              { key: `crm.${request.url?.slice(1)}`, label: 'Segment', value: 'VIP', type: 'string' },
            ],
            crmLink: `https://crm.example/contacts/${request.url?.slice(1)}`,
          }),
        );
      };
      if (request.url === '/slow') {
        const timer = setTimeout(answer, 20_000);
        pending.add(timer);
        response.on('close', () => clearTimeout(timer));
      } else answer();
    });
    await new Promise<void>((resolve) => crm.listen(0, '127.0.0.1', resolve));
    crmUrl = `http://127.0.0.1:${(crm.address() as AddressInfo).port}`;

    bridge = await startTestBridge({
      config: { channels: [livetexChannel('app', { lookupDeadlineMs: 1000 })] },
      start: false,
    });
    // The core's attribute sources (config attributeSources) plug in here; these call the fake CRM.
    for (const path of ['slow', 'fast']) {
      bridge.bridge.context.facts.addSource({
        id: path,
        async lookup(contact, signal) {
          const response = await fetch(`${crmUrl}/${path}`, {
            method: 'POST',
            body: JSON.stringify({ contact }),
            signal,
          });
          const body = (await response.json()) as {
            attributes: { key: string; label: string; value: string }[];
            crmLink: string;
          };
          return {
            facts: body.attributes.map((fact) => ({ ...fact, type: 'string' as const })),
            crmLink: body.crmLink,
          };
        },
      });
    }
    const webhook = await bridge.post(
      `/webhooks/livetex/app/app-webhook-token-0123456789`,
      fixture('dialog_closed.web.json'),
      {
        'content-type': 'application/json',
      },
    );
    expect(webhook.status).toBe(200);
  });
  afterAll(async () => {
    for (const timer of pending) clearTimeout(timer);
    await bridge?.close();
    crm.closeAllConnections();
    await new Promise((resolve) => crm.close(resolve));
  });

  it("answers within lookupDeadlineMs without the slow source, with the fast source's facts and crmLink", async () => {
    const key = await generateKey(bridge, 'app');
    const client = createLivetexLookupClient({ url: lookupUrl(bridge, 'app'), kid: key.kid, key: key.key });
    // The slow source would answer after 20 s: an answer without its facts is the deadline's work.
    const answer = await client.lookup({ personId: PERSON });
    expect(answer.found).toBe(true);
    expect(answer.crmLink).toBe('https://crm.example/contacts/fast');
    const keys = answer.attributes.map((attribute) => attribute.key);
    expect(keys).toContain('crm.fast');
    expect(keys).not.toContain('crm.slow');
  });
});

describe('livetex lookup across two instances sharing one Redis', () => {
  const keyPrefix = uniquePrefix('livetex-two');
  const masterKey = randomBytes(32).toString('base64');
  let one: TestBridge;
  let two: TestBridge;

  beforeAll(async () => {
    const config = { secrets: { masterKey }, channels: [livetexChannel('app')] };
    one = await startTestBridge({ store: 'redis', keyPrefix, config, start: false });
    two = await startTestBridge({ store: 'redis', keyPrefix, config, start: false });
  });
  afterAll(async () => {
    await one?.close();
    await two?.close();
    await cleanupPrefix(await getTestRedisUrl(), keyPrefix);
  });

  it('a key made on one instance works on the other; revoking on one refuses at once on the other', async () => {
    const kept = await generateKey(one, 'app');
    const rotated = await generateKey(one, 'app');
    const onTwo = createLivetexLookupClient({
      url: lookupUrl(two, 'app'),
      kid: rotated.kid,
      key: rotated.key,
    });
    const keptOnTwo = createLivetexLookupClient({ url: lookupUrl(two, 'app'), kid: kept.kid, key: kept.key });
    expect((await onTwo.lookup({ personId: 'p-2' })).found).toBe(false);

    expect((await one.admin('DELETE', `/api/v1/channels/app/keys/${rotated.kid}`)).status).toBe(200);
    await expect(onTwo.lookup({ personId: 'p-2' })).rejects.toMatchObject({
      status: 401,
      code: 'revoked_key',
    });
    expect((await keptOnTwo.lookup({ personId: 'p-2' })).found).toBe(false);
    expect((await two.admin('GET', '/api/v1/channels/app/keys')).body.keys).toHaveLength(2);
  });

  it('decides on the stored record, not the key an instance kept: revoked elsewhere, the next token is refused unspent', async () => {
    const key = await generateKey(one, 'app');
    const onTwo = createLivetexLookupClient({ url: lookupUrl(two, 'app'), kid: key.kid, key: key.key });
    // Two has opened the key and keeps it; the lookups after this one read no key record first.
    expect((await onTwo.lookup({ personId: 'p-3' })).found).toBe(false);
    expect((await one.admin('DELETE', `/api/v1/channels/app/keys/${key.kid}`)).status).toBe(200);
    // The token opens with the key two kept and is in time: the claim finds the record revoked.
    const claims = claimsFor({ personId: 'p-3' });
    expect(await refusalOf(two, 'app', await token(key, claims))).toMatchObject({
      status: 401,
      code: 'revoked_key',
    });
    // Nothing spent: the jti was not claimed.
    const { key: jtiKey } = jtiClaim('app', claims, 30, new Date());
    expect(await two.bridge.store.get(jtiKey)).toBeNull();
    expect(await refusalOf(two, 'app', await token(key, claims))).toMatchObject({ code: 'revoked_key' });
  });

  it('keeps the order of trust with a kept key: a token it does not open is refused as the stored record says', async () => {
    const key = await generateKey(one, 'app');
    const onTwo = createLivetexLookupClient({ url: lookupUrl(two, 'app'), kid: key.kid, key: key.key });
    expect((await onTwo.lookup({ personId: 'p-4' })).found).toBe(false);
    // Still kept on two: an expired token and a tampered one say what is wrong with them.
    const now = Math.floor(Date.now() / 1000);
    const expired = await token(key, claimsFor({ personId: 'p-4' }, { iat: now - 400, exp: now - 120 }));
    expect(await refusalOf(two, 'app', expired)).toMatchObject({ status: 401, code: 'token_expired' });
    const parts = (await token(key, claimsFor({ personId: 'p-4' }))).split('.');
    const tag = Buffer.from(parts[4]!, 'base64url');
    tag[0] = tag[0]! ^ 0x01;
    const tampered = [parts[0], parts[1], parts[2], parts[3], tag.toString('base64url')].join('.');
    expect(await refusalOf(two, 'app', tampered)).toMatchObject({ status: 401, code: 'decryption_failed' });
    // Revoked on one while two keeps the key: the revocation comes first, as the key's state
    // comes before the token's in the order of checks.
    expect((await one.admin('DELETE', `/api/v1/channels/app/keys/${key.kid}`)).status).toBe(200);
    expect(await refusalOf(two, 'app', expired)).toMatchObject({ status: 401, code: 'revoked_key' });
  });

  it('a token used on one instance is a replay on the other', async () => {
    const key = await generateKey(two, 'app');
    const body = await token(key, claimsFor({ personId: 'p-2' }));
    expect((await postLookup(one, 'app', body)).status).toBe(200);
    expect(await refusalOf(two, 'app', body)).toMatchObject({ status: 401, code: 'replayed_token' });
  });
});
