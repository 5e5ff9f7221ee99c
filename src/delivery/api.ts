import { z } from 'zod';
import { NotFoundError, ValidationError } from '../errors.js';
import { type Route, route, STORE_UNAVAILABLE } from '../http/routes.js';
import { emptyIsAbsent, queryInt } from '../http/validate.js';
import { type BreakerOpen, breakerOpenSchema } from './breaker-state.js';
import {
  type DeliveryAttempt,
  type DeliveryRecord,
  type DeliveryState,
  deliveryAttemptSchema,
  deliveryErrorSchema,
  deliveryStateSchema,
} from './records.js';

/**
 * Admin API for deliveries (DESIGN §4), mounted by the core under /api/v1 behind the admin token:
 *
 *   GET  /deliveries?state=&destination=&limit=&before=   list (oldest first within a state), cursor-paged
 *   GET  /deliveries/:id                          one, with the body that is sent
 *   POST /deliveries/:id/replay                   deliver again (202)
 *   POST /deliveries/replay?destination=ID        replay every failed delivery of a destination (202)
 */

export const deliveryIdSchema = z.string().regex(/^dlv_[A-Za-z0-9_-]{1,64}$/, 'a delivery id like dlv_...');

// Empty filters are filters not given (DESIGN §4 writes `?state=failed&destination=`).
/** Most deliveries one list answers (the admin API's `limit`, the CLI's `--limit`). */
export const LIST_LIMIT_MAX = 500;

export const listQuerySchema = z.strictObject({
  state: emptyIsAbsent(deliveryStateSchema),
  destination: emptyIsAbsent(z.string().max(200)),
  limit: queryInt({ min: 1, max: LIST_LIMIT_MAX, default: 50 }),
  // `before`, as the timeline and the journal spell their cursor, though this list runs oldest
  // first: it is "the nextCursor of the previous page" wherever the API pages.
  before: z.string().min(1).max(200).optional().describe('nextCursor of the previous page'),
});
/** What list() takes: the parsed query (the route, the CLI), or in-process callers' own values. */
export type DeliveryListQuery = Partial<z.output<typeof listQuerySchema>>;

export const replayAllQuerySchema = z.strictObject({
  destination: z.string().min(1).max(200),
  state: z.literal('failed').default('failed'),
});

export const deliverySummarySchema = z.object({
  id: z.string(),
  destination: z.string(),
  eventId: z.string(),
  eventType: z.string(),
  contactId: z.string().nullable(),
  state: deliveryStateSchema,
  attempts: z.number().int(),
  /** How many times it was replayed. */
  replays: z.number().int(),
  createdAt: z.string(),
  updatedAt: z.string(),
  nextAttemptAt: z.string().nullable(),
  deliveredAt: z.string().nullable(),
  failedAt: z.string().nullable(),
  lastStatus: z.number().int().nullable(),
  lastError: deliveryErrorSchema.nullable(),
});
export type DeliverySummary = z.infer<typeof deliverySummarySchema>;
export type DeliveryDetail = DeliverySummary & { body: unknown; history: DeliveryAttempt[] };

export const deliveryPageSchema = z.object({
  deliveries: z.array(deliverySummarySchema),
  nextCursor: z.string().nullable().describe('pass as `before` for the next page; null on the last'),
});
export type DeliveryPage = z.infer<typeof deliveryPageSchema>;

/** The list's answer: a page, and which destinations are paused now (why pending ones wait). */
export const deliveryListSchema = deliveryPageSchema.extend({
  paused: z
    .array(breakerOpenSchema)
    .describe(
      'the listed destinations (the `destination` filter, else every configured one) held back now: ' +
        '`cause` `circuit-breaker`, one per instance whose breaker is open: nothing is sent to one until `until` (then one trial attempt), after `failures` failed attempts in a row; `lastError` is the failure that opened it; ' +
        '`cause` `retry-after`, at most one per destination, listed first: it answered with Retry-After (429, 503) at `since` and nothing is sent to it until `until` (at most 10 minutes), on any instance; `lastError` is that answer, `failures` 0',
    ),
});

/** Where a page of the list stopped: a state, and a place in that state's index (score, id). */
export interface DeliveryCursor {
  state: DeliveryState;
  score: number;
  id: string;
}

export function encodeDeliveryCursor(cursor: DeliveryCursor): string {
  return Buffer.from(`${cursor.state}|${cursor.score}|${cursor.id}`, 'utf8').toString('base64url');
}

/**
 * A `before` the list gave out, for the states this listing walks (a cursor of a `state=failed`
 * listing means nothing in a `state=pending` one). Anything else is a 400 naming `before`.
 */
export function decodeDeliveryCursor(text: string, states: readonly DeliveryState[]): DeliveryCursor {
  const [state, score, id, ...extra] = Buffer.from(text, 'base64url').toString('utf8').split('|');
  const parsedState = deliveryStateSchema.safeParse(state);
  if (
    extra.length > 0 ||
    !parsedState.success ||
    !states.includes(parsedState.data) ||
    !/^-?\d{1,16}(\.\d{1,6})?$/.test(score ?? '') ||
    !deliveryIdSchema.safeParse(id).success
  ) {
    throw new ValidationError(
      'invalid cursor',
      [
        {
          path: 'before',
          message: 'not a cursor this API returned for this listing (use nextCursor of a page)',
        },
      ],
      'invalid_query',
    );
  }
  return { state: parsedState.data, score: Number(score), id: id! };
}
export const replayAllResultSchema = z.object({ replayed: z.number().int(), ids: z.array(z.string()) });

export function summarize(record: DeliveryRecord): DeliverySummary {
  return {
    id: record.id,
    destination: record.destinationId,
    eventId: record.eventId,
    eventType: record.eventType,
    contactId: record.contactId,
    state: record.state,
    attempts: record.attempts,
    replays: record.cycle,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    nextAttemptAt: record.nextAttemptAt,
    deliveredAt: record.deliveredAt,
    failedAt: record.failedAt,
    lastStatus: record.lastStatus,
    lastError: record.lastError,
  };
}

/** The operations behind the routes (and the CLI). */
export interface DeliveryAdmin {
  /** The first page of page() (in-process callers that want a count or a glance). */
  list(query: DeliveryListQuery): Promise<DeliverySummary[]>;
  /** One page and the cursor to the next (null on the last); ValidationError for a bad `before`. */
  page(query: DeliveryListQuery): Promise<DeliveryPage>;
  get(id: string): Promise<DeliveryDetail | null>;
  /** Throws NotFoundError, or ConflictError when it is pending already or its destination is gone. */
  replay(id: string): Promise<DeliverySummary>;
  /**
   * Throws NotFoundError when the destination is not configured. `signal` (the CLI's Ctrl-C) stops
   * it between deliveries: `left` counts the failed ones it did not get to (they stay failed);
   * `onReplayed` hears each as it is replayed.
   */
  replayFailed(
    destinationId: string,
    options?: { signal?: AbortSignal; onReplayed?: (id: string) => void },
  ): Promise<{ replayed: string[]; left?: number }>;
  /**
   * The configured destinations (or this one) a circuit breaker or their own Retry-After holds
   * back now, on any instance (breaker-state.ts): why their pending deliveries wait with no attempt.
   */
  paused(destinationId?: string): Promise<BreakerOpen[]>;
}

const idParamsSchema = z.strictObject({ id: deliveryIdSchema });

export const deliveryDetailSchema = deliverySummarySchema.extend({
  body: z.unknown(),
  history: z.array(deliveryAttemptSchema),
});

/** The delivery routes (mounted by the core under /api/v1, behind the admin token). */
export function deliveryRoutes(admin: DeliveryAdmin): Route[] {
  const tag = 'deliveries';
  return [
    route({
      method: 'GET',
      path: '/api/v1/deliveries',
      summary: 'List outbound deliveries (oldest first within a state), cursor-paged',
      tag,
      auth: 'admin',
      query: listQuerySchema,
      answers: {
        200: {
          description:
            'At most `limit` deliveries: pending, then delivered, then failed (or the one `state`), oldest first within each; ' +
            '`nextCursor` (as `before`, with the same `state` and `destination`) reads on, and is null on the last page. ' +
            'Deliveries added while paging come after the place a cursor names, so none is skipped or repeated; ' +
            'one that changes state meanwhile moves to its new place in the order',
          schema: deliveryListSchema,
        },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        const [page, paused] = await Promise.all([admin.page(query), admin.paused(query.destination)]);
        ctx.body = { ...page, paused };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/deliveries/replay',
      summary: 'Replay every failed delivery of a destination',
      tag,
      auth: 'admin',
      query: replayAllQuerySchema,
      answers: {
        202: { description: 'Queued again', schema: replayAllResultSchema },
        404: { description: 'No such destination' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        const { replayed } = await admin.replayFailed(query.destination);
        ctx.status = 202;
        ctx.body = { replayed: replayed.length, ids: replayed };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/deliveries/:id',
      summary: 'One delivery, with the body that is sent and its attempts',
      tag,
      auth: 'admin',
      params: idParamsSchema,
      answers: {
        200: { description: 'The delivery', schema: deliveryDetailSchema },
        404: { description: 'No such delivery' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { params }) {
        const found = await admin.get(params.id);
        if (!found) throw new NotFoundError('delivery_not_found', `no delivery ${params.id}`);
        ctx.body = found;
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/deliveries/:id/replay',
      summary: 'Deliver again',
      tag,
      auth: 'admin',
      params: idParamsSchema,
      answers: {
        202: { description: 'Queued again', schema: deliverySummarySchema },
        404: { description: 'No such delivery' },
        409: { description: 'Pending already, or its destination is gone' },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { params }) {
        ctx.status = 202;
        ctx.body = await admin.replay(params.id);
      },
    }),
  ];
}
