import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { buildDist, type SpawnedBridge, spawnBridge, writeFaultConfig } from '../support/fault.js';
import { freePort, type PrivateRedis, startPrivateRedis } from '../support/redis.js';

/**
 * kill -9 of the real bridge (dist/) in the middle of a scheduled Chatvisor conversation poll, then
 * restart: every conversation the run had not reached, and the one it was on, is found by the
 * runs after the restart, and nothing the killed run recorded is recorded again. The kill lands
 * where a run has recorded a customer's finish and reads its profile, the step before it used to
 * write where the finished conversation ends: the customer's next conversation must still be one
 * of its own (its own conversationId, a transcript without the first one's messages).
 */
const ADMIN_TOKEN = 'fault-poll-admin-token-00001';
const CUSTOMERS = 30;
/** The customer whose profile read the kill lands on. */
const KILLED_ON = 'c15';

interface Entry {
  type: string;
  data: { conversationId?: string; messages?: { text: string }[]; text?: string };
}

describe('kill -9 during a Chatvisor conversation poll', () => {
  let redis: PrivateRedis;
  let fake: FakeChatvisor;
  let bridge: SpawnedBridge | undefined;
  let configFile: string;
  let port: number;

  beforeAll(async () => {
    buildDist();
    redis = await startPrivateRedis();
    fake = await startFakeChatvisor();
    port = await freePort();
    configFile = writeFaultConfig({
      port,
      redisUrl: redis.url,
      keyPrefix: 'fault-poll',
      adminToken: ADMIN_TOKEN,
      jivoToken: 'fault-poll-jivo-token-000001',
      livetexToken: 'fault-poll-livetex-token-001',
      // One more channel (the YAML continues the channels list): polled every second.
      extra: `  - { id: cv, vendor: chatvisor, token: "fault-poll-cv-token-00000001", apiUrl: "${fake.apiUrl}", apiToken: "${fake.token}", maxRetries: 0, backfillWindow: "0s", schedules: { conversationPoll: "* * * * * *" } }`,
    });
  }, 120_000);
  afterAll(async () => {
    await bridge?.stop();
    await fake?.close();
    await redis?.stop();
  });

  async function admin<T>(path: string): Promise<T> {
    const response = await fetch(`${bridge!.url}${path}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const body = (await response.json()) as T;
    if (response.status !== 200) throw new Error(`${path}: ${response.status} ${JSON.stringify(body)}`);
    return body;
  }

  /** The customer's contacts (one expected) and the timeline of the first, oldest first. */
  async function timelineOf(customerId: string): Promise<{ contacts: number; entries: Entry[] }> {
    const found = await admin<{ contacts: { id: string }[] }>(
      `/api/v1/contacts?identity=${encodeURIComponent(`customer:cv:${customerId}`)}`,
    );
    if (found.contacts.length !== 1) return { contacts: found.contacts.length, entries: [] };
    const page = await admin<{ entries: Entry[] }>(
      `/api/v1/contacts/${found.contacts[0]!.id}/timeline?limit=200`,
    );
    return { contacts: 1, entries: [...page.entries].reverse() };
  }

  const customers = Array.from({ length: CUSTOMERS }, (_, index) => `c${index + 1}`);
  const texts = (entry: Entry | undefined) => (entry?.data.messages ?? []).map((message) => message.text);

  /** Every customer: one contact, `finished` finishes and `messages` customer messages, each once. */
  async function allRecorded(finished: number, messages: number): Promise<string[]> {
    const wrong: string[] = [];
    for (const customerId of customers) {
      const { contacts, entries } = await timelineOf(customerId);
      const finishes = entries.filter((entry) => entry.type === 'conversation.finished').length;
      const received = entries.filter((entry) => entry.type === 'message.received').length;
      if (contacts !== 1 || finishes !== finished || received !== messages) {
        wrong.push(`${customerId}: ${contacts} contacts, ${finishes} finished, ${received} messages`);
      }
    }
    return wrong;
  }

  it('finds every conversation once after the restart, and the next ones stay apart', async () => {
    bridge = await spawnBridge(configFile, port);
    // The first run records where things stand (nothing yet).
    await expect
      .poll(async () => (await admin<{ first: unknown }>('/api/v1/channels/cv/conversation-poll')).first, {
        timeout: 60_000,
        interval: 250,
      })
      .not.toBeNull();

    // The customers' conversations start. KILLED_ON's profile cannot be read (it stays pending),
    // so the run that records its finish reads the profile right after: that read is held.
    fake.fail({ method: 'GET', path: `/customer/${KILLED_ON}`, status: 500, times: 1_000_000 });
    for (const customerId of customers) {
      fake.addCustomer({ customerId, email: `${customerId}@example.org` });
      fake.addMessage(customerId, `${customerId}: where is my order?`);
      fake.addMessage(customerId, 'It ships today', 'AGENT');
      fake.addMessage(customerId, `${customerId}: thanks`);
    }
    await expect.poll(() => allRecorded(0, 2), { timeout: 120_000, interval: 1000 }).toEqual([]);

    fake.clearFailures();
    let release: (value?: unknown) => void = () => undefined;
    const doneAt = fake.requests.length;
    // Only in a run that listed the conversations after they were finished.
    const listedDone = () =>
      fake.requests
        .slice(doneAt)
        .some((request) => request.method === 'GET' && request.path === '/conversation');
    fake.fail({
      method: 'GET',
      path: `/customer/${KILLED_ON}`,
      when: listedDone,
      until: new Promise((resolve) => (release = resolve)),
    });
    for (const customerId of customers) fake.setStatus(customerId, 'DONE');
    // That run has recorded KILLED_ON's finish and reads its profile: kill -9 there.
    await expect
      .poll(
        () =>
          fake.requests
            .slice(doneAt)
            .some((request) => request.method === 'GET' && request.path === `/customer/${KILLED_ON}`),
        { timeout: 60_000 },
      )
      .toBe(true);
    await bridge.kill();
    release();

    // The killed run's locks expire by themselves; then the schedule goes on.
    bridge = await spawnBridge(configFile, port);
    await expect.poll(() => allRecorded(1, 2), { timeout: 120_000, interval: 1000 }).toEqual([]);
    for (const customerId of customers) {
      const { entries } = await timelineOf(customerId);
      const finish = entries.find((entry) => entry.type === 'conversation.finished');
      expect(texts(finish), customerId).toEqual([
        `${customerId}: where is my order?`,
        'It ships today',
        `${customerId}: thanks`,
      ]);
    }

    // Each customer's next conversation.
    for (const customerId of customers) {
      fake.addMessage(customerId, `${customerId}: one more thing`);
      fake.setStatus(customerId, 'UNREAD');
    }
    await expect.poll(() => allRecorded(1, 3), { timeout: 120_000, interval: 1000 }).toEqual([]);
    for (const customerId of customers) {
      fake.addMessage(customerId, 'Sure', 'AGENT');
      fake.setStatus(customerId, 'DONE');
    }
    await expect.poll(() => allRecorded(2, 3), { timeout: 120_000, interval: 1000 }).toEqual([]);
    for (const customerId of customers) {
      const { entries } = await timelineOf(customerId);
      const [first, second] = entries.filter((entry) => entry.type === 'conversation.finished');
      expect(texts(second), customerId).toEqual([`${customerId}: one more thing`, 'Sure']);
      expect(second?.data.conversationId, customerId).not.toBe(first?.data.conversationId);
    }
  }, 600_000);
});
