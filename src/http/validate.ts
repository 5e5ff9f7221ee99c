import type { z } from 'zod';
import { issuesFromZod, ValidationError } from '../errors.js';

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

export function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.output<S> {
  return parseWith(schema, query, 'invalid query', 'invalid_query');
}

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  return parseWith(schema, body, 'invalid body', 'invalid_body');
}
