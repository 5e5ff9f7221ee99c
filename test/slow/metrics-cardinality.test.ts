import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allVendorChannels, rawRequest } from '../security/support.js';
import { startTestBridge, type TestBridge } from '../support/harness.js';
import { type Exposition, parseExposition } from '../support/prometheus.js';

/**
 * A guard on the metrics' cardinality: no label may carry a value a caller chose (a channel id,
 * path, token, event name or vendor name from the request), or each new value would be a new
 * series and a hostile sender could grow /metrics, and Prometheus, without bound. Hostile intake
 * is sent in two rounds, a few requests of each kind, then many more with other values: the set
 * of series after the second round must be the one after the first, and no label value may
 * contain anything that was sent.
 */

const MARK = 'zzhostile';
const JIVO = allVendorChannels.find((channel) => channel.vendor === 'jivochat')!;
const LIVETEX = allVendorChannels.find((channel) => channel.vendor === 'livetex')!;
const CHATVISOR = allVendorChannels.find((channel) => channel.vendor === 'chatvisor')!;

/** Vendor names no adapter has: odd spellings of real ones, label syntax, control characters. */
const VENDOR_SPELLINGS = [
  (n: string) => `${MARK}${n}`,
  (n: string) => `JIVOCHAT${MARK}${n}`,
  (n: string) => `jivochat%22%7D${MARK}${n}`,
  (n: string) => `%6Aivochat${MARK}${n}`,
  (n: string) => `a%7Ble%3D%22${MARK}${n}%22%7D`,
  (n: string) => `${MARK}%0A${n}`,
  (n: string) => `%E2%80%AE${MARK}${n}`,
  (n: string) => `${MARK}${'x'.repeat(200)}${n}`,
];

function hostileRequests(round: string, count: number) {
  const out: Array<{ method: string; path: string; body?: string; headers?: Record<string, string> }> = [];
  for (let index = 0; index < count; index++) {
    const n = `${round}${index}`;
    const value = `${MARK}${n}`;
    const json = (payload: unknown) => JSON.stringify(payload);
    // Unknown channels of known vendors, and wrong tokens of known channels.
    out.push({
      method: 'POST',
      path: `/webhooks/jivochat/${value}/${value}`,
      body: json({ event_name: value }),
    });
    out.push({
      method: 'POST',
      path: `/webhooks/jivochat/${JIVO.id}/${value}`,
      body: json({ event_name: value }),
    });
    out.push({
      method: 'POST',
      path: `/webhooks/livetex/${value}/${LIVETEX.token}`,
      body: json({ event: value }),
    });
    out.push({
      method: 'POST',
      path: `/webhooks/chatvisor/${CHATVISOR.id}/${value}`,
      body: json({ type: value }),
    });
    // Known channels with the right token, and event names nobody documented.
    out.push({
      method: 'POST',
      path: `/webhooks/jivochat/${JIVO.id}/${JIVO.token}`,
      body: json({ event_name: value }),
    });
    out.push({
      method: 'POST',
      path: `/webhooks/livetex/${LIVETEX.id}/${LIVETEX.token}`,
      body: json({ event: value, eventType: value, type: value }),
    });
    out.push({
      method: 'POST',
      path: `/webhooks/chatvisor/${CHATVISOR.id}/${CHATVISOR.token}`,
      body: json({ type: value, event: value }),
    });
    // Vendors that do not exist, however they are spelt.
    for (const spell of VENDOR_SPELLINGS) {
      out.push({ method: 'POST', path: `/webhooks/${spell(n)}/${value}/${value}`, body: '{}' });
    }
    // Lookups for unknown channels, unknown paths anywhere, wrong admin tokens, odd methods.
    out.push({
      method: 'POST',
      path: `/livetex/${value}/attributes`,
      body: value,
      headers: { 'content-type': 'application/jose' },
    });
    out.push({ method: 'GET', path: `/${value}/${value}?${value}=${value}` });
    out.push({ method: 'GET', path: `/api/v1/${value}`, headers: { authorization: `Bearer ${value}` } });
    out.push({ method: 'GET', path: `/console/${value}` });
    out.push({ method: 'PATCH', path: `/webhooks/jivochat/${JIVO.id}/${JIVO.token}`, body: '{}' });
    out.push({
      method: 'POST',
      path: `/webhooks/jivochat/${JIVO.id}/${JIVO.token}`,
      body: `{"event_name":"${value}"`,
      headers: { 'content-type': `application/${value}` },
    });
  }
  return out;
}

describe('metric labels never carry values a caller chose', () => {
  let bridge: TestBridge;
  let metricsUrl: string;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: allVendorChannels,
        // Limits out of the way: a 429 that starts in the second round only would add its series.
        limits: {
          rate: {
            adminAuthFailuresPerAddress: 1_000_000,
            adminAuthFailuresCeiling: 1_000_000,
            lookupsPerAddress: 1_000_000,
            lookupsPerChannel: 1_000_000,
          },
        },
      },
    });
    const server = await bridge.bridge.listenMetrics(0, '127.0.0.1');
    metricsUrl = `http://127.0.0.1:${(server!.address() as AddressInfo).port}/metrics`;
  });
  afterAll(() => bridge?.close());

  async function scrape(): Promise<Exposition> {
    const answer = await fetch(metricsUrl);
    expect(answer.status).toBe(200);
    return parseExposition(await answer.text());
  }

  const seriesOf = (exposition: Exposition) =>
    new Set(
      exposition.samples
        .filter((sample) => !sample.name.startsWith('process_') && !sample.name.startsWith('nodejs_'))
        .map((sample) => `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`),
    );

  async function send(round: string, count: number) {
    const statuses = new Map<number, number>();
    for (const request of hostileRequests(round, count)) {
      const answer = await rawRequest(bridge.url, request.method, request.path, {
        headers: { 'x-forwarded-for': `198.51.100.${statuses.size}`, ...request.headers },
        ...(request.body !== undefined ? { body: request.body } : {}),
      });
      statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      expect(answer.status, `${request.method} ${request.path}`).toBeLessThan(500);
    }
    return statuses;
  }

  it('keeps the same series however many distinct hostile values arrive', async () => {
    await send(`a${randomUUID().slice(0, 8)}`, 3);
    const first = seriesOf(await scrape());
    expect(first.size).toBeGreaterThan(0);

    const statuses = await send(`b${randomUUID().slice(0, 8)}`, 150);
    // The intake did get past the router for some: unhandled events were counted.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    const after = await scrape();
    const second = seriesOf(after);
    expect([...second].filter((series) => !first.has(series))).toEqual([]);
    expect(second.size).toBe(first.size);
    for (const sample of after.samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        expect(value.toLowerCase(), `${sample.name} ${label}`).not.toContain(MARK);
        expect(value.length, `${sample.name} ${label}`).toBeLessThanOrEqual(64);
      }
    }
  }, 300_000);
});
