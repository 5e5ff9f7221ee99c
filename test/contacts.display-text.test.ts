import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanDisplayText } from '../src/contacts/normalize.js';
import type { Contact } from '../src/contacts/types.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * Names and labels are shown to people (the console, agents' answers, CRMs): a visitor's name may
 * not carry what reorders or breaks the text around it. A right-to-left override (U+202E) makes
 * "\u202Egnp.exe" read "exe.png", and everything after it on the same line of a console page reads
 * backwards too; NUL and other controls break CRM and log text; a lone surrogate is refused by
 * JSON readers such as PHP's. They are dropped (line breaks and tabs become spaces) at intake.
 */
const TOKEN = 'jivo-display-text-token-0123';

describe('names and labels as they can be shown', () => {
  it('drops controls and bidi embeddings, overrides and isolates; keeps marks, joiners and emoji', () => {
    expect(cleanDisplayText('Anna\u202E Smith')).toBe('Anna Smith');
    expect(cleanDisplayText('\u2066Anna\u2069 \u202Agnp.exe\u202C')).toBe('Anna gnp.exe');
    expect(cleanDisplayText('a\u0000b\u0007c\u001b[31m')).toBe('abc[31m');
    expect(cleanDisplayText('Anna\nSmith\tJr\r\n')).toBe('Anna Smith Jr');
    expect(cleanDisplayText('S\ud800vetlana')).toBe('S\ufffdvetlana');
    expect(cleanDisplayText('\u202E\u0000 \n')).toBeNull();
    // Marks, a ZWJ emoji sequence, a surrogate pair and Hebrew stay as they are.
    for (const kept of ['Anna\u200F', '👩\u200D💻 Dev', 'Tea 🫖', 'שרה כהן', 'Григорий']) {
      expect(cleanDisplayText(kept)).toBe(kept);
    }
  });

  describe('end to end', () => {
    let bridge: TestBridge;
    beforeAll(async () => {
      bridge = await startTestBridge({
        config: { channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN, personIdFrom: 'user_token' }] },
      });
    });
    afterAll(async () => {
      await bridge?.close();
    });

    it('a JivoChat visitor named with an override and controls is stored, answered and shown without them', async () => {
      const answer = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, {
        event_name: 'chat_accepted',
        chat_id: 7400,
        user_token: 'display-text-1',
        visitor: { name: 'Anna \u202Egnp.exe\u0000\u2066 Smith\u0007', email: 'anna@display.example' },
      });
      expect(answer.status).toBe(200);
      expect(answer.body.contact_info.name).toBe('Anna gnp.exe Smith');

      const found = await bridge.admin<{ contacts: Contact[] }>(
        'GET',
        '/api/v1/contacts?identity=person:display-text-1',
      );
      const [contact] = found.body.contacts;
      expect(contact!.name).toBe('Anna gnp.exe Smith');
      expect(contact!.names).toEqual(['Anna gnp.exe Smith']);

      const { cookie } = await signIn(bridge.url, bridge.adminToken);
      const page = await consoleRequest(bridge.url, `/console/contacts/${encodeURIComponent(contact!.id)}`, {
        cookie,
      });
      expect(page.status).toBe(200);
      expect(page.text).toContain('Anna gnp.exe Smith');
      const unshowable = [...page.text].filter(
        (char) => char === '\u0000' || char === '\u0007' || /[\u202A-\u202E\u2066-\u2069]/.test(char),
      );
      expect(unshowable).toEqual([]);
    });

    it("a finished chat's transcript shows the visitor's name (as JivoChat sends it in it) without them too", async () => {
      const answer = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, {
        event_name: 'chat_finished',
        chat_id: 7401,
        user_token: 'display-text-2',
        visitor: { name: 'Boris \u202Egnp.exe\u0007', email: 'boris@display.example' },
        chat: { messages: [{ message: 'Hello', timestamp: 1718610000, type: 'visitor' }] },
      });
      expect(answer.status).toBe(200);
      const found = await bridge.admin<{ contacts: Contact[] }>(
        'GET',
        '/api/v1/contacts?identity=person:display-text-2',
      );
      const [contact] = found.body.contacts;
      const { cookie } = await signIn(bridge.url, bridge.adminToken);
      const page = await consoleRequest(bridge.url, `/console/contacts/${encodeURIComponent(contact!.id)}`, {
        cookie,
      });
      expect(page.status).toBe(200);
      expect(page.text).toContain('<span class="who">Boris gnp.exe</span>');
      const unshowable = [...page.text].filter(
        (char) => char === '\u0007' || /[\u202A-\u202E\u2066-\u2069]/.test(char),
      );
      expect(unshowable).toEqual([]);
    });

    it('timeline summaries built from vendor names (an agent named with an override) are stored without it', async () => {
      const answer = await bridge.post(`/webhooks/jivochat/site/${TOKEN}`, {
        event_name: 'chat_finished',
        chat_id: 7402,
        user_token: 'display-text-3',
        visitor: { name: 'Vera', email: 'vera@display.example' },
        agents: [{ id: 5, name: 'Olga \u202Eevil\u2066', email: 'olga@shop.example' }],
        chat: { messages: [{ message: 'Hello', timestamp: 1718610000, type: 'visitor' }] },
      });
      expect(answer.status).toBe(200);
      const found = await bridge.admin<{ contacts: Contact[] }>(
        'GET',
        '/api/v1/contacts?identity=person:display-text-3',
      );
      const [contact] = found.body.contacts;
      const timeline = await bridge.admin<{ entries: { type: string; summary: string }[] }>(
        'GET',
        `/api/v1/contacts/${encodeURIComponent(contact!.id)}/timeline`,
      );
      const finished = timeline.body.entries.find((entry) => entry.type === 'conversation.finished');
      expect(finished?.summary).toMatch(/ with Olga evil$/);
    });
  });
});
