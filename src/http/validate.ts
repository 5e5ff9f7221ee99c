import { z } from 'zod';
import { configIssues, keysOfSchema, valueAt } from '../config/issues.js';
import type { ChannelRoute, ChannelRouteResult } from '../contracts/channel.js';
import { formatPath, ValidationError } from '../errors.js';
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
  if (!result.success) {
    // A key the caller left out read `Invalid input: expected string, received undefined`: zod's
    // words about a value nobody sent. It is named as required instead.
    const issues = result.error.issues
      .flatMap((issue) => chosenBranch(issue, value))
      .map((issue) =>
        (issue.code === 'invalid_type' || issue.code === 'invalid_union') &&
        issue.path.length > 0 &&
        absent(value, issue.path)
          ? { ...issue, message: 'required' }
          : issue,
      );
    // The rest in config check's words (src/config/issues.ts), with values as JSON: an unknown key
    // at its own path with the key meant (`did you mean "with"?`) or the keys taken, an empty
    // string, a wrong type or a value out of range with what was sent, a value not one of a list
    // as `one of pending, delivered, failed; got "bogus"`. They read zod's own: `(root):
    // Unrecognized key: "foo"`, `Too small: expected string to have >=1 characters`. A schema's
    // own message is kept. Every admin body, query and parameter is said here, and only here.
    throw new ValidationError(
      message,
      configIssues(issues, value, (path) => keysOfSchema(schema, path), [], 'json'),
      code,
    );
  }
  return result.data;
}

/**
 * A body of one of several forms (`{recordId}` or `{identifier}`) with a mistake in it read
 * `(root): Invalid input`: zod cannot tell which form was meant. The form whose keys the caller
 * used (the one branch with no unknown key at its own level) is the one meant: its own issues
 * are said instead, at their full paths. A union of types (a string or a number) is said by the
 * branch of the value's type. With no fitting form, keys no form takes are said as unknown, and
 * keys of several forms together as such; with several, the keys each form needs.
 */
function chosenBranch(issue: z.core.$ZodIssue, value: unknown): z.core.$ZodIssue[] {
  if (issue.code !== 'invalid_union' || issue.errors.length < 2) return [issue];
  const at = (inner: z.core.$ZodIssue) =>
    ({ ...inner, path: [...issue.path, ...inner.path] }) as z.core.$ZodIssue;
  // A value of one of the union's types with a mistake in it (`customerId: -1` for a string or a
  // whole number at least 0): the branch of its type says the mistake.
  const typed = issue.errors.filter(
    (branch) => !branch.some((inner) => inner.code === 'invalid_type' && inner.path.length === 0),
  );
  if (typed.length === 1) return typed[0]!.map(at);
  const unknown = (branch: readonly z.core.$ZodIssue[]) =>
    branch.flatMap((inner) =>
      inner.code === 'unrecognized_keys' && inner.path.length === 0 ? inner.keys : [],
    );
  const fitting = issue.errors.filter((branch) => unknown(branch).length === 0);
  if (fitting.length === 1) return fitting[0]!.map(at);
  const given = valueAt(value, issue.path);
  if (given === null || typeof given !== 'object' || Array.isArray(given)) return [issue];
  if (fitting.length > 1) {
    // Several forms fit, each missing its own keys (`{}` for an unmerge): the keys of each form.
    const forms = fitting.map((branch) =>
      branch
        .filter((inner) => inner.path.length === 1 && absent(given, inner.path))
        .map((inner) => String(inner.path[0]))
        .join(' and '),
    );
    return forms.every((form) => form !== '')
      ? [{ ...issue, message: `required: ${forms.join(' or ')}` }]
      : [issue];
  }
  // Every form has a key it does not take. Keys no form takes (`recordid`) are said as unknown
  // (with the key meant); keys of different forms together, that only one is given.
  const everywhere = unknown(issue.errors[0]!).filter((key) =>
    issue.errors.every((branch) => unknown(branch).includes(key)),
  );
  if (everywhere.length > 0)
    return [
      {
        ...issue,
        code: 'unrecognized_keys',
        keys: everywhere,
        errors: undefined,
      } as unknown as z.core.$ZodIssue,
    ];
  const mixed = [...new Set(issue.errors.flatMap(unknown))];
  return [{ ...issue, message: `give one of ${mixed.join(', ')}, not several: each is a form of its own` }];
}

/** The values a parameter takes and what was sent (quoted as JSON, cut at 80 characters). */
function oneOf(values: readonly unknown[], given: unknown): string {
  const text = JSON.stringify(given) ?? 'nothing';
  return `one of ${values.map(String).join(', ')}; got ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`;
}

/** Whether `path` names a key its parent object does not have. */
function absent(value: unknown, path: readonly PropertyKey[]): boolean {
  let parent = value;
  for (const part of path.slice(0, -1)) {
    if (parent === null || typeof parent !== 'object') return false;
    parent = (parent as Record<PropertyKey, unknown>)[part];
  }
  if (parent === null || typeof parent !== 'object' || Array.isArray(parent)) return false;
  return (parent as Record<PropertyKey, unknown>)[path[path.length - 1]!] === undefined;
}

/**
 * An optional query filter that is not given when it is empty: DESIGN §4 writes the filters as
 * templates with empty values (`?email=&phone=&identity=kind:value`, `?state=failed&destination=`),
 * which is also what a form or a script with an unset variable sends. A non-empty value is checked
 * by `schema` as before. (Only for filters: an empty `dryRun=` or cursor stays an error.)
 */
export function emptyIsAbsent<S extends z.ZodType>(schema: S) {
  return z
    .union([z.literal(''), schema], {
      // A value neither empty nor one `schema` takes (`?state=bogus`) failed both branches, and
      // zod said only "Invalid input". What `schema` says of it names the values it takes.
      error: (issue) => {
        if (issue.code !== 'invalid_union') return undefined;
        const inner = issue.errors[1]?.[0];
        return inner?.code === 'invalid_value' && /^Invalid option:/.test(inner.message)
          ? oneOf(inner.values, issue.input)
          : inner?.message;
      },
    })
    .describe('empty: the filter is not given')
    .optional()
    .transform((value) => (value === '' ? undefined : (value as z.output<S> | undefined)));
}

/**
 * A whole number in a query string, written as plain digits (`limit=50`). z.coerce.number() read
 * `1e2` as 100, `0x10` as 16 and ` 5` as 5, and a repeated parameter as "expected number, received
 * NaN"; here anything but digits is a 400 that says which form is expected.
 */
/**
 * What each queryInt() schema takes, for the document: its zod input is a string of digits, but a
 * client written from the document should see the whole number, its bounds and its default
 * (src/http/openapi.ts writes `{type: integer, minimum, maximum, default}` for these).
 */
export const queryIntegers = new WeakMap<object, { min: number; max: number; default: number }>();

export function queryInt(options: { min: number; max: number; default: number }) {
  const { min, max } = options;
  const schema = z
    .string()
    .regex(
      /^[0-9]{1,9}$/,
      `a whole number from ${min} to ${max}, in plain digits (such as ${options.default})`,
    )
    .transform(Number)
    .pipe(z.number().min(min, `at least ${min}`).max(max, `at most ${max}`))
    .optional()
    .default(options.default)
    .describe(`a whole number from ${min} to ${max} (default ${options.default})`);
  queryIntegers.set(schema, options);
  return schema;
}

/**
 * What the query string holds, checked before its schema: a parameter the route does not take
 * (any, on a route without a query) and a parameter given more than once are refused, each
 * named. Koa reads `?limit=1&limit=2` as an array, which the schemas reported as a confusing type
 * error or, on a route without a query, nobody looked at. No admin parameter takes several values.
 */
export function checkQueryKeys(schema: z.ZodType | undefined, query: Record<string, unknown>): void {
  const names = schema instanceof z.ZodObject ? Object.keys(schema.shape as object) : undefined;
  const issues: Array<{ path: string; message: string }> = [];
  for (const [name, value] of Object.entries(query)) {
    if (!schema) issues.push({ path: name, message: 'unknown parameter: this route takes no query' });
    else if (names && !names.includes(name))
      issues.push({ path: name, message: `unknown parameter: this route takes ${names.join(', ')}` });
    else if (Array.isArray(value)) issues.push({ path: name, message: 'given more than once: give it once' });
  }
  if (issues.length > 0) throw new ValidationError('invalid query', issues, 'invalid_query');
}

/** Check the query's keys (checkQueryKeys), then parse it with `schema`. */
export function parseQuery<S extends z.ZodType>(schema: S, query: Record<string, unknown>): z.output<S> {
  checkQueryKeys(schema, query);
  return parseWith(schema, query, 'invalid query', 'invalid_query');
}

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  return parseWith(schema, body, 'invalid body', 'invalid_body');
}

/**
 * A route that declares no body takes none: anything but nothing or `{}` is refused, not ignored
 * (a POST with `{"ttl": ...}` must not look as if the option had been applied).
 */
export function refuseBody(rawBody: Buffer): void {
  const text = rawBody.toString('utf8').trim();
  const sent: unknown = text === '' ? undefined : parseJson(text);
  const empty =
    sent === undefined ||
    (typeof sent === 'object' && sent !== null && !Array.isArray(sent) && Object.keys(sent).length === 0);
  // The body as a whole: '(root)', as zod's issues about a whole value read (formatPath), not ''.
  if (!empty)
    throw new ValidationError('invalid body', [
      { path: formatPath([]), message: 'this route takes no body' },
    ]);
}

/**
 * Call a channel's admin route the one way (the admin API and the console both do): its query
 * and JSON body validated with the route's own schemas, once, before the adapter sees them. An
 * empty body is `undefined` (a route whose schema needs a body answers 400 invalid_body).
 */
export async function runChannelRoute(
  route: ChannelRoute,
  input: { params: Record<string, string>; query: Record<string, unknown>; rawBody: Buffer },
): Promise<ChannelRouteResult> {
  // A route without a query schema takes no query: a parameter is refused, not ignored.
  checkQueryKeys(route.query, input.query);
  const query = route.query ? parseQuery(route.query, input.query) : input.query;
  if (!route.body) refuseBody(input.rawBody);
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
