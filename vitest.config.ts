import { defineConfig } from 'vitest/config';

/**
 * The fast tier (`npm test`): everything except test/slow/. The slow tier (fault, fuzz, browser
 * and Redis-topology tests) has its own config, vitest.slow.config.ts (`npm run test:slow`);
 * .ci/run runs both.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'adapters/**/*.test.ts', 'src/**/*.test.ts'],
    exclude: ['test/slow/**', '**/node_modules/**'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Tests share one Redis server, each under its own key prefix; two workers fit the 2-core machines.
    maxWorkers: 2,
    // Files in one worker share loaded modules instead of importing the whole bridge again per
    // file (most of the tier's time). Safe because nothing in src/ or adapters/ keeps state at
    // module level (every bridge, store and metrics registry is built per test; test/support
    // shares only the Redis URL; the exceptions: src/contacts/record.ts's pool of random bytes
    // for record ids, random either way, and src/contacts/normalize.ts's cache of parsed phones,
    // which changes no answer). The poll/webhook property that failed in shared workers was a
    // timing defect in the Chatvisor poller (same-millisecond messages, fixed in poll.ts), not a
    // leak. The slow tier keeps full isolation.
    isolate: false,
  },
});
