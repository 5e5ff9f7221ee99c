import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { defaultRegistry } from '../src/registry.js';

/**
 * A value the file takes from the environment (`port: ${METRICS_PORT:-9464}`) and the
 * environment got wrong: `METRICS_PORT=abc npm start` said only `metrics.port: expected a number,
 * got the text "abc"`, and a newcomer who never wrote metrics.port (the example does) looked in
 * the file for an "abc" that is not there. The problem now names the variable it came from.
 */
const EXAMPLE = join(import.meta.dirname, '..', 'config', 'bridge.example.yaml');

function problems(file: string, env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(file, defaultRegistry(), env, tmpdir());
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

describe('a problem in a value taken from the environment names the variable', () => {
  it('in the example: METRICS_PORT, CHATBRIDGE_PUBLIC_URL, CRM_WEBHOOK_URL', () => {
    expect(problems(EXAMPLE, { METRICS_PORT: 'abc' })).toEqual([
      'metrics.port: expected a number, got the text "abc" (from METRICS_PORT in the environment)',
    ]);
    expect(problems(EXAMPLE, { CHATBRIDGE_PUBLIC_URL: 'bridge.example.com' })).toEqual([
      'server.publicUrl: an http:// or https:// URL (https://…), got the text "bridge.example.com" (from CHATBRIDGE_PUBLIC_URL in the environment)',
    ]);
    expect(problems(EXAMPLE, { CRM_WEBHOOK_URL: 'localhost:8080/hook' })).toEqual([
      'destinations[0].url: an http:// or https:// URL (https://…), got the text "localhost:8080/hook" (from CRM_WEBHOOK_URL in the environment)',
    ]);
  });

  it('after a message with an aside of its own: one aside, the variable said as a clause', () => {
    // `…32) (from CRM_WEBHOOK_SECRET in the environment)`: two parentheses in a row.
    const secret = problems(EXAMPLE, { CRM_WEBHOOK_SECRET: 'abc' });
    expect(secret).toEqual([
      'destinations[0].secret: a Standard Webhooks secret: whsec_ followed by base64 of at least 24 random bytes (whsec_ and the output of openssl rand -base64 32); the value is from CRM_WEBHOOK_SECRET in the environment',
    ]);
    const port = problems(EXAMPLE, { PORT: '4000', METRICS_PORT: '4000' });
    expect(port).toHaveLength(1);
    expect(port[0]).toMatch(/main port\); the value is from METRICS_PORT in the environment$/);
    for (const line of [...secret, ...port]) expect(line).not.toMatch(/\) \(/);
  });

  it('a problem asking for a setting the file takes from an unset variable names the variable', () => {
    // A copy of the example on Redis: its LiveTex channel needs the master key, which the file
    // takes from CHATBRIDGE_MASTER_KEY. Told only "need secrets.masterKey", a newcomer pasted
    // the key into the file.
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-env-named-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      readFileSync(EXAMPLE, 'utf8').replace('  redis: ""', '  redis: redis://127.0.0.1:6379'),
    );
    expect(problems(file, {})).toEqual([
      'channels[1]: livetex channels need secrets.masterKey (32 bytes, base64); run `chatbridge keys master` (in a checkout: `node bin/chatbridge.js keys master`) to make one, and set CHATBRIDGE_MASTER_KEY in the environment (secrets.masterKey takes it from there)',
    ]);
    expect(problems(file, { CHATBRIDGE_MASTER_KEY: Buffer.alloc(32, 1).toString('base64') })).toEqual([]);
    // A value that is no key (a password, half a key) says how to make one as well.
    expect(problems(file, { CHATBRIDGE_MASTER_KEY: 'my-secret-password' })).toEqual([
      'secrets.masterKey: 32 bytes, base64-encoded; run `chatbridge keys master` (in a checkout: `node bin/chatbridge.js keys master`) to make one (from CHATBRIDGE_MASTER_KEY in the environment)',
    ]);
  });

  it('not when the value is the file’s own (the default used, or no reference)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-env-named-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      [
        'server: { port: 3000 }',
        'metrics: { port: "${METRICS_PORT:-nine}" }',
        'admin: { token: "${ADMIN_TOKEN:-short}" }',
        'channels: [{ id: shop, vendor: jivochat, token: "tttttttttttttttttttt" }]',
        '',
      ].join('\n'),
    );
    expect(problems(file, {})).toEqual([
      'admin.token: at least 16 characters',
      'metrics.port: expected a number, got the text "nine"',
    ]);
    // Set, it is named, whatever the default; the file's text is not repeated (a default may be
    // a secret, and start logs the line).
    expect(problems(file, { ADMIN_TOKEN: 'tiny' })).toContain(
      'admin.token: at least 16 characters (from ADMIN_TOKEN in the environment)',
    );
  });
});
