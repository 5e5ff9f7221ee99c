import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreBusyError, StoreUnavailableError } from '../../src/errors.js';
import { errorMiddleware } from '../../src/http/errors.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { allVendorChannels, rawRequest } from './support.js';

const [jivo, livetex, chatvisor] = allVendorChannels as unknown as [
  { token: string },
  { token: string },
  { token: string },
];

function deep(levels: number): string {
  return `${'['.repeat(levels)}${']'.repeat(levels)}`;
}

describe('HTTP hygiene (issue 10 items 8, 12, 15)', () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({ config: { channels: allVendorChannels } });
  });
  afterAll(() => bridge.close());

  it('item 8: refuses a 5,000-deep body on every vendor webhook with one 400, writing nothing', async () => {
    const fixture = JSON.parse(
      readFileSync(
        new URL('../../adapters/livetex/__fixtures__/dialog_closed.web.json', import.meta.url),
        'utf8',
      ),
    );
    const body = JSON.stringify(fixture).replace('"topic":', `"deep":${deep(5000)},"topic":`);
    const answers = await Promise.all([
      bridge.post(`/webhooks/livetex/app/${livetex.token}`, body),
      bridge.post(`/webhooks/chatvisor/cobrowse/${chatvisor.token}`, `{"customerId":"c1","x":${deep(5000)}}`),
      bridge.post(
        `/webhooks/jivochat/site/${jivo.token}`,
        `{"event_name":"chat_accepted","x":${deep(5000)}}`,
      ),
    ]);
    for (const answer of answers) {
      expect(answer.status).toBe(400);
      expect(answer.body.error.code).toBe('json_too_deep');
      expect(JSON.stringify(answer.body)).not.toContain('call stack');
    }
    const found = await bridge.admin('GET', '/api/v1/contacts?email=anna.smirnova@mail.example');
    expect(found.body.contacts).toEqual([]);
    const unmerge = await bridge.admin('POST', '/api/v1/contacts/c_x/unmerge', deep(5000));
    expect(unmerge.status).toBe(400);
    expect(unmerge.body.error.code).toBe('json_too_deep');
  });

  it('item 12: every public 404 is the same, known channel or not', async () => {
    const probes = [
      ['POST', `/webhooks/livetex/app/wrong-token-000000000`],
      ['POST', `/webhooks/livetex/nope/${livetex.token}`],
      ['POST', `/webhooks/livetex/app/${livetex.token}/extra`],
      ['GET', '/livetex/app/attributes'],
      ['GET', '/livetex/nope/attributes'],
      ['POST', '/livetex/app/unknown-path'],
      ['POST', '/jivochat/site/anything'],
      ['GET', '/nothing/here'],
    ] as const;
    const answers = await Promise.all(
      probes.map(([method, path]) =>
        rawRequest(bridge.url, method, path, method === 'POST' ? { body: '{}' } : {}),
      ),
    );
    expect(
      answers.map((answer, index) => `${probes[index]!.join(' ')} ${answer.status} ${answer.text}`),
    ).toEqual(probes.map((probe) => `${probe.join(' ')} 404 ${answers[0]!.text}`));
    // The lookup of a channel that is none (or another vendor's) answers as a known channel's
    // does to what none of its keys opens (test/security/lookup-channel-limits.test.ts).
    const lookups = await Promise.all(
      ['app', 'nope', 'site'].map((id) =>
        rawRequest(bridge.url, 'POST', `/livetex/${id}/attributes`, { body: '{}' }),
      ),
    );
    expect(lookups.map((answer) => `${answer.status} ${answer.text}`)).toEqual(
      lookups.map(() => `400 ${lookups[0]!.text}`),
    );
  });

  it('item 15: a 5xx from an upstream carries a code and request id, no internal message', async () => {
    // Chatvisor's apiUrl points at a closed port: the admin route fails upstream.
    const answer = await bridge.admin('POST', '/api/v1/channels/cobrowse/agent-chat-url', {
      customerId: 'cust-1',
    });
    expect(answer.status).toBeGreaterThanOrEqual(500);
    expect(Object.keys(answer.body.error).sort()).toEqual(['code', 'message', 'requestId']);
    expect(answer.body.error.requestId).toBe(answer.headers.get('x-request-id'));
    expect(answer.body.error.message).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|cust-1|fetch/i);
  });
});

describe('5xx bodies (issue 10 item 15)', () => {
  it('never carry the internal message, and 503s carry no identifiers', async () => {
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      ctx.state.requestId = 'req-1';
      await next();
    });
    app.use(errorMiddleware());
    app.use((ctx) => {
      if (ctx.path === '/busy') throw new StoreBusyError('contact c_secret123 of maria@example.org');
      if (ctx.path === '/down')
        throw new StoreUnavailableError(new Error('connect ECONNREFUSED 10.0.0.5:6379'));
      throw new Error('SELECT * FROM customers WHERE email = maria@example.org');
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (const path of ['/busy', '/down', '/crash']) {
        const answer = await rawRequest(base, 'GET', path);
        expect(answer.status).toBeGreaterThanOrEqual(500);
        const body = JSON.parse(answer.text);
        expect(body.error.requestId).toBe('req-1');
        expect(answer.text).not.toMatch(/c_secret123|maria|10\.0\.0\.5|SELECT/);
      }
    } finally {
      server.close();
    }
  });
});
