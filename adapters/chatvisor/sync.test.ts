import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConflictError } from '../../src/errors.js';
import { createMemoryStore, LOCK_KEY_PREFIX } from '../../src/store/memory.js';
import { createRedisStore } from '../../src/store/redis.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../../test/support/redis.js';
import { until } from '../../test/support/until.js';
import { ChatvisorAuthError } from './errors.js';
import { storeKeys } from './state.js';
import { AgentSync, LEASE_MS } from './sync.js';
import { buildRuntime, type TestRuntime } from './test-support/context.js';
import { type FakeChatvisor, startFakeChatvisor } from './test-support/fake-chatvisor.js';
import { memoryLogger } from './test-support/logs.js';

const directory = [
  { email: 'oleg@shop.example', name: 'Oleg Petrov', teams: ['support'] },
  { email: 'Irina@Shop.example', name: 'Irina Sokolova', teams: ['sales', 'support'], role: 'ADMIN' },
  { email: 'pavel@shop.example', name: 'Pavel Orlov' },
];

let fake: FakeChatvisor;
beforeEach(async () => {
  fake = await startFakeChatvisor();
});
afterEach(async () => {
  await fake.close();
});

function runtimeWith(
  settings: Record<string, unknown> = {},
  agents: Record<string, unknown>[] = directory,
): TestRuntime {
  return buildRuntime({
    apiUrl: fake.apiUrl,
    apiToken: fake.token,
    agents,
    settings: { maxRetries: 1, ...settings },
  });
}

describe('agent sync', () => {
  it('creates the directory in an empty Chatvisor, then makes no write on the next run', async () => {
    const { runtime, store, outbox } = runtimeWith();
    const report = await runtime.agentSync.run();
    expect([...report.created].sort()).toEqual([
      'irina@shop.example',
      'oleg@shop.example',
      'pavel@shop.example',
    ]);
    expect(report).toMatchObject({ dryRun: false, updated: [], removed: [], failed: [], writes: 3 });
    const irina = fake.requests.find(
      (request) =>
        request.method === 'POST' && (request.body as { email: string }).email === 'irina@shop.example',
    );
    expect(irina).toMatchObject({
      path: '/user',
      body: {
        email: 'irina@shop.example',
        displayName: 'Irina Sokolova',
        role: 'ADMIN',
        teams: ['sales', 'support'],
        active: true,
      },
    });
    expect(irina!.headers.authorization).toBe(`Bearer ${fake.token}`);
    expect((await store.smembers(storeKeys('cobrowse').managedAgents)).sort()).toEqual([
      'irina@shop.example',
      'oleg@shop.example',
      'pavel@shop.example',
    ]);

    fake.resetLog();
    const second = await runtime.agentSync.run();
    expect(fake.writes()).toEqual([]);
    expect(fake.calls()).toEqual(['GET /user']);
    expect(second).toMatchObject({ created: [], updated: [], removed: [], writes: 0 });
    expect(second.unchanged).toHaveLength(3);

    const events = (await outbox()).filter((entry) => entry.event.type === 'agents.synced');
    expect(events).toHaveLength(2);
    expect(events[0]!.event).toMatchObject({
      channel: { id: 'cobrowse', vendor: 'chatvisor' },
      contact: null,
    });
    expect(events[0]!.event.data).toMatchObject({ created: report.created, dryRun: false });
  });

  it('converges from a mixed starting state and touches only agents it manages', async () => {
    const { runtime, store } = runtimeWith();
    // Oleg exists with an old name; Irina was deactivated; Zoe was made by hand in Chatvisor;
    // Max was managed by the bridge and has left the directory.
    fake.addAgent({ email: 'oleg@shop.example', displayName: 'Oleg P.', teams: ['support'] });
    fake.addAgent({
      email: 'irina@shop.example',
      displayName: 'Irina Sokolova',
      role: 'ADMIN',
      teams: ['support', 'sales'],
      active: false,
    });
    fake.addAgent({ email: 'zoe@shop.example', displayName: 'Zoe (hand-made)' });
    fake.addAgent({ email: 'max@shop.example', displayName: 'Max', teams: ['support'] });
    await store.sadd(storeKeys('cobrowse').managedAgents, 'max@shop.example', 'gone@shop.example');

    const report = await runtime.agentSync.run();
    expect(report.created).toEqual(['pavel@shop.example']);
    expect(report.updated).toEqual([
      { email: 'oleg@shop.example', fields: ['displayName'] },
      { email: 'irina@shop.example', fields: ['active'] },
    ]);
    expect(report.removed).toEqual([{ email: 'max@shop.example', action: 'deactivated' }]);
    expect(report.failed).toEqual([]);
    expect(
      fake
        .writes()
        .map((request) => `${request.method} ${request.path}`)
        .sort(),
    ).toEqual([
      'POST /user',
      'PUT /user/irina%40shop.example',
      'PUT /user/max%40shop.example',
      'PUT /user/oleg%40shop.example',
    ]);
    expect(fake.agents.get('max@shop.example')).toMatchObject({
      active: false,
      displayName: 'Max',
      teams: ['support'],
    });
    expect(fake.agents.get('zoe@shop.example')).toEqual({
      email: 'zoe@shop.example',
      displayName: 'Zoe (hand-made)',
      active: true,
      teams: [],
    });
    // An e-mail gone from both sides is forgotten.
    expect(await store.smembers(storeKeys('cobrowse').managedAgents)).not.toContain('gone@shop.example');

    fake.resetLog();
    const again = await runtime.agentSync.run();
    expect(fake.writes()).toEqual([]);
    // Max stays deactivated and counts as unchanged; Zoe is not the bridge's business.
    expect(again.unchanged.sort()).toEqual([
      'irina@shop.example',
      'max@shop.example',
      'oleg@shop.example',
      'pavel@shop.example',
    ]);
  });

  it('deletes or ignores agents that left the directory, as configured', async () => {
    fake.addAgent({ email: 'max@shop.example', displayName: 'Max' });
    const deleting = runtimeWith({ onRemovedAgent: 'delete' }, []);
    await deleting.store.sadd(storeKeys('cobrowse').managedAgents, 'max@shop.example');
    const ignoring = runtimeWith({ onRemovedAgent: 'ignore' }, []);
    await ignoring.store.sadd(storeKeys('cobrowse').managedAgents, 'max@shop.example');

    const ignored = await ignoring.runtime.agentSync.run();
    expect(ignored).toMatchObject({ ignored: ['max@shop.example'], removed: [], writes: 0 });
    expect(fake.writes()).toEqual([]);

    const deleted = await deleting.runtime.agentSync.run();
    expect(deleted.removed).toEqual([{ email: 'max@shop.example', action: 'deleted' }]);
    expect(fake.calls()).toContain('DELETE /user/max%40shop.example');
    expect(fake.agents.has('max@shop.example')).toBe(false);
    expect(await deleting.store.smembers(storeKeys('cobrowse').managedAgents)).toEqual([]);
  });

  it('survives vendor errors midway, reports them, and the next run finishes the job', async () => {
    fake.addAgent({ email: 'oleg@shop.example', displayName: 'Old name', teams: ['support'] });
    const { runtime } = runtimeWith({ maxRetryAfterMs: 1000 });
    fake.fail({ method: 'POST', path: '/user', status: 500 });
    fake.fail({ method: 'PUT', path: /^\/user\//, status: 429, headers: { 'retry-after': '3600' } });

    const first = await runtime.agentSync.run();
    expect(first.failed).toEqual([
      { email: 'oleg@shop.example', action: 'update', reason: expect.stringContaining('rate-limiting') },
      { email: expect.any(String), action: 'create', reason: expect.stringContaining('HTTP 500') },
    ]);
    expect(first.created).toHaveLength(1);
    expect(fake.agents.size).toBe(2);

    const second = await runtime.agentSync.run();
    expect(second.failed).toEqual([]);
    expect(second.created).toEqual([first.failed[1]!.email]);
    expect(second.updated).toEqual([{ email: 'oleg@shop.example', fields: ['displayName'] }]);
    expect(fake.agents.size).toBe(3);

    fake.resetLog();
    await runtime.agentSync.run();
    expect(fake.writes()).toEqual([]);
  });

  it('does not repeat a create whose answer was lost, and the next run finds it done', async () => {
    // 1.5 s attempts: the calls before the create must not time out on a loaded machine.
    const { runtime } = runtimeWith({ timeoutMs: 1500 }, [directory[0]!]);
    fake.fail({ method: 'POST', path: '/user', lateAnswerMs: 4000 });
    const first = await runtime.agentSync.run();
    expect(first.failed).toEqual([
      { email: 'oleg@shop.example', action: 'create', reason: expect.stringContaining('timed out') },
    ]);
    expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(1);

    fake.resetLog();
    const second = await runtime.agentSync.run();
    expect(second).toMatchObject({ created: [], unchanged: ['oleg@shop.example'], writes: 0 });
    expect(fake.writes()).toEqual([]);
    expect(fake.agents.size).toBe(1);
  });

  it('does not forget an agent it manages when the listing skipped items it could not read, and journals them', async () => {
    const { runtime, store, context } = runtimeWith({}, [directory[0]!]);
    // Max was managed and has left the directory; Chatvisor lists him in a shape we cannot read.
    fake.addAgent({ email: 'oleg@shop.example', displayName: 'Oleg Petrov', teams: ['support'] });
    fake.addAgent({ email: 'max@shop.example', displayName: 'Max', active: 'yes' as unknown as boolean });
    await store.sadd(storeKeys('cobrowse').managedAgents, 'oleg@shop.example', 'max@shop.example');

    const first = await runtime.agentSync.run();
    expect(first).toMatchObject({ removed: [], failed: [], writes: 0 });
    expect(await store.smembers(storeKeys('cobrowse').managedAgents)).toContain('max@shop.example');
    // Left alone, not lost: what Chatvisor listed is in the payload journal, with what was wrong.
    const { entries } = await context.journal.list({ limit: 10, channelId: 'cobrowse' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ kind: 'rejected', vendor: 'chatvisor' });
    expect(entries[0]!.reason).toMatch(/^chatvisor agent sync: a listed agent could not be read \(active: /);
    expect(JSON.parse(entries[0]!.body!)).toMatchObject({ email: 'max@shop.example', active: 'yes' });
    // Listed the same way by the next run: not journalled again.
    await runtime.agentSync.run();
    expect((await context.journal.list({ limit: 10, channelId: 'cobrowse' })).entries).toHaveLength(1);

    // Once Chatvisor lists him readably, he is deactivated as any managed agent that left.
    fake.agents.get('max@shop.example')!.active = true;
    const second = await runtime.agentSync.run();
    expect(second.removed).toEqual([{ email: 'max@shop.example', action: 'deactivated' }]);
    expect(fake.agents.get('max@shop.example')).toMatchObject({ active: false });
  });

  it('does not forget an agent it manages when the listing stopped early (a vendor repeating page 0)', async () => {
    const { runtime, store } = runtimeWith({ pageSize: 2 }, directory.slice(0, 2));
    fake.addAgent({ email: 'oleg@shop.example', displayName: 'Oleg Petrov', teams: ['support'] });
    fake.addAgent({
      email: 'irina@shop.example',
      displayName: 'Irina Sokolova',
      role: 'ADMIN',
      teams: ['sales', 'support'],
    });
    fake.addAgent({ email: 'max@shop.example', displayName: 'Max' });
    await store.sadd(storeKeys('cobrowse').managedAgents, 'max@shop.example');
    // Chatvisor ignores pageNumber: every page is the first one, and Max (third) is never listed.
    const firstPage = { page: 0, results: [...fake.agents.values()].slice(0, 2) };
    fake.fail({ method: 'GET', path: '/user', status: 200, body: firstPage, times: 2 });

    expect(await runtime.agentSync.run()).toMatchObject({ removed: [], failed: [], writes: 0 });
    expect(await store.smembers(storeKeys('cobrowse').managedAgents)).toContain('max@shop.example');
  });

  it('plans without writing on a dry run, and publishes nothing', async () => {
    fake.addAgent({ email: 'oleg@shop.example', displayName: 'Old name', teams: ['support'] });
    const { runtime, store, outbox } = runtimeWith();
    const report = await runtime.agentSync.run({ dryRun: true });
    expect(report).toMatchObject({
      dryRun: true,
      created: ['irina@shop.example', 'pavel@shop.example'],
      updated: [{ email: 'oleg@shop.example', fields: ['displayName'] }],
      writes: 0,
    });
    expect(fake.writes()).toEqual([]);
    expect(await store.smembers(storeKeys('cobrowse').managedAgents)).toEqual([]);
    expect(await outbox()).toEqual([]);
    const [kept] = await runtime.agentSync.reports(5);
    expect(kept).toEqual(report);
  });

  it('fails the run when the agents cannot be listed, and keeps the report', async () => {
    const { runtime } = buildRuntime({ apiUrl: fake.apiUrl, apiToken: 'revoked', agents: directory });
    await expect(runtime.agentSync.run()).rejects.toBeInstanceOf(ChatvisorAuthError);
    const [report] = await runtime.agentSync.reports(1);
    expect(report).toMatchObject({ writes: 0, error: expect.stringContaining('apiToken') });
    expect(fake.writes()).toEqual([]);
  });

  it('keeps the last N reports and counts runs in metrics', async () => {
    const { runtime, context } = runtimeWith({ keepReports: 2 });
    await runtime.agentSync.run();
    await runtime.agentSync.run({ dryRun: true });
    fake.fail({ method: 'GET', path: '/user', status: 503, times: 5 });
    await expect(runtime.agentSync.run()).rejects.toThrow(/unavailable/);
    const reports = await runtime.agentSync.reports(10);
    expect(reports.map((report) => [report.dryRun, report.error !== undefined])).toEqual([
      [false, true],
      [true, false],
    ]);
    const text = await context.metrics.registry.metrics();
    expect(text).toContain(
      'chatbridge_chatvisor_agent_sync_runs_total{channel="cobrowse",outcome="ok",dry_run="false"} 1',
    );
    expect(text).toContain(
      'chatbridge_chatvisor_agent_sync_runs_total{channel="cobrowse",outcome="ok",dry_run="true"} 1',
    );
    expect(text).toContain(
      'chatbridge_chatvisor_agent_sync_runs_total{channel="cobrowse",outcome="failed",dry_run="false"} 1',
    );
    expect(text).toContain(
      'chatbridge_chatvisor_agent_sync_agents_total{channel="cobrowse",result="created"} 3',
    );
  });

  it('runs as the CLI command: progress on stderr, the summary JSON on stdout', async () => {
    const { runtime } = runtimeWith();
    const command = runtime.commands!.find((candidate) => candidate.name === 'sync agents')!;
    expect(command.options).toHaveProperty('dry-run');
    const out: string[] = [];
    const err: string[] = [];
    await command.run(
      { 'dry-run': true },
      { stdout: (line) => out.push(line), stderr: (line) => err.push(line) },
    );
    expect(fake.writes()).toEqual([]);
    expect(err.some((line) => line.startsWith('would create'))).toBe(true);
    expect(out).toHaveLength(1);
    expect(JSON.parse(out[0]!)).toMatchObject({ dryRun: true, created: 3, writes: 0 });

    out.length = 0;
    fake.fail({ method: 'POST', path: '/user', status: 400, body: { message: 'license limit reached' } });
    const error = await command
      .run({}, { stdout: (line) => out.push(line), stderr: (line) => err.push(line) })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'agent_sync_incomplete' });
    expect(JSON.parse(out[0]!)).toMatchObject({
      created: 2,
      failed: [{ action: 'create', reason: expect.stringContaining('license limit reached') }],
    });
    expect(err.some((line) => line.includes('FAILED'))).toBe(true);

    // A run that fails as a whole is said once, by whoever ran it (the CLI's "chatbridge: …").
    err.length = 0;
    fake.fail({ method: 'GET', path: '/user', status: 401, body: { message: 'bad token' } });
    const whole = await command
      .run({}, { stdout: () => {}, stderr: (line) => err.push(line) })
      .catch((caught: unknown) => caught);
    expect(whole).toBeInstanceOf(Error);
    expect(err.filter((line) => line.includes((whole as Error).message))).toEqual([]);
  });
});

describe('agent sync lock', () => {
  it('lets one run at a time (memory store): the other is refused with 409', async () => {
    const { runtime } = runtimeWith();
    fake.fail({ method: 'GET', path: '/user', delayMs: 300 });
    const results = await Promise.allSettled([runtime.agentSync.run(), runtime.agentSync.run()]);
    const refused = results.filter((result) => result.status === 'rejected');
    expect(refused).toHaveLength(1);
    expect((refused[0] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({
      status: 409,
      code: 'agent_sync_running',
    });
    expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(3);
    // Released afterwards: the next run goes ahead.
    await expect(runtime.agentSync.run()).resolves.toMatchObject({ writes: 0 });
  });

  it('keeps its lease while a long run works: 16 minutes in it still reads running and refuses another run', async () => {
    // The heartbeat renews the lease (LEASE_MS) every third of it; a sync held up by a slow
    // Chatvisor outlives many leases. Only the heartbeat's timer and the clock (the store's and
    // the bridge's) are fake: the vendor calls stay real.
    let clock = Date.now();
    const store = createMemoryStore({ now: () => clock });
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const { runtime } = buildRuntime({
        apiUrl: fake.apiUrl,
        apiToken: fake.token,
        agents: [directory[0]!],
        store,
        now: () => new Date(clock),
        settings: { maxRetries: 1 },
      });
      const held = fake.hold({ method: 'POST', path: '/user' });
      const long = runtime.agentSync.run();
      await held.arrived;
      for (let step = 0; step < 48; step++) {
        clock += LEASE_MS / 3;
        await vi.advanceTimersByTimeAsync(LEASE_MS / 3);
      }
      expect(await runtime.agentSync.progress()).toMatchObject({
        state: 'running',
        current: 'oleg@shop.example',
      });
      await expect(runtime.agentSync.run()).rejects.toMatchObject({ code: 'agent_sync_running' });
      held.release();
      await expect(long).resolves.toMatchObject({ created: ['oleg@shop.example'], failed: [] });
      expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(1);
    } finally {
      vi.useRealTimers();
      await store.close();
    }
  });

  it('a run whose heartbeat stops reads interrupted once its lease lapses; another run takes over at once, and the stopped one writes no more', async () => {
    // Two instances on one store; the first one's heartbeat never beats again (its timer is fake
    // and never advanced: as a process killed mid-sync), while its run waits on a create.
    let clock = Date.now();
    const store = createMemoryStore({ now: () => clock });
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const [dead, alive] = [0, 1].map(() =>
        buildRuntime({
          apiUrl: fake.apiUrl,
          apiToken: fake.token,
          agents: directory,
          store,
          now: () => new Date(clock),
          settings: { maxRetries: 1 },
        }),
      ) as [TestRuntime, TestRuntime];
      const held = fake.hold({ method: 'POST', path: '/user' });
      const stopped = dead.runtime.agentSync.run().catch((error: unknown) => error);
      await held.arrived;
      const running = await alive.runtime.agentSync.progress();
      expect(running).toMatchObject({ state: 'running', step: 'writing', planned: 3, handled: 0 });
      await expect(alive.runtime.agentSync.run()).rejects.toMatchObject({ code: 'agent_sync_running' });

      // The lease runs out LEASE_MS after the last heartbeat (here: the run's last step), when
      // the store expires its key (the memory store on its clock, as Redis on its own).
      clock = Date.parse(running!.leaseExpiresAt!);
      expect(await alive.runtime.agentSync.progress()).toMatchObject({ state: 'running' });
      clock += 1;
      const interrupted = await alive.runtime.agentSync.progress();
      expect(interrupted).toMatchObject({
        id: running!.id,
        state: 'interrupted',
        step: 'writing',
        planned: 3,
        current: running!.current,
      });

      // Another run may start at once, and does the whole job (the held create has not landed:
      // it lists no agent yet).
      const report = await alive.runtime.agentSync.run();
      expect([...report.created].sort()).toEqual(directory.map((agent) => agent.email.toLowerCase()).sort());
      const finished = await alive.runtime.agentSync.progress();
      expect(finished).toMatchObject({ id: report.id, state: 'finished' });

      // The stopped run comes back (its create answered): it finds the record taken over, writes
      // nothing more to Chatvisor, and leaves the new run's record as it is.
      held.release();
      expect(await stopped).toMatchObject({ code: 'agent_sync_lock_lost', status: 409 });
      expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(1 + report.created.length);
      expect(await alive.runtime.agentSync.progress()).toEqual(finished);
      const [last, previous] = await alive.runtime.agentSync.reports(2);
      expect(last).toMatchObject({ id: running!.id, error: expect.stringContaining('lost its lease') });
      expect(previous).toMatchObject({ id: report.id });
    } finally {
      vi.useRealTimers();
      await store.close();
    }
  });

  it('keeps out, and is kept out by, the lock of a version before the lease (a rolling upgrade)', async () => {
    const { runtime, store } = runtimeWith();
    const legacy = storeKeys('cobrowse').syncLock;
    // An older instance's run holds the store lock: no run starts beside it.
    const older = await store.lock([legacy], { ttlMs: 60_000, waitMs: 0 });
    await expect(runtime.agentSync.run()).rejects.toMatchObject({ code: 'agent_sync_running' });
    await older.release();
    // A run holds its lease: an older instance cannot take the lock meanwhile, and can after it.
    const held = fake.hold({ method: 'POST', path: '/user' });
    const run = runtime.agentSync.run();
    await held.arrived;
    await expect(store.lock([legacy], { ttlMs: 60_000, waitMs: 0 })).rejects.toMatchObject({
      code: 'store_busy',
    });
    held.release();
    await run;
    await (await store.lock([legacy], { ttlMs: 60_000, waitMs: 0 })).release();
  });

  describe('on Redis, across instances', () => {
    const prefix = uniquePrefix('chatvisor-sync');
    let url: string;
    afterAll(async () => {
      if (url) await cleanupPrefix(url, prefix);
    });

    it('never runs two syncs of one channel at once', async () => {
      url = await getTestRedisUrl();
      const { logger } = memoryLogger('silent');
      const stores = await Promise.all(
        [0, 1].map(() => createRedisStore({ url, keyPrefix: prefix, logger })),
      );
      try {
        const instances = stores.map((store) =>
          buildRuntime({
            apiUrl: fake.apiUrl,
            apiToken: fake.token,
            agents: directory,
            store,
            settings: { maxRetries: 1 },
          }),
        );
        fake.fail({ method: 'GET', path: '/user', delayMs: 300, times: 2 });
        const results = await Promise.allSettled(
          instances.map((instance) => instance.runtime.agentSync.run()),
        );
        expect(results.filter((result) => result.status === 'rejected')).toHaveLength(1);
        expect(fake.calls().filter((call) => call === 'POST /user')).toHaveLength(3);
        expect(fake.agents.size).toBe(3);
        // The state is shared: the other instance now sees nothing to do.
        fake.resetLog();
        await instances[1]!.runtime.agentSync.run();
        expect(fake.writes()).toEqual([]);
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
    });

    /**
     * Two instances on the Redis store whose clocks read `skewMs` apart (the second's ahead);
     * `pass(ms)` moves both clocks on.
     */
    async function skewedInstances(skewMs: number) {
      url = await getTestRedisUrl();
      const { logger } = memoryLogger('silent');
      const stores = await Promise.all(
        [0, 1].map(() => createRedisStore({ url, keyPrefix: prefix, logger })),
      );
      const offsets = [0, skewMs];
      const [first, second] = offsets.map((_, index) =>
        buildRuntime({
          apiUrl: fake.apiUrl,
          apiToken: fake.token,
          agents: directory,
          store: stores[index]!,
          now: () => new Date(Date.now() + offsets[index]!),
          settings: { maxRetries: 1 },
        }),
      ) as [TestRuntime, TestRuntime];
      const pass = (ms: number) => {
        for (const index of offsets.keys()) offsets[index]! += ms;
      };
      return { first, second, stores, pass, close: () => Promise.all(stores.map((store) => store.close())) };
    }

    it('an instance whose clock runs ahead neither reads a live run interrupted nor takes it over', async () => {
      const { first, second, close } = await skewedInstances(2 * LEASE_MS);
      const held = fake.hold({ method: 'POST', path: '/user' });
      try {
        const run = first.runtime.agentSync.run();
        await held.arrived;
        expect(await second.runtime.agentSync.progress()).toMatchObject({ state: 'running' });
        await expect(second.runtime.agentSync.run()).rejects.toMatchObject({ code: 'agent_sync_running' });
        held.release();
        const report = await run;
        expect(report).toMatchObject({ failed: [] });
        expect(report.created).toHaveLength(directory.length);
      } finally {
        held.release();
        await close();
      }
    });

    it('an instance whose clock runs behind reads a dead run interrupted once its lease is gone from Redis, and takes over', async () => {
      const { first, second, stores, pass, close } = await skewedInstances(-2 * LEASE_MS);
      const held = fake.hold({ method: 'POST', path: '/user' });
      try {
        const dead = first.runtime.agentSync.run().catch((error: unknown) => error);
        await held.arrived;
        // The first instance dies (its store connection cut: no heartbeat lands again), and the
        // lease's time passes: its key goes from Redis, as when its PX ends.
        await stores[0]!.close();
        pass(LEASE_MS);
        await stores[1]!.del(LOCK_KEY_PREFIX + storeKeys('cobrowse').syncLock);
        expect(await second.runtime.agentSync.progress()).toMatchObject({ state: 'interrupted' });
        const report = await second.runtime.agentSync.run();
        expect(report.created).toHaveLength(directory.length);
        held.release();
        expect(await dead).toMatchObject({ code: 'agent_sync_lock_lost' });
      } finally {
        held.release();
        await close();
      }
    });

    it('a dead run’s lease expires in Redis by itself, on no instance’s clock (a short lease)', async () => {
      // The second instance's clock is an hour behind and nobody moves either clock: only Redis
      // ends the lease. The dead run's lease is short so the test does not wait a minute.
      const { first, second, stores, close } = await skewedInstances(-3_600_000);
      const held = fake.hold({ method: 'POST', path: '/user' });
      try {
        const { logger } = memoryLogger('silent');
        const shortLease = new AgentSync({
          channelId: 'cobrowse',
          context: first.adapterContext,
          client: first.runtime.client,
          settings: first.runtime.settings,
          logger,
          leaseMs: 300,
        });
        const started = await shortLease.start();
        const dead = started.done.catch((error: unknown) => error);
        await held.arrived;
        await stores[0]!.close();
        await until(
          async () => (await second.runtime.agentSync.progress())?.state === 'interrupted',
          'the dead run reads interrupted',
        );
        const report = await second.runtime.agentSync.run();
        expect(report.created).toHaveLength(directory.length);
        expect((await second.runtime.agentSync.reports(2))[1]).toMatchObject({
          id: started.progress.id,
          interrupted: { step: 'writing', handled: 0, takenOverBy: report.id },
        });
        held.release();
        await dead;
      } finally {
        held.release();
        await close();
      }
    });
  });
});
