import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type FakeAmo, startFakeAmo } from '../../adapters/amocrm/test-support/fake-amocrm.js';
import { runCli } from '../../src/cli/main.js';

/**
 * `chatbridge crm check` prints what the CRM calls its users, pipelines and stages, and quotes
 * its answers: text the CRM's people type. None of it may reach the operator's terminal as a
 * control sequence (ESC … clears the screen, retitles the window, OSC 52 writes the clipboard) or
 * turn the line around (a bidi override).
 */
const TOKEN = 'amo-terminal-token-0123456789abcdef';
const ESC = '\u001b';
const HOSTILE = `${ESC}]52;c;cm0gLXJmIH4K\u0007${ESC}[2J\u202Eevil`;

let fake: FakeAmo | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

function configFile(url: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-terminal-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(
    file,
    stringify({
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      agents: [{ email: 'dmitry@store.example', name: 'Dmitry' }],
      channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
      destinations: [
        {
          id: 'crm',
          kind: 'amocrm',
          baseUrl: url,
          token: TOKEN,
          crm: {
            pipeline: { byChannel: { 'shop-site': 4242 }, default: 7000 },
            responsible: { default: 501 },
          },
        },
      ],
    }),
  );
  return file;
}

function capture() {
  const lines: string[] = [];
  return {
    io: { stdout: (line: string) => lines.push(line), stderr: (line: string) => lines.push(line) },
    lines,
  };
}

describe('crm check on a terminal', () => {
  it('shows CRM names without their control characters', async () => {
    fake = await startFakeAmo({
      token: TOKEN,
      users: [{ id: 501, name: `Manager ${HOSTILE}`, email: 'dmitry@store.example' }],
      pipelines: [
        { id: 7000, name: `Main ${HOSTILE}`, statuses: [{ id: 100, name: `New ${HOSTILE}`, type: 1 }] },
      ],
    });
    const run = capture();
    // Pipeline 4242 does not exist: the problem line lists the CRM's pipelines by name too.
    expect(
      await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(fake.url)], run.io),
    ).toBe(1);
    const text = run.lines.join('\n');
    expect(text).toContain('default -> user 501 "Manager ]52;c;cm0gLXJmIH4K[2Jevil"');
    expect(text).toContain('pipeline 4242 does not exist (have: 7000 "Main ]52;c;cm0gLXJmIH4K[2Jevil")');
    expect(text).not.toContain(ESC);
    expect(text).not.toContain('\u0007');
    expect(text).not.toContain('\u202E');
  });

  it('quotes a refusing answer without its control characters', async () => {
    fake = await startFakeAmo({ token: TOKEN });
    fake.failNext(1000, { status: 400, body: `{"title":"Bad ${HOSTILE}","detail":"no ${HOSTILE}"}` });
    const run = capture();
    expect(
      await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(fake.url)], run.io),
    ).toBe(1);
    const text = run.lines.join('\n');
    expect(text).toContain('chatbridge: crm:');
    expect(text).not.toContain(ESC);
    expect(text).not.toContain('\u202E');
  });
});
