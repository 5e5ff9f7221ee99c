import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/main.js';
import { CRM_CHECKS_KEY } from '../src/crm/last-check.js';
import { breakerKey, createBreakerRecorder } from '../src/delivery/breaker-state.js';
import { createRedisStore } from '../src/store/redis.js';
import { capture } from './support/cli.js';
import { consoleRequest, signIn } from './support/console.js';
import { amoWorld, bitrixWorld } from './support/crm-worlds.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from './support/redis.js';

/**
 * `chatbridge crm check` records its outcome (when, ok / warn / fail, the short reason) in the
 * bridge's Redis, and the console's status page shows the last one in its CRM section: an
 * operator sees when the CRM connection was last checked and what it said, from any instance.
 * Against the fake CRMs (adapters/amocrm/test-support, adapters/bitrix24/test-support); never a
 * token or a webhook code, not even one a CRM echoes in its refusal.
 */
const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A long-lived amoCRM token as amoCRM makes them: a JWT (its signature is not checked). */
const jwt = (exp: number) => `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ exp })}.c2lnbmF0dXJlLWJ5dGVz`;
const nowS = () => Math.floor(Date.now() / 1000);
const DAY_S = 86_400;
const silent = pino({ level: 'silent' });

let redisUrl: string;
const prefixes: string[] = [];
beforeAll(async () => {
  redisUrl = await getTestRedisUrl();
});
afterAll(async () => {
  for (const prefix of prefixes) await cleanupPrefix(redisUrl, prefix);
});

/** A fake CRM, a bridge on its own key prefix whose status page is read, and the CLI on the same Redis. */
type AnyWorld = Awaited<ReturnType<typeof amoWorld>> | Awaited<ReturnType<typeof bitrixWorld>>;

function checkWorld<W extends AnyWorld>(makeWorld: () => Promise<W>) {
  const state = {} as { world: W; keyPrefix: string; bridge: TestBridge; redis: Redis };

  beforeAll(async () => {
    state.world = await makeWorld();
    state.keyPrefix = uniquePrefix('crm-check');
    prefixes.push(state.keyPrefix);
    state.redis = new Redis(redisUrl, { lazyConnect: true });
    state.bridge = await startTestBridge({
      store: 'redis',
      keyPrefix: state.keyPrefix,
      start: false,
      config: {
        // The CLI's config below, as one file would give both: the check is of this config.
        agents: [{ email: 'dmitry@store.example', name: 'Dmitry' }],
        channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
        destinations: [state.world.destination()],
      },
    });
  });
  afterAll(async () => {
    await state.bridge?.close();
    state.redis?.disconnect();
    await state.world?.close();
  });
  afterEach(() => {
    state.world.rejectCredential(false);
  });

  /** A config file for the CLI on the bridge's Redis and key prefix. */
  function configFile(destination: Record<string, unknown> = state.world.destination()): string {
    const file = join(mkdtempSync(join(tmpdir(), 'chatbridge-crm-check-')), 'bridge.yaml');
    writeFileSync(
      file,
      stringify({
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        store: { redis: redisUrl, keyPrefix: state.keyPrefix },
        agents: [{ email: 'dmitry@store.example', name: 'Dmitry' }],
        channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
        destinations: [destination],
      }),
    );
    return file;
  }
  async function check(file = configFile()) {
    const run = capture();
    const code = await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io);
    return { code, err: run.err.join('\n') };
  }
  /** The stored record, raw: what a leak would be in. */
  async function stored(): Promise<string> {
    return (await state.redis.hget(`${state.keyPrefix}:${CRM_CHECKS_KEY}`, 'crm')) ?? '';
  }
  /** The CRM entry of the console's status page. */
  async function statusEntry(): Promise<string> {
    const { cookie } = await signIn(state.bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(state.bridge.url, '/console/status', { cookie });
    expect(page.status).toBe(200);
    const start = page.text.indexOf('<h3 id="crm-crm">');
    expect(start).toBeGreaterThan(-1);
    return page.text.slice(start, page.text.indexOf('</dl>', start));
  }
  const noSecret = (...texts: string[]) => {
    for (const secret of state.world.secrets) for (const text of texts) expect(text).not.toContain(secret);
  };
  return { state, configFile, check, stored, statusEntry, noSecret };
}

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as Array<[string, () => Promise<AnyWorld>]>)(
  'crm check outcomes kept for the console: %s',
  (displayName, makeWorld) => {
    const { state, configFile, check, stored, statusEntry, noSecret } = checkWorld(makeWorld);

    it('before any check: none recorded, and how to run one', async () => {
      expect(await statusEntry()).toContain(
        `<dt>Last check</dt><dd>None recorded. <code>chatbridge crm check --destination crm</code> (in a checkout: <code>node bin/chatbridge.js crm check --destination crm</code>) calls ${displayName} once (account, pipelines, users), prints what the mapping will use, and records its outcome here.</dd>`,
      );
    });

    it('a check that passes: ok, when, and what it found', async () => {
      const before = Date.now();
      expect((await check()).code).toBe(0);
      const record = JSON.parse(await stored());
      expect(record).toEqual({
        at: expect.any(String),
        outcome: 'ok',
        reason: expect.stringMatching(
          /^the mapping can be used: account "[^"]+", \d+ pipeline\(s\), 3 user\(s\)$/,
        ),
        // What it checked (test/crm.check-stale.test.ts): digests, never a credential.
        config: {
          salt: expect.any(String),
          settings: expect.any(String),
          credentials: expect.any(String),
          agents: expect.any(String),
        },
      });
      expect(Date.parse(record.at)).toBeGreaterThanOrEqual(before);
      const entry = await statusEntry();
      expect(entry).toContain(
        `<dt>Last check</dt><dd><span class="state state-delivered">ok</span> <time datetime="${record.at}">`,
      );
      expect(entry).toContain('the mapping can be used: account &quot;');
      expect(entry).toContain(
        'Check again: <code>chatbridge crm check --destination crm</code> (in a checkout: <code>node bin/chatbridge.js crm check --destination crm</code>)',
      );
      noSecret(await stored(), entry);
    });

    it('a refused credential: failed, with the CRM’s reason, and no secret even when the CRM echoes it', async () => {
      state.world.rejectCredential(true);
      const refused = await check();
      expect(refused.code).toBe(1);
      const record = JSON.parse(await stored());
      expect(record.outcome).toBe('fail');
      expect(record.reason).toMatch(
        state.world.name === 'amocrm' ? /token rejected by amoCRM/ : /webhook rejected by Bitrix24/,
      );
      const entry = await statusEntry();
      expect(entry).toContain('<span class="state state-failed">failed</span>');
      noSecret(await stored(), entry, refused.err);

      // A CRM whose refusal quotes the credential back.
      state.world.rejectCredential(false);
      const echoed = state.world.secrets[0]!;
      state.world.fake.failNext(
        1,
        state.world.name === 'amocrm'
          ? {
              status: 400,
              body: JSON.stringify({ title: 'Bad Request', detail: `token ${echoed} is not valid here` }),
            }
          : {
              status: 400,
              body: JSON.stringify({
                error: 'INVALID_REQUEST',
                error_description: `webhook ${echoed} is not valid here`,
              }),
            },
      );
      expect((await check()).code).toBe(1);
      expect(JSON.parse(await stored())).toMatchObject({
        outcome: 'fail',
        reason: expect.stringContaining('is not valid here'),
      });
      noSecret(await stored(), await statusEntry());
    });

    it('a mapping the CRM cannot take: failed, naming the first problem', async () => {
      const destination = state.world.destination();
      const file = configFile({
        ...destination,
        crm: {
          ...(destination.crm as object),
          pipeline: { byChannel: { 'shop-site': 4242 }, default: state.world.name === 'amocrm' ? 7000 : 0 },
        },
      });
      expect((await check(file)).code).toBe(1);
      const record = JSON.parse(await stored());
      expect(record.outcome).toBe('fail');
      expect(record.reason).toContain(
        '1 problem, the mapping cannot be used as configured: channel shop-site: pipeline 4242 does not exist',
      );
      expect(await statusEntry()).toContain('channel shop-site: pipeline 4242 does not exist');
    });

    it("a pause the running bridge holds (the CRM's Retry-After) is said by crm check and on the status page, with its end", async () => {
      // What a delivery's 429 (Bitrix24: QUERY_LIMIT_EXCEEDED) records in the shared store.
      const store = await createRedisStore({ url: redisUrl, keyPrefix: state.keyPrefix, logger: silent });
      const recorder = createBreakerRecorder({
        store,
        instanceId: 'worker-1',
        instance: 'worker-host:7',
        logger: silent,
      });
      const since = Date.now();
      const until = since + 120_000;
      recorder.retryAfter('crm', { since, until, lastError: 'HTTP 429: Too Many Requests' });
      await recorder.settled();
      try {
        const { code, err } = await check();
        expect(code).toBe(0);
        expect(err).toContain(
          `note: destination crm paused until ${new Date(until).toISOString()} at its own request (it answered with Retry-After at ${new Date(since).toISOString()}; seen by instance worker-host:7); answer: HTTP 429: Too Many Requests`,
        );
        const entry = await statusEntry();
        expect(entry).toContain('<dt>Paused</dt>');
        expect(entry).toContain(`datetime="${new Date(until).toISOString()}"`);
        expect(entry).toContain(`at ${displayName}'s own request (Retry-After at`);
      } finally {
        await store.del(breakerKey('crm'));
        await store.close();
      }
      // Gone: neither says anything.
      expect((await check()).err).not.toContain('paused until');
      expect(await statusEntry()).not.toContain('<dt>Paused</dt>');
    });
  },
);

describe('crm check outcomes kept for the console: amoCRM token expiry', () => {
  const { state, configFile, check, stored, statusEntry, noSecret } = checkWorld(amoWorld);

  it('an amoCRM token expiring within 14 days: warning; an expired one: failed, without calling amoCRM', async () => {
    const { world } = state;
    const soon = jwt(nowS() + 5 * DAY_S + 3600);
    world.fake.token = soon;
    expect((await check(configFile(world.destination({ token: soon })))).code).toBe(0);
    const warned = JSON.parse(await stored());
    expect(warned).toMatchObject({
      outcome: 'warn',
      reason: expect.stringMatching(/^the mapping can be used, but the token expires at \S+ \(in 5 days\)$/),
    });
    expect(await statusEntry()).toContain('<span class="state state-pending">warning</span>');

    const expired = jwt(nowS() - DAY_S);
    world.fake.token = expired;
    const calls = world.requestCount();
    expect((await check(configFile(world.destination({ token: expired })))).code).toBe(1);
    expect(world.requestCount()).toBe(calls);
    expect(JSON.parse(await stored())).toMatchObject({
      outcome: 'fail',
      reason: expect.stringMatching(/^token expired at \S+$/),
    });
    noSecret(await stored());
    for (const token of [soon, expired]) expect(await stored()).not.toContain(token);
  });
});
