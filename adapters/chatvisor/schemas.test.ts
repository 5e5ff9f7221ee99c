import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { AdapterRegistry, defaultRegistry } from '../../src/registry.js';
import { channelSettings, chatvisorAdapter } from './index.js';
import {
  classifyTransition,
  conversationKey,
  conversationObservation,
  messageIdentity,
  messageKey,
} from './mapper.js';
import { OPERATIONS } from './operations.js';
import { agentSchema, conversationSchema, customerSchema, messageSchema, pageSchema } from './schemas.js';

const fixture = (name: string): unknown =>
  JSON.parse(readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8'));

function configWith(channel: Record<string, unknown>) {
  return {
    admin: { token: 'test-admin-token-0123456789' },
    channels: [
      {
        id: 'cobrowse',
        vendor: 'chatvisor',
        token: 'chatvisor-hook-token-0123',
        apiToken: 'secret',
        ...channel,
      },
    ],
  };
}

function problems(channel: Record<string, unknown>): { path: string; message: string }[] {
  try {
    parseConfig(configWith(channel), new AdapterRegistry([chatvisorAdapter]), {});
  } catch (error) {
    if (error instanceof ConfigError) return error.issues ?? [];
    throw error;
  }
  return [];
}

describe('channel settings', () => {
  it('accepts the example config, with the schedules off and the defaults filled in', () => {
    const { config } = loadConfig('config/bridge.example.yaml', defaultRegistry(), {});
    const channel = config.channels.find((candidate) => candidate.vendor === 'chatvisor') as Record<
      string,
      unknown
    >;
    expect(channel).toMatchObject({
      apiUrl: 'https://api.chatvisor.com/rest/v1',
      apiToken: 'example-api-token',
      schedules: { agentSync: '', conversationPoll: '' },
      onRemovedAgent: 'deactivate',
      labels: ['{person}', 'segment:{attributes.segment}'],
      rateLimit: { perSecond: 10, concurrency: 5 },
      pageSize: 50,
      offerAgentChatUrl: false,
      backfillWindow: 24 * 3_600_000,
      profileRefresh: 3_600_000,
    });
  });

  it('takes the backfill window and profile refresh as durations, and names a bad one', () => {
    expect(problems({ backfillWindow: '3d', profileRefresh: '0s' })).toEqual([]);
    expect(
      channelSettings({ apiToken: 'secret', backfillWindow: '3d', profileRefresh: '15m' } as never),
    ).toMatchObject({
      backfillWindow: 3 * 86_400_000,
      profileRefresh: 900_000,
    });
    expect(
      problems({ backfillWindow: 'a day', profileRefresh: -1 })
        .map((issue) => issue.path)
        .sort(),
    ).toEqual(['channels[0].backfillWindow', 'channels[0].profileRefresh']);
  });

  it('accepts 5- and 6-field cron expressions and numbers from the environment as strings', () => {
    expect(
      problems({
        schedules: { agentSync: '*/15 * * * *', conversationPoll: '*/20 * * * * *' },
        rateLimit: { perSecond: '4', concurrency: '2' },
      }),
    ).toEqual([]);
  });

  it('reports every mistake with its path', () => {
    const found = problems({
      apiToken: '',
      apiUrl: 'ftp://nope',
      schedules: { agentSync: 'every minute' },
      onRemovedAgent: 'archive',
      labels: ['{person}', 'vip:{attributes.tier}', '{surname}'],
      rateLimit: { perSecond: 0 },
      unknownKey: true,
    });
    const paths = found.map((problem) => problem.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'channels[0].apiToken',
        'channels[0].apiUrl',
        'channels[0].schedules.agentSync',
        'channels[0].onRemovedAgent',
        'channels[0].labels[2]',
        'channels[0].rateLimit.perSecond',
      ]),
    );
    expect(paths).not.toContain('channels[0].labels[1]');
    // An unknown key is reported at its own path (src/config/issues.ts).
    expect(paths).toContain('channels[0].unknownKey');
  });
});

describe('schedules', () => {
  it('says why a schedule is not one node-cron can run', () => {
    const reasons = (schedule: string) =>
      problems({ schedules: { conversationPoll: schedule } })
        .filter((problem) => problem.path === 'channels[0].schedules.conversationPoll')
        .map((problem) => problem.message);
    expect(reasons('0 25 * * *')).toEqual([expect.stringContaining('"25" is not a valid hour')]);
    expect(reasons('*/0 * * * *')).toEqual([expect.stringContaining('"*/0" is not a valid minute')]);
    expect(reasons('* * * * * * *')).toEqual([expect.stringContaining('expected 5 or 6 fields but got 7')]);
    expect(reasons('0 0 31 2 *')).toEqual([
      expect.stringContaining('day of month "31" never comes in the months given'),
    ]);
    expect(reasons('*/30 * * * * *')).toEqual([]);
    expect(reasons('')).toEqual([]);
  });
});

describe('vendor payloads', () => {
  it('reads the Conversation with lastMessage.text, the documented lastMessage.test, or none', () => {
    expect(conversationSchema.parse(fixture('webhook-conversation-new.json'))).toEqual({
      customerId: 'cv-cust-5521',
      status: 'UNREAD',
      lastMessageText: 'Hello, is my order 7781 shipped yet?',
      url: 'https://app.chatvisor.com/customer/cv-cust-5521',
      updatedAt: null,
    });
    expect(
      conversationSchema.parse(fixture('webhook-conversation-status-misspelt.json')).lastMessageText,
    ).toBe('Thanks, that helps!');
    expect(conversationSchema.parse({ customerId: 42, status: 'unresolved' })).toEqual({
      customerId: '42',
      status: 'UNRESOLVED',
      lastMessageText: null,
      url: null,
      updatedAt: null,
    });
    // A listing may say when the conversation last changed (assumed field): normalised to ISO.
    expect(
      conversationSchema.parse({ customerId: 'c', status: 'DONE', updatedAt: '2024-05-14T09:31:12.4+00:00' })
        .updatedAt,
    ).toBe('2024-05-14T09:31:12.400Z');
  });

  it('tells a Message from a Customer body', () => {
    expect(messageSchema.parse(fixture('webhook-message.json'))).toMatchObject({
      id: 'msg-90412',
      sender: 'CUSTOMER',
    });
    expect(messageSchema.safeParse(fixture('webhook-new-subscriber.json')).success).toBe(false);
    expect(conversationSchema.safeParse(fixture('webhook-new-subscriber.json')).success).toBe(false);
  });

  it('reads customers, agents and pages tolerantly', () => {
    const page = pageSchema.parse(fixture('customer-page.json'));
    const customers = page.results.map((item) => customerSchema.parse(item));
    expect(customers[0]).toMatchObject({
      customerId: 'cv-cust-5521',
      externalId: 'P-1001',
      status: 'UNRESOLVED',
      lastMessageText: 'Can I change the delivery address?',
    });
    expect(customers[1]).toMatchObject({
      customerId: '7702',
      externalId: null,
      labels: [],
      lastMessageText: null,
    });
    const agents = (fixture('agents.json') as unknown[]).map((item) => agentSchema.parse(item));
    expect(agents[0]).toMatchObject({ email: 'oleg@shop.example', active: true });
    expect(agents[1]).toMatchObject({ email: 'former@shop.example', active: true, role: null });
  });
});

describe('idempotency keys', () => {
  it('gives the webhook and the poller the same key for the same conversation event', () => {
    const fromWebhook = conversationSchema.parse(fixture('webhook-conversation-status-misspelt.json'));
    const fromPoll = conversationSchema.parse({
      customerId: 'cv-cust-5521',
      status: 'DONE',
      lastMessage: { text: 'Thanks, that helps!' },
    });
    expect(conversationKey(fromWebhook)).toBe(conversationKey(fromPoll));
    expect(conversationKey(fromWebhook)).not.toBe(conversationKey({ ...fromPoll, status: 'UNRESOLVED' }));
    expect(conversationKey(fromWebhook)).not.toBe(
      conversationKey({ ...fromPoll, lastMessageText: 'Thanks!' }),
    );
  });

  it('keys messages by id, or by text and time without one', () => {
    const message = messageSchema.parse(fixture('webhook-message.json'));
    expect(messageKey(message)).toBe('message:cv-cust-5521:msg-90412');
    const anonymous = { ...message, id: null };
    // Without an id: its text-and-time identity as it is, as keys stored before were made.
    expect(messageKey(anonymous)).toBe(`message:cv-cust-5521:${messageIdentity(anonymous)}`);
    expect(messageIdentity(anonymous)).toMatch(/^t:/);
    // An id holding the separator is digested, so it cannot pass for another split.
    expect(messageKey({ ...message, customerId: 'a:b', id: 'c' })).not.toBe(
      messageKey({ ...message, customerId: 'a', id: 'b:c' }),
    );
    expect(messageKey(anonymous)).not.toBe(
      messageKey({ ...anonymous, createdAt: '2024-05-14T09:40:00.000Z' }),
    );
  });

  it('classifies transitions and maps them to the shared vocabulary', () => {
    expect(classifyTransition(null, 'UNREAD')).toBe('started');
    expect(classifyTransition('DONE', 'UNREAD')).toBe('started');
    expect(classifyTransition('UNREAD', 'UNRESOLVED')).toBe('updated');
    expect(classifyTransition('UNRESOLVED', 'DONE')).toBe('finished');
    const observation = conversationObservation({
      channelId: 'cobrowse',
      conversation: conversationSchema.parse(fixture('webhook-conversation-status-misspelt.json')),
      conversationId: 'cv-cust-5521',
      previousStatus: 'UNRESOLVED',
      at: '2024-05-14T10:00:00.000Z',
    });
    expect(observation.timeline?.[0]?.type).toBe('conversation.finished');
    expect(observation.events?.[0]?.type).toBe('conversation.finished');
    expect(observation.identifiers).toEqual([
      { kind: 'customer', value: 'cv-cust-5521', channelId: 'cobrowse' },
    ]);
  });
});

describe('README', () => {
  it('lists every operation with the method, path and status of operations.ts', () => {
    const readme = readFileSync(new URL('./README.md', import.meta.url), 'utf8');
    for (const [name, spec] of Object.entries(OPERATIONS)) {
      const cells = readme
        .split('\n')
        .map((line) => line.split('|').map((cell) => cell.trim()))
        .find((row) => row[1] === name);
      expect(cells, name).toBeDefined();
      expect(cells![2]).toContain(`\`${spec.method} ${spec.path}`);
      expect(cells![3]).toBe(spec.status);
    }
  });
});
