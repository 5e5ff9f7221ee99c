import type Router from '@koa/router';
import { z } from 'zod';
import { issuesFromZod, NotFoundError, ValidationError } from '../errors.js';
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

export const listQuerySchema = z.strictObject({
  state: deliveryStateSchema.optional(),
  destination: z.string().min(1).max(200).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});
export type DeliveryListQuery = z.input<typeof listQuerySchema>;

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

function parse<T extends z.ZodType>(schema: T, value: unknown, what: 'query' | 'params'): z.output<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new ValidationError(`invalid ${what}`, issuesFromZod(parsed.error), `invalid_${what}`);
}

const idParamsSchema = z.object({ id: deliveryIdSchema });

/** For the OpenAPI document: the routes with their zod schemas. */
export const deliveryRoutes = [
  {
    method: 'GET',
    path: '/deliveries',
    summary: 'List outbound deliveries',
    query: listQuerySchema,
    response: deliveryListSchema,
  },
  {
    method: 'GET',
    path: '/deliveries/{id}',
    summary: 'One delivery with its body',
    response: deliverySummarySchema.extend({ body: z.unknown(), history: z.array(deliveryAttemptSchema) }),
  },
  {
    method: 'POST',
    path: '/deliveries/{id}/replay',
    summary: 'Deliver again',
    response: deliverySummarySchema,
  },
  {
    method: 'POST',
    path: '/deliveries/replay',
    summary: 'Replay every failed delivery of a destination',
    query: replayAllQuerySchema,
    response: replayAllResultSchema,
  },
] as const;

export function registerDeliveryRoutes(router: Router, admin: DeliveryAdmin): void {
  router.get('/deliveries', async (ctx) => {
    const query = parse(listQuerySchema, ctx.query, 'query');
    ctx.body = { deliveries: await admin.list(query) };
  });
  router.post('/deliveries/replay', async (ctx) => {
    const query = parse(replayAllQuerySchema, ctx.query, 'query');
    const { replayed } = await admin.replayFailed(query.destination);
    ctx.status = 202;
    ctx.body = { replayed: replayed.length, ids: replayed };
  });
  router.get('/deliveries/:id', async (ctx) => {
    const { id } = parse(idParamsSchema, ctx.params, 'params');
    const found = await admin.get(id);
    if (!found) throw new NotFoundError('delivery_not_found', `no delivery ${id}`);
    ctx.body = found;
  });
  router.post('/deliveries/:id/replay', async (ctx) => {
    const { id } = parse(idParamsSchema, ctx.params, 'params');
    ctx.status = 202;
    ctx.body = await admin.replay(id);
  });
}
