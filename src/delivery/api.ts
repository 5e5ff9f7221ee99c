import { z } from 'zod';
import { NotFoundError } from '../errors.js';
import { type Route, route, STORE_UNAVAILABLE } from '../http/routes.js';
import { emptyIsAbsent, queryInt } from '../http/validate.js';
import {
  type DeliveryAttempt,
  type DeliveryRecord,
  deliveryAttemptSchema,
  deliveryErrorSchema,
  deliveryStateSchema,
} from './records.js';

/**
 * Admin API for deliveries (DESIGN §4), mounted by the core under /api/v1 behind the admin token:
 *
 *   GET  /deliveries?state=&destination=&limit=   list (oldest first within a state)
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

export const deliveryListSchema = z.object({ deliveries: z.array(deliverySummarySchema) });
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
  list(query: DeliveryListQuery): Promise<DeliverySummary[]>;
  get(id: string): Promise<DeliveryDetail | null>;
  /** Throws NotFoundError, or ConflictError when it is pending already or its destination is gone. */
  replay(id: string): Promise<DeliverySummary>;
  /** Throws NotFoundError when the destination is not configured. */
  replayFailed(destinationId: string): Promise<{ replayed: string[] }>;
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
      summary: 'List outbound deliveries (oldest first within a state)',
      tag,
      auth: 'admin',
      query: listQuerySchema,
      answers: {
        200: {
          // No cursor here (unlike the timeline and the journal): say so, so nobody looks for one.
          description:
            'At most `limit` deliveries: pending, then delivered, then failed (or the one `state`), oldest first within each; ' +
            'there is no cursor, so narrow by `state` and `destination` to see more',
          schema: deliveryListSchema,
        },
        503: STORE_UNAVAILABLE,
      },
      async handle(ctx, { query }) {
        ctx.body = { deliveries: await admin.list(query) };
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
