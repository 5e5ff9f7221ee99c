import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from '../support/harness.js';

/**
 * Hostile vendor values in a real headless Chromium: markup and script in every field a vendor
 * fills (names, messages, attributes, tags, topic, agent, page URL), bidi overrides, and values
 * far longer than a screen, sent as a JivoChat visitor and shown on the search, the contact page
 * and the expanded transcript. The console must render all of it as text: no script runs, no
 * element is injected, the browser logs no error (a CSP refusal of injected inline script would
 * be one), and no page scrolls sideways at 1280 px or 390 px.
 */
const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(import.meta.dirname, '..', '..');
const ARTIFACTS = join(import.meta.dirname, 'artifacts', 'console');
const JIVO_TOKEN = 'hostile-site-token-0123456789';
const RLO = '\u202E';
const PDF = '\u202C';
const LONG = 'W'.repeat(3_000);
const XSS = (n: number) => `<script>window.__xss=${n}</script><img src=x onerror="window.__xss=${n + 1}">`;
const NAME = `${XSS(1)}${RLO}evil.exe${PDF} Mallory ${'Q'.repeat(400)}`;
const MESSAGE_HTML = `${XSS(10)}<a href="javascript:window.__xss=12">click</a>`;
const MESSAGE_BIDI = `Invoice ${RLO}fdp.exe${PDF} attached`;

describe('hostile vendor values in the console, in a browser', () => {
  let bridge: TestBridge;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];
  const dialogs: string[] = [];

  async function noHorizontalScroll(target: Page, where: string) {
    // After a click the stylesheet may not have arrived yet: measure the styled page (console.browser.test.ts).
    await target.waitForLoadState('load');
    // Expressions, not functions: they run in the page, and this file is typed for Node (no DOM lib).
    const widths = await target.evaluate<{ scroll: number; view: number }>(
      '({ scroll: document.documentElement.scrollWidth, view: window.innerWidth })',
    );
    expect(widths.scroll, where).toBeLessThanOrEqual(widths.view);
  }

  async function nothingRan(where: string) {
    expect(await page.evaluate<unknown>('window.__xss'), where).toBeUndefined();
    expect(dialogs, where).toEqual([]);
    expect(await page.locator('main img, main svg, main iframe').count(), where).toBe(0);
    expect(await page.locator('a[href^="javascript:"]').count(), where).toBe(0);
    // The one script is the bridge's own.
    expect(await page.locator('script').count(), where).toBe(1);
    // (Written relative to the page, src/console/relative.ts: where the browser loads it from.)
    expect(await page.evaluate<string>("new URL(document.querySelector('script').src).pathname"), where).toBe(
      '/console/assets/console.js',
    );
    expect(problems, where).toEqual([]);
  }

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium is missing at ${CHROMIUM}: apt-get install chromium (.ci/run installs it)`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    bridge = await startTestBridge({
      store: 'memory',
      config: { channels: [{ id: 'site', vendor: 'jivochat', name: 'Web site', token: JIVO_TOKEN }] },
    });
    const jivo = JSON.parse(
      readFileSync(join(ROOT, 'adapters', 'jivochat', '__fixtures__', 'chat_finished.json'), 'utf8'),
    );
    jivo.chat_id = 880001;
    jivo.visitor = {
      name: NAME,
      email: 'mallory@evil.example',
      phone: '+79001234567',
      number: '880',
      description: `${XSS(20)}${LONG}`,
    };
    jivo.organization = { name: `${RLO}gro.live${PDF} ${XSS(30)}` };
    jivo.tags = [{ title: XSS(40) }, { title: `${RLO}reversed tag` }, { title: LONG }];
    jivo.topic = { topic_id: 1, title: `${XSS(50)}${LONG}` };
    jivo.agents = [{ id: '1', name: `${XSS(60)}${RLO}Agent`, email: 'agent@store.example' }];
    jivo.page = { url: `https://store.example/${'p'.repeat(2_000)}?q="><script>window.__xss=70</script>` };
    jivo.attributes = {
      '<b>key</b>': XSS(80),
      link: 'javascript:window.__xss=90',
      long: LONG,
      bidi: `${RLO}value reversed`,
    };
    jivo.chat = {
      messages: [
        { message: MESSAGE_HTML, timestamp: 1741950000, type: 'visitor' },
        { message: MESSAGE_BIDI, timestamp: 1741950010, type: 'visitor' },
        { message: LONG, timestamp: 1741950020, type: 'agent', agent_id: 1 },
        { message: `line one\n${'word '.repeat(400)}`, timestamp: 1741950030, type: 'visitor' },
      ],
    };
    expect((await bridge.post(`/webhooks/jivochat/site/${JIVO_TOKEN}`, jivo)).status).toBe(200);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
      ],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-GB' });
    // Nothing may leave loopback (an injected <img src=//evil> would be a request).
    await context.route('**/*', async (route) => {
      const host = new URL(route.request().url()).hostname;
      if (host === '127.0.0.1') await route.continue();
      else {
        problems.push(`request to ${route.request().url()}`);
        await route.abort();
      }
    });
    page = await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning')
        problems.push(`console: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await page.goto(`${bridge.url}/console/sign-in`);
    await page.getByLabel('Admin token').fill(TEST_ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Contacts' }).waitFor();
  });

  afterAll(async () => {
    await browser?.close();
    await bridge?.close();
  });

  it('shows the hostile contact in the search as text', async () => {
    await page.goto(`${bridge.url}/console/contacts?q=mallory%40evil.example`);
    const link = page.locator('main a[href*="console/contacts/c_"]').first();
    await link.waitFor();
    const text = (await link.textContent()) ?? '';
    expect(text).toContain('<script>window.__xss=1</script>');
    // Names lose their bidi overrides: the rest of the line is not turned around.
    expect(text).not.toContain(RLO);
    await nothingRan('search');
    await noHorizontalScroll(page, 'search at 1280 px');
    await page.setViewportSize({ width: 390, height: 844 });
    await noHorizontalScroll(page, 'search at 390 px');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('shows the contact, its attributes and its transcript as text, readable at 1280 px and 390 px', async () => {
    await page.goto(`${bridge.url}/console/contacts?q=mallory%40evil.example`);
    await page.locator('main a[href*="console/contacts/c_"]').first().click();
    const heading = page.locator('main h1');
    await heading.waitFor();
    expect(await heading.textContent()).toContain('<script>window.__xss=1</script>');
    expect(await heading.textContent()).not.toContain(RLO);
    const main = (await page.locator('main').textContent()) ?? '';
    for (const shown of [XSS(20), XSS(30), XSS(40), XSS(80), '<b>key</b>', 'javascript:window.__xss=90']) {
      expect(main, shown).toContain(shown);
    }
    // A bidi override in an attribute's value stays in the value: the bridge's own note after it
    // ("(Web site, <time>)") still reads left to right, its "W" left of its "e" (one word: the
    // line cannot wrap between them).
    for (const attribute of ['bidi', 'Agent', 'Organization']) {
      const note = await page.evaluate<{ text: string; w: number; e: number }>(`(() => {
        const dt = [...document.querySelectorAll('.attrs dt')].find((item) => item.textContent === ${JSON.stringify(attribute)});
        const note = dt.nextElementSibling.querySelector('span.muted').firstChild;
        const left = (at) => {
          const range = document.createRange();
          range.setStart(note, at);
          range.setEnd(note, at + 1);
          return range.getBoundingClientRect().left;
        };
        return { text: note.data, w: left(1), e: left(2) };
      })()`);
      expect(note.text, attribute).toMatch(/^\(Web site/);
      expect(note.w, attribute).toBeLessThan(note.e);
    }
    await page.locator('details summary', { hasText: 'Transcript' }).first().click();
    const messages = page.locator('ol.transcript > li > p');
    await expect.poll(() => messages.count()).toBe(4);
    expect(await messages.nth(0).textContent()).toBe(MESSAGE_HTML);
    // A bidi override in a message is its own paragraph's: it cannot reach the page's own text.
    expect(await messages.nth(1).textContent()).toBe(MESSAGE_BIDI);
    expect(await messages.nth(2).textContent()).toBe(LONG);
    await nothingRan('contact page');

    for (const viewport of [
      { width: 1280, height: 900 },
      { width: 390, height: 844 },
    ]) {
      await page.setViewportSize(viewport);
      await noHorizontalScroll(page, `contact page at ${viewport.width} px`);
      // The long message wraps inside the page instead of running off it.
      const box = await messages.nth(2).boundingBox();
      expect(box!.x + box!.width, `long message at ${viewport.width} px`).toBeLessThanOrEqual(viewport.width);
      await page.screenshot({ path: join(ARTIFACTS, `hostile-${viewport.width}.png`), fullPage: true });
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    await nothingRan('contact page, after resizing');
  });

  it('names the hostile contact on the Conflicts page, and in its Merge question, as text', async () => {
    // Mallory and a second contact: merged by a chat, split by staff, named together again.
    const { contacts } = bridge.bridge.context;
    const observe = (key: string, emails: string[], name?: string) =>
      contacts.observe({
        channelId: 'site',
        vendor: 'jivochat',
        at: new Date().toISOString(),
        idempotencyKey: `hostile-conflict-${key}`,
        identifiers: emails.map((value) => ({ kind: 'email', value, provenance: 'verified' as const })),
        ...(name ? { names: [name] } : {}),
      });
    const other = (await observe('1', ['other@evil.example'], `${XSS(100)}${RLO}Other`)).contact;
    const mallory = (await observe('2', ['mallory@evil.example', 'other@evil.example'])).contact;
    await contacts.unmerge(mallory.id, { recordId: other.id });
    await observe('3', ['mallory@evil.example', 'other@evil.example']);

    await page.goto(`${bridge.url}/console/conflicts`);
    const entry = page.locator('ol.timeline li.entry');
    expect(await entry.count()).toBe(1);
    const names = await entry.locator('a[href*="console/contacts/c_"] bdi').allTextContents();
    expect(names).toHaveLength(2);
    expect(names.some((name) => name.includes('<script>window.__xss=1</script>'))).toBe(true);
    expect(names.some((name) => name.includes('<script>window.__xss=100</script>'))).toBe(true);
    for (const name of names) expect(name).not.toContain(RLO);
    await nothingRan('conflicts');
    for (const viewport of [
      { width: 1280, height: 900 },
      { width: 390, height: 844 },
    ]) {
      await page.setViewportSize(viewport);
      await noHorizontalScroll(page, `conflicts at ${viewport.width} px`);
      await page.screenshot({
        path: join(ARTIFACTS, `hostile-conflicts-${viewport.width}.png`),
        fullPage: true,
      });
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    // The question names them as text too (dismissed: nothing is merged).
    await entry.getByRole('button', { name: /^Merge / }).click();
    await expect.poll(() => dialogs.length).toBe(1);
    expect(dialogs[0]).toContain('<script>window.__xss=');
    expect(dialogs[0]).toMatch(/\(c_\w+\) with .*\(c_\w+\)\?/s);
    dialogs.length = 0;
    expect(await entry.count()).toBe(1);
    await nothingRan('conflicts, after the question');
  });
});
