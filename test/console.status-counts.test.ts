import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliveryRecords } from '../src/delivery/records.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The status page's delivery counts are exact, and each links to the list of what it counts. It
 * listed at most 500 deliveries per state and said "500+" from 500 on: exactly 500 failed read as
 * "more than 500", a count of pending ones had no link to them, and the page read up to a
 * thousand whole records per destination to say it. On Redis, under the test's own key prefix;
 * the bridge is not started, so nothing delivers or retries what the test writes.
 */
const SECRET = `whsec_${Buffer.alloc(24, 3).toString('base64')}`;

describe('the console status page counts deliveries exactly', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'redis',
      start: false,
      config: {
        destinations: [
          { id: 'crm', url: 'http://127.0.0.1:9/hook', secret: SECRET },
          { id: 'quiet', url: 'http://127.0.0.1:9/other', secret: SECRET },
        ],
      },
    });
    // 500 failed and 3 pending deliveries to `crm`, written as the delivery worker writes them.
    const records = createDeliveryRecords(bridge.bridge.store, { deliveredRetentionMs: 86_400_000 });
    const at = new Date('2026-06-01T10:00:00Z');
    const plans = Array.from({ length: 503 }, (_, index) => ({
      id: `dlv_status${index}`,
      destinationId: 'crm',
      eventId: `evt_status${index}`,
      eventType: 'message.received',
      orderingKey: `contact-${index}`,
      contactId: null,
      stagedAt: at.getTime(),
      body: '{}',
    }));
    const pending = await records.ensure(plans, at);
    const failure = { status: 500, message: 'down', at: at.toISOString() };
    for (let start = 0; start < 500; start += 100)
      await Promise.all(
        pending
          .slice(start, Math.min(start + 100, 500))
          .map((record) => records.markFailed(record, failure, at, true)),
      );
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('says 500 for 500, and links each count to the deliveries it counts', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/status', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('500+');
    const row = (id: string) =>
      new RegExp(`<tr><td data-label="Destination">.*?>${id}</a></td>.*?</tr>`).exec(page.text)?.[0];
    expect(row('crm')).toContain(
      '<td data-label="Pending"><a href="/console/deliveries?state=pending&amp;destination=crm">3</a></td>',
    );
    expect(row('crm')).toContain(
      '<td data-label="Failed"><a href="/console/deliveries?state=failed&amp;destination=crm">500</a></td>',
    );
    expect(row('quiet')).toContain('<td data-label="Pending">0</td><td data-label="Failed">0</td>');
    // The list a count links to holds that many: 500 failed, read a page at a time.
    let listed = 0;
    let next: string | null = '/api/v1/deliveries?state=failed&destination=crm&limit=200';
    while (next) {
      const answer: { body: any } = await bridge.admin('GET', next);
      listed += answer.body.deliveries.length;
      next = answer.body.nextCursor
        ? `/api/v1/deliveries?state=failed&destination=crm&limit=200&before=${answer.body.nextCursor}`
        : null;
    }
    expect(listed).toBe(500);
  });
});
