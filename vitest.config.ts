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
  },
});
