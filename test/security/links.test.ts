import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeLink } from '../../adapters/jivochat/codec.js';
import { configSchema } from '../../src/config/schema.js';
import { createContactEngine } from '../../src/contacts/engine.js';
import { createFactService } from '../../src/contacts/facts.js';
import { isHttpLink } from '../../src/contacts/links.js';
import { createAttributeSources } from '../../src/enrich/index.js';
import { createOutboxPublisher } from '../../src/events/outbox.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import { createHttpClient } from '../../src/net/http.js';
import { createMemoryStore } from '../../src/store/memory.js';

/** Issue 10 item 10: links given to agents are http(s) only; the rest is dropped and counted. */
describe('links for agents', () => {
  let crm: Server;
  let url: string;
  beforeAll(async () => {
    // An attribute source (a CRM) that answers with hostile links.
    crm = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          crmLink: 'javascript:alert(document.cookie)',
          attributes: [
            { key: 'site', label: 'Site', value: 'https://shop.example/u/1', type: 'url' },
            { key: 'evil', label: 'Profile', value: 'javascript:alert(1)', type: 'url' },
            { key: 'blob', label: 'Avatar', value: 'data:text/html;base64,PHNjcmlwdD4=', type: 'url' },
          ],
        }),
      );
    });
    await new Promise<void>((resolve) => crm.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(crm.address() as AddressInfo).port}/lookup`;
  });
  afterAll(() => new Promise<void>((resolve) => crm.close(() => resolve())));

  it('drops javascript:/data: links from attribute sources and vendors, and counts them', async () => {
    const metrics = new Metrics();
    const logger = createLogger('silent');
    const config = configSchema.parse({
      admin: { token: 'admin-token-0123456789' },
      attributeSources: [{ id: 'crm', url }],
    });
    const store = createMemoryStore();
    const contacts = createContactEngine({
      store,
      identity: config.identity,
      events: createOutboxPublisher(store, { enabled: false }),
      metrics,
      logger,
      now: () => new Date('2026-11-01T12:00:00Z'),
    });
    const observed = await contacts.observe({
      channelId: 'cobrowse',
      vendor: 'chatvisor',
      at: '2026-11-01T12:00:00Z',
      idempotencyKey: 'k1',
      identifiers: [{ kind: 'person', value: 'p-1' }],
      crmLink: 'javascript:alert(2)',
      attributes: { page: { value: 'data:text/html,<script>x</script>', type: 'url', label: 'Page' } },
    });
    expect(observed.contact.crmLink).toBeNull();

    const facts = createFactService({ channels: [], vendorNames: new Map(), logger, metrics });
    for (const source of createAttributeSources({ config, http: createHttpClient(), logger, metrics })) {
      facts.addSource(source);
    }
    const answer = await facts.forContact(observed.contact, { channelId: 'site', deadlineMs: 5000 });
    expect(answer.crmLink).toBeUndefined();
    const shown = JSON.stringify(answer);
    expect(shown).not.toMatch(/javascript:|data:/);
    expect(answer.facts.map((fact) => fact.key)).toContain('site');
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/chatbridge_unsafe_links_dropped_total\{where="crm_link"\} [1-9]/);
    expect(text).toMatch(/chatbridge_unsafe_links_dropped_total\{where="fact"\} [1-9]/);
  });
});

describe('isHttpLink', () => {
  it('keeps only what the JivoChat answer keeps: an absolute http(s) URL with "//"', () => {
    for (const kept of ['https://crm.example/c/1', 'HTTP://crm.example', '  https://crm.example/x  ']) {
      expect(isHttpLink(kept), kept).toBe(true);
      expect(safeLink(kept), kept).toBeDefined();
    }
    // `new URL` parses the first two as http(s)://example.com/; JivoChat's answer drops them.
    for (const dropped of [
      'http:example.com',
      'https:/example.com',
      'ftp://x',
      ' ',
      'javascript:alert(1)',
      7,
    ]) {
      expect(isHttpLink(dropped), String(dropped)).toBe(false);
    }
    expect(isHttpLink(`https://crm.example/${'a'.repeat(2048)}`)).toBe(false);
  });
});
