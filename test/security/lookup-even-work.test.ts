import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClaims, type LookupSubject, sealRequest } from '../../adapters/livetex/codec.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { ADMIN, startLoggedBridge } from './support.js';

/**
 * Issue 10 item 2, the rest: a found and a not-found LiveTex lookup do the same work as far as
 * practical — the same store reads, answers of one size, no made-up customer sent to the
 * company's attribute source, and the same wait policy. Outcomes only, no stopwatch.
 */
const MARIA = 'cust-maria-0001';
/** The key families of the contact model: what a lookup reads to find a contact. */
const CONTACT_FAMILIES = new Set(['idx', 'sidx', 'root', 'members', 'rec']);

/** The memory store, with every operation on contact keys written down while `recording`. */
function recordingStore(): { store: Store; ops: string[]; recording: { on: boolean } } {
  const inner = createMemoryStore();
  const ops: string[] = [];
  const recording = { on: false };
  const family = (key: unknown) => (typeof key === 'string' ? key.split(':')[0]! : '?');
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        // readGroups takes a request: what it reads first are its keys (the groups follow from
        // them), and the records it is named directly (a search's found ids), each a record read.
        const request = args[0] as { keys: readonly string[]; ids?: readonly string[] };
        const first =
          property === 'readGroups'
            ? [...request.keys, ...(request.ids ?? []).map((id) => `rec:${id}`)]
            : args[0];
        const families = Array.isArray(first) ? first.map(family) : [family(first)];
        if (recording.on && families.some((name) => CONTACT_FAMILIES.has(name)))
          ops.push(`${String(property)}:${families.join(',')}`);
        return (value as (...given: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, ops, recording };
}

describe('LiveTex lookup: found and not found do the same work', () => {
  let crm: Server;
  const crmRequests: { contact: { id: string } }[] = [];
  let running: Awaited<ReturnType<typeof startLoggedBridge>>;
  let recorded: ReturnType<typeof recordingStore>;
  let key: { kid: string; key: string };
  let mariaId: string;

  beforeAll(async () => {
    // The company's attribute source: a real HTTP server that keeps what it was asked.
    crm = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        crmRequests.push(JSON.parse(Buffer.concat(chunks).toString()));
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ attributes: [{ key: 'orders', label: 'Orders', value: '3 orders' }] }));
      });
    });
    await new Promise<void>((resolve) => crm.listen(0, '127.0.0.1', resolve));
    recorded = recordingStore();
    running = await startLoggedBridge(
      {
        attributeSources: [
          {
            id: 'crm',
            url: `http://127.0.0.1:${(crm.address() as AddressInfo).port}/lookup`,
            cacheTtlSeconds: 0,
          },
        ],
        channels: [
          { id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789', lookupDeadlineMs: 300 },
        ],
      },
      { store: recorded.store },
    );
    const seeded = await running.bridge.context.contacts.observe({
      channelId: 'app',
      vendor: 'livetex',
      at: '2026-11-01T10:00:00.000Z',
      idempotencyKey: 'maria-1',
      identifiers: [{ kind: 'person', value: MARIA }],
      names: ['Maria'],
    });
    mariaId = seeded.contact.id;
    const created = await fetch(`${running.url}/api/v1/channels/app/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    expect(created.status).toBe(201);
    key = (await created.json()) as { kid: string; key: string };
  });
  afterAll(async () => {
    await running?.close();
    await new Promise((resolve) => crm?.close(resolve));
  });

  async function lookup(subject: LookupSubject) {
    const claims = buildClaims({
      subject,
      requestId: randomUUID(),
      jti: randomUUID(),
      iat: Date.now() / 1000,
    });
    const body = await sealRequest(claims, key.kid, new Uint8Array(Buffer.from(key.key, 'base64url')));
    recorded.ops.length = 0;
    recorded.recording.on = true;
    const response = await fetch(`${running.url}/livetex/app/attributes`, {
      method: 'POST',
      headers: { 'content-type': 'application/jose' },
      body,
    });
    const text = await response.text();
    recorded.recording.on = false;
    return { status: response.status, length: text.length, ops: [...recorded.ops] };
  }

  it('reads the same contact keys, answers in one size, and asks the CRM only about real customers', async () => {
    const found = await lookup({ personId: MARIA });
    const missing = await lookup({ personId: 'cust-nobody-9999' });
    expect(found.status).toBe(200);
    expect(missing.status).toBe(200);
    // The same sequence of store operations on contact keys: one read of the identifier's group
    // (with the jti claim); a miss reads a decoy group inside it the same way as a hit (see the
    // store conformance test "a miss with a decoy reads the decoy group as a hit would").
    expect(found.ops).toEqual(['readGroups:idx']);
    expect(missing.ops).toEqual(found.ops);
    // One answer size.
    expect(missing.length).toBe(found.length);
    // The attribute source heard of Maria once, and never of the made-up customer.
    expect(crmRequests.map((request) => request.contact.id)).toEqual([mariaId]);
    // Both answers went out under the same wait policy (held to the lookup deadline).
    const logged = running.lines
      .filter((line) => line.includes('livetex attribute lookup'))
      .map((line) => JSON.parse(line) as { found: boolean; held: boolean });
    expect(logged.map((line) => [line.found, line.held])).toEqual([
      [true, true],
      [false, true],
    ]);
    // Each line names the HTTP request once (the x-request-id answered) and LiveTex's request id
    // under a name of its own: a key written twice in one line is read as its last value.
    const raw = running.lines.filter((line) => line.includes('livetex attribute lookup'));
    for (const line of raw) expect(line.match(/"requestId":/g)).toHaveLength(1);
    expect(logged.map((line) => (line as { vendorRequestId?: string }).vendorRequestId)).toEqual([
      expect.any(String),
      expect.any(String),
    ]);
  });
});
