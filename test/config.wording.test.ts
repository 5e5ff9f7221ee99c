import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { defaultRegistry } from '../src/registry.js';

/** What a newcomer's mistakes in the config file read like (`chatbridge config check`). */

const SECRET = `whsec_${Buffer.from('config-wording-secret-0123456789').toString('base64')}`;
const valid = () => ({
  admin: { token: 'a'.repeat(20) },
  channels: [{ id: 'shop', vendor: 'jivochat', token: 't'.repeat(20) }],
  destinations: [{ id: 'crm', url: 'https://crm.example/hook', secret: SECRET }],
});

function problems(document: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(document, defaultRegistry(), env);
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

function loadProblems(text: string | Buffer, env: NodeJS.ProcessEnv = {}): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-wording-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(file, text);
  try {
    loadConfig(file, defaultRegistry(), env, dir);
  } catch (error) {
    if (error instanceof ConfigError)
      return [error.message, ...(error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`)];
    throw error;
  }
  return [];
}

describe('config wording', () => {
  it('the valid base document passes', () => {
    expect(problems(valid())).toEqual([]);
  });

  it('an unknown key is reported at its own path, with the key meant when one is close', () => {
    const document = valid() as Record<string, unknown>;
    document.server = { hots: '127.0.0.1' };
    document.adminn = {};
    document.channels = [{ ...valid().channels[0], personIdFrm: 'user_token', reply: { crmLnk: 'x' } }];
    document.destinations = [
      { ...valid().destinations[0], retrySchedul: ['1s'], filter: { chanels: ['shop'] } },
      { id: 'amo', kind: 'amocrm', baseUrl: 'https://shop.amocrm.ru', token: 'x', concurency: 2 },
    ];
    const found = problems(document);
    expect(found).toEqual(
      expect.arrayContaining([
        'server.hots: unknown key (did you mean "host"?)',
        'adminn: unknown key (did you mean "admin"?)',
        'channels[0].personIdFrm: unknown key (did you mean "personIdFrom"?)',
        'channels[0].reply.crmLnk: unknown key (did you mean "crmLink"?)',
        'destinations[0].retrySchedul: unknown key (did you mean "retrySchedule"?)',
        'destinations[0].filter.chanels: unknown key (did you mean "channels"?)',
        'destinations[1].concurency: unknown key (did you mean "concurrency"?)',
      ]),
    );
    // Nothing at the parent object, zod's "Unrecognized key" wording is gone.
    expect(found.join('\n')).not.toContain('Unrecognized');
  });

  it('an unknown key nothing is close to lists the keys allowed there', () => {
    const found = problems({ ...valid(), log: { verbosity: 'debug' } });
    expect(found).toEqual(['log.verbosity: unknown key (allowed here: level)']);
  });

  it('a number or boolean where text is expected says to write it in quotes', () => {
    const document = valid();
    (document.admin as { token: unknown }).token = 1234567890123456;
    (document.channels[0] as Record<string, unknown>).name = true;
    const found = problems(document);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^admin\.token: expected text, got the number \d+: write it in quotes/),
        'channels[0].name: expected text, got the boolean true: write it in quotes ("...")',
      ]),
    );
    // A vendor's own setting too (checked against the adapter's schema).
    const chatvisor = problems({
      ...valid(),
      channels: [{ id: 'cv', vendor: 'chatvisor', token: 't'.repeat(20), apiToken: 12345 }],
    });
    expect(chatvisor).toEqual([
      'channels[0].apiToken: expected text, got the number 12345: write it in quotes ("...")',
    ]);
  });

  it('from a file too: an unquoted numeric token', () => {
    const found = loadProblems(
      'admin:\n  token: 12345678901234567890\nchannels:\n  - {id: shop, vendor: jivochat, token: abcdefghijklmnopq}\n',
    );
    expect(found[1]).toMatch(/^admin\.token: expected text, got the number .*: write it in quotes/);
  });
});
