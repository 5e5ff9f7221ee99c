// `npm run build && node bench/retained.js [checkout]`: what the bridge keeps per new visitor, and
// what keeps it. The bridge runs in this process (bench/lib/in-process.js, a private redis-server
// unless REDIS_URL); after a warm-up of 1,000 JivoChat chat_accepted of new visitors a heap
// snapshot is taken, then RETAINED_N (3000) more new visitors are sent and a second one is taken
// (each after a full GC). Objects of the second that the first did not have (V8 keeps snapshot
// ids across snapshots) are grouped by the older object that first holds them and the edge, and
// printed in bytes and objects per visitor: the remembered lane states show as `object Array [#]
// -> object Object` (the LRU's values), its keys and index below. What a new contact promotes to
// the old generation at a steady rate (bench/threads.js) is what survives here, as long as it is
// held longer than two scavenges. RETAINED_SHOW=1 also prints one lane state's new objects.
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

if (typeof globalThis.gc !== 'function') {
  const again = spawnSync(
    process.execPath,
    ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
    },
  );
  process.exit(again.status ?? 1);
}
const ROOT = resolve(process.argv[2] ?? '.');
const N = Number(process.env.RETAINED_N ?? 3000);
const { JIVO_TOKEN } = await import('./lib/bridge.js');
const { startInProcessBridge } = await import('./lib/in-process.js');
const bridge = await startInProcessBridge({ root: ROOT, name: 'retained' });
const send = (pool, n, first) =>
  new Promise((done, fail) =>
    execFile(
      process.execPath,
      [
        join(ROOT, 'bench', 'alloc.js'),
        '--client',
        String(bridge.port),
        JIVO_TOKEN,
        String(n),
        pool,
        String(n),
        String(first),
      ],
      (error, _out, stderr) => (error ? fail(new Error(stderr)) : done()),
    ),
  );
function snapshot() {
  globalThis.gc();
  globalThis.gc();
  const file = v8.writeHeapSnapshot(
    join(process.env.TMPDIR ?? '/tmp', `retained-${process.pid}.heapsnapshot`),
  );
  const parsed = JSON.parse(readFileSync(file, 'utf8'));
  unlinkSync(file);
  return parsed;
}
await send('retainedwarm', 1000, 0);
let before = snapshot();
const fields = before.snapshot.meta.node_fields;
const oldIds = new Float64Array(before.nodes.length / fields.length);
for (let i = 0; i < oldIds.length; i++) oldIds[i] = before.nodes[i * fields.length + fields.indexOf('id')];
oldIds.sort();
before = undefined;
await send('retainednew', N, 200_000);
const snap = snapshot();
await bridge.stop();

const meta = snap.snapshot.meta;
const NF = meta.node_fields.length;
const EF = meta.edge_fields.length;
const { nodes, edges, strings } = snap;
const count = nodes.length / NF;
const [fType, fName, fSize, fEdges, fId] = ['type', 'name', 'self_size', 'edge_count', 'id'].map((f) =>
  meta.node_fields.indexOf(f),
);
const [eType, eName, eTo] = ['type', 'name_or_index', 'to_node'].map((f) => meta.edge_fields.indexOf(f));
const typeOf = (i) => meta.node_types[0][nodes[i * NF + fType]];
const nameOf = (i) => strings[nodes[i * NF + fName]];
const sizeOf = (i) => nodes[i * NF + fSize];
const edgeKind = (e) => meta.edge_types[0][edges[e + eType]];
const edgeName = (e) => (['element', 'hidden'].includes(edgeKind(e)) ? '#' : strings[edges[e + eName]]);
const known = (id) => {
  let low = 0;
  let high = oldIds.length - 1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    if (oldIds[mid] === id) return true;
    if (oldIds[mid] < id) low = mid + 1;
    else high = mid - 1;
  }
  return false;
};
const fresh = new Uint8Array(count);
for (let i = 0; i < count; i++) fresh[i] = known(nodes[i * NF + fId]) ? 0 : 1;
const holder = new Int32Array(count).fill(-1);
const via = new Array(count);
const firstEdge = new Uint32Array(count + 1);
for (let i = 0, e = 0; i < count; i++) {
  firstEdge[i] = e;
  for (let k = 0; k < nodes[i * NF + fEdges]; k++, e += EF) {
    if (['weak', 'shortcut'].includes(edgeKind(e))) continue;
    const to = edges[e + eTo] / NF;
    if (!fresh[to]) continue;
    // An older holder wins over a new one: the chain ends at what existed before.
    if (holder[to] === -1 || (!fresh[i] && fresh[holder[to]])) {
      holder[to] = i;
      via[to] = edgeName(e);
    }
  }
  firstEdge[i + 1] = e;
}
const groups = new Map();
let total = 0;
for (let i = 0; i < count; i++) {
  if (!fresh[i]) continue;
  let top = i;
  for (let steps = 0; holder[top] !== -1 && fresh[holder[top]] && steps < 64; steps++) top = holder[top];
  const h = holder[top];
  const label =
    h === -1
      ? '(held by nothing older)'
      : `${typeOf(h)} ${nameOf(h).slice(0, 40)} [${via[top]}] -> ${typeOf(top)} ${typeOf(top).includes('string') ? '' : nameOf(top).slice(0, 30)}`;
  if (label.includes('[oldIds]')) continue; // this tool's own list of the first snapshot's ids
  const group = groups.get(label) ?? { bytes: 0, objects: 0 };
  total += sizeOf(i);
  group.bytes += sizeOf(i);
  group.objects++;
  groups.set(label, group);
}
console.log(`${ROOT}: new objects per new visitor after ${N}, held: ${(total / N).toFixed(0)} B`);
for (const [label, { bytes, objects }] of [...groups].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, 12))
  console.log(
    `${(bytes / N).toFixed(0).padStart(7)} B ${(objects / N).toFixed(2).padStart(7)} objects  ${label}`,
  );
if (process.env.RETAINED_SHOW === '1') {
  const state = [...Array(count).keys()].find(
    (i) =>
      fresh[i] &&
      holder[i] !== -1 &&
      !fresh[holder[i]] &&
      typeOf(i) === 'object' &&
      via[i] === '#' &&
      nameOf(holder[i]) === 'Array' &&
      nameOf(i) === 'Object',
  );
  const seen = new Set();
  const show = (i, depth, label) => {
    const text = typeOf(i) === 'string' ? JSON.stringify(nameOf(i).slice(0, 40)) : nameOf(i).slice(0, 40);
    console.log(
      `${'  '.repeat(depth)}${label} -> ${typeOf(i)} ${text} ${sizeOf(i)}${fresh[i] && !seen.has(i) ? '' : ' (older or shown)'}`,
    );
    if (!fresh[i] || seen.has(i)) return;
    seen.add(i);
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) {
      const to = edges[e + eTo] / NF;
      const name = ['element', 'hidden'].includes(edgeKind(e))
        ? String(edges[e + eName])
        : strings[edges[e + eName]];
      if (
        ['weak', 'shortcut'].includes(edgeKind(e)) ||
        name === 'map' ||
        ['code', 'object shape'].includes(typeOf(to))
      )
        continue;
      show(to, depth + 1, name);
    }
  };
  if (state !== undefined) show(state, 0, 'an LRU value');
}
process.exit(0);
