import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { conversationSchema, messageSchema } from './schemas.js';
import { decodeEvent, type OpenedEvent } from './webhook.js';

/**
 * The Chatvisor webhook route's decode as a pure function: the body as read, with the customer's
 * cached profile and last known status (what `open` reads from the store), → what to record.
 * The hooks around it (the store reads, the status write and the profile read after the answer)
 * are tested in webhook.test.ts and identity.test.ts.
 */

const RECEIVED = new Date('2024-05-14T09:40:00.000Z');
const fixture = (name: string): unknown =>
  JSON.parse(readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8'));
const conversation = conversationSchema.parse(fixture('webhook-conversation-new.json'));
const message = messageSchema.parse(fixture('webhook-message.json'));
const cached = {
  identity: {
    customerId: 'cv-cust-5521',
    externalId: 'P-1001',
    email: 'anna@example.org',
    firstname: 'Anna',
    lastname: null,
  },
  digest: 'd',
  fetchedAt: RECEIVED.toISOString(),
};
const decode = (opened: OpenedEvent) => decodeEvent({ receivedAt: RECEIVED, opened }, { id: 'cobrowse' });

describe('chatvisor decode', () => {
  it('records a new status as a conversation event, classified against the last known status', () => {
    const started = decode({ kind: 'conversation', conversation, cached: null, previousStatus: null });
    if (started.kind !== 'observe') throw new Error('expected observe');
    expect(started.event).toBe('conversation');
    expect(started.observations[0]).toMatchObject({
      at: RECEIVED.toISOString(),
      identifiers: [{ kind: 'customer', value: 'cv-cust-5521', channelId: 'cobrowse' }],
      timeline: [{ type: 'conversation.started' }],
      events: [{ type: 'conversation.started' }],
    });
    const finished = decode({
      kind: 'conversation',
      conversation: { ...conversation, status: 'DONE' },
      cached: null,
      previousStatus: 'UNREAD',
    });
    expect(finished).toMatchObject({ observations: [{ timeline: [{ type: 'conversation.finished' }] }] });
  });

  it('lands on the person at once when the profile is cached', () => {
    const decoded = decode({ kind: 'conversation', conversation, cached, previousStatus: null });
    expect(decoded).toMatchObject({
      observations: [
        {
          identifiers: expect.arrayContaining([
            { kind: 'email', value: 'anna@example.org', provenance: 'verified' },
            { kind: 'person', value: 'P-1001', provenance: 'verified' },
          ]),
          names: ['Anna'],
        },
      ],
    });
  });

  it('records nothing for a status already known (a duplicate) or an agent’s message (not news)', () => {
    expect(decode({ kind: 'conversation', conversation, cached: null, previousStatus: 'UNREAD' })).toEqual({
      kind: 'nothing',
      event: 'conversation',
      outcome: 'duplicate',
    });
    expect(decode({ kind: 'message', message: { ...message, sender: 'AGENT' }, cached: null })).toEqual({
      kind: 'nothing',
      event: 'message',
      outcome: 'ok',
    });
  });

  it('records a customer message in the one message shape', () => {
    const decoded = decode({ kind: 'message', message, cached: null });
    expect(decoded).toMatchObject({
      kind: 'observe',
      event: 'message',
      observations: [
        {
          at: '2024-05-14T09:31:12.418Z',
          events: [
            {
              type: 'message.received',
              data: {
                messageId: 'msg-90412',
                at: '2024-05-14T09:31:12.418Z',
                author: { type: 'visitor' },
                text: 'Can I change the delivery address?',
              },
            },
          ],
        },
      ],
    });
  });

  it('gives a reason to journal for a body that is neither', () => {
    expect(decode({ kind: 'other' })).toMatchObject({
      kind: 'nothing',
      event: 'unknown',
      reason: expect.any(String),
    });
  });
});
