import { z } from 'zod';
import type { ChannelRoute, ChannelRouteResult } from '../contracts/channel.js';
import { issuesFromZod, ValidationError } from '../errors.js';
import { parseJson } from './json.js';

/**
 * Parse what a caller sent with a strict schema; every problem comes back as a 400 naming its
 * path. Unknown query parameters and body fields are refused, not ignored (strict schemas).
 */
export function parseWith<S extends z.ZodType>(
  schema: S,
  value: unknown,
  message: string,
  code: string,
): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ValidationError(message, issuesFromZod(result.error), code);
  return result.data;
}

/**
 * An optional query filter that is not given when it is empty: DESIGN §4 writes the filters as
 * templates with empty values (`?email=&phone=&identity=kind:value`, `?state=failed&destination=`),
 * which is also what a form or a script with an unset variable sends. A non-empty value is checked
 * by `schema` as before. (Only for filters: an empty `dryRun=` or cursor stays an error.)
 */
export function emptyIsAbsent<S extends z.ZodType>(schema: S) {
  return z
    .union([z.literal(''), schema])
    .describe('empty: the filter is not given')
    .optional()
    .transform((value) => (value === '' ? undefined : (value as z.output<S> | undefined)));
}

export function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.output<S> {
  return parseWith(schema, query, 'invalid query', 'invalid_query');
}

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  return parseWith(schema, body, 'invalid body', 'invalid_body');
}

/**
 * Call a channel's admin route the one way (the admin API and the console both do): its query
 * and JSON body validated with the route's own schemas, once, before the adapter sees them. An
 * empty body is `undefined` (a route whose schema needs a body answers 400 invalid_body).
 */
export async function runChannelRoute(
  route: ChannelRoute,
  input: { params: Record<string, string>; query: unknown; rawBody: Buffer },
): Promise<ChannelRouteResult> {
  const query = route.query ? parseQuery(route.query, input.query) : input.query;
  // A route that declares no body takes none: anything but nothing or `{}` is refused, not
  // ignored (a POST with `{"ttl": ...}` must not look as if the option had been applied).
  if (!route.body) {
    const text = input.rawBody.toString('utf8').trim();
    const sent: unknown = text === '' ? undefined : parseJson(text);
    const empty =
      sent === undefined ||
      (typeof sent === 'object' && sent !== null && !Array.isArray(sent) && Object.keys(sent).length === 0);
    if (!empty)
      throw new ValidationError('invalid body', [{ path: '', message: 'this route takes no body' }]);
  }
  const body = route.body
    ? parseBody(
        route.body,
        input.rawBody.length === 0 ? undefined : parseJson(input.rawBody.toString('utf8')),
      )
    : undefined;
  const result = await route.handle({ params: input.params, query, body });
  // The route's declared success status, unless the answer sets its own.
  return result.status === undefined && route.status !== undefined
    ? { ...result, status: route.status }
    : result;
}
