import type { z } from 'zod';
import { kitSchemas } from './wire.js';

/**
 * parseWire(schema, value): what `schema.parse(value)` returns, for the vendor schemas built from
 * the adapter kit (wire.ts), at a fraction of the cost. The zod schema stays the one definition
 * (types, OpenAPI, error messages); this reads it once and turns it into plain functions.
 *
 * Why: a JivoChat envelope has some fifty lenient fields, each three zod nodes deep inside
 * objects that are three more (catch, optional, nullable). Running them was ~9 µs per
 * chat_accepted and ~35 µs per 50-message chat_finished in a loop, and 20 KB of the ~146 KB the
 * bridge allocated per webhook (the largest single source; garbage collection is about a third
 * of its CPU under load). Measured with a sampling heap profile of the serving bridge.
 *
 * Read directly: the kit's own combinators (soft, softArray and the lenient fields, which never
 * fail), loose or plain objects of them, unchecked string / number / boolean / unknown, and
 * records of unknown values by string keys. Anything else (unions, other records, transforms, refinements, strict objects, objects with a
 * `__proto__` key) is handed to that node's own zod safeParse, so its semantics are zod's by
 * construction. When the whole value fails, zod parses it again to throw its usual error.
 * test/intake.wire-parse.test.ts holds the outputs equal to zod's on every fixture and on
 * thousands of mutated ones.
 */
export function parseWire<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const out = readerOf(schema)(value);
  return out === FAIL ? schema.parse(value) : (out as z.output<T>);
}

const FAIL: unique symbol = Symbol('fail');
type Reader = (value: unknown) => unknown;

const readers = new WeakMap<z.ZodType, Reader>();

function readerOf(schema: z.ZodType): Reader {
  let reader = readers.get(schema);
  if (reader === undefined) {
    reader = compile(schema);
    readers.set(schema, reader);
  }
  return reader;
}

/** The zod definition fields this module reads (zod 4's `_zod.def`). */
interface Def {
  type: string;
  checks?: unknown[];
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  /** Records. */
  keyType?: z.ZodType;
  valueType?: z.ZodType;
}

function compile(schema: z.ZodType): Reader {
  const kit = kitSchemas.get(schema);
  if (kit?.kind === 'lenient') {
    const read = kit.read;
    return (value) => (value === undefined ? undefined : value === null ? null : read(value));
  }
  if (kit?.kind === 'soft') {
    // nullish().catch(undefined): null and undefined as they are, a failure as undefined.
    const inner = lazy(kit.inner);
    return (value) => {
      if (value === undefined || value === null) return value;
      const out = inner()(value);
      return out === FAIL ? undefined : out;
    };
  }
  if (kit?.kind === 'softArray') {
    const item = lazy(kit.item);
    return (value) => {
      if (value === undefined || value === null) return value;
      if (!Array.isArray(value)) return undefined;
      const read = item();
      const out: unknown[] = [];
      for (const element of value) {
        const parsed = read(element);
        if (parsed !== FAIL) out.push(parsed);
      }
      return out;
    };
  }
  const def = defOf(schema);
  const unchecked = def.checks === undefined || def.checks.length === 0;
  if (def.type === 'unknown') return (value) => value;
  if (def.type === 'string' && unchecked) return (value) => (typeof value === 'string' ? value : FAIL);
  if (def.type === 'boolean' && unchecked) return (value) => (typeof value === 'boolean' ? value : FAIL);
  if (def.type === 'number' && unchecked)
    return (value) => (typeof value === 'number' && Number.isFinite(value) ? value : FAIL);
  if (def.type === 'object' && def.shape !== undefined) {
    const catchall = def.catchall === undefined ? 'strip' : loose(def.catchall) ? 'keep' : null;
    if (catchall !== null) return objectReader(schema, def.shape, catchall);
  }
  if (def.type === 'record' && anyStringKey(def.keyType) && anyValue(def.valueType))
    return recordReader(viaZod(schema));
  return viaZod(schema);
}

/** z.string() as a record's key: every string key passes as it is. */
function anyStringKey(schema: z.ZodType | undefined): boolean {
  if (schema === undefined) return false;
  const def = defOf(schema) as Def & { coerce?: boolean };
  const internals = (schema as unknown as { _zod: { values?: unknown } })._zod;
  return (
    def.type === 'string' &&
    (def.checks === undefined || def.checks.length === 0) &&
    !def.coerce &&
    internals.values === undefined
  );
}

/** z.unknown() as a record's values: every value passes as it is. */
function anyValue(schema: z.ZodType | undefined): boolean {
  if (schema === undefined) return false;
  const def = defOf(schema);
  return def.type === 'unknown' && (def.checks === undefined || def.checks.length === 0);
}

/**
 * z.record(z.string(), z.unknown()) (JivoChat's `visitor.social` and `analytics`, on every
 * webhook): zod's safeParse of even `{}` cost a context, a payload and a result object. Read as
 * zod reads it: a plain object (zod's isPlainObject), its own enumerable keys in order but
 * `__proto__`, each value as it is. A symbol key (never in JSON) goes to zod, whose key schema
 * refuses it.
 */
function recordReader(zodRead: Reader): Reader {
  return (value) => {
    if (!isPlainObject(value)) return FAIL;
    const keys = Reflect.ownKeys(value);
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      if (typeof key !== 'string') return zodRead(value);
      if (key === '__proto__' || !Object.prototype.propertyIsEnumerable.call(value, key)) continue;
      out[key] = value[key];
    }
    return out;
  };
}

/** zod's util.isPlainObject (zod 4), which its record parse asks first. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const made: unknown = (value as { constructor?: unknown }).constructor;
  if (made === undefined || typeof made !== 'function') return true;
  const prototype: unknown = made.prototype;
  if (typeof prototype !== 'object' || prototype === null || Array.isArray(prototype)) return false;
  return Object.hasOwn(prototype, 'isPrototypeOf');
}

/** Any node this module does not read itself: zod's own safeParse, FAIL for a failure. */
function viaZod(schema: z.ZodType): Reader {
  return (value) => {
    const parsed = schema.safeParse(value);
    return parsed.success ? parsed.data : FAIL;
  };
}

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** A catchall of z.unknown() (z.looseObject): unknown keys are kept as they are. */
function loose(catchall: z.ZodType): boolean {
  return defOf(catchall).type === 'unknown';
}

/** Nested schemas compile on first use (a schema may contain itself through a getter). */
function lazy(schema: z.ZodType): () => Reader {
  let reader: Reader | undefined;
  return () => {
    reader ??= readerOf(schema);
    return reader;
  };
}

/**
 * zod's object parse, for fields that are all optional-in and optional-out (the kit's) or plain
 * required ones: a field absent from the input stays absent, a present one is written even when
 * it reads as undefined; declared fields come first, in the shape's order, then (loose objects)
 * the others in the input's order.
 */
function objectReader(
  schema: z.ZodType,
  shape: Record<string, z.ZodType>,
  catchall: 'strip' | 'keep',
): Reader {
  const fields = Object.entries(shape).map(([key, field]) => {
    const internals = (field as unknown as { _zod: { optin?: string; optout?: string } })._zod;
    const optional = internals.optin === 'optional' && internals.optout === 'optional';
    const required = internals.optin === undefined && internals.optout === undefined;
    return { key, schema: field, optional, required };
  });
  const declared = new Set(Object.keys(shape));
  // Any other kind of field (defaulted, half-optional) is zod's to read.
  if (fields.some((field) => !field.optional && !field.required) || declared.has('__proto__')) {
    return viaZod(schema);
  }
  const keys = fields.map((field) => field.key);
  const required = fields.map((field) => field.required);
  // Compiled on first use: a schema may contain itself through a getter.
  let reads: Reader[] | undefined;
  let read: CompiledObjectReader | undefined;
  return (value) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return FAIL;
    reads ??= fields.map((field) => readerOf(field.schema));
    read ??= compileObjectReader(keys, required, catchall === 'keep');
    return read(value as Record<string, unknown>, reads, FAIL, declared);
  };
}

type CompiledObjectReader = (
  input: Record<string, unknown>,
  reads: readonly Reader[],
  fail: typeof FAIL,
  declared: ReadonlySet<string>,
) => unknown;

/**
 * One object schema's read as a function of its own, its keys written into the code as literals.
 * Why: one generic loop over `input[key]` for every schema made each property read and write a
 * megamorphic keyed access (one site for every key of every vendor object), looked up in V8's
 * shared stub cache, and every field's reader one call site with dozens of targets; a JivoChat
 * chat_accepted reads ~70 fields in 12 objects. Here each `input["name"]` is a named access
 * with an inline cache of its own, as hand-written code would have, and each field's reader its
 * own call site. The keys are the schema's own (our source, not vendor input), written with
 * JSON.stringify; `__proto__` never gets here (objectReader hands such a schema to zod). Same
 * semantics as the loop it replaces: declared keys first, in the shape's order, a present key
 * written even when it reads as undefined, then (loose objects) the others in the input's order.
 */
function compileObjectReader(
  keys: readonly string[],
  required: readonly boolean[],
  keep: boolean,
): CompiledObjectReader {
  const lines = ['const out = {};', 'let present = 0;', 'let item;', 'let read;'];
  keys.forEach((key, index) => {
    const literal = JSON.stringify(key);
    // JSON has no undefined values: only then can the key be absent (the `in` test is slower).
    lines.push(
      `item = input[${literal}];`,
      `if (item !== undefined || ${literal} in input) {`,
      '  present++;',
      `  read = reads[${index}](item);`,
      '  if (read === fail) return fail;',
      `  out[${literal}] = read;`,
      required[index] ? '} else return fail;' : '}',
    );
  });
  if (keep)
    lines.push(
      'for (const key in input) {',
      // A declared key, read above; once all of those are seen, no other key needs the lookup.
      '  if (present > 0 && declared.has(key)) { present--; continue; }',
      // zod leaves an undeclared __proto__ out: assigning it would replace out's prototype.
      "  if (key === '__proto__') continue;",
      '  out[key] = input[key];',
      '}',
    );
  lines.push('return out;');
  return new Function('input', 'reads', 'fail', 'declared', lines.join('\n')) as CompiledObjectReader;
}
