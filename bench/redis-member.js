// `node bench/redis-member.js [checkout=.]` (after `npm run build`): what Redis's own CPU pays to
// store one chat_finished timeline member (a 50-message transcript, ~21 KB of UTF-8), split by
// how it is stored. A bridge of the checkout records one chat_finished on a private redis-server
// and the member it wrote is read back; then, on a second private redis-server (nothing else on
// it), the same member (an 8-digit counter in front, so each is new) is written
// BENCH_OPS times per case, 20 per pipeline, cases in alternating rounds (BENCH_ROUNDS, 5), and
// the server's CPU (/proc, utime + stime) and minor page faults per write are reported (median
// of the rounds):
// - SET to a new key each time, and SET over 1,000 keys in turn: the same bytes stored, with and
//   without fresh memory (bench/floor.js overwrites 10,000 record keys in turn; the bridge keeps
//   every transcript, so its dataset grows by the member each time);
// - plain ZADD to 1,000 timelines in turn (a sorted set of members longer than 64 bytes is a
//   skiplist plus a dict: the member is copied once more and hashed, SipHash, to look it up and to
//   add it);
// - EVALSHA of a script that only ZADDs it (KEYS[1], ARGV[1]), and of one that returns 1 with the
//   member as its ARGV: what passing it through Lua adds (Redis's Lua hashes every byte of every
//   string it creates, one byte at a time, and each is copied in and out of Lua).
// Redis's CPU is wall-clock work on a shared machine: say the load with the figures.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { JIVO_TOKEN, postJson, seedKnown, startBridge } from './lib/bridge.js';
import { jivoChatFinished, personOf } from './lib/payloads.js';
import { benchRedis } from './lib/redis.js';

const root = resolve(process.argv[2] ?? '.');
const ops = Number(process.env.BENCH_OPS ?? 3000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);

/** The member a bridge of `root` stores for one chat_finished (50 messages) of a known contact. */
async function recordedMember() {
  const redis = await benchRedis();
  const client = new Redis(redis.url);
  const bridge = await startBridge({
    root,
    dir: mkdtempSync(join(tmpdir(), 'chatbridge-member-')),
    redisUrl: redis.url,
    keyPrefix: 'member',
    logLevel: 'warn',
  });
  try {
    await seedKnown(bridge.url, 1);
    await postJson(
      `${bridge.url}/webhooks/jivochat/site/${JIVO_TOKEN}`,
      jivoChatFinished({ ...personOf('known', 0), chat: 1, messages: 50 }),
    );
    let longest = Buffer.alloc(0);
    for (const key of await client.keys('member:tl:*'))
      for (const member of await client.zrangeBuffer(key, 0, -1))
        if (member.length > longest.length) longest = member;
    return longest;
  } finally {
    await bridge.stop();
    client.disconnect();
    await redis.stop();
  }
}

const member = await recordedMember();
const server = await benchRedis({ alwaysPrivate: true });
const client = new Redis(server.url);
/** utime + stime (ms) and minor faults of the server. */
const usage = () => {
  const stat = readFileSync(`/proc/${server.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ms: (Number(fields[11]) + Number(fields[12])) * 10, faults: Number(fields[7]) };
};
try {
  const zaddScript = await client.script('LOAD', "return redis.call('zadd', KEYS[1], 0, ARGV[1])");
  const returnScript = await client.script('LOAD', 'return 1');
  let n = 0;
  const next = () => {
    const i = n++;
    return [i, Buffer.concat([Buffer.from(String(i).padStart(8, '0')), member])];
  };
  const cases = {
    'SET, a new key each': (p) => {
      const [i, m] = next();
      p.set(`fresh:${i}`, m);
    },
    'SET over 1,000 keys': (p) => {
      const [i, m] = next();
      p.set(`reused:${i % 1000}`, m);
    },
    'ZADD, 1,000 timelines': (p) => {
      const [i, m] = next();
      p.zadd(`tl:${i % 1000}`, 0, m);
    },
    'EVALSHA zadd, 1,000 timelines': (p) => {
      const [i, m] = next();
      p.evalsha(zaddScript, 1, `ltl:${i % 1000}`, m);
    },
    'EVALSHA return 1, member as ARGV': (p) => {
      const [i, m] = next();
      p.evalsha(returnScript, 1, `none:${i}`, m);
    },
  };
  const results = new Map();
  for (let round = 0; round < rounds; round++)
    for (const [name, write] of Object.entries(cases)) {
      const before = usage();
      for (let done = 0; done < ops; done += 20) {
        const pipeline = client.pipeline();
        for (let j = 0; j < 20; j++) write(pipeline);
        await pipeline.exec();
      }
      const after = usage();
      if (!results.has(name)) results.set(name, []);
      results
        .get(name)
        .push({ us: ((after.ms - before.ms) / ops) * 1000, faults: (after.faults - before.faults) / ops });
    }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  process.stdout.write(
    `${root}: a ${member.length}-byte member, ${ops} writes per case and round, ${rounds} rounds (Redis CPU per write, median; each round's in brackets)\n`,
  );
  for (const [name, values] of results)
    process.stdout.write(
      `  ${name.padEnd(34)} ${median(values.map((v) => v.us))
        .toFixed(1)
        .padStart(6)} µs ${median(values.map((v) => v.faults))
        .toFixed(1)
        .padStart(4)} faults  [${values.map((v) => v.us.toFixed(0)).join(' ')}]\n`,
    );
} finally {
  client.disconnect();
  await server.stop();
}
