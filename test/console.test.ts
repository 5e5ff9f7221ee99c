import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgentLinks } from '../src/console/links.js';
import { consoleRequest, cookieOf, fieldOf, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The web console over HTTP (DESIGN §11): sign-in, sessions in the store, CSRF, escaping of
 * hostile vendor data, the CSP, no secrets on any page, and signed agent links. The same flows in
 * a real browser are in test/slow/console.browser.test.ts.
 */
const FIXTURES = join(import.meta.dirname, '..', 'adapters', 'jivochat', '__fixtures__');
const MASTER_KEY = Buffer.alloc(32, 7);
const JIVO_TOKEN = 'site-token-0123456789abcdef';
const LIVETEX_TOKEN = 'app-token-0123456789abcdef';
const DESTINATION_SECRET = `whsec_${Buffer.alloc(24, 3).toString('base64')}`;
const PUBLIC_URL = 'http://127.0.0.1:9'; // only used to build links; nothing is sent there

function jivo(name: string, patch: Record<string, unknown> = {}) {
  return { ...JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')), ...patch };
}

describe('web console', () => {
  let bridge: TestBridge;
  let clock = Date.parse('2026-06-01T10:00:00Z');

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      now: () => new Date(clock),
      start: false,
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: PUBLIC_URL },
        secrets: { masterKey: MASTER_KEY.toString('base64') },
        console: { linkTtl: '1h' },
        channels: [
          {
            id: 'site',
            vendor: 'jivochat',
            name: 'Web site',
            token: JIVO_TOKEN,
            reply: { crmLink: '{consoleUrl}' },
          },
          { id: 'app', vendor: 'livetex', token: LIVETEX_TOKEN },
        ],
        destinations: [{ id: 'crm', url: 'http://127.0.0.1:9/hook', secret: DESTINATION_SECRET }],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('sends visitors without a session to the sign-in page, and signs in and out', async () => {
    const anonymous = await consoleRequest(bridge.url, '/console/contacts?q=x');
    expect(anonymous.status).toBe(302);
    expect(anonymous.location).toBe('/console/sign-in?next=%2Fconsole%2Fcontacts%3Fq%3Dx');

    const form = await consoleRequest(bridge.url, '/console/sign-in');
    expect(form.text).toContain('<label for="token">Admin token</label>');
    const pre = cookieOf(form.headers, 'chatbridge_console_pre')!;
    const wrong = await consoleRequest(bridge.url, '/console/sign-in', {
      cookie: pre,
      form: {
        _pre: fieldOf(form.text, '_pre')!,
        token: 'not-the-admin-token-at-all',
        next: '/console/status',
      },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('That is not the admin token');
    // The field is described by the error and the hint, so a screen reader reads both with it.
    expect(wrong.text).toContain('<p class="error" role="alert" id="page-error">That is not the admin token');
    expect(wrong.text).toContain('aria-describedby="page-error token-hint"');
    expect(wrong.text).toContain('<p class="hint" id="token-hint">');
    expect(form.text).toContain('aria-describedby="token-hint"');

    const { cookie, csrf, setCookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    // No Path: the browser keeps it for the directory of the sign-in page as it saw it, /console
    // here, /chat/console behind a proxy serving the bridge under /chat (console.path-prefix).
    expect(setCookie).not.toMatch(/path=/i);
    expect(setCookie).not.toMatch(/Secure/i); // plain http here; https publicUrl → Secure (below)
    const page = await consoleRequest(bridge.url, '/console/status', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h1>Status</h1>');

    const out = await consoleRequest(bridge.url, '/console/sign-out', { cookie, form: { _csrf: csrf } });
    expect(out.status).toBe(302);
    const after = await consoleRequest(bridge.url, '/console/status', { cookie });
    expect(after.status).toBe(302);
    expect(after.location).toContain('/console/sign-in');
  });

  it('refuses a sign-in that did not come from its own form (login CSRF)', async () => {
    const forged = await consoleRequest(bridge.url, '/console/sign-in', {
      form: { _pre: 'guessed', token: TEST_ADMIN_TOKEN },
    });
    expect(forged.status).toBe(403);
    expect(cookieOf(forged.headers, 'chatbridge_console')).toBeUndefined();
  });

  it('refuses state-changing requests without the session CSRF token', async () => {
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (const form of [{}, { _csrf: 'x'.repeat(43) }, { _csrf: `${csrf}x` }] as Record<string, string>[]) {
      const refused = await consoleRequest(bridge.url, '/console/deliveries/replay', {
        cookie,
        form: { ...form, destination: 'crm' },
      });
      expect(refused.status).toBe(403);
      expect(refused.text).toContain('security token');
    }
    const noSession = await consoleRequest(bridge.url, '/console/channels/app/keys', {
      form: { _csrf: csrf },
    });
    expect(noSession.status).toBe(403);
    const keys = await bridge.admin('GET', '/api/v1/channels/app/keys');
    expect(keys.body.keys).toEqual([]);

    const allowed = await consoleRequest(bridge.url, '/console/deliveries/replay', {
      cookie,
      form: { _csrf: csrf, destination: 'crm' },
    });
    expect(allowed.status).toBe(302);
    expect(allowed.location).toBe('/console/deliveries?destination=crm&replayed=0');
    const notice = await consoleRequest(bridge.url, allowed.location!, { cookie });
    expect(notice.text).toContain('0 failed deliveries replayed.');
    // A link carrying other text there shows no notice at all (it was put in the page, escaped).
    const crafted = await consoleRequest(
      bridge.url,
      `/console/deliveries?replayed=${encodeURIComponent('Your session expired, call +1 555 0100 to')}`,
      { cookie },
    );
    expect(crafted.status).toBe(200);
    expect(crafted.text).not.toContain('call +1 555 0100');
  });

  it('escapes hostile names, messages and links, with a CSP that allows no inline script', async () => {
    const hostile = jivo('chat_finished.json', {
      chat_id: 777001,
      visitor: {
        name: '<script>alert("name")</script>',
        email: 'xss@example.org',
        phone: '+79001112233',
        number: '777',
      },
      chat: {
        messages: [
          { message: '<img src=x onerror=alert(1)>hello', timestamp: 1718610000, type: 'visitor' },
          { message: '"><svg onload=alert(2)>', timestamp: 1718610001, type: 'agent', agent_id: 55120 },
        ],
      },
    });
    const sent = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, hostile);
    expect(sent.status).toBe(200);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const search = await consoleRequest(bridge.url, '/console/contacts?q=xss%40example.org', { cookie });
    expect(search.text).toContain('&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;');
    const id = /href="\/console\/contacts\/(c_[0-9a-f]+)"/.exec(search.text)![1]!;
    const page = await consoleRequest(bridge.url, `/console/contacts/${id}`, { cookie });
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('<script>alert');
    expect(page.text).not.toContain('<img src=x');
    expect(page.text).not.toContain('<svg');
    expect(page.text).toContain('&lt;img src=x onerror=alert(1)&gt;hello');
    // The one script is ours, from the bridge; none is inline.
    expect(page.text.match(/<script/g)).toHaveLength(1);
    expect(page.text).toContain('<script src="/console/assets/console.js" defer></script>');
    const csp = page.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
  });

  it('names its icon in each page, so a browser asks the bridge for no /favicon.ico (a 404)', async () => {
    // Without an icon link Chromium fetched /favicon.ico for every page and logged "Failed to
    // load resource: 404" in the console: the first thing a newcomer with devtools open saw.
    expect((await fetch(`${bridge.url}/favicon.ico`)).status).toBe(404);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (const [path, session] of [
      ['/console/sign-in', ''],
      ['/console/contacts', cookie],
      ['/console/status', cookie],
    ] as const) {
      const page = await consoleRequest(bridge.url, path, { cookie: session });
      expect(page.status, path).toBe(200);
      const icon = /<link rel="icon" href="([^"]*)">/.exec(page.text);
      expect(icon, path).not.toBeNull();
      // Inline (data:, allowed by the CSP's img-src), never a request to the bridge.
      expect(icon![1]).toMatch(/^data:/);
      expect(page.headers.get('content-security-policy')).toContain("img-src 'self' data:");
    }
  });

  it('splits names into folded words for the name search', async () => {
    const { nameWords } = await import('../src/contacts/engine.js');
    expect(nameWords("Анна-Мария O'Neil")).toEqual(['анна', 'мария', 'o', 'neil']);
    expect(nameWords('  José  ÁLVAREZ ')).toEqual(['jose', 'alvarez']);
    expect(nameWords('<script>')).toEqual(['script']);
  });

  it('keeps agent link tokens out of the request log', async () => {
    const { redactPath } = await import('../src/http/guard.js');
    expect(redactPath('/console/c/c_0123.1790000000.abcDEF_-')).toBe('/console/c/***');
    expect(redactPath('/Console//C/c_0123.1790000000.abcDEF_-')).toBe('/Console//C/***');
    expect(redactPath('/console/contacts/c_0123')).toBe('/console/contacts/c_0123');
  });

  it('links only http(s) URLs', async () => {
    const { safeHref } = await import('../src/console/html.js');
    expect(safeHref('javascript:alert(1)')).toBeUndefined();
    expect(safeHref(' JavaScript:alert(1)')).toBeUndefined();
    expect(safeHref('data:text/html,<script>')).toBeUndefined();
    expect(safeHref('//evil.example/x')).toBeUndefined();
    expect(safeHref('/console/contacts')).toBeUndefined();
    expect(safeHref('https://crm.example/c/1?a="b"')).toBe('https://crm.example/c/1?a=%22b%22');
  });

  it('finds a contact by phone in another format, by name and by contact id', async () => {
    const sent = await bridge.post(
      `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      jivo('chat_finished.json', { chat_id: 777002 }),
    );
    expect(sent.status).toBe(200);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (const q of [
      '8 (905) 777-01-23',
      '+7 905 777 0123',
      'svetlana orlova',
      'ORLOVA',
      // As pasted from a Russian document or CRM card: en dashes, an extension, fullwidth digits.
      '+7 (905) 777–01–23',
      '8 905 777-01-23 доб. 12',
      '+7 905 777 01 23 ext. 5',
      '８ ９０５ ７７７ ０１ ２３',
    ]) {
      const page = await consoleRequest(bridge.url, `/console/contacts?q=${encodeURIComponent(q)}`, {
        cookie,
      });
      expect(page.text, q).toContain('Svetlana Orlova');
      expect(page.text, q).toMatch(/<h2>1 contact<\/h2>/);
    }
    // A contact made now has a c_<digits> id; the search by id finds it.
    const id = /href="\/console\/contacts\/(c_[0-9]+)"/.exec(
      (await consoleRequest(bridge.url, '/console/contacts?q=orlova', { cookie })).text,
    )![1]!;
    const byId = await consoleRequest(bridge.url, `/console/contacts?q=${id}`, { cookie });
    expect(byId.text).toContain('Svetlana Orlova');
    const none = await consoleRequest(bridge.url, '/console/contacts?q=nobody%20here', { cookie });
    expect(none.text).toContain('No contact matches');
  });

  it('does not send a contact without a CRM link to reply.crmLink, which never makes one', async () => {
    // The channel here has reply.crmLink set: it shapes JivoChat's answer, not the contact.
    const sent = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, {
      event_name: 'chat_accepted',
      chat_id: 777090,
      widget_id: 'w1',
      visitor: { name: 'Nina Link', email: 'nina@example.org', number: '9901' },
      agent: { id: '1', name: 'Oleg', email: 'oleg@shop.example' },
    });
    expect(sent.status).toBe(200);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const id = /href="\/console\/contacts\/(c_[0-9]+)"/.exec(
      (await consoleRequest(bridge.url, '/console/contacts?q=nina%40example.org', { cookie })).text,
    )![1]!;
    const page = await consoleRequest(bridge.url, `/console/contacts/${id}`, { cookie });
    expect(page.text).toContain('No CRM link yet');
    expect(page.text).not.toContain('<code>reply.crmLink</code>');
    expect(page.text).toContain('CRM destination');
  });

  it("counts a channel's finished conversations, and says so while a chat has only started", async () => {
    // A chat_accepted alone read "Web site: 0 conversations": the count is of conversations that
    // finished (conversation.finished, once per chat however often a vendor resends it), which a
    // started chat is not yet. The card says what it counts, and the contact's events until then.
    const visitor = { name: 'Olga Count', email: 'olga.count@example.org', number: '9902' };
    const accepted = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, {
      event_name: 'chat_accepted',
      chat_id: 777091,
      widget_id: 'w1',
      visitor,
      agent: { id: '1', name: 'Oleg', email: 'oleg@shop.example' },
    });
    expect(accepted.status).toBe(200);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const id = /href="\/console\/contacts\/(c_[0-9]+)"/.exec(
      (await consoleRequest(bridge.url, '/console/contacts?q=olga.count%40example.org', { cookie })).text,
    )![1]!;
    const channelLine = async () => {
      const page = await consoleRequest(bridge.url, `/console/contacts/${id}`, { cookie });
      return /<span class="tag">JivoChat<\/span> Web site: ([^<]*)</.exec(page.text)?.[1];
    };
    expect(await channelLine()).toBe('no finished conversation yet (1 event), last ');
    const finished = jivo('chat_finished.json', { chat_id: 777091, visitor });
    expect((await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished)).status).toBe(200);
    expect(await channelLine()).toBe('1 finished conversation, last ');
  });

  it('finds a contact by an id made before ids were digits (c_ + 20 hex, which may all be digits)', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    // Records as the engine wrote them then, under their ids as they were.
    const store = bridge.bridge.store;
    await store.set('rec:c_8cd87099e81c222c22b3', '{"c":"2025-06-01T10:00:00.000Z","n":[["Hexa Before",0]]}');
    await store.set(
      'rec:c_27182818284590452353',
      '{"c":"2025-06-01T10:00:00.000Z","n":[["Digit Before",0]]}',
    );
    for (const [id, name] of [
      ['c_8cd87099e81c222c22b3', 'Hexa Before'],
      ['c_27182818284590452353', 'Digit Before'],
    ]) {
      const byId = await consoleRequest(bridge.url, `/console/contacts?q=${id}`, { cookie });
      expect(byId.text, id).toContain(name);
      const page = await consoleRequest(bridge.url, `/console/contacts/${id}`, { cookie });
      expect(page.status, id).toBe(200);
      expect(page.text, id).toContain(name);
    }
  });

  it('unmerges a merged record from the contact page', async () => {
    // Two contacts (one known by e-mail, one by phone), then a chat that carries both: a merge.
    const visitors = [
      { name: 'Ivan Merge', email: 'ivan.one@example.org', number: '9001' },
      { name: 'Ivan M.', phone: '+7 999 000 11 22', number: '9002' },
      { name: 'Ivan Merge', email: 'ivan.one@example.org', phone: '8 999 000-11-22', number: '9003' },
    ];
    for (const [index, visitor] of visitors.entries()) {
      const sent = await bridge.post(
        `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        jivo('chat_finished.json', { chat_id: 777010 + index, visitor }),
      );
      expect(sent.status).toBe(200);
    }
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const found = (await bridge.admin('GET', '/api/v1/contacts?email=ivan.one@example.org')).body.contacts;
    expect(found).toHaveLength(1);
    const contact = found[0];
    expect(contact.merges).toHaveLength(1);
    const page = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    expect(page.text).toContain('Unmerge');
    const recordId = fieldOf(page.text, 'recordId')!;
    expect(recordId).toBe(contact.merges[0].recordId);
    // The button names its record (one "Unmerge" per merged record otherwise all sound alike).
    expect(page.text).toContain(`aria-label="Unmerge record ${recordId}">Unmerge</button>`);

    const refused = await consoleRequest(bridge.url, `/console/contacts/${contact.id}/unmerge`, {
      cookie,
      form: { recordId },
    });
    expect(refused.status).toBe(403);
    const done = await consoleRequest(bridge.url, `/console/contacts/${contact.id}/unmerge`, {
      cookie,
      form: { _csrf: csrf, recordId },
    });
    expect(done.status).toBe(302);
    expect(done.location).toMatch(
      new RegExp(`^/console/contacts/${contact.id}\\?notice=unmerged&split=c_\\w+$`),
    );
    const after = (await bridge.admin('GET', `/api/v1/contacts/${contact.id}`)).body;
    expect(after.merges).toEqual([]);
    expect(after.records).toEqual([contact.id]);
  });

  it('asks before an unmerge and, after it, links the contact it split off', async () => {
    const visitors = [
      { name: 'Olga Split', email: 'olga.split@example.org', number: '9101' },
      { name: 'Olga S.', phone: '+7 999 000 33 44', number: '9102' },
      { name: 'Olga Split', email: 'olga.split@example.org', phone: '8 999 000-33-44', number: '9103' },
    ];
    for (const [index, visitor] of visitors.entries()) {
      const sent = await bridge.post(
        `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        jivo('chat_finished.json', { chat_id: 777110 + index, visitor }),
      );
      expect(sent.status).toBe(200);
    }
    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const contact = (await bridge.admin('GET', '/api/v1/contacts?email=olga.split@example.org')).body
      .contacts[0];
    const page = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    // The unmerge form asks first (console.js reads data-confirm), like every other lasting action.
    expect(page.text).toMatch(
      /<form method="post" action="[^"]*\/unmerge" class="inline" data-confirm="[^"]+"/,
    );
    const recordId = fieldOf(page.text, 'recordId')!;
    const done = await consoleRequest(bridge.url, `/console/contacts/${contact.id}/unmerge`, {
      cookie,
      form: { _csrf: csrf, recordId },
    });
    expect(done.status).toBe(302);
    // The record it split off is a contact of its own now.
    const split = (await bridge.admin('GET', `/api/v1/contacts/${recordId}`)).body;
    expect(split.id).not.toBe(contact.id);
    const after = await consoleRequest(bridge.url, done.location!, { cookie });
    expect(after.text).toContain('Unmerged');
    expect(after.text).toContain(`href="/console/contacts/${split.id}"`);
    // Every timeline entry shows time, vendor, channel, type and summary: the unmerge's entry has
    // no channel of its own, and says so instead of leaving a gap.
    const meta = /<div class="meta">(.*?)<span class="type">contact\.unmerged<\/span><\/div>/.exec(
      after.text,
    )![1]!;
    expect(meta).toMatch(
      /<time datetime="[^"]+">.*<\/time> · <span class="tag">[^<]+<\/span> [^<\s][^<]* · $/,
    );
    // It was merged once: the page must not claim it never was.
    expect(after.text).not.toContain('never merged');
    // A crafted split id in the address is not turned into a link.
    const crafted = await consoleRequest(
      bridge.url,
      `/console/contacts/${contact.id}?notice=unmerged&split=c_00000000000000000000`,
      { cookie },
    );
    expect(crafted.status).toBe(200);
    expect(crafted.text).not.toContain('href="/console/contacts/c_00000000000000000000"');
  });

  it('shows no notice for a name that is not one of its own (an inherited key such as constructor)', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (const notice of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const page = await consoleRequest(bridge.url, `/console/deliveries?notice=${notice}`, { cookie });
      expect(page.status).toBe(200);
      expect(page.text).not.toContain('function Object()');
      expect(page.text).not.toContain('[native code]');
      expect(page.text).not.toContain('class="notice"');
    }
  });

  it('asks before replaying every failed delivery of a destination', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/deliveries', { cookie });
    expect(page.text).toMatch(
      /<form method="post" action="\/console\/deliveries\/replay" class="row" data-confirm="[^"]+">/,
    );
  });

  it('replays all failed deliveries only of a destination the user chose, and names it in the question', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const replaySelect = (text: string) =>
      /<select id="replay-destination"[^>]*>.*?<\/select>/s.exec(text)![0];
    // Unfiltered: nothing is chosen for the user (the first destination used to be), and the
    // browser does not send the form until one is.
    const unfiltered = replaySelect(
      (await consoleRequest(bridge.url, '/console/deliveries', { cookie })).text,
    );
    expect(unfiltered).toContain('<select id="replay-destination" name="destination" required>');
    expect(unfiltered).toContain('<option value="" selected disabled>Choose a destination</option>');
    expect(unfiltered).toContain('<option value="crm">crm</option>');
    // Filtered by a destination: that one is chosen, and there is no empty choice.
    const filtered = replaySelect(
      (await consoleRequest(bridge.url, '/console/deliveries?destination=crm', { cookie })).text,
    );
    expect(filtered).toContain('<option value="crm" selected>crm</option>');
    expect(filtered).not.toContain('Choose a destination');
    // The question names the destination (console.js puts the chosen one in for {destination}).
    const page = await consoleRequest(bridge.url, '/console/deliveries', { cookie });
    expect(page.text).toContain('data-confirm="Replay every failed delivery of {destination}?');
  });

  it('gives each transcript message the direction of its own text (Arabic, Hebrew)', async () => {
    const sent = await bridge.post(
      `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      jivo('chat_finished.json', {
        chat_id: 777301,
        visitor: { name: 'Rtl Visitor', email: 'rtl.visitor@example.org', number: '7301' },
        chat: {
          messages: [
            { message: 'مرحبا، أين طلبي؟', timestamp: 1718610000, type: 'visitor' },
            { message: 'Hello!', timestamp: 1718610030, type: 'agent', agent_id: 55120 },
          ],
        },
      }),
    );
    expect(sent.status).toBe(200);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const contact = (await bridge.admin('GET', '/api/v1/contacts?email=rtl.visitor@example.org')).body
      .contacts[0];
    const page = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    expect(page.text).toContain('<p dir="auto">مرحبا، أين طلبي؟</p>');
    expect(page.text).toContain('<p dir="auto">Hello!</p>');
  });

  it('says how many more e-mails and phones a search result card has than it shows', async () => {
    const emails = ['more.one@example.org', 'more.two@example.org', 'more.three@example.org'];
    const phones = ['+79051110001', '+79051110002', '+79051110003', '+79051110004'];
    for (let n = 0; n < 4; n += 1) {
      const visitor = {
        name: 'Maria Many',
        number: 9501,
        ...(emails[n] ? { email: emails[n] } : {}),
        phone: phones[n],
      };
      const sent = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, {
        ...jivo('client_updated.json'),
        client_id: '9501',
        visitor,
      });
      expect(sent.status).toBe(200);
    }
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const contact = (await bridge.admin('GET', '/api/v1/contacts?email=more.one@example.org')).body
      .contacts[0];
    expect(contact.emails).toHaveLength(3);
    expect(contact.phones).toHaveLength(4);
    const page = await consoleRequest(bridge.url, '/console/contacts?q=more.one%40example.org', { cookie });
    const card = /<li class="card">[\s\S]*?<\/li>/.exec(page.text)![0];
    expect(card).toContain(
      `${contact.emails[0]} · ${contact.emails[1]} · +1 more e-mail · ${contact.phones[0]} · ${contact.phones[1]} · +2 more phones`,
    );
    // Nothing is added when the card shows them all.
    const one = await consoleRequest(bridge.url, '/console/contacts?q=xss%40example.org', { cookie });
    expect(one.text).not.toContain(' more e-mail');
    expect(one.text).not.toContain(' more phone');
  });

  it('shows the start of a very long attribute value, and all of it behind a toggle', async () => {
    // The engine keeps attribute values up to limits.fieldLength (2000); JivoChat cuts its own at
    // 300, so the observation is made here, as an adapter with longer values would send it.
    // Cut after 200 characters as a reader counts them: the family emoji (7 UTF-16 units) and the
    // é (e + combining accent) are one each, never split.
    const long = `${'👨‍👩‍👧'.repeat(3)}e\u0301${'Delivery note: '.repeat(20)}${'x'.repeat(300)} end-of-note`;
    const characters = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(long)].map(
      (part) => part.segment,
    );
    expect(characters.length).toBeGreaterThan(600);
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'site',
      vendor: 'jivochat',
      at: '2026-06-01T10:00:00.000Z',
      idempotencyKey: 'long-attribute',
      identifiers: [{ kind: 'email', value: 'lena.long@example.org' }],
      attributes: { note: { value: long, label: 'Note' }, plan: { value: 'gold', label: 'Plan' } },
    });
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    const attributes = /<h2>Attributes<\/h2>[\s\S]*?<\/section>/.exec(page.text)![0];
    expect(attributes).toContain(
      `<details class="clamp"><summary><bdi class="preview">${characters.slice(0, 200).join('')}…</bdi> <span class="when-closed">Show all ${characters.length} characters</span>`,
    );
    // All of it once, inside the <details>; and no script of its own (the CSP allows none inline).
    expect(attributes.split(long)).toHaveLength(2);
    expect(attributes).toMatch(/<\/summary><bdi>[^<]*end-of-note<\/bdi><\/details>/);
    expect(page.text.match(/<script/g)).toHaveLength(1);
    // A short value stays as it was.
    expect(attributes).toContain('<dt>Plan</dt><dd><bdi>gold</bdi> <span class="muted small">');
  });

  it('marks transcript times to be shown with their seconds', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const contact = (await bridge.admin('GET', '/api/v1/contacts?email=xss@example.org')).body.contacts[0];
    const page = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    const transcript = /<ol class="transcript">[\s\S]*?<\/ol>/.exec(page.text)![0];
    expect(transcript).toContain('<time datetime="2024-06-17T07:40:00.000Z" data-seconds>');
    expect(transcript).toContain('<time datetime="2024-06-17T07:40:01.000Z" data-seconds>');
    // Other times keep minutes (the entry's own line).
    expect(page.text).toMatch(/<div class="meta"><time datetime="[^"]+">/);
  });

  it('stops the search field at the length the search takes, instead of an error page', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/contacts', { cookie });
    expect(page.text).toMatch(/<input id="q" name="q" type="search" value="" maxlength="200"/);
    const longest = await consoleRequest(bridge.url, `/console/contacts?q=${'a'.repeat(200)}`, { cookie });
    expect(longest.status).toBe(200);
  });

  it('shows the start of a poll’s backfill window as a time in the browser’s zone, like every other time', async () => {
    const { channelsPage } = await import('../src/console/ops.js');
    const since = '2026-05-31T10:00:00.000Z';
    const page = channelsPage({
      csrf: 'x'.repeat(43),
      channels: [
        {
          id: 'cv',
          name: 'Chatvisor',
          vendor: 'chatvisor',
          vendorName: 'Chatvisor',
          intakeUrl: null,
          lastTraffic: null,
          jobs: [],
          polling: {
            first: {
              baseline: true,
              startedAt: '2026-06-01T10:00:00.000Z',
              backfill: { since, conversations: 2, messages: 5, olderThanWindow: 1, unknownAge: 0 },
            },
            recent: [],
          },
        },
      ],
    });
    expect(page).toContain(`(since <time datetime="${since}">2026-05-31 10:00:00 UTC</time>)`);
  });

  it("names the time zone a schedule is read in: '0 9 * * *' under TZ=Europe/Moscow is 09:00 Moscow time, not UTC", async () => {
    const { channelsPage, statusPage } = await import('../src/console/ops.js');
    const before = process.env.TZ;
    process.env.TZ = 'Europe/Moscow'; // Node reads TZ again when it is set
    try {
      const job = { name: 'agentSync', schedule: '0 9 * * *', runs: {} };
      const channels = channelsPage({
        csrf: 'x'.repeat(43),
        channels: [
          {
            id: 'cv',
            name: 'Chatvisor',
            vendor: 'chatvisor',
            vendorName: 'Chatvisor',
            intakeUrl: null,
            lastTraffic: null,
            jobs: [job],
          },
        ],
      });
      const status = statusPage({
        csrf: 'x'.repeat(43),
        status: {
          role: 'all',
          store: { kind: 'memory', ok: true },
          crm: [],
          outbox: 0,
          deferred: null,
          destinations: [],
          schedules: [{ channelId: 'cv', job: job.name, schedule: job.schedule, runs: {} }],
        },
      });
      for (const page of [channels, status])
        expect(page).toContain('<span class="mono">0 9 * * *</span> (Europe/Moscow time)');
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });

  it('groups identities per CRM, so ids from two CRMs are told apart', async () => {
    const { contactSection } = await import('../src/console/pages.js');
    const at = '2026-06-01T10:00:00.000Z';
    const section = contactSection({
      contact: {
        id: 'c_1234567890',
        name: 'Two CRMs',
        names: ['Two CRMs'],
        emails: [],
        phones: [],
        identities: [
          { kind: 'crm', value: '111', channelId: 'amo-main' },
          { kind: 'crm', value: '222', channelId: 'bitrix-sales' },
        ],
        labels: [],
        attributes: {},
        responsibleAgent: null,
        crmLink: null,
        channels: [],
        records: ['c_1234567890'],
        merges: [],
        createdAt: at,
        updatedAt: at,
      },
      channelName: (id) => id,
      vendorName: (vendor) => vendor,
    }).value;
    const group = (id: string) =>
      new RegExp(`<h3>[^<]*${id}[^<]*</h3><ul class="mono small"><li>crm: ([0-9]+)</li></ul>`);
    expect(group('amo-main').exec(section)?.[1]).toBe('111');
    expect(group('bitrix-sales').exec(section)?.[1]).toBe('222');
  });

  it('says when the deliveries list goes on past its page, and links the next one', async () => {
    const { deliveriesPage } = await import('../src/console/pages.js');
    const at = '2026-06-01T10:00:00.000Z';
    const item = (n: number) => ({
      id: `dlv_${String(n).padStart(22, '0')}`,
      destination: 'crm',
      eventId: `evt_${n}`,
      eventType: 'conversation.finished',
      contactId: null,
      state: 'pending' as const,
      attempts: 0,
      replays: 0,
      createdAt: at,
      updatedAt: at,
      nextAttemptAt: null,
      deliveredAt: null,
      failedAt: null,
      lastStatus: null,
      lastError: null,
    });
    // The rest is a page away now (the list's nextCursor), not out of reach.
    const page = (count: number, more: boolean) =>
      deliveriesPage({
        csrf: 'x'.repeat(43),
        destinations: ['crm'],
        deliveries: Array.from({ length: count }, (_, n) => item(n)),
        ...(more ? { nextHref: '/console/deliveries?before=abc' } : {}),
      });
    expect(page(100, true)).toMatch(/there are more on the next page/i);
    expect(page(100, true)).toContain(
      '<a class="button" href="/console/deliveries?before=abc">Next deliveries</a>',
    );
    expect(page(100, false)).not.toMatch(/next page|Next deliveries/i);
  });

  it('pages the timeline both ways: older entries, and back to the newest from an older page', async () => {
    const visitor = { name: 'Pavel Pages', email: 'pavel.pages@example.org', number: '9201' };
    for (let n = 0; n < 14; n += 1) {
      const sent = await bridge.post(
        `/webhooks/jivochat/site/${JIVO_TOKEN}`,
        jivo('chat_finished.json', { chat_id: 777200 + n, visitor }),
      );
      expect(sent.status).toBe(200);
    }
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const contact = (await bridge.admin('GET', '/api/v1/contacts?email=pavel.pages@example.org')).body
      .contacts[0];
    const first = await consoleRequest(bridge.url, `/console/contacts/${contact.id}`, { cookie });
    const older = /<a class="button" href="([^"]+)">Older entries<\/a>/.exec(first.text)?.[1];
    expect(older).toMatch(new RegExp(`^/console/contacts/${contact.id}\\?before=`));
    expect(first.text).not.toContain('Newest entries');
    const second = await consoleRequest(bridge.url, older!.replaceAll('&amp;', '&'), { cookie });
    expect(second.status).toBe(200);
    expect(second.text).toContain(`href="/console/contacts/${contact.id}#timeline">Newest entries</a>`);
    // A cursor edited by hand: said the console's way, not the timeline API's "invalid cursor".
    const edited = await consoleRequest(bridge.url, `/console/contacts/${contact.id}?before=abc`, { cookie });
    expect(edited.status).toBe(400);
    expect(edited.text).toContain('The “before” value in this address is not one the page takes.');
    expect(edited.text).not.toMatch(/invalid cursor|this API returned/);
  });

  it('keeps the list’s filters from a delivery back to the list, also after its replay', async () => {
    const { deliveriesPage, deliveryPage } = await import('../src/console/pages.js');
    const at = '2026-06-01T10:00:00.000Z';
    const id = `dlv_${'1'.repeat(22)}`;
    const summary = {
      id,
      destination: 'crm',
      eventId: 'evt_1',
      eventType: 'conversation.finished',
      contactId: null,
      state: 'failed' as const,
      attempts: 1,
      replays: 0,
      createdAt: at,
      updatedAt: at,
      nextAttemptAt: null,
      deliveredAt: null,
      failedAt: at,
      lastStatus: 500,
      lastError: { status: 500, message: 'down', at },
    };
    const list = deliveriesPage({
      csrf: 'x'.repeat(43),
      state: 'failed',
      destination: 'crm',
      destinations: ['crm'],
      deliveries: [summary],
    });
    expect(list).toContain(`href="/console/deliveries/${id}?state=failed&amp;destination=crm">${id}</a>`);
    const detail = { ...summary, body: {}, history: [{ at, status: 500, error: 'down', cycle: 0 }] };
    const opened = deliveryPage({
      csrf: 'x'.repeat(43),
      delivery: detail,
      list: { state: 'failed', destination: 'crm' },
    });
    expect(opened).toContain(
      '<a href="/console/deliveries?state=failed&amp;destination=crm">← Failed deliveries of crm</a>',
    );
    // The replay form carries them, so its redirect (and the way back after it) keeps them.
    const form = /<form method="post" action="[^"]+\/replay">.*?<\/form>/s.exec(opened)![0];
    expect(form).toContain('<input type="hidden" name="state" value="failed">');
    expect(form).toContain('<input type="hidden" name="destination" value="crm">');
    // Opened from elsewhere (a link, the status page): back to that destination's deliveries.
    const direct = deliveryPage({ csrf: 'x'.repeat(43), delivery: detail });
    expect(direct).toContain('<a href="/console/deliveries?destination=crm">← Deliveries of crm</a>');
    expect(direct).not.toContain('name="state"');
  });

  it('asks before sending a delivered event again, not before replaying a failed one', async () => {
    const { deliveryPage } = await import('../src/console/pages.js');
    const at = '2026-06-01T10:00:00.000Z';
    const base = {
      id: `dlv_${'2'.repeat(22)}`,
      destination: 'crm',
      eventId: 'evt_2',
      eventType: 'conversation.finished',
      contactId: null,
      attempts: 1,
      replays: 0,
      createdAt: at,
      updatedAt: at,
      nextAttemptAt: null,
      body: {},
    };
    const delivered = deliveryPage({
      csrf: 'x'.repeat(43),
      delivery: {
        ...base,
        state: 'delivered',
        deliveredAt: at,
        failedAt: null,
        lastStatus: 204,
        lastError: null,
        history: [{ at, status: 204, error: null, cycle: 0 }],
      },
    });
    expect(/<form method="post" action="[^"]+\/replay"[^>]*>/.exec(delivered)![0]).toContain(
      'data-confirm="This event was delivered to crm. Send it again?',
    );
    const failed = deliveryPage({
      csrf: 'x'.repeat(43),
      delivery: {
        ...base,
        state: 'failed',
        deliveredAt: null,
        failedAt: at,
        lastStatus: 500,
        lastError: { status: 500, message: 'down', at },
        history: [{ at, status: 500, error: 'down', cycle: 0 }],
      },
    });
    expect(/<form method="post" action="[^"]+\/replay"[^>]*>/.exec(failed)![0]).not.toContain('data-confirm');
  });

  it('names the key each Revoke button revokes', async () => {
    const { channelsPage } = await import('../src/console/ops.js');
    const at = '2026-06-01T10:00:00.000Z';
    const page = channelsPage({
      csrf: 'x'.repeat(43),
      channels: [
        {
          id: 'app',
          name: 'Mobile app',
          vendor: 'livetex',
          vendorName: 'LiveTex',
          intakeUrl: null,
          lastTraffic: null,
          jobs: [],
          keys: [
            { kid: 'k_first', createdAt: at, revokedAt: null },
            { kid: 'k_second', createdAt: at, revokedAt: null },
          ],
        },
      ],
    });
    expect(page).toContain('aria-label="Revoke key k_first">Revoke</button>');
    expect(page).toContain('aria-label="Revoke key k_second">Revoke</button>');
  });

  it('labels each attempt cell (shown on a phone) as its column header says', async () => {
    const { deliveryPage } = await import('../src/console/pages.js');
    const at = '2026-06-01T10:00:00.000Z';
    const page = deliveryPage({
      csrf: 'x'.repeat(43),
      delivery: {
        id: `dlv_${'0'.repeat(22)}`,
        destination: 'crm',
        eventId: 'evt_1',
        eventType: 'conversation.finished',
        contactId: null,
        state: 'failed',
        attempts: 1,
        replays: 0,
        createdAt: at,
        updatedAt: at,
        nextAttemptAt: null,
        deliveredAt: null,
        failedAt: at,
        lastStatus: 500,
        lastError: { status: 500, message: 'down', at },
        body: {},
        history: [{ at, status: 500, error: 'down', cycle: 0 }],
      },
    });
    const table = /<table class="attempts">.*?<\/table>/s.exec(page)![0];
    const headers = [...table.matchAll(/<th scope="col">([^<]+)<\/th>/g)].map((match) => match[1]);
    const labels = [...table.matchAll(/<td data-label="([^"]+)">/g)].map((match) => match[1]);
    expect(labels).toEqual(headers);
  });

  it('never shows channel tokens or destination secrets', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    for (const path of ['/console/channels', '/console/status', '/console/deliveries', '/console/journal']) {
      const page = await consoleRequest(bridge.url, path, { cookie });
      expect(page.status, path).toBe(200);
      for (const secret of [JIVO_TOKEN, LIVETEX_TOKEN, DESTINATION_SECRET, TEST_ADMIN_TOKEN]) {
        expect(page.text, path).not.toContain(secret);
      }
    }
    const channels = await consoleRequest(bridge.url, '/console/channels', { cookie });
    expect(channels.text).toContain('/webhooks/jivochat/site/••••••••');
  });

  it('gives agents a signed link that opens one contact without a session, and refuses tampered or expired ones', async () => {
    const answer = await bridge.post(
      `/webhooks/jivochat/site/${JIVO_TOKEN}`,
      jivo('chat_accepted.json', { chat_id: 777003 }),
    );
    expect(answer.status).toBe(200);
    const link = answer.body.crm_link as string;
    expect(link.startsWith(`${PUBLIC_URL}/console/c/`)).toBe(true);
    const path = link.slice(PUBLIC_URL.length);

    const page = await consoleRequest(bridge.url, path);
    expect(page.status).toBe(200);
    expect(page.text).toContain('Svetlana Orlova');
    expect(page.text).toContain('Read-only view for agents');
    // One contact and nothing else: no navigation, no other console page, and no form but the
    // timeline filter, a GET back to this same link (nothing that changes anything).
    expect(page.text).not.toContain('/console/deliveries');
    const forms = [...page.text.matchAll(/<form[^>]*>/g)].map((match) => match[0]);
    expect(forms).toEqual([expect.stringContaining(`method="get" action="${path}#timeline"`)]);
    expect(page.text).not.toContain('method="post"');

    const token = path.slice('/console/c/'.length);
    const [contactId, expires, mac] = token.split('.') as [string, string, string];
    const tampered = [
      `${contactId.slice(0, -1)}${contactId.endsWith('a') ? 'b' : 'a'}.${expires}.${mac}`,
      `${contactId}.${Number(expires) + 3600}.${mac}`,
      `${contactId}.${expires}.${mac.slice(0, -2)}AA`,
      `${contactId}.${expires}`,
      'nonsense',
    ];
    for (const bad of tampered) {
      const refused = await consoleRequest(bridge.url, `/console/c/${bad}`);
      expect(refused.status, bad).toBe(403);
      expect(refused.text).not.toContain('Svetlana');
      // An agent has no admin sign-in: the page must not send them to one.
      expect(refused.text).not.toMatch(/sign in/i);
      expect(refused.text).not.toContain('/console/sign-in');
    }
    // A link signed with another key is refused too.
    const forged = createAgentLinks({
      masterKey: Buffer.alloc(32, 8),
      ttlMs: 3_600_000,
      publicUrl: undefined,
      now: () => new Date(clock),
    }).path(contactId);
    expect((await consoleRequest(bridge.url, forged)).status).toBe(403);

    clock += 3_600_000 + 1000; // past console.linkTtl (1h)
    const expired = await consoleRequest(bridge.url, path);
    expect(expired.status).toBe(403);
    expect(expired.text).toContain('expired');
  });

  it('puts Secure on the session cookie when the public URL is https', async () => {
    const secure = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 2000, publicUrl: 'https://bridge.example' },
      },
    });
    try {
      // The Secure cookie is set, but an http client would not send it back: read the header only.
      const form = await consoleRequest(secure.url, '/console/sign-in');
      const pre = cookieOf(form.headers, 'chatbridge_console_pre')!;
      const answer = await consoleRequest(secure.url, '/console/sign-in', {
        cookie: pre,
        form: { _pre: fieldOf(form.text, '_pre')!, token: TEST_ADMIN_TOKEN, next: '/console/status' },
      });
      expect(answer.status).toBe(302);
      expect(answer.location).toBe('/console/status');
      const line = answer.headers.getSetCookie().find((item) => item.startsWith('chatbridge_console='))!;
      expect(line).toMatch(/; secure/i);
      expect(line).toMatch(/httponly/i);
    } finally {
      await secure.close();
    }
  });

  it('shows intake URLs on the address asked for when there is no public URL', async () => {
    const plain = await startTestBridge({
      store: 'memory',
      start: false,
      config: { channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }] },
    });
    try {
      const { cookie } = await signIn(plain.url, TEST_ADMIN_TOKEN);
      const page = await consoleRequest(plain.url, '/console/channels', {
        cookie,
        headers: { origin: 'http://evil.example' },
      });
      expect(page.status).toBe(200);
      expect(page.text).toContain(`${plain.url}/webhooks/jivochat/site/`);
      expect(page.text).not.toContain('evil.example');
      // A plain GET carries no Origin header at all: this was a 500.
      expect((await consoleRequest(plain.url, '/console/channels', { cookie })).status).toBe(200);
    } finally {
      await plain.close();
    }
  });

  it('keeps sessions in the store, so another instance on the same Redis knows them', async () => {
    const first = await startTestBridge({ store: 'redis', start: false });
    const second = await startTestBridge({ store: 'redis', start: false, keyPrefix: first.keyPrefix });
    try {
      const { cookie } = await signIn(first.url, TEST_ADMIN_TOKEN);
      const page = await consoleRequest(second.url, '/console/status', { cookie });
      expect(page.status).toBe(200);
      expect(page.text).toContain('Redis');
    } finally {
      await second.close();
      await first.close();
    }
  });
});

describe('web console status: the deferred intake', () => {
  let bridge: TestBridge;
  let clock = Date.parse('2026-06-01T10:00:00Z');
  beforeAll(async () => {
    // Not started: no worker drains, so what is appended waits, as behind a stopped worker.
    bridge = await startTestBridge({
      store: 'memory',
      now: () => new Date(clock),
      start: false,
      config: {
        secrets: { masterKey: MASTER_KEY.toString('base64') },
        intake: { ackAfterAppend: true },
        channels: [{ id: 'site', vendor: 'jivochat', token: JIVO_TOKEN }],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('shows how many events wait for the worker and how long the oldest has waited', async () => {
    // The status page showed the outbox but not this list: a stopped worker (every acknowledged
    // event waiting, contacts not updated) looked healthy there.
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const empty = await consoleRequest(bridge.url, '/console/status', { cookie });
    expect(empty.text).toContain('Deferred intake (events answered, not yet recorded): 0</p>');
    for (const n of [1, 2]) {
      const finished = jivo('chat_finished.json', {
        chat_id: 7_300_000 + n,
        visitor: { name: `Waiting ${n}`, email: `waiting-${n}@example.org` },
      });
      const answer = await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, finished);
      expect(answer.status).toBe(200);
      clock += 60_000;
    }
    clock += 10 * 60_000;
    const page = await consoleRequest(bridge.url, '/console/status', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain(
      'Deferred intake (events answered, not yet recorded): 2 · oldest waiting 12 min',
    );
  });
});
