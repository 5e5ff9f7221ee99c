import { z } from 'zod';
import { JSON_ONLY, type Route, type RouteAuth, refusesBody } from './routes.js';
import { queryIntegers } from './validate.js';

/**
 * The OpenAPI 3.1 document, generated from the route declarations the routers mount
 * (src/http/routes.ts), with zod 4's own JSON Schema output (`z.toJSONSchema`, draft 2020-12,
 * which OpenAPI 3.1 uses as is). Nothing here is written by hand per route, so the document
 * cannot drift from what is served.
 */

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().describe('stable, machine-readable, e.g. invalid_query, not_found'),
      message: z.string(),
      issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
      requestId: z.string().optional().describe('5xx only: quote it to an operator'),
    }),
  })
  .describe('Every error answer of the bridge');

const SECURITY: Record<RouteAuth, Array<Record<string, string[]>>> = {
  none: [],
  admin: [{ adminToken: [] }],
  metrics: [{ metricsToken: [] }],
  'url-token': [],
  sealed: [],
  console: [{ consoleSession: [] }],
};

const SCHEMES: Record<string, unknown> = {
  adminToken: { type: 'http', scheme: 'bearer', description: 'admin.token' },
  metricsToken: { type: 'http', scheme: 'bearer', description: 'metrics.token' },
  consoleSession: {
    type: 'apiKey',
    in: 'cookie',
    name: 'chatbridge_console',
    description: 'The console session, after sign-in with the admin token or an agent link',
  },
};

const TAGS: Record<string, string> = {
  admin: 'Admin API: contacts, journal, identity (Authorization: Bearer <admin.token>)',
  deliveries: 'Admin API: outbound deliveries',
  channels: "Admin API: each channel's own routes (below /api/v1/channels/{id}/)",
  intake: 'Vendor intake: webhooks and public channel routes (the LiveTex lookup)',
  operations: 'Health, readiness, metrics and this document',
  console: 'The web console (HTML pages and form posts; session cookie)',
};

type Json = Record<string, unknown>;

/**
 * A zod schema as a JSON Schema for the document. Shared or recursive parts that zod puts in
 * `$defs` are moved to components.schemas (a `#/$defs/…` reference would point at the root of
 * the OpenAPI document, where there is none).
 */
function converter(components: Record<string, unknown>) {
  let counter = 0;
  return (schema: z.ZodType, io: 'input' | 'output'): Json => {
    let json: Json;
    try {
      json = z.toJSONSchema(schema, {
        io,
        unrepresentable: 'any',
        override({ zodSchema, jsonSchema }) {
          // A number in the query (queryInt): said as the integer it is, not as its digits.
          const integer = queryIntegers.get(zodSchema);
          if (!integer) return;
          const { description } = jsonSchema;
          for (const key of Object.keys(jsonSchema)) delete jsonSchema[key];
          Object.assign(jsonSchema, {
            type: 'integer',
            minimum: integer.min,
            maximum: integer.max,
            default: integer.default,
            ...(description ? { description } : {}),
          });
        },
      }) as Json;
    } catch {
      // A schema JSON Schema cannot say (a refinement on a function, …) is documented as "any".
      return {};
    }
    delete json.$schema;
    const defs = json.$defs as Record<string, unknown> | undefined;
    if (!defs) return matchAnything(json) as Json;
    delete json.$defs;
    const renamed = new Map<string, string>();
    for (const name of Object.keys(defs)) renamed.set(name, `Schema${++counter}`);
    const rewrite = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(rewrite);
      if (value && typeof value === 'object') {
        const out: Json = {};
        for (const [key, inner] of Object.entries(value)) {
          out[key] =
            key === '$ref' && typeof inner === 'string' && inner.startsWith('#/$defs/')
              ? `#/components/schemas/${renamed.get(inner.slice('#/$defs/'.length))}`
              : rewrite(inner);
        }
        return out;
      }
      return value;
    };
    for (const [name, def] of Object.entries(defs))
      components[renamed.get(name)!] = matchAnything(rewrite(def));
    return matchAnything(rewrite(json)) as Json;
  };
}

/**
 * `anyOf` with an empty member matches anything (zod writes that for a lenient field such as
 * `soft(z.unknown().transform(…))`): say so plainly with `{}` instead of an illogical anyOf.
 */
function matchAnything(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(matchAnything);
  if (!value || typeof value !== 'object') return value;
  const node = value as Json;
  const anyOf = node.anyOf as unknown[] | undefined;
  if (Array.isArray(anyOf) && anyOf.some((member) => isEmptyObject(member))) {
    const { anyOf: _dropped, ...rest } = node;
    return matchAnything(rest);
  }
  const out: Json = {};
  for (const [key, inner] of Object.entries(node)) out[key] = matchAnything(inner);
  return out;
}

function isEmptyObject(value: unknown): boolean {
  return !!value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0;
}

const RETRY_AFTER = {
  description: 'Seconds to wait before trying again',
  required: true,
  schema: { type: 'integer', minimum: 1 },
};

/** `/a/:b/c` → `/a/{b}/c` */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function operationId(method: string, path: string): string {
  const words = path
    .split('/')
    .filter(Boolean)
    .map((segment) => segment.replace(/^:/, 'by-').replace(/[^A-Za-z0-9]+/g, '-'));
  return [method.toLowerCase(), ...words]
    .join('-')
    .replace(/-+(.)/g, (_match, letter: string) => letter.toUpperCase())
    .replace(/-$/, '');
}

function answerDescription(status: number): string {
  if (status === 400) return 'Invalid input: the answer names each problem (path and message)';
  if (status === 401) return 'Missing or wrong credentials';
  if (status === 429) return 'Too many requests (failed authentications or lookups); see Retry-After';
  if (status === 415)
    return 'A compressed body (Content-Encoding other than identity): unsupported_content_encoding';
  return 'Error';
}

/** A route as the document sees it (console pages are described without their handlers). */
export type DocumentedRoute = Omit<Route, 'handle'>;

export function openApiDocument(routes: readonly DocumentedRoute[]): Json {
  const schemas: Record<string, unknown> = {};
  const convert = converter(schemas);
  schemas.Error = convert(errorSchema, 'output');
  const errorRef = { $ref: '#/components/schemas/Error' };
  const paths: Record<string, Record<string, unknown>> = {};
  const usedTags = new Set<string>();
  const usedSchemes = new Set<string>();

  for (const each of routes) {
    const path = openApiPath(each.path);
    const method = each.method.toLowerCase();
    usedTags.add(each.tag);
    for (const requirement of SECURITY[each.auth])
      for (const name of Object.keys(requirement)) usedSchemes.add(name);
    const paramShape = (each.params instanceof z.ZodObject ? each.params.shape : {}) as Record<
      string,
      z.ZodType
    >;
    const parameters: Json[] = [...each.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => {
      const name = match[1]!;
      const note = each.paramNotes?.[name];
      const shape = paramShape[name] ? convert(paramShape[name], 'input') : { type: 'string' };
      return {
        name,
        in: 'path',
        required: true,
        ...(note ? { description: note.description } : {}),
        schema: note?.enum ? { ...shape, enum: note.enum } : shape,
      };
    });
    const querySchema = each.query ?? each.rawQuery;
    if (querySchema) {
      const query = convert(querySchema, 'input');
      const properties = (query.properties ?? {}) as Record<string, Json>;
      const required = new Set((query.required as string[] | undefined) ?? []);
      for (const [name, schema] of Object.entries(properties)) {
        const { description, ...rest } = schema;
        parameters.push({
          name,
          in: 'query',
          required: required.has(name),
          ...(typeof description === 'string' ? { description } : {}),
          schema: rest,
        });
      }
    }

    const responses: Record<string, unknown> = {};
    const statuses = new Map(Object.entries(each.answers));
    // An admin route without a query refuses any parameter (checkQueryKeys), so it too can answer 400.
    if (querySchema || each.body || each.params || each.auth === 'admin') {
      statuses.set('400', statuses.get('400') ?? { description: answerDescription(400) });
    }
    // Every body is read uncompressed (src/http/body.ts): a Content-Encoding is refused. A JSON
    // body, and what comes to an admin POST that takes none, must be declared JSON too.
    const jsonOnly = each.body !== undefined || refusesBody(each);
    if (each.body || each.rawBody || jsonOnly) {
      statuses.set(
        '415',
        statuses.get('415') ?? { description: jsonOnly ? JSON_ONLY : answerDescription(415) },
      );
    }
    if (refusesBody(each)) {
      statuses.set(
        '413',
        statuses.get('413') ?? { description: 'Body over server.bodyLimitBytes (payload_too_large)' },
      );
    }
    if (each.auth === 'admin' || each.auth === 'metrics') {
      statuses.set('401', statuses.get('401') ?? { description: answerDescription(401) });
    }
    if (each.auth === 'admin') {
      // The admin gate's limit applies to every admin route; a route's own 429 comes on top.
      const own = statuses.get('429');
      statuses.set(
        '429',
        own
          ? { ...own, description: `${answerDescription(429)}; ${own.description}` }
          : { description: answerDescription(429) },
      );
    }
    for (const [status, answer] of [...statuses].sort(([a], [b]) => Number(a) - Number(b))) {
      const code = Number(status);
      const contentType = answer.contentType ?? 'application/json';
      const schema = answer.schema
        ? convert(answer.schema, 'output')
        : code >= 400 && contentType === 'application/json'
          ? errorRef
          : contentType === 'application/json'
            ? {}
            : { type: 'string' };
      responses[status] = {
        description: answer.description,
        // Every 429 comes from TooManyRequestsError (src/errors.ts), which always sets Retry-After.
        ...(code === 429 ? { headers: { 'Retry-After': RETRY_AFTER } } : {}),
        content: { [contentType]: { schema } },
      };
    }

    const requestBody = each.body
      ? { required: true, content: { 'application/json': { schema: convert(each.body, 'input') } } }
      : each.rawBody
        ? {
            required: true,
            description: each.rawBody.description,
            content: {
              [each.rawBody.contentType]: {
                schema: each.rawBody.schema ? convert(each.rawBody.schema, 'input') : { type: 'string' },
              },
            },
          }
        : undefined;

    paths[path] ??= {};
    paths[path]![method] = {
      operationId: operationId(each.method, each.path),
      summary: each.summary,
      ...(each.description ? { description: each.description } : {}),
      tags: [each.tag],
      security: SECURITY[each.auth],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(requestBody ? { requestBody } : {}),
      responses,
    };
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'chatbridge HTTP API',
      version: '1',
      description:
        'Generated from the route declarations the bridge mounts (src/http/routes.ts): admin API, ' +
        "each configured channel's routes, vendor intake, operations and the web console.",
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '/', description: 'this bridge' }],
    tags: Object.entries(TAGS)
      .filter(([name]) => usedTags.has(name))
      .map(([name, description]) => ({ name, description })),
    components: {
      securitySchemes: Object.fromEntries(Object.entries(SCHEMES).filter(([name]) => usedSchemes.has(name))),
      schemas,
    },
    paths,
  };
}
