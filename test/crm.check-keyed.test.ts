import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/main.js';
import type { CrmDestinationConfig } from '../src/config/schema.js';
import { CRM_CHECKS_KEY, changedSinceCheck, checkFingerprint } from '../src/crm/last-check.js';
import { capture } from './support/cli.js';
import { consoleRequest, signIn } from './support/console.js';
import { AMO_TOKEN, amoWorld, type CrmWorld } from './support/crm-worlds.js';
import { startTestBridge, TEST_ADMIN_TOKEN } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * With `secrets.masterKey` set, the credentials part of a `crm check` record is keyed with a key
 * derived from the master key: whoever reads the store (a Redis replica, a backup) cannot try
 * guesses of a short token against it offline. Before, it was an HMAC keyed with a random salt
 * kept beside it, which anyone holding the record could recompute for each guess.
 */
const MASTER_KEY = Buffer.alloc(32, 9).toString('base64');
const OTHER_MASTER_KEY = Buffer.alloc(32, 8).toString('base64');
const AGENTS = [{ email: 'dmitry@store.example', name: 'Dmitry' }];
const CHANNELS = [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }];

let redisUrl: string;
let world: CrmWorld;
let keyPrefix: string;
beforeAll(async () => {
  redisUrl = await getTestRedisUrl();
  world = await amoWorld();
  keyPrefix = uniquePrefix('crm-check-keyed');
});
afterAll(async () => {
  await world?.close();
  await cleanupPrefix(redisUrl, keyPrefix);
});

describe('crm check record under secrets.masterKey', () => {
  it('cannot confirm a guessed token without the master key, and reads current with it', async () => {
    const document = {
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      store: { redis: redisUrl, keyPrefix },
      secrets: { masterKey: MASTER_KEY },
      agents: AGENTS,
      channels: CHANNELS,
      destinations: [world.destination()],
    };
    const file = join(mkdtempSync(join(tmpdir(), 'chatbridge-crm-keyed-')), 'bridge.yaml');
    writeFileSync(file, stringify(document));
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], capture().io)).toBe(0);
    const redis = new Redis(redisUrl, { lazyConnect: true });
    const record = JSON.parse((await redis.hget(`${keyPrefix}:${CRM_CHECKS_KEY}`, 'crm')) ?? '');
    redis.disconnect();
    expect(record).toMatchObject({ outcome: 'ok' });

    // The console of a bridge running with the same config shows the check as current.
    const { store: _store, admin: _admin, log: _log, ...config } = document;
    const bridge = await startTestBridge({ store: 'redis', keyPrefix, start: false, config });
    let destination: CrmDestinationConfig;
    try {
      const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
      const page = await consoleRequest(bridge.url, '/console/status', { cookie });
      const start = page.text.indexOf('<dt>Last check</dt>');
      expect(start).toBeGreaterThan(-1);
      const shown = page.text.slice(start, page.text.indexOf('</dd>', start));
      expect(shown).toContain('<span class="state state-delivered">ok</span>');
      expect(shown).not.toContain('stale');
      destination = bridge.bridge.config.destinations[0] as CrmDestinationConfig;
      expect((destination as { token?: string }).token).toBe(AMO_TOKEN);
    } finally {
      await bridge.close();
    }

    const ROTATED = 'amo-rotated-token-0123456789abcdef';
    const rotated = { ...destination, token: ROTATED } as CrmDestinationConfig;
    // Someone with the record and a right guess of the token, but no master key: the guess is not
    // confirmed (main: [] — the salt beside the digest was all it took).
    expect(changedSinceCheck(record, destination, [AMO_TOKEN], AGENTS)).toEqual(['credentials']);
    // With the master key the check is current, and a changed token or another master key is not.
    expect(changedSinceCheck(record, destination, [AMO_TOKEN], AGENTS, MASTER_KEY)).toEqual([]);
    expect(changedSinceCheck(record, rotated, [ROTATED], AGENTS, MASTER_KEY)).toEqual(['credentials']);
    expect(changedSinceCheck(record, destination, [AMO_TOKEN], AGENTS, OTHER_MASTER_KEY)).toEqual([
      'credentials',
    ]);
    // A record of the salted form (no master key when it was written) still reads current after
    // a master key is configured, and stale once the token changed.
    const salted = { ...record, config: checkFingerprint(destination, [AMO_TOKEN], AGENTS) };
    expect(changedSinceCheck(salted, destination, [AMO_TOKEN], AGENTS, MASTER_KEY)).toEqual([]);
    expect(changedSinceCheck(salted, rotated, [ROTATED], AGENTS, MASTER_KEY)).toEqual(['credentials']);
  });
});
