import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * A console 404 says what to do next where the thing asked for is kept (DESIGN §11: error states
 * that say what to do): a delivery that is not there leads to the deliveries, a channel to the
 * channels. Every 404 offered "search for a contact", also for a delivery.
 */
describe('console 404: the next step fits what was not found', () => {
  let bridge: TestBridge;
  let cookie = '';

  beforeAll(async () => {
    bridge = await startTestBridge({ store: 'memory', start: false });
    ({ cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN));
  });
  afterAll(async () => {
    await bridge?.close();
  });

  const nextStep = (text: string) => /<\/h1>[\s\S]*?<p>([\s\S]*?)<\/p>\s*<\/main>/.exec(text)?.[1];

  it('a delivery leads to the deliveries, a channel to the channels, anything else to the search', async () => {
    const delivery = await consoleRequest(bridge.url, '/console/deliveries/dlv_nosuch', { cookie });
    expect(delivery.status).toBe(404);
    expect(nextStep(delivery.text)).toBe(
      'Go back and check the address, or <a href="/console/deliveries">list the deliveries</a>.',
    );
    const channel = await consoleRequest(bridge.url, '/console/channels/nosuch/agent-sync', { cookie });
    expect(channel.status).toBe(404);
    expect(nextStep(channel.text)).toBe(
      'Go back and check the address, or <a href="/console/channels">see the channels</a>.',
    );
    const contact = await consoleRequest(bridge.url, '/console/contacts/c_nosuch', { cookie });
    expect(contact.status).toBe(404);
    expect(nextStep(contact.text)).toBe(
      'Go back and check the address, or <a href="/console/contacts">search for a contact</a>.',
    );
    const page = await consoleRequest(bridge.url, '/console/nonsense', { cookie });
    expect(nextStep(page.text)).toBe(
      'Go back and check the address, or <a href="/console/contacts">search for a contact</a>.',
    );
  });
});
