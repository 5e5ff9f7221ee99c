// `node bench/delivery-trips.js` (after `npm run build`): Redis commands and round trips the
// bridge spends per delivered event, on a private redis-server (or REDIS_URL), one event at a
// time. A bridge (role `all`, in this process) with one webhook destination (a loopback receiver
// that answers 204) is sent, over HTTP, a chat_accepted for a known contact (seeded as
// bench/cpu.js seeds them, and warmed with one chat each); each makes one event, which the drain
// stages and the worker delivers. Counted from the POST until 300 ms after the receiver got the
// event: every ioredis client of the process (the store's and BullMQ's), as in bench/trips.js —
// MULTI and EXEC count as commands, a script as one, and a round trip is the commands a client
// sent before any answer came back to it. Subtracted: the same window with nothing sent (BullMQ's
// blocking waits, the drain's poll, timers), and the same requests to a bridge without a
// destination (the intake's own commands). Knobs: BENCH_EVENTS (20); BENCH_TRACE=1 prints the
// last event's commands as `<client>:<command>`, ` |` marking one that began a new round trip;
// BENCH_AT_ONCE=k (1) sends k requests (k contacts) at once and waits for their k events, as a
// bridge under load gets them: what a drain, a job batch and the worker then share;
// BENCH_GAP_MS=g (0) spaces those k requests g ms apart (2.5: 400 requests a second);
// BENCH_SCENARIO=finished sends a chat_finished (50 messages, rated) instead: three
// events of one contact, each after the first waiting behind the one before in its lane, woken when it leaves.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const DIST = join(ROOT, 'dist');
const { benchRedis } = await import('./lib/redis.js');
const { createRedisStore } = await import(`${DIST}/src/store/redis.js`);
const { createLogger } = await import(`${DIST}/src/logger.js`);
const { parseConfig } = await import(`${DIST}/src/config/load.js`);
const { defaultRegistry } = await import(`${DIST}/src/registry.js`);
const { createBridge } = await import(`${DIST}/src/bridge.js`);
const { JIVO_TOKEN, LIVETEX_TOKEN, postJson } = await import('./lib/bridge.js');
const { jivoChatAccepted, jivoChatFinished, livetexDialogClosed, personOf } = await import(
  './lib/payloads.js'
);

const EVENTS = Number(process.env.BENCH_EVENTS ?? 20);
const AT_ONCE = Number(process.env.BENCH_AT_ONCE ?? 1);
const GAP_MS = Number(process.env.BENCH_GAP_MS ?? 0);
const FINISHED = process.env.BENCH_SCENARIO === 'finished';
/** Events each counted request makes (a chat_finished: contact.updated, conversation.finished and .rated). */
const PER_REQUEST = FINISHED ? 3 : 1;
const REQUEST = FINISHED ? 'known chat_finished' : 'known chat_accepted';
if (!(EVENTS % AT_ONCE === 0)) throw new Error('BENCH_EVENTS must be a multiple of BENCH_AT_ONCE');
const SETTLE_MS = 300;
let received = 0;

let counting = false;
const trace = [];
const clientIds = new Map();
const inFlightOf = (client) => waiting.get(client) ?? 0;
let commands = [];
let trips = 0;
const waiting = new Map(); // client -> commands in flight
const send = Redis.prototype.sendCommand;
Redis.prototype.sendCommand = function (command, ...rest) {
  if (counting) {
    commands.push(command.name);
    if (process.env.BENCH_TRACE && counting)
      trace.push(
        `${clientIds.get(this) ?? clientIds.set(this, clientIds.size).get(this)}:${command.name}${command.name === 'evalsha' ? `(${String(command.args[0]).slice(0, 6)})` : ''}${inFlightOf(this) === 0 ? ' |' : ''}`,
      );
    const inFlight = waiting.get(this) ?? 0;
    if (inFlight === 0) trips++;
    waiting.set(this, inFlight + 1);
    const done = () => waiting.set(this, (waiting.get(this) ?? 1) - 1);
    command.promise.then(done, done);
  }
  return send.call(this, command, ...rest);
};

const types = new Map();
const receiver = createServer((request, response) => {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    received++;
    const { type } = JSON.parse(Buffer.concat(chunks).toString());
    types.set(type, (types.get(type) ?? 0) + 1);
    response.writeHead(204);
    response.end();
  });
});
await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));

const redis = await benchRedis();
const logger = createLogger('silent');
const registry = defaultRegistry();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(check) {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('no delivery within 20 s');
    await sleep(2);
  }
}

/** Commands and trips per chat_accepted of a known contact, from its POST until all is quiet. */
async function measure(withDestination) {
  const store = await createRedisStore({
    url: redis.url,
    keyPrefix: `dtrips${randomBytes(3).toString('hex')}`,
    logger,
  });
  const config = parseConfig(
    {
      admin: { token: 'x'.repeat(16) },
      server: { port: 0, host: '127.0.0.1' },
      log: { level: 'silent' },
      secrets: { masterKey: randomBytes(32).toString('base64') },
      store: { redis: redis.url },
      channels: [
        { id: 'site', name: 'website', vendor: 'jivochat', token: JIVO_TOKEN, personIdFrom: 'user_token' },
        { id: 'app', name: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
      ],
      destinations: withDestination
        ? [
            {
              id: 'bench',
              url: `http://127.0.0.1:${receiver.address().port}/events`,
              secret: 'whsec_YmVuY2gtZGVzdGluYXRpb24tc2VjcmV0LTAxMjM0NQ==',
            },
          ]
        : [],
    },
    registry,
    {},
  );
  const bridge = await createBridge({ config, registry, logger, store });
  await bridge.start();
  const server = await bridge.listen(0, '127.0.0.1');
  const base = `http://127.0.0.1:${server.address().port}`;
  const chatAccepted = (person, chat) =>
    postJson(
      `${base}/webhooks/jivochat/site/${JIVO_TOKEN}`,
      jivoChatAccepted({ ...personOf('known', person), chat }),
    );
  // Known contacts (as bench/cpu.js seeds them), each sent one chat_accepted before counting.
  for (let p = 0; p < EVENTS; p++)
    await postJson(
      `${base}/webhooks/livetex/app/${LIVETEX_TOKEN}`,
      livetexDialogClosed({ ...personOf('known', p), dialog: 500_000 + p }),
    );
  for (let p = 0; p < EVENTS; p++) await chatAccepted(p, 71_000_000 + p);
  const send = FINISHED
    ? (person, chat) =>
        postJson(
          `${base}/webhooks/jivochat/site/${JIVO_TOKEN}`,
          jivoChatFinished({ ...personOf('known', person), chat, messages: 50 }),
        )
    : chatAccepted;
  await sleep(1500);

  const counted = { commands: [], trips: 0 };
  const receivedBefore = received;
  types.clear();
  const started = Date.now();
  for (let i = 0; i < EVENTS; i += AT_ONCE) {
    const before = received;
    commands = [];
    trips = 0;
    counting = true;
    const sent = [];
    for (let k = 0; k < AT_ONCE; k++) {
      if (k > 0 && GAP_MS > 0) await sleep(GAP_MS);
      sent.push(send(i + k, 70_000_000 + i + k));
    }
    await Promise.all(sent);
    if (withDestination) await until(() => received >= before + AT_ONCE * PER_REQUEST);
    await sleep(SETTLE_MS);
    counting = false;
    counted.commands.push(...commands);
    counted.trips += trips;
    if (process.env.BENCH_TRACE && i + AT_ONCE === EVENTS) process.stderr.write(`${trace.join(' ')}\n`);
    trace.length = 0;
  }
  // The same time with nothing sent.
  commands = [];
  trips = 0;
  counting = true;
  await sleep(Date.now() - started);
  counting = false;
  await bridge.close();
  await store.close();
  return {
    events: received - receivedBefore,
    types: [...types].map(([type, n]) => `${type} ${n}`).join(', '),
    commands: counted.commands.length - commands.length,
    trips: counted.trips - trips,
    busy: counted.commands,
    idle: commands,
  };
}

function tally(list) {
  const byName = new Map();
  for (const name of list) byName.set(name, (byName.get(name) ?? 0) + 1);
  return [...byName]
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name} ${(n / EVENTS).toFixed(1)}`)
    .join(', ');
}

const without = await measure(false);
const withDestination = await measure(true);
const per = (n) => (n / EVENTS).toFixed(1);
process.stdout.write(
  `${REQUEST}, no destination:   ${per(without.commands)} commands, ${per(without.trips)} round trips per request\n` +
    `${REQUEST}, one destination: ${per(withDestination.commands)} commands, ${per(withDestination.trips)} round trips per request\n` +
    `delivering its events (${per(withDestination.events)} per request: ${withDestination.types}): ${per(withDestination.commands - without.commands)} commands, ${per(withDestination.trips - without.trips)} round trips\n` +
    `  with the destination, while busy (per request): ${tally(withDestination.busy)}\n` +
    `  with the destination, idle (same time, per request): ${tally(withDestination.idle)}\n` +
    `  without, while busy (per request): ${tally(without.busy)}\n`,
);
receiver.close();
await redis.stop();
