import { z } from 'zod';
import type { Answer, Decoded, Deferrable, IntakeRoute } from '../../src/contracts/adapter.js';
import { BadRequestError, ValidationError } from '../../src/errors.js';
import { isRecord } from '../../src/intake/wire.js';
import { parseWire } from '../../src/intake/wire-parse.js';
import { buildRichAnswer, OK_ANSWER, repairAttributeList, truncate } from './codec.js';
import { type MapInput, toObservation, unattachedReason } from './mapper.js';
import {
  isKnownEvent,
  type JivoAnswer,
  type JivochatSettings,
  jivoAnswerSchema,
  jivoEnvelopeSchema,
} from './schemas.js';

/**
 * `POST /webhooks/jivochat/:channelId/:token`: one event per request, named by `event_name`
 * (§2–§3). Pure: decode turns the parsed body into one observation (or says why there is
 * none), render turns the stored contact and its facts into the answer — richly for
 * chat_accepted / chat_updated, `{"result":"ok"}` for everything else. The core does the rest
 * (src/intake/pipeline.ts).
 */

/** What a JivoChat channel's intake reads. */
export interface JivoChannel {
  id: string;
  settings: JivochatSettings;
}

const JSON_UTF8 = 'application/json; charset=utf-8';
/** The events Jivo shows our answer for (§6.1): only these wait for facts. */
const RICH_EVENTS = new Set(['chat_accepted', 'chat_updated']);

type JivoRequest = { body: unknown; repaired: boolean; receivedAt: Date };

export function decodeWebhook(request: JivoRequest, channel: JivoChannel): Decoded {
  return decodeEvent(request, channel, true);
}

/**
 * The route's `check` (intake.ackAfterAppend): every refusal and outcome of decodeWebhook, but an
 * event whose answer wants no facts (all but chat_accepted and chat_updated) is `deferrable`
 * once the payload is known to identify someone, without its observation: building it (the
 * timeline entries, the transcript, attributes and keys) was ~9 % of the web path's time per
 * acknowledged chat_finished in a profile (bench/HISTORY.md, twenty-seventh round), and was thrown
 * away whenever the worker decodes the stored body again (a `web` instance, or a full hand-off).
 * The rich events are decoded whole: they are recorded before their answer.
 */
export function checkWebhook(request: JivoRequest, channel: JivoChannel): Decoded | Deferrable {
  return decodeEvent(request, channel, false);
}

/** decode (`build`: the observation made) or check (an event without facts is `deferrable`). */
function decodeEvent(request: JivoRequest, channel: JivoChannel, build: true): Decoded;
function decodeEvent(request: JivoRequest, channel: JivoChannel, build: false): Decoded | Deferrable;
function decodeEvent(request: JivoRequest, channel: JivoChannel, build: boolean): Decoded | Deferrable {
  const payload = request.body;
  if (!isRecord(payload)) {
    throw new ValidationError('the body must be a JSON object', [
      {
        path: '(root)',
        message: `expected an object, got ${Array.isArray(payload) ? 'an array' : payload === null ? 'null' : typeof payload}`,
      },
    ]);
  }
  const eventName = payload.event_name;
  if (typeof eventName !== 'string' || eventName.trim() === '') {
    throw new ValidationError('the body has no event_name', [
      { path: 'event_name', message: 'a non-empty string is required' },
    ]);
  }
  // The bracketed-attributes mend (codec.ts) is the docs' sample of this one event only.
  if (request.repaired && eventName !== 'client_attribute_updated') {
    throw new BadRequestError('invalid_json', 'the body is not valid JSON');
  }
  if (!isKnownEvent(eventName)) {
    // New event names appear over time (§9.9): keep the payload, never fail the vendor. The
    // metric label stays "unknown" so that junk names cannot blow up its cardinality.
    return { kind: 'nothing', event: 'unknown', reason: `unknown event_name "${truncate(eventName, 100)}"` };
  }

  const envelope = parseWire(jivoEnvelopeSchema, payload);
  const { settings } = channel;
  if (
    settings.widgetId !== undefined &&
    envelope.widget_id !== undefined &&
    envelope.widget_id !== settings.widgetId
  ) {
    throw new ValidationError('the payload is for another JivoChat channel', [
      { path: 'widget_id', message: `expected ${settings.widgetId}` },
    ]);
  }
  const input: MapInput = {
    eventName,
    envelope,
    raw: payload,
    channelId: channel.id,
    settings,
    receivedAt: request.receivedAt,
    repaired: request.repaired,
  };
  if (!build && !RICH_EVENTS.has(eventName)) {
    const reason = unattachedReason(input);
    return reason === undefined
      ? { kind: 'deferrable', event: eventName }
      : { kind: 'nothing', event: eventName, reason };
  }
  const mapped = toObservation(input);
  if (mapped.kind === 'unattached') return { kind: 'nothing', event: eventName, reason: mapped.reason };
  const decoded: Decoded = { kind: 'observe', event: eventName, observations: [mapped.observation] };
  // Jivo shows custom_data items (at most 10) only in the answer to these, within the deadline.
  // Set after the literal: a conditional spread in it cost an object per webhook (src/extend.ts).
  if (RICH_EVENTS.has(eventName))
    decoded.facts = { deadlineMs: settings.reply.deadlineMs, max: 10, reserve: true };
  return decoded;
}

export const jivochatWebhook: IntakeRoute<JivoChannel> = {
  kind: 'webhook',
  // The answer without facts is a constant: it may follow one durable append (intake.ackAfterAppend).
  ackAfterAppend: true,
  // Content-Type is undocumented for Jivo's webhooks (§2): the core reads the body as JSON whatever it says.
  body: 'json',
  repairJson: repairAttributeList,
  doc: {
    summary: 'JivoChat webhook: one event per request, named by event_name',
    body: jivoEnvelopeSchema,
    answer: z.union([jivoAnswerSchema, z.strictObject({ result: z.literal('ok') })]),
  },
  decode: decodeWebhook,
  check: checkWebhook,
  render(result, channel): Answer {
    const { decoded, contact } = result;
    let body: JivoAnswer = OK_ANSWER;
    if (decoded.kind === 'observe' && decoded.facts && contact) {
      body = buildRichAnswer({
        contact,
        facts: result.facts,
        reply: channel.settings.reply,
        consoleLink: result.consoleLink,
      });
    }
    return { body, contentType: JSON_UTF8 };
  },
};
