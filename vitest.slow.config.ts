import { defineConfig } from 'vitest/config';

/**
 * The slow tier (`npm run test:slow`): kill -9 and outage faults, 10,000 hostile payloads,
 * real Redis topologies (Sentinel, Cluster), the console in headless Chromium. Every file lives
 * in test/slow/. Nothing here is skipped when a dependency is missing: it fails and says how to
 * install it.
 */
export default defineConfig({
  test: {
    include: ['test/slow/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One file at a time: these tests start processes and load the two cores on their own.
    maxWorkers: 1,
    fileParallelism: false,
  },
});
