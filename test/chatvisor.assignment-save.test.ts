import { afterEach, describe, expect, it } from 'vitest';
import type { ChatvisorRuntime } from '../adapters/chatvisor/index.js';
import { startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import type { Contact } from '../src/contacts/types.js';
import { StoreUnavailableError } from '../src/errors.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

const CV_TOKEN = 'cv-assignment-token-0123456789';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function onlyContact(bridge: TestBridge, query: string): Promise<Contact> {
  const found = await bridge.admin<{ contacts: Contact[] }>('GET', `/api/v1/contacts?${query}`);
  expect(found.status).toBe(200);
  expect(found.body.contacts).toHaveLength(1);
  return found.body.contacts[0]!;
}

/**
 * Chatvisor's assignee is remembered (the profile cache) only once the contact has it: a save
 * that fails (the store unavailable) leaves it new to the next read, which says it again.
 */
describe.each(['memory', 'redis'] as const)(
  'Chatvisor assignment after a failed save (%s store)',
  (store) => {
    it('the next event reads the customer again and sets the responsible agent', async () => {
      const fake = await startFakeChatvisor();
      cleanups.push(() => fake.close());
      const bridge = await startTestBridge({
        store,
        config: {
          agents: [{ email: 'oleg@shop.example', name: 'Oleg Petrov' }],
          channels: [fake.channel('cv', CV_TOKEN)],
        },
      });
      cleanups.push(() => bridge.close());
      const runtime = bridge.bridge.channels.get('cv')!.runtime as ChatvisorRuntime;
      fake.addCustomer({
        customerId: 'cv-maria',
        email: 'maria@example.org',
        assignedUser: 'oleg@shop.example',
      });

      // The profile read after the webhook is held until the store fails every write.
      const read = fake.hold({ method: 'GET', path: /^\/customer\/cv-maria$/ });
      const answer = await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
        customerId: 'cv-maria',
        status: 'UNREAD',
        lastMessage: { text: 'Hello' },
      });
      expect(answer.status).toBe(200);
      await read.arrived;
      const live = bridge.bridge.store;
      const batch = live.batch;
      live.batch = () => {
        const failing = batch.call(live);
        failing.exec = () => Promise.reject(new StoreUnavailableError(new Error('connection lost')));
        return failing;
      };
      read.release();
      await runtime.idle();
      live.batch = batch;
      expect(fake.profileReads('cv-maria')).toBe(1);
      expect((await onlyContact(bridge, 'identity=customer:cv:cv-maria')).responsibleAgent).toBeNull();

      // The customer's next event (an agent opened the conversation, not a new one): read again,
      // and the assignee is said.
      const next = await bridge.post(`/webhooks/chatvisor/cv/${CV_TOKEN}`, {
        customerId: 'cv-maria',
        status: 'UNRESOLVED',
        lastMessage: { text: 'Hello' },
      });
      expect(next.status).toBe(200);
      await runtime.idle();
      expect(fake.profileReads('cv-maria')).toBe(2);
      expect((await onlyContact(bridge, 'email=maria@example.org')).responsibleAgent).toEqual({
        email: 'oleg@shop.example',
      });
    });
  },
);
