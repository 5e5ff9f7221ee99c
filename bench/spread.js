// `npm run build && node bench/spread.js`: why src/extend.ts exists. On Node 20 (V8 11.3) an
// object literal that starts with a spread and then gets more properties is a slow path; this
// prints ns per object for that form, for `extend` (one helper called with four shapes, as on
// the request path) and for the forms that stay fast. Median of 3 passes of 200,000 objects.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const { extend } = await import(join(ROOT, 'dist', 'src', 'extend.js'));

const COUNT = 200_000;
const shapes = [
  (i) => ({ value: `v${i}`, label: 'Plan', type: 'string' }),
  (i) => ({ conversationId: `c${i}`, visitor: { name: 'Anna' }, page: '/pricing', utm: 'ads' }),
  (i) => ({ kind: 'email', value: `p${i}@example.com` }),
  (i) => ({ id: `a${i}`, name: 'Oleg', email: 'oleg@example.com' }),
];
const sources = Array.from({ length: COUNT }, (_, i) => shapes[i % shapes.length](i));
const forms = {
  '{ ...a, b, c }': (a) => ({ ...a, channelId: 'site', at: '2026-12-01T00:00:00.000Z' }),
  '{ ...(x ? { y } : {}), b }': (a) => ({ ...(a.value ? { value: a.value } : {}), at: 'x' }),
  'extend(a, { b, c })': (a) => extend(a, { channelId: 'site', at: '2026-12-01T00:00:00.000Z' }),
  '{ ...a }': (a) => ({ ...a }),
  '{ b, c, ...a } (spread last)': (a) => ({ channelId: 'site', at: '2026-12-01T00:00:00.000Z', ...a }),
};
const results = Object.fromEntries(Object.keys(forms).map((name) => [name, []]));
let sink;
for (let pass = 0; pass < 4; pass++) {
  for (const [name, form] of Object.entries(forms)) {
    const started = process.hrtime.bigint();
    for (const source of sources) sink = form(source);
    if (pass > 0) results[name].push(Number(process.hrtime.bigint() - started) / COUNT);
  }
}
if (sink === undefined) throw new Error('unreachable');
process.stdout.write(
  `ns per object on Node ${process.versions.node} (V8 ${process.versions.v8}), median of 3 passes:\n`,
);
for (const [name, values] of Object.entries(results))
  process.stdout.write(
    `  ${name.padEnd(32)} ${[...values]
      .sort((a, b) => a - b)[1]
      .toFixed(0)
      .padStart(6)}\n`,
  );
