import { createCipheriv, createSecretKey, randomBytes, randomUUID } from 'node:crypto';
import { CompactEncrypt, compactDecrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import {
  ANSWER_BYTES,
  bridgeJweCodec,
  buildClaims,
  fitAnswer,
  JOSE_CONTENT_TYPE,
  type LookupAnswer,
  LookupAnswerError,
  type LookupClaims,
  openAnswer,
  sealRequest,
} from './codec.js';

const key = new Uint8Array(randomBytes(32));
const kid = 'k_test';
const now = new Date('2025-03-14T10:00:00Z');
const nowSeconds = now.getTime() / 1000;
const clock = { now, maxSkewSeconds: 30 };

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...buildClaims({ subject: { personId: 'p-1' }, requestId: 'r-1', jti: randomUUID(), iat: nowSeconds }),
    ...overrides,
  };
}

async function open(
  body: string | Buffer,
  contentType: string | undefined = JOSE_CONTENT_TYPE,
): Promise<LookupClaims> {
  const sealed = bridgeJweCodec.readRequest(Buffer.isBuffer(body) ? body : Buffer.from(body), contentType);
  return bridgeJweCodec.openRequest(sealed, key, clock);
}

async function refusal(promise: Promise<unknown>): Promise<{ status: number; code: string }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AppError) return { status: error.status, code: error.code };
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('bridgeJweCodec: requests', () => {
  it('opens a compact JWE sent as application/jose and reads kid from the protected header', async () => {
    const token = await sealRequest(claims(), kid, key);
    expect(bridgeJweCodec.readRequest(Buffer.from(token), 'application/jose').kid).toBe(kid);
    await expect(open(token)).resolves.toMatchObject({ personId: 'p-1', requestId: 'r-1' });
  });

  it('opens the JSON envelope {"payload"} and mobile customVisitorToken claims', async () => {
    const token = await sealRequest(claims({ personId: undefined, customVisitorToken: 'p-1' }), kid, key);
    const body = JSON.stringify({ payload: token });
    await expect(open(body, 'application/json; charset=utf-8')).resolves.toMatchObject({
      customVisitorToken: 'p-1',
    });
    // Neither known content type: read by the first character.
    await expect(open(body, 'text/plain')).resolves.toMatchObject({ customVisitorToken: 'p-1' });
    expect(bridgeJweCodec.readRequest(Buffer.from(body), undefined).kid).toBe(kid);
    expect(bridgeJweCodec.readRequest(Buffer.from(token), undefined).kid).toBe(kid);
  });

  it('refuses malformed bodies with 400', async () => {
    const token = await sealRequest(claims(), kid, key);
    expect(await refusal(open(''))).toEqual({ status: 400, code: 'malformed_request' });
    expect(await refusal(open('hello'))).toEqual({ status: 400, code: 'malformed_request' });
    expect(await refusal(open('{"payload":', 'application/json'))).toEqual({
      status: 400,
      code: 'invalid_json',
    });
    expect(await refusal(open('{"jwe":"x"}', 'application/json'))).toEqual({
      status: 400,
      code: 'malformed_request',
    });
    expect(await refusal(open(JSON.stringify({ payload: token, extra: 1 }), 'application/json'))).toEqual({
      status: 400,
      code: 'malformed_request',
    });
    // Five parts, but the header is not JSON.
    expect(await refusal(open(`AAAA${token.slice(token.indexOf('.'))}`))).toEqual({
      status: 400,
      code: 'malformed_request',
    });
  });

  it('refuses other algorithms, compression and a missing kid with 400', async () => {
    const plaintext = new TextEncoder().encode(JSON.stringify(claims()));
    const a128 = await new CompactEncrypt(plaintext)
      .setProtectedHeader({ alg: 'dir', enc: 'A128GCM', kid })
      .encrypt(new Uint8Array(randomBytes(16)));
    expect(await refusal(open(a128))).toEqual({ status: 400, code: 'unsupported_algorithm' });
    const noKid = await new CompactEncrypt(plaintext)
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
      .encrypt(key);
    expect(await refusal(open(noKid))).toEqual({ status: 400, code: 'missing_kid' });
  });

  it('refuses a tampered ciphertext or tag, and a different key, with 401 decryption_failed', async () => {
    const token = await sealRequest(claims(), kid, key);
    const parts = token.split('.');
    const ciphertext = Buffer.from(parts[3]!, 'base64url');
    ciphertext[0] = ciphertext[0]! ^ 1;
    const tampered = [parts[0], parts[1], parts[2], ciphertext.toString('base64url'), parts[4]].join('.');
    expect(await refusal(open(tampered))).toEqual({ status: 401, code: 'decryption_failed' });
    const tag = Buffer.from(parts[4]!, 'base64url');
    tag[3] = tag[3]! ^ 0x80;
    expect(await refusal(open([...parts.slice(0, 4), tag.toString('base64url')].join('.')))).toEqual({
      status: 401,
      code: 'decryption_failed',
    });
    const other = await sealRequest(claims(), kid, new Uint8Array(randomBytes(32)));
    expect(await refusal(open(other))).toEqual({ status: 401, code: 'decryption_failed' });
  });

  it('authenticates the protected header, and refuses an IV or tag of the wrong length or an encrypted key part', async () => {
    // The bridge opens with node:crypto, the caller seals with jose: these are the places where a
    // hand-written opener could be laxer than the RFC.
    const token = await sealRequest(claims(), kid, key);
    const [header, , iv, ciphertext, tag] = token.split('.') as [string, string, string, string, string];
    const failed = { status: 401, code: 'decryption_failed' };
    // Same alg/enc/kid, different header bytes (the AAD): must not open.
    const reordered = Buffer.from(JSON.stringify({ kid, enc: 'A256GCM', alg: 'dir', typ: 'JWT' })).toString(
      'base64url',
    );
    expect(await refusal(open([reordered, '', iv, ciphertext, tag].join('.')))).toEqual(failed);
    // AES-GCM itself takes an IV of any length; RFC 7518 §5.3 requires 96 bits. Sealed properly
    // under an 8-byte IV, the token must still be refused.
    const shortIv = randomBytes(8);
    const cipher = createCipheriv('aes-256-gcm', key, shortIv);
    cipher.setAAD(Buffer.from(header, 'latin1'));
    const body = Buffer.concat([cipher.update(JSON.stringify(claims()), 'utf8'), cipher.final()]);
    const withShortIv = [header, '', shortIv.toString('base64url'), body.toString('base64url')];
    expect(
      await refusal(open([...withShortIv, cipher.getAuthTag().toString('base64url')].join('.'))),
    ).toEqual(failed);
    const shortTag = Buffer.from(tag, 'base64url').subarray(0, 12).toString('base64url');
    expect(await refusal(open([header, '', iv, ciphertext, shortTag].join('.')))).toEqual(failed);
    expect(await refusal(open([header, 'AAAA', iv, ciphertext, tag].join('.')))).toEqual(failed);
    // The untouched token still opens, with the raw key and with the KeyObject keys.ts caches.
    await expect(open(token)).resolves.toMatchObject({ personId: 'p-1' });
    const sealed = bridgeJweCodec.readRequest(Buffer.from(token), JOSE_CONTENT_TYPE);
    await expect(bridgeJweCodec.openRequest(sealed, createSecretKey(key), clock)).resolves.toMatchObject({
      personId: 'p-1',
    });
  });

  it('reads a repeated protected header as the first time: kept only when accepted, every kid its own', async () => {
    // readRequest keeps what an accepted header text said (its kid) and reads a refused one every
    // time: the same refusal on every repeat, and a kid per header text even past the kept count.
    const plaintext = new TextEncoder().encode(JSON.stringify(claims()));
    const zipped = await new CompactEncrypt(plaintext)
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid, zip: 'DEF' })
      .encrypt(key);
    for (let round = 0; round < 3; round++)
      expect(await refusal(open(zipped))).toEqual({ status: 400, code: 'unsupported_algorithm' });
    const token = await sealRequest(claims(), kid, key);
    const [header, , iv, ciphertext, tag] = token.split('.') as [string, string, string, string, string];
    for (let round = 0; round < 3; round++)
      await expect(open(token)).resolves.toMatchObject({ personId: 'p-1' });
    // The kept header does not vouch for the rest of the token: the same header, a changed tag.
    const flipped = Buffer.from(tag, 'base64url');
    flipped[0] = flipped[0]! ^ 1;
    expect(
      await refusal(open([header, '', iv, ciphertext, flipped.toString('base64url')].join('.'))),
    ).toEqual({
      status: 401,
      code: 'decryption_failed',
    });
    const headerOf = (each: string) =>
      Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid: each })).toString('base64url');
    const kids = Array.from({ length: 1500 }, (_, index) => `k_${index}`);
    for (const each of [...kids, ...kids.slice(0, 10)]) {
      const body = Buffer.from(`${headerOf(each)}..${iv}.${ciphertext}.${tag}`);
      expect(bridgeJweCodec.readRequest(body, JOSE_CONTENT_TYPE).kid).toBe(each);
    }
    // A header too long to be kept is read each time, alike.
    const long = Buffer.from(
      JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid, note: 'x'.repeat(600) }),
    ).toString('base64url');
    for (let round = 0; round < 2; round++)
      expect(
        bridgeJweCodec.readRequest(Buffer.from(`${long}..${iv}.${ciphertext}.${tag}`), undefined).kid,
      ).toBe(kid);
  });

  it('opens requests of any size one after another, each with its own bytes', async () => {
    // The parts are decoded into one buffer that every request reuses (and that grows for a large
    // one): a large request between two small ones, a small one refused after a large one.
    const small = await sealRequest(claims({ requestId: 'r-small' }), kid, key);
    const large = await sealRequest(claims({ extra: 'y'.repeat(20_000) }), kid, key);
    const other = await sealRequest(claims({ requestId: 'r-other', personId: 'p-2' }), kid, key);
    await expect(open(small)).resolves.toMatchObject({ requestId: 'r-small', personId: 'p-1' });
    // Opened (the claims are read after decryption), then refused for the unknown claim.
    expect(await refusal(open(large))).toEqual({ status: 400, code: 'invalid_claims' });
    await expect(open(other)).resolves.toMatchObject({ requestId: 'r-other', personId: 'p-2' });
    const parts = small.split('.');
    const cut = Buffer.from(parts[3]!, 'base64url').subarray(1).toString('base64url');
    expect(await refusal(open([parts[0], '', parts[2], cut, parts[4]].join('.')))).toEqual({
      status: 401,
      code: 'decryption_failed',
    });
    await expect(open(small)).resolves.toMatchObject({ requestId: 'r-small' });
  });

  it('refuses a protected header nested deeper than 64 levels with 400, as a body would be', async () => {
    // Anyone can send a header (it is read before anything is authenticated); this one also opens.
    const nested = `${'['.repeat(65)}${']'.repeat(65)}`;
    const header = Buffer.from(`{"alg":"dir","enc":"A256GCM","kid":"${kid}","x":${nested}}`).toString(
      'base64url',
    );
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(header, 'latin1'));
    const ciphertext = Buffer.concat([cipher.update(JSON.stringify(claims())), cipher.final()]);
    const token = [header, '', iv, ciphertext, cipher.getAuthTag()]
      .map((part) => (typeof part === 'string' ? part : part.toString('base64url')))
      .join('.');
    expect(await refusal(open(token))).toEqual({ status: 400, code: 'malformed_request' });
  });

  it('quotes a refused alg or enc briefly and shown safely: the message goes back to whoever sent it', () => {
    // Refused before any key is read, so the other parts need only be well-formed.
    const header = Buffer.from(
      JSON.stringify({ alg: `none\u202e\ud800${'x'.repeat(5000)}`, enc: 'A256GCM', kid }),
    ).toString('base64url');
    const token = `${header}..${'A'.repeat(16)}.${'A'.repeat(8)}.${'A'.repeat(22)}`;
    let refused: unknown;
    try {
      bridgeJweCodec.readRequest(Buffer.from(token), JOSE_CONTENT_TYPE);
    } catch (error) {
      refused = error;
    }
    expect(refused).toMatchObject({ status: 400, code: 'unsupported_algorithm' });
    const message = (refused as Error).message;
    expect(message).toContain('got alg "none');
    expect(message.length).toBeLessThan(200);
    expect(message).not.toMatch(/[\u202e\ud800-\udfff]/u);
  });

  it('refuses critical header extensions (crit) with 400', async () => {
    // jose will not seal a crit it does not know, so the header is made by hand.
    const header = Buffer.from(
      JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid, crit: ['x-ext'], 'x-ext': 1 }),
    );
    const rest = (await sealRequest(claims(), kid, key)).split('.').slice(1).join('.');
    expect(await refusal(open(`${header.toString('base64url')}.${rest}`))).toEqual({
      status: 400,
      code: 'unsupported_algorithm',
    });
  });

  it('requires exactly one identifier and every claim (400 invalid_claims)', async () => {
    const both = await sealRequest(claims({ customVisitorToken: 'p-1' }), kid, key);
    expect(await refusal(open(both))).toEqual({ status: 400, code: 'invalid_claims' });
    const neither = await sealRequest(claims({ personId: undefined }), kid, key);
    expect(await refusal(open(neither))).toEqual({ status: 400, code: 'invalid_claims' });
    for (const missing of ['requestId', 'iat', 'exp', 'jti']) {
      const token = await sealRequest(claims({ [missing]: undefined }), kid, key);
      expect(await refusal(open(token)), missing).toEqual({ status: 400, code: 'invalid_claims' });
    }
    const unknownClaim = await sealRequest(claims({ role: 'admin' }), kid, key);
    expect(await refusal(open(unknownClaim))).toEqual({ status: 400, code: 'invalid_claims' });
    const notJson = await new CompactEncrypt(new TextEncoder().encode('personId=p-1'))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid })
      .encrypt(key);
    expect(await refusal(open(notJson))).toEqual({ status: 400, code: 'invalid_claims' });
  });

  it('limits the lifetime to 300 s after iat (400: outside the protocol)', async () => {
    await expect(open(await sealRequest(claims({ exp: nowSeconds + 300 }), kid, key))).resolves.toBeTruthy();
    const tooLong = await sealRequest(claims({ exp: nowSeconds + 301 }), kid, key);
    expect(await refusal(open(tooLong))).toEqual({ status: 400, code: 'invalid_claims' });
    const backwards = await sealRequest(claims({ exp: nowSeconds - 1 }), kid, key);
    expect(await refusal(open(backwards))).toEqual({ status: 400, code: 'invalid_claims' });
  });

  it('applies ±30 s of clock skew to iat, nbf and exp (401)', async () => {
    // iat 30 s ahead is tolerated, 31 s is not.
    await expect(
      open(await sealRequest(claims({ iat: nowSeconds + 30, exp: nowSeconds + 90 }), kid, key)),
    ).resolves.toBeTruthy();
    const future = await sealRequest(claims({ iat: nowSeconds + 31, exp: nowSeconds + 90 }), kid, key);
    expect(await refusal(open(future))).toEqual({ status: 401, code: 'token_not_yet_valid' });
    const notBefore = await sealRequest(claims({ nbf: nowSeconds + 60 }), kid, key);
    expect(await refusal(open(notBefore))).toEqual({ status: 401, code: 'token_not_yet_valid' });
    // exp 29 s ago is still inside the skew, 30 s ago is expired.
    await expect(
      open(await sealRequest(claims({ iat: nowSeconds - 89, exp: nowSeconds - 29 }), kid, key)),
    ).resolves.toBeTruthy();
    const expired = await sealRequest(claims({ iat: nowSeconds - 90, exp: nowSeconds - 30 }), kid, key);
    expect(await refusal(open(expired))).toEqual({ status: 401, code: 'token_expired' });
  });
});

describe('bridgeJweCodec: answers', () => {
  it('round-trips an answer under the same kid, as application/jose', async () => {
    const answer = {
      requestId: 'r-1',
      found: true,
      attributes: [{ key: 'a', label: 'A', value: '1', type: 'number' }],
    };
    const sealed = await bridgeJweCodec.sealAnswer(answer, kid, key);
    expect(sealed.contentType).toBe('application/jose');
    await expect(openAnswer(sealed.body, kid, key)).resolves.toEqual(answer);
    await expect(openAnswer(sealed.body, 'k_other', key)).rejects.toBeInstanceOf(LookupAnswerError);
  });

  it('seals answers that jose opens: dir + A256GCM under the request kid, a fresh IV each time', async () => {
    const answer = { requestId: 'r-2', found: false, attributes: [] };
    const first = await bridgeJweCodec.sealAnswer(answer, kid, createSecretKey(key));
    const second = await bridgeJweCodec.sealAnswer(answer, kid, key);
    const opened = await compactDecrypt(first.body, key, {
      keyManagementAlgorithms: ['dir'],
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    expect(opened.protectedHeader).toEqual({ alg: 'dir', enc: 'A256GCM', kid });
    expect(JSON.parse(new TextDecoder().decode(opened.plaintext))).toEqual(answer);
    expect(first.body.toString('latin1').split('.')[1]).toBe('');
    expect(first.body.toString('latin1').split('.')[2]).not.toBe(
      second.body.toString('latin1').split('.')[2],
    );
    await expect(compactDecrypt(first.body, new Uint8Array(randomBytes(32)))).rejects.toThrow();
  });

  it('writes a lone surrogate on the card as U+FFFD, which strict JSON readers accept', async () => {
    const answer = {
      requestId: 'r-3',
      found: true,
      attributes: [{ key: 'half', label: 'Half an emoji \ud83d', value: 'a\ud800b', type: 'string' }],
    };
    const sealed = await bridgeJweCodec.sealAnswer(answer, kid, key);
    const { plaintext } = await compactDecrypt(sealed.body, key);
    const json = new TextDecoder().decode(plaintext);
    expect(json).not.toMatch(/\\ud[89a-f][0-9a-f]{2}/i);
    expect(JSON.parse(json).attributes[0]).toMatchObject({
      label: 'Half an emoji \uFFFD',
      value: 'a\uFFFDb',
    });
    expect(plaintext.length).toBe(ANSWER_BYTES);
  });

  it('pads found and not-found answers to the same ciphertext length', async () => {
    const notFound = await bridgeJweCodec.sealAnswer(
      { requestId: 'r-1', found: false, attributes: [] },
      kid,
      key,
    );
    const found = await bridgeJweCodec.sealAnswer(
      {
        requestId: 'r-1',
        found: true,
        contact: {
          id: 'c_1',
          name: 'Anna Smirnova',
          emails: ['anna@mail.example'],
          phones: ['+79123456789'],
          labels: ['vip'],
        },
        attributes: Array.from({ length: 12 }, (_, index) => ({
          key: `attr.${index}`,
          label: `Attribute ${index}`,
          value: `value number ${index}`,
          type: 'string',
        })),
        crmLink: 'https://crm.example/contacts/1',
      },
      kid,
      key,
    );
    expect(found.body.length).toBe(notFound.body.length);
  });

  it('fits any card within the answer size, listing as not verified only values still on the card', async () => {
    const typed = Array.from(
      { length: 100 },
      (_, index) => `visitor.typed.${index}.${'p'.repeat(90)}@mail.example`,
    );
    // Characters JSON escapes to six bytes each: the worst case for every length cut.
    const escaped = (length: number) => '\u0001'.repeat(length);
    const cards: LookupAnswer[] = [
      {
        requestId: 'r-1',
        found: true,
        contact: { id: 'c_1', name: 'Many', emails: typed, phones: [], labels: [], notVerified: typed },
        attributes: [],
      },
      {
        requestId: 'r'.repeat(128),
        found: true,
        contact: {
          id: 'c_2',
          name: escaped(5000),
          emails: Array.from({ length: 50 }, (_, index) => `${escaped(300)}${index}`),
          phones: Array.from({ length: 50 }, (_, index) => `+7${escaped(60)}${index}`),
          labels: Array.from({ length: 500 }, (_, index) => `${escaped(200)}${index}`),
          notVerified: Array.from({ length: 50 }, (_, index) => `${escaped(300)}${index}`),
        },
        attributes: Array.from({ length: 50 }, (_, index) => ({
          key: `k${index}`,
          label: 'L',
          value: 'v'.repeat(2000),
          type: 'string',
        })),
        crmLink: `https://crm.example/${'x'.repeat(20_000)}`,
      },
    ];
    const notFound = await bridgeJweCodec.sealAnswer(
      { requestId: 'r-1', found: false, attributes: [] },
      kid,
      key,
    );
    for (const card of cards) {
      const fitted = fitAnswer(card);
      expect(Buffer.byteLength(JSON.stringify(fitted), 'utf8')).toBeLessThanOrEqual(ANSWER_BYTES);
      expect(fitted.truncated).toBe(true);
      expect(fitted.found).toBe(true);
      expect(fitted.contact?.id).toBe(card.contact?.id);
      const shown = new Set([...(fitted.contact?.emails ?? []), ...(fitted.contact?.phones ?? [])]);
      for (const value of fitted.contact?.notVerified ?? []) expect(shown.has(value)).toBe(true);
      // Every value cut from a visitor-typed original is still listed as not verified.
      const typedOriginals = new Set(card.contact?.notVerified);
      for (const [index, value] of (fitted.contact?.emails ?? []).entries()) {
        if (typedOriginals.has(card.contact!.emails[index]!))
          expect(fitted.contact?.notVerified).toContain(value);
      }
      const sealed = await bridgeJweCodec.sealAnswer(card, kid, key);
      expect(sealed.body.length).toBe(notFound.body.length);
    }
  });
});
