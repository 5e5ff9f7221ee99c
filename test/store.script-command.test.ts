import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { Command, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeCall, type ScriptArgument, scriptCall } from '../src/store/script-command.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/** What ioredis writes for the same call (its Command, keyPrefix applied to the keys). */
function ioredisBytes(
  name: string,
  script: string,
  keys: readonly string[],
  prefix: string,
  args: readonly ScriptArgument[],
): Buffer {
  const command = new Command(name, [script, keys.length, ...keys, ...args], { keyPrefix: prefix });
  command.promise.catch(() => {});
  const writable = command.toWritable({});
  return typeof writable === 'string' ? Buffer.from(writable, 'utf8') : writable;
}

// Short and long, ASCII, Cyrillic, astral (surrogate pairs), lone surrogates, empty.
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  // Either side of encodeCall's SHORT_ITEM (256 units): copied byte by byte, or written by Buffer#write.
  fc.string({ unit: 'grapheme-ascii', minLength: 240, maxLength: 270 }),
  fc.string({ unit: 'grapheme', minLength: 80, maxLength: 270 }),
  fc.string({ unit: 'grapheme', minLength: 900, maxLength: 3000 }),
  fc.constantFrom('', 'Добрый день! '.repeat(300), '😀'.repeat(700), `x${'\ud800'.repeat(1100)}`),
);
const argument = fc.oneof(
  text,
  fc.integer(),
  fc.double({ noNaN: true }),
  // Bytes, short and long (an outbox entry that is not UTF-8, set aside as it was read).
  fc.uint8Array({ maxLength: 2000 }).map((bytes) => Buffer.from(bytes)),
);

describe('the hot scripts’ command encoding', () => {
  it('writes the bytes ioredis writes, whatever the keys and arguments', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('eval', 'evalsha'),
        fc.oneof(fc.constant('a'.repeat(40)), fc.constant(`return 1 -- ${'x'.repeat(3000)}`)),
        fc.array(text, { maxLength: 12 }),
        fc.array(argument, { maxLength: 60 }),
        (name, script, keys, args) => {
          const prefix = 'bench:{p}:';
          expect(
            encodeCall(name, script, keys, prefix, args).equals(
              ioredisBytes(name, script, keys, prefix, args),
            ),
          ).toBe(true);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('leaves the bytes of a call already made as they were while later calls are made', () => {
    // Calls are cut from a shared slab (callBuffer): an earlier call's bytes may still be queued
    // on the socket, and no later call may write over them.
    const call = (n: number) =>
      encodeCall('evalsha', 'f'.repeat(40), [`k${n}`], 'p:', [`v${n}`, 'Ж'.repeat(n % 50)]);
    const first = call(0);
    const copy = Buffer.from(first);
    for (let n = 1; n < 2000; n++) call(n);
    expect(first.equals(copy)).toBe(true);
    expect(first.equals(ioredisBytes('evalsha', 'f'.repeat(40), ['k0'], 'p:', ['v0', '']))).toBe(true);
  });

  it('still writes them when one call holds more long text than the shared buffer', () => {
    const huge = ['Ж'.repeat(120_000), 'ascii'.repeat(20_000)];
    expect(
      encodeCall('evalsha', 'f'.repeat(40), ['k'], 'p:', huge).equals(
        ioredisBytes('evalsha', 'f'.repeat(40), ['k'], 'p:', huge),
      ),
    ).toBe(true);
  });
});

describe('a hot script against Redis', () => {
  let url: string;
  let client: Redis;
  const prefix = `${uniquePrefix('script-command')}:`;
  beforeAll(async () => {
    url = await getTestRedisUrl();
    client = new Redis(url);
  });
  afterAll(async () => {
    await cleanupPrefix(url, prefix.slice(0, -1));
    client.disconnect();
  });

  const SCRIPT = `redis.call('SET', KEYS[1], ARGV[1]) return {KEYS[1], redis.call('GET', KEYS[1]), #ARGV}`;

  it('runs with its keys prefixed and its arguments intact, the first time and after', async () => {
    const call = scriptCall(client, SCRIPT, prefix);
    const value = `Привет ${'😀'.repeat(600)}`;
    for (let round = 0; round < 3; round++) {
      expect(await call(['greeting'], [value, round])).toEqual([`${prefix}greeting`, value, 2]);
    }
    expect(await client.get(`${prefix}greeting`)).toBe(value);
  });

  it('sends the script again when Redis has forgotten it (SCRIPT FLUSH)', async () => {
    const call = scriptCall(client, SCRIPT, prefix);
    expect(await call(['flushed'], ['before'])).toEqual([`${prefix}flushed`, 'before', 1]);
    await client.script('FLUSH');
    expect(await call(['flushed'], ['after'])).toEqual([`${prefix}flushed`, 'after', 1]);
    // And once more on the connection that has it again: EVALSHA.
    expect(await call(['flushed'], ['again'])).toEqual([`${prefix}flushed`, 'again', 1]);
    expect(await client.script('EXISTS', createHash('sha1').update(SCRIPT).digest('hex'))).toEqual([1]);
  });

  it('reports a script error as Redis words it', async () => {
    const call = scriptCall(client, `return redis.call('INCR', KEYS[1])`, prefix);
    await client.set(`${prefix}text`, 'not a number');
    await expect(call(['text'], [])).rejects.toThrow(/not an integer/);
  });
});
