import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'adapters/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Tests share one Redis server, each under its own key prefix; two workers fit the 2-core machines.
    maxWorkers: 2,
  },
});
