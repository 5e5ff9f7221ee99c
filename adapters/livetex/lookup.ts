import type { IntakeRoute } from '../../src/contracts/adapter.js';
import type { LivetexChannel } from './channel.js';
import {
  ANSWER_LIMITS,
  JOSE_CONTENT_TYPE,
  type LookupAnswer,
  type LookupClaims,
  type LookupKey,
  LookupRefusedError,
} from './codec.js';
import { jtiClaim } from './keys.js';
import { foundAnswer, notFoundAnswer } from './mapper.js';

/**
 * `POST /livetex/:channelId/attributes` (DESIGN §6): the encrypted attribute lookup. The order of
 * checks is the order of trust: form (400), key (401), decryption and time (401) in `open`, then
 * replay (401) — the jti is claimed only for a token that passed everything else, so garbage
 * cannot fill the replay cache. Two store trips: `open` reads the key's record (every request, so
 * a revocation holds at once; the imported key is cached while the record is unchanged), then the
 * core claims the jti and, only if it is fresh, finds the person in one step (claimAndFind; a miss
 * does the same reads: evenWork) and builds the facts (the same FactService as JivoChat's
 * custom_data); render is pure, settle seals the answer under the request's key.
 */

/** The request, opened: the key it is under, and its checked claims. */
export interface OpenedLookup {
  kid: string;
  /** Imported once per key (keys.ts), for both opening the request and sealing the answer. */
  key: LookupKey;
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
    const claims = await channel.codec.openRequest(sealed, resolved.imported, {
      now: channel.now(),
      maxSkewSeconds: channel.settings.maxClockSkewSeconds,
    });
    return { kid: sealed.kid, key: resolved.imported, claims };
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
      facts: { deadlineMs: settings.lookupDeadlineMs, max: ANSWER_LIMITS.attributes },
      // Found and not found do the same work as far as practical (issue 10 item 2): the same
      // store reads, one answer size (codec.ts), and with attribute sources every answer is held
      // until the deadline. A miss never asks the sources about a made-up customer.
      options: {
        evenWork: true,
        holdToDeadline: settings.evenTiming,
        requestId: claims.requestId,
        // SET NX on the jti, kept until the token could no longer pass the time check on any instance
        // (exp + 2 × skew: see jtiClaim), so a replay is refused for as long as it matters.
        claim: jtiClaim(channel.id, claims, settings.maxClockSkewSeconds, request.receivedAt),
      },
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
