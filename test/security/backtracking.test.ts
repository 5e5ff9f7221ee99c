import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repairAttributeList } from '../../adapters/jivochat/codec.js';
import { normalizePhone } from '../../src/contacts/normalize.js';
import { parseRetryAfter } from '../../src/net/retry.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';

/**
 * Text built to make a regular expression backtrack: each input here held the event loop (every
 * request of the bridge) for a minute or more before, and is read in one pass now. The tests
 * check what comes out; were an expression to backtrack again, the test would run far past its
 * timeout (no duration is measured here).
 */
const TOKEN = 'backtracking-jivo-token-0001';

describe('inputs built to make reading them slow', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: { channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN }] },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('JivoChat: a 1 MiB invalid body of "attributes" lists is refused as not JSON, not read once per list', async () => {
    // The repair of the documented `"attributes": [ "key": value ]` was tried from every
    // "attributes" of an invalid body, each try reading to the end: this body took 86 s.
    const block = `"attributes":[${'"x\\"'.repeat(3)}`;
    const body = `{"event_name":"client_attribute_updated","client_id":1,${block.repeat(40_000)}`;
    expect(body.length).toBeGreaterThan(1_000_000);
    const refused = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, body);
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe('invalid_json');
    // The documented form is still mended.
    const docs = '{"event_name":"client_attribute_updated","client_id":7,"attributes":["a":"x]","b":2]}';
    expect((await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, docs)).status).toBe(200);
  });

  it('JivoChat: the repair mends what it did before, also when an earlier list does not end', () => {
    expect(repairAttributeList('{"attributes": ["a": 1, "b": "[x]"]}')).toBe(
      '{"attributes": {"a": 1, "b": "[x]"}}',
    );
    // The first list meets the second's bracket; the second is the one mended.
    expect(repairAttributeList('{"attributes":["attributes":["k":1]}')).toBe(
      '{"attributes":["attributes":{"k":1}}',
    );
    // An escaped quote stays inside its string; an escaped line break ends the try.
    expect(repairAttributeList('{"attributes":["a\\"]":1]}')).toBe('{"attributes":{"a\\"]":1}}');
    expect(repairAttributeList('{"attributes":["a\\\n":1]}')).toBeUndefined();
    expect(repairAttributeList('{"attributes":["open]')).toBeUndefined();
    expect(repairAttributeList('{"attributes" : 5}')).toBeUndefined();
  });

  it('Retry-After: spaces after a date are read once (a receiver, a CRM or Chatvisor sets the header)', () => {
    // 16 KiB (what the HTTP client takes) cost 0.3 s an answer; the cost grew with the square.
    expect(parseRetryAfter(`Mon,${' '.repeat(200_000)}x`)).toBeUndefined();
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('120 , 60', now)).toBe(120_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:02:00 GMT  , Thu, 01 Jan 2026 00:05:00 GMT', now)).toBe(
      120_000,
    );
  });

  it('phones: a digit, spaces and "д" is no phone, found in one pass (CRM answers and admin searches are not length-capped)', () => {
    expect(normalizePhone(`1${' '.repeat(200_000)}д`, 'RU')).toBeNull();
    expect(normalizePhone(`1${' )'.repeat(100_000)}д 5 x`, 'RU')).toBeNull();
    expect(normalizePhone('8 (495) 123-45-67 ,  доп. 5', 'RU')).toBe('+74951234567');
  });
});
