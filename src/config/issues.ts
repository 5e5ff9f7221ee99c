import type { z } from 'zod';
import { type ErrorIssue, formatPath } from '../errors.js';
import { closest } from './closest.js';
import { HTTP_URL_MESSAGE } from './schema.js';

export { closest };

/**
 * zod's issues in words a config author can act on. Two of zod's own are unhelpful there:
 *
 * - An unknown key (`strictObject`) is reported by zod at the object holding it, as
 *   `server: Unrecognized key: "hots"`. Here it is reported at its own path (`server.hots`), with
 *   the key meant when one is close (`did you mean "host"?`), else the keys allowed there.
 * - A number or boolean where text is expected (`token: 12345`, `name: yes`: YAML reads them
 *   unquoted as a number and a boolean) read `Invalid input: expected string, received number`.
 *   It says what YAML made of it and that quotes keep it text.
 */

type Issue = z.core.$ZodIssue;
type Key = PropertyKey;

/** The keys a schema allows at `path` (inside `root`), or undefined when it cannot tell. */
export type KnownKeys = (path: readonly Key[]) => string[] | undefined;

/**
 * How a value is said: `yaml` for a config file (`the text "abc"`, `a list`, `a section`, and
 * quotes that keep a number text), `json` for a request body or query (the value as JSON,
 * `"abc"`, `5`, `null`; `a string`, `an array`, `an object`). The admin API's bodies and queries
 * are worded here too (src/http/validate.ts), so one set of rules says both.
 */
export type Wording = 'yaml' | 'json';

/** How many unknown keys of one level are named one by one; the rest are counted in one issue. */
export const UNKNOWN_KEYS_NAMED = 10;

/** `knownKeys` gets full paths (with `prefix`); `document` is the value the schema parsed. */
export function configIssues(
  issues: readonly Issue[],
  document: unknown,
  knownKeys: KnownKeys,
  prefix: readonly Key[] = [],
  wording: Wording = 'yaml',
): ErrorIssue[] {
  const described = wording === 'json' ? asJson : asYaml;
  const expected = wording === 'json' ? EXPECTED_JSON : EXPECTED;
  const out: ErrorIssue[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(path) ?? [];
      // Each key named is looked up against the schema (the key meant, the level it belongs
      // to): a request body of 60,000 unknown keys took 10 s of CPU and answered 3.7 MB. The
      // first ones say what is wrong; the rest are counted.
      for (const key of issue.keys.slice(0, UNKNOWN_KEYS_NAMED))
        out.push({ path: formatPath([...path, key]), message: unknownKey(key, known, path, knownKeys) });
      const more = issue.keys.length - UNKNOWN_KEYS_NAMED;
      if (more > 0)
        out.push({
          path: formatPath(path),
          message: `${more.toLocaleString('en-US')} more unknown key${more === 1 ? '' : 's'}${known.length > 0 ? ` (allowed here: ${known.join(', ')})` : ''}`,
        });
      continue;
    }
    if (wording === 'yaml' && issue.code === 'invalid_type' && issue.expected === 'string') {
      // `document` is what the schema parsed: the issue's own path, without the prefix.
      const value = valueAt(document, issue.path);
      if (typeof value === 'number' || typeof value === 'boolean') {
        out.push({
          path: formatPath(path),
          message: `expected text, got the ${typeof value} ${String(value)}: write it in quotes ("...")`,
        });
        continue;
      }
    }
    if (issue.code === 'invalid_type' && expected[issue.expected] !== undefined) {
      const value = valueAt(document, issue.path);
      // An absent key keeps its own wording (a required key is said to be required).
      if (value !== undefined) {
        out.push({
          path: formatPath(path),
          message: `expected ${expected[issue.expected]}, got ${described(value)}`,
        });
        continue;
      }
    }
    if (issue.code === 'invalid_union' && /^Invalid input$/.test(issue.message)) {
      // A value of none of a union's types (`customerId: true` for a string or a number) read
      // zod's bare `Invalid input`: the types it takes, and what was sent.
      const value = valueAt(document, issue.path);
      const types = issue.errors.map((branch) =>
        branch.length === 1 && branch[0]!.code === 'invalid_type' && branch[0]!.path.length === 0
          ? expected[branch[0]!.expected]
          : undefined,
      );
      if (value !== undefined && types.length > 0 && types.every((type) => type !== undefined)) {
        out.push({
          path: formatPath(path),
          message: `expected ${[...new Set(types)].join(' or ')}, got ${described(value)}`,
        });
        continue;
      }
    }
    if (issue.code === 'invalid_value' && /^Invalid option:/.test(issue.message)) {
      // zod's `Invalid option: expected one of "person"|"email"|"phone"`: the options as a list,
      // what the file holds, and the one meant when a typo is close to it (`emial`).
      const value = valueAt(document, issue.path);
      const options = issue.values.map(String);
      const close = typeof value === 'string' ? closest(value, options) : undefined;
      out.push({
        path: formatPath(path),
        message: `one of ${options.join(', ')}; got ${described(value)}${close !== undefined ? ` (did you mean "${close}"?)` : ''}`,
      });
      continue;
    }
    if (
      issue.code === 'invalid_format' &&
      (FORMATS[issue.format] === issue.message ||
        (issue.format === 'url' && issue.message === HTTP_URL_MESSAGE))
    ) {
      // zod's own 'Invalid email address' / 'Invalid URL', and httpUrlSchema's (another schema's
      // own message is kept): what to write, and what the file holds. Every URL the config takes
      // is http(s) only.
      out.push({
        path: formatPath(path),
        message: `${issue.format === 'email' ? 'an e-mail address (name@example.org)' : 'an http:// or https:// URL (https://…)'}, got ${described(valueAt(document, issue.path))}`,
      });
      continue;
    }
    if (
      issue.code === 'invalid_format' &&
      issue.format === 'regex' &&
      /^Invalid string:/.test(issue.message)
    ) {
      // zod's `Invalid string: must match pattern /^[a-z]+$/` (a schema's own message is kept).
      out.push({
        path: formatPath(path),
        message: `text matching ${issue.pattern}, got ${described(valueAt(document, issue.path))}`,
      });
      continue;
    }
    if ((issue.code === 'too_small' || issue.code === 'too_big') && /^Too (small|big):/.test(issue.message)) {
      out.push({
        path: formatPath(path),
        message: outOfBounds(issue, valueAt(document, issue.path), wording),
      });
      continue;
    }
    out.push({ path: formatPath(path), message: issue.message });
  }
  return out;
}

/**
 * zod's own bound messages (`Too small: expected number to be >=2`, `expected string to have
 * >=1 characters`) in a config author's words, with what the file holds: `at least 2, got 1`.
 * A schema's own message for a bound (`at least 16 characters: …`) is kept as written.
 */
function outOfBounds(
  issue: Extract<Issue, { code: 'too_small' } | { code: 'too_big' }>,
  value: unknown,
  wording: Wording,
): string {
  const small = issue.code === 'too_small';
  const bound = Number(small ? issue.minimum : issue.maximum);
  const inclusive = issue.inclusive !== false;
  const side = small ? (inclusive ? 'at least' : 'more than') : inclusive ? 'at most' : 'less than';
  if (issue.origin === 'string') {
    if (small && bound === 1 && inclusive) return 'must not be empty';
    const length = typeof value === 'string' ? `, got ${value.length}` : '';
    return `${side} ${bound} characters${length}`;
  }
  if (issue.origin === 'array' || issue.origin === 'set') {
    const count = Array.isArray(value) ? (value.length === 0 ? ', got none' : `, got ${value.length}`) : '';
    return `${side} ${bound} ${wording === 'json' ? 'element' : 'item'}${bound === 1 ? '' : 's'}${count}`;
  }
  return `${side} ${bound}${value === undefined ? '' : `, got ${String(value)}`}`;
}

/** zod's default message of each string format reworded above (checked, so a schema's own is kept). */
const FORMATS: Partial<Record<string, string>> = { email: 'Invalid email address', url: 'Invalid URL' };

/**
 * What zod's `expected` means in a YAML file. `mergeOn: email` (a list wanted), `admin:` with
 * nothing under it (a section wanted) or `ackAfterAppend: yes` (YAML 1.2 reads yes as text) read
 * `Invalid input: expected array, received string` and the like: zod's words, not the fix.
 */
const EXPECTED: Partial<Record<string, string>> = {
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'a list ([a, b], or one "- item" line each)',
  object: 'a section (key: value lines indented under it)',
};

/** zod's `expected` in a request body (JSON): its own words. */
const EXPECTED_JSON: Partial<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'an array',
  object: 'an object',
};

/** A value as JSON writes it, cut at 80 characters: `"abc"`, `5`, `null`, `["a"]`. */
function asJson(value: unknown): string {
  const text = JSON.stringify(value) ?? 'nothing';
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/** A value as YAML gave it, in words: `the text "abc"`, `the number 2.5`, `nothing`. */
function asYaml(value: unknown): string {
  if (value === null) return 'nothing: the key has no value';
  if (typeof value === 'string')
    return `the text ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `the ${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a section';
  return typeof value;
}

function unknownKey(
  key: string,
  known: readonly string[],
  path: readonly Key[],
  knownKeys: KnownKeys,
): string {
  const close = closest(key, known);
  if (close !== undefined) return `unknown key (did you mean "${close}"?)`;
  // The right key one level too high (`timelineRetention:` at the top, for limits.timelineRetention):
  // said where it goes, not only what this level allows.
  const under = known.filter((section) => knownKeys([...path, section])?.includes(key));
  if (under.length > 0)
    return `unknown key here (did you mean ${under.map((section) => formatPath([...path, section, key])).join(' or ')}?)`;
  if (known.length === 0) return 'unknown key';
  return `unknown key (allowed here: ${known.join(', ')})`;
}

/** The value at `path` in a parsed document (a config file, a request body), or undefined where there is none. */
export function valueAt(document: unknown, path: readonly Key[]): unknown {
  let value = document;
  for (const part of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<Key, unknown>)[part];
  }
  return value;
}

/**
 * The keys an object schema allows at `path`, walking through zod's wrappers (default, optional,
 * preprocess ...). `pick` chooses among schemas where the value decides (a destination's kind);
 * it gets the schema reached so far and the path walked.
 */
export function keysOfSchema(
  root: z.ZodType,
  path: readonly Key[],
  pick?: (schema: z.ZodType, walked: readonly Key[]) => z.ZodType | undefined,
): string[] | undefined {
  let schema: z.ZodType | undefined = root;
  for (let index = 0; index <= path.length && schema; index++) {
    schema = unwrap(pick?.(schema, path.slice(0, index)) ?? schema);
    let def = defOf(schema);
    // A union of object forms (an unmerge body: {recordId} or {identifier}): the keys of every
    // form at its own level, and below it the form that has the key walked.
    const forms = def.type === 'union' ? (def.options ?? []).map((option) => defOf(unwrap(option))) : [];
    if (forms.length > 0 && forms.every((form) => form.type === 'object')) {
      if (index === path.length) return [...new Set(forms.flatMap((form) => Object.keys(form.shape ?? {})))];
      const part = path[index];
      const form = forms.find(
        (candidate) => typeof part === 'string' && candidate.shape?.[part] !== undefined,
      );
      if (!form) return undefined;
      def = form;
    }
    if (index === path.length) return def.type === 'object' ? Object.keys(def.shape ?? {}) : undefined;
    const part = path[index];
    if (def.type === 'object' && typeof part === 'string') schema = def.shape?.[part];
    else if (def.type === 'array' && typeof part === 'number') schema = def.element;
    else if (def.type === 'record' && typeof part === 'string') schema = def.valueType;
    else return undefined;
  }
  return undefined;
}

interface LooseDef {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: readonly z.ZodType[];
}

function defOf(schema: z.ZodType): LooseDef {
  return (schema as unknown as { _zod: { def: LooseDef } })._zod.def;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (let depth = 0; depth < 20; depth++) {
    const def = defOf(current);
    if (
      def.innerType &&
      ['optional', 'nullable', 'default', 'prefault', 'catch', 'readonly'].includes(def.type)
    )
      current = def.innerType;
    // z.preprocess(fn, schema) is a pipe from a transform into the schema; x.transform(fn) a pipe
    // from x into a transform: the shape is on the side that is not the transform.
    else if (def.type === 'pipe' && def.in && def.out)
      current = defOf(def.in).type === 'transform' ? def.out : def.in;
    else break;
  }
  return current;
}
