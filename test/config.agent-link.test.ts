import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { parseConfig } from '../src/config/load.js';
import type { ErrorIssue } from '../src/errors.js';
import { defaultRegistry } from '../src/registry.js';
import { capture } from './support/cli.js';

/**
 * README "Agent links": `{consoleUrl}` in a JivoChat channel's reply.crmLink is left out of the
 * answer without server.publicUrl (and on a shared store without secrets.masterKey, which signs
 * the link). Documented, but said nowhere else: `config check` answered OK and the agent simply
 * got no "Open in CRM" button. Now a warning names the setting that is missing; it stays a
 * warning, since the README promises the bridge runs (and answers Jivo) without the link.
 */
const MASTER_KEY = Buffer.alloc(32, 3).toString('base64');

function warningsOf(document: Record<string, unknown>): ErrorIssue[] {
  const warnings: ErrorIssue[] = [];
  parseConfig(
    { admin: { token: 'a-long-enough-admin-token' }, ...document },
    defaultRegistry(),
    {},
    warnings,
  );
  return warnings;
}
const jivo = (crmLink: string) => ({
  channels: [{ id: 'site', vendor: 'jivochat', token: 'jivo-token-0123456789', reply: { crmLink } }],
});

describe('{consoleUrl} with nothing to build the agent link from', () => {
  it('without server.publicUrl: a warning on the channel, naming the setting', () => {
    expect(warningsOf(jivo('{consoleUrl}'))).toEqual([
      {
        path: 'channels[0].reply.crmLink',
        message:
          'uses {consoleUrl}, but server.publicUrl is not set: the agent link is left out of JivoChat\'s answers (no "Open in CRM" button); set server.publicUrl to the address agents reach the bridge at (CHATBRIDGE_PUBLIC_URL in the example)',
      },
    ]);
  });

  it('on Redis without secrets.masterKey: a warning naming the master key', () => {
    expect(
      warningsOf({
        ...jivo('{consoleUrl}'),
        server: { publicUrl: 'https://bridge.example.com' },
        store: { redis: 'redis://127.0.0.1:6379/0' },
      }),
    ).toEqual([
      {
        path: 'channels[0].reply.crmLink',
        message:
          "uses {consoleUrl}, but secrets.masterKey is not set: agent links are signed with it, so the link is left out of JivoChat's answers; run `chatbridge keys master` (in a checkout: `node bin/chatbridge.js keys master`) to make one",
      },
    ]);
  });

  it('nothing to say with publicUrl (and, on Redis, the master key), or without {consoleUrl}', () => {
    const publicUrl = { server: { publicUrl: 'https://bridge.example.com' } };
    expect(warningsOf({ ...jivo('{consoleUrl}'), ...publicUrl })).toEqual([]);
    expect(
      warningsOf({
        ...jivo('{consoleUrl}'),
        ...publicUrl,
        store: { redis: 'redis://127.0.0.1:6379/0' },
        secrets: { masterKey: MASTER_KEY },
      }),
    ).toEqual([]);
    expect(warningsOf(jivo('https://crm.example/contacts/{contactId}'))).toEqual([]);
  });

  it('config check prints it as a warning and still exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-agent-link-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      'server: { host: 127.0.0.1 }\nadmin: { token: a-long-enough-admin-token }\n' +
        'channels:\n  - { id: site, vendor: jivochat, token: jivo-token-0123456789, reply: { crmLink: "{consoleUrl}" } }\n',
    );
    const run = capture();
    expect(await runCli(['config', 'check', '--config', file], run.io)).toBe(0);
    expect(run.err).toEqual([
      expect.stringMatching(
        /^warning: channels\[0\]\.reply\.crmLink: uses \{consoleUrl\}, but server\.publicUrl is not set/,
      ),
    ]);
  });
});
