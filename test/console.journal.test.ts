import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';

/**
 * The console's journal page and its error pages: what the user is told when a list is cut or an
 * input is wrong (DESIGN §11: "empty and error states that say what to do").
 */
const JIVO_TOKEN = 'site-token-0123456789abcdef';

describe('console journal and error pages', () => {
  let bridge: TestBridge;

  beforeAll(async () => {
    bridge = await startTestBridge({
      store: 'memory',
      start: false,
      config: {
        channels: [
          { id: 'site', vendor: 'jivochat', token: JIVO_TOKEN },
          { id: 'app', vendor: 'livetex', token: 'app-token-0123456789abcdef' },
        ],
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
  });

  it('names the input that was wrong on a 400 page', async () => {
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/journal?kind=bogus', { cookie });
    expect(page.status).toBe(400);
    expect(page.text).toMatch(/<code>kind<\/code>: Invalid option/);
    expect(page.text).toContain('Change the value named above');

    const deliveries = await consoleRequest(bridge.url, '/console/deliveries?state=lost', { cookie });
    expect(deliveries.status).toBe(400);
    expect(deliveries.text).toMatch(/<code>state<\/code>/);
  });
});
