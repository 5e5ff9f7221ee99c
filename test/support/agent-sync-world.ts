import { syncLeaseKey } from '../../adapters/chatvisor/sync.js';
import {
  buildRuntime,
  TEST_CHANNEL_TOKEN,
  type TestRuntime,
} from '../../adapters/chatvisor/test-support/context.js';
import {
  type FakeChatvisor,
  startFakeChatvisor,
} from '../../adapters/chatvisor/test-support/fake-chatvisor.js';
import { createLogger } from '../../src/logger.js';
import { createRedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { startTestBridge, type TestBridge } from './harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './redis.js';

/**
 * A Chatvisor agent sync that can be interrupted: a bridge with one Chatvisor channel on a private
 * Redis prefix, and a second instance (`runner`) on the same Redis whose own store connection a
 * test closes while its run waits on an agent create the fake holds — after that no heartbeat of
 * its can land, as when its process dies. Both read the clock the test drives (`clock.now`), and
 * `lapseLease` ends a lease without sleeping.
 */
export interface AgentSyncWorld {
  chatvisor: FakeChatvisor;
  runnerStore: Store;
  runner: TestRuntime;
  bridge: TestBridge;
  clock: { now: number };
  /**
   * The lease's time passes (the one a running record says, `leaseExpiresAt`): the clock moves
   * past it, and the lease key goes from Redis, as when its PX runs out there.
   */
  lapseLease(leaseExpiresAt: string): Promise<void>;
  close(): Promise<void>;
}

export async function startAgentSyncWorld(
  name: string,
  agents: Array<{ email: string; name: string }>,
): Promise<AgentSyncWorld> {
  const clock = { now: Date.now() };
  const now = () => new Date(clock.now);
  const chatvisor = await startFakeChatvisor();
  const redisUrl = await getTestRedisUrl();
  const keyPrefix = uniquePrefix(name);
  const settings = { maxRetries: 0, rateLimit: { perSecond: 1000 } };
  const runnerStore = await createRedisStore({ url: redisUrl, keyPrefix, logger: createLogger('silent') });
  const runner = buildRuntime({
    apiUrl: chatvisor.apiUrl,
    apiToken: chatvisor.token,
    agents,
    settings,
    store: runnerStore,
    now,
  });
  const bridge = await startTestBridge({
    store: 'redis',
    keyPrefix,
    start: false,
    now,
    config: {
      agents,
      channels: [
        {
          id: 'cobrowse',
          vendor: 'chatvisor',
          name: 'Co-browsing',
          token: TEST_CHANNEL_TOKEN,
          apiUrl: chatvisor.apiUrl,
          apiToken: chatvisor.token,
          ...settings,
        },
      ],
    },
  });
  return {
    chatvisor,
    runnerStore,
    runner,
    bridge,
    clock,
    async lapseLease(leaseExpiresAt) {
      clock.now = Date.parse(leaseExpiresAt) + 1;
      await bridge.bridge.store.del(syncLeaseKey('cobrowse'));
    },
    async close() {
      await bridge.close();
      await runnerStore.close();
      await chatvisor.close();
      await cleanupPrefix(redisUrl, keyPrefix);
    },
  };
}

/** An agent directory of `count` agents: agent-01@shop.example, "Agent 1", and so on. */
export function agentDirectory(count: number): Array<{ email: string; name: string }> {
  return Array.from({ length: count }, (_, index) => ({
    email: `agent-${String(index + 1).padStart(2, '0')}@shop.example`,
    name: `Agent ${index + 1}`,
  }));
}

/**
 * One Chatvisor channel `cv` on the fake, failing at once and not throttled: for a spawned
 * bridge (`yaml`: a fault config's `extra`, the channel then the agent directory) and for one in
 * this process (`channel`, with `agents` beside it in its config).
 */
export function chatvisorSyncChannel(
  fake: FakeChatvisor,
  token: string,
  agents: Array<{ email: string; name: string }>,
) {
  const channel = {
    id: 'cv',
    vendor: 'chatvisor',
    name: 'Co-browsing',
    token,
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    maxRetries: 0,
    rateLimit: { perSecond: 1000 },
  } as const;
  const yamlChannel = `{ id: cv, vendor: chatvisor, name: Co-browsing, token: "${token}", apiUrl: "${fake.apiUrl}", apiToken: "${fake.token}", maxRetries: 0, rateLimit: { perSecond: 1000 } }`;
  const yamlAgents = agents
    .map((agent) => `  - { email: "${agent.email}", name: "${agent.name}" }`)
    .join('\n');
  return { channel, yaml: `  - ${yamlChannel}\nagents:\n${yamlAgents}` };
}
