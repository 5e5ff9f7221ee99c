import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';

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
});
