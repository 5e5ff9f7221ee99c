import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDist } from '../support/fault.js';
import { type PrivateRedis, startPrivateRedis } from '../support/redis.js';

/**
 * The delivery queues closed while Redis is hung (SIGSTOP): BullMQ's close cannot finish, so
 * after closeWaitMs their connections are dropped (README "Running for real"). A job still
 * running then ends (its attempt failed on the hung store) and BullMQ reports it on the dropped
 * connection. BullMQ retries a "Connection is closed." error without any pause while its worker
 * is closing, and a dropped client refuses at once: the report was retried in one microtask loop
 * for ever, no timer or signal ran again, and the process spun at full CPU until SIGKILL (seen:
 * the real binary, SIGTERM during a Redis hang, still running minutes later). The queue runs in
 * a child process here, so a spin cannot take the test runner with it: the child says "alive"
 * from a timer 10 s after the job failed, or the hang guard (the test's timeout) ends it.
 */
const ROOT = join(import.meta.dirname, '..', '..');

const SCRIPT = `
import { createInterface } from 'node:readline';
import { createBullQueue } from ${JSON.stringify(join(ROOT, 'dist/src/delivery/queue-bullmq.js'))};
import { createLogger } from ${JSON.stringify(join(ROOT, 'dist/src/logger.js'))};
const lines = createInterface({ input: process.stdin });
const next = () => new Promise((resolve) => lines.once('line', resolve));
const queue = createBullQueue({
  redisUrl: process.argv[2],
  prefix: 'queue-close:bull',
  destinations: [{ id: 'crm', concurrency: 1 }],
  logger: createLogger('silent'),
  closeWaitMs: 300,
});
let fail;
const attempt = new Promise((_, reject) => { fail = reject; });
let started;
const running = new Promise((resolve) => { started = resolve; });
await queue.start(async () => { started(); return attempt; });
await queue.enqueue('crm', 'job-1', { deliveryId: 'dlv_queueclose000000000001', cycle: 0 }, 0);
await running;
console.log('running');
await next(); // Redis is hung now
await queue.close();
console.log('closed');
// The attempt fails as one on a hung store does, after the connections were dropped.
fail(new Error('the store is unavailable; retry later'));
// Not at once: the loop starts only when the dropped socket has closed, a moment later.
setTimeout(() => { console.log('alive'); process.exit(0); }, 10_000);
`;

describe('delivery queues closed while Redis is hung', () => {
  let redis: PrivateRedis;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    buildDist();
    redis = await startPrivateRedis();
  });
  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    redis?.resume();
    await redis?.stop();
  });

  it('a job that ends after its connections were dropped does not spin the process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-queue-close-'));
    const file = join(dir, 'queue-close.mjs');
    writeFileSync(file, SCRIPT);
    child = spawn(process.execPath, [file, redis.url], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = once(child, 'exit');
    const said: string[] = [];
    const waiters = new Map<string, () => void>();
    createInterface({ input: child.stdout! }).on('line', (line) => {
      said.push(line);
      waiters.get(line)?.();
    });
    const saying = (word: string) =>
      new Promise<void>((resolve) => {
        if (said.includes(word)) resolve();
        else waiters.set(word, resolve);
      });
    await saying('running');
    redis.pause();
    const alive = saying('alive');
    child.stdin!.write('go\n');
    // The hang guard is the tier's own test timeout: on the old code the child never says it.
    await alive;
    const [code] = await exited;
    expect(said).toEqual(['running', 'closed', 'alive']);
    expect(code).toBe(0);
  }, 120_000);
});
