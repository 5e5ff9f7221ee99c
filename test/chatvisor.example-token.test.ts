import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from './support/harness.js';

/**
 * A newcomer on the example config tries the Chatvisor admin routes (README "Admin API", the
 * example's `cobrowse` channel). Its apiToken is the example's published placeholder, which the
 * client refuses before sending anything. That is the bridge's own config, not an upstream
 * failure: the answer must be a 4xx that says so. It was a 502 whose body said only "an upstream
 * service failed; see the bridge log", the reason (and what to set) kept in the log.
 */
const example = readFileSync(new URL('../config/bridge.example.yaml', import.meta.url), 'utf8');
const placeholder = /apiToken: \$\{CHATVISOR_API_TOKEN:-([^}]+)\}/.exec(example)![1]!;

describe("Chatvisor admin routes on the example config's placeholder apiToken", () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startTestBridge({
      config: {
        channels: [
          {
            id: 'cobrowse',
            vendor: 'chatvisor',
            token: 'chatvisor-hook-token-0123456789',
            apiUrl: 'http://127.0.0.1:9/rest/v1',
            apiToken: placeholder,
          },
        ],
      },
    });
  });
  afterAll(() => bridge?.close());

  it('answer 409 naming the placeholder and what to set, not an opaque 502', async () => {
    const calls: Array<[string, string, unknown]> = [
      ['POST', '/api/v1/channels/cobrowse/agent-sync?dryRun=true', undefined],
      ['POST', '/api/v1/channels/cobrowse/agent-chat-url', { customerId: 'c1' }],
      ['GET', '/api/v1/channels/cobrowse/visibility', undefined],
    ];
    for (const [method, path, body] of calls) {
      const answer = await bridge.admin(method, path, body);
      expect(answer.status, `${method} ${path}`).toBe(409);
      expect(answer.body.error.code, `${method} ${path}`).toBe('chatvisor_example_token');
      expect(answer.body.error.message, `${method} ${path}`).toContain(
        "apiToken is the example config's placeholder",
      );
      expect(answer.body.error.message, `${method} ${path}`).toContain('CHATVISOR_API_TOKEN');
    }
  });

  it('documents that answer on each route that calls Chatvisor', async () => {
    const document = (await (await fetch(`${bridge.url}/api/v1/openapi.json`)).json()) as any;
    for (const [method, path] of [
      ['post', '/api/v1/channels/{id}/agent-sync'],
      ['post', '/api/v1/channels/{id}/agent-chat-url'],
      ['get', '/api/v1/channels/{id}/visibility'],
    ] as const) {
      const described = document.paths[path]?.[method]?.responses?.['409']?.description;
      expect(described, `${method} ${path}`).toContain('chatvisor_example_token');
    }
  });
});
