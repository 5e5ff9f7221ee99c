import { performance } from 'node:perf_hooks';
import { anchoredBy, type FactAnswer } from '../../src/contacts/facts.js';
import type { AdapterContext, InboundRequest, RouteResult } from '../../src/contracts/adapter.js';
import { BadRequestError, ValidationError } from '../../src/errors.js';
import { buildRichAnswer, decodePayload, OK_ANSWER, truncate } from './codec.js';
import { toObservation, VENDOR } from './mapper.js';
import { isKnownEvent, type JivochatSettings, jivoEnvelopeSchema } from './schemas.js';

/**
 * `POST /webhooks/jivochat/:channelId/:token` (the core checked channel and token). One event per
 * request, routed on `event_name` (§2–§3): record it on the contact, then answer — richly for
 * chat_accepted / chat_updated, `{"result":"ok"}` for everything else.
 */

const JSON_UTF8 = 'application/json; charset=utf-8';

/**
 * Serialising and sending the answer takes a moment after the facts are in; this much of the
 * budget is kept for it, so that "answered within deadlineMs" holds as the vendor measures it.
 */
function sendReserveMs(deadlineMs: number): number {
  return Math.min(100, Math.round(deadlineMs * 0.1));
}

export function createWebhookHandler(context: AdapterContext, channelId: string, settings: JivochatSettings) {
  return async function handleWebhook(request: InboundRequest): Promise<RouteResult> {
    // Counted from arrival (before the body was read), as the vendor's clock counts.
    const arrived = request.receivedAt;

    /** Accepted and answered "ok", but kept in the journal: nothing a vendor sent is lost. */
    const journalled = async (event: string, reason: string): Promise<RouteResult> => {
      await context.journal.record({
        channelId,
        vendor: VENDOR,
        kind: 'unhandled',
        reason,
        rawBody: request.rawBody,
        contentType: request.contentType,
      });
      request.logger.info({ event, reason }, 'jivochat: payload journalled as unhandled');
      return ok(event, 'unhandled');
    };

    const { payload, repaired } = decodePayload(request.rawBody);
    const eventName = payload.event_name;

    if (!isKnownEvent(eventName)) {
      // New event names appear over time (§9.9): keep the payload, never fail the vendor. The
      // metric label stays "unknown" so that junk names cannot blow up its cardinality.
      return journalled('unknown', `unknown event_name "${truncate(eventName, 100)}"`);
    }

    const envelope = jivoEnvelopeSchema.parse(payload);
    if (
      settings.widgetId !== undefined &&
      envelope.widget_id !== undefined &&
      envelope.widget_id !== settings.widgetId
    ) {
      throw new ValidationError('the payload is for another JivoChat channel', [
        { path: 'widget_id', message: `expected ${settings.widgetId}` },
      ]);
    }

    const mapped = toObservation({
      eventName,
      envelope,
      raw: payload,
      channelId,
      settings,
      receivedAt: context.now(),
      repaired,
    });
    if (mapped.kind === 'unattached') return journalled(eventName, mapped.reason);

    const rich = eventName === 'chat_accepted' || eventName === 'chat_updated';
    // intake.ackAfterAppend: the answer is {"result":"ok"} whatever the contact holds, so one
    // durable append is enough before answering; the worker records it (src/intake/deferred.ts).
    if (!rich && context.deferred) {
      const appended = await context.deferred.append({
        v: 1,
        channelId,
        vendor: VENDOR,
        event: eventName,
        observation: mapped.observation,
        raw: request.rawBody.toString('utf8'),
        contentType: request.contentType ?? null,
        acceptedAt: context.now().getTime(),
      });
      if (appended) return ok(eventName, 'ok');
    }

    let observed: Awaited<ReturnType<typeof context.contacts.observe>>;
    try {
      observed = await context.contacts.observe(mapped.observation);
    } catch (error) {
      // Every identifier was junk (blocklisted, unparseable phone): accepted, kept, not attached.
      if (error instanceof BadRequestError && error.code === 'no_identifier') {
        return journalled(eventName, error.message);
      }
      throw error;
    }
    const outcome = observed.duplicate ? 'duplicate' : 'ok';

    if (!rich) return ok(eventName, outcome);

    const deadlineMs = settings.reply.deadlineMs;
    const remaining = deadlineMs - sendReserveMs(deadlineMs) - (performance.now() - arrived);
    let facts: FactAnswer | null = null;
    try {
      facts = await context.facts.forContact(observed.contact, {
        channelId,
        deadlineMs: Math.max(0, Math.floor(remaining)),
        max: 10,
        // Facts are proven only when this chat names the contact by a verified value (issue 10
        // item 5): the site's user_token, not an e-mail the visitor typed.
        anchored: anchoredBy(observed.contact, mapped.observation.identifiers ?? []),
      });
      if (facts.missing.length > 0) {
        request.logger.info(
          { missing: facts.missing },
          'jivochat: attribute sources left out of the answer (late or failed)',
        );
      }
    } catch (error) {
      // The answer must not fail because enrichment did: the agent still gets contact_info.
      request.logger.warn({ err: error }, 'jivochat: facts failed; answering without custom_data');
    }
    const body = buildRichAnswer({
      contact: observed.contact,
      facts,
      reply: settings.reply,
      consoleLink: context.consoleLink,
    });
    return { status: 200, body, contentType: JSON_UTF8, event: eventName, outcome };
  };
}

function ok(event: string, outcome: NonNullable<RouteResult['outcome']>): RouteResult {
  return { status: 200, body: OK_ANSWER, contentType: JSON_UTF8, event, outcome };
}
