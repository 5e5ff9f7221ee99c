import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { defaultRegistry } from '../src/registry.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The contract every vendor adapter keeps (HOUSE-STYLE habits 1 and 13): one folder with the same
 * role-named files, registered once, valid with the example config, and no fixture of its own
 * can make the bridge answer 5xx — whatever it is, sent twice, it is answered the same way.
 */
const registry = defaultRegistry();
const example = loadConfig('config/bridge.example.yaml', registry, {}).config;
const REQUIRED = ['index.ts', 'schemas.ts', 'mapper.ts', 'webhook.ts', 'README.md', '__fixtures__'];

describe.each(registry.list.map((adapter) => [adapter.vendor, adapter] as const))(
  'adapter %s',
  (vendor, adapter) => {
    const folder = join('adapters', vendor);
    const channel = example.channels.find((candidate) => candidate.vendor === vendor);
    let bridge: TestBridge;

    beforeAll(async () => {
      // The example channel, minus live schedules: the test must not call a real vendor API.
      const { schedules: _schedules, ...settings } = channel as Record<string, unknown>;
      bridge = await startTestBridge({ config: { channels: [settings] }, start: false });
    });
    afterAll(() => bridge?.close());

    it('lives in one folder with the role-named files and a README that says what is confirmed', () => {
      for (const file of REQUIRED) expect(existsSync(join(folder, file)), `${folder}/${file}`).toBe(true);
      expect(readdirSync(join(folder, '__fixtures__')).length).toBeGreaterThan(0);
      expect(readFileSync(join(folder, 'README.md'), 'utf8')).toMatch(/confirmed/i);
      expect(adapter.displayName.length).toBeGreaterThan(0);
    });

    it('has a channel in the example config, and a webhook behind the channel token only', async () => {
      expect(channel, `the example config declares a ${vendor} channel`).toBeDefined();
      const wrong = await bridge.post(`/webhooks/${vendor}/${channel!.id}/${'x'.repeat(24)}`, {});
      expect(wrong.status).toBe(404);
    });

    it('answers every fixture without a 5xx, and a repeated delivery the same way', async () => {
      const fixtures = readdirSync(join(folder, '__fixtures__')).filter((name) =>
        /^(webhook|dialog|chat|call|client|offline|unknown|not)/.test(name),
      );
      expect(fixtures.length).toBeGreaterThan(0);
      for (const name of fixtures) {
        const body = readFileSync(join(folder, '__fixtures__', name));
        const first = await bridge.post(`/webhooks/${vendor}/${channel!.id}/${channel!.token}`, body);
        const second = await bridge.post(`/webhooks/${vendor}/${channel!.id}/${channel!.token}`, body);
        expect(first.status, `${name}: ${JSON.stringify(first.body)}`).toBeLessThan(500);
        expect(second.status, name).toBe(first.status);
        expect(second.body, name).toEqual(first.body);
      }
    });
  },
);
