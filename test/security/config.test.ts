import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createBridge } from '../../src/bridge.js';
import { runCli } from '../../src/cli/main.js';
import { loadConfig, parseConfig, substituteEnv } from '../../src/config/load.js';
import { PUBLISHED_TOKENS, PublishedCredentialsError } from '../../src/config/published.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { defaultRegistry } from '../../src/registry.js';

const registry = defaultRegistry();
const base = { admin: { token: 'a-real-admin-token-0123456789' } };

function problems(document: Record<string, unknown>): string[] {
  try {
    parseConfig({ ...base, ...document }, registry, {});
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
  }
}

describe('config guards (issue 10 item 17)', () => {
  const secret = (bytes: number) => `whsec_${Buffer.alloc(bytes, 7).toString('base64')}`;

  it('refuses a zero-length or short whsec_ secret', () => {
    for (const bad of ['whsec_', 'whsec_=', 'whsec_c2VjcmV0', secret(23)]) {
      const found = problems({ destinations: [{ id: 'crm', url: 'https://crm.example/h', secret: bad }] });
      expect(found.some((line) => line.startsWith('destinations[0].secret'))).toBe(true);
    }
    expect(
      problems({ destinations: [{ id: 'crm', url: 'https://crm.example/h', secret: secret(24) }] }),
    ).toEqual([]);
  });

  it('refuses destination and source URLs that are not http(s)', () => {
    for (const url of ['file:///etc/passwd', 'javascript:alert(1)', 'ftp://crm.example/', 'gopher://x/']) {
      const found = problems({
        destinations: [{ id: 'crm', url, secret: secret(32) }],
        attributeSources: [{ id: 'src', url }],
      });
      expect(found).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^destinations\[0\]\.url/),
          expect.stringMatching(/^attributeSources\[0\]\.url/),
        ]),
      );
    }
  });
});

describe('the example config (issue 10 item 6)', () => {
  const examplePath = new URL('../../config/bridge.example.yaml', import.meta.url);

  it('binds to loopback and its published credentials are all known', () => {
    const document = substituteEnv(parse(readFileSync(examplePath, 'utf8')), {}, []) as any;
    expect(document.server.host).toBe('127.0.0.1');
    const credentials = [
      document.admin.token,
      ...document.channels.flatMap((channel: any) => [channel.token, channel.apiToken].filter(Boolean)),
      ...document.destinations.map((destination: any) => destination.secret).filter(Boolean),
    ];
    for (const value of credentials) expect(PUBLISHED_TOKENS).toContain(value);
  });

  it('refuses to listen on a non-loopback address with the example’s tokens', async () => {
    const { config } = loadConfig(examplePath.pathname, registry, {});
    const bridge = await createBridge({ config, registry, logger: createLogger('silent') });
    try {
      await expect(bridge.listen(0, '0.0.0.0')).rejects.toBeInstanceOf(PublishedCredentialsError);
      // The example destination's signing secret counts too: anyone could sign as the bridge.
      await expect(bridge.listen(0, '0.0.0.0')).rejects.toThrow(/destinations\[0\]\.secret/);
      await expect(bridge.listen(0, '::')).rejects.toBeInstanceOf(PublishedCredentialsError);
      const server = await bridge.listen(0, '127.0.0.1');
      expect(server.listening).toBe(true);
    } finally {
      await bridge.close();
    }
  });

  it('the CLI says why and exits 1', async () => {
    const lines: string[] = [];
    const saved = process.env.HOST;
    process.env.HOST = '0.0.0.0';
    try {
      const code = await runCli(['start', '--config', examplePath.pathname], {
        stdout: (line) => lines.push(line),
        stderr: (line) => lines.push(line),
      });
      expect(code).toBe(1);
    } finally {
      if (saved === undefined) delete process.env.HOST;
      else process.env.HOST = saved;
    }
    expect(lines.join('\n')).toMatch(/refusing to listen on 0\.0\.0\.0: admin\.token/);
  });
});
