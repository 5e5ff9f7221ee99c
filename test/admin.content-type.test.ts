import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorSchema } from '../src/http/openapi.js';
import { allVendorChannels } from './security/support.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * The admin API takes JSON, and a body that says it is something else is refused with 415
 * naming what was sent and what is expected. Before, a JSON text sent as `text/plain` (what
 * `fetch` sends for a string body), as a form (what `curl -d` sends) or with no type at all was
 * read as JSON all the same. Vendor intake is not the admin API: it stays as lenient as the
 * adapters' READMEs say. Over HTTP, on Redis under the test's own key prefix.
 */
const JIVO_FIXTURE = new URL('../adapters/jivochat/__fixtures__/chat_accepted.json', import.meta.url);

describe('admin bodies must be declared as JSON', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'redis',
      config: {
        secrets: { masterKey: Buffer.alloc(32, 7).toString('base64') },
        channels: allVendorChannels,
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  /** fetch, with the admin token: a string body goes as text/plain, bytes with no type at all. */
  async function send(path: string, body: string | Uint8Array | undefined, type?: string) {
    const response = await fetch(bridge.url + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${bridge.adminToken}`, ...(type ? { 'content-type': type } : {}) },
      ...(body === undefined ? {} : { body }),
    });
    const text = await response.text();
    return { status: response.status, type: response.headers.get('content-type'), body: JSON.parse(text) };
  }

  const unmerge = '/api/v1/contacts/c_nobody/unmerge';
  const json = JSON.stringify({ recordId: 'c_other' });

  it('refuses a JSON text sent as text/plain, as a form, or without a type: 415 naming the type to send', async () => {
    for (const [label, body, type, named] of [
      ['text/plain (fetch with a string)', json, undefined, '"text/plain;charset=UTF-8"'],
      ['a form (curl -d)', json, 'application/x-www-form-urlencoded', '"application/x-www-form-urlencoded"'],
      ['no type at all', new TextEncoder().encode(json), undefined, 'without a Content-Type'],
      ['JSON in Latin-1', json, 'application/json; charset=iso-8859-1', 'UTF-8'],
    ] as const) {
      const answer = await send(unmerge, body, type);
      expect(answer.status, label).toBe(415);
      expect(answer.type, label).toMatch(/^application\/json/);
      expect(errorSchema.strict().safeParse(answer.body).success, label).toBe(true);
      expect(answer.body.error.code, label).toBe('unsupported_media_type');
      expect(answer.body.error.message, label).toContain(named);
      expect(answer.body.error.message, label).toContain('application/json');
    }
  });

  it('takes application/json in any case, with a UTF-8 charset or none', async () => {
    for (const type of [
      'application/json',
      'Application/JSON',
      'application/json; charset=utf-8',
      'application/json;charset="UTF-8"',
    ]) {
      const answer = await send(unmerge, json, type);
      // Read and validated: the contact does not exist.
      expect(answer.status, type).toBe(404);
      expect(answer.body.error.code, type).toBe('contact_not_found');
    }
  });

  it("a channel route's body too; a POST that takes no body still needs no type", async () => {
    const keys = '/api/v1/channels/app/keys';
    expect((await send(keys, '{}')).status).toBe(415);
    expect((await send('/api/v1/channels/cobrowse/agent-chat-url', '{"customerId":"c1"}')).status).toBe(415);
    // Refused before anything was done: no key was made.
    expect((await bridge.admin('GET', keys)).body.keys).toEqual([]);
    // `curl -X POST` sends nothing and no type: that is fine, and so is `{}` declared as JSON.
    expect((await send(keys, undefined)).status).toBe(201);
    expect((await send(keys, '{}', 'application/json')).status).toBe(201);
    expect((await bridge.admin('GET', keys)).body.keys).toHaveLength(2);
  });

  it('a delivery replay, which takes no body, refuses one instead of ignoring it', async () => {
    const replay = '/api/v1/deliveries/dlv_nope/replay';
    const option = await send(replay, '{"force":true}', 'application/json');
    expect(option.status).toBe(400);
    expect(option.body.error).toMatchObject({
      code: 'invalid_body',
      // The body as a whole, written as every other issue about a whole value is: not ''.
      issues: [{ path: '(root)', message: 'this route takes no body' }],
    });
    expect((await send(replay, '{}')).status).toBe(415);
    expect((await send('/api/v1/deliveries/replay?destination=nope', 'x')).status).toBe(415);
    // Nothing, or `{}` as JSON: the replay is tried (there is no such delivery).
    for (const [body, type] of [
      [undefined, undefined],
      ['{}', 'application/json'],
    ] as const) {
      const answer = await send(replay, body, type);
      expect(answer.status).toBe(404);
      expect(answer.body.error.code).toBe('delivery_not_found');
    }
  });

  it('documents the 415 of every admin operation that reads a body, and vendor intake keeps taking any type', async () => {
    const document = (await (await fetch(`${bridge.url}/api/v1/openapi.json`)).json()) as any;
    for (const [path, method] of [
      ['/api/v1/contacts/{id}/unmerge', 'post'],
      ['/api/v1/channels/{id}/keys', 'post'],
      ['/api/v1/channels/{id}/agent-chat-url', 'post'],
      ['/api/v1/deliveries/{id}/replay', 'post'],
      ['/api/v1/deliveries/replay', 'post'],
    ] as const) {
      const responses = document.paths[path][method].responses;
      expect(responses['415']?.description, path).toContain('application/json');
      expect(responses['413'], path).toBeDefined();
    }
    // JivoChat documents no content type for its webhooks; a text/plain one is recorded.
    const jivo = allVendorChannels.find((each) => each.vendor === 'jivochat')!;
    const intake = await fetch(`${bridge.url}/webhooks/jivochat/${jivo.id}/${jivo.token}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: readFileSync(JIVO_FIXTURE, 'utf8'),
    });
    expect(intake.status).toBe(200);
  });
});
