// `node bench/lib/engine-free.js <config file> [<checkout root>]`: the bridge as `chatbridge start`
// builds it, with the contact engine taken out of the intake path — for `BENCH_ENGINE=off npm run
// bench`, which measures how far the rest of the path (HTTP stack, parse, decode, facts, render,
// journal, metrics) is from bare Koa when the engine and its Redis trip cost nothing.
//
// How the engine is taken out, and why the figures are an upper bound for the bridge:
// takeEngineOut in bench/lib/in-process.js.

import { join, resolve } from 'node:path';
import { startBridgeFrom } from './in-process.js';

const [configFile, rootArg] = process.argv.slice(2);
if (!configFile) {
  process.stderr.write('usage: node bench/lib/engine-free.js <config file> [<checkout root>]\n');
  process.exit(2);
}
const root = resolve(rootArg ?? join(import.meta.dirname, '..', '..'));
const bridge = await startBridgeFrom({ root, configFile, engine: 'off' });
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (stopping) process.exit(1);
    stopping = true;
    bridge.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
