import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { createRedisStore } from '../src/store/redis.js';
import { startPrivateRedis } from './support/redis.js';

/**
 * What an operator reads when the store fails: the log line must say what Redis said. Every
 * store failure is a StoreUnavailableError (503) with Redis's own error as its cause; the log
 * kept only the wrapper's "the store is unavailable; retry later", so a Redis out of memory
 * (maxmemory, noeviction), a hung one and one failing over all logged the same line.
 */
function capture() {
  const lines: Array<Record<string, any>> = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger('info', sink), lines };
}

describe('logged errors keep their cause', () => {
  it("a store error's log line says what Redis answered, but not the command it refused", () => {
    const { logger, lines } = capture();
    const reply = new Error("OOM command not allowed when used memory > 'maxmemory'.");
    reply.name = 'ReplyError';
    // ioredis puts the refused command, with its arguments, on a reply error.
    Object.assign(reply, { command: { name: 'evalsha', args: ['secret-contact@example.org'] } });
    logger.warn({ err: new StoreUnavailableError(reply) }, 'the store is unavailable; retry later');
    const logged = JSON.stringify(lines[0]);
    expect(logged).toContain("OOM command not allowed when used memory > 'maxmemory'.");
    expect(logged).not.toContain('secret-contact@example.org');
  });

  it("a failed lock renewal's log line names Redis's error as the cause, in the stack too", async () => {
    // The deferred drain's "could not renew the drain lock" line ended its stack in an empty
    // "caused by: ", was typed "Object" and had no cause field: pino's err serializer ran again
    // on what the log formatter had already serialised.
    const redis = await startPrivateRedis();
    const { logger, lines } = capture();
    const store = await createRedisStore({
      url: redis.url,
      keyPrefix: 'test:cause',
      logger: createLogger('silent'),
    });
    let failure: unknown;
    try {
      const lock = await store.lock(['drain'], { ttlMs: 30_000, waitMs: 0 });
      await redis.stop();
      failure = await lock.renew(30_000).then(
        () => undefined,
        (error: unknown) => error,
      );
    } finally {
      await store.close();
      await redis.stop();
    }
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    const cause = (failure as Error).cause as Error;
    expect(cause).toBeInstanceOf(Error);
    logger.warn({ err: failure }, 'deferred intake: could not renew the drain lock; trying again');

    const err = lines[0]!.err;
    expect(err.type).toBe('StoreUnavailableError');
    expect(err.stack).not.toMatch(/caused by: $/);
    expect(err.stack).toContain(`\ncaused by: ${cause.name}: ${cause.message}`);
    expect(err.cause).toMatchObject({ type: cause.name, message: cause.message });
    expect(err.message).toBe(`the store is unavailable; retry later: ${cause.message}`);
  });
});
