import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeChatvisor, startFakeChatvisor } from '../adapters/chatvisor/test-support/fake-chatvisor.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A body sent compressed (Content-Encoding: gzip, br, …) is refused with a 415 that names the
 * encoding, and the payload is journalled as it came. The bridge does not inflate bodies; before,
 * a gzipped webhook was parsed as JSON and refused as `invalid_json`, its compressed bytes quoted
 * as the reason.
 */
const TOKENS = {
  jivochat: 'jivo-encoding-token-0123456789',
  livetex: 'livetex-encoding-token-012345',
  chatvisor: 'chatvisor-encoding-token-0123',
};
const fixture = (path: string) => readFileSync(new URL(`../adapters/${path}`, import.meta.url));

describe('compressed request bodies', () => {
  let bridge: TestBridge;
  let fake: FakeChatvisor;

  beforeAll(async () => {
    fake = await startFakeChatvisor();
    bridge = await startTestBridge({
      config: {
        channels: [
          { id: 'site', vendor: 'jivochat', token: TOKENS.jivochat },
          { id: 'app', vendor: 'livetex', token: TOKENS.livetex },
          fake.channel('cv', TOKENS.chatvisor),
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await fake?.close();
  });

  it.each([
    ['jivochat', 'site', 'jivochat/__fixtures__/chat_accepted.json', 'gzip'],
    ['livetex', 'app', 'livetex/__fixtures__/dialog_closed.web.json', 'gzip'],
    ['chatvisor', 'cv', 'chatvisor/__fixtures__/webhook-message.json', 'br'],
  ] as const)(
    'a %s webhook sent compressed: 415 naming the encoding, journalled as sent',
    async (vendor, channel, path, encoding) => {
      const compressed = gzipSync(fixture(path));
      const answer = await bridge.post(`/webhooks/${vendor}/${channel}/${TOKENS[vendor]}`, compressed, {
        'content-type': 'application/json',
        'content-encoding': encoding,
      });
      expect(answer.status).toBe(415);
      expect(answer.body.error).toMatchObject({ code: 'unsupported_content_encoding' });
      expect(answer.body.error.message).toContain(`"${encoding}"`);

      const journal = await bridge.admin('GET', `/api/v1/journal?channel=${channel}&kind=rejected`);
      const [entry] = journal.body.entries;
      expect(entry).toMatchObject({ kind: 'rejected', channelId: channel, encoding: 'base64' });
      expect(entry.reason).toContain(`"${encoding}"`);
      expect(Buffer.from(entry.body, 'base64').equals(compressed)).toBe(true);
    },
  );

  it('takes a body sent with Content-Encoding: identity as it is', async () => {
    const answer = await bridge.post(
      `/webhooks/jivochat/site/${TOKENS.jivochat}`,
      fixture('jivochat/__fixtures__/chat_accepted.json'),
      { 'content-type': 'application/json', 'content-encoding': 'identity' },
    );
    expect(answer.status).toBe(200);
  });

  it('refuses a compressed body on the admin API and a channel route with 415 too', async () => {
    const unmerge = await fetch(`${bridge.url}/api/v1/contacts/c_nobody/unmerge`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${bridge.adminToken}`,
        'content-type': 'application/json',
        'content-encoding': 'gzip',
      },
      body: gzipSync('{"recordId":"r_1"}'),
    });
    expect(unmerge.status).toBe(415);
    expect(((await unmerge.json()) as any).error.code).toBe('unsupported_content_encoding');
    const keys = await fetch(`${bridge.url}/api/v1/channels/app/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bridge.adminToken}`, 'content-encoding': 'deflate' },
      body: 'x',
    });
    expect(keys.status).toBe(415);
    expect(((await keys.json()) as any).error.code).toBe('unsupported_content_encoding');
  });

  it('an empty body, or one in UTF-16, is refused with a reason that says so (and journalled)', async () => {
    const hook = `/webhooks/livetex/app/${TOKENS.livetex}`;
    const empty = await bridge.post(hook, '', { 'content-type': 'application/json' });
    expect(empty.status).toBe(400);
    expect(empty.body.error).toEqual({
      code: 'invalid_json',
      message: 'the body is empty: JSON is expected',
    });

    const text = fixture('livetex/__fixtures__/dialog_closed.web.json').toString('utf8');
    for (const [body, contentType] of [
      [Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]), 'application/json'],
      [Buffer.from(text, 'utf16le'), 'application/json; charset=utf-16le'],
    ] as const) {
      const answer = await bridge.post(hook, body, { 'content-type': contentType });
      expect(answer.status).toBe(400);
      expect(answer.body.error.code).toBe('invalid_json');
      expect(answer.body.error.message).toContain('the body is read as UTF-8; it looks like UTF-16');
    }
    const journal = await bridge.admin('GET', '/api/v1/journal?channel=app&kind=rejected&limit=1');
    expect(journal.body.entries[0].reason).toContain('it looks like UTF-16');
  });

  it('a declared charset other than UTF-8 is named when the body does not parse', async () => {
    const answer = await bridge.post(`/webhooks/jivochat/site/${TOKENS.jivochat}`, '{"event_name":\xe8}', {
      'content-type': 'application/json; charset="windows-1251"',
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error.message).toContain('the request declared charset=windows-1251');
  });
});
