import type { IntakeRoute } from '../../src/contracts/adapter.js';
import { digest } from '../../src/intake/wire.js';
import type { Store } from '../../src/store/types.js';
import type { LivetexChannel } from './channel.js';
import { JOSE_CONTENT_TYPE, type LookupAnswer, type LookupClaims, LookupRefusedError } from './codec.js';
import { foundAnswer, notFoundAnswer } from './mapper.js';

/**
 * `POST /livetex/:channelId/attributes` (DESIGN §6): the encrypted attribute lookup. The order of
 * checks is the order of trust, all in `open`: form (400), key (401), decryption and time (401),
 * replay (401) — the replay cache is written only for a token that passed everything else, so
 * garbage cannot fill it. The core then finds the person (a miss does the same reads: evenWork)
 * and builds the facts (the same FactService as JivoChat's custom_data); render is pure, settle
 * seals the answer under the request's key.
 */

/** Facts in one answer (vendors/livetex.md §5.2 proposes at most 50 attributes). */
const MAX_ATTRIBUTES = 50;

/** A token's jti, claimed once across every instance. */
export interface ReplayGuard {
  claim(claims: LookupClaims): Promise<void>;
}

/**
 * SET NX on the jti, kept until the token could no longer pass the time check anyway
 * (exp + skew), so a replay is refused for exactly as long as it matters.
 */
export function createReplayGuard(options: {
  store: Store;
  channelId: string;
  maxClockSkewSeconds: number;
  now(): Date;
}): ReplayGuard {
  const { store, channelId, maxClockSkewSeconds, now } = options;
  return {
    async claim(claims) {
      const validUntilMs = (claims.exp + maxClockSkewSeconds) * 1000;
      const ttlMs = Math.max(1000, Math.ceil(validUntilMs - now().getTime()) + 1000);
      // The whole SHA-256 (43 base64url characters): these keys exist, so their form stays.
      const jtiKey = `livetex:${channelId}:jti:${digest(claims.jti, 43)}`;
      const fresh = await store.set(jtiKey, '1', { nx: true, ttlMs });
      if (!fresh) throw new LookupRefusedError('replayed_token', 'this token (jti) was already used');
    },
  };
}

/** The request, opened: the key it is under, and its checked claims. */
export interface OpenedLookup {
  kid: string;
  key: Uint8Array;
  claims: LookupClaims;
}

export const livetexLookup: IntakeRoute<LivetexChannel, OpenedLookup> = {
  kind: 'lookup',
  path: 'attributes',
  body: 'raw',
  doc: {
    summary: 'LiveTex-style encrypted attribute lookup (compact JWE in, compact JWE out; DESIGN §6)',
    contentType: JOSE_CONTENT_TYPE,
    answerContentType: JOSE_CONTENT_TYPE,
    errors: {
      400: 'Not a compact JWE (or {"payload": JWE} as JSON)',
      401: 'Unknown or revoked key, a token that does not open, is out of time or was used before',
    },
  },
  async open(request, channel) {
    const sealed = channel.codec.readRequest(request.rawBody, request.contentType);
    const resolved = await channel.keys.resolve(sealed.kid);
    if (resolved.state === 'unknown') throw new LookupRefusedError('unknown_key', 'no key with this kid');
    if (resolved.state === 'revoked') throw new LookupRefusedError('revoked_key', 'this key was revoked');
    const claims = await channel.codec.openRequest(sealed, resolved.key, {
      now: channel.now(),
      maxSkewSeconds: channel.settings.maxClockSkewSeconds,
    });
    await channel.replays.claim(claims);
    return { kid: sealed.kid, key: resolved.key, claims };
  },
  decode(request, channel) {
    const { claims } = request.opened;
    const { settings } = channel;
    return {
      kind: 'lookup',
      event: 'lookup',
      // personId (web) and customVisitorToken (mobile) are one kind, `person` (DESIGN §6).
      identifier: { kind: 'person', value: claims.personId ?? claims.customVisitorToken ?? '' },
      // The budget counts from the request's arrival: what is left after reading the body,
      // decryption and the contact read goes to the attribute sources.
      facts: { deadlineMs: settings.lookupDeadlineMs, max: MAX_ATTRIBUTES },
      // Found and not found do the same work as far as practical (issue 10 item 2): the same
      // store reads, one answer size (codec.ts), and with attribute sources every answer is held
      // until the deadline. A miss never asks the sources about a made-up customer.
      options: { evenWork: true, holdToDeadline: settings.evenTiming, requestId: claims.requestId },
    };
  },
  render(result) {
    const { requestId } = result.opened.claims;
    const answer: LookupAnswer = result.contact
      ? foundAnswer(requestId, result.contact, result.facts ?? { facts: [], missing: [] })
      : notFoundAnswer(requestId);
    return { body: answer };
  },
  async settle(answer, result, channel) {
    const { kid, key } = result.opened;
    const sealed = await channel.codec.sealAnswer(answer.body as LookupAnswer, kid, key);
    return { body: sealed.body, contentType: sealed.contentType, headers: { 'cache-control': 'no-store' } };
  },
};
