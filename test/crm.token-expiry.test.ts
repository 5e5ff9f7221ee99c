import { afterEach, describe, expect, it, vi } from 'vitest';
import { tokenExpiry } from '../adapters/amocrm/api.js';
import { amocrmConnector } from '../adapters/amocrm/index.js';
import { bitrix24Connector } from '../adapters/bitrix24/index.js';
import type { CrmDestinationConfig } from '../src/config/schema.js';
import { credentialExpiry, watchCredentialExpiry } from '../src/crm/credentials.js';
import { JIVO_TOKEN } from './support/crm-bridge.js';
import { amoWorld, bitrixWorld, type CrmWorld } from './support/crm-worlds.js';
import { startTestBridge } from './support/harness.js';
import { capturingLogger } from './support/logs.js';
import { parseExposition } from './support/prometheus.js';

/**
 * amoCRM long-lived tokens expire (a JWT's `exp`), and after that every delivery fails with 401:
 * the bridge says so before. Read without verifying (amoCRM's key is not ours to have); a token
 * that is not a JWT has an unknown expiry, not an error. Bitrix24's webhook has none to read.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (cleanups.length > 0) await cleanups.pop()!();
});

const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const jwt = (payload: unknown) => `${part({ alg: 'RS256', typ: 'JWT' })}.${part(payload)}.c2lnbmF0dXJl`;
const DAY_MS = 86_400_000;
const METRICS_TOKEN = 'metrics-token-expiry-0123456789';
const WARN = 40;
const ERROR = 50;

describe('tokenExpiry (amoCRM long-lived token)', () => {
  it('is the exp of a JWT, read without a key', () => {
    expect(tokenExpiry(jwt({ exp: 4102444800, iat: 1700000000 }))?.toISOString()).toBe(
      '2100-01-01T00:00:00.000Z',
    );
  });

  it.each([
    ['an opaque token', 'amo-long-lived-token-0123456789abcdef'],
    ['three parts that are not JSON', 'abc.def.ghi'],
    ['a JWT without exp', jwt({ iat: 1700000000 })],
    ['an exp that is not a number', jwt({ exp: '4102444800' })],
    ['an exp no date can hold', jwt({ exp: 4102444800000000 })],
    ['a payload that is not an object', jwt([1, 2])],
    ['five parts (a JWE)', 'a.b.c.d.e'],
  ])('is unknown (null) for %s, not an error', (_what, token) => {
    expect(tokenExpiry(token)).toBeNull();
  });
});

describe('credentialExpiry', () => {
  const now = new Date('2026-12-04T12:00:00Z');
  const amo = (token: string) =>
    ({ id: 'amo', kind: 'amocrm', baseUrl: 'https://x.amocrm.ru', token }) as unknown as CrmDestinationConfig;
  const at = (ms: number) => jwt({ exp: Math.floor((now.getTime() + ms) / 1000) });

  it('an amoCRM token: valid, soon (under 14 days), expired, or unknown', () => {
    expect(credentialExpiry(amocrmConnector, amo(at(30 * DAY_MS)), now).state).toBe('valid');
    expect(credentialExpiry(amocrmConnector, amo(at(14 * DAY_MS)), now).state).toBe('valid');
    expect(credentialExpiry(amocrmConnector, amo(at(14 * DAY_MS - 1000)), now).state).toBe('soon');
    expect(credentialExpiry(amocrmConnector, amo(at(0)), now).state).toBe('expired');
    expect(credentialExpiry(amocrmConnector, amo('amo-opaque-token-0123456789'), now).state).toBe('unknown');
  });

  it('a Bitrix24 inbound webhook has no expiry to read', () => {
    const b24 = {
      id: 'b24',
      kind: 'bitrix24',
      webhookUrl: 'https://p.bitrix24.ru/rest/1/abc/',
    } as unknown as CrmDestinationConfig;
    expect(credentialExpiry(bitrix24Connector, b24, now)).toEqual({ state: 'none' });
  });
});

describe('the bridge warns before an amoCRM token expires', () => {
  async function bridgeWith(world: CrmWorld, token?: string) {
    const { logger, lines } = capturingLogger('info');
    const destination = world.destination(token ? { token } : {});
    const bridge = await startTestBridge({
      logger,
      config: {
        metrics: { token: METRICS_TOKEN },
        channels: [{ id: 'shop-site', vendor: 'jivochat', name: 'Shop site', token: JIVO_TOKEN }],
        destinations: [destination],
      },
    });
    cleanups.push(() => bridge.close());
    const scraped = await fetch(`${bridge.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(scraped.status).toBe(200);
    const metrics = parseExposition(await scraped.text());
    return { lines, metrics };
  }
  async function amo() {
    const world = await amoWorld();
    cleanups.push(() => world.close());
    return world;
  }

  it('under 14 days: a warning at start naming the destination and when; the expiry is a gauge', async () => {
    const exp = Math.floor((Date.now() + 5 * DAY_MS + 3_600_000) / 1000);
    const { lines, metrics } = await bridgeWith(await amo(), jwt({ exp }));
    const warnings = lines.filter((line) => line.level === WARN && line.destination === 'crm');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(
      /^crm: token expires at \S+, in 5 days: .*generate a new long-lived token/,
    );
    expect(warnings[0]!.expiresAt).toBe(new Date(exp * 1000).toISOString());
    expect(metrics.value('chatbridge_crm_token_expiry_timestamp_seconds', { destination: 'crm' })).toBe(exp);
    expect(metrics.families.get('chatbridge_crm_token_expiry_timestamp_seconds')?.type).toBe('gauge');
  });

  it('expired: an error at start', async () => {
    const exp = 1_700_000_000; // 2023-11-14
    const { lines, metrics } = await bridgeWith(await amo(), jwt({ exp }));
    const errors = lines.filter((line) => line.level === ERROR && line.destination === 'crm');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.msg).toMatch(/^crm: token expired at \S+: amoCRM refuses it \(401\)/);
    expect(metrics.value('chatbridge_crm_token_expiry_timestamp_seconds', { destination: 'crm' })).toBe(exp);
  });

  it('far off, or unknown (not a JWT): said once at start, no warning, no gauge for the unknown one', async () => {
    const exp = Math.floor((Date.now() + 400 * DAY_MS) / 1000);
    const far = await bridgeWith(await amo(), jwt({ exp }));
    expect(far.lines.filter((line) => line.level >= WARN && line.destination === 'crm')).toEqual([]);
    expect(far.lines.some((line) => line.destination === 'crm' && /token expires at/.test(line.msg))).toBe(
      true,
    );
    expect(far.metrics.value('chatbridge_crm_token_expiry_timestamp_seconds', { destination: 'crm' })).toBe(
      exp,
    );

    const opaque = await bridgeWith(await amo());
    expect(opaque.lines.filter((line) => line.level >= WARN && line.destination === 'crm')).toEqual([]);
    expect(opaque.lines.some((line) => line.destination === 'crm' && /expiry unknown/.test(line.msg))).toBe(
      true,
    );
    expect(opaque.metrics.series('chatbridge_crm_token_expiry_timestamp_seconds')).toEqual([]);
  });

  it('Bitrix24: nothing said, no gauge', async () => {
    const world = await bitrixWorld();
    cleanups.push(() => world.close());
    const { lines, metrics } = await bridgeWith(world);
    expect(lines.filter((line) => line.destination === 'crm')).toEqual([]);
    expect(metrics.series('chatbridge_crm_token_expiry_timestamp_seconds')).toEqual([]);
  });
});

describe('watchCredentialExpiry: once a day', () => {
  it('warns again each day while under 14 days, and says nothing on later days while it is further off', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    let now = new Date('2026-12-01T00:00:00Z');
    const { logger, lines } = capturingLogger('info');
    const inDays = (days: number) => jwt({ exp: Math.floor((now.getTime() + days * DAY_MS) / 1000) });
    const destination = (id: string, token: string) =>
      ({ id, kind: 'amocrm', baseUrl: 'https://x.amocrm.ru', token }) as unknown as CrmDestinationConfig;
    const stop = watchCredentialExpiry({
      targets: [
        { destination: destination('soon', inDays(2.5)), connector: amocrmConnector },
        { destination: destination('far', inDays(20)), connector: amocrmConnector },
      ],
      logger,
      now: () => now,
    });
    const said = () => lines.map((line) => `${line.level} ${line.destination} ${line.msg.split(':')[1]}`);
    expect(said()).toEqual([
      '40 soon  token expires at 2026-12-03T12',
      '30 far  token expires at 2026-12-21T00',
    ]);
    for (let day = 1; day <= 3; day++) {
      now = new Date(now.getTime() + DAY_MS);
      vi.advanceTimersByTime(DAY_MS);
    }
    // Day 1 and 2: "soon" warned again; day 3 it had expired: an error. "far" (17 days left on
    // day 3) is not repeated.
    expect(said().slice(2)).toEqual([
      '40 soon  token expires at 2026-12-03T12',
      '40 soon  token expires at 2026-12-03T12',
      '50 soon  token expired at 2026-12-03T12',
    ]);
    stop();
    vi.advanceTimersByTime(DAY_MS);
    expect(lines).toHaveLength(5);
  });
});
