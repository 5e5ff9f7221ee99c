import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import {
  configSchema,
  durationSchema,
  outboundEventTypes,
  webhookDestinationSchema,
} from '../src/config/schema.js';

/**
 * README "Configuration reference" against src/config/schema.ts: every row names a key the schema
 * has, with the default the schema gives it, and every key is in the table (a row of its own, or
 * named in its parent's row). A newcomer reads the table, not the schema; drift there is a wrong
 * default in production.
 */
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const reference = readme.slice(
  readme.indexOf('## Configuration reference'),
  readme.indexOf('## Connect your CRM'),
);
const rows = [...reference.matchAll(/^\| `([^`]+)` \| (.*?) \| (.*) \|$/gm)].map(
  ([, key, value, meaning]) => ({
    key: key!,
    value: value!,
    meaning: meaning!,
  }),
);

/** Defaults applied outside the schema, where the code that uses the key fills it in. */
const DEFAULTED_ELSEWHERE: Record<string, string> = {
  'destinations[].map.source': 'src/delivery/routing.ts DEFAULT_SOURCE',
};

/** The schema's keys as the table writes them: `a.b`, lists as `a[]`, a list item's keys `a[].b`. */
function schemaKeys(): string[] {
  const keys: string[] = [];
  const unwrap = (schema: z.ZodType): z.ZodType => {
    for (;;) {
      const def = (schema as any)._zod.def;
      if (['default', 'prefault', 'optional', 'nullable'].includes(def.type)) schema = def.innerType;
      else if (def.type === 'pipe') schema = def.in._zod.def.type === 'transform' ? def.out : def.in;
      else return schema;
    }
  };
  const walk = (schema: z.ZodType, path: string) => {
    const inner = unwrap(schema);
    const def = (inner as any)._zod.def;
    if (path) keys.push(path);
    if (path === 'destinations') return walk(webhookDestinationSchema, 'destinations[]');
    if (def.type === 'object')
      for (const [name, child] of Object.entries(def.shape))
        walk(child as z.ZodType, path ? `${path}.${name}` : name);
    if (def.type === 'array' && (unwrap(def.element) as any)._zod.def.type === 'object')
      walk(def.element, `${path}[]`);
  };
  walk(configSchema, '');
  return keys;
}

/** What a Default cell says, as the parsed config holds it (durations in ms). */
function documented(cell: string): unknown {
  if (/^(—|empty)/.test(cell)) return undefined;
  if (cell === 'every event type') return [...outboundEventTypes];
  const plain = /^(\d+)\b/.exec(cell);
  if (plain) return Number(plain[1]);
  const quoted = [...cell.matchAll(/`([^`]*)`/g)].map((match) => match[1]!);
  const scalar = (text: string): unknown => {
    if (/^\d+(ms|s|m|h|d)$/.test(text)) return durationSchema.parse(text);
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  };
  // `failureThreshold: 5`, `cooldown: 30s`: an object's defaults, one key each.
  if (quoted.length > 0 && quoted.every((text) => /^\w+: /.test(text)))
    return Object.fromEntries(
      quoted.map((text) => [text.slice(0, text.indexOf(':')), scalar(text.slice(text.indexOf(':') + 2))]),
    );
  const first = quoted[0]!;
  if (/^\[[^"]*\]$/.test(first)) return first === '[]' ? [] : first.slice(1, -1).split(', ').map(scalar);
  return scalar(first);
}

/** The value at a table key: `a[]` is the list, `a[].b` the key of its first item. */
function valueAt(config: unknown, key: string): unknown {
  let value: any = config;
  for (const part of key.split('.')) {
    const list = part.endsWith('[]');
    value = value?.[list ? part.slice(0, -2) : part];
    if (list && !key.endsWith(part)) value = value?.[0];
  }
  return value;
}

describe('README "Configuration reference"', () => {
  const admin = { token: 'a-long-enough-admin-token' };
  /** Nothing but what is required: the lists are empty. */
  const bare = configSchema.parse({ admin });
  /** One item in each list, with only its required keys: the items' defaults. */
  const items = configSchema.parse({
    admin,
    agents: [{ email: 'oleg@shop.example', name: 'Oleg' }],
    channels: [{ id: 'site', vendor: 'jivochat', token: 'jivo-token-0123456789' }],
    attributeSources: [{ id: 'crm', url: 'http://127.0.0.1:9/' }],
    destinations: [
      { id: 'crm', url: 'http://127.0.0.1:9/', secret: `whsec_${Buffer.alloc(24, 7).toString('base64')}` },
    ],
  });

  it('has a row for the keys it is checked against (the table parsed)', () => {
    expect(rows.length).toBeGreaterThan(50);
    expect(rows.map((row) => row.key)).toEqual(
      expect.arrayContaining(['server.port', 'limits.rate.window', 'destinations[].map.taskDueIn']),
    );
  });

  it('names only keys the schema has', () => {
    const keys = new Set(schemaKeys());
    expect(rows.map((row) => row.key).filter((key) => !keys.has(key))).toEqual([]);
  });

  it('gives each key the default the schema gives it', () => {
    const wrong: string[] = [];
    for (const { key, value } of rows) {
      if (value === 'required' || DEFAULTED_ELSEWHERE[key]) continue;
      const actual = valueAt(key.endsWith('[]') ? bare : items, key);
      const said = documented(value);
      if (JSON.stringify(actual) !== JSON.stringify(said))
        wrong.push(`${key}: README says ${JSON.stringify(said)}, the schema gives ${JSON.stringify(actual)}`);
    }
    expect(wrong).toEqual([]);
  });

  it("names every key: in a row of its own or in its parent's row", () => {
    const byKey = new Map(rows.map((row) => [row.key, row]));
    const missing = schemaKeys().filter((key) => {
      if (byKey.has(key)) return false;
      // A section (`server`, `limits.rate`) is its rows' prefix.
      if (rows.some((row) => row.key.startsWith(`${key}.`) || row.key.startsWith(`${key}[]`))) return false;
      const parent = key.slice(0, Math.max(key.lastIndexOf('.'), 0));
      const name = key.slice(parent.length + 1);
      const row = byKey.get(parent);
      const text = `${row?.value} ${row?.meaning}`;
      // `name` alone, or `name: default` as the circuit breaker's defaults are written.
      return !row || !(text.includes(`\`${name}\``) || text.includes(`\`${name}: `));
    });
    expect(missing).toEqual([]);
  });

  it('gives every destination key with a default of its own a row with that default', () => {
    // `kind` (default webhook) is said in the `destinations[]` row, with the CRM kinds.
    const defaulted = Object.entries(webhookDestinationSchema.shape)
      .filter(
        ([key, schema]) => key !== 'kind' && ['default', 'prefault'].includes((schema as any)._zod.def.type),
      )
      .map(([key]) => key);
    const withRows = defaulted.filter(
      (key) =>
        rows.some((row) => row.key === `destinations[].${key}`) ||
        rows.some((row) => row.key.startsWith(`destinations[].${key}.`)),
    );
    expect(defaulted).toEqual(withRows);
  });
});
