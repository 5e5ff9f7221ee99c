// `node bench/trip-cost.js`: what one round trip to Redis costs the client's CPU on this machine,
// with Redis kept busy (50 GETs in flight, nothing else to do) and with the client busy instead
// (the same, plus 200 µs of JavaScript before each GET, about what the bridge does per trip), on
// a private redis-server (or REDIS_URL). On a VM, a write to a peer that has gone idle pays for
// waking it up; the bridge, slower than Redis, mostly writes to an idle one. Prints µs of client
// CPU per GET (the 200 µs of work taken out), median of 3 passes.
import { Redis } from 'ioredis';
import { benchRedis } from './lib/redis.js';

const redis = await benchRedis();
const client = new Redis(redis.url, { enableAutoPipelining: false });
await client.set('trip-cost', 'x');

async function cpuPerGet(count, concurrency, workMicros) {
  const started = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        const until = performance.now() + workMicros / 1000;
        while (performance.now() < until); // the JavaScript a request does before its trip
        await client.get('trip-cost');
      }
    }),
  );
  const used = process.cpuUsage(started);
  return (used.user + used.system) / count - workMicros;
}

const cases = [
  ['50 in flight, no other work (Redis busy)', 20_000, 50, 0],
  ['50 in flight, 200 µs of work each (Redis idle between)', 10_000, 50, 200],
  ['1 at a time, no other work', 10_000, 1, 0],
];
const results = cases.map(() => []);
for (let pass = 0; pass < 4; pass++) {
  for (const [index, [, count, concurrency, work]] of cases.entries()) {
    const value = await cpuPerGet(count, concurrency, work);
    if (pass > 0) results[index].push(value);
  }
}
const median = (values) => [...values].sort((a, b) => a - b)[1];
process.stdout.write('client CPU per GET round trip (µs, median of 3 passes):\n');
for (const [index, [label]] of cases.entries())
  process.stdout.write(`  ${label.padEnd(58)} ${median(results[index]).toFixed(1)}\n`);
client.disconnect();
await redis.stop();
