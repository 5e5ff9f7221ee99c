// `node bench/getter.js`: why the store's batches count their operations in a data property
// (src/store/types.ts, StoreBatch.length). On Node 20 (V8 11.3) an object that gets an accessor
// of its own — a getter in an object literal, or Object.defineProperty with `get` — is kept, with
// everything it references, through young-generation collections: every such object is promoted
// to the old generation and freed only by a major GC. The bridge made one per observation (its
// Redis batch, holding the record text and timeline entry it writes): ~10 KB promoted per webhook.
//
// Each form runs in its own process under --trace-gc-nvp: 200,000 times, a function builds an
// object of that form over a closure holding ~200 small objects (a request's data), calls it
// once and drops it, as a request does with its batch. Printed: ms, young-generation collections,
// MB promoted by them, and mark-compacts (major GCs). A getter on a class's prototype, or a
// data property, promotes next to nothing.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const forms = {
  'data property': (payload) => {
    const batch = {
      add() {
        payload.push({ n: batch.length++ });
        return batch;
      },
      length: 0,
    };
    return batch;
  },
  'getter in the literal': (payload) => {
    let length = 0;
    const batch = {
      add() {
        payload.push({ n: length++ });
        return batch;
      },
      get length() {
        return length;
      },
    };
    return batch;
  },
  'Object.defineProperty get': (payload) => {
    let length = 0;
    const batch = {
      add() {
        payload.push({ n: length++ });
        return batch;
      },
    };
    Object.defineProperty(batch, 'length', { get: () => length, enumerable: true });
    return batch;
  },
  'getter on a class prototype': (payload) => new CountingBatch(payload),
};

class CountingBatch {
  #payload;
  #length = 0;
  constructor(payload) {
    this.#payload = payload;
  }
  add() {
    this.#payload.push({ n: this.#length++ });
    return this;
  }
  get length() {
    return this.#length;
  }
}

if (process.argv[2] === '--child') {
  const make = forms[process.argv[3]];
  const started = performance.now();
  let sink = 0;
  for (let i = 0; i < 200_000; i++) {
    const payload = Array.from({ length: 200 }, (_, index) => ({ index }));
    const batch = make(payload).add();
    sink += batch.length;
  }
  if (sink !== 200_000) throw new Error('unreachable');
  process.stdout.write(`RESULT ${(performance.now() - started).toFixed(0)}\n`);
  process.exit(0);
}

process.stdout.write(
  `Node ${process.versions.node} (V8 ${process.versions.v8}), 200,000 objects per form:\n`,
);
for (const name of Object.keys(forms)) {
  const child = spawnSync(
    process.execPath,
    ['--trace-gc-nvp', fileURLToPath(import.meta.url), '--child', name],
    {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    },
  );
  if (child.status !== 0) throw new Error(`${name}: ${child.stderr}`);
  let scavenges = 0;
  let promoted = 0;
  let majors = 0;
  for (const line of child.stdout.split('\n')) {
    if (/ gc=s /.test(line)) {
      scavenges++;
      promoted += Number(/promoted=(\d+)/.exec(line)?.[1] ?? 0);
    } else if (/ gc=mc /.test(line)) majors++;
  }
  const ms = /RESULT (\d+)/.exec(child.stdout)?.[1];
  process.stdout.write(
    `  ${name.padEnd(30)} ${String(ms).padStart(6)} ms, ${String(scavenges).padStart(5)} young collections, ${(promoted / 1048576).toFixed(1).padStart(7)} MB promoted, ${String(majors).padStart(3)} major GCs\n`,
  );
}
