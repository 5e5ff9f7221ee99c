import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isoOf, normalizeRating, observationsOf, parseWebhook } from './mapper.js';

const fixture = (name: string): unknown =>
  JSON.parse(readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url), 'utf8'));
const directory = [{ email: 'oleg@shop.example', name: 'Oleg Petrov', teams: [] }];

function dialog(body: unknown) {
  const parsed = parseWebhook(body, directory);
  if (parsed.kind !== 'dialog') throw new Error(`expected a dialog, got: ${parsed.reason}`);
  return parsed.record;
}

describe('livetex webhook parsing', () => {
  it('reads the documented envelope with the capital-C Conversation (no event field = closed)', () => {
    const record = dialog(fixture('dialog_closed.web.json'));
    expect(record).toMatchObject({
      event: 'closed',
      dialogId: '884213-2',
      conversationId: '884213',
      topic: 'Delivery of order 5521',
      startedAt: '2025-03-14T09:12:05.000Z',
      endedAt: '2025-03-14T09:31:40.000Z',
      rating: { scale: 'fivePoint', value: 4, comment: 'Quick answer, thanks' },
      agents: [{ id: '31', name: 'Oleg Petrov', email: 'oleg@shop.example' }],
      client: {
        name: 'Anna Smirnova',
        personIds: ['p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10'],
        visitorToken: 'vt-a81e5c0f',
        clientId: 'lt-client-77120',
        emails: ['Anna.Smirnova@mail.example'],
        phones: ['8 912 345-67-89'],
        attributes: { tariff: 'gold' },
      },
    });
    expect(record.messages).toEqual([
      {
        at: '2025-03-14T09:12:05.000Z',
        author: { type: 'visitor', name: 'Anna Smirnova' },
        text: 'Hello, where is my order 5521?',
      },
      {
        at: '2025-03-14T09:13:10.000Z',
        author: { type: 'agent', name: 'Oleg Petrov' },
        text: 'It left the warehouse today and arrives tomorrow.',
      },
    ]);
  });

  it('reads lower-case conversation, Unix times and the mobile customVisitorToken as a person id', () => {
    const record = dialog(fixture('dialog_closed.mobile.json'));
    expect(record).toMatchObject({
      event: 'closed',
      dialogId: 'c-99120',
      topic: 'App login problem',
      startedAt: new Date(1741950000 * 1000).toISOString(),
      endedAt: new Date(1741950600 * 1000).toISOString(),
      client: { personIds: ['p-3f9c2a71-5d1e-4c8e-9a0b-6e2f1d7c4b10'], visitorToken: 'vt-mobile-0c44' },
    });
  });

  it('recognises assigned and rated events; a rating alone names only its dialog', () => {
    expect(dialog(fixture('dialog_assigned.json'))).toMatchObject({
      event: 'assigned',
      dialogId: '884213-2',
      eventAt: '2025-03-14T09:12:30.000Z',
    });
    expect(dialog(fixture('dialog_rated.json'))).toMatchObject({
      event: 'rated',
      dialogId: '884213-2',
      rating: { scale: 'doublePoint', value: 1, comment: 'Solved my problem' },
      client: { personIds: [], emails: [], phones: [] },
    });
  });

  it('leaves unknown events and foreign shapes unhandled', () => {
    expect(parseWebhook(fixture('unknown_event.json'), directory)).toEqual({
      kind: 'unhandled',
      reason: 'unknown event "operator_typing"',
    });
    expect(parseWebhook(fixture('not_a_dialog.json'), directory).kind).toBe('unhandled');
    expect(parseWebhook([1, 2], directory).kind).toBe('unhandled');
    expect(parseWebhook('text', directory).kind).toBe('unhandled');
  });

  it('drops a field of an unexpected type instead of the payload', () => {
    const record = dialog({
      conversation: { id: 5, topic: { ru: 'x' }, messages: 'none' },
      discourser: { name: 42, personId: 'p-9' },
    });
    expect(record).toMatchObject({ dialogId: '5', client: { personIds: ['p-9'] } });
    expect(record.topic).toBeUndefined();
    expect(record.client.name).toBeUndefined();
    expect(record.messages).toEqual([]);
  });

  it('normalises ratings on both scales and ignores impossible ones', () => {
    expect(normalizeRating({ type: 'doublePoint', value: '0' })).toEqual({ scale: 'doublePoint', value: 0 });
    expect(normalizeRating({ type: 'fivePoint', value: 5, comment: ' ok ' })).toEqual({
      scale: 'fivePoint',
      value: 5,
      comment: 'ok',
    });
    expect(normalizeRating('3')).toEqual({ scale: 'fivePoint', value: 3 });
    expect(normalizeRating(1)).toBeUndefined(); // 1 exists on both scales
    expect(normalizeRating({ type: 'fivePoint', value: '7' })).toBeUndefined();
    expect(normalizeRating({ type: 'doublePoint', value: '2' })).toBeUndefined();
    expect(normalizeRating({ type: 'stars', value: '2' })).toBeUndefined();
  });

  it('reads ISO text, Unix seconds and milliseconds', () => {
    expect(isoOf('2025-03-14T09:12:05+03:00')).toBe('2025-03-14T06:12:05.000Z');
    expect(isoOf(1741950000)).toBe('2025-03-14T11:00:00.000Z');
    expect(isoOf('1741950000000')).toBe('2025-03-14T11:00:00.000Z');
    expect(isoOf('yesterday')).toBeUndefined();
  });

  it('reads at most 20 operators of one payload (each is looked up in the agent directory)', () => {
    const record = dialog({
      event: 'dialog_closed',
      conversation: { dialogId: 'd-crowd' },
      employee: Array.from({ length: 5000 }, (_, index) => ({ id: `${index}`, name: `Operator ${index}` })),
    });
    expect(record.agents).toHaveLength(20);
    expect(record.agents[19]).toEqual({ id: '19', name: 'Operator 19' });
  });
});

describe('livetex dialog → observations', () => {
  const receivedAt = new Date('2025-03-14T10:00:00Z');

  it('a close with a rating gives the finished and the rated observation, keyed per dialog and event (and rating)', () => {
    const record = dialog(fixture('dialog_closed.web.json'));
    const observations = observationsOf({
      channelId: 'web',
      record,
      dialogKey: record.dialogId!,
      identifiers: [{ kind: 'person', value: 'p-1' }],
      raw: { original: true },
      receivedAt,
    });
    expect(observations.map((observation) => observation.idempotencyKey)).toEqual([
      'livetex:web:884213-2:closed',
      // The rating in the key (it can change): 4/5, and its comment's digest.
      'livetex:web:884213-2:rated:f4:JK3WW1HGCj2Bpdk4h8oQIH0RmpkDUzcQ',
    ]);
    const [finished, rated] = observations;
    expect(finished).toMatchObject({
      at: '2025-03-14T09:31:40.000Z',
      names: ['Anna Smirnova'],
      responsibleAgent: { name: 'Oleg Petrov', email: 'oleg@shop.example' },
      attributes: { tariff: { value: 'gold' } },
      events: [{ type: 'conversation.finished' }],
    });
    expect(finished?.timeline?.[0]).toMatchObject({
      type: 'conversation.finished',
      data: { conversationId: '884213-2', topic: 'Delivery of order 5521', raw: { original: true } },
    });
    expect((finished!.timeline![0]!.data as { messages: unknown[] }).messages).toHaveLength(2);
    expect(rated?.timeline?.[0]).toMatchObject({
      type: 'conversation.rated',
      summary: 'Dialog 884213-2 rated 4/5 ("Quick answer, thanks")',
      data: { conversationId: '884213-2', rating: { scale: 'fivePoint', value: 4 } },
    });
  });

  it('an assignment to someone else is a new event; the same one repeated is not', () => {
    const body = fixture('dialog_assigned.json') as { employee: { id: number; name: string }[] };
    const keyOf = (payload: unknown) => {
      const record = dialog(payload);
      return observationsOf({
        channelId: 'web',
        record,
        dialogKey: record.dialogId!,
        identifiers: [],
        raw: payload,
        receivedAt,
      })[0]?.idempotencyKey;
    };
    const other = { ...body, employee: [{ id: 40, name: 'Irina Volkova' }] };
    expect(keyOf(body)).toBe(keyOf(structuredClone(body)));
    expect(keyOf(other)).not.toBe(keyOf(body));
  });
});

describe('livetex event names', () => {
  it('reads the event from whole words in any case style', () => {
    const eventOfName = (event: string) => {
      const parsed = parseWebhook({ event, conversation: { id: 1 } }, directory);
      return parsed.kind === 'dialog' ? parsed.record.event : parsed.reason;
    };
    expect(eventOfName('dialog_closed')).toBe('closed');
    expect(eventOfName('dialogAssigned')).toBe('assigned');
    expect(eventOfName('RATING')).toBe('rated');
    expect(eventOfName('operator_typing')).toBe('unknown event "operator_typing"');
    expect(eventOfName('generated')).toBe('unknown event "generated"');
  });
});

describe('livetex event hints', () => {
  it('takes a bare `type` as a hint only', () => {
    const eventOfType = (type: string) => {
      const parsed = parseWebhook({ type, conversation: { id: 1 } }, directory);
      return parsed.kind === 'dialog' ? parsed.record.event : parsed.reason;
    };
    expect(eventOfType('rated')).toBe('rated');
    expect(eventOfType('conversation')).toBe('closed');
  });
});
