// `node bench/lib/engine-free.js <config file> [<checkout root>]`: the bridge as `chatbridge start`
// builds it, with the contact engine taken out of the intake path — for `BENCH_ENGINE=off npm run
// bench`, which measures how far the rest of the path (HTTP stack, parse, decode, facts, render,
// journal, metrics) is from bare Koa when the engine and its Redis trip cost nothing.
//
// The first observation of a person (by channel and first identifier) goes through the real
// engine, so the contact is real; every later one answers that same contact object without the
// engine or Redis. An engine has to produce a contact per request (the real one decodes at least
// one record, ~20 µs here), so these figures are an upper bound for the bridge, not a product
// configuration. Lookups (LiveTex) keep the real engine.

import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { takeEngineOut } from './in-process.js';

const [configFile, rootArg] = process.argv.slice(2);
if (!configFile) {
  process.stderr.write('usage: node bench/lib/engine-free.js <config file> [<checkout root>]\n');
  process.exit(2);
}
const root = resolve(rootArg ?? join(import.meta.dirname, '..', '..'));
const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
const { tuneV8ForServing } = await dist('v8-tuning.js');
tuneV8ForServing(); // as `chatbridge start` does, before anything is allocated per request
const { loadConfig } = await dist('config/load.js');
const { defaultRegistry } = await dist('registry.js');
const { createLogger } = await dist('logger.js');
const { createBridge } = await dist('bridge.js');

const { config } = loadConfig(configFile, defaultRegistry(), {});
const logger = createLogger(config.log.level);
const bridge = await createBridge({ config, role: 'all', logger, defaultMetrics: true });

takeEngineOut(bridge.context.contacts);
logger.warn('BENCH_ENGINE=off: the contact engine answers each person once, then a remembered contact');

await bridge.listen();
await bridge.start();
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
