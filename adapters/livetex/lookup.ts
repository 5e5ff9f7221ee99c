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
import { type ActiveKey, jtiClaim } from './keys.js';
import { foundAnswer, notFoundAnswer } from './mapper.js';

/**
 * `POST /livetex/:channelId/attributes` (DESIGN §6): the encrypted attribute lookup. The order of
 * checks is the order of trust: form (400), key (401), decryption and time (401) in `open`, then
 * replay (401) — the jti is claimed only for a token that passed everything else, so garbage
 * cannot fill the replay cache. One store trip for a key this process has opened before: `open`
 * opens the token with that key, without a read, and the core claims the jti, checks that the
 * key's stored record is still the one the key was opened from (Claim.onlyIf: a revocation holds
 * at once) and finds the person, in one step (claimAndFind; a miss does the same reads:
 * evenWork). If the record changed, nothing is claimed or read, and `open` runs again on the
 * record that step read (`recheck`): a revoked key is refused as before. A kid this process has
 * not opened, or a token its kept key does not open (tampered, expired, …), reads the record
 * first (one HGET) and is decided on it, as every request was before: a refusal says what the
 * stored record says. Then the facts (the same FactService as JivoChat's custom_data); render is
 * pure, settle seals the answer under the request's key.
 */

/** The request, opened: the key it is under, and its checked claims. */
export interface OpenedLookup {
  kid: string;
  /** Imported once per key (keys.ts), for both opening the request and sealing the answer. */
  key: LookupKey;
  claims: LookupClaims;
  /** The stored key record it was opened with: the jti is claimed only while it is unchanged. */
  record?: ActiveKey['record'];
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
  async open(request, channel, recheck) {
    const sealed = channel.codec.readRequest(request.rawBody, request.contentType);
    const clock = () => ({ now: channel.now(), maxSkewSeconds: channel.settings.maxClockSkewSeconds });
    const opened = (key: ActiveKey, claims: LookupClaims): OpenedLookup => ({
      kid: sealed.kid,
      key: key.imported,
      claims,
      record: key.record,
    });
    // The key this process opened last time, if any: no read here, the claim checks the record.
    const remembered = recheck ? undefined : channel.keys.remembered(sealed.kid);
    let refusal: unknown;
    if (remembered) {
      try {
        return opened(remembered, await channel.codec.openRequest(sealed, remembered.imported, clock()));
      } catch (error) {
        // Decided on the stored record, as below: it may be revoked or gone, which comes first.
        refusal = error;
      }
    }
    const resolved = recheck
      ? channel.keys.resolveFrom(sealed.kid, recheck.held)
      : await channel.keys.resolve(sealed.kid);
    if (resolved.state === 'unknown') throw new LookupRefusedError('unknown_key', 'no key with this kid');
    if (resolved.state === 'revoked') throw new LookupRefusedError('revoked_key', 'this key was revoked');
    // The same record: the same key would refuse the token the same way.
    if (refusal !== undefined && resolved === remembered) throw refusal;
    return opened(resolved, await channel.codec.openRequest(sealed, resolved.imported, clock()));
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
        // Only while the key's stored record is the one the request was opened with (a
        // revocation in between refuses it, and spends nothing).
        claim: {
          ...jtiClaim(channel.id, claims, settings.maxClockSkewSeconds, request.receivedAt),
          ...(request.opened.record ? { onlyIf: request.opened.record } : {}),
        },
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
