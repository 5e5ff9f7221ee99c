import { createCipheriv, createDecipheriv, type KeyObject } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, errors as joseErrors } from 'jose';
import { z } from 'zod';
import { quotedInput } from '../../src/contacts/normalize.js';
import { wellFormed } from '../../src/digest.js';
import { AppError, BadRequestError, issuesFromZod, ValidationError } from '../../src/errors.js';
import { jsonDepthExceeds, MAX_JSON_DEPTH, parseJson } from '../../src/http/json.js';
import { cutText } from '../../src/intake/wire.js';
import { wireJson } from '../../src/net/http.js';
import { randomPool } from '../../src/random.js';

/**
 * The attribute lookup's wire format — and only here (DESIGN §6, our design: LiveTex's real
 * format is not public, vendors/livetex.md §1.2). Everything that knows what bytes travel lives
 * in this module: the envelope (application/jose or {"payload"}), the JWE parameters, the claim
 * set and its time rules, the answer and its padding, for both sides (the bridge and the client
 * helper). When LiveTex's real format is known, a second `LookupCodec` replaces `bridgeJweCodec`
 * and nothing else in the adapter changes.
 */

export const JOSE_CONTENT_TYPE = 'application/jose';
export const KEY_ALGORITHM = 'dir';
export const CONTENT_ENCRYPTION = 'A256GCM';
/** A256GCM under `dir` takes the 256-bit key itself as the content key. */
export const KEY_BYTES = 32;
/** DESIGN §6: `exp` at most 5 minutes after `iat`. */
export const MAX_TOKEN_LIFETIME_SECONDS = 300;
/**
 * What one answer shows at most (vendors/livetex.md §5.2 proposes these; LiveTex's real limits
 * are unknown): attributes, and the characters of a label and of a value.
 */
export const ANSWER_LIMITS = { attributes: 50, label: 128, value: 1024 } as const;

/** The 401 refusals of DESIGN §6; the core writes `{"error":{"code":...}}`. */
export type RefusalCode =
  | 'unknown_key'
  | 'revoked_key'
  | 'decryption_failed'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'replayed_token';

/**
 * A channel key as the codec takes it: the raw 256 bits, or the same key made a `KeyObject` once
 * (keys.ts caches it while the stored record is unchanged).
 */
export type LookupKey = Uint8Array | KeyObject;

export class LookupRefusedError extends AppError {
  constructor(code: RefusalCode, message: string) {
    // No WWW-Authenticate header: DESIGN §6 says the refusal is the JSON error "and nothing else".
    super(code, 401, message);
  }
}

// ---------------------------------------------------------------------------------------------
// The claim set (request plaintext) and the answer (response plaintext)

const identifierValueSchema = z.string().min(1).max(512);

/**
 * Strict: the caller is the company's own integration (or our client helper), so an unexpected
 * claim is a mistake worth reporting. `nbf` is the one registered claim we also honour.
 */
export const lookupClaimsSchema = z
  .strictObject({
    personId: identifierValueSchema.optional(),
    customVisitorToken: identifierValueSchema.optional(),
    // Echoed in the answer: a lone surrogate could only be echoed as U+FFFD (wireJson), which the
    // caller would not recognise as its own id.
    requestId: z.string().min(1).max(128).refine(wellFormed, 'a requestId without lone surrogates'),
    iat: z.number().finite(),
    exp: z.number().finite(),
    nbf: z.number().finite().optional(),
    jti: z.string().min(1).max(256),
  })
  .check((context) => {
    const claims = context.value;
    if ((claims.personId === undefined) === (claims.customVisitorToken === undefined)) {
      context.issues.push({
        code: 'custom',
        input: claims,
        path: ['personId'],
        message: 'exactly one of personId (web) or customVisitorToken (mobile) is required',
      });
    }
    // A lifetime over the limit is a claim set outside the protocol (malformed → 400), not a
    // credential that went stale (401): DESIGN §6 defines `exp` as at most 5 minutes after `iat`.
    if (claims.exp <= claims.iat || claims.exp - claims.iat > MAX_TOKEN_LIFETIME_SECONDS) {
      context.issues.push({
        code: 'custom',
        input: claims,
        path: ['exp'],
        message: `exp must be after iat and at most ${MAX_TOKEN_LIFETIME_SECONDS} s after it`,
      });
    }
  });
export type LookupClaims = z.infer<typeof lookupClaimsSchema>;

export type LookupSubject = { personId: string } | { customVisitorToken: string };

export const lookupAttributeSchema = z.object({
  key: z.string(),
  label: z.string(),
  value: z.string(),
  /** string | number | boolean | date | url | email | phone; a string so that new types do not break old clients. */
  type: z.string(),
  /** `false`: the fact rests only on visitor-typed values (issue 10 item 5). Absent: verified. */
  verified: z.literal(false).optional(),
});
export type LookupAttribute = z.infer<typeof lookupAttributeSchema>;

export const lookupContactSchema = z.object({
  id: z.string(),
  name: z.string().nullable(),
  emails: z.array(z.string()),
  phones: z.array(z.string()),
  labels: z.array(z.string()),
  /** The e-mails and phones above that were only ever typed by a visitor, never verified (issue 10 item 5). */
  notVerified: z.array(z.string()).optional(),
});

/** Not strict: a client built against this version keeps working when the bridge adds a field. */
export const lookupAnswerSchema = z.object({
  requestId: z.string(),
  found: z.boolean(),
  contact: lookupContactSchema.optional(),
  attributes: z.array(lookupAttributeSchema),
  crmLink: z.string().optional(),
  /** Set when the card did not fit the one answer size and was cut (issue 10 item 2). */
  truncated: z.boolean().optional(),
});
export type LookupAnswer = z.infer<typeof lookupAnswerSchema>;

// ---------------------------------------------------------------------------------------------
// Envelope

// In words, as every 400 of the bridge says its issues: zod's own read `Invalid input: expected
// string, received undefined` for a body without `payload`.
const JWE_TEXT = 'the compact JWE, as a string';
const jsonEnvelopeSchema = z.strictObject({
  payload: z
    .string({ error: (issue) => (issue.input === undefined ? 'required' : JWE_TEXT) })
    .min(1, JWE_TEXT),
});

const protectedHeaderSchema = z.looseObject({
  alg: z.string(),
  enc: z.string().optional(),
  kid: z.string().min(1).max(128).optional(),
  zip: z.unknown().optional(),
  crit: z.unknown().optional(),
});

/** Five base64url segments; the second (the encrypted key) is empty under `dir`. */
const COMPACT_JWE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** A request whose envelope was read: the key it names, and the token still sealed. */
export interface SealedRequest {
  kid: string;
  token: string;
}

/**
 * A header value the sender chose, as an error message quotes it: anyone can send any header, and
 * the message goes back verbatim in the JSON error, so at most 32 characters, cleaned (quotedInput).
 */
const quoted = (value: string): string => quotedInput(value, 32);

function mediaTypeOf(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
}

/**
 * Reads the body as the protocol allows (raw compact JWE as application/jose, or JSON
 * `{"payload": "<jwe>"}`) and the protected header's `kid`. Everything here is about form, so
 * every failure is 400. A caller that sends neither content type is read by the body's first
 * character: the endpoint is for machines we do not fully know yet, and guessing costs nothing.
 */
function readRequest(rawBody: Buffer, contentType: string | undefined): SealedRequest {
  const text = rawBody.toString('utf8').trim();
  if (text === '')
    throw new BadRequestError('malformed_request', 'the body is empty; expected a compact JWE');
  const mediaType = mediaTypeOf(contentType);
  const asJson =
    mediaType === 'application/json' ||
    mediaType?.endsWith('+json') === true ||
    (mediaType !== JOSE_CONTENT_TYPE && text.startsWith('{'));
  let token = text;
  if (asJson) {
    const parsed = parseJson(text);
    const envelope = jsonEnvelopeSchema.safeParse(parsed);
    if (!envelope.success) {
      throw new ValidationError(
        'a JSON body must be {"payload": "<compact JWE>"}',
        issuesFromZod(envelope.error),
        'malformed_request',
      );
    }
    token = envelope.data.payload.trim();
  }
  if (!COMPACT_JWE.test(token)) {
    throw new BadRequestError('malformed_request', 'the payload is not a compact JWE (five base64url parts)');
  }
  const headerPart = token.slice(0, token.indexOf('.'));
  let kid = headerKids.get(headerPart);
  if (kid === undefined) {
    kid = readProtectedHeader(headerPart);
    if (headerPart.length <= HEADER_KEPT_CHARS) {
      if (headerKids.size >= HEADER_KIDS_MAX) headerKids.clear();
      headerKids.set(headerPart, kid);
    }
  }
  return { kid, token };
}

/**
 * The kid of the headers readProtectedHeader accepted, by their exact base64url text: a client
 * sends one header with every request under a key, and reading it again (base64url, the depth
 * guard, JSON.parse, zod) was a few per cent of the codec's CPU per lookup (bench/HISTORY.md,
 * twenty-eighth round). The answer is a pure function of the text, so a kept one is what reading
 * would give. Only accepted headers are kept (a refused one is read, and refused, every time);
 * anyone can send any header, so only short texts, at most HEADER_KIDS_MAX of them, forgotten
 * whole when full (a sender who churns them costs itself the reading it would pay anyway).
 */
const headerKids = new Map<string, string>();
const HEADER_KIDS_MAX = 1024;
/** `{"alg":"dir","enc":"A256GCM","kid":<128 chars>,"typ":"JWT"}` and some room, as base64url. */
const HEADER_KEPT_CHARS = 512;

/** The protected header's kid, or the 400 that says why the header is refused. */
function readProtectedHeader(headerPart: string): string {
  // Read before anything is authenticated, so anyone can send it: nested past the bodies' limit
  // (MAX_JSON_DEPTH) it is refused as a body would be, not parsed.
  const into = scratchOf(decodedMax(headerPart.length));
  const headerText = into.toString('utf8', 0, into.write(headerPart, 0, 'base64url'));
  if (jsonDepthExceeds(headerText)) {
    throw new BadRequestError(
      'malformed_request',
      `the JWE protected header nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch {
    throw new BadRequestError('malformed_request', 'the JWE protected header is not base64url JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new BadRequestError('malformed_request', 'the JWE protected header is not base64url JSON');
  }
  const parsedHeader = protectedHeaderSchema.safeParse(header);
  if (!parsedHeader.success) {
    throw new BadRequestError('malformed_request', 'the JWE protected header must name alg, enc and kid');
  }
  const { alg, enc, kid, zip } = parsedHeader.data;
  if (alg !== KEY_ALGORITHM || enc !== CONTENT_ENCRYPTION) {
    throw new BadRequestError(
      'unsupported_algorithm',
      `the JWE must use alg "${KEY_ALGORITHM}" and enc "${CONTENT_ENCRYPTION}" (got alg "${quoted(alg)}", enc "${quoted(enc ?? '')}")`,
    );
  }
  // Compression before encryption leaks the plaintext's content through its length.
  if (zip !== undefined)
    throw new BadRequestError('unsupported_algorithm', 'compressed JWEs (zip) are not accepted');
  // RFC 7516 §4.1.13: a recipient must refuse critical extensions it does not understand, and we
  // understand none.
  if (parsedHeader.data.crit !== undefined)
    throw new BadRequestError('unsupported_algorithm', 'critical header extensions (crit) are not accepted');
  if (kid === undefined)
    throw new BadRequestError('missing_kid', 'the JWE protected header must carry the key id (kid)');
  return kid;
}

// ---------------------------------------------------------------------------------------------
// Sealing and opening

export interface ClaimClock {
  now: Date;
  maxSkewSeconds: number;
}

/** The caller's side (jose): opens an answer. */
async function decrypt(token: string, key: Uint8Array): Promise<{ plaintext: Uint8Array; kid: unknown }> {
  try {
    const { plaintext, protectedHeader } = await compactDecrypt(token, key, {
      keyManagementAlgorithms: [KEY_ALGORITHM],
      contentEncryptionAlgorithms: [CONTENT_ENCRYPTION],
    });
    return { plaintext, kid: protectedHeader.kid };
  } catch (error) {
    if (error instanceof joseErrors.JOSEError) {
      throw new LookupRefusedError(
        'decryption_failed',
        'the JWE could not be decrypted with the key it names',
      );
    }
    throw error;
  }
}

// The bridge's side of `dir` + A256GCM (RFC 7516 compact serialization, RFC 7518 §5.3) on
// node:crypto. jose on Node 20 goes through WebCrypto (a promise job per call) and encodes base64
// with btoa over a string built char by char: 0.22–0.38 ms of CPU per lookup (open the request,
// seal the 8 KiB answer) against 0.045–0.07 ms here (`node bench/jwe.js` compares both). The
// format is five base64url parts and one AES-GCM call; the caller's side below (`sealRequest`,
// `openAnswer`, the client helper) stays on jose, so every test that seals with the client and
// opens with the bridge, or the other way round, checks the two against each other.

const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * IVs from a pool (src/random.ts; one randomBytes(12) per answer measured ~30 µs under load). An
 * IV is public and only has to be unique per key: 96 CSPRNG bits are, pooled or not.
 */
const nextIv = randomPool(IV_BYTES, 341);

function refuseDecryption(): never {
  throw new LookupRefusedError('decryption_failed', 'the JWE could not be decrypted with the key it names');
}

/**
 * Where a request's parts are decoded (its protected header, then the IV, the tag, the header as
 * additional data and the ciphertext): each `Buffer.from` of them was a slice of Node's shared
 * 8 KiB pool, and a new pool (an ArrayBuffer for the collector to track) every ~20 requests. Used
 * synchronously only (the decipher copies what it is given before it returns; the header is read
 * into a string at once), so one buffer serves every request (bench/HISTORY.md, twenty-eighth
 * round, with the header's kid kept below).
 */
let scratch = Buffer.allocUnsafeSlow(4096);

/** Scratch with at least `bytes` of room (a request body is bounded by the HTTP layer's limit). */
function scratchOf(bytes: number): Buffer {
  if (scratch.length < bytes) scratch = Buffer.allocUnsafeSlow(bytes);
  return scratch;
}

/** The most bytes `length` base64url characters decode to. */
const decodedMax = (length: number) => Math.ceil((length * 3) / 4);

/** Opens a compact JWE whose header readRequest has already checked (dir, A256GCM, kid). */
function openCompact(token: string, key: LookupKey): Buffer {
  const [header = '', encryptedKey, iv = '', ciphertext = '', tag = ''] = token.split('.');
  // Under `dir` the content key is the shared key itself: an encrypted key part means another alg.
  if (encryptedKey !== '') refuseDecryption();
  const into = scratchOf(
    decodedMax(iv.length) + decodedMax(tag.length) + header.length + decodedMax(ciphertext.length),
  );
  const ivEnd = into.write(iv, 0, 'base64url');
  const tagEnd = ivEnd + into.write(tag, ivEnd, 'base64url');
  // AES-GCM takes an IV of any length; RFC 7518 §5.3 requires 96 bits (and a 128-bit tag).
  if (ivEnd !== IV_BYTES || tagEnd - ivEnd !== TAG_BYTES) refuseDecryption();
  const headerEnd = tagEnd + into.write(header, tagEnd, 'latin1');
  const ciphertextEnd = headerEnd + into.write(ciphertext, headerEnd, 'base64url');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, into.subarray(0, ivEnd), {
      authTagLength: TAG_BYTES,
    });
    // The additional authenticated data is the protected header exactly as sent (ASCII).
    decipher.setAAD(into.subarray(tagEnd, headerEnd));
    decipher.setAuthTag(into.subarray(ivEnd, tagEnd));
    const plaintext = decipher.update(into.subarray(headerEnd, ciphertextEnd));
    decipher.final(); // GCM is a stream mode: final() only checks the tag (and adds nothing)
    return plaintext;
  } catch {
    // final() throws when the tag does not match: wrong key, or any part altered.
    return refuseDecryption();
  }
}

/** An answer's protected header, base64url, as text and as the additional data's bytes. */
interface AnswerHeader {
  text: string;
  bytes: Buffer;
}

/**
 * Per kid: every answer under one key has the same protected header. Only kids that opened a
 * request reach sealAnswer (keys.ts keeps at most 256 per channel); forgotten whole past that.
 */
const answerHeaders = new Map<string, AnswerHeader>();
const ANSWER_HEADERS_MAX = 1024;

function answerHeader(kid: string): AnswerHeader {
  let header = answerHeaders.get(kid);
  if (header === undefined) {
    const text = Buffer.from(
      JSON.stringify({ alg: KEY_ALGORITHM, enc: CONTENT_ENCRYPTION, kid }),
      'utf8',
    ).toString('base64url');
    header = { text, bytes: Buffer.from(text, 'latin1') };
    if (answerHeaders.size >= ANSWER_HEADERS_MAX) answerHeaders.clear();
    answerHeaders.set(kid, header);
  }
  return header;
}

const DOT = 0x2e;

/**
 * The compact JWE as bytes (all ASCII), not text: the answer goes out as one Buffer, so neither
 * Koa nor Node's HTTP layer measures or encodes an 11 KB string, nor flattens the string its parts
 * were joined into (~5 µs per answer in a loop: bench/HISTORY.md, twenty-third round).
 */
function sealCompact(plaintext: Buffer, kid: string, key: LookupKey): Buffer {
  const header = answerHeader(kid);
  const iv = nextIv();
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(header.bytes);
  const ciphertext = cipher.update(plaintext);
  cipher.final(); // adds nothing under GCM; makes the tag
  const ivText = iv.toString('base64url');
  const ciphertextText = ciphertext.toString('base64url');
  const tagText = cipher.getAuthTag().toString('base64url');
  const out = Buffer.allocUnsafe(
    header.text.length + ivText.length + ciphertextText.length + tagText.length + 4,
  );
  let at = out.write(header.text, 0, 'latin1');
  out[at++] = DOT;
  out[at++] = DOT; // the empty encrypted key of `dir`
  at += out.write(ivText, at, 'latin1');
  out[at++] = DOT;
  at += out.write(ciphertextText, at, 'latin1');
  out[at++] = DOT;
  out.write(tagText, at, 'latin1');
  return out;
}

/** Decrypts and checks the claim set: form problems are 400, stale or early tokens 401. */
async function openRequest(sealed: SealedRequest, key: LookupKey, clock: ClaimClock): Promise<LookupClaims> {
  const plaintext = openCompact(sealed.token, key);
  let document: unknown;
  try {
    document = JSON.parse(plaintext.toString('utf8'));
  } catch {
    throw new BadRequestError('invalid_claims', 'the decrypted payload is not a JSON claim set');
  }
  const parsed = lookupClaimsSchema.safeParse(document);
  if (!parsed.success) {
    throw new ValidationError('the claim set is not valid', issuesFromZod(parsed.error), 'invalid_claims');
  }
  const claims = parsed.data;
  const nowSeconds = clock.now.getTime() / 1000;
  const skew = clock.maxSkewSeconds;
  if (claims.iat > nowSeconds + skew || (claims.nbf !== undefined && claims.nbf > nowSeconds + skew)) {
    throw new LookupRefusedError(
      'token_not_yet_valid',
      'the token was issued in the future (check the clock)',
    );
  }
  if (claims.exp <= nowSeconds - skew) {
    throw new LookupRefusedError('token_expired', 'the token has expired');
  }
  return claims;
}

/**
 * Every answer is sent in one size class (issue 10 item 2): a contact with a large card must not
 * land in a larger class than `found: false`. What does not fit is cut (attributes from the end,
 * then long lists, then the crmLink, then list entries from the end) and the answer says so with
 * `truncated: true`.
 */
export const ANSWER_BYTES = 8192;

type LookupContact = NonNullable<LookupAnswer['contact']>;

/** `notVerified` names values shown on the card: after a cut, only those still on it (cut as they are). */
function withNotVerified(contact: LookupContact, emails: string[], phones: string[], typed: Set<string>) {
  const { notVerified: _old, ...rest } = contact;
  const notVerified = [...emails, ...phones].filter((value) => typed.has(value));
  return { ...rest, emails, phones, ...(notVerified.length > 0 ? { notVerified } : {}) };
}

/** The card's lists cut to a few short entries; a value typed by a visitor stays marked so. */
function cutContact(contact: LookupContact): LookupContact {
  const typedOriginals = new Set(contact.notVerified ?? []);
  const typed = new Set<string>();
  const cut = (values: string[], count: number, length: number) =>
    values.slice(0, count).map((value) => {
      const shown = cutText(value, length);
      if (typedOriginals.has(value)) typed.add(shown);
      return shown;
    });
  const emails = cut(contact.emails, 3, 254);
  const phones = cut(contact.phones, 3, 32);
  return withNotVerified(
    {
      ...contact,
      name: contact.name === null ? null : cutText(contact.name, 200),
      labels: contact.labels.slice(0, 10).map((value) => cutText(value, 100)),
    },
    emails,
    phones,
    typed,
  );
}

/**
 * The answer cut to at most `limit` bytes of JSON, whatever the card holds (the caller's
 * `requestId` is at most 128 characters, lookupClaimsSchema): `sealAnswer` pads every answer to
 * exactly ANSWER_BYTES, so a card that did not fit would make a found answer longer than a
 * not-found one — an oracle by size.
 */
export function fitAnswer(answer: LookupAnswer, limit = ANSWER_BYTES): LookupAnswer {
  const size = (value: LookupAnswer) => Buffer.byteLength(JSON.stringify(value), 'utf8');
  if (size(answer) <= limit) return answer;
  const fitted: LookupAnswer = { ...answer, attributes: [...answer.attributes], truncated: true };
  const over = () => size(fitted) > limit;
  while (fitted.attributes.length > 0 && over()) fitted.attributes.pop();
  if (fitted.contact && over()) fitted.contact = cutContact(fitted.contact);
  if (over()) delete fitted.crmLink;
  // The last resorts: entries from the end of the (already cut) lists, then the name.
  if (fitted.contact && over()) {
    const contact = fitted.contact;
    const typed = new Set(contact.notVerified ?? []);
    const labels = [...contact.labels];
    const emails = [...contact.emails];
    const phones = [...contact.phones];
    const rebuild = () => {
      fitted.contact = withNotVerified({ ...contact, labels: [...labels] }, [...emails], [...phones], typed);
    };
    while (labels.length > 0 && over()) {
      labels.pop();
      rebuild();
    }
    while (phones.length > 0 && over()) {
      phones.pop();
      rebuild();
    }
    while (emails.length > 0 && over()) {
      emails.pop();
      rebuild();
    }
    if (over() && fitted.contact.name !== null) fitted.contact = { ...fitted.contact, name: null };
  }
  if (over()) {
    const { contact: _contact, crmLink: _crmLink, ...bare } = fitted;
    return { ...bare, attributes: [] };
  }
  return fitted;
}

/** The caller's side (jose): seals a request. */
async function seal(plaintext: string, kid: string, key: Uint8Array, typ?: string): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(plaintext))
    .setProtectedHeader({ alg: KEY_ALGORITHM, enc: CONTENT_ENCRYPTION, kid, ...(typ ? { typ } : {}) })
    .encrypt(key);
}

/**
 * The padded plaintext of every answer, written and encrypted synchronously in sealAnswer (the
 * cipher has read it before the function returns), so one buffer serves every answer.
 */
const paddedAnswer = Buffer.allocUnsafeSlow(ANSWER_BYTES);

async function sealAnswer(
  answer: LookupAnswer,
  kid: string,
  key: LookupKey,
): Promise<{ body: Buffer; contentType: string }> {
  // Serialised once when it fits (fitAnswer would measure it and return it unchanged). wireJson:
  // a lone surrogate anywhere on the card (a vendor's text cut mid-emoji) is written as U+FFFD,
  // as in every JSON body chatbridge sends, not as `\ud83d`, which strict JSON readers refuse for
  // the whole answer. Both escapes are six characters, so fitAnswer's measure still holds.
  let json = wireJson(answer);
  let bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > ANSWER_BYTES) {
    json = wireJson(fitAnswer(answer));
    bytes = Buffer.byteLength(json, 'utf8');
  }
  // One class for every answer: the fitted JSON padded with spaces to exactly ANSWER_BYTES. Only
  // a requestId of thousands of bytes could still be over, which the claim set refuses: never
  // send a larger answer rather than an answer of another size.
  if (bytes > ANSWER_BYTES) throw new Error(`the lookup answer does not fit ${ANSWER_BYTES} bytes`);
  paddedAnswer.write(json, 'utf8');
  paddedAnswer.fill(0x20, bytes);
  return { body: sealCompact(paddedAnswer, kid, key), contentType: JOSE_CONTENT_TYPE };
}

/**
 * The server side of the seam. A codec for LiveTex's real format implements the same three steps.
 */
export interface LookupCodec {
  /** Form only (400s): which key the request names, and the still-sealed token. */
  readRequest(rawBody: Buffer, contentType: string | undefined): SealedRequest;
  /** Decrypts with the named key and validates the claims (401 for crypto/time, 400 for form). */
  openRequest(sealed: SealedRequest, key: LookupKey, clock: ClaimClock): Promise<LookupClaims>;
  /** Encrypts the answer under the same key: the compact JWE's bytes (ASCII). */
  sealAnswer(
    answer: LookupAnswer,
    kid: string,
    key: LookupKey,
  ): Promise<{ body: Buffer; contentType: string }>;
}

export const bridgeJweCodec: LookupCodec = { readRequest, openRequest, sealAnswer };

// ---------------------------------------------------------------------------------------------
// The caller's side (used by client.ts and the tests)

export interface RequestClaimsInput {
  subject: LookupSubject;
  requestId: string;
  jti: string;
  /** Seconds since the epoch. */
  iat: number;
  /** Lifetime in seconds (default 60, at most 300). */
  ttlSeconds?: number;
}

export function buildClaims(input: RequestClaimsInput): LookupClaims {
  const iat = Math.floor(input.iat);
  return {
    ...input.subject,
    requestId: input.requestId,
    iat,
    exp: iat + (input.ttlSeconds ?? 60),
    jti: input.jti,
  };
}

/** Encrypts a claim set as the bridge expects it. Claims are sent as given (tests send bad ones). */
export async function sealRequest(
  claims: Record<string, unknown>,
  kid: string,
  key: Uint8Array,
): Promise<string> {
  return seal(JSON.stringify(claims), kid, key, 'JWT');
}

export class LookupAnswerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LookupAnswerError';
  }
}

/**
 * Decrypts and validates an answer (the compact JWE as text, or the answer's bytes); it must be
 * under the key the request used.
 */
export async function openAnswer(
  token: string | Uint8Array,
  kid: string,
  key: Uint8Array,
): Promise<LookupAnswer> {
  let opened: { plaintext: Uint8Array; kid: unknown };
  try {
    const text = typeof token === 'string' ? token : Buffer.from(token).toString('latin1');
    opened = await decrypt(text.trim(), key);
  } catch (error) {
    throw new LookupAnswerError('the answer could not be decrypted with the request key', { cause: error });
  }
  if (opened.kid !== kid)
    throw new LookupAnswerError(`the answer is under kid "${String(opened.kid)}", not "${kid}"`);
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder().decode(opened.plaintext));
  } catch (error) {
    throw new LookupAnswerError('the decrypted answer is not JSON', { cause: error });
  }
  const parsed = lookupAnswerSchema.safeParse(document);
  if (!parsed.success)
    throw new LookupAnswerError(`the answer has an unexpected shape: ${parsed.error.message}`);
  return parsed.data;
}

export function decodeKey(base64url: string): Uint8Array {
  const key = Buffer.from(base64url, 'base64url');
  if (key.length !== KEY_BYTES || key.toString('base64url') !== base64url.replace(/=+$/, '')) {
    throw new TypeError(`the key must be ${KEY_BYTES} bytes, base64url-encoded`);
  }
  return new Uint8Array(key);
}
