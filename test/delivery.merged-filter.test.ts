import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jivo, personFor } from './support/fault.js';
import { startTestBridge, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * A destination filtered to one channel still learns of merges that channel's contacts take
 * part in. The merge is made by whichever channel brings the identifier that joins two contacts:
 * here a website chat joins a mobile-app contact the destination already knows. Filtered out by
 * the website's channel, the destination kept a contact id that no longer exists and got the
 * app's next events under the survivor's id, a contact it had never heard of.
 */
const SECRET = `whsec_${Buffer.from('merged-filter-secret-0123456789ab').toString('base64')}`;
const SITE_TOKEN = 'merged-filter-site-token-01';
const APP_TOKEN = 'merged-filter-app-token-001';

describe('contact.merged and channel filters', () => {
  let receiver: Receiver;
  let bridge: TestBridge;

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
    bridge = await startTestBridge({
      store: 'redis',
      config: {
        channels: [
          { id: 'site', vendor: 'jivochat', token: SITE_TOKEN },
          { id: 'app', vendor: 'jivochat', token: APP_TOKEN },
        ],
        destinations: [
          {
            id: 'app-crm',
            url: receiver.url,
            secret: SECRET,
            events: ['contact.created', 'contact.merged'],
            filter: { channels: ['app'] },
            retrySchedule: ['0s', '100ms'],
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await receiver?.close();
  });

  it('reaches a destination filtered to a channel of the merged contacts, whichever channel merged them', async () => {
    const inApp = personFor('merged-filter', 1);
    const onSite = { ...personFor('merged-filter', 2), person: '' };
    const post = (token: string, channel: string, body: unknown) =>
      bridge.post(`/webhooks/jivochat/${channel}/${token}`, body);

    expect((await post(APP_TOKEN, 'app', jivo.chatAccepted({ ...inApp, person: '' }, 1))).status).toBe(200);
    expect((await post(SITE_TOKEN, 'site', jivo.chatAccepted(onSite, 2))).status).toBe(200);
    // The website visitor now gives the app customer's e-mail: the two contacts are one person.
    const merged = await post(SITE_TOKEN, 'site', jivo.chatAccepted({ ...onSite, email: inApp.email }, 3));
    expect(merged.status).toBe(200);
    const found = await bridge.admin('GET', `/api/v1/contacts?email=${encodeURIComponent(inApp.email)}`);
    expect(found.body.contacts[0].records).toHaveLength(2);

    await receiver.waitFor(
      () => receiver.application.some((event) => event.payload.type === 'contact.merged'),
      15_000,
      'the merge event',
    );
    const types = receiver.application.map((event) => event.payload.type);
    // Only the app's own contact.created: the website's contact.created stays filtered out.
    expect(types.filter((type) => type === 'contact.created')).toHaveLength(1);
    const merge = receiver.application.find((event) => event.payload.type === 'contact.merged')!;
    const created = receiver.application.find((event) => event.payload.type === 'contact.created')!;
    const { survivor, absorbed } = merge.payload.data as { survivor: string; absorbed: string[] };
    expect([survivor, ...absorbed]).toContain(created.payload.contact!.id);
  });
});
