import { afterAll, describe, expect, it } from 'vitest';
import type { JobOutcome } from '../src/delivery/queue.js';
import { createBullQueue } from '../src/delivery/queue-bullmq.js';
import { capturingLogger } from './support/logs.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * SIGTERM while a destination's circuit breaker is open: the job that found the breaker open
 * pauses the destination (BullMQ's queue rate limit) and its worker then sleeps out the pause.
 * When that job was still running as close() began, BullMQ started the sleep after close() had
 * aborted the one in progress, and close() waited for all of it: with Redis answering, a stop
 * took the queues' whole grace (server.shutdownTimeoutMs) and logged "did not close in time (is
 * Redis reachable?)". Seen with the README's example destination, whose receiver does not exist.
 * Counted, not timed: the pause is far longer than the grace, so a close that waits for it
 * always runs out of the grace and says so.
 */
const prefix = uniquePrefix('queue-pause-close');
let url: string | undefined;

afterAll(async () => {
  if (url) await cleanupPrefix(url, prefix);
});

describe('delivery queue close while a job pauses its destination', () => {
  it('does not wait out the pause', async () => {
    url = await getTestRedisUrl();
    const { logger, lines } = capturingLogger('info');
    const queue = createBullQueue({
      redisUrl: url,
      prefix: `${prefix}:bull`,
      destinations: [{ id: 'crm', concurrency: 4 }],
      logger,
      // Generous for a healthy close on a busy machine, far shorter than the pause.
      closeWaitMs: 20_000,
    });
    let release!: (outcome: JobOutcome) => void;
    const outcome = new Promise<JobOutcome>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    await queue.start(async () => {
      started();
      return outcome;
    });
    await queue.enqueue('crm', 'job-1', { deliveryId: 'dlv_pauseclose0000000000001', cycle: 0 }, 0);
    await running;
    // close() begins while the job runs; the job then finds the breaker open.
    const closed = queue.close();
    await new Promise((resolve) => setTimeout(resolve, 100));
    release({ kind: 'pause', delayMs: 10 * 60_000 });
    await closed;
    expect(lines.filter((line) => line.msg.includes('did not close in time'))).toEqual([]);
  }, 60_000);
});
