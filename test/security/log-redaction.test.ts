import { describe, expect, it } from 'vitest';
import { normalisePath, redactPath } from '../../src/http/guard.js';
import { allVendorChannels, rawRequest, startLoggedBridge } from './support.js';

/** Issue 10 item 1 (second half): odd spellings of a webhook path must not log its token. */
describe('webhook URL tokens stay out of the log whatever the spelling', () => {
  it('redacts every spelling of /webhooks/<vendor>/<channel>/<token>', () => {
    for (const path of [
      '/webhooks/jivochat/site/SECRET',
      '/WEBHOOKS/jivochat/site/SECRET',
      '/Webhooks/JivoChat/site/SECRET/',
      '//webhooks//jivochat//site//SECRET',
      '/%77ebhooks/jivochat/site/SECRET',
      '/x/../webhooks/jivochat/site/SECRET/more',
      // Separators written as escapes (a client or proxy that encodes the whole path).
      '/webhooks/jivochat/site%2FSECRET',
      '/webhooks%2Fjivochat%2Fsite%2FSECRET',
      '/webhooks/jivochat/site%5cSECRET',
      '/webhooks/jivochat/site%252FSECRET',
      '/webhooks/jivochat/site%25%32%46SECRET/more',
      '/console/c%2FSECRET.1.mac',
    ]) {
      expect(redactPath(path)).not.toContain('SECRET');
      expect(redactPath(path)).toContain('***');
    }
    expect(redactPath('/api/v1/contacts')).toBe('/api/v1/contacts');
    // A plain path (nothing to decode) is masked from the secret segment on, as written.
    for (const [path, logged] of [
      ['/webhooks/jivochat/site/SECRET', '/webhooks/jivochat/site/***'],
      ['/WebHooks/JivoChat/Site/SECRET/more', '/WebHooks/JivoChat/Site/***'],
      ['/webhooks/jivochat/site/SECRET/', '/webhooks/jivochat/site/***'],
      ['/webhooks/jivochat/site/', '/webhooks/jivochat/site/'],
      ['/webhooks/jivochat/site', '/webhooks/jivochat/site'],
      ['/webhooks', '/webhooks'],
      ['/webhooksx/jivochat/site/token', '/webhooksx/jivochat/site/token'],
      ['/console/c/SECRET.1.mac', '/console/c/***'],
      ['/Console/C/SECRET', '/Console/C/***'],
      ['/console/c/', '/console/c/'],
      ['/console/cx/token', '/console/cx/token'],
    ] as const)
      expect(redactPath(path)).toBe(logged);
    expect(normalisePath('//API/%56%31/./Contacts/')).toBe('/api/v1/contacts');
  });

  it('keeps the token out of the request log over HTTP', async () => {
    const token = allVendorChannels[0]!.token;
    const running = await startLoggedBridge({ channels: allVendorChannels });
    try {
      for (const path of [
        `/WEBHOOKS/jivochat/site/${token}`,
        `/Webhooks/jivochat/site/${token}`,
        `//webhooks/jivochat/site/${token}`,
        `/%77ebhooks/jivochat/site/${token}`,
        `/webhooks/jivochat/site/${token}/`,
        `/webhooks/jivochat/site%2F${token}`,
        `/webhooks%2Fjivochat%2Fsite%2F${token}`,
      ]) {
        await rawRequest(running.url, 'POST', path, { body: '{}' });
      }
    } finally {
      await running.close();
    }
    const text = running.lines.join('');
    expect(text).toContain('***');
    expect(text).not.toContain(token);
  });

  // redactPath judged the path once normalised: a token followed by escaped `..` segments that
  // climb back out of /webhooks/<vendor>/<channel> (`<token>%2F..%2F..%2F..`) left fewer than
  // four segments, so the path was logged as sent; hideChannelTokens caught the token only when
  // it was written out literally, not with one letter percent-escaped.
  it('keeps a token out of the request log when escaped dot segments follow it', async () => {
    const token = allVendorChannels[0]!.token;
    const escaped = `%${token.charCodeAt(0).toString(16)}${token.slice(1)}`;
    const running = await startLoggedBridge({ channels: allVendorChannels });
    try {
      for (const path of [
        `/webhooks/jivochat/site/${escaped}%2F..%2F..%2F..`,
        `/webhooks/jivochat/site/${escaped}/..%2F..%2F..%2F..%2F..`,
        `/webhooks/jivochat/site/${token}%2F..%2F..%2F..%2F..`,
        `/console/c/${escaped}%2F..%2F..`,
      ]) {
        await rawRequest(running.url, 'POST', path, { body: '{}' });
      }
    } finally {
      await running.close();
    }
    const logged = running.lines
      .map((line) => JSON.parse(line))
      .filter((entry) => entry.msg === 'request')
      .map((entry) => String(entry.path));
    expect(logged).toHaveLength(4);
    for (const path of logged) {
      let decoded = path;
      for (let round = 0; round < 3; round++) decoded = decodeURIComponent(decoded);
      expect(decoded).toContain('***');
      expect(decoded, path).not.toContain(token.slice(1));
    }
  });

  it('keeps a token out of the request log when the vendor was given a wrong URL', async () => {
    // A URL set up at the vendor with the channel left out, or channel and token swapped: the
    // token is not where the route expects it, and was logged as written (404 every time).
    const token = allVendorChannels[0]!.token;
    const running = await startLoggedBridge({ channels: allVendorChannels });
    try {
      for (const path of [
        `/webhooks/jivochat/${token}`,
        `/webhooks/jivochat/${token}/site`,
        `/webhooks/${token}`,
      ]) {
        await rawRequest(running.url, 'POST', path, { body: '{}' });
      }
    } finally {
      await running.close();
    }
    const text = running.lines.join('');
    expect(text).toContain('/webhooks/jivochat/***');
    expect(text).not.toContain(token);
  });
});
