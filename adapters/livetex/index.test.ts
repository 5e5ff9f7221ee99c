import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCli } from '../../src/cli/main.js';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { defaultRegistry } from '../../src/registry.js';
import { startTestBridge } from '../../test/support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../../test/support/redis.js';
import { createLivetexLookupClient } from './client.js';
import { livetexAdapter, MASTER_KEY_MESSAGE } from './index.js';

const base = { admin: { token: 'admin-token-0123456789' } };
const channel = { id: 'app', vendor: 'livetex', token: 'livetex-token-0123456789' };

function configProblems(document: Record<string, unknown>) {
  try {
    parseConfig(document, defaultRegistry(), {});
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return error.issues ?? [];
    throw error;
  }
}

describe('livetex channel config', () => {
  it("the example config's livetex channel validates with no other settings, and gets the defaults", () => {
    const example = parse(
      readFileSync(new URL('../../config/bridge.example.yaml', import.meta.url), 'utf8'),
    ) as {
      channels: { vendor: string }[];
    };
    const livetexOnly = {
      ...example,
      channels: example.channels.filter((entry) => entry.vendor === 'livetex'),
    };
    expect(livetexOnly.channels).toHaveLength(1);
    const config = parseConfig(livetexOnly, defaultRegistry(), {});
    expect(config.channels[0]).toMatchObject({ id: 'app', lookupDeadlineMs: 1500, maxClockSkewSeconds: 30 });
  });

  it('checks the settings', () => {
    expect(
      configProblems({ ...base, channels: [{ ...channel, maxClockSkewSeconds: 3600, lookupDeadline: 5 }] }),
    ).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: 'channels[0].maxClockSkewSeconds' }),
        expect.objectContaining({
          path: 'channels[0].lookupDeadline',
          message: 'unknown key (did you mean "lookupDeadlineMs"?)',
        }),
      ]),
    );
  });

  it('needs secrets.masterKey on Redis, and says how to make one', () => {
    const onRedis = { ...base, store: { redis: 'redis://127.0.0.1:6379' }, channels: [channel] };
    expect(configProblems(onRedis)).toEqual([{ path: 'channels[0]', message: MASTER_KEY_MESSAGE }]);
    // The command as an installed package names it, and as a checkout runs it (the README's Running
    // for real): told only `chatbridge keys master`, a newcomer in a checkout got "command not found".
    expect(MASTER_KEY_MESSAGE).toContain('`chatbridge keys master`');
    expect(MASTER_KEY_MESSAGE).toContain('`node bin/chatbridge.js keys master`');
    expect(
      configProblems({ ...onRedis, secrets: { masterKey: randomBytes(32).toString('base64') } }),
    ).toEqual([]);
    // The in-memory store gets an ephemeral master key from the core.
    expect(configProblems({ ...base, channels: [channel] })).toEqual([]);
  });

  it('refuses to create a channel without any master key', () => {
    const config = parseConfig({ ...base, channels: [channel] }, defaultRegistry(), {});
    const context = { config, masterKey: null } as unknown as Parameters<typeof livetexAdapter.create>[0];
    expect(() => livetexAdapter.create(context, config.channels[0]!)).toThrow(ConfigError);
  });
});

describe('chatbridge keys generate|list|revoke (CLI on a real Redis)', () => {
  const keyPrefix = uniquePrefix('livetex-cli');
  const masterKey = randomBytes(32).toString('base64');
  let directory: string;
  let configPath: string;
  let redisUrl: string;

  beforeAll(async () => {
    redisUrl = await getTestRedisUrl();
    directory = mkdtempSync(join(tmpdir(), 'chatbridge-livetex-'));
    configPath = join(directory, 'bridge.yaml');
    writeFileSync(
      configPath,
      [
        'admin: { token: admin-token-0123456789 }',
        `store: { redis: "${redisUrl}", keyPrefix: "${keyPrefix}" }`,
        `secrets: { masterKey: "${masterKey}" }`,
        'log: { level: silent }',
        'channels:',
        '  - { id: app, vendor: livetex, token: livetex-token-0123456789 }',
      ].join('\n'),
    );
  });
  afterAll(async () => {
    rmSync(directory, { recursive: true, force: true });
    await cleanupPrefix(redisUrl, keyPrefix);
  });

  async function cli(...args: string[]) {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const code = await runCli([...args, '--config', configPath], {
      stdout: (line) => stdout.push(line),
      stderr: (line) => stderr.push(line),
    });
    return { code, stdout, stderr };
  }

  it('with no key yet, says what to run to make one, as the CLI was run, for this channel and config', async () => {
    // It said "run `chatbridge keys generate --channel ID`": no `chatbridge` on the PATH of a
    // checkout, ID for the channel just named, and without --config the command read another file.
    const stderr: string[] = [];
    const code = await runCli(['keys', 'list', '--channel', 'app', '--config', configPath], {
      stdout: () => {},
      stderr: (line) => stderr.push(line),
      program: 'node bin/chatbridge.js',
    });
    expect(code).toBe(0);
    expect(stderr).toEqual([
      `no keys on channel app; run \`node bin/chatbridge.js keys generate --channel app --config ${configPath}\``,
    ]);
  });

  it('generates a key the running bridge accepts, lists it, revokes it', async () => {
    const generated = await cli('keys', 'generate', '--channel', 'app');
    expect(generated.code).toBe(0);
    expect(generated.stdout).toHaveLength(1);
    const key = JSON.parse(generated.stdout[0]!) as { kid: string; key: string; createdAt: string };
    expect(Buffer.from(key.key, 'base64url')).toHaveLength(32);

    const listed = await cli('keys', 'list', '--channel', 'app');
    expect(listed.code).toBe(0);
    expect(listed.stdout.map((line) => JSON.parse(line))).toEqual([
      { kid: key.kid, createdAt: key.createdAt, revokedAt: null },
    ]);

    // A bridge on the same Redis and master key takes the CLI's key at once.
    const bridge = await startTestBridge({
      store: 'redis',
      keyPrefix,
      config: { secrets: { masterKey }, channels: [channel] },
      start: false,
    });
    try {
      const client = createLivetexLookupClient({
        url: `${bridge.url}/livetex/app/attributes`,
        kid: key.kid,
        key: key.key,
      });
      expect((await client.lookup({ personId: 'p-cli' })).found).toBe(false);

      const revoked = await cli('keys', 'revoke', '--channel', 'app', '--kid', key.kid);
      expect(revoked.code).toBe(0);
      expect(JSON.parse(revoked.stdout[0]!)).toMatchObject({ kid: key.kid, revokedAt: expect.any(String) });
      await expect(client.lookup({ personId: 'p-cli' })).rejects.toMatchObject({
        status: 401,
        code: 'revoked_key',
      });
    } finally {
      await bridge.close();
    }
  });

  it('fails with a one-line reason for an unknown kid or a missing --kid', async () => {
    const unknown = await cli('keys', 'revoke', '--channel', 'app', '--kid', 'k_unknown');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.join('\n')).toContain('k_unknown');
    const missing = await cli('keys', 'revoke', '--channel', 'app');
    expect(missing.code).toBe(2); // bad usage (DESIGN §5)
    expect(missing.stderr.join('\n')).toContain('--kid');
  });
});
