import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeBridgeConfig } from './bridge.js';
import { benchRedis, freePort } from './redis.js';

/**
 * The bridge's contact engine taken out of the intake path (`BENCH_ENGINE=off`, bench/alloc.js):
 * the first observation of a person (by channel and first identifier) goes through the real
 * engine, so the contact is real; every later one answers that same contact object without the
 * engine or Redis. An engine has to produce a contact per request (the real one decodes at least
 * one record, ~20 µs here), so what this measures is an upper bound for the bridge, not a
 * product configuration. Lookups (LiveTex) keep the real engine.
 */
export function takeEngineOut(contacts) {
  const observe = contacts.observe.bind(contacts);
  const answered = new Map();
  contacts.observe = async (observation) => {
    const first = observation.identifiers?.[0];
    const key = `${observation.channelId}\u0000${first?.kind}\u0000${first?.value}`;
    const known = answered.get(key);
    if (known) return { contact: known, created: false, duplicate: false };
    const result = await observe(observation);
    answered.set(key, result.contact);
    return result;
  };
}

/**
 * The bridge in this process from `root`'s dist/ and a config file, built, listening and started
 * as `chatbridge start` does it (V8 tuning first, before anything is allocated per request).
 * `engine: 'off'` takes the contact engine out (above) and says so in the log. Used by
 * bench/lib/engine-free.js (the bench's BENCH_ENGINE=off process) and startInProcessBridge.
 */
export async function startBridgeFrom({ root, configFile, engine = 'on' }) {
  const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
  const { tuneV8ForServing } = await dist('v8-tuning.js');
  tuneV8ForServing();
  const { loadConfig } = await dist('config/load.js');
  const { defaultRegistry } = await dist('registry.js');
  // The CLI's logger: logs on stderr, as `chatbridge start` writes them (stdout is the tools' results).
  const { cliLogger } = await dist('cli/main.js');
  const { createBridge } = await dist('bridge.js');

  const { config } = loadConfig(configFile, defaultRegistry(), {});
  const logger = cliLogger(config.log.level);
  const bridge = await createBridge({ config, role: 'all', logger, defaultMetrics: true });
  if (engine === 'off') {
    takeEngineOut(bridge.context.contacts);
    logger.warn('BENCH_ENGINE=off: the contact engine answers each person once, then a remembered contact');
  }
  await bridge.listen();
  await bridge.start();
  return bridge;
}

/**
 * The bridge in this process on the bench's generated config and a private Redis (or REDIS_URL),
 * for tools that look inside the process (bench/alloc.js's heap profile, bench/heap.js's GC). Call
 * before anything else allocates per request.
 */
export async function startInProcessBridge({ root, name, engine = 'on' }) {
  const redis = await benchRedis();
  const dir = mkdtempSync(join(tmpdir(), `chatbridge-${name}-`));
  const port = await freePort();
  const configFile = writeBridgeConfig({
    dir,
    port,
    redisUrl: redis.url,
    keyPrefix: `${name}${Date.now().toString(36)}`,
    logLevel: 'warn',
  });
  const bridge = await startBridgeFrom({ root, configFile, engine });
  return {
    port,
    async stop() {
      await bridge.close();
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
