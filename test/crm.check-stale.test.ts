import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/main.js';
import { CRM_CHECKS_KEY } from '../src/crm/last-check.js';
import { capture } from './support/cli.js';
import { consoleRequest, signIn } from './support/console.js';
import { amoWorld, bitrixWorld, type CrmWorld } from './support/crm-worlds.js';
import { startTestBridge, TEST_ADMIN_TOKEN } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * The last `chatbridge crm check` is tied to the CRM config it checked: the record keeps a
 * fingerprint of it (a digest of the destination's settings and mapping and of the agent
 * directory's CRM users, and a keyed digest of its credentials — never a credential), and a
 * console whose config no longer matches shows the record as stale, with the command to run
 * again. Before, a check that passed went on reading `ok` after the token, the CRM's address or
 * the mapping changed. Each bridge here shares the CLI's Redis and key prefix; a bridge is started
 * with each config as an operator would restart one after editing it.
 */
const AGENTS = [{ email: 'dmitry@store.example', name: 'Dmitry' }];
const CHANNELS = [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }];

let redisUrl: string;
const prefixes: string[] = [];
beforeAll(async () => {
  redisUrl = await getTestRedisUrl();
});
afterAll(async () => {
  for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

describe.each([
  // amoCRM's address is a setting of its own; Bitrix24's is part of the secret webhook URL.
  [
    'amoCRM',
    amoWorld,
    { token: 'amo-rotated-token-0123456789abcdef' },
    'the destination’s settings or mapping',
  ],
  [
    'Bitrix24',
    bitrixWorld,
    { webhookUrl: 'http://127.0.0.1:9/rest/1/b24rotatedcode0123456789/' },
    'the credentials',
  ],
] as Array<[string, () => Promise<CrmWorld>, Record<string, unknown>, string]>)(
  'crm check record tied to the config: %s',
  (_name, makeWorld, newCredential, addressIs) => {
    let world: CrmWorld;
    let keyPrefix: string;
    beforeAll(async () => {
      world = await makeWorld();
      keyPrefix = uniquePrefix('crm-check-stale');
      prefixes.push(keyPrefix);
    });
    afterAll(() => world?.close());

    const document = (destination: Record<string, unknown>, agents: object[] = AGENTS) => ({
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      store: { redis: redisUrl, keyPrefix },
      agents,
      channels: CHANNELS,
      destinations: [destination],
    });

    /** The CRM entry's last check on the status page of a bridge started with this config. */
    async function lastCheckWith(destination: Record<string, unknown>, agents: object[] = AGENTS) {
      const { store: _store, admin: _admin, log: _log, ...config } = document(destination, agents);
      const bridge = await startTestBridge({ store: 'redis', keyPrefix, start: false, config });
      try {
        const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
        const page = await consoleRequest(bridge.url, '/console/status', { cookie });
        expect(page.status).toBe(200);
        const start = page.text.indexOf('<dt>Last check</dt>');
        expect(start).toBeGreaterThan(-1);
        return page.text.slice(start, page.text.indexOf('</dd>', start));
      } finally {
        await bridge.close();
      }
    }

    it('reads current under the config it checked, stale once the credential, address, mapping or agents change', async () => {
      const file = join(mkdtempSync(join(tmpdir(), 'chatbridge-crm-stale-')), 'bridge.yaml');
      writeFileSync(file, stringify(document(world.destination())));
      const run = capture();
      expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(0);

      const redis = new Redis(redisUrl, { lazyConnect: true });
      const stored = (await redis.hget(`${keyPrefix}:${CRM_CHECKS_KEY}`, 'crm')) ?? '';
      redis.disconnect();
      const record = JSON.parse(stored);
      expect(record).toMatchObject({ outcome: 'ok' });
      for (const secret of world.secrets) expect(stored).not.toContain(secret);

      const current = await lastCheckWith(world.destination());
      expect(current).toContain('<span class="state state-delivered">ok</span>');
      expect(current).not.toContain('stale');

      const stale = (text: string, what: string) => {
        expect(text).toContain(
          `<span class="state state-pending">stale</span> The config changed since this check (${what}): run <code>chatbridge crm check --destination crm</code> (in a checkout: <code>node bin/chatbridge.js crm check --destination crm</code>) again.`,
        );
      };
      stale(await lastCheckWith(world.destination(newCredential)), 'the credentials');
      stale(await lastCheckWith(world.destination(world.via('http://127.0.0.1:9'))), addressIs);
      stale(
        await lastCheckWith(
          world.destination({ crm: { ...(world.destination().crm as object), pipeline: { default: 7 } } }),
        ),
        'the destination’s settings or mapping',
      );
      stale(
        await lastCheckWith(world.destination(), [
          ...AGENTS,
          { email: 'nina@store.example', name: 'Nina', crmUserId: '1001' },
        ]),
        'the agents’ CRM users',
      );
      // What only deliveries use (their pace, retries, timeouts) leaves the check as it was.
      const paced = await lastCheckWith(
        world.destination({
          concurrency: 2,
          timeoutMs: 5000,
          crm: { ...(world.destination().crm as object), rateLimit: 5 },
        }),
      );
      expect(paced).not.toContain('stale');
      // And back to the config it checked: current again.
      expect(await lastCheckWith(world.destination())).not.toContain('stale');

      // A record of a version before the fingerprint says not what it checked: not shown as current.
      const { config: _config, ...untied } = record;
      const writer = new Redis(redisUrl, { lazyConnect: true });
      await writer.hset(`${keyPrefix}:${CRM_CHECKS_KEY}`, 'crm', JSON.stringify(untied));
      writer.disconnect();
      expect(await lastCheckWith(world.destination())).toContain(
        '<span class="state state-pending">stale</span> This check was recorded by an earlier version, which did not note the config it checked: run <code>chatbridge crm check --destination crm</code> (in a checkout: <code>node bin/chatbridge.js crm check --destination crm</code>) again.',
      );
    });
  },
);
