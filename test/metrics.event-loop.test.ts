import perfHooks from 'node:perf_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createBridge } from '../src/bridge.js';
import { parseConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { AdapterRegistry } from '../src/registry.js';
import { echoAdapter } from './support/echo-adapter.js';

/**
 * prom-client's default metrics sample the event loop's delay (nodejs_eventloop_lag_*) with
 * perf_hooks.monitorEventLoopDelay at 10 ms resolution: an idle bridge wakes 100 times a second
 * for it (bench/HISTORY.md, twenty-first round). `metrics.eventLoopResolutionMs` lets an operator
 * trade that for coarser samples; the default stays 10.
 */
const registry = new AdapterRegistry([echoAdapter]);
const base = { admin: { token: 'a'.repeat(20) }, log: { level: 'silent' } };

function problems(document: unknown): string[] {
  try {
    parseConfig(document, registry, {});
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

describe('metrics.eventLoopResolutionMs', () => {
  afterEach(() => vi.restoreAllMocks());

  it('defaults to 10 and takes a whole number of milliseconds from 1 to 1000', () => {
    expect(parseConfig(base, registry, {}).metrics.eventLoopResolutionMs).toBe(10);
    expect(
      parseConfig({ ...base, metrics: { eventLoopResolutionMs: '100' } }, registry, {}).metrics
        .eventLoopResolutionMs,
    ).toBe(100);
    for (const wrong of [0, -5, 1.5, 1001, 'fast']) {
      const found = problems({ ...base, metrics: { eventLoopResolutionMs: wrong } });
      expect(found, String(wrong)).toHaveLength(1);
      expect(found[0], String(wrong)).toMatch(/^metrics\.eventLoopResolutionMs: /);
    }
  });

  it('is the resolution of the event-loop delay monitor behind the default metrics', async () => {
    const monitor = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    for (const [given, expected] of [
      [undefined, 10],
      [100, 100],
    ] as const) {
      monitor.mockClear();
      const config = parseConfig(
        { ...base, ...(given ? { metrics: { eventLoopResolutionMs: given } } : {}) },
        registry,
        {},
      );
      const bridge = await createBridge({
        config,
        registry,
        logger: createLogger('silent'),
        defaultMetrics: true,
      });
      try {
        expect(monitor).toHaveBeenCalledWith({ resolution: expected });
        expect(await bridge.metrics.registry.metrics()).toContain('nodejs_eventloop_lag_p99_seconds');
      } finally {
        await bridge.close();
      }
    }
  });
});
