import { z } from 'zod';
import type { ChannelConfig } from '../../src/config/schema.js';
import type { Identifier } from '../../src/contacts/types.js';
import { identifierSchema } from '../../src/contacts/types.js';
import type { AdapterContext, InboundRequest, RouteResult } from '../../src/contracts/adapter.js';
import {
  dialogIdentifier,
  dialogKeyOf,
  hashOf,
  identifiersOf,
  observationsOf,
  parseWebhook,
  VENDOR,
} from './mapper.js';

/**
 * `POST /webhooks/livetex/:channelId/:token` (DESIGN §4): LiveTex's dialog webhook — closed,
 * assigned, rated. The core has checked the channel and token; bad JSON is a 400 (the core keeps
 * the payload as rejected); a JSON payload we cannot use is kept as "unhandled" and answered ok,
 * because LiveTex cannot fix it by retrying.
 */

/**
 * Which client a dialog belongs to, remembered so that a rating delivered alone after the close
 * (it may carry only the dialog) lands on the same contact. Long enough for a late rating.
 */
const DIALOG_MEMORY_TTL_MS = 30 * 24 * 3600 * 1000;
const rememberedSchema = z.array(identifierSchema);

function unionOf(...lists: Identifier[][]): Identifier[] {
  const out: Identifier[] = [];
  const seen = new Set<string>();
  for (const identifier of lists.flat()) {
    const label = `${identifier.kind}\u0000${identifier.value}\u0000${identifier.channelId ?? ''}`;
    if (seen.has(label)) continue;
    seen.add(label);
    out.push(identifier);
  }
  return out;
}

export function createWebhookHandler(context: AdapterContext, channel: ChannelConfig) {
  const { store, contacts, journal } = context;
  const channelId = channel.id;

  async function rememberedIdentifiers(memoryKey: string): Promise<Identifier[]> {
    const raw = await store.get(memoryKey);
    if (raw === null) return [];
    try {
      const parsed = rememberedSchema.safeParse(JSON.parse(raw));
      return parsed.success ? parsed.data : [];
    } catch {
      return [];
    }
  }

  return async function handleWebhook(request: InboundRequest): Promise<RouteResult> {
    const body = request.json();
    const parsed = parseWebhook(body, context.config.agents);
    if (parsed.kind === 'unhandled') {
      request.logger.info({ reason: parsed.reason }, 'livetex webhook not usable; kept in the journal');
      await journal.record({
        channelId,
        vendor: VENDOR,
        kind: 'unhandled',
        reason: parsed.reason,
        rawBody: request.rawBody,
        contentType: request.contentType,
      });
      return { body: { ok: true }, event: 'unknown', outcome: 'unhandled' };
    }

    const record = parsed.record;
    const event = `dialog_${record.event}`;
    const dialogKey = dialogKeyOf(record, request.rawBody);
    const memoryKey = `livetex:${channelId}:dialog:${hashOf(dialogKey)}`;
    // Blocklisted values ("0", "anonymous", ...) identify nobody: leave them out before deciding
    // whether the payload names its client at all.
    const current = identifiersOf(record.client, channelId).filter(
      (identifier) => contacts.normalizeIdentifier(identifier) !== null,
    );
    // Every event of a dialog carries what earlier events of it said about the client: a rating
    // delivered alone after the close lands on the same contact.
    const remembered = record.dialogId ? await rememberedIdentifiers(memoryKey) : [];
    const identifiers = unionOf(remembered, current);
    if (identifiers.length === 0) identifiers.push(dialogIdentifier(dialogKey, channelId));
    if (record.dialogId && identifiers.length > remembered.length) {
      await store.set(memoryKey, JSON.stringify(identifiers), { ttlMs: DIALOG_MEMORY_TTL_MS });
    }

    const observations = observationsOf({
      channelId,
      record,
      dialogKey,
      identifiers,
      raw: body,
      receivedAt: context.now(),
    });
    if (observations.length === 0) {
      // e.g. a "rated" event whose rating we could not read: nothing to record but the payload.
      await journal.record({
        channelId,
        vendor: VENDOR,
        kind: 'unhandled',
        reason: `${record.event} event without a readable rating`,
        rawBody: request.rawBody,
        contentType: request.contentType,
      });
      return { body: { ok: true }, event, outcome: 'unhandled' };
    }
    // intake.ackAfterAppend: the answer carries no contact data, so one durable append per
    // observation is enough before answering; the worker records them (src/intake/deferred.ts).
    if (context.deferred) {
      const raw = request.rawBody.toString('utf8');
      let appended = 0;
      for (const observation of observations) {
        const item = {
          v: 1 as const,
          channelId,
          vendor: VENDOR,
          event,
          observation,
          raw,
          contentType: request.contentType ?? null,
          acceptedAt: context.now().getTime(),
        };
        if (!(await context.deferred.append(item))) break;
        appended++;
      }
      if (appended === observations.length) return { body: { ok: true }, event, outcome: 'ok' };
      // The backlog filled up midway: the rest is recorded inline (the appended ones are idempotent).
      observations.splice(0, appended);
    }
    let duplicates = 0;
    for (const observation of observations) {
      const result = await contacts.observe(observation);
      if (result.duplicate) duplicates++;
      request.logger.debug(
        { event, dialog: dialogKey, contact: result.contact.id, duplicate: result.duplicate },
        'livetex dialog recorded',
      );
    }
    return { body: { ok: true }, event, outcome: duplicates === observations.length ? 'duplicate' : 'ok' };
  };
}
