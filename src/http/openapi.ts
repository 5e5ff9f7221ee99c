import { z } from 'zod';
import { contactSchema, identifierSchema, timelineEntrySchema } from '../contacts/types.js';
import { deliveryRoutes } from '../delivery/index.js';
import type { ChannelRoute } from '../spec/adapter.js';

/**
 * The admin API's OpenAPI document, generated from the same zod schemas that validate requests
 * and shape answers, so the document cannot drift from the code.
 */
const errorSchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});

function schema(type: z.ZodType | undefined): unknown {
  if (!type) return { type: 'object' };
  try {
    return z.toJSONSchema(type, { io: 'output', unrepresentable: 'any' });
  } catch {
    return { type: 'object' };
  }
}

interface Operation {
  method: string;
  path: string;
  summary: string;
  /** Parameter descriptions, or the zod object that validates the query. */
  query?: Record<string, string> | z.ZodObject;
  body?: z.ZodType;
  response?: z.ZodType;
}

const core: Operation[] = [
  {
    method: 'get',
    path: '/api/v1/contacts',
    summary:
      'Find contacts by e-mail, phone or identity (kind:value, or kind:channelId:value for vendor-local ids)',
    query: {
      email: 'e-mail address',
      phone: 'phone number (any format; normalised to E.164)',
      identity: 'kind:value',
    },
    response: z.object({ contacts: z.array(contactSchema) }),
  },
  {
    method: 'get',
    path: '/api/v1/contacts/{id}',
    summary: 'One contact; an id merged away answers with the surviving contact and mergedFrom',
    response: contactSchema.extend({ mergedFrom: z.string().optional() }),
  },
  {
    method: 'get',
    path: '/api/v1/contacts/{id}/timeline',
    summary: 'Unified cross-channel timeline, newest first, cursor-paged',
    query: { limit: '1..200, default 50', before: 'nextCursor from the previous page' },
    response: z.object({ entries: z.array(timelineEntrySchema), nextCursor: z.string().nullable() }),
  },
  {
    method: 'post',
    path: '/api/v1/contacts/{id}/unmerge',
    summary: 'Undo a merge: split off a merged record, or one identifier into a contact of its own',
    body: z.union([z.object({ recordId: z.string() }), z.object({ identifier: identifierSchema })]),
    response: z.object({ contact: contactSchema, split: contactSchema }),
  },
  {
    method: 'get',
    path: '/api/v1/identity/conflicts',
    summary: 'Merges the guard rails refused (size cap, earlier unmerge), newest first',
    query: { limit: '1..500, default 50' },
  },
  {
    method: 'get',
    path: '/api/v1/journal',
    summary: 'Vendor payloads that were rejected or could not be used, newest first',
    query: { channel: 'channel id', kind: 'rejected | unhandled', limit: '1..500, default 50' },
  },
  { method: 'get', path: '/api/v1/channels', summary: 'Configured channels, their jobs and admin routes' },
  ...deliveryRoutes.map((route) => ({
    method: route.method.toLowerCase(),
    path: `/api/v1${route.path}`,
    summary: route.summary,
    ...('query' in route ? { query: route.query } : {}),
    response: route.response,
  })),
];

function queryParameters(query: Operation['query']) {
  if (!query) return [];
  if (query instanceof z.ZodObject) {
    return Object.entries(query.shape as Record<string, z.ZodType>).map(([name, field]) => ({
      name,
      in: 'query',
      required: false,
      schema: schema(field),
    }));
  }
  return Object.entries(query).map(([name, description]) => ({
    name,
    in: 'query',
    required: false,
    description,
    schema: { type: 'string' },
  }));
}

export function buildOpenApi(options: { routes: readonly ChannelRoute[] }) {
  const operations: Operation[] = [...core];
  const seen = new Set<string>();
  for (const route of options.routes) {
    if (route.scope !== 'admin') continue;
    const path = `/api/v1/channels/{id}/${route.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`;
    const id = `${route.method} ${path}`;
    if (seen.has(id)) continue;
    seen.add(id);
    operations.push({
      method: route.method.toLowerCase(),
      path,
      summary: route.summary,
      ...(route.requestBody ? { body: route.requestBody } : {}),
      ...(route.response ? { response: route.response } : {}),
    });
  }
  const paths: Record<string, Record<string, unknown>> = {};
  for (const operation of operations) {
    const parameters = [
      ...[...operation.path.matchAll(/\{([^}]+)\}/g)].map((match) => ({
        name: match[1],
        in: 'path',
        required: true,
        schema: { type: 'string' },
      })),
      ...queryParameters(operation.query),
    ];
    paths[operation.path] ??= {};
    paths[operation.path]![operation.method] = {
      summary: operation.summary,
      security: [{ bearer: [] }],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(operation.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: schema(operation.body) } },
            },
          }
        : {}),
      responses: {
        '200': { description: 'OK', content: { 'application/json': { schema: schema(operation.response) } } },
        '4XX': { description: 'Error', content: { 'application/json': { schema: schema(errorSchema) } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'chatbridge admin API', version: '1' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}
