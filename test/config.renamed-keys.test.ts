import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { parseConfig } from '../src/config/load.js';
import { ConfigError, type ErrorIssue } from '../src/errors.js';
import { AdapterRegistry } from '../src/registry.js';
import { capture } from './support/cli.js';
import { echoAdapter } from './support/echo-adapter.js';

/**
 * `limits.rate.adminAuthFailuresPerInstance` was named when it was counted per instance; on Redis
 * it is now the bridge-wide ceiling on failed admin authentications from all addresses together.
 * Its name is now `limits.rate.adminAuthFailuresCeiling`; the old one is still taken, with a
 * warning naming the new one, and giving both is a config error (which one would win?).
 */

const registry = new AdapterRegistry([echoAdapter]);
const admin = { token: 'a-long-enough-admin-token' };
const OLD = 'limits.rate.adminAuthFailuresPerInstance';

function writeConfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-renamed-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(file, text);
  return file;
}

describe('limits.rate.adminAuthFailuresCeiling and its old name', () => {
  it('takes the new name, without a warning', () => {
    const warnings: ErrorIssue[] = [];
    const config = parseConfig(
      { admin, limits: { rate: { adminAuthFailuresCeiling: 40 } } },
      registry,
      {},
      warnings,
    );
    expect(config.limits.rate.adminAuthFailuresCeiling).toBe(40);
    expect(warnings).toEqual([]);
    expect(parseConfig({ admin }, registry, {}).limits.rate.adminAuthFailuresCeiling).toBe(100);
  });

  it('takes the old name as the new one, with a warning naming the new one', () => {
    const warnings: ErrorIssue[] = [];
    const config = parseConfig(
      { admin, limits: { rate: { adminAuthFailuresPerInstance: 30 } } },
      registry,
      {},
      warnings,
    );
    expect(config.limits.rate.adminAuthFailuresCeiling).toBe(30);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.path).toBe(OLD);
    expect(warnings[0]!.message).toContain('limits.rate.adminAuthFailuresCeiling');
  });

  it('refuses both names at once, at the old one', () => {
    let issues: ErrorIssue[] = [];
    try {
      parseConfig(
        { admin, limits: { rate: { adminAuthFailuresPerInstance: 30, adminAuthFailuresCeiling: 40 } } },
        registry,
        {},
      );
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues = error.issues ?? [];
    }
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe(OLD);
    expect(issues[0]!.message).toContain('adminAuthFailuresCeiling');
  });

  it('config check says the warning on stderr and still exits 0', async () => {
    const run = capture();
    const file = writeConfig(
      `admin: { token: ${admin.token} }\nlimits:\n  rate:\n    adminAuthFailuresPerInstance: 30\n`,
    );
    expect(await runCli(['config', 'check', '--config', file], run.io)).toBe(0);
    expect(run.out[0]).toContain('OK');
    expect(run.err.join('\n')).toMatch(
      /warning: limits\.rate\.adminAuthFailuresPerInstance: .*limits\.rate\.adminAuthFailuresCeiling/,
    );
    const both = capture();
    const bad = writeConfig(
      `admin: { token: ${admin.token} }\nlimits:\n  rate:\n    adminAuthFailuresPerInstance: 30\n    adminAuthFailuresCeiling: 40\n`,
    );
    expect(await runCli(['config', 'check', '--config', bad], both.io)).toBe(1);
    expect(both.err.join('\n')).toContain(`${OLD}:`);
  });
});
