// Summarise a V8 .cpuprofile (from `BENCH_CPU_PROF=1 npm run bench`, i.e. node --cpu-prof on
// the bridge process): self time by function and by package/file, heaviest first.
// Usage: node bench/profile.js <file.cpuprofile> [top=30] [function name: show who calls it]
import { readFileSync } from 'node:fs';

const [file, topArg, callersOf] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node bench/profile.js <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(topArg ?? 30);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfTicks = new Map();
for (const sample of profile.samples) selfTicks.set(sample, (selfTicks.get(sample) ?? 0) + 1);
const total = profile.samples.length;
const intervalMs = (profile.endTime - profile.startTime) / 1000 / total;

const byFunction = new Map();
const byFile = new Map();
const where = (url) => {
  if (!url) return '(native/idle)';
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules) return modules[1];
  if (url.startsWith('node:')) return url;
  const dist = /\/dist\/(.*)$/.exec(url);
  return dist ? dist[1] : url;
};
for (const [id, ticks] of selfTicks) {
  const node = byId.get(id);
  const frame = node.callFrame;
  const name = `${frame.functionName || '(anonymous)'} ${where(frame.url)}:${frame.lineNumber + 1}`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + ticks);
  const fileKey = where(frame.url);
  byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + ticks);
}
const show = (title, map) => {
  process.stdout.write(`\n${title}\n`);
  for (const [name, ticks] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(
      `${((ticks / total) * 100).toFixed(1).padStart(6)} %  ${(ticks * intervalMs).toFixed(0).padStart(7)} ms  ${name}\n`,
    );
  }
};
// Inclusive time: a sample counts once for every distinct function on its stack.
const parentOf = new Map();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
const label = (node) =>
  `${node.callFrame.functionName || '(anonymous)'} ${where(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;
const inclusive = new Map();
const callers = new Map();
// Charged to project code: each sample goes to the nearest project function (dist/src, dist/adapters)
// on its stack, so library and runtime time counts against the code that called it.
const charged = new Map();
for (const [id, ticks] of selfTicks) {
  const seen = new Set();
  let current = id;
  let below = null;
  let chargedTo = null;
  while (current !== undefined) {
    const node = byId.get(current);
    const name = label(node);
    if (chargedTo === null && /\/dist\/(src|adapters)\//.test(node.callFrame.url)) chargedTo = name;
    if (!seen.has(name)) {
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + ticks);
    }
    if (callersOf && below && below.callFrame.functionName === callersOf) {
      callers.set(name, (callers.get(name) ?? 0) + ticks);
    }
    below = node;
    current = parentOf.get(current);
  }
  const key = chargedTo ?? label(byId.get(id)).replace(/:\d+$/, '');
  charged.set(key, (charged.get(key) ?? 0) + ticks);
}
process.stdout.write(
  `${file}: ${total} samples, ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s\n`,
);
show('self time by package / file', byFile);
show('self time by function', byFunction);
show('inclusive time by function', inclusive);
show('time charged to the nearest project function (libraries and runtime count for their caller)', charged);
if (callersOf) show(`direct callers of ${callersOf}`, callers);
