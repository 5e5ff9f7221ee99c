// `npm run build && node bench/phone-loop.js [checkout ...]`: the CPU of normalising new visitors'
// phones as the contact engine does per phone identifier (normalizeIdentifier, then parsePhone
// again for the extension), in one process, no Redis. Every phone of every round is one no
// checkout has seen before, so each one misses the phone cache as a new visitor's does. The
// phones are written the ways visitors and vendors write them (bench/lib/phones.js: E.164 as
// bench/run.js sends, Russian domestic forms with 8 and with spaces, brackets and dashes, a few
// foreign numbers, an extension now and then). Each round times every checkout in turn (odd
// rounds in reverse order); with two checkouts it prints the second's time per phone as a share
// of the first's (median of the rounds' ratios).
//
// Knobs: LOOP_N phones per checkout per round (20000), LOOP_ROUNDS (9), LOOP_E164=1 only phones
// in E.164 (what bench/run.js and bench/cpu.js send).
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loads, median, roundOrder, stamp } from './lib/load.js';
import { visitorPhone } from './lib/phones.js';

const env = process.env;
const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
const N = Number(env.LOOP_N ?? 20_000);
const rounds = Number(env.LOOP_ROUNDS ?? 9);
const e164 = env.LOOP_E164 === '1';
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

const sides = await Promise.all(
  roots.map(async (root, index) => ({
    root,
    index,
    normalize: await import(pathToFileURL(join(root, 'dist', 'src', 'contacts', 'normalize.js')).href),
    perPhone: [],
  })),
);
const options = { blocklist: new Set(['null', '0']), defaultCountry: 'RU' };

let next = 0;
/** N phones nobody has normalised yet (in this process). */
function freshPhones() {
  const phones = new Array(N);
  for (let i = 0; i < N; i++) phones[i] = visitorPhone(next++, { e164 });
  return phones;
}

/** The engine's work per phone identifier of an observation (src/contacts/engine.ts, observe). */
function normaliseAll(normalize, phones) {
  let found = 0;
  for (const value of phones) {
    const identifier = normalize.normalizeIdentifier({ kind: 'phone', value }, options);
    if (identifier === null) continue;
    found += 1;
    normalize.parsePhone(normalize.splitPhones(value.trim())[0] ?? '', options.defaultCountry);
  }
  return found;
}

process.stdout.write(
  `[${stamp()}] phone-loop: ${N} new phones${e164 ? ' in E.164' : ''} per checkout per round, ${rounds} rounds; load ${loads()}\n`,
);
// A first pass warms each checkout up (its code optimised) and is not counted.
for (const side of sides) normaliseAll(side.normalize, freshPhones());
const found = new Map();
for (let round = 0; round < rounds; round++) {
  for (const side of roundOrder(sides, round)) {
    const phones = freshPhones();
    gc();
    const start = process.cpuUsage();
    const count = normaliseAll(side.normalize, phones);
    const used = process.cpuUsage(start);
    side.perPhone.push(((used.user + used.system) * 1000) / N);
    found.set(side.index, count);
  }
}
for (const side of sides) {
  process.stdout.write(
    `${side.root}: ${median(side.perPhone).toFixed(0)} ns CPU per phone (median of ${rounds}; ` +
      `${found.get(side.index)} of ${N} phones in the last round were phones)\n`,
  );
}
if (sides.length === 2) {
  const ratios = sides[0].perPhone.map((first, round) => sides[1].perPhone[round] / first);
  process.stdout.write(
    `second ÷ first: ${(median(ratios) * 100).toFixed(1)} % (rounds: ${ratios.map((r) => (r * 100).toFixed(0)).join(' ')})\n`,
  );
}
process.stdout.write(`[${stamp()}] load ${loads()}\n`);
