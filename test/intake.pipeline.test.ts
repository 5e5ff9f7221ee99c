import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { AdapterDefinition, ChannelRuntime } from '../src/contracts/adapter.js';
import { AppError, StoreUnavailableError, ValidationError } from '../src/errors.js';
import { isRecord } from '../src/intake/wire.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The intake pipeline (src/intake/pipeline.ts) through real HTTP on 127.0.0.1 with a real store
 * (memory and Redis): parse once → open → decode → observe | look up → facts → render → settle →
 * journal → metrics, the same for every vendor. The vendor here is a probe written against the
 * adapter contract like any new vendor would be; its state keeps the steps it saw, in order.
 */

const TOKEN = 'probe-channel-token-000000001';
const HOOK = `/webhooks/probe/probe-1/${TOKEN}`;

interface ProbeChannel {
  id: string;
  steps: string[];
}

const probeBody = z.object({
  key: z.string().default('k'),
  person: z.string().optional(),
  email: z.string().optional(),
  facts: z.boolean().optional(),
  deadlineMs: z.number().optional(),
  reject: z.boolean().optional(),
  unknown: z.boolean().optional(),
});

class ProbeRefusal extends AppError {
  constructor() {
    super('unknown_key', 401, 'no such key');
  }
}

const probeAdapter: AdapterDefinition<ProbeChannel> = {
  vendor: 'probe',
  displayName: 'Probe',
  channelSettings: z.object({}),
  intake: [
    {
      kind: 'webhook',
      body: 'json',
      // A documented quirk of this vendor: bodies may come prefixed with "PROBE:".
      repairJson: (text) => (text.startsWith('PROBE:') ? text.slice('PROBE:'.length) : undefined),
      doc: { summary: 'Probe webhook' },
      async open(_request, channel) {
        channel.steps.push('open');
        return { openedAt: channel.steps.length };
      },
      decode(request, channel) {
        channel.steps.push('decode');
        if (!isRecord(request.body)) throw new ValidationError('not an object', []);
        const body = probeBody.parse(request.body);
        if (body.reject) throw new ValidationError('refused by decode', [{ path: 'reject', message: 'no' }]);
        if (body.unknown) return { kind: 'nothing', event: 'probe.other', reason: 'not for us' };
        return {
          kind: 'observe',
          event: 'probe.seen',
          observations: [
            {
              channelId: channel.id,
              vendor: 'probe',
              at: request.receivedAt.toISOString(),
              idempotencyKey: `probe:${body.key}`,
              identifiers: [
                ...(body.person ? [{ kind: 'person', value: body.person }] : []),
                ...(body.email ? [{ kind: 'email', value: body.email }] : []),
              ],
              timeline: [{ at: request.receivedAt.toISOString(), type: 'probe.seen', summary: 'seen' }],
            },
          ],
          ...(body.facts ? { facts: { deadlineMs: body.deadlineMs ?? 2000, max: 5, reserve: true } } : {}),
        };
      },
      render(result, channel) {
        channel.steps.push('render');
        return {
          body: {
            decoded: result.decoded.kind,
            contactId: result.contact?.id ?? null,
            duplicate: result.duplicate,
            facts: result.facts ? result.facts.facts.map((fact) => fact.key) : null,
            opened: result.opened,
          },
        };
      },
      async settle(answer, _result, channel) {
        channel.steps.push('settle');
        return { ...answer, headers: { 'x-settled': 'yes' } };
      },
    },
    {
      kind: 'lookup',
      path: 'who',
      body: 'raw',
      doc: { summary: 'Probe lookup: the body is a person id', contentType: 'text/plain' },
      async open(request) {
        const person = request.rawBody.toString('utf8');
        if (person === 'bad-key') throw new ProbeRefusal();
        // What a key read answers while Redis is away (src/store/redis.ts).
        if (person === 'store-down') throw new StoreUnavailableError();
        return person;
      },
      decode: (request) => ({
        kind: 'lookup',
        event: 'lookup',
        identifier: { kind: 'person', value: String(request.opened) },
        facts: { deadlineMs: 2000, max: 5 },
        options: { evenWork: true },
      }),
      render: (result) => ({
        body: { found: result.contact !== null, contactId: result.contact?.id ?? null },
      }),
    },
    {
      // A lookup whose one-time token is spent only while a stored credential is the one `open`
      // used (Claim.onlyIf, as LiveTex's key record): the body is `<person> <jti> [stale]`; `open`
      // first guesses the credential from memory, and on a recheck opens from what the store held
      // (`stale`: it never does, so the claim never holds).
      kind: 'lookup',
      path: 'guarded',
      body: 'raw',
      doc: { summary: 'Probe lookup under a stored credential', contentType: 'text/plain' },
      async open(request, channel, recheck) {
        const [person = '', jti = '', stale] = request.rawBody.toString('utf8').split(' ');
        channel.steps.push(recheck ? `open again: ${recheck.held}` : 'open');
        if (recheck && recheck.held === null) throw new ProbeRefusal();
        const credential = recheck ? `${recheck.held}${stale ? '-stale' : ''}` : 'remembered';
        return { person, jti, credential };
      },
      decode: (request) => {
        const opened = request.opened as { person: string; jti: string; credential: string };
        return {
          kind: 'lookup',
          event: 'lookup',
          identifier: { kind: 'person', value: opened.person },
          facts: { deadlineMs: 100, max: 5 },
          options: {
            claim: {
              key: `probe:jti:${opened.jti}`,
              ttlMs: 60_000,
              onlyIf: { hash: 'probe:credentials', field: 'probe-1', value: opened.credential },
            },
          },
        };
      },
      render: (result) => ({ body: { found: result.contact !== null } }),
    },
  ],
  create: (_context, channel) => ({ state: { id: channel.id, steps: [] } }),
};

describe.each(['memory', 'redis'] as const)('the intake pipeline over HTTP (%s store)', (store) => {
  let bridge: TestBridge;
  let steps: string[];

  beforeAll(async () => {
    bridge = await startTestBridge({
      store,
      adapters: [probeAdapter],
      config: { channels: [{ id: 'probe-1', vendor: 'probe', token: TOKEN }] },
    });
    steps = (bridge.bridge.channels.get('probe-1')!.runtime as ChannelRuntime<ProbeChannel>).state.steps;
    // The company's CRM: one source answers at once, one never does.
    bridge.bridge.context.facts.addSource({
      id: 'fast',
      lookup: async () => ({ facts: [{ key: 'fast.fact', label: 'Fast', value: 'yes', type: 'string' }] }),
    });
    bridge.bridge.context.facts.addSource({ id: 'stuck', lookup: () => new Promise(() => {}) });
  });
  afterAll(() => bridge?.close());

  const metrics = async () => (await bridge.bridge.metrics.registry.metrics()).split('\n');
  const journal = async (kind: 'rejected' | 'unhandled') =>
    (await bridge.admin('GET', `/api/v1/journal?channel=probe-1&kind=${kind}`)).body.entries as Array<{
      reason: string;
      body: string;
    }>;

  it('runs open → decode → observe → render → settle, answers what settle returns, and counts it', async () => {
    steps.length = 0;
    const first = await bridge.post(HOOK, { key: 'a', person: 'p-a' });
    expect(first.status).toBe(200);
    expect(first.headers.get('x-settled')).toBe('yes');
    expect(first.body).toMatchObject({
      decoded: 'observe',
      duplicate: false,
      facts: null,
      opened: { openedAt: 1 },
    });
    expect(steps).toEqual(['open', 'decode', 'render', 'settle']);
    const found = await bridge.admin('GET', '/api/v1/contacts?identity=person:p-a');
    expect(found.body.contacts.map((contact: { id: string }) => contact.id)).toEqual([first.body.contactId]);

    const again = await bridge.post(HOOK, { key: 'a', person: 'p-a' });
    expect(again.body).toMatchObject({ duplicate: true, contactId: first.body.contactId });
    const lines = await metrics();
    expect(lines).toContain('chatbridge_intake_total{vendor="probe",event="probe.seen",outcome="ok"} 1');
    expect(lines).toContain(
      'chatbridge_intake_total{vendor="probe",event="probe.seen",outcome="duplicate"} 1',
    );
    expect(
      lines.some((line) => line.startsWith('chatbridge_reply_latency_seconds_count{vendor="probe"')),
    ).toBe(true);
  });

  it('parses the body once, before any adapter step: bad JSON and depth bombs are 400s, kept as rejected', async () => {
    steps.length = 0;
    const notJson = await bridge.post(HOOK, 'this is {not json', { 'content-type': 'application/json' });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('invalid_json');
    const deep = await bridge.post(HOOK, `${'['.repeat(100)}${']'.repeat(100)}`);
    expect(deep.status).toBe(400);
    expect(deep.body.error.code).toBe('json_too_deep');
    expect(steps).toEqual([]);
    const bodies = (await journal('rejected')).map((entry) => entry.body);
    expect(bodies).toContain('this is {not json');
    expect(await metrics()).toContain(
      'chatbridge_intake_total{vendor="probe",event="unknown",outcome="rejected"} 2',
    );
  });

  it("mends a vendor's documented malformed JSON as text, and tells decode it did", async () => {
    const mended = await bridge.post(HOOK, 'PROBE:{"key":"m","person":"p-m"}');
    expect(mended.status).toBe(200);
    expect(mended.body.decoded).toBe('observe');
    // The BOM some senders put first is not part of the JSON.
    expect((await bridge.post(HOOK, '\uFEFF{"key":"bom","person":"p-m"}')).status).toBe(200);
  });

  it('turns a typed refusal of decode into its 4xx, journals the payload, and answers nothing else', async () => {
    const refused = await bridge.post(HOOK, { reject: true });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'invalid_body', issues: [{ path: 'reject' }] });
    expect((await journal('rejected'))[0]).toMatchObject({ reason: 'refused by decode' });
    expect(await metrics()).toContain(
      'chatbridge_intake_total{vendor="probe",event="unknown",outcome="rejected"} 3',
    );
  });

  it('answers "nothing" normally, keeps it in the journal as unhandled and counts it', async () => {
    const other = await bridge.post(HOOK, { unknown: true });
    expect(other.status).toBe(200);
    expect(other.body).toMatchObject({ decoded: 'nothing', contactId: null });
    expect((await journal('unhandled'))[0]).toMatchObject({ reason: 'not for us' });
    expect(await metrics()).toContain(
      'chatbridge_intake_total{vendor="probe",event="probe.other",outcome="unhandled"} 1',
    );
  });

  it('accepts a payload that identifies nobody (only junk identifiers) and journals it', async () => {
    const junk = await bridge.post(HOOK, { key: 'junk', person: 'null', email: 'not an e-mail' });
    expect(junk.status).toBe(200);
    expect(junk.body).toMatchObject({ decoded: 'nothing', contactId: null });
    expect((await journal('unhandled'))[0]!.reason).toContain('no usable identifier');
    expect(await metrics()).toContain(
      'chatbridge_intake_total{vendor="probe",event="probe.seen",outcome="unhandled"} 1',
    );
  });

  it('builds the facts within the deadline from arrival: a source that never answers is left out', async () => {
    // Without the deadline this request would never be answered: the stuck source never answers.
    const answer = await bridge.post(HOOK, { key: 'f', person: 'p-f', facts: true, deadlineMs: 300 });
    expect(answer.status).toBe(200);
    expect(answer.body.facts).toEqual(expect.arrayContaining(['fast.fact', 'personId']));
  });

  it('looks up without writing: found, not found and refusals counted per channel, never journalled', async () => {
    const known = await bridge.post('/probe/probe-1/who', 'p-a', { 'content-type': 'text/plain' });
    expect(known.status).toBe(200);
    expect(known.body).toMatchObject({ found: true });
    const unknown = await bridge.post('/probe/probe-1/who', 'p-nobody', { 'content-type': 'text/plain' });
    expect(unknown.body).toEqual({ found: false, contactId: null });
    const refused = await bridge.post('/probe/probe-1/who', 'bad-key', { 'content-type': 'text/plain' });
    expect(refused).toMatchObject({ status: 401, body: { error: { code: 'unknown_key' } } });
    expect((await bridge.post('/probe/nope/who', 'p-a')).status).toBe(404);
    // A store outage is counted as webhooks count it (unavailable), not as a defect (error).
    const down = await bridge.post('/probe/probe-1/who', 'store-down', { 'content-type': 'text/plain' });
    expect(down).toMatchObject({ status: 503, body: { error: { code: 'store_unavailable' } } });
    const lines = await metrics();
    expect(lines).not.toContain('chatbridge_probe_lookups_total{channel="probe-1",outcome="error"} 1');
    for (const outcome of ['found', 'not_found', 'unknown_key', 'unavailable']) {
      expect(lines).toContain(`chatbridge_probe_lookups_total{channel="probe-1",outcome="${outcome}"} 1`);
    }
    const kept = [...(await journal('rejected')), ...(await journal('unhandled'))].map((entry) => entry.body);
    expect(kept).not.toContain('bad-key');
    expect(kept).not.toContain('p-nobody');
    expect(await bridge.admin('GET', '/api/v1/contacts?identity=person:p-nobody')).toMatchObject({
      body: { contacts: [] },
    });
  });
  it('claims a lookup token only while the stored credential is the one open used; opens again from what the store held', async () => {
    const store = bridge.bridge.store;
    const post = (body: string) =>
      bridge.post('/probe/probe-1/guarded', body, { 'content-type': 'text/plain' });
    await store.hset('probe:credentials', 'probe-1', 'v2');
    steps.length = 0;
    // Guessed "remembered", the store holds v2: nothing spent, opened again from v2, claimed.
    expect(await post('p-a jti-1')).toMatchObject({ status: 200, body: { found: true } });
    expect(steps).toEqual(['open', 'open again: v2']);
    expect(await store.get('probe:jti:jti-1')).toBe('1');
    // The token is spent: a replay is refused, whatever the credential.
    expect(await post('p-a jti-1')).toMatchObject({
      status: 401,
      body: { error: { code: 'replayed_token' } },
    });
    // The credential gone: `open` decides (its refusal), and the token is not spent.
    await store.hdel('probe:credentials', 'probe-1');
    steps.length = 0;
    expect(await post('p-a jti-2')).toMatchObject({ status: 401, body: { error: { code: 'unknown_key' } } });
    expect(steps).toEqual(['open', 'open again: null']);
    expect(await store.get('probe:jti:jti-2')).toBeNull();
    // A credential that never matches what open makes of it: a few tries, then "not now" (503).
    await store.hset('probe:credentials', 'probe-1', 'v3');
    steps.length = 0;
    expect(await post('p-a jti-3 stale')).toMatchObject({
      status: 503,
      body: { error: { code: 'store_busy' } },
    });
    expect(steps).toEqual(['open', 'open again: v3', 'open again: v3', 'open again: v3']);
    expect(await store.get('probe:jti:jti-3')).toBeNull();
    expect(await post('p-a jti-3')).toMatchObject({ status: 200, body: { found: true } });
  });
});
