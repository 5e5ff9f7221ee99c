import { describe, expect, it, vi } from 'vitest';
import { createFactService, dayLabel } from '../src/contacts/facts.js';
import type { Contact } from '../src/contacts/types.js';
import { createLogger } from '../src/logger.js';

const contact: Contact = {
  id: 'c_1',
  name: 'Maria',
  names: ['Maria'],
  emails: ['maria@example.org'],
  phones: [],
  identities: [{ kind: 'person', value: 'P-1' }],
  labels: ['vip'],
  attributes: {
    topic: { value: 'Delivery', label: 'Topic', channelId: 'site', at: '2026-11-01T00:00:00.000Z' },
    plan: { value: 'gold', label: 'Plan', channelId: 'app', at: '2026-11-01T00:00:00.000Z' },
  },
  responsibleAgent: { email: 'oleg@shop.example', name: 'Oleg' },
  crmLink: null,
  channels: [
    {
      channelId: 'site',
      vendor: 'jivochat',
      firstSeen: '2026-11-01T00:00:00.000Z',
      lastSeen: '2026-11-02T00:00:00.000Z',
      observations: 4,
      conversations: 1,
    },
    {
      channelId: 'app',
      vendor: 'livetex',
      firstSeen: '2026-11-01T00:00:00.000Z',
      lastSeen: '2026-11-20T08:00:00.000Z',
      observations: 5,
      conversations: 3,
    },
  ],
  records: ['c_1'],
  merges: [],
  createdAt: '2026-11-01T00:00:00.000Z',
  updatedAt: '2026-11-20T08:00:00.000Z',
};

function service() {
  return createFactService({
    channels: [
      { id: 'site', vendor: 'jivochat', token: 'x'.repeat(16), name: 'website' },
      { id: 'app', vendor: 'livetex', token: 'x'.repeat(16), name: 'app' },
    ],
    vendorNames: new Map([
      ['jivochat', 'JivoChat'],
      ['livetex', 'LiveTex'],
    ]),
    logger: createLogger('silent'),
  });
}

describe('facts shown to agents', () => {
  it('orders other channels, labels, responsible agent, sources, then other vendors’ attributes', async () => {
    const facts = service();
    facts.addSource({
      id: 'crm',
      lookup: async () => ({
        facts: [{ key: 'ltv', label: 'LTV', value: '1200', type: 'number' }],
        crmLink: 'https://crm.example/1',
      }),
    });
    const answer = await facts.forContact(contact, { channelId: 'site', deadlineMs: 500 });
    expect(answer.facts.map((fact) => fact.key)).toEqual([
      'channel.app',
      'labels',
      'responsibleAgent',
      'ltv',
      'personId',
      'attr.plan',
    ]);
    expect(answer.facts[0]).toMatchObject({ label: 'LiveTex app', value: '3 conversations, last 20 Nov' });
    expect(answer.crmLink).toBe('https://crm.example/1');
    expect(answer.missing).toEqual([]);
  });

  it('leaves out a source that misses the deadline or fails, and aborts it', async () => {
    const facts = service();
    let aborted = false;
    facts.addSource({
      id: 'slow',
      lookup: (_contact, signal) =>
        new Promise((_resolve, reject) => {
          signal.addEventListener('abort', () => {
            aborted = true;
            reject(new Error('aborted'));
          });
        }),
    });
    facts.addSource({
      id: 'broken',
      lookup: async () => {
        throw new Error('boom');
      },
    });
    // The deadline on a fake clock (setTimeout only): waited for until it passes, not a moment
    // longer, whatever the machine's load.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let answered = false;
    const pending = facts.forContact(contact, { channelId: 'app', deadlineMs: 100, max: 3 }).finally(() => {
      answered = true;
    });
    try {
      await vi.advanceTimersByTimeAsync(99);
      expect(answered, 'answered before the deadline while a source was still working').toBe(false);
      expect(aborted).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
    } finally {
      vi.useRealTimers();
    }
    const answer = await pending;
    expect(answered).toBe(true);
    expect(aborted).toBe(true);
    expect(answer.missing.sort()).toEqual(['broken', 'slow']);
    expect(answer.facts).toHaveLength(3);
    expect(answer.facts[0]).toMatchObject({ key: 'channel.site', value: '1 conversation, last 2 Nov' });
  });
});

describe('dayLabel (the "last 14 Mar" of a channel fact)', () => {
  const intl = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' });
  it('says what Intl says for every day of a year, asked twice (remembered the second time)', () => {
    for (let day = 0; day < 366; day++) {
      const iso = new Date(Date.UTC(2028, 0, 1 + day, 23, 59, 59, 999)).toISOString();
      const expected = intl.format(new Date(iso));
      expect(dayLabel(iso)).toBe(expected);
      expect(dayLabel(iso)).toBe(expected);
    }
  });
  it('does not take the day from a time with an offset: its UTC day can differ', () => {
    expect(dayLabel('2026-03-14T23:30:00.000Z')).toBe('14 Mar');
    expect(dayLabel('2026-03-14T23:30:00+05:00')).toBe('14 Mar');
    expect(dayLabel('2026-03-14T01:30:00+05:00')).toBe('13 Mar');
    expect(dayLabel('2026-03-14T23:30:00-05:00')).toBe('15 Mar');
    // Date reads 24:00 as the next day's midnight: that must not become the 14th's label.
    expect(dayLabel('2026-03-14T24:00:00Z')).toBe(intl.format(new Date('2026-03-14T24:00:00Z')));
    expect(dayLabel('2026-03-14T10:00:00Z')).toBe('14 Mar');
  });
});
