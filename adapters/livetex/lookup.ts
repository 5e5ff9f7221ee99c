import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { ChannelConfig } from '../../src/config/schema.js';
import type { AdapterContext, ChannelRoute } from '../../src/contracts/adapter.js';
import { AppError } from '../../src/errors.js';
import { type LookupCodec, LookupRefusedError } from './codec.js';
import { jtiClaim, type LivetexKeyStore } from './keys.js';
import { foundAnswer, notFoundAnswer } from './mapper.js';
import type { LivetexSettings } from './schemas.js';

/**
 * `POST /livetex/:channelId/attributes` (DESIGN §6): the encrypted attribute lookup. The order of
 * checks is the order of trust: form (400), key (401), decryption and time (401), replay (401) —
 * the replay cache is written only for a token that passed everything else, so garbage cannot
 * fill it. Two store trips: the key's record (revocation holds at once), then one step that claims
 * the jti and, only if fresh, reads the contact (ContactService.claimAndFind). The answer's facts
 * come from the shared FactService, the same code as JivoChat's custom_data.
 */

/** Facts in one answer (vendors/livetex.md §5.2 proposes at most 50 attributes). */
const MAX_ATTRIBUTES = 50;

export function createLookupRoute(options: {
  context: AdapterContext;
  channel: ChannelConfig;
  settings: LivetexSettings;
  keys: LivetexKeyStore;
  codec: LookupCodec;
}): ChannelRoute {
  const { context, channel, settings, keys, codec } = options;
  const outcomes = context.metrics.counter(
    'chatbridge_livetex_lookups_total',
    'LiveTex attribute lookups, by channel and outcome (found, not_found, or the refusal code)',
    ['channel', 'outcome'],
  );
  const latency = context.metrics.histogram(
    'chatbridge_livetex_lookup_seconds',
    'Time to answer a LiveTex attribute lookup, by channel',
    ['channel'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3],
  );

  return {
    method: 'POST',
    path: 'attributes',
    scope: 'public',
    summary: 'LiveTex-style encrypted attribute lookup (compact JWE in, compact JWE out; DESIGN §6)',
    requestContentType: 'application/jose',
    responseContentType: 'application/jose',
    errors: {
      400: 'Not a compact JWE (or {"payload": JWE} as JSON)',
      401: 'Unknown or revoked key, a token that does not open, is out of time or was used before',
    },
    async handle(request) {
      const started = performance.now();
      let outcome = 'error';
      try {
        const sealed = codec.readRequest(request.rawBody, request.contentType);
        const resolved = await keys.resolve(sealed.kid);
        if (resolved.state === 'unknown') throw new LookupRefusedError('unknown_key', 'no key with this kid');
        if (resolved.state === 'revoked') throw new LookupRefusedError('revoked_key', 'this key was revoked');
        const claims = await codec.openRequest(sealed, resolved.imported, {
          now: context.now(),
          maxSkewSeconds: settings.maxClockSkewSeconds,
        });

        const value = claims.personId ?? claims.customVisitorToken ?? '';
        // Found and not found do the same work as far as practical (issue 10 item 2):
        // - the same store reads (a miss reads a decoy group: evenWork);
        // - the same codec work (every answer is fitted and padded to one size, then sealed);
        // - the same wait: with attribute sources configured, every answer is held until the
        //   lookup deadline (evenTiming). A miss never asks the sources about a made-up customer:
        //   the company's CRM sees only real lookups, and the hold hides how long they took.
        const holdUntil =
          settings.evenTiming && context.facts.sourceCount() > 0
            ? request.receivedAt + settings.lookupDeadlineMs
            : null;
        // One store step: claim the jti (a replay reads nothing) and find the contact.
        const found = await context.contacts.claimAndFind(
          { kind: 'person', value },
          {
            claim: jtiClaim(channel.id, claims, settings.maxClockSkewSeconds, context.now()),
            evenWork: true,
          },
        );
        if (!found.claimed)
          throw new LookupRefusedError('replayed_token', 'this token (jti) was already used');
        const contact = found.contact;
        let answer = notFoundAnswer(claims.requestId);
        if (contact) {
          // The budget counts from the request's arrival: what is left after reading the body,
          // decryption and the contact read goes to the attribute sources.
          const remaining = settings.lookupDeadlineMs - (performance.now() - request.receivedAt);
          const facts = await context.facts.forContact(contact, {
            channelId: channel.id,
            deadlineMs: Math.max(0, Math.floor(remaining)),
            max: MAX_ATTRIBUTES,
            // Found by the person id the company's site or app signed in: a verified value.
            anchored: true,
          });
          if (facts.missing.length > 0) {
            request.logger.info(
              { missing: facts.missing, requestId: claims.requestId },
              'attribute sources left out',
            );
          }
          answer = foundAnswer(claims.requestId, contact, facts);
        }
        outcome = answer.found ? 'found' : 'not_found';
        // The subject is the company's customer id: log a hash, never the value.
        request.logger.info(
          {
            requestId: claims.requestId,
            subject: createHash('sha256').update(value).digest('hex').slice(0, 16),
            found: answer.found,
            held: holdUntil !== null,
          },
          'livetex attribute lookup',
        );
        const sealedAnswer = await codec.sealAnswer(answer, sealed.kid, resolved.imported);
        if (holdUntil !== null) {
          const wait = holdUntil - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        }
        return {
          status: 200,
          body: sealedAnswer.body,
          contentType: sealedAnswer.contentType,
          headers: { 'cache-control': 'no-store' },
        };
      } catch (error) {
        if (error instanceof AppError && error.status < 500) outcome = error.code;
        throw error;
      } finally {
        outcomes.inc({ channel: channel.id, outcome });
        latency.observe({ channel: channel.id }, (performance.now() - started) / 1000);
      }
    },
  };
}
