import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MASTER_KEY_MESSAGE } from '../adapters/livetex/index.js';
import { loadConfig, parseConfig, resolveConfigPath } from '../src/config/load.js';
import { assertSafeToListen } from '../src/config/published.js';
import { crmSettingsSchema, durationSchema, storeSchema } from '../src/config/schema.js';
import { ConfigError } from '../src/errors.js';
import { AdapterRegistry, defaultRegistry } from '../src/registry.js';
import { echoAdapter } from './support/echo-adapter.js';

const registry = new AdapterRegistry([echoAdapter]);

function problems(document: unknown, env: NodeJS.ProcessEnv = {}, using = registry): string[] {
  try {
    parseConfig(document, using, env);
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

describe('config', () => {
  it('lists every mistake with its path', () => {
    const found = problems({
      server: { port: 'eighty' },
      admin: {},
      store: { redis: 'http://wrong' },
      identity: { mergeOn: ['person', 'fax'], defaultCountry: 'Russia' },
      agents: [{ email: 'not-an-email', name: 'X' }],
      channels: [
        { id: 'Shop Site', vendor: 'echo', token: 'short' },
        { id: 'a', vendor: 'nosuchvendor', token: 'x'.repeat(20) },
        { id: 'b', vendor: 'echo', token: 'x'.repeat(20), greeting: 5, extra: true },
        { id: 'b', vendor: 'echo', token: '${MISSING_TOKEN}' },
      ],
      destinations: [{ id: 'crm', url: 'not a url', secret: 'plain' }],
    });
    const paths = found.map((line) => line.split(':')[0]);
    expect(paths).toEqual(
      expect.arrayContaining([
        'server.port',
        'admin.token',
        'store.redis',
        'identity.mergeOn[1]',
        'identity.defaultCountry',
        'agents[0].email',
        'channels[0].id',
        'channels[0].token',
        'destinations[0].url',
        'destinations[0].secret',
        'channels[3].token',
      ]),
    );
    expect(found.find((line) => line.startsWith('channels[3].token'))).toContain('MISSING_TOKEN is not set');
  });

  it('checks vendor settings and cross references once the core schema passes', () => {
    const found = problems({
      admin: { token: 'a'.repeat(20) },
      channels: [
        { id: 'a', vendor: 'nosuchvendor', token: 'x'.repeat(20) },
        { id: 'b', vendor: 'echo', token: 'x'.repeat(20), greeting: 5, extra: true },
        { id: 'b', vendor: 'echo', token: 'y'.repeat(20) },
      ],
      destinations: [
        {
          id: 'crm',
          url: 'https://crm.example/hook',
          secret: `whsec_${Buffer.from('config-test-secret-0123456789').toString('base64')}`,
          filter: { channels: ['zzz'] },
        },
      ],
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^channels\[0\]\.vendor: unknown vendor "nosuchvendor"/),
        expect.stringMatching(/^channels\[1\]\.greeting: /),
        expect.stringMatching(/^channels\[1\]\.extra: unknown key/),
        expect.stringMatching(/^channels\[2\]\.id: duplicate channel id "b"/),
        expect.stringMatching(/^destinations\[0\]\.filter\.channels: no channel "zzz"/),
      ]),
    );
  });

  it('a variable that is not set is one problem, not also the empty value it leaves', () => {
    expect(
      problems({ admin: { token: '${ADMIN_TOKEN_NOT_SET}' }, server: { port: '${PORT_NOT_SET}' } }),
    ).toEqual([
      'admin.token: environment variable ADMIN_TOKEN_NOT_SET is not set (write ${ADMIN_TOKEN_NOT_SET:-} to allow empty)',
      'server.port: environment variable PORT_NOT_SET is not set (write ${PORT_NOT_SET:-} to allow empty)',
    ]);
    // Other problems are still all there.
    expect(problems({ admin: { token: '${ADMIN_TOKEN_NOT_SET}' }, server: { port: 'eighty' } })).toHaveLength(
      2,
    );
  });

  it('substitutes ${VAR} and ${VAR:-default}, applies defaults and freezes the result', () => {
    const config = parseConfig(
      {
        server: { port: '${PORT:-3100}' },
        admin: { token: '${ADMIN}' },
        store: { redis: '${REDIS_URL:-}' },
        channels: [{ id: 'site', vendor: 'echo', token: 'tok-${SUFFIX:-default-suffix}' }],
        destinations: [
          {
            id: 'crm',
            url: 'https://crm.example/hook',
            secret: `whsec_${Buffer.from('config-test-secret-0123456789').toString('base64')}`,
            retrySchedule: ['0s', '5s', '2m'],
          },
        ],
      },
      registry,
      { ADMIN: 'from-the-environment-123' },
    );
    expect(config.server.port).toBe(3100);
    expect(config.admin.token).toBe('from-the-environment-123');
    expect(config.store.redis).toBeUndefined();
    expect(config.channels[0]!.token).toBe('tok-default-suffix');
    expect((config.channels[0] as { greeting?: string }).greeting).toBe('hello');
    expect(config.destinations[0]!.retrySchedule).toEqual([0, 5000, 120000]);
    expect(config.identity.mergeOn).toEqual(['person', 'email', 'phone']);
    expect(Object.isFrozen(config.channels[0])).toBe(true);
  });

  it('resolves --config, then CHATBRIDGE_CONFIG, then config/bridge.yaml, then the example', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-config-'));
    expect(resolveConfigPath('x.yaml', {}, dir)).toEqual({
      path: join(dir, 'x.yaml'),
      origin: 'flag',
      isExample: false,
    });
    expect(resolveConfigPath(undefined, { CHATBRIDGE_CONFIG: 'y.yaml' }, dir)).toEqual({
      path: join(dir, 'y.yaml'),
      origin: 'env',
      isExample: false,
    });
    expect(resolveConfigPath(undefined, {}, dir)).toMatchObject({ origin: 'example', isExample: true });
    mkdirSync(join(dir, 'config'));
    writeFileSync(join(dir, 'config', 'bridge.yaml'), 'admin: {}');
    expect(resolveConfigPath(undefined, {}, dir)).toEqual({
      path: join(dir, 'config', 'bridge.yaml'),
      origin: 'default',
      isExample: false,
    });
    expect(resolveConfigPath('config/bridge.example.yaml', {}, dir).isExample).toBe(true);
  });

  it('reports YAML syntax errors and unreadable files as config errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-config-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'admin:\n  token: [unclosed\n');
    expect(() => loadConfig(file, registry, {})).toThrow(ConfigError);
    expect(() => loadConfig(join(dir, 'missing.yaml'), registry, {})).toThrow(/cannot read config file/);
  });

  it('a YAML mistake names its line and column once, without a dangling colon', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-config-'));
    const file = join(dir, 'typo.yaml');
    writeFileSync(file, 'admin:\n  token: a-long-enough-admin-token\nadmin: again\n');
    try {
      loadConfig(file, registry, {});
      expect.unreachable();
    } catch (error) {
      expect((error as ConfigError).message).toBe(`${file} is not valid YAML`);
      expect((error as ConfigError).issues).toEqual([
        { path: 'line 3, column 1', message: 'Map keys must be unique' },
      ]);
    }
  });

  it('a missing config says so in words, and with nothing found at all, where it looked and what to pass', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-config-'));
    expect(() => loadConfig(join(dir, 'missing.yaml'), registry, {})).toThrow(
      `cannot read config file ${join(dir, 'missing.yaml')}: no such file`,
    );
    expect(() => loadConfig(undefined, registry, { CHATBRIDGE_CONFIG: join(dir, 'gone.yaml') }, dir)).toThrow(
      `cannot read config file ${join(dir, 'gone.yaml')}: no such file`,
    );
    expect(() => loadConfig(dir, registry, {})).toThrow(`cannot read config file ${dir}: it is a directory`);
    // `chatbridge start` outside a checkout: neither config/bridge.yaml nor the example is there.
    expect(() => loadConfig(undefined, registry, {}, dir)).toThrow(
      `no config file: none given (--config FILE or CHATBRIDGE_CONFIG) and neither config/bridge.yaml nor config/bridge.example.yaml under ${dir}; pass --config FILE`,
    );
  });

  it('PORT overrides server.port whatever the file says; a PORT that is no port is named', () => {
    const document = { admin: { token: 'a'.repeat(20) }, server: { port: 3000 } };
    expect(parseConfig(document, registry, { PORT: '4111' }).server.port).toBe(4111);
    expect(parseConfig({ admin: { token: 'a'.repeat(20) } }, registry, { PORT: '4112' }).server.port).toBe(
      4112,
    );
    expect(parseConfig(document, registry, {}).server.port).toBe(3000);
    expect(parseConfig(document, registry, { PORT: '' }).server.port).toBe(3000);
    expect(problems(document, { PORT: 'eighty' })).toEqual([
      'PORT (environment): "eighty" is not a port number (0-65535)',
    ]);
    // The shipped example reads PORT into server.port too: one bad PORT is one problem, not a
    // second one about the file's server.port (which PORT overrides anyway).
    expect(problems({ ...document, server: { port: '${PORT:-3000}' } }, { PORT: 'eighty' })).toEqual([
      'PORT (environment): "eighty" is not a port number (0-65535)',
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-config-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(file, 'server: { port: 3000 }\nadmin: { token: a-long-enough-admin-token }\n');
    expect(loadConfig(file, registry, { PORT: '4113' }).config.server.port).toBe(4113);
  });

  it('says "required" for a missing key', () => {
    expect(problems({})).toEqual(['admin: required']);
    expect(problems({ admin: {} })).toEqual(['admin.token: required']);
  });

  it('reports every problem in one pass, even when the core schema fails', () => {
    const found = problems({
      admin: { token: 'short' }, // core
      channels: [
        { id: 'Bad Id', vendor: 'echo', token: 'x'.repeat(20) }, // core: the id
        { id: 'b', vendor: 'echo', token: 'x'.repeat(20), greeting: 5 }, // vendor settings
        { id: 'b', vendor: 'echo', token: 'y'.repeat(20) }, // duplicate id
        { id: 'c', vendor: 'nosuchvendor', token: 'z'.repeat(20) }, // unknown vendor
      ],
      destinations: [
        {
          id: 'crm',
          url: 'not a url', // core
          secret: 'whsec_c2VjcmV0',
          filter: { channels: ['zzz'] }, // cross-reference
          map: { pipeline: { byChannel: { nope: 'leads' } } }, // cross-reference
        },
        { id: 'crm', url: 'https://crm.example/hook', secret: 'whsec_c2VjcmV0' }, // duplicate id
      ],
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^admin\.token: /),
        expect.stringMatching(/^channels\[0\]\.id: /),
        expect.stringMatching(/^channels\[1\]\.greeting: /),
        expect.stringMatching(/^channels\[2\]\.id: duplicate channel id "b"/),
        expect.stringMatching(/^channels\[3\]\.vendor: unknown vendor "nosuchvendor"/),
        expect.stringMatching(/^destinations\[0\]\.url: /),
        expect.stringMatching(/^destinations\[0\]\.filter\.channels: no channel "zzz"/),
        expect.stringMatching(/^destinations\[0\]\.map\.pipeline\.byChannel\.nope: no channel "nope"/),
        expect.stringMatching(/^destinations\[1\]\.id: duplicate id "crm"/),
      ]),
    );
  });

  it('the shipped example config is valid with the built-in adapters and no environment', () => {
    const { config } = loadConfig('config/bridge.example.yaml', defaultRegistry(), {});
    expect(config.channels.map((channel) => channel.vendor).sort()).toEqual([
      'chatvisor',
      'jivochat',
      'livetex',
    ]);
    expect(config.store.redis).toBeUndefined();
  });

  it('the shipped example names no public address that PORT would make wrong', () => {
    // publicUrl defaulted to http://localhost:3000: with `PORT=4111 npm start` the console's
    // Channels page showed every intake URL on port 3000.
    const { config } = loadConfig('config/bridge.example.yaml', defaultRegistry(), { PORT: '4111' });
    expect(config.server.port).toBe(4111);
    expect(config.server.publicUrl).toBeUndefined();
    const chosen = loadConfig('config/bridge.example.yaml', defaultRegistry(), {
      CHATBRIDGE_PUBLIC_URL: 'https://bridge.example.com',
    });
    expect(chosen.config.server.publicUrl).toBe('https://bridge.example.com');
  });

  it('the shipped example stays on the in-memory store when REDIS_URL is set (npm start works either way)', () => {
    // A shell with REDIS_URL exported (the tests read it) used to turn the example onto that
    // Redis, where its LiveTex channel needs a master key: `npm start` exited 1.
    const env = { REDIS_URL: 'redis://127.0.0.1:6379/0' };
    const { config } = loadConfig('config/bridge.example.yaml', defaultRegistry(), env);
    expect(config.store.redis).toBeUndefined();
    expect(config.store.sentinel).toBeUndefined();
    expect(config.store.cluster).toBeUndefined();
  });

  it('a LiveTex channel on any shared store (redis, sentinel or cluster) needs secrets.masterKey', () => {
    const channels = [{ id: 'app', vendor: 'livetex', token: 'livetex-token-0123456789' }];
    const admin = { token: 'a'.repeat(20) };
    for (const store of [
      { redis: 'redis://10.0.0.1:6379' },
      { sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379'] } },
      { cluster: { nodes: ['10.0.0.1:6379'] } },
    ]) {
      expect(problems({ admin, store, channels }, {}, defaultRegistry()), Object.keys(store)[0]).toEqual([
        `channels[0]: ${MASTER_KEY_MESSAGE}`,
      ]);
      const masterKey = Buffer.alloc(32, 7).toString('base64');
      expect(problems({ admin, store, channels, secrets: { masterKey } }, {}, defaultRegistry())).toEqual([]);
    }
    // The in-memory store forgets its keys with the process: an ephemeral master key is enough.
    expect(problems({ admin, channels }, {}, defaultRegistry())).toEqual([]);
  });

  it('both example configs pass the published-credentials rule of `start` with their own defaults', () => {
    const env = {
      AMOCRM_TOKEN: 'a-long-lived-amocrm-token-0123456789',
      BITRIX24_WEBHOOK_URL: 'https://portal.example/rest/1/abcdefghijklmnop/',
    };
    for (const file of ['config/bridge.example.yaml', 'config/crm.example.yaml']) {
      const { config } = loadConfig(file, defaultRegistry(), env);
      expect(() => assertSafeToListen(config, config.server.host), file).not.toThrow();
    }
  });

  it('booleans, numbers and durations may come from ${VAR} substitution as strings', () => {
    const config = parseConfig(
      {
        admin: { token: 'a'.repeat(20) },
        intake: { ackAfterAppend: '${ACK:-false}', maxBacklog: '${BACKLOG:-500}' },
        console: { linkTtl: '${TTL:-3600000}' },
        limits: { rate: { window: '${WINDOW:-2m}' } },
        destinations: [
          {
            id: 'crm',
            url: 'https://crm.example/hook',
            secret: `whsec_${Buffer.from('config-test-secret-0123456789').toString('base64')}`,
            retrySchedule: ['${FIRST:-5000}', '5s', '${LAST}'],
            circuitBreaker: { cooldown: '${COOLDOWN:-60000}' },
          },
        ],
      },
      registry,
      { ACK: 'true', LAST: '250' },
    );
    expect(config.intake).toEqual({ ackAfterAppend: true, maxBacklog: 500 });
    expect(config.console.linkTtl).toBe(3_600_000);
    expect(config.limits.rate.window).toBe(120_000);
    expect(config.destinations[0]!.retrySchedule).toEqual([5000, 5000, 250]);
    expect(config.destinations[0]!.circuitBreaker.cooldown).toBe(60_000);
    expect(
      parseConfig({ admin: { token: 'a'.repeat(20) }, intake: { ackAfterAppend: 'false' } }, registry, {})
        .intake.ackAfterAppend,
    ).toBe(false);
    const sentinel = storeSchema.parse({
      sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379'], tls: 'true' },
    });
    expect(sentinel.sentinel?.tls).toBe(true);
    expect(storeSchema.parse({ cluster: { nodes: ['10.0.0.1:6379'], tls: 'true' } }).cluster?.tls).toBe(true);
    expect(crmSettingsSchema.parse({ transcriptNote: 'false' }).transcriptNote).toBe(false);
    // A vendor's settings too (LiveTex's evenTiming was a plain boolean).
    const livetex = parseConfig(
      {
        admin: { token: 'a'.repeat(20) },
        channels: [{ id: 'app', vendor: 'livetex', token: 'l'.repeat(24), evenTiming: '${EVEN:-false}' }],
      },
      defaultRegistry(),
      {},
    );
    expect(livetex.channels[0]).toMatchObject({ evenTiming: false });
  });

  it('refuses a defaultCountry the phone library does not know (UK is GB): it would drop every national number', () => {
    const admin = { token: 'a'.repeat(20) };
    // With an unknown country, "8 912 345-67-89" or "07911 123456" normalise to nothing: every
    // phone a visitor types without its +code was silently left off the contact.
    expect(problems({ admin, identity: { defaultCountry: 'UK' } })).toEqual([
      'identity.defaultCountry: "UK" is not a country code the phone library knows: the United Kingdom is GB',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'XX' } })).toEqual([
      'identity.defaultCountry: "XX" is not a country code the phone library knows: an ISO 3166-1 alpha-2 code like RU, GB or DE',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'GB' } })).toEqual([]);
    // A country written by name (or a code in small letters) was told only 'an ISO 3166-1 alpha-2
    // country code like RU', without what the file holds or the code meant.
    expect(problems({ admin, identity: { defaultCountry: 'Russia' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "Russia" (did you mean "RU"?)',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'Россия' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "Россия" (did you mean "RU"?)',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'germany' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "germany" (did you mean "DE"?)',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'United Kingdom' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "United Kingdom" (did you mean "GB"?)',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'ru' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "ru" (did you mean "RU"?)',
    ]);
    expect(problems({ admin, identity: { defaultCountry: 'Atlantis' } })).toEqual([
      'identity.defaultCountry: an ISO 3166-1 alpha-2 country code like RU, got the text "Atlantis"',
    ]);
    expect(parseConfig({ admin }, registry, {}).identity.defaultCountry).toBe('RU');
  });

  it('refuses a rate-limit window under a second: 0s turned every limit off', () => {
    // limits.rate.window: 0s passed; each count then lived no time at all, so failed admin
    // authentications and LiveTex lookups were never limited, and on Redis every count failed
    // ("windowMs must be a positive whole number") and was logged as the store being unreachable.
    const admin = { token: 'a'.repeat(20) };
    for (const window of ['0s', 0, '500ms'])
      expect(problems({ admin, limits: { rate: { window } } })).toEqual([
        'limits.rate.window: at least 1s (a shorter window counts nothing, so it limits nothing)',
      ]);
    expect(parseConfig({ admin, limits: { rate: { window: '1s' } } }, registry, {}).limits.rate.window).toBe(
      1000,
    );
  });

  it('refuses an agent link time under 5 minutes: 0s made every link dead on arrival', () => {
    // console.linkTtl: 0s passed; every {consoleUrl} the bridge put in a reply had expired when
    // it was made, so the agent's "Open in CRM" button opened only a refusal.
    const admin = { token: 'a'.repeat(20) };
    for (const linkTtl of ['0s', 0, '30s', '4m'])
      expect(problems({ admin, console: { linkTtl } })).toEqual([
        'console.linkTtl: at least 5m (a shorter link has expired before an agent opens it)',
      ]);
    expect(parseConfig({ admin, console: { linkTtl: '5m' } }, registry, {}).console.linkTtl).toBe(300_000);
  });

  it('refuses a circuit-breaker cooldown of 0s: the breaker then holds nothing off', () => {
    // circuitBreaker.cooldown: 0s passed; the breaker "opened" (and said so at warn) and let the
    // next attempt through at once, so a failing receiver was never given a rest.
    const admin = { token: 'a'.repeat(20) };
    const destination = { id: 'crm', url: 'https://crm.example.org/hook', secret: `whsec_${'A'.repeat(32)}` };
    for (const cooldown of ['0s', 0, '50ms'])
      expect(problems({ admin, destinations: [{ ...destination, circuitBreaker: { cooldown } }] })).toEqual([
        'destinations[0].circuitBreaker.cooldown: at least 100ms (a shorter cooldown holds nothing off a failing destination)',
      ]);
    const parsed = parseConfig(
      { admin, destinations: [{ ...destination, circuitBreaker: { cooldown: '100ms' } }] },
      registry,
      {},
    );
    expect(parsed.destinations[0]!.circuitBreaker).toMatchObject({ cooldown: 100 });
  });

  it('refuses a retention under 1h (0 still keeps for good): 500ms dropped what it was meant to keep', () => {
    // limits.timelineRetention: 500ms and failedRetention: 500ms passed; a timeline was gone half
    // a second after its last entry, and a failed delivery before anyone could replay it.
    const admin = { token: 'a'.repeat(20) };
    const destination = { id: 'crm', url: 'https://crm.example.org/hook', secret: `whsec_${'A'.repeat(32)}` };
    for (const retention of ['500ms', 1, '59m'])
      expect(
        problems({
          admin,
          limits: { timelineRetention: retention },
          destinations: [{ ...destination, failedRetention: retention }],
        }),
      ).toEqual([
        'limits.timelineRetention: 0 (keep for good) or at least 1h (a shorter one drops a timeline before anyone reads it)',
        'destinations[0].failedRetention: 0 (keep for good) or at least 1h (a shorter one deletes a failed delivery before anyone can replay it)',
      ]);
    for (const retention of ['0s', 0, '1h', '30d']) {
      const parsed = parseConfig(
        {
          admin,
          limits: { timelineRetention: retention },
          destinations: [{ ...destination, failedRetention: retention }],
        },
        registry,
        {},
      );
      expect([parsed.limits.timelineRetention, parsed.destinations[0]!.failedRetention]).toEqual([
        durationSchema.parse(retention),
        durationSchema.parse(retention),
      ]);
    }
  });

  it('a badly formed, short webhook secret is one problem, not two', () => {
    // secret: nope was said twice: not whsec_ followed by base64, and too short; one value, one
    // line, the one that says everything to write.
    const admin = { token: 'a'.repeat(20) };
    const format =
      'a Standard Webhooks secret: whsec_ followed by base64 of at least 24 random bytes (whsec_ and the output of openssl rand -base64 32)';
    for (const secret of ['nope', 'whsec_', 'whsec_abc=def'])
      expect(
        problems({ admin, destinations: [{ id: 'crm', url: 'https://crm.example/hook', secret }] }),
      ).toEqual([`destinations[0].secret: ${format}`]);
    // Well formed but short: that alone.
    expect(
      problems({
        admin,
        destinations: [{ id: 'crm', url: 'https://crm.example/hook', secret: 'whsec_c2hvcnQ=' }],
      }),
    ).toEqual(['destinations[0].secret: too short: whsec_ followed by at least 24 random bytes in base64']);
  });

  it('a value that is no duration is named as such, not "Invalid input"', () => {
    const admin = { token: 'a'.repeat(20) };
    const message = 'a duration like 0s, 5s, 5m, 2h or 1d, or a whole number of milliseconds';
    expect(problems({ admin, console: { linkTtl: '${TTL:-five minutes}' } })).toEqual([
      `console.linkTtl: ${message}`,
    ]);
    expect(problems({ admin, console: { linkTtl: -5 } })).toEqual([`console.linkTtl: ${message}`]);
    expect(problems({ admin, limits: { timelineRetention: '1.5h' } })).toEqual([
      `limits.timelineRetention: ${message}`,
    ]);
    expect(problems({ admin, intake: { ackAfterAppend: 'yes' } })).toEqual([
      'intake.ackAfterAppend: expected true or false, got the text "yes"',
    ]);
  });
});
