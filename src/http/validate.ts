import type { z } from 'zod';
import { ValidationError } from '../errors.js';

/** Parse a query string with a strict schema: unknown parameters are refused, not ignored. */
export function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.output<S> {
  const result = schema.safeParse(query);
  if (!result.success) {
    throw new ValidationError(
      'invalid query',
      result.error.issues.map((issue) => ({
        path: issue.path.length > 0 ? issue.path.join('.') : 'query',
        message: issue.message,
      })),
      'invalid_query',
    );
  }
  return result.data;
}
