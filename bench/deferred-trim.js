// `node bench/deferred-trim.js <checkout> [<checkout> ...]` (each built): what the deferred
// intake's trim check costs, alone, per chunk of DEFERRED_CHUNK (100) chat_finished items (50
// messages, ~7.3 KB each, headers as today's `append` writes them: `{"v":2,"id":…`): Redis's time
// (INFO commandstats, EVALSHA's microseconds) and the client's CPU (process.cpuUsage) for the
// guarded batch the drain sends, `expectListHead(list, chunk, idLength)` and an LTRIM (here one
// that keeps the list). Every checkout's store in this one process on one private Redis, in
// alternating rounds; medians of the rounds. A checkout without `idLength` (before ids) checks
// every item's SHA-1. Knobs: BENCH_ROUNDS (7), BENCH_CALLS per round and checkout (30).
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { jivoChatFinished, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const roots = (process.argv.length > 2 ? process.argv.slice(2) : ['.']).map((path) => resolve(path));
const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const calls = Number(process.env.BENCH_CALLS ?? 30);
const redis = await benchRedis();
const admin = new Redis(redis.url);
const silent = { child: () => silent, warn() {}, error() {}, info() {}, debug() {}, trace() {}, fatal() {} };

const tag = randomBytes(12).toString('base64url');
const items = Array.from({ length: 100 }, (_, index) => {
  const header = {
    v: 2,
    id: `${tag}.${index + 1}`,
    channelId: 'site',
    vendor: 'jivochat',
    event: 'chat_finished',
    contentType: 'application/json',
    receivedAt: Date.now(),
  };
  const body = JSON.stringify(jivoChatFinished({ ...personOf('trim', index), chat: 1000 + index }));
  return Buffer.from(`${JSON.stringify(header)}\n${body}`, 'utf8');
});

const checkouts = [];
for (const [index, root] of roots.entries()) {
  const url = (path) => pathToFileURL(`${root}/dist/src/${path}`).href;
  const { createRedisStore } = await import(url('store/redis.js'));
  const deferred = await import(url('intake/deferred.js'));
  const store = await createRedisStore({ url: redis.url, keyPrefix: `trim${index}`, logger: silent });
  await store.rpush(deferred.DEFERRED_KEY, ...items);
  checkouts.push({
    root,
    store,
    key: deferred.DEFERRED_KEY,
    identify: deferred.idLength,
    redisUs: [],
    cpuUs: [],
  });
}

const evalshaUsec = async () => {
  const line = (await admin.info('commandstats'))
    .split('\n')
    .find((row) => row.startsWith('cmdstat_evalsha:'));
  return Number(/usec=(\d+)/.exec(line ?? '')?.[1] ?? 0);
};
const check = (checkout) =>
  checkout.store
    .batch()
    .expectListHead(checkout.key, items, checkout.identify)
    .ltrim(checkout.key, 0, -1)
    .exec();

for (const checkout of checkouts) for (let n = 0; n < 5; n++) await check(checkout); // warm-up
for (let round = 0; round < rounds; round++) {
  for (const checkout of round % 2 === 0 ? checkouts : [...checkouts].reverse()) {
    const usecBefore = await evalshaUsec();
    const cpuBefore = process.cpuUsage();
    for (let n = 0; n < calls; n++) {
      if (!(await check(checkout))) throw new Error(`${checkout.root}: the check did not hold`);
    }
    const cpu = process.cpuUsage(cpuBefore);
    checkout.cpuUs.push((cpu.user + cpu.system) / calls);
    checkout.redisUs.push(((await evalshaUsec()) - usecBefore) / calls);
  }
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const checkout of checkouts) {
  console.log(
    `${checkout.root}: per 100-item check Redis ${median(checkout.redisUs).toFixed(0)} µs, client CPU ${median(checkout.cpuUs).toFixed(0)} µs` +
      ` (rounds: Redis ${checkout.redisUs.map((value) => value.toFixed(0)).join(' ')}; ids ${checkout.identify ? 'yes' : 'no'})`,
  );
  await checkout.store.close?.();
}
admin.disconnect();
await redis.stop();
process.exit(0);
