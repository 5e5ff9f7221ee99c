// `npm run build && node bench/script-batch.js`: the upper bound of sending the store's script
// calls of one event-loop iteration as ONE EVALSHA (a wrapper script that runs each call in turn,
// under pcall, and answers every reply in one array) instead of one EVALSHA each (corked into one
// socket write, as the store's coalesceWrites does today). Client CPU per call
// (process.cpuUsage) and Redis CPU per call (INFO cpu, used_cpu_user + used_cpu_sys deltas) on a
// private redis-server (benchRedis alwaysPrivate), in alternating rounds.
//
// The calls are the real ones: a bridge's contact engine (this checkout's dist) observes JivoChat
// chat_accepted of new people, then of the same people again (known), on a first private Redis,
// and every script call it writes is captured (keys, arguments and script text, as the store
// encodes them). They are replayed on a second private Redis through a client made by the store
// (createRedisStore: its ioredis options, commandTimeout included), encoded by the store's own
// encodeCall (script-command.ts), N calls per iteration:
// - `each`: N Commands, one EVALSHA each, the socket corked while they are written;
// - `wrapper`: one Command, one EVALSHA of a script holding both bodies as Lua functions; ARGV[1]
//   the number of calls, then per call its script, key count and argument count, then every
//   call's arguments; KEYS every call's keys in turn. Each call's KEYS and ARGV tables are copied
//   out in Lua and its body runs under pcall (an error of one leaves the others), its reply put
//   in the array. Per call a promise of its own is still made and settled from the array, as the
//   engine awaits each.
// Scenario `new`: per new contact its group read then its guarded batch, N group reads in one
// iteration, then their N batches (FLUSHALL before each round, so every guard holds and every
// write runs). `known`: the known contact's calls, replayed on the state the new contacts' calls
// left (written before the round, not measured): its guarded batch alone while the engine still
// remembers the person (its `remembered` LRU, bounded by bytes, holds the default 2000), a group
// read first past that (SB_CONTACTS=4000: the first ones are forgotten); the line printed before
// the table says which. Not measured: a real wrapper's grouping of
// calls in the store (per-slot on a Cluster, etc.), which would only add to the `wrapper` side.
// Scenario `trivial` (not by default): `return 1` with no keys or arguments, 2 × SB_CONTACTS
// calls: what an EVALSHA costs beyond its script's work and its arguments.
// Knobs: SB_CONTACTS (per round, 2000), SB_ROUNDS (per mode and N, 6, after 1 warm-up pair),
// SB_N (10,20,50), SB_SCENARIOS (new,known).
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, ReplyError } from 'ioredis';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const DIST = join(ROOT, 'dist');
const { benchRedis } = await import('./lib/redis.js');
const { jivoChatAccepted, personOf } = await import('./lib/payloads.js');
const { createRedisStore } = await import(`${DIST}/src/store/redis.js`);
const { encodeCall } = await import(`${DIST}/src/store/script-command.js`);
const { createLogger } = await import(`${DIST}/src/logger.js`);
const { parseConfig } = await import(`${DIST}/src/config/load.js`);
const { defaultRegistry } = await import(`${DIST}/src/registry.js`);
const { createBridge } = await import(`${DIST}/src/bridge.js`);
const { parseIntakeRequest } = await import(`${DIST}/src/intake/pipeline.js`);

const CONTACTS = Number(process.env.SB_CONTACTS ?? 2000);
const ROUNDS = Number(process.env.SB_ROUNDS ?? 6);
const SIZES = (process.env.SB_N ?? '10,20,50').split(',').map(Number);
const SCENARIOS = (process.env.SB_SCENARIOS ?? 'new,known').split(',');
const logger = createLogger('silent');

/** RESP array of bulk strings → its items as Buffers. */
function parseResp(buffer) {
  let at = buffer.indexOf(13);
  const count = Number(buffer.toString('latin1', 1, at));
  at += 2;
  const items = [];
  for (let index = 0; index < count; index++) {
    const end = buffer.indexOf(13, at);
    const length = Number(buffer.toString('latin1', at + 1, end));
    items.push(buffer.subarray(end + 2, end + 2 + length));
    at = end + 2 + length + 2;
  }
  return items;
}

// ---- Capture: a bridge's engine on a first private Redis. ----
const captureRedis = await benchRedis({ alwaysPrivate: true });
const captureStore = await createRedisStore({
  url: captureRedis.url,
  keyPrefix: `sb${randomBytes(3).toString('hex')}`,
  logger,
});
const registry = defaultRegistry();
const config = parseConfig(
  {
    admin: { token: 'x'.repeat(16) },
    server: { port: 0, host: '127.0.0.1' },
    log: { level: 'silent' },
    channels: [{ id: 'site', vendor: 'jivochat', token: 'site-webhook-token-0123456789' }],
  },
  registry,
  {},
);
const bridge = await createBridge({ config, registry, logger, store: captureStore });
const channel = bridge.channels.get('site');
const route = channel.adapter.intake.find((candidate) => candidate.kind === 'webhook');
const { contacts } = bridge.context;

const scripts = new Map(); // lua text → index (1-based, the wrapper's function number)
let captured = null;
const send = captureStore.client.sendCommand;
captureStore.client.sendCommand = function (command, ...rest) {
  if (captured !== null && command.callKeys !== undefined) {
    // The store's ScriptCommand: encoded for a socket it has not seen (EVAL with the text).
    const probe = Object.create(command);
    const [, lua, numkeys, ...items] = parseResp(probe.toWritable({}));
    const text = lua.toString('utf8');
    if (!scripts.has(text)) scripts.set(text, scripts.size + 1);
    const keyCount = Number(numkeys.toString());
    captured.push({
      script: scripts.get(text),
      keys: items.slice(0, keyCount).map((item) => item.toString('utf8')),
      args: items.slice(keyCount).map((item) => item.toString('utf8')),
    });
  }
  return send.call(this, command, ...rest);
};
const observeBody = async (who) => {
  const raw = Buffer.from(JSON.stringify(jivoChatAccepted(who)));
  const decoded = route.decode(
    { ...parseIntakeRequest(route, raw, 'application/json', new Date()), opened: undefined },
    channel.runtime.state,
  );
  for (const observation of decoded.observations) await contacts.observe(observation);
};
const newCalls = [];
const knownCalls = [];
for (let index = 0; index < CONTACTS; index++) {
  captured = [];
  await observeBody({ ...personOf('sb', index), chat: 10_000_000 + index });
  newCalls.push(captured);
}
for (let index = 0; index < CONTACTS; index++) {
  captured = [];
  await observeBody({ ...personOf('sb', index), chat: 20_000_000 + index });
  knownCalls.push(captured);
}
captured = null;
await bridge.close();
await captureRedis.stop();
const shape = (calls) =>
  `${calls.length} call(s): ${calls.map((call) => `script ${call.script}, ${call.keys.length} keys, ${call.args.length} args, ${call.args.reduce((sum, arg) => sum + Buffer.byteLength(arg), 0)} B of args`).join('; ')}`;
process.stdout.write(`captured per new contact: ${shape(newCalls[0])}\n`);
process.stdout.write(`captured per known contact: ${shape(knownCalls[0])}\n`);
if (newCalls.some((calls) => calls.length !== 2))
  throw new Error('a new contact made other than 2 script calls');

// ---- The wrapper: every captured script as a function of its own KEYS and ARGV. ----
// Plus a trivial script (`return 1`, no keys, no arguments) for scenario `trivial`: what one
// EVALSHA costs beyond its script's own work, the most a wrapper could save per call.
scripts.set('return 1', scripts.size + 1);
const trivialCalls = Array.from({ length: 2 * CONTACTS }, () => ({
  script: scripts.size,
  keys: [],
  args: [],
}));
const bodies = [...scripts.keys()];
const WRAPPER = `
local scripts = {
${bodies.map((lua) => `function(KEYS, ARGV)\n${lua}\nend`).join(',\n')}
}
local calls = tonumber(ARGV[1])
local replies = {}
local k, a = 0, 1 + 3 * calls
for c = 1, calls do
  local h = 2 + 3 * (c - 1)
  local nk, na = tonumber(ARGV[h + 1]), tonumber(ARGV[h + 2])
  local keys, args = {}, {}
  for i = 1, nk do keys[i] = KEYS[k + i] end
  for i = 1, na do args[i] = ARGV[a + i] end
  k, a = k + nk, a + na
  local ok, reply = pcall(scripts[tonumber(ARGV[h])], keys, args)
  if not ok then
    if type(reply) ~= 'table' then reply = { err = tostring(reply) } end
  end
  replies[c] = reply
end
return replies
`;

// ---- Replay on a second private Redis, through a client the store made. ----
const redis = await benchRedis({ alwaysPrivate: true });
const store = await createRedisStore({ url: redis.url, keyPrefix: 'unused', logger });
const client = store.client;
const shas = [];
for (const lua of bodies) shas.push(await client.script('LOAD', lua));
const wrapperSha = await client.script('LOAD', WRAPPER);

class Call extends Command {
  constructor(sha, keys, args) {
    super('evalsha', [], { replyEncoding: 'utf8' });
    this.sha = sha;
    this.callKeys = keys;
    this.callArgs = args;
  }
  toWritable() {
    return encodeCall('evalsha', this.sha, this.callKeys, '', this.callArgs);
  }
}

/** One iteration's calls, one EVALSHA each, corked as coalesceWrites does. */
function sendEach(calls) {
  const stream = client.stream;
  stream.cork();
  const replies = calls.map((call) =>
    client.sendCommand(new Call(shas[call.script - 1], call.keys, call.args)),
  );
  setImmediate(() => stream.uncork());
  return Promise.all(replies);
}

/** The same calls as one wrapper EVALSHA; a promise per call, settled from its reply. */
function sendWrapped(calls) {
  const keys = [];
  const args = [calls.length];
  for (const call of calls) args.push(call.script, call.keys.length, call.args.length);
  const settle = [];
  const replies = calls.map((call) => {
    for (const key of call.keys) keys.push(key);
    for (const arg of call.args) args.push(arg);
    return new Promise((resolve, reject) => settle.push({ resolve, reject }));
  });
  const stream = client.stream;
  stream.cork();
  client.sendCommand(new Call(wrapperSha, keys, args)).then(
    (reply) => {
      for (let index = 0; index < settle.length; index++) {
        const one = reply[index];
        if (one instanceof ReplyError) settle[index].reject(one);
        else settle[index].resolve(one);
      }
    },
    (error) => {
      for (const one of settle) one.reject(error);
    },
  );
  setImmediate(() => stream.uncork());
  return Promise.all(replies);
}

async function redisCpu() {
  const info = await client.info('cpu');
  const field = (name) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)[1]);
  return field('used_cpu_user') + field('used_cpu_sys');
}

/** One round: µs per call, client and Redis. */
async function round(scenario, mode, size) {
  await client.flushall('SYNC');
  const sendOne = mode === 'each' ? sendEach : sendWrapped;
  let ticks;
  if (scenario === 'new') {
    ticks = [];
    for (let first = 0; first < newCalls.length; first += size) {
      const group = newCalls.slice(first, first + size);
      ticks.push(group.map((calls) => calls[0]));
      ticks.push(group.map((calls) => calls[1]));
    }
  } else if (scenario === 'trivial') {
    ticks = [];
    for (let first = 0; first < trivialCalls.length; first += size)
      ticks.push(trivialCalls.slice(first, first + size));
  } else {
    // The state the new contacts left (not measured), then the known contacts' calls.
    for (let first = 0; first < newCalls.length; first += 50)
      for (const step of [0, 1])
        await sendEach(newCalls.slice(first, first + 50).map((calls) => calls[step]));
    const flat = knownCalls.flat();
    ticks = [];
    for (let first = 0; first < flat.length; first += size) ticks.push(flat.slice(first, first + size));
  }
  const count = ticks.reduce((sum, tick) => sum + tick.length, 0);
  const redisBefore = await redisCpu();
  const started = process.cpuUsage();
  let unexpected = 0;
  for (const tick of ticks) {
    const replies = await sendOne(tick);
    for (const reply of replies) if (Array.isArray(reply) ? reply[0] !== 1 : reply !== 1) unexpected++;
  }
  const used = process.cpuUsage(started);
  const redisUsed = (await redisCpu()) - redisBefore;
  if (unexpected > 0) throw new Error(`${scenario} ${mode}: ${unexpected} replies not 1 (guard failed?)`);
  return { client: (used.user + used.system) / count, redis: (redisUsed * 1e6) / count };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
process.stdout.write(
  `µs of CPU per script call, median of ${ROUNDS} alternating rounds of ${CONTACTS} contacts (after a warm-up pair):\n`,
);
process.stdout.write(
  `${'scenario'.padEnd(8)} ${'N'.padStart(3)}  ${'each: client'.padStart(12)} ${'redis'.padStart(6)}  ${'wrapper: client'.padStart(15)} ${'redis'.padStart(6)}  ${'saved: client'.padStart(13)} ${'redis'.padStart(6)} ${'total'.padStart(6)}\n`,
);
for (const scenario of SCENARIOS)
  for (const size of SIZES) {
    const results = { each: [], wrapper: [] };
    for (let pass = 0; pass <= ROUNDS; pass++) {
      const order = pass % 2 === 0 ? ['each', 'wrapper'] : ['wrapper', 'each'];
      for (const mode of order) {
        const result = await round(scenario, mode, size);
        if (pass > 0) results[mode].push(result);
      }
    }
    const m = (mode, side) => median(results[mode].map((result) => result[side]));
    const savedClient = m('each', 'client') - m('wrapper', 'client');
    const savedRedis = m('each', 'redis') - m('wrapper', 'redis');
    process.stdout.write(
      `${scenario.padEnd(8)} ${String(size).padStart(3)}  ${m('each', 'client').toFixed(2).padStart(12)} ${m('each', 'redis').toFixed(2).padStart(6)}  ${m('wrapper', 'client').toFixed(2).padStart(15)} ${m('wrapper', 'redis').toFixed(2).padStart(6)}  ${savedClient.toFixed(2).padStart(13)} ${savedRedis.toFixed(2).padStart(6)} ${(savedClient + savedRedis).toFixed(2).padStart(6)}\n`,
    );
  }
await store.close?.();
client.disconnect();
await redis.stop();
