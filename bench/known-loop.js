// `npm run build && node bench/known-loop.js [checkout ...]`: CPU per JivoChat chat_accepted of a
// known contact (a person first seen through LiveTex, as bench/cpu.js's `known`), in one process,
// without HTTP: the body's parse, the adapter's decode, the engine's observe and the answer's
// render + JSON, 20 at once over 1,000 people (each person's lane remembered, as at 400 req/s).
// Steadier than `node bench/cpu.js` for small steps of the engine: no sockets, no Koa, no wake-ups.
// With two checkouts, each one's bridge (its own build, store prefix) runs in this process and the
// rounds alternate their order; reported: each checkout's median µs per request and the second's
// share of the first's (median of the rounds' ratios). Knobs: LOOP_N (requests per round per
// checkout, 4000), LOOP_ROUNDS (9), REDIS_URL (else a private redis-server).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LIVETEX_TOKEN, writeBridgeConfig } from './lib/bridge.js';
import { loads, median, roundOrder, stamp } from './lib/load.js';
import { jivoChatAccepted, livetexDialogClosed, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const roots = process.argv.length > 2 ? process.argv.slice(2).map((root) => resolve(root)) : [process.cwd()];
const N = Number(process.env.LOOP_N ?? 4000);
const ROUNDS = Number(process.env.LOOP_ROUNDS ?? 9);
const PEOPLE = 1000;
const CONCURRENCY = 20;

const redis = await benchRedis();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-known-loop-'));
const prefixes = [];

async function side(root, index) {
  const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
  const { tuneV8ForServing } = await dist('v8-tuning.js');
  if (index === 0) tuneV8ForServing();
  const { loadConfig } = await dist('config/load.js');
  const { defaultRegistry } = await dist('registry.js');
  const { createLogger } = await dist('logger.js');
  const { createBridge } = await dist('bridge.js');
  const { parseIntakeRequest } = await dist('intake/pipeline.js');
  const keyPrefix = `knownloop${randomBytes(3).toString('hex')}${index}`;
  prefixes.push(keyPrefix);
  const configFile = writeBridgeConfig({
    dir,
    port: 40000 + index,
    redisUrl: redis.url,
    keyPrefix,
    logLevel: 'silent',
  });
  const { config } = loadConfig(configFile, defaultRegistry(), {});
  const bridge = await createBridge({ config, role: 'all', logger: createLogger('silent') });
  const routeOf = (id) => {
    const channel = bridge.channels.get(id);
    return {
      route: channel.adapter.intake.find((item) => item.kind === 'webhook'),
      state: channel.runtime.state,
    };
  };
  const jivo = routeOf('site');
  const livetex = routeOf('app');
  const { contacts } = bridge.context;
  const handle = async ({ route, state }, raw) => {
    const request = parseIntakeRequest(route, raw, 'application/json', new Date());
    const opened = route.open ? await route.open(request, state) : undefined;
    const decoded = route.decode({ ...request, opened }, state);
    let contact = null;
    for (const observation of decoded.observations) contact = (await contacts.observe(observation)).contact;
    const result = {
      decoded,
      opened: undefined,
      contact,
      duplicate: false,
      facts: null,
      consoleLink: () => undefined,
    };
    return JSON.stringify(route.render(result, state).body);
  };
  void LIVETEX_TOKEN;
  for (let person = 0; person < PEOPLE; person++)
    await handle(
      livetex,
      Buffer.from(
        JSON.stringify(livetexDialogClosed({ ...personOf('known', person), dialog: 500_000 + person })),
      ),
    );
  let chat = 20_000_000;
  const run = async (count) => {
    const bodies = Array.from({ length: count }, (_, n) =>
      Buffer.from(JSON.stringify(jivoChatAccepted({ ...personOf('known', n % PEOPLE), chat: chat++ }))),
    );
    const started = process.cpuUsage();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < bodies.length) await handle(jivo, bodies[next++]);
      }),
    );
    const used = process.cpuUsage(started);
    return ((used.user + used.system) / count) | 0;
  };
  return { root, bridge, run };
}

const sides = [];
for (const [index, root] of roots.entries()) sides.push(await side(root, index));
for (const item of sides) await item.run(N); // warm: every lane remembered, code optimised
const figures = sides.map(() => []);
process.stderr.write(`${stamp()} load ${loads()}\n`);
for (let round = 0; round < ROUNDS; round++) {
  for (const item of roundOrder(sides, round)) figures[sides.indexOf(item)].push(await item.run(N));
  process.stderr.write(`round ${round}: ${figures.map((values) => values.at(-1)).join(' / ')} µs\n`);
}
for (const [index, item] of sides.entries())
  process.stdout.write(`${item.root}: ${median(figures[index])} µs per request (median of ${ROUNDS})\n`);
if (sides.length === 2)
  process.stdout.write(
    `second ÷ first: ${(100 * median(figures[1].map((value, round) => value / figures[0][round]))).toFixed(1)} %\n`,
  );
process.stderr.write(`${stamp()} load ${loads()}\n`);
for (const item of sides) await item.bridge.close();
if (process.env.REDIS_URL) {
  const { Redis } = await import('ioredis');
  const client = new Redis(redis.url);
  for (const prefix of prefixes) {
    let cursor = '0';
    do {
      const [nextCursor, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = nextCursor;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== '0');
  }
  client.disconnect();
}
await redis.stop();
rmSync(dir, { recursive: true, force: true });
