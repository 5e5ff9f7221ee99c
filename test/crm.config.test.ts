import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { isCrmDestination } from '../src/config/schema.js';
import { ConfigError } from '../src/errors.js';
import { defaultRegistry } from '../src/registry.js';

/** Destinations of kind amocrm / bitrix24 (DESIGN §10): checked with every problem's path. */
const base = {
  admin: { token: 'admin-token-0123456789' },
  channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
};

function problems(destinations: unknown[]): string[] {
  try {
    parseConfig({ ...base, destinations }, defaultRegistry(), {});
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
  }
}

describe('CRM destinations in the config', () => {
  it('takes DESIGN §10 as written, with webhook the default kind', () => {
    const config = parseConfig(
      {
        ...base,
        destinations: [
          { id: 'hook', url: 'https://crm.example/hook', secret: 'whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3' },
          {
            id: 'amo',
            kind: 'amocrm',
            baseUrl: 'https://example.amocrm.ru',
            token: 'a-long-lived-token-0123456789',
            events: ['conversation.started', 'offline_message.received'],
            filter: { channels: ['shop-site'] },
            crm: {
              pipeline: { byChannel: { 'shop-site': 7001 }, default: 7000 },
              stage: { byChannel: { 'shop-site': 142 }, default: null },
              responsible: { default: 501 },
              deals: 'per-conversation',
              offlineTask: { text: 'Offline: {text}', dueIn: '2h' },
            },
          },
          {
            id: 'b24',
            kind: 'bitrix24',
            webhookUrl: 'https://portal.bitrix24.ru/rest/1/abcdef123/',
            crm: { pipeline: { default: 0 } },
          },
        ],
      },
      defaultRegistry(),
      {},
    );
    const [hook, amo, b24] = config.destinations;
    expect(hook!.kind).toBe('webhook');
    expect(isCrmDestination(amo!) && amo.crm).toMatchObject({
      pipeline: { byChannel: { 'shop-site': '7001' }, default: '7000' },
      stage: { byChannel: { 'shop-site': '142' }, default: null },
      responsible: { default: '501' },
      deals: 'per-conversation',
      offlineTask: { text: 'Offline: {text}', dueIn: 7_200_000 },
      transcriptNote: true,
    });
    expect(isCrmDestination(b24!) && b24.crm.deals).toBe('one-open');
    expect((b24 as unknown as { sourceId: string }).sourceId).toBe('WEB');
  });

  it('says what is wrong with a credential, not only what it should be', () => {
    // `destinations[0].token: the long-lived token of a private integration (…)` for a short
    // placeholder read as a description of the key: nothing said it was too short.
    expect(
      problems([
        { id: 'a', kind: 'amocrm', baseUrl: 'https://x.amocrm.ru', token: 'changeme' },
        { id: 'b', kind: 'bitrix24', webhookUrl: 'https://portal.bitrix24.ru/rest/abc/' },
      ]),
    ).toEqual([
      'destinations[0].token: too short for a long-lived token of a private integration (those have at least 20 characters: Settings → Integrations → Keys and scopes)',
      'destinations[1].webhookUrl: not an incoming webhook URL: it takes https://<portal>/rest/<userId>/<code>/ (Developer resources → Other → Inbound webhook)',
    ]);
  });

  it('names every problem with its path: unknown kind, missing token, bad webhook URL, bad crm keys', () => {
    // Like channel settings, the connector's own keys are checked once the core schema passes.
    expect(
      problems([
        {
          id: 'd',
          kind: 'amocrm',
          baseUrl: 'https://x.amocrm.ru',
          token: 'a-long-lived-token-0123456789',
          crm: { deals: 'all', colour: 1 },
        },
      ]),
    ).toEqual([
      expect.stringMatching(/^destinations\[0\]\.crm\.deals: /),
      expect.stringMatching(/^destinations\[0\]\.crm\.colour: unknown key/),
    ]);
    expect(
      problems([
        { id: 'a', kind: 'salesforce' },
        { id: 'b', kind: 'amocrm', baseUrl: 'https://x.amocrm.ru' },
        { id: 'c', kind: 'bitrix24', webhookUrl: 'https://portal.bitrix24.ru/rest/abc/' },
        { id: 'e', kind: 'bitrix24', webhookUrl: 'https://portal.bitrix24.ru/rest/1/abc/', url: 'https://x' },
      ]),
    ).toEqual([
      expect.stringMatching(
        /^destinations\[0\]\.kind: unknown kind "salesforce" \(known: webhook, amocrm, bitrix24\)/,
      ),
      expect.stringMatching(/^destinations\[1\]\.token: /),
      expect.stringMatching(/^destinations\[2\]\.webhookUrl: not an incoming webhook URL/),
      expect.stringMatching(/^destinations\[3\]\.url: unknown key/),
    ]);
  });

  it('a crm.pipeline / crm.stage byChannel key that is not a channel is a problem, as for filter.channels', () => {
    // A typo there would silently put every deal of the channel in the default pipeline / stage.
    expect(
      problems([
        {
          id: 'amo',
          kind: 'amocrm',
          baseUrl: 'https://x.amocrm.ru',
          token: 'a-long-lived-token-0123456789',
          crm: {
            pipeline: { byChannel: { 'shop-site': 7001, shopsite: 7002 }, default: 7000 },
            stage: { byChannel: { 'shop-sit': 142 } },
          },
        },
      ]),
    ).toEqual([
      'destinations[0].crm.pipeline.byChannel.shopsite: no channel "shopsite"',
      'destinations[0].crm.stage.byChannel.shop-sit: no channel "shop-sit"',
    ]);
  });

  it('ids the CRM takes as integers are checked as such: a pipeline name would go out as null (the default pipeline)', () => {
    expect(
      problems([
        {
          id: 'amo',
          kind: 'amocrm',
          baseUrl: 'https://x.amocrm.ru',
          token: 'a-long-lived-token-0123456789',
          crm: {
            pipeline: { byChannel: { 'shop-site': 'web-leads' }, default: 7000 },
            stage: { byChannel: { 'shop-site': 'C9:NEW' }, default: null },
            responsible: { default: 'oleg' },
          },
        },
        {
          id: 'b24',
          kind: 'bitrix24',
          webhookUrl: 'https://portal.bitrix24.ru/rest/1/abcdef123/',
          // Bitrix24 stages are strings: C9:NEW is right there.
          crm: {
            pipeline: { default: 'chats' },
            stage: { default: 'C9:NEW' },
            responsible: { default: '1' },
          },
        },
      ]),
    ).toEqual([
      'destinations[0].crm.pipeline.byChannel.shop-site: an amoCRM pipeline_id: a whole number, e.g. 7001',
      'destinations[0].crm.stage.byChannel.shop-site: an amoCRM status_id: a whole number, e.g. 142',
      'destinations[0].crm.responsible.default: an amoCRM user id: a whole number, e.g. 501',
      'destinations[1].crm.pipeline.default: a Bitrix24 CATEGORY_ID: a whole number (0 = the general pipeline)',
    ]);
  });
});
