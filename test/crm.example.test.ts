import { existsSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { startFakeCrms } from '../adapters/test-support/fake-crms.js';
import { runCli } from '../src/cli/main.js';
import { loadConfig } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { defaultRegistry } from '../src/registry.js';
import { capture } from './support/cli.js';
import { amoWorld, bitrixWorld, jivoPayloads } from './support/crm-worlds.js';
import { startTestBridge } from './support/harness.js';

/** The README's example, config/crm.example.yaml, runs as written against the fake CRMs. */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('config/crm.example.yaml', () => {
  it('on REDIS_URL keeps its keys apart from a bridge made from the main example (a keyPrefix of its own)', () => {
    // It had no keyPrefix: with REDIS_URL set it wrote under the default `chatbridge:`, the main
    // example's prefix, so a copy of bridge.example.yaml (README "Running for real": redis:
    // ${REDIS_URL}) on the same Redis shared its contacts, outbox and deliveries without a word.
    const root = new URL('..', import.meta.url).pathname;
    const env = {
      REDIS_URL: 'redis://127.0.0.1:6379/0',
      AMOCRM_TOKEN: 'a'.repeat(40),
      BITRIX24_WEBHOOK_URL: 'https://portal.example/rest/1/code0123456789/',
    };
    const crm = loadConfig('config/crm.example.yaml', defaultRegistry(), env, root).config;
    expect(crm.store.redis).toBe(env.REDIS_URL);
    const main = parseDocument(
      readFileSync(new URL('../config/bridge.example.yaml', import.meta.url), 'utf8'),
    ).toJS() as { store: { keyPrefix: string } };
    const taken = [main.store.keyPrefix, configSchema.shape.store.parse(undefined).keyPrefix];
    expect(taken).toEqual(['chatbridge', 'chatbridge']);
    expect(taken).not.toContain(crm.store.keyPrefix);
  });

  it('delivers a JivoChat chat into both fake CRMs', async () => {
    const amo = await amoWorld();
    cleanups.push(() => amo.close());
    const b24 = await bitrixWorld();
    cleanups.push(() => b24.close());
    const document = parseDocument(
      readFileSync(new URL('../config/crm.example.yaml', import.meta.url), 'utf8'),
    ).toJS() as Record<string, unknown>;
    const { server: _server, store: _store, admin: _admin, ...rest } = document;
    const bridge = await startTestBridge({
      config: rest,
      env: {
        AMOCRM_URL: amo.fake.url,
        AMOCRM_TOKEN: amo.secrets[0]!,
        BITRIX24_WEBHOOK_URL: b24.fake.webhookUrl,
      },
    });
    cleanups.push(() => bridge.close());
    const { accepted, finished, offline } = jivoPayloads();
    for (const payload of [accepted, finished, offline]) {
      expect(
        (await bridge.post('/webhooks/jivochat/shop-site/example-jivo-token-0001', payload)).status,
      ).toBe(200);
    }
    const deadline = Date.now() + 8000;
    while (amo.state().tasks.length + b24.state().tasks.length < 2 && Date.now() < deadline) await sleep(25);
    for (const crm of [amo, b24]) {
      const state = crm.state();
      expect(state.contacts).toHaveLength(1);
      expect(state.deals).toHaveLength(1);
      expect(state.notes).toHaveLength(1);
      expect(state.tasks).toHaveLength(1);
    }
    const again = await bridge.post('/webhooks/jivochat/shop-site/example-jivo-token-0001', {
      ...accepted,
      chat_id: 1,
    });
    // Two CRMs linked the contact: the link is the latest one's record page.
    expect([
      amo.contactUrl(amo.state().contacts[0]!.id),
      b24.contactUrl(b24.state().contacts[0]!.id),
    ]).toContain(again.body.crm_link);
  });

  it('README: the fakes a person starts (dist/adapters/test-support/fake-crms.js) pass crm check for both destinations', async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const command = /node dist\/(adapters\/test-support\/fake-crms)\.js/.exec(readme);
    expect(command, 'README "Connect your CRM" says how to start the fakes').not.toBeNull();
    // dist/<path>.js is what npm run build makes of <path>.ts.
    expect(existsSync(new URL(`../${command![1]}.ts`, import.meta.url))).toBe(true);
    const crms = await startFakeCrms();
    cleanups.push(() => crms.close());
    // The variables it prints, as a person exports them; REDIS_URL unset (the example's store is
    // ${REDIS_URL:-}): the check must not touch a Redis the test run shares.
    const variables = { ...crms.env, REDIS_URL: '' };
    const saved = Object.fromEntries(Object.keys(variables).map((name) => [name, process.env[name]]));
    Object.assign(process.env, variables);
    cleanups.push(async () => {
      for (const [name, value] of Object.entries(saved))
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
    });
    const printed = new Map<string, string[]>();
    for (const destination of ['amo', 'b24']) {
      const run = capture();
      expect(
        await runCli(
          ['crm', 'check', '--destination', destination, '--config', 'config/crm.example.yaml'],
          run.io,
        ),
        run.err.join('\n'),
      ).toBe(0);
      expect(run.out.join('\n')).toContain(`${destination}: OK`);
      printed.set(destination, run.out);
    }
    // The README shows what `crm check --destination amo` prints, and a newcomer runs it against
    // these fakes next: the two must be the same lines (the fakes' port and the token's expiry,
    // which is 180 days from when they started, aside). The fake's token used to be no JWT, so the
    // newcomer read "token expiry unknown … nothing can warn" where the README promised an expiry.
    const shown =
      /```\n\$ chatbridge crm check --destination amo --config config\/crm\.example\.yaml\n([\s\S]*?)```/.exec(
        readme,
      );
    expect(shown, 'README "Connect your CRM": the crm check example').not.toBeNull();
    const comparable = (text: string) =>
      text
        .replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:PORT')
        .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, 'TIME');
    expect(comparable(printed.get('amo')!.join('\n'))).toBe(comparable(shown![1]!.trimEnd()));
    expect(crms.summary()).toBe(
      'amoCRM: 0 contacts, 0 deals, 0 notes, 0 tasks; Bitrix24: 0 contacts, 0 deals, 0 comments, 0 tasks',
    );
  });
});
