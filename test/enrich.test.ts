import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config/schema.js';
import { createFactService } from '../src/contacts/facts.js';
import type { Contact } from '../src/contacts/types.js';
import { createAttributeSources } from '../src/enrich/index.js';
import { Metrics } from '../src/metrics.js';
import { createHttpClient } from '../src/net/http.js';

/**
 * Attribute sources against a fake CRM lookup endpoint on 127.0.0.1 that keeps what it was asked
 * and answers per contact: valid, invalid, 404, 500, or never (to test timeouts and cancelling).
 */

type Behaviour = 'ok' | 'invalid' | 'partly-invalid' | 'huge' | 'not-found' | 'error' | 'hang';

interface FakeCrm {
  url: string;
  behaviour: Map<string, Behaviour>;
  requests: Array<{ contactId: string; headers: IncomingMessage['headers']; method: string }>;
  /** Requests whose connection was closed by the client before an answer. */
  abandoned: string[];
  close(): Promise<void>;
}

async function startFakeCrm(): Promise<FakeCrm> {
  const behaviour = new Map<string, Behaviour>();
  const requests: FakeCrm['requests'] = [];
  const abandoned: string[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { contact: { id: string } };
    const contactId = body.contact.id;
    requests.push({ contactId, headers: req.headers, method: req.method ?? '' });
    let answered = false;
    res.on('close', () => {
      if (!answered) abandoned.push(contactId);
    });
    const send = (status: number, payload: unknown) => {
      answered = true;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(payload));
    };
    switch (behaviour.get(contactId) ?? 'ok') {
      case 'ok':
        return send(200, {
          attributes: [
            { key: 'segment', label: 'Segment', value: 'VIP', type: 'string' },
            { key: 'orders', value: 12, type: 'number' },
            { key: 'since', label: 'Customer since', value: '2019-03-01', type: 'fancy-date' },
          ],
          crmLink: `https://crm.example/contacts/${contactId}`,
        });
      case 'invalid':
        return send(200, { attributes: 'lots' });
      case 'partly-invalid':
        return send(200, {
          attributes: [
            { key: 'ok', label: 'Fine', value: true },
            { label: 'no key', value: 1 },
            { key: 'nothing' },
          ],
          crmLink: 'not a url',
        });
      case 'huge':
        // Under the 4 MiB answer limit, but far more than an answer to an agent can show.
        return send(200, {
          attributes: Array.from({ length: 20_000 }, (_, index) => ({
            key: `k${index}`,
            label: index === 0 ? 'L'.repeat(100_000) : `Label ${index}`,
            value: index === 0 ? 'v'.repeat(1_000_000) : index,
          })),
        });
      case 'not-found':
        return send(404, { error: 'unknown contact' });
      case 'error':
        return send(500, { error: 'database down' });
      case 'hang':
        return;
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/lookup`,
    behaviour,
    requests,
    abandoned,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function contact(id: string): Contact {
  return {
    id,
    name: 'Maria',
    names: ['Maria'],
    emails: ['maria@example.org'],
    phones: [],
    identities: [],
    labels: [],
    attributes: {},
    responsibleAgent: null,
    crmLink: null,
    channels: [],
    records: [id],
    merges: [],
    createdAt: '2024-05-01T10:00:00.000Z',
    updatedAt: '2024-05-01T10:00:00.000Z',
  };
}

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const waitUntil = async (check: () => boolean | Promise<boolean>, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

describe('attribute sources', () => {
  let crm: FakeCrm;
  let clock = 0;
  let metrics: Metrics;

  beforeAll(async () => {
    crm = await startFakeCrm();
  });
  afterAll(async () => {
    await crm?.close();
  });
  beforeEach(() => {
    crm.behaviour.clear();
    crm.requests.length = 0;
    crm.abandoned.length = 0;
    clock = 1_000_000;
    metrics = new Metrics();
  });

  function sources(overrides: Record<string, unknown> = {}, extra: { cacheMaxEntries?: number } = {}) {
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      attributeSources: [
        {
          id: 'crm',
          url: crm.url,
          // The longest allowed: a loaded machine must not turn an answer into a timeout. The
          // tests about timeouts set their own.
          timeoutMs: 10_000,
          cacheTtlSeconds: 60,
          headers: { 'x-api-key': 'k1' },
          ...overrides,
        },
      ],
    });
    return createAttributeSources({
      config,
      http: createHttpClient(),
      logger,
      metrics,
      now: () => clock,
      ...extra,
    });
  }

  it('posts the contact and turns the answer into facts, cached per contact for cacheTtlSeconds', async () => {
    const [source] = sources();
    const signal = new AbortController().signal;
    const result = await source!.lookup(contact('ct_1'), signal);
    expect(result).toEqual({
      facts: [
        { key: 'segment', label: 'Segment', value: 'VIP', type: 'string' },
        { key: 'orders', label: 'orders', value: '12', type: 'number' },
        { key: 'since', label: 'Customer since', value: '2019-03-01', type: 'string' },
      ],
      crmLink: 'https://crm.example/contacts/ct_1',
    });
    expect(crm.requests).toHaveLength(1);
    expect(crm.requests[0]).toMatchObject({
      method: 'POST',
      headers: { 'x-api-key': 'k1', 'content-type': 'application/json' },
    });

    clock += 59_000;
    expect(await source!.lookup(contact('ct_1'), signal)).toEqual(result);
    expect(crm.requests).toHaveLength(1);
    await source!.lookup(contact('ct_2'), signal);
    expect(crm.requests).toHaveLength(2);
    clock += 2000;
    await source!.lookup(contact('ct_1'), signal);
    expect(crm.requests).toHaveLength(3);
    const text = await metrics.registry.metrics();
    expect(text).toContain('chatbridge_attribute_source_lookups_total{source="crm",outcome="hit"} 1');
    expect(text).toContain('chatbridge_attribute_source_lookups_total{source="crm",outcome="ok"} 3');
  });

  it('keeps at most 100 facts from one answer, with labels and values cut, counted in chatbridge_truncated_total', async () => {
    const [source] = sources();
    crm.behaviour.set('ct_huge', 'huge');
    const result = await source!.lookup(contact('ct_huge'), new AbortController().signal);
    expect(result.facts).toHaveLength(100);
    expect(result.facts[0]!.label).toHaveLength(2000);
    expect(result.facts[0]!.value).toHaveLength(4000);
    expect(result.facts[0]!.value.endsWith('…')).toBe(true);
    expect(result.facts[99]).toMatchObject({ key: 'k99', label: 'Label 99', value: '99' });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/chatbridge_truncated_total\{what="attribute_source"\} 1/);
  });

  it('keeps an answer for exactly cacheTtlSeconds, also on a clock that reads 0 when it is stored', async () => {
    const [source] = sources();
    const signal = new AbortController().signal;
    clock = 0;
    await source!.lookup(contact('ct_1'), signal);
    clock = 59_999;
    await source!.lookup(contact('ct_1'), signal);
    expect(crm.requests).toHaveLength(1);
    // Expired at its ttl, as the hand-written cache had it (lru-cache: only after it, and never
    // for an entry stored at time 0).
    clock = 60_000;
    await source!.lookup(contact('ct_1'), signal);
    expect(crm.requests).toHaveLength(2);
  });

  it('keeps the cache bounded, forgetting the least recently used contact', async () => {
    const [source] = sources({}, { cacheMaxEntries: 2 });
    const signal = new AbortController().signal;
    for (const id of ['a', 'b', 'a', 'c', 'a', 'b']) await source!.lookup(contact(id), signal);
    // a, b, (a hit), c evicts b, (a hit), b again.
    expect(crm.requests.map((request) => request.contactId)).toEqual(['a', 'b', 'c', 'b']);
  });

  it('ignores an unusable answer and failures, without caching them; 404 means nothing known', async () => {
    const [source] = sources();
    const signal = new AbortController().signal;
    crm.behaviour.set('bad', 'invalid');
    await expect(source!.lookup(contact('bad'), signal)).rejects.toThrow(
      /attribute source crm: unusable answer \(attributes: .*expected array/i,
    );
    await expect(source!.lookup(contact('bad'), signal)).rejects.toThrow();
    expect(crm.requests).toHaveLength(2);

    crm.behaviour.set('down', 'error');
    await expect(source!.lookup(contact('down'), signal)).rejects.toThrow(
      'attribute source crm: answered HTTP 500',
    );

    crm.behaviour.set('partly', 'partly-invalid');
    expect(await source!.lookup(contact('partly'), signal)).toEqual({
      facts: [{ key: 'ok', label: 'Fine', value: 'true', type: 'string' }],
    });

    crm.behaviour.set('stranger', 'not-found');
    expect(await source!.lookup(contact('stranger'), signal)).toEqual({ facts: [] });
    expect(await source!.lookup(contact('stranger'), signal)).toEqual({ facts: [] });
    expect(crm.requests.filter((request) => request.contactId === 'stranger')).toHaveLength(1);
  });

  it('gives up at its own timeout and closes the connection', async () => {
    const [source] = sources({ timeoutMs: 150 });
    crm.behaviour.set('slow', 'hang');
    // The fake CRM never answers 'slow': only the source's own timeout can end the lookup.
    await expect(source!.lookup(contact('slow'), new AbortController().signal)).rejects.toThrow(
      /timed out after 150 ms/,
    );
    await waitUntil(() => crm.abandoned.includes('slow'));
    expect(await metrics.registry.metrics()).toContain(
      'chatbridge_attribute_source_lookups_total{source="crm",outcome="timeout"} 1',
    );
  });

  it('stops when the caller aborts, and does not start when already aborted', async () => {
    const [source] = sources({ timeoutMs: 5000 });
    crm.behaviour.set('slow', 'hang');
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    // 'cancelled', not the 5 s timeout's message: the caller's abort ended it.
    await expect(source!.lookup(contact('slow'), controller.signal)).rejects.toThrow(/cancelled/);
    await waitUntil(() => crm.abandoned.includes('slow'));
    await expect(source!.lookup(contact('other'), controller.signal)).rejects.toThrow();
    expect(crm.requests.map((request) => request.contactId)).toEqual(['slow']);
  });

  it('never holds a vendor answer past its deadline: a late source is left out and cancelled', async () => {
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      attributeSources: [
        { id: 'fast', url: crm.url, timeoutMs: 2000 },
        { id: 'slow', url: crm.url, timeoutMs: 5000 },
      ],
    });
    const [fast, slow] = createAttributeSources({ config, http: createHttpClient(), logger, metrics });
    const facts = createFactService({ channels: [], vendorNames: new Map(), logger });
    facts.addSource(fast!);
    // Same fake server: the slow source asks for a contact the server never answers.
    facts.addSource({ id: 'slow', lookup: (_contact, signal) => slow!.lookup(contact('never'), signal) });
    crm.behaviour.set('never', 'hang');
    const answer = await facts.forContact(contact('ct_9'), { channelId: 'site', deadlineMs: 200 });
    expect(answer.missing).toEqual(['slow']);
    // Left out because the deadline cancelled it, not because its own 5 s timeout fired (the
    // outcome says which); the fake clock test in facts.test.ts pins the deadline itself.
    await waitUntil(async () =>
      (await metrics.registry.metrics()).includes(
        'chatbridge_attribute_source_lookups_total{source="slow",outcome="aborted"} 1',
      ),
    );
    expect(await metrics.registry.metrics()).not.toContain('outcome="timeout"');
    expect(answer.facts.map((fact) => fact.key)).toEqual(['segment', 'orders', 'since']);
    expect(answer.crmLink).toBe('https://crm.example/contacts/ct_9');
    await waitUntil(() => crm.abandoned.includes('never'));
  });
});

describe('attribute source config', () => {
  const parse = (headers: Record<string, string>) =>
    configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      attributeSources: [{ id: 'crm', url: 'https://crm.example/lookup', headers }],
    }).attributeSources[0]!.headers;

  it('lower-cases extra header names (one of each goes out) and refuses one given twice in two cases', () => {
    expect(parse({ 'Content-Type': 'application/json; charset=utf-8', 'X-Api-Key': 'k' })).toEqual({
      'content-type': 'application/json; charset=utf-8',
      'x-api-key': 'k',
    });
    expect(() => parse({ Accept: 'application/json', accept: 'text/plain' })).toThrow(/given twice/);
  });
});
