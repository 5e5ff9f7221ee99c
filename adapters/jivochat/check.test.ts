import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Decoded, Deferrable } from '../../src/contracts/adapter.js';
import { parseIntakeRequest } from '../../src/intake/pipeline.js';
import { jivochatSettingsSchema } from './schemas.js';
import { checkWebhook, decodeWebhook, type JivoChannel, jivochatWebhook } from './webhook.js';

/**
 * The route's `check` (intake.ackAfterAppend's web path): decode's refusals and outcomes, without
 * building the observation of an event whose answer wants no facts. Whatever decode says about a
 * body, check says the same, except `deferrable` where decode would observe without facts.
 */

const RECEIVED = new Date('2024-06-17T08:00:00.000Z');
const channel: JivoChannel = {
  id: 'shop-site',
  settings: jivochatSettingsSchema.parse({ widgetId: 'Qw7eR9tY2u' }),
};
const FIXTURES = new URL('./__fixtures__/', import.meta.url);
const fixtures = readdirSync(FIXTURES).map((name) => ({
  name,
  raw: readFileSync(new URL(name, FIXTURES)),
}));

type Outcome = { decoded: Decoded | Deferrable } | { refused: string };
function outcomeOf(run: () => Decoded | Deferrable): Outcome {
  try {
    return { decoded: run() };
  } catch (error) {
    return { refused: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

/** What check must say, given what decode said. */
function expectedCheck(decoded: Outcome): Outcome {
  if ('refused' in decoded) return decoded;
  const { decoded: value } = decoded;
  return value.kind === 'observe' && !value.facts
    ? { decoded: { kind: 'deferrable', event: value.event } }
    : decoded;
}

function both(raw: Buffer): { decode: Outcome; check: Outcome } {
  const request = () => parseIntakeRequest(jivochatWebhook, raw, undefined, RECEIVED);
  return {
    decode: outcomeOf(() => decodeWebhook(request(), channel)),
    check: outcomeOf(() => checkWebhook(request(), channel)),
  };
}

describe('JivoChat check (intake.ackAfterAppend)', () => {
  it('says what decode says of every fixture; deferrable where decode observes without facts', () => {
    const kinds = new Set<string>();
    for (const { name, raw } of fixtures) {
      const { decode, check } = both(raw);
      expect(check, name).toEqual(expectedCheck(decode));
      kinds.add('refused' in check ? 'refused' : check.decoded.kind);
    }
    // The fixtures cover each kind of answer: observed (rich events), deferrable, nothing.
    expect([...kinds].sort()).toEqual(['deferrable', 'nothing', 'observe']);
  });

  it('refuses what decode refuses and journals what decode journals', () => {
    const finished = JSON.parse(readFileSync(new URL('chat_finished.json', FIXTURES), 'utf8'));
    const cases: Record<string, unknown> = {
      'another widget': { ...finished, widget_id: 'another-widget' },
      'no event_name': { ...finished, event_name: undefined },
      'not an object': [finished],
      'names nobody': { ...finished, visitor: { name: 'Anonymous' }, user_token: null, client_id: null },
      'unknown event': { ...finished, event_name: 'chat_exploded' },
    };
    for (const [label, body] of Object.entries(cases)) {
      const { decode, check } = both(Buffer.from(JSON.stringify(body)));
      expect(check, label).toEqual(expectedCheck(decode));
      expect('decoded' in check && check.decoded.kind === 'deferrable', label).toBe(false);
    }
  });

  it('agrees with decode on mutated payloads (property test)', () => {
    const bodies = fixtures
      .filter(({ name }) => name.endsWith('.json'))
      .map(({ raw }) => JSON.parse(raw.toString('utf8')) as Record<string, unknown>);
    const value = fc.oneof(
      fc.constant(undefined),
      fc.constant(null),
      fc.string(),
      fc.integer(),
      fc.boolean(),
      fc.array(fc.string(), { maxLength: 3 }),
      fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 }),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...bodies),
        fc.array(
          fc.tuple(
            fc.constantFrom(
              'event_name',
              'visitor',
              'user_token',
              'client_id',
              'widget_id',
              'chat',
              'call',
              'agents',
            ),
            value,
          ),
          { maxLength: 3 },
        ),
        (body, changes) => {
          const mutated = { ...body };
          for (const [key, change] of changes) mutated[key] = change;
          const { decode, check } = both(Buffer.from(JSON.stringify(mutated)));
          expect(check).toEqual(expectedCheck(decode));
        },
      ),
      { numRuns: 500 },
    );
  });
});
