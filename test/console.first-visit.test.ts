import { afterEach, describe, expect, it } from 'vitest';
import { consoleRequest } from './support/console.js';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A newcomer's first visit to the console after `npm start` on the example config: the sign-in
 * hint pointed at CHATBRIDGE_ADMIN_TOKEN, a variable they never set (the example falls back to
 * its published token), so `echo $CHATBRIDGE_ADMIN_TOKEN` came back empty and left them guessing.
 */
const EXAMPLE_TOKEN = 'example-admin-token-change-me';

describe('the sign-in page on a first visit', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });

  it('running the example’s published admin token, says which it is (and to set your own)', async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: { admin: { token: EXAMPLE_TOKEN } },
    });
    const form = await consoleRequest(bridge.url, '/console/sign-in');
    expect(form.status).toBe(200);
    expect(form.text).toContain(
      `This bridge still runs with the example's published token, <code>${EXAMPLE_TOKEN}</code>: set your own before it leaves this machine (README, Running for real).`,
    );
  });

  it('with a token of its own, never shows it: says where it is set', async () => {
    bridge = await startTestBridge({ store: 'memory', start: false });
    const form = await consoleRequest(bridge.url, '/console/sign-in');
    expect(form.text).toContain('The <code>admin.token</code> of the bridge');
    expect(form.text).not.toContain(EXAMPLE_TOKEN);
    expect(form.text).not.toContain('published token');
  });
});
