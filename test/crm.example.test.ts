import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { amoWorld, bitrixWorld, jivoPayloads } from './support/crm-worlds.js';
import { startTestBridge } from './support/harness.js';

/** The README's example, config/crm.example.yaml, runs as written against the fake CRMs. */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('config/crm.example.yaml', () => {
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
});
