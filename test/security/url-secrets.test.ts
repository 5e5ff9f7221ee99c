import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attemptDelivery } from '../../src/delivery/attempt.js';
import {
  createHttpClient,
  headerSecrets,
  redactUrl,
  scrubSecrets,
  scrubUrlSecrets,
} from '../../src/net/http.js';
import { runDeliveriesCommand } from '../support/deliveries-cli.js';
import { ADMIN, allVendorChannels, startLoggedBridge } from './support.js';

/** Issue 10 item 3: credentials in destination URLs stay out of logs, errors, the API and the CLI. */
const SECRETS = [
  'hookuser',
  'hookpass',
  'tok3nInThePath99',
  'SIGVALUE1',
  'AUTHVALUE2',
  'CODEVALUE3',
  'FRAGSECRET',
];

describe('destination URL secrets', () => {
  it('redactUrl masks userinfo, every query value, token-like path segments and the fragment', () => {
    const url =
      'https://hookuser:hookpass@crm.example:8443/hooks/tok3nInThePath99/in?sig=SIGVALUE1&auth=AUTHVALUE2&code=CODEVALUE3#FRAGSECRET';
    const shown = redactUrl(url);
    for (const secret of SECRETS) expect(shown).not.toContain(secret);
    expect(shown).toContain('crm.example:8443/hooks/');
    expect(shown).toContain('sig=***');
    expect(scrubUrlSecrets(`bad: ${url} and /hooks/tok3nInThePath99?sig=SIGVALUE1`, url)).not.toMatch(
      /hookpass|tok3nInThePath99|SIGVALUE1/,
    );
  });

  describe('over HTTP', () => {
    let receiver: Server;
    let base: string;
    beforeAll(async () => {
      // A CRM that refuses and echoes what it was called with, as many error pages do.
      receiver = createServer((req, res) => {
        res.statusCode = 400;
        res.end(`no such hook: ${req.url} (auth ${req.headers.authorization ?? '-'})`);
      });
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      base = `127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    });
    afterAll(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

    it('keeps them out of the deliveries API, the CLI and the log', async () => {
      const secret = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
      const running = await startLoggedBridge({
        channels: [allVendorChannels[0]],
        destinations: [
          {
            id: 'echoing',
            url: `http://hookuser:hookpass@${base}/hooks/tok3nInThePath99/in?sig=SIGVALUE1&auth=AUTHVALUE2&code=CODEVALUE3#FRAGSECRET`,
            secret,
            retrySchedule: ['0s'],
          },
          {
            id: 'closed',
            url: 'http://hookuser:hookpass@127.0.0.1:9/hooks/tok3nInThePath99?sig=SIGVALUE1',
            secret,
            retrySchedule: ['0s'],
          },
        ],
      });
      try {
        const fixture = readFileSync(
          new URL('../../adapters/jivochat/__fixtures__/chat_accepted.json', import.meta.url),
          'utf8',
        );
        const hook = await fetch(`${running.url}/webhooks/jivochat/site/${allVendorChannels[0]!.token}`, {
          method: 'POST',
          body: fixture,
        });
        expect(hook.status).toBe(200);
        const headers = { authorization: `Bearer ${ADMIN}` };
        let failed: Array<{ id: string; destination: string; lastError: unknown }> = [];
        for (let round = 0; round < 200; round++) {
          const list = (await (
            await fetch(`${running.url}/api/v1/deliveries?state=failed`, { headers })
          ).json()) as {
            deliveries: typeof failed;
          };
          failed = list.deliveries;
          const destinations = new Set(failed.map((delivery) => delivery.destination));
          if (destinations.has('echoing') && destinations.has('closed')) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(new Set(failed.map((delivery) => delivery.destination))).toEqual(
          new Set(['echoing', 'closed']),
        );
        const shown: string[] = [JSON.stringify(failed)];
        for (const delivery of failed) {
          shown.push(
            await (await fetch(`${running.url}/api/v1/deliveries/${delivery.id}`, { headers })).text(),
          );
        }
        const cli: string[] = [];
        await runDeliveriesCommand(['list', '--state', 'failed'], running.bridge.delivery, {
          stdout: (line) => cli.push(line),
          stderr: (line) => cli.push(line),
        });
        expect(cli.join('\n')).toContain('echoing');
        shown.push(...cli);
        const text = shown.join('\n') + running.lines.join('');
        expect(text).toContain('no such hook'); // the receiver's answer is kept, scrubbed
        for (const value of SECRETS) expect(text).not.toContain(value);
      } finally {
        await running.close();
      }
    });
  });

  it("keeps a destination's configured header values out of the deliveries API, the CLI and the log when the receiver echoes them", async () => {
    // Receivers that refuse often echo the request (its headers) in their error page; the values
    // of `headers` are credentials (an API key, a Bearer token the CRM wants besides the signature).
    const echoing = createServer((req, res) => {
      res.statusCode = 401;
      res.end(
        `refused: ${JSON.stringify({ authorization: req.headers.authorization, key: req.headers['x-api-key'] })}; token ${String(req.headers.authorization).split(' ')[1]}`,
      );
    });
    await new Promise<void>((resolve) => echoing.listen(0, '127.0.0.1', resolve));
    const port = (echoing.address() as AddressInfo).port;
    const headerSecrets = ['HDRBEARER0123456789', 'APIKEYVALUE98765'];
    const running = await startLoggedBridge({
      channels: [allVendorChannels[0]],
      destinations: [
        {
          id: 'echoing-headers',
          url: `http://127.0.0.1:${port}/in`,
          secret: `whsec_${Buffer.alloc(32, 2).toString('base64')}`,
          headers: { Authorization: `Bearer ${headerSecrets[0]}`, 'X-Api-Key': headerSecrets[1] },
          retrySchedule: ['0s'],
        },
      ],
    });
    try {
      const fixture = readFileSync(
        new URL('../../adapters/jivochat/__fixtures__/chat_accepted.json', import.meta.url),
        'utf8',
      );
      const hook = await fetch(`${running.url}/webhooks/jivochat/site/${allVendorChannels[0]!.token}`, {
        method: 'POST',
        body: fixture,
      });
      expect(hook.status).toBe(200);
      const headers = { authorization: `Bearer ${ADMIN}` };
      let failed: Array<{ id: string; lastError: { message: string } | null }> = [];
      for (let round = 0; round < 200 && failed.length === 0; round++) {
        const list = (await (
          await fetch(`${running.url}/api/v1/deliveries?state=failed`, { headers })
        ).json()) as { deliveries: typeof failed };
        failed = list.deliveries;
        if (failed.length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(failed.length).toBeGreaterThan(0);
      const shown: string[] = [JSON.stringify(failed)];
      shown.push(
        await (await fetch(`${running.url}/api/v1/deliveries/${failed[0]!.id}`, { headers })).text(),
      );
      await runDeliveriesCommand(['list', '--state', 'failed'], running.bridge.delivery, {
        stdout: (line) => shown.push(line),
        stderr: (line) => shown.push(line),
      });
      const text = shown.join('\n') + running.lines.join('');
      expect(failed[0]!.lastError?.message).toContain('HTTP 401: refused:'); // the answer is kept, scrubbed
      for (const value of headerSecrets) expect(text).not.toContain(value);
    } finally {
      await running.close();
      await new Promise<void>((resolve) => echoing.close(() => resolve()));
    }
  });
});

describe('a redirect that quotes a header value', () => {
  it('is noted with its target, the value hidden (in the host and the path)', async () => {
    // redactUrl hides query values and token-like path segments; a header value that is a plain
    // word, quoted by the receiver in its Location, was kept in the note as it came.
    const receiver = createServer((req, res) => {
      const key = String(req.headers['x-api-key']);
      res.writeHead(302, { location: `https://${key}.receiver.example/moved/${key}/here` }).end();
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const headers = { 'X-Api-Key': 'opensesame' };
      const result = await attemptDelivery(
        createHttpClient(),
        {
          url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/in`,
          headers,
          body: '{}',
          timeoutMs: 10_000,
          secrets: headerSecrets(headers),
        },
        Date.now(),
      );
      expect(result.kind).toBe('permanent');
      const message = (result as { message: string }).message;
      expect(message).toContain('redirect to https://***.receiver.example/moved/***/here');
      expect(message).not.toContain('opensesame');
    } finally {
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    }
  });
});

describe('headerSecrets: Basic credentials', () => {
  it('hides a Basic header, its user:password and the password alone when a receiver quotes them decoded', () => {
    const encoded = Buffer.from('shop:Sup3rSecretPw').toString('base64');
    const secrets = headerSecrets({ Authorization: `Basic ${encoded}` });
    const page = `401: bad credentials Basic ${encoded} (user shop:Sup3rSecretPw; password Sup3rSecretPw)`;
    const scrubbed = scrubSecrets(page, secrets);
    expect(scrubbed).not.toContain(encoded);
    expect(scrubbed).not.toContain('Sup3rSecretPw');
    expect(scrubbed).toBe('401: bad credentials *** (user ***; password ***)');
  });
});
