import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { FactAnswer } from '../../src/contacts/facts.js';
import type { Contact } from '../../src/contacts/types.js';
import type { IntakeResult } from '../../src/contracts/adapter.js';
import type { LivetexChannel } from './channel.js';
import { bridgeJweCodec, openAnswer } from './codec.js';
import { livetexLookup, type OpenedLookup } from './lookup.js';
import { dialogIdentifier, dialogKeyOf, identifiersOf, parseWebhook } from './mapper.js';
import { livetexSettingsSchema } from './schemas.js';
import { decodeDialog, type OpenedDialog } from './webhook.js';

/**
 * The LiveTex intake routes as pure functions: a dialog (as `open` hands it over, with the
 * client it remembered) → observations, and a lookup's opened claims → what the core looks up,
 * the found / not-found answer, and its sealing. The store-backed steps (dialog memory, keys,
 * replay guard) are tested over HTTP in webhook.test.ts and lookup.test.ts.
 */

const RECEIVED = new Date('2025-03-14T10:00:00.000Z');
const raw = (name: string) => readFileSync(new URL(`./__fixtures__/${name}`, import.meta.url));
const directory = [{ email: 'oleg@shop.example', name: 'Oleg Petrov', teams: [] }];

/** What `open` gives decode for a payload whose dialog nobody remembered. */
function opened(body: Buffer): OpenedDialog {
  const parsed = parseWebhook(JSON.parse(body.toString('utf8')), directory);
  if (parsed.kind === 'unhandled') return parsed;
  const dialogKey = dialogKeyOf(parsed.record, body);
  const identifiers = identifiersOf(parsed.record.client, 'app');
  if (identifiers.length === 0) identifiers.push(dialogIdentifier(dialogKey, 'app'));
  return { kind: 'dialog', record: parsed.record, dialogKey, identifiers };
}

function decode(name: string) {
  const body = raw(name);
  return decodeDialog(
    { body: JSON.parse(body.toString('utf8')), receivedAt: RECEIVED, opened: opened(body) },
    { id: 'app' },
  );
}

describe('livetex dialog decode', () => {
  it('records a closed dialog with its rating as two observations of one dialog', () => {
    const decoded = decode('dialog_closed.web.json');
    if (decoded.kind !== 'observe') throw new Error('expected observe');
    expect(decoded.event).toBe('dialog_closed');
    expect(decoded.observations.map((observation) => observation.idempotencyKey)).toEqual([
      'livetex:app:884213-2:closed',
      // The rating in the key (it can change): 4/5, and its comment's digest.
      'livetex:app:884213-2:rated:f4:JK3WW1HGCj2Bpdk4h8oQIH0RmpkDUzcQ',
    ]);
    expect(decoded.observations[0]!.timeline![0]!.data!.messages).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ author: { type: 'visitor', name: 'Anna Smirnova' } }),
      ]),
    );
  });

  it('puts a lone rating on the dialog when nothing names the client', () => {
    const decoded = decode('dialog_rated.json');
    if (decoded.kind !== 'observe') throw new Error('expected observe');
    expect(decoded.event).toBe('dialog_rated');
    expect(decoded.observations[0]!.identifiers).toEqual([
      { kind: 'dialog', value: '884213-2', channelId: 'app' },
    ]);
  });

  it('says "nothing", with a reason to journal, for what it cannot use', () => {
    expect(decode('unknown_event.json')).toMatchObject({
      kind: 'nothing',
      event: 'unknown',
      reason: expect.stringContaining('unknown event'),
    });
    expect(decode('not_a_dialog.json')).toMatchObject({ kind: 'nothing', reason: expect.any(String) });
    const unreadable = Buffer.from(JSON.stringify({ event: 'dialog_rated', dialogId: 'd-1', rate: 'great' }));
    expect(
      decodeDialog({ body: {}, receivedAt: RECEIVED, opened: opened(unreadable) }, { id: 'app' }),
    ).toEqual({ kind: 'nothing', event: 'dialog_rated', reason: 'rated event without a readable rating' });
  });
});

describe('livetex lookup decode, render and seal', () => {
  const key = new Uint8Array(randomBytes(32));
  const lookupOpened = (claims: Partial<OpenedLookup['claims']>): OpenedLookup => ({
    kid: 'k_test',
    key,
    claims: { requestId: 'r-1', iat: 0, exp: 60, jti: 'j-1', ...claims },
  });
  const channel = (settings: Record<string, unknown> = {}) =>
    ({ id: 'app', settings: livetexSettingsSchema.parse(settings), codec: bridgeJweCodec }) as LivetexChannel;
  const request = (claims: Partial<OpenedLookup['claims']>) => ({
    body: undefined,
    rawBody: Buffer.alloc(0),
    repaired: false,
    contentType: 'application/jose',
    receivedAt: RECEIVED,
    opened: lookupOpened(claims),
  });

  it('looks up personId and customVisitorToken as one kind, with even work and, by default, even timing', () => {
    expect(livetexLookup.decode(request({ personId: 'p-1' }), channel())).toEqual({
      kind: 'lookup',
      event: 'lookup',
      identifier: { kind: 'person', value: 'p-1' },
      facts: { deadlineMs: 1500, max: 50 },
      options: {
        evenWork: true,
        holdToDeadline: true,
        requestId: 'r-1',
        // The jti is claimed in the core's lookup step, kept until exp + 2 × skew (at least 1 s).
        claim: {
          key: `livetex:app:jti:${createHash('sha256').update('j-1').digest('base64url')}`,
          ttlMs: 1000,
        },
      },
    });
    const mobile = livetexLookup.decode(
      request({ customVisitorToken: 'p-1' }),
      channel({ evenTiming: false, lookupDeadlineMs: 300 }),
    );
    expect(mobile).toMatchObject({
      identifier: { kind: 'person', value: 'p-1' },
      facts: { deadlineMs: 300 },
      options: { holdToDeadline: false },
    });
  });

  const contact = {
    id: 'c_1',
    name: 'Anna',
    emails: ['anna@example.org'],
    phones: [],
    labels: ['vip'],
    identities: [{ kind: 'email', value: 'anna@example.org', provenance: 'verified' }],
    merges: [],
    crmLink: null,
  } as unknown as Contact;
  const result = (found: boolean, facts: FactAnswer | null = null): IntakeResult<OpenedLookup> => ({
    decoded: livetexLookup.decode(request({ personId: 'p-1' }), channel()),
    opened: lookupOpened({ personId: 'p-1' }),
    contact: found ? contact : null,
    duplicate: false,
    facts,
    consoleLink: () => undefined,
  });

  it('renders found and not found, and seals either under the request key in one size', async () => {
    const facts: FactAnswer = { facts: [{ key: 'k', label: 'L', value: 'v', type: 'string' }], missing: [] };
    const found = livetexLookup.render(result(true, facts), channel());
    expect(found.body).toEqual({
      requestId: 'r-1',
      found: true,
      contact: { id: 'c_1', name: 'Anna', emails: ['anna@example.org'], phones: [], labels: ['vip'] },
      attributes: [{ key: 'k', label: 'L', value: 'v', type: 'string' }],
    });
    const missing = livetexLookup.render(result(false), channel());
    expect(missing.body).toEqual({ requestId: 'r-1', found: false, attributes: [] });

    const sealedFound = await livetexLookup.settle!(found, result(true, facts), channel());
    const sealedMissing = await livetexLookup.settle!(missing, result(false), channel());
    expect(sealedFound).toMatchObject({
      contentType: 'application/jose',
      headers: { 'cache-control': 'no-store' },
    });
    expect((sealedFound.body as string).length).toBe((sealedMissing.body as string).length);
    expect(await openAnswer(sealedFound.body as string, 'k_test', key)).toEqual(found.body);
  });
});
