import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { createLivetexLookupClient } from '../adapters/livetex/client.js';
import { key as contactKey } from '../src/contacts/keys.js';
import { NORMALIZATION_KEY, NORMALIZATION_VERSION } from '../src/contacts/reindex.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { capturingLogger } from './support/logs.js';
import { type Receiver, startReceiver } from './support/receiver.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * An operator's upgrade over a store older versions left behind. Each fixture holds every key a
 * real older build (its binary, on its own redis-server) wrote under its prefix while its
 * destination's receiver was down, then was stopped (SIGTERM, or kill -9): pending deliveries
 * with retries scheduled in BullMQ, a deferred intake backlog (intake.ackAfterAppend) no worker
 * recorded, JivoChat, LiveTex and Chatvisor contacts with a merge, an unmerge and the conflict it
 * led to, keys today's identifier rules write differently, a LiveTex key and a console session.
 * Made by test/__fixtures__/store-before-upgrade.make.mjs (building an old commit takes minutes
 * and needs the history, so the test loads what it stored instead).
 *
 * Today's bridge starts on those keys with the receiver up: every pending delivery arrives once,
 * signed, in order per contact; the backlog is recorded once; contacts, timelines, the name search
 * and the conflicts read right; the re-index ran once; the LiveTex key still opens lookups; the old
 * console session asks to sign in again (README "Upgrading").
 */

interface StoredKey {
  key: string;
  type: 'string' | 'hash' | 'list' | 'set' | 'zset';
  pttl?: number;
  value?: string;
  fields?: Record<string, string>;
  values?: string[];
  members?: string[];
  scored?: string[];
}

interface OldDelivery {
  eventId: string;
  contactId: string;
  state: string;
}

interface Fixture {
  commit: string;
  mode: 'term' | 'kill';
  config: Record<
    'admin' | 'jivo' | 'livetex' | 'chatvisor' | 'chatvisorApiToken' | 'secret' | 'masterKey',
    string
  >;
  customers: Array<{ customerId: string; email: string; firstname: string; lastname: string }>;
  people: string[];
  livetexPerson: string;
  backlog: Array<{ person: string; chatId: number }>;
  deferred: number;
  livetexKey: { kid: string; key: string };
  consoleCookie: string;
  deliveries: OldDelivery[];
  conflicts: Array<{ reason: string; roots: string[] }>;
  views: Record<string, { id: string }>;
  keys: StoredKey[];
}

const FIXTURES = ['4be04ae', '032facb'];

async function loadKeys(url: string, prefix: string, keys: StoredKey[]): Promise<void> {
  const redis = new Redis(url);
  try {
    const batch = redis.multi();
    for (const entry of keys) {
      const key = `${prefix}:${entry.key}`;
      if (entry.type === 'string') batch.set(key, entry.value!);
      else if (entry.type === 'hash') batch.hset(key, entry.fields!);
      else if (entry.type === 'list') batch.rpush(key, ...entry.values!);
      else if (entry.type === 'set') batch.sadd(key, ...entry.members!);
      else {
        const scored = entry.scored!;
        const args: string[] = [];
        for (let index = 0; index < scored.length; index += 2) args.push(scored[index + 1]!, scored[index]!);
        batch.zadd(key, ...args);
      }
      if (entry.pttl !== undefined) batch.pexpire(key, entry.pttl);
    }
    await batch.exec();
  } finally {
    redis.disconnect();
  }
}

describe.each(FIXTURES)('upgrading a store the bridge of %s left', (commit) => {
  const fixture = JSON.parse(
    readFileSync(new URL(`./__fixtures__/store-before-upgrade.${commit}.json`, import.meta.url), 'utf8'),
  ) as Fixture;
  const { config } = fixture;
  const prefix = uniquePrefix(`upgrade-${commit}`);
  const deferredKey = `${prefix}:intake:deferred`;
  let redisUrl: string;
  let redis: Redis;
  let receiver: Receiver;
  let chatvisor: FakeChatvisor;
  let bridge: TestBridge;
  let second: TestBridge | undefined;
  const logs = capturingLogger('info');

  const bridgeConfig = () => ({
    admin: { token: config.admin },
    secrets: { masterKey: config.masterKey },
    identity: { mergeOn: ['person', 'email', 'phone'], defaultCountry: 'RU' },
    intake: { ackAfterAppend: true },
    channels: [
      { id: 'site', vendor: 'jivochat', token: config.jivo, personIdFrom: 'user_token' },
      { id: 'app', vendor: 'livetex', token: config.livetex },
      { ...chatvisor.channel('cobrowse', config.chatvisor), apiToken: config.chatvisorApiToken },
    ],
    destinations: [
      {
        id: 'crm',
        url: `${receiver.url}/hook`,
        secret: config.secret,
        retrySchedule: ['0s', '3s', '6s', '10s', '20s', '1m', '5m'],
      },
    ],
  });

  async function admin<T = any>(path: string): Promise<T> {
    const response = await fetch(bridge.url + path, { headers: { authorization: `Bearer ${config.admin}` } });
    const body = await response.json();
    if (response.status !== 200) throw new Error(`${path}: ${response.status} ${JSON.stringify(body)}`);
    return body as T;
  }
  const contactOf = async (person: string) =>
    (
      await admin<{ contacts: Array<{ id: string; emails: string[]; phones: string[] }> }>(
        `/api/v1/contacts?identity=${encodeURIComponent(`person:${person}`)}`,
      )
    ).contacts;
  const allDeliveries = async () =>
    (
      await admin<{ deliveries: Array<{ eventId: string; state: string; createdAt: string }> }>(
        '/api/v1/deliveries?limit=500',
      )
    ).deliveries;

  beforeAll(async () => {
    redisUrl = await getTestRedisUrl();
    redis = new Redis(redisUrl);
    await loadKeys(redisUrl, prefix, fixture.keys);
    receiver = await startReceiver({ secret: config.secret });
    chatvisor = await startFakeChatvisor({ token: config.chatvisorApiToken });
    for (const customer of fixture.customers) chatvisor.addCustomer(customer);
    bridge = await startTestBridge({
      store: 'redis',
      keyPrefix: prefix,
      config: bridgeConfig(),
      logger: logs.logger,
    });
    // Recorded and delivered: the backlog drained, nothing pending, everything the bridge
    // delivered seen by the receiver.
    const settled = async () => {
      if ((await redis.llen(deferredKey)) > 0) return false;
      const deliveries = await allDeliveries();
      return (
        deliveries.every((delivery) => delivery.state === 'delivered') &&
        receiver.application.length === deliveries.length
      );
    };
    const deadline = Date.now() + 90_000;
    while (!(await settled())) {
      if (Date.now() > deadline) throw new Error('the upgraded bridge did not settle within 90 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 120_000);
  afterAll(async () => {
    await second?.close();
    await bridge?.close();
    await receiver?.close();
    await chatvisor?.close();
    redis?.disconnect();
    if (redisUrl) await cleanupPrefix(redisUrl, prefix);
  });

  it('the fixture is what it says: pending deliveries, a backlog, a conflict', () => {
    expect(fixture.deliveries.length).toBeGreaterThan(20);
    expect(fixture.deliveries.every((delivery) => delivery.state === 'pending')).toBe(true);
    expect(fixture.deferred).toBe(fixture.backlog.length);
    expect(fixture.conflicts.map((conflict) => conflict.reason)).toEqual(['unmerged_before']);
  });

  it('delivers every delivery the old version left pending exactly once, signed, in order per contact', async () => {
    expect(receiver.requests.filter((request) => !request.verified)).toEqual([]);
    // No event was accepted twice (the application keeps each webhook-id once).
    expect(receiver.acceptedCount).toBe(receiver.application.length);
    const delivered = new Map(receiver.application.map((event) => [event.payload.id, event]));
    for (const old of fixture.deliveries) expect(delivered.has(old.eventId), old.eventId).toBe(true);
    // Per contact, events arrive in the order the bridge made their deliveries.
    const created = new Map(
      (await allDeliveries()).map((delivery) => [delivery.eventId, delivery.createdAt]),
    );
    const last = new Map<string, string>();
    for (const event of receiver.application) {
      const contact = event.payload.contact?.id ?? '';
      const at = created.get(event.payload.id)!;
      expect(at >= (last.get(contact) ?? ''), `${event.payload.type} of ${contact}`).toBe(true);
      last.set(contact, at);
    }
  });

  it('records the deferred backlog once per acknowledged event', async () => {
    expect(await redis.llen(deferredKey)).toBe(0);
    const chatsPerPerson = new Map<string, number>();
    for (const { person } of fixture.backlog)
      chatsPerPerson.set(person, (chatsPerPerson.get(person) ?? 0) + 1);
    for (const [person, chats] of chatsPerPerson) {
      const contacts = await contactOf(person);
      expect(contacts).toHaveLength(1);
      const timeline = await admin<{ entries: Array<{ type: string }> }>(
        `/api/v1/contacts/${contacts[0]!.id}/timeline?limit=200`,
      );
      expect(timeline.entries.filter((entry) => entry.type === 'conversation.finished')).toHaveLength(chats);
    }
    const finished = receiver.application.filter((event) => event.payload.type === 'conversation.finished');
    // The backlog's chats and the LiveTex dialog the old version closed.
    expect(finished).toHaveLength(fixture.backlog.length + 1);
  });

  it('reads contacts, the merge, the conflict and the keys of today’s rules', async () => {
    for (const person of [...fixture.people, fixture.livetexPerson]) {
      const contacts = await contactOf(person);
      expect(contacts, person).toHaveLength(1);
    }
    // The LiveTex visitor merged into person 0's contact by the e-mail, as before the upgrade.
    const [zero] = await contactOf(fixture.people[0]!);
    expect((await contactOf(fixture.livetexPerson))[0]!.id).toBe(zero!.id);
    expect(zero!.id).toBe(fixture.views[fixture.people[0]!]!.id);
    // Person 3's punycode e-mail is found by its Unicode form; person 4's switchboard number
    // with an extension no longer merges on the bare number.
    const idn = await admin<{ contacts: Array<{ id: string }> }>(
      `/api/v1/contacts?email=${encodeURIComponent('ivan@почта.рф')}`,
    );
    expect(idn.contacts.map((contact) => contact.id)).toEqual([(await contactOf(fixture.people[3]!))[0]!.id]);
    const conflicts = await admin<{ conflicts: Array<{ reason: string; state: string; roots: string[] }> }>(
      '/api/v1/identity/conflicts',
    );
    expect(conflicts.conflicts.map(({ reason, state, roots }) => ({ reason, state, roots }))).toEqual([
      { reason: 'unmerged_before', state: 'open', roots: fixture.conflicts[0]!.roots },
    ]);
    // The name with a Latin o among Cyrillic letters is found by its Cyrillic spelling.
    const { cookie } = await signIn(bridge.url, config.admin);
    const page = await consoleRequest(bridge.url, `/console/contacts?q=${encodeURIComponent('Иванов')}`, {
      cookie,
    });
    expect(page.status).toBe(200);
    expect(page.text).toContain((await contactOf(fixture.people[5]!))[0]!.id);
  });

  it('re-indexes once: marker written, a second worker does not run the pass again', async () => {
    expect(await redis.get(`${prefix}:${NORMALIZATION_KEY}`)).toBe(String(NORMALIZATION_VERSION));
    const done = () => logs.lines.filter((line) => line.msg === 'contact re-index: done');
    expect(done()).toHaveLength(1);
    expect(done()[0]).toMatchObject({ complete: true, busy: 0, rekeyed: 1, searchOnlyPhones: 1 });
    second = await startTestBridge({
      store: 'redis',
      keyPrefix: prefix,
      config: bridgeConfig(),
      logger: logs.logger,
      role: 'worker',
    });
    await second.close();
    second = undefined;
    expect(done()).toHaveLength(1);
    expect(logs.lines.filter((line) => line.msg.startsWith('contact re-index'))).toHaveLength(2);
  });

  it('opens LiveTex lookups with the key the old version made', async () => {
    const client = createLivetexLookupClient({
      url: `${bridge.url}/livetex/app/attributes`,
      kid: fixture.livetexKey.kid,
      key: fixture.livetexKey.key,
    });
    const answer = await client.lookup({ personId: fixture.livetexPerson });
    expect(answer.found).toBe(true);
  });

  /**
   * The make script's chat_accepted of person `index` (chat 5000 + index), rebuilt from the same
   * vendor fixture (unchanged since these builds). They keyed it without the widget (before
   * b168a00); today's key has it, so only the key of before says it was recorded.
   */
  const oldChatAccepted = (index: number) => {
    const accepted = JSON.parse(
      readFileSync(new URL('../adapters/jivochat/__fixtures__/chat_accepted.json', import.meta.url), 'utf8'),
    ) as { widget_id: string; visitor: Record<string, unknown>; agent: { id: string } };
    const body = {
      ...accepted,
      user_token: fixture.people[index]!,
      visitor: {
        ...accepted.visitor,
        name: `Fault Person ${index}`,
        email: `upg.${index}@fault.example`,
        phone: `+79261${String(index).padStart(6, '0')}`,
        number: String(100_000 + index),
      },
      chat_id: 5000 + index,
    };
    return { body, formerKey: `jivochat:site:chat_accepted:${body.chat_id}:${accepted.agent.id}` };
  };
  const sendJivo = async (body: unknown) => {
    const response = await fetch(`${bridge.url}/webhooks/jivochat/site/${config.jivo}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(200);
    return JSON.stringify(await response.json());
  };
  /** The contact's JivoChat chats accepted, as its timeline has them. */
  const startedChats = async (contactId: string) =>
    (
      await admin<{ entries: Array<{ type: string; channelId: string }> }>(
        `/api/v1/contacts/${contactId}/timeline?limit=200`,
      )
    ).entries.filter((entry) => entry.channelId === 'site' && entry.type === 'conversation.started').length;

  it('answers a JivoChat redelivery of a webhook the old version recorded as a repeat, recording nothing again', async () => {
    const { body, formerKey } = oldChatAccepted(0);
    expect(fixture.keys.map((entry) => entry.key)).toContain(contactKey.dedupe('site', formerKey));
    const [contact] = await contactOf(fixture.people[0]!);
    expect(await startedChats(contact!.id)).toBe(1);
    const eventsBefore = receiver.application.length;

    // Jivo sends it again (its answer timed out at the old version): the normal intake path
    // (chat_accepted is recorded before the answer, intake.ackAfterAppend or not).
    const answer = await sendJivo(body);
    // The agent is still shown the person's contact.
    expect(answer).toContain('upg.0@fault.example');
    expect(await startedChats(contact!.id)).toBe(1);
    // Nothing new to deliver either (a second conversation.started would be pending or sent).
    await bridge.bridge.delivery.drain();
    expect((await allDeliveries()).filter((delivery) => delivery.state === 'pending')).toEqual([]);
    expect(receiver.application.length).toBe(eventsBefore);
  });

  it('still records another widget’s chat that reuses the chat id and agent of one the old version recorded', async () => {
    // The key of before is the same for both (no widget in it): it counts as a repeat only for
    // the person it was recorded for, or b168a00's fix would be undone for as long as it lives.
    const { body, formerKey } = oldChatAccepted(1);
    expect(fixture.keys.map((entry) => entry.key)).toContain(contactKey.dedupe('site', formerKey));
    const other = {
      ...body,
      widget_id: 'Zx8cV7bN6m',
      user_token: 'upg-other-widget',
      visitor: {
        ...body.visitor,
        name: 'Other Widget',
        email: 'other.widget@fault.example',
        phone: '+79269999999',
        number: '999999',
      },
    };
    const answer = await sendJivo(other);
    expect(answer).toContain('other.widget@fault.example');
    expect(answer).not.toContain('upg.1@fault.example');
    const [contact] = await contactOf('upg-other-widget');
    expect(await startedChats(contact!.id)).toBe(1);
  });

  it('asks the old console session to sign in again', async () => {
    const page = await consoleRequest(bridge.url, '/console/contacts', { cookie: fixture.consoleCookie });
    expect(page.status).toBe(302);
    expect(page.location).toMatch(/^\/console\/sign-in/);
  });
});
