/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), for tests that scrape
 * /metrics for real. Every line is parsed; anything the format does not allow throws, naming the
 * line: a malformed sample, label or value, a TYPE after its samples, a family whose samples are
 * not together, a sample name that does not belong to its family, and the same series twice.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name (`x_bucket`, `x_sum`, … for a histogram). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string | undefined;
  samples: Sample[];
}

/** While reading: whether a TYPE line declared the family (an undeclared one is untyped). */
interface Reading extends Family {
  typed: boolean;
}

export interface Exposition {
  families: Map<string, Family>;
  /** Every sample, in order. */
  samples: Sample[];
  /** The value of one series, or undefined when it is absent. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** The samples named `name` (any labels). */
  series(name: string): Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const SUFFIXES: Record<MetricType, string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

function fail(lineNumber: number, line: string, why: string): never {
  throw new Error(`metrics line ${lineNumber}: ${why}: ${JSON.stringify(line)}`);
}

/**
 * A sample value as Prometheus reads it (Go's ParseFloat): NaN and Inf in any letter case, which
 * matters because prom-client writes NaN as `Nan`.
 */
function parseValue(text: string): number | undefined {
  if (/^nan$/i.test(text)) return Number.NaN;
  if (/^\+?inf(?:inity)?$/i.test(text)) return Number.POSITIVE_INFINITY;
  if (/^-inf(?:inity)?$/i.test(text)) return Number.NEGATIVE_INFINITY;
  if (!/^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(text)) return undefined;
  return Number(text);
}

/** Labels from just after `{` up to the matching `}`; returns them and the index after `}`. */
function parseLabels(
  line: string,
  start: number,
  lineNumber: number,
): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let at = start;
  for (;;) {
    if (line[at] === '}') return { labels, end: at + 1 };
    const eq = line.indexOf('=', at);
    if (eq < 0) fail(lineNumber, line, 'label without =');
    const name = line.slice(at, eq);
    if (!LABEL_NAME.test(name)) fail(lineNumber, line, `bad label name ${JSON.stringify(name)}`);
    if (Object.hasOwn(labels, name)) fail(lineNumber, line, `label ${name} given twice`);
    if (line[eq + 1] !== '"') fail(lineNumber, line, `label ${name} value not quoted`);
    let value = '';
    let index = eq + 2;
    for (;;) {
      const char = line[index];
      if (char === undefined) fail(lineNumber, line, `label ${name} value not closed`);
      if (char === '"') break;
      if (char === '\\') {
        const next = line[index + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else fail(lineNumber, line, `bad escape in label ${name}`);
        index += 2;
        continue;
      }
      value += char;
      index++;
    }
    labels[name] = value;
    at = index + 1;
    if (line[at] === ',') at++;
    else if (line[at] !== '}') fail(lineNumber, line, 'expected , or } after a label');
  }
}

export function parseExposition(text: string): Exposition {
  const families = new Map<string, Reading>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  /** Families whose samples have ended (another family's sample came after them). */
  const closed = new Set<string>();
  let current: Reading | undefined;

  const familyOf = (name: string): Reading => {
    let family = families.get(name);
    if (!family) {
      family = { name, type: 'untyped', help: undefined, samples: [], typed: false };
      families.set(name, family);
    }
    return family;
  };

  if (text !== '' && !text.endsWith('\n')) throw new Error('metrics text does not end with a newline');
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, index) => {
    const lineNumber = index + 1;
    if (line === '') return;
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!match) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) fail(lineNumber, line, 'malformed HELP or TYPE');
        return; // a plain comment
      }
      const [, keyword, name, rest] = match;
      if (!NAME.test(name!)) fail(lineNumber, line, 'bad metric name');
      if (closed.has(name!)) fail(lineNumber, line, `${keyword} for ${name} after its samples ended`);
      const family = familyOf(name!);
      if (keyword === 'TYPE') {
        if (family.samples.length > 0) fail(lineNumber, line, 'TYPE after samples');
        if (!TYPES.has(rest as MetricType)) fail(lineNumber, line, 'unknown type');
        if (family.typed) fail(lineNumber, line, 'TYPE given twice');
        family.type = rest as MetricType;
        family.typed = true;
      } else {
        if (family.help !== undefined) fail(lineNumber, line, 'HELP given twice');
        family.help = rest ?? '';
      }
      if (current && current.name !== name) closed.add(current.name);
      current = family;
      return;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) fail(lineNumber, line, 'no metric name');
    const name = line.slice(0, nameEnd);
    if (!NAME.test(name)) fail(lineNumber, line, 'bad metric name');
    let labels: Record<string, string> = {};
    let at = nameEnd;
    if (line[at] === '{') ({ labels, end: at } = parseLabels(line, at + 1, lineNumber));
    if (line[at] !== ' ') fail(lineNumber, line, 'expected a space before the value');
    const parts = line.slice(at + 1).split(' ');
    if (parts.length > 2 || parts.some((part) => part === ''))
      fail(lineNumber, line, 'expected a value and at most a timestamp');
    const value = parseValue(parts[0]!);
    if (value === undefined) fail(lineNumber, line, 'bad value');
    if (parts[1] !== undefined && !/^-?[0-9]+$/.test(parts[1])) fail(lineNumber, line, 'bad timestamp');

    // The family: the declared one this sample's name belongs to (histogram and summary suffixes).
    const owner =
      current && SUFFIXES[current.type].some((suffix) => `${current!.name}${suffix}` === name)
        ? current
        : undefined;
    const family = owner ?? familyOf(name);
    if (!owner && family.typed)
      fail(lineNumber, line, `sample ${name} does not belong to the ${family.type} ${family.name}`);
    if (closed.has(family.name)) fail(lineNumber, line, `samples of ${family.name} are not together`);
    if (current && current !== family) closed.add(current.name);
    current = family;
    if (family.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined)
      fail(lineNumber, line, 'histogram bucket without le');
    if (family.type === 'summary' && name === family.name && labels.quantile === undefined)
      fail(lineNumber, line, 'summary sample without quantile');

    const key = `${name}{${Object.entries(labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([label, text]) => `${label}=${JSON.stringify(text)}`)
      .join(',')}}`;
    if (seen.has(key)) fail(lineNumber, line, `series ${key} given twice`);
    seen.add(key);
    const sample = { name, labels, value };
    family.samples.push(sample);
    samples.push(sample);
  });

  const matches = (sample: Sample, labels: Record<string, string>) =>
    Object.keys(sample.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([label, text]) => sample.labels[label] === text);
  return {
    families: new Map([...families].map(([name, { typed: _typed, ...family }]) => [name, family])),
    samples,
    value: (name, labels = {}) =>
      samples.find((sample) => sample.name === name && matches(sample, labels))?.value,
    series: (name) => samples.filter((sample) => sample.name === name),
  };
}
