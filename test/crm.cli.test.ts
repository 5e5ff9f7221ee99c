import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startFakeBitrix24 } from '../adapters/bitrix24/test-support/fake-bitrix24.js';
import { runCli } from '../src/cli/main.js';
import { capture } from './support/cli.js';
import { amoWorld, bitrixWorld, type CrmWorld } from './support/crm-worlds.js';

/** `chatbridge crm check --destination ID` against the fake CRMs (DESIGN §10). */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function configFile(world: CrmWorld, crm: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-crm-'));
  const file = join(dir, 'bridge.yaml');
  const destination = world.destination();
  writeFileSync(
    file,
    stringify({
      admin: { token: 'admin-token-0123456789' },
      log: { level: 'silent' },
      agents: [
        { email: 'dmitry@store.example', name: 'Dmitry', crmUserId: 999 },
        { email: 'anna@store.example', name: 'Anna', crmUserId: world.name === 'amocrm' ? 501 : 1 },
      ],
      channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
      destinations: [{ ...destination, crm: { ...(destination.crm as object), ...crm } }],
    }),
  );
  return file;
}

describe.each([
  ['amoCRM', amoWorld],
  ['Bitrix24', bitrixWorld],
] as const)('chatbridge crm check: %s', (_name, makeWorld) => {
  async function world() {
    const made = await makeWorld();
    cleanups.push(() => made.close());
    return made;
  }

  it('prints what the mapping will use, after one call round', async () => {
    const crm = await world();
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(crm)], run.io)).toBe(
      0,
    );
    const out = run.out.join('\n');
    if (crm.name === 'amocrm') {
      expect(out).toContain(
        'channel shop-site -> pipeline 7001 "Shop chats", stage 112 "Talking" (one-open)',
      );
      expect(out).toContain('agent dmitry@store.example -> user 502 "Dmitry Volkov" (same e-mail)');
      expect(out).toContain('default -> user 501 "Default Manager"');
      // account, pipelines, users (one page).
      expect(crm.requestCount()).toBe(3);
    } else {
      expect(out).toContain('channel shop-site -> pipeline 9 "Chats", stage C9:TALK "TALK" (one-open)');
      expect(out).toContain('agent dmitry@store.example -> user 7 "Dmitry" (same e-mail)');
      expect(out).toContain('agent anna@store.example -> user 1 "Portal Admin" (agents[].crmUserId)');
      // One batch request.
      expect(crm.requestCount()).toBe(1);
    }
    expect(out).toContain('crm: OK');
    for (const secret of crm.secrets) expect([...run.out, ...run.err].join('\n')).not.toContain(secret);
  });

  it('says exactly why the mapping cannot be used (exit 1)', async () => {
    const crm = await world();
    const run = capture();
    const file = configFile(crm, {
      pipeline: { byChannel: { 'shop-site': 4242 }, default: crm.name === 'amocrm' ? 7000 : 0 },
      responsible: { default: 31337 },
    });
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(1);
    const err = run.err.join('\n');
    expect(err).toContain('channel shop-site: pipeline 4242 does not exist');
    expect(err).toContain('crm.responsible.default: no CRM user 31337');
    // As config check says a config's problems: one 'chatbridge: ' line saying what failed, then
    // each problem indented under it (the problems came first, each with a 'problem: ' prefix of
    // their own, and the 'chatbridge: ' line last).
    expect(run.err[0]).toBe('chatbridge: crm: 2 problems: the mapping cannot be used as configured');
    expect(run.err.slice(1)).toEqual([
      expect.stringMatching(/^ {2}channel shop-site: pipeline 4242 does not exist/),
      expect.stringMatching(/^ {2}crm\.responsible\.default: no CRM user 31337/),
    ]);
  });

  it("a stage that closes the deal, or amoCRM's Incoming stage, is a problem: every event would make another deal (exit 1)", async () => {
    const crm = await world();
    const run = capture();
    const file = configFile(crm, {
      stage: {
        byChannel: { 'shop-site': crm.name === 'amocrm' ? 142 : 'C9:WON' },
        default: crm.name === 'amocrm' ? 100 : null,
      },
    });
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(1);
    const err = run.err.join('\n');
    expect(err).toContain(
      crm.name === 'amocrm'
        ? 'channel shop-site: stage 142 "Won" closes the deal'
        : 'channel shop-site: stage C9:WON "WON" closes the deal',
    );
    expect(err).toContain('with deals: one-open every event would make another deal');
    if (crm.name === 'amocrm')
      expect(err).toContain('other channels: stage 100 "Incoming" is the pipeline\'s Incoming stage');
    // per-conversation reuses the chat's deal whatever its stage: a closed stage is allowed there.
    const perConversation = capture();
    const allowed = configFile(crm, {
      deals: 'per-conversation',
      stage: { byChannel: { 'shop-site': crm.name === 'amocrm' ? 142 : 'C9:WON' } },
    });
    expect(
      await runCli(['crm', 'check', '--destination', 'crm', '--config', allowed], perConversation.io),
    ).toBe(0);
    expect(perConversation.out.join('\n')).toMatch(/closes the deal/);
  });

  it('a refused credential: the CRM reason, exit 1, no secret printed', async () => {
    const crm = await world();
    crm.rejectCredential(true);
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(crm)], run.io)).toBe(
      1,
    );
    const err = run.err.join('\n');
    expect(err).toMatch(crm.name === 'amocrm' ? /token rejected by amoCRM/ : /webhook rejected by Bitrix24/);
    // A wrong subdomain is refused like a bad token: the message names both.
    if (crm.name === 'amocrm') expect(err).toContain('or baseUrl is not the account the token was made in');
    for (const secret of crm.secrets) expect([...run.out, ...run.err].join('\n')).not.toContain(secret);
  });

  it('refuses bad usage and unknown destinations (exit 2, DESIGN §5: as an unknown channel)', async () => {
    const crm = await world();
    const usage = capture();
    expect(await runCli(['crm', 'check'], usage.io)).toBe(2);
    expect(usage.err[0]).toContain('needs --destination ID');
    const unknown = capture();
    expect(
      await runCli(['crm', 'check', '--destination', 'nope', '--config', configFile(crm)], unknown.io),
    ).toBe(2);
    expect(unknown.err[0]).toContain("no destination 'nope'");
  });
});

describe('chatbridge crm check: amoCRM at a wrong address', () => {
  it('an account read answered 404 (baseUrl not the account) is an error, not an empty account (exit 1)', async () => {
    const crm = await amoWorld();
    cleanups.push(() => crm.close());
    crm.fake.failNext(1000, { status: 404, body: 'Not Found' });
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(crm)], run.io)).toBe(
      1,
    );
    expect(run.err.join('\n')).toMatch(/amoCRM answered account read with HTTP 404.*baseUrl/);
    expect(run.out.join('\n')).not.toContain('crm: OK');
  });
});

describe('chatbridge crm check: a Bitrix24 portal with more than one page of users', () => {
  it('reads every page of user.get (50 a page): users past the first page are found, not reported missing', async () => {
    const users = Array.from({ length: 60 }, (_, index) => ({
      ID: String(index + 1),
      NAME: `User${index + 1}`,
      EMAIL: `user${index + 1}@shop.example`,
    }));
    const fake = await startFakeBitrix24({ code: 'code0123456789', users });
    cleanups.push(() => fake.close());
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-crm-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      stringify({
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        agents: [
          { email: 'user55@shop.example', name: 'Fifty-five' },
          { email: 'nobody@store.example', name: 'Nobody', crmUserId: 58 },
        ],
        channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
        destinations: [
          {
            id: 'crm',
            kind: 'bitrix24',
            webhookUrl: fake.webhookUrl,
            crm: { pipeline: { default: 0 }, responsible: { default: 60 }, rateLimit: 50 },
          },
        ],
      }),
    );
    const run = capture();
    const code = await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io);
    expect(run.err).toEqual([]);
    expect(code).toBe(0);
    const out = run.out.join('\n');
    expect(out).toContain('60 user(s)');
    expect(out).toContain('default -> user 60 "User60"');
    expect(out).toContain('agent user55@shop.example -> user 55 "User55" (same e-mail)');
    expect(out).toContain('agent nobody@store.example -> user 58 "User58" (agents[].crmUserId)');
  });
});

describe('chatbridge crm check: a Bitrix24 webhook without a scope it needs', () => {
  async function check(scopes: string[], events?: string[]) {
    const fake = await startFakeBitrix24({ code: 'code0123456789', scopes });
    cleanups.push(() => fake.close());
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-crm-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      stringify({
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        agents: [{ email: 'admin@shop.example', name: 'Admin' }],
        channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
        destinations: [
          {
            id: 'crm',
            kind: 'bitrix24',
            webhookUrl: fake.webhookUrl,
            ...(events ? { events } : {}),
            crm: { pipeline: { default: 0 }, responsible: { default: 1 }, rateLimit: 50 },
          },
        ],
      }),
    );
    const run = capture();
    const code = await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io);
    return { code, out: run.out.join('\n'), err: run.err.join('\n'), requests: fake.requests.length };
  }

  it('no task scope: offline messages could not become tasks, so the check fails and says which scope to tick (unless no offline message is routed)', async () => {
    const missing = await check(['crm', 'user']);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/the webhook lacks the scope task/);
    expect(missing.err).toContain('offline_message.received');
    // One request still.
    expect(missing.requests).toBe(1);
    const notNeeded = await check(['crm', 'user'], ['conversation.started', 'conversation.finished']);
    expect(notNeeded.err).toBe('');
    expect(notNeeded.code).toBe(0);
    expect(notNeeded.out).toMatch(/the webhook lacks the scope task/);
  });

  it('no crm scope: the check says so, not merely that the webhook was refused', async () => {
    const result = await check(['user', 'task']);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/the webhook lacks the scope crm \(it has: user, task\)/);
  });

  it('no user scope, or user_brief only (no e-mails): responsible by e-mail is off, said, and the check passes as deliveries do', async () => {
    for (const scopes of [
      ['crm', 'task'],
      ['crm', 'task', 'user_brief'],
    ]) {
      const result = await check(scopes);
      expect(result.err, scopes.join()).toBe('');
      expect(result.code).toBe(0);
      expect(result.out).toMatch(/users not readable: the webhook lacks the scope user or user_basic/);
      expect(result.out).toContain('so no responsible by e-mail');
    }
  });
});

describe('chatbridge crm check: amoCRM with a token that may not list users', () => {
  it('a non-admin token (users are listed to admins only) is usable: the check says responsible by e-mail is off and passes (exit 0), as deliveries go on with the fallbacks', async () => {
    const crm = await amoWorld();
    cleanups.push(() => crm.close());
    crm.fake.nonAdminToken = true;
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', configFile(crm)], run.io)).toBe(
      0,
    );
    const out = run.out.join('\n');
    expect(out).toMatch(/deals:\n {4}channel shop-site -> pipeline 7001 "Shop chats", stage 112 "Talking"/);
    expect(out).toMatch(/users not readable: access refused by amoCRM for users list \(HTTP 403/);
    expect(out).toContain('so no responsible by e-mail; agents[].crmUserId, then user 501 (not checked)');
    expect(out).toContain('crm: OK');
    expect(run.err).toEqual([]);
  });
});

describe('chatbridge crm check: amoCRM long-lived token', () => {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  /** A long-lived token as amoCRM makes them: a JWT (signature not checked by the bridge). */
  const jwt = (exp: number) => `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ exp })}.c2lnbmF0dXJlLWJ5dGVz`;
  const DAY_S = 86_400;
  const nowS = () => Math.floor(Date.now() / 1000);

  /** The fake account takes `token`, and the config sends it. */
  async function withToken(token: string) {
    const crm = await amoWorld();
    cleanups.push(() => crm.close());
    crm.fake.token = token;
    const file = configFile(crm);
    writeFileSync(file, readFileSync(file, 'utf8').replace(crm.secrets[0]!, token));
    return { crm, file };
  }

  it('says until when the long-lived token (a JWT) is valid', async () => {
    const token = jwt(4102444800);
    const { file } = await withToken(token);
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(0);
    expect(run.out[1]).toMatch(/^ {2}token expires at 2100-01-01T00:00:00\.000Z \(in \d+ days\)$/);
    expect(run.err).toEqual([]);
    expect([...run.out, ...run.err].join('\n')).not.toContain(token);
  });

  it('a token expiring in under 14 days: the check passes (exit 0) with a warning on stderr saying when and what to do', async () => {
    // 5 days and an hour: "in 5 days" whatever the few seconds the check takes.
    const token = jwt(nowS() + 5 * DAY_S + 3600);
    const { file } = await withToken(token);
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(0);
    expect(run.out[1]).toMatch(/^ {2}token expires at \S+ \(in 5 days\)$/);
    expect(run.out.at(-1)).toBe('crm: OK');
    expect(run.err).toHaveLength(1);
    expect(run.err[0]).toMatch(
      /^warning: crm: token expires at \S+, in 5 days: then every delivery to amoCRM fails with 401 until it is replaced; generate a new long-lived token/,
    );
    expect([...run.out, ...run.err].join('\n')).not.toContain(token);
  });

  it('an expired token: exit 1 saying when it expired and what to do, without calling amoCRM', async () => {
    const token = jwt(nowS() - DAY_S);
    const { crm, file } = await withToken(token);
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(1);
    expect(run.out).toEqual([]);
    expect(run.err).toEqual([
      expect.stringMatching(
        /^chatbridge: crm: token expired at \S+: amoCRM refuses it \(401\) and deliveries fail; generate a new long-lived token .*, then replay the failed deliveries$/,
      ),
    ]);
    expect(crm.fake.requests).toEqual([]);
    expect(run.err.join('\n')).not.toContain(token);
  });

  it('a token that is not a JWT: its expiry is unknown, said, and no error', async () => {
    const { file } = await withToken('amo-opaque-token-0123456789abcdef');
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(0);
    expect(run.out[1]).toBe(
      '  token expiry unknown (not a JWT with an exp claim): nothing can warn before amoCRM refuses it',
    );
    expect(run.err).toEqual([]);
  });

  it('a token whose exp no date can hold (microseconds, not seconds) is checked with its expiry unknown, not a crash', async () => {
    const { file } = await withToken(jwt(4102444800000000));
    const run = capture();
    expect(await runCli(['crm', 'check', '--destination', 'crm', '--config', file], run.io)).toBe(0);
    expect(run.out[1]).toMatch(/^ {2}token expiry unknown/);
    expect(run.out.join('\n')).toContain('crm: OK');
  });
});

describe('chatbridge crm check: without --destination', () => {
  /** A config with these destinations (the worlds' CRMs under their own ids, and a webhook). */
  function configWith(destinations: Record<string, unknown>[]): string {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-crm-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(
      file,
      stringify({
        admin: { token: 'admin-token-0123456789' },
        log: { level: 'silent' },
        channels: [{ id: 'shop-site', vendor: 'jivochat', token: 'jivo-token-0123456789abcdef' }],
        destinations,
      }),
    );
    return file;
  }
  const webhook = {
    id: 'events',
    url: 'http://127.0.0.1:9/events',
    secret: `whsec_${Buffer.from('crm-cli-test-secret-0123456789ab').toString('base64')}`,
  };

  it('is bad usage (exit 2) that names the CRM destinations it could check, and calls no CRM', async () => {
    const amo = await amoWorld();
    cleanups.push(() => amo.close());
    const bitrix = await bitrixWorld();
    cleanups.push(() => bitrix.close());
    const file = configWith([webhook, amo.destination({ id: 'amo' }), bitrix.destination({ id: 'b24' })]);
    const run = capture();
    expect(await runCli(['crm', 'check', '--config', file], run.io)).toBe(2);
    expect(run.err[0]).toBe(
      `chatbridge: 'crm check' needs --destination ID: the CRM destinations in ${file}: amo (amoCRM), b24 (Bitrix24)`,
    );
    expect(run.out).toEqual([]);
    // A wrong one, or the webhook, names them too.
    const unknown = capture();
    expect(await runCli(['crm', 'check', '--destination', 'amo2', '--config', file], unknown.io)).toBe(2);
    expect(unknown.err[0]).toBe(
      `chatbridge: no destination 'amo2' in the config: the CRM destinations in ${file}: amo (amoCRM), b24 (Bitrix24)`,
    );
    const notCrm = capture();
    expect(await runCli(['crm', 'check', '--destination', 'events', '--config', file], notCrm.io)).toBe(2);
    expect(notCrm.err[0]).toBe(
      `chatbridge: destination 'events' is a webhook, not a CRM (kind: amocrm or bitrix24): the CRM destinations in ${file}: amo (amoCRM), b24 (Bitrix24)`,
    );
    expect(amo.requestCount() + bitrix.requestCount()).toBe(0);
    for (const secret of [...amo.secrets, ...bitrix.secrets])
      expect([...run.err, ...unknown.err, ...notCrm.err].join('\n')).not.toContain(secret);
  });

  it('a config without a CRM destination says so, naming the file read (the example, when --config was left out)', async () => {
    const run = capture();
    expect(await runCli(['crm', 'check', '--config', configWith([webhook])], run.io)).toBe(2);
    expect(run.err[0]).toMatch(
      /needs --destination ID: \S+bridge\.yaml has no CRM destination \(a destination with kind: amocrm or bitrix24/,
    );
    // The example (nothing else found) is what a newcomer's `chatbridge crm check` reads.
    const example = capture();
    expect(await runCli(['crm', 'check', '--config', 'config/bridge.example.yaml'], example.io)).toBe(2);
    expect(example.err[0]).toBe(
      `chatbridge: 'crm check' needs --destination ID: config/bridge.example.yaml has no CRM destination (a destination with kind: amocrm or bitrix24; README "Connect your CRM")`,
    );
    // Its webhook destination: the kinds said once, not once per half of the line.
    const notCrm = capture();
    expect(
      await runCli(
        ['crm', 'check', '--destination', 'example-crm', '--config', 'config/bridge.example.yaml'],
        notCrm.io,
      ),
    ).toBe(2);
    expect(notCrm.err[0]).toBe(
      `chatbridge: destination 'example-crm' is a webhook, not a CRM: config/bridge.example.yaml has no CRM destination (a destination with kind: amocrm or bitrix24; README "Connect your CRM")`,
    );
  });

  it('a config that does not load: still bad usage (exit 2), said first, without the list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chatbridge-crm-'));
    const broken = join(dir, 'bridge.yaml');
    writeFileSync(broken, 'destinations: [\n');
    const run = capture();
    expect(await runCli(['crm', 'check', '--config', broken], run.io)).toBe(2);
    // The config check it names reads the same file: without --config it read the default config,
    // which may load, and said nothing of this one.
    expect(run.err[0]).toBe(
      `chatbridge: 'crm check' needs --destination ID (the config does not load, so what it offers is not listed: chatbridge config check --config ${broken} says why)`,
    );
    const named = capture();
    expect(
      await runCli(['crm', 'check', '--config', broken], { ...named.io, program: 'node bin/chatbridge.js' }),
    ).toBe(2);
    expect(named.err[0]).toContain(': node bin/chatbridge.js config check --config ');
  });
});

describe('chatbridge crm check --help', () => {
  it('says what a check records and what an expiring token does to it, naming the CLI as run', async () => {
    // These facts were in a usage text of src/cli/crm.ts that nothing printed (the CLI's --help is
    // its own): a newcomer asking --help never learnt that an expired token fails the check, nor
    // where its outcome goes.
    const program = 'node bin/chatbridge.js';
    const run = capture();
    expect(await runCli(['crm', 'check', '--help'], { ...run.io, program })).toBe(0);
    const text = run.out.join('\n');
    expect(text.split('\n')[0]).toBe(`Usage: ${program} crm check --destination ID [--config FILE]`);
    const words = text.replace(/\s+/g, ' ');
    expect(words).toContain('a warning when it expires within 14 days, exit 1 once it has expired');
    expect(words).toContain("the console's Status page shows the last one");
    expect(words).toContain('nothing is recorded on the in-memory store');
    expect(text).not.toMatch(/(^|[^/])chatbridge (crm|<)/m);
  });
});
