import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { defaultRegistry } from '../src/registry.js';

/** What a newcomer's mistakes in the config file read like (`chatbridge config check`). */

const SECRET = `whsec_${Buffer.from('config-wording-secret-0123456789').toString('base64')}`;
const valid = () => ({
  admin: { token: 'a'.repeat(20) },
  channels: [{ id: 'shop', vendor: 'jivochat', token: 't'.repeat(20) }],
  destinations: [{ id: 'crm', url: 'https://crm.example/hook', secret: SECRET }],
});

function problems(document: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(document, defaultRegistry(), env);
  } catch (error) {
    if (error instanceof ConfigError)
      return (error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  return [];
}

function loadProblems(text: string | Buffer, env: NodeJS.ProcessEnv = {}): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'chatbridge-wording-'));
  const file = join(dir, 'bridge.yaml');
  writeFileSync(file, text);
  try {
    loadConfig(file, defaultRegistry(), env, dir);
  } catch (error) {
    if (error instanceof ConfigError)
      return [error.message, ...(error.issues ?? []).map((issue) => `${issue.path}: ${issue.message}`)];
    throw error;
  }
  return [];
}

describe('config wording', () => {
  it('the valid base document passes', () => {
    expect(problems(valid())).toEqual([]);
  });

  it('an unknown key is reported at its own path, with the key meant when one is close', () => {
    const document = valid() as Record<string, unknown>;
    document.server = { hots: '127.0.0.1' };
    document.adminn = {};
    document.channels = [{ ...valid().channels[0], personIdFrm: 'user_token', reply: { crmLnk: 'x' } }];
    document.destinations = [
      { ...valid().destinations[0], retrySchedul: ['1s'], filter: { chanels: ['shop'] } },
      { id: 'amo', kind: 'amocrm', baseUrl: 'https://shop.amocrm.ru', token: 'x', concurency: 2 },
    ];
    const found = problems(document);
    expect(found).toEqual(
      expect.arrayContaining([
        'server.hots: unknown key (did you mean "host"?)',
        'adminn: unknown key (did you mean "admin"?)',
        'channels[0].personIdFrm: unknown key (did you mean "personIdFrom"?)',
        'channels[0].reply.crmLnk: unknown key (did you mean "crmLink"?)',
        'destinations[0].retrySchedul: unknown key (did you mean "retrySchedule"?)',
        'destinations[0].filter.chanels: unknown key (did you mean "channels"?)',
        'destinations[1].concurency: unknown key (did you mean "concurrency"?)',
      ]),
    );
    // Nothing at the parent object, zod's "Unrecognized key" wording is gone.
    expect(found.join('\n')).not.toContain('Unrecognized');
  });

  it('an unknown key nothing is close to lists the keys allowed there', () => {
    const found = problems({ ...valid(), log: { verbosity: 'debug' } });
    expect(found).toEqual(['log.verbosity: unknown key (allowed here: level)']);
  });

  it('a number or boolean where text is expected says to write it in quotes', () => {
    const document = valid();
    (document.admin as { token: unknown }).token = 1234567890123456;
    (document.channels[0] as Record<string, unknown>).name = true;
    const found = problems(document);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^admin\.token: expected text, got the number \d+: write it in quotes/),
        'channels[0].name: expected text, got the boolean true: write it in quotes ("...")',
      ]),
    );
    // A vendor's own setting too (checked against the adapter's schema).
    const chatvisor = problems({
      ...valid(),
      channels: [{ id: 'cv', vendor: 'chatvisor', token: 't'.repeat(20), apiToken: 12345 }],
    });
    expect(chatvisor).toEqual([
      'channels[0].apiToken: expected text, got the number 12345: write it in quotes ("...")',
    ]);
  });

  it('from a file too: an unquoted numeric token', () => {
    const found = loadProblems(
      'admin:\n  token: 12345678901234567890\nchannels:\n  - {id: shop, vendor: jivochat, token: abcdefghijklmnopq}\n',
    );
    expect(found[1]).toMatch(/^admin\.token: expected text, got the number .*: write it in quotes/);
  });

  it('a number, text or list out of bounds says the bound and what it got, not zod\'s "Too small: expected number to be >=2"', () => {
    const found = loadProblems(
      [
        'admin: {token: abcdefghijklmnopqrst}',
        'server: {bodyLimitBytes: 0}',
        'identity: {maxMergeSize: 1}',
        'metrics: {port: 70000}',
        'agents:',
        '  - {email: oleg@shop.example, name: ""}',
        'destinations:',
        '  - {id: crm, url: "https://crm.example/hook", secret: whsec_ZXhhbXBsZS1zZWNyZXQtY2hhbmdlLW1lLTAx, events: []}',
        '',
      ].join('\n'),
    );
    expect(found.slice(1)).toEqual(
      expect.arrayContaining([
        'server.bodyLimitBytes: more than 0, got 0',
        'identity.maxMergeSize: at least 2, got 1',
        'metrics.port: at most 65535, got 70000',
        'agents[0].name: must not be empty',
        'destinations[0].events: at least 1 item, got none',
      ]),
    );
    expect(found.join('\n')).not.toMatch(/Too small|Too big/);
  });

  it('a value not among the allowed ones lists them, says what it got and the one meant when one is close', () => {
    const found = loadProblems(
      [
        'admin: {token: abcdefghijklmnopqrst}',
        'identity: {mergeOn: [person, emial]}',
        'log: {level: verbose}',
        'channels:',
        '  - {id: cv, vendor: chatvisor, token: abcdefghijklmnopq, apiToken: abcdefghijklmnop, onRemovedAgent: delet}',
        '',
      ].join('\n'),
    );
    expect(found.slice(1)).toEqual(
      expect.arrayContaining([
        'identity.mergeOn[1]: one of person, email, phone; got the text "emial" (did you mean "email"?)',
        'log.level: one of fatal, error, warn, info, debug, trace, silent; got the text "verbose"',
        'channels[0].onRemovedAgent: one of deactivate, delete, ignore; got the text "delet" (did you mean "delete"?)',
      ]),
    );
    expect(found.join('\n')).not.toContain('Invalid option');
  });

  it('a URL left out is required, not "an http:// or https:// URL" as if one were written wrong', () => {
    const document = valid() as Record<string, unknown>;
    document.destinations = [{ id: 'crm', secret: valid().destinations[0]!.secret }];
    document.attributeSources = [{ id: 'crm' }];
    expect(problems(document)).toEqual([
      'attributeSources[0].url: required',
      'destinations[0].url: required',
    ]);
    document.destinations = [{ ...valid().destinations[0], url: 'ftp://crm.example/hook' }];
    document.attributeSources = [];
    expect(problems(document)).toEqual([
      'destinations[0].url: an http:// or https:// URL (https://…), got the text "ftp://crm.example/hook"',
    ]);
  });

  it("a JivoChat reply.crmLink written wrong is one problem with its path, not zod's error as JSON", () => {
    // config check printed `chatbridge: [ { "code": "custom", "message": "an absolute http(s)
    // URL, …", "path": ["reply", "crmLink"] } ]` and nothing else: the channel's cross-field check
    // (checkConfig) parsed the settings that had already failed, and threw.
    const document = {
      ...valid(),
      channels: [
        {
          id: 'site',
          vendor: 'jivochat',
          token: 'jivo-token-0123456789ab',
          reply: { crmLink: 'crm.example/{contactId}' },
        },
        {
          id: 'cv',
          vendor: 'chatvisor',
          token: 'cv-token-0123456789abcd',
          apiUrl: 'api.chatvisor.com',
          apiToken: 'cv-api-token-0123456789',
        },
      ],
    };
    expect(problems(document)).toEqual([
      'channels[0].reply.crmLink: an absolute http(s) URL, e.g. https://crm.example/contacts/{crmId}',
      'channels[1].apiUrl: an http:// or https:// URL (https://…), got the text "api.chatvisor.com"',
    ]);
  });

  it('a key written one level too high says the section it belongs under', () => {
    // `timelineRetention: 1d` at the top said only "unknown key (allowed here: server, store,
    // admin, …)": the newcomer had the right key in the wrong place and was not told where.
    expect(problems({ ...valid(), timelineRetention: '1d', port: 3000 })).toEqual([
      'timelineRetention: unknown key here (did you mean limits.timelineRetention?)',
      'port: unknown key here (did you mean server.port or metrics.port?)',
    ]);
    // A typo still gets its "did you mean".
    expect(problems({ ...valid(), server: { hots: '127.0.0.1' } })).toEqual([
      'server.hots: unknown key (did you mean "host"?)',
    ]);
  });

  it('a Redis address without its scheme is one problem saying what to write, not also a bad database', () => {
    // store.redis: localhost:6379 was two problems, the second about a database "6379" (the URL
    // parser took localhost: for the scheme and 6379 for the path) that nobody had written.
    // What was written is not quoted back: the URL may hold the password.
    for (const redis of ['localhost:6379', '127.0.0.1:6379/0', 'user:s3cret@10.0.0.5:6379'])
      expect(problems({ ...valid(), store: { redis } }), redis).toEqual([
        'store.redis: a redis:// or rediss:// URL, like redis://127.0.0.1:6379/0 (it starts with neither)',
      ]);
  });

  it('a webhook url, an attribute source url and a CRM baseUrl written wrong read alike: what to write and what the file holds', () => {
    // A webhook destination's url said only "an http:// or https:// URL" where an amoCRM
    // baseUrl, one line below in the same file, also said what the file held.
    const document = {
      ...valid(),
      server: { publicUrl: 'bridge.example.com' },
      attributeSources: [{ id: 'crm', url: 'crm.example/lookup' }],
      destinations: [
        { ...valid().destinations[0], url: 'ftp://crm.example/hook' },
        { id: 'amo', kind: 'amocrm', baseUrl: 'ftp://shop.amocrm.ru', token: 'x'.repeat(40) },
      ],
    };
    expect(problems(document)).toEqual([
      'server.publicUrl: an http:// or https:// URL (https://…), got the text "bridge.example.com"',
      'attributeSources[0].url: an http:// or https:// URL (https://…), got the text "crm.example/lookup"',
      'destinations[0].url: an http:// or https:// URL (https://…), got the text "ftp://crm.example/hook"',
      'destinations[1].baseUrl: an http:// or https:// URL (https://…), got the text "ftp://shop.amocrm.ru"',
    ]);
  });

  it('a value of the wrong shape says what is expected and what YAML made of it, not zod\'s "Invalid input"', () => {
    // Each was `Invalid input: expected int, received number` and the like: zod's words, naming
    // neither what to write nor that `mergeOn: email` wants a list or an empty `admin:` a section.
    const found = loadProblems(
      [
        'admin:',
        'server:',
        '  port: abc',
        '  shutdownTimeoutMs: 2.5',
        'identity:',
        '  mergeOn: email',
        'intake:',
        '  ackAfterAppend: yes',
        'channels:',
        '  - {id: cv, vendor: chatvisor, token: abcdefghijklmnopq, apiToken: abcdefghijklmnop, labels: "{person}", schedules: "* * * * *"}',
        '',
      ].join('\n'),
    );
    expect(found.slice(1)).toEqual(
      expect.arrayContaining([
        'admin: expected a section (key: value lines indented under it), got nothing: the key has no value',
        'server.port: expected a number, got the text "abc"',
        'server.shutdownTimeoutMs: expected a whole number, got the number 2.5',
        'identity.mergeOn: expected a list ([a, b], or one "- item" line each), got the text "email"',
        'intake.ackAfterAppend: expected true or false, got the text "yes"',
        'channels[0].labels: expected a list ([a, b], or one "- item" line each), got the text "{person}"',
        'channels[0].schedules: expected a section (key: value lines indented under it), got the text "* * * * *"',
      ]),
    );
    expect(found.join('\n')).not.toContain('Invalid input');
  });

  describe('a file that is not one UTF-8 YAML mapping says what it is', () => {
    const text =
      'admin:\n  token: abcdefghijklmnopqrst\nchannels:\n  - {id: shop, vendor: jivochat, token: abcdefghijklmnopq, name: Café}\n';

    it('UTF-8, with or without a byte order mark, is read', () => {
      expect(loadProblems(text)).toEqual([]);
      expect(loadProblems(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]))).toEqual([]);
    });

    it('UTF-16 (either byte order) is named, not read as one odd string', () => {
      const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
      const be = Buffer.from(le);
      be.swap16();
      for (const bytes of [le, be]) {
        const [message, ...issues] = loadProblems(bytes);
        expect(message).toMatch(/is UTF-16 .*: save it as UTF-8$/);
        expect(issues).toEqual([]);
      }
    });

    it('Latin-1 is named with its line, not read with U+FFFD in place of letters', () => {
      const [message] = loadProblems(Buffer.from(text, 'latin1'));
      expect(message).toMatch(/is not UTF-8 \(line 4 .*\): save it as UTF-8$/);
    });

    it('an empty file, or one with only comments, says so (not "admin: required")', () => {
      for (const empty of ['', '\n\n', '# nothing yet\n']) {
        expect(loadProblems(empty)).toEqual([
          expect.stringMatching(/ is empty \(no settings.*\): start from /),
        ]);
      }
    });

    it('a second YAML document is named at its line, in words (not a yaml API hint)', () => {
      const found = loadProblems(`${text}---\nserver: {port: 1}\n`);
      expect(found[1]).toBe(
        'line 5, column 1: a second YAML document starts here (after a --- line): the config is one document; remove the --- line or what follows it',
      );
      // A leading --- is one document.
      expect(loadProblems(`---\n${text}`)).toEqual([]);
    });

    it('a list or a string at the top is not a mapping', () => {
      expect(loadProblems('- a\n- b\n')[0]).toMatch(/must be a YAML mapping .*, not a list$/);
      expect(loadProblems('hello\n')[0]).toMatch(/must be a YAML mapping .*, not a string$/);
    });

    it('an alias bomb is refused as a config error, without expanding it', () => {
      let bomb = 'a: &a [x, x, x, x, x, x, x, x, x]\n';
      for (let level = 1; level < 12; level++) {
        const name = String.fromCharCode(97 + level);
        const previous = String.fromCharCode(96 + level);
        bomb += `${name}: &${name} [${new Array(9).fill(`*${previous}`).join(', ')}]\n`;
      }
      const [message, ...issues] = loadProblems(bomb);
      expect(message).toMatch(/YAML aliases \(\*name\) expand to more than 100 copies/);
      expect(issues).toEqual([]);
      // A few aliases (a shared retry schedule) are fine.
      expect(
        loadProblems(
          `${text}destinations:\n` +
            `  - {id: a, url: "https://a.example/", secret: ${SECRET}, retrySchedule: &s [0s, 5s]}\n` +
            `  - {id: b, url: "https://b.example/", secret: ${SECRET}, retrySchedule: *s}\n`,
        ),
      ).toEqual([]);
    });
  });

  describe('${VAR} references', () => {
    const withToken = (token: string) => ({ ...valid(), admin: { token } });

    it('a variable that is set but empty is named as such where a value is required', () => {
      expect(problems(withToken('${ADMIN_TOKEN}'), { ADMIN_TOKEN: '' })).toEqual([
        'admin.token: environment variable ADMIN_TOKEN is set but empty, and a value is required here (write ${ADMIN_TOKEN:-} to allow empty)',
      ]);
      // Not set at all still says so; ${VAR:-} still allows empty; a set one is used.
      expect(problems(withToken('${ADMIN_TOKEN}'))).toEqual([
        'admin.token: environment variable ADMIN_TOKEN is not set (write ${ADMIN_TOKEN:-} to allow empty)',
      ]);
      expect(problems({ ...valid(), store: { redis: '${REDIS_URL:-}' } }, { REDIS_URL: '' })).toEqual([]);
      expect(problems(withToken('${ADMIN_TOKEN}'), { ADMIN_TOKEN: 'a'.repeat(20) })).toEqual([]);
    });

    it('an unclosed ${ or one without a valid name is named, not kept as literal text', () => {
      const tail = 'abcdefghijklmnopqrst';
      expect(problems(withToken('${ADMIN_TOKEN'), { ADMIN_TOKEN: tail })).toEqual([
        'admin.token: "${ADMIN_TOKEN" has no closing }: write ${NAME} or ${NAME:-default} ($${ for a literal ${)',
      ]);
      for (const bad of ['${1ADMIN}', '${ADMIN-TOKEN}', '${}', '${ADMIN:abc}', '${ ADMIN }']) {
        expect(problems(withToken(`${bad}${tail}`)), bad).toEqual([
          `admin.token: "${bad}" is not a variable reference: write \${NAME} or \${NAME:-default} (NAME: letters, digits and _, not starting with a digit; $\${ for a literal \${)`,
        ]);
      }
    });

    it('a substituted value holding ${ is used as it is, not read again', () => {
      const config = parseConfig(withToken('${ADMIN_TOKEN}'), defaultRegistry(), {
        ADMIN_TOKEN: 'pa${ss}word-0123456789',
      });
      expect(config.admin.token).toBe('pa${ss}word-0123456789');
    });

    it('$${ is a literal ${ (the docker-compose escape); other $ are kept as written', () => {
      // There was no way to write ${ in a value (a header, a template): every ${ had to be a
      // reference, and $${X} was "$" followed by X's value.
      const tokenOf = (token: string, env: NodeJS.ProcessEnv = {}) =>
        parseConfig(withToken(token), defaultRegistry(), env).admin.token;
      expect(tokenOf('tpl-$${name}-0123456789')).toBe('tpl-${name}-0123456789');
      expect(tokenOf('$${ unclosed, and $${1X} $${A-B}: all literal')).toBe(
        '${ unclosed, and ${1X} ${A-B}: all literal',
      );
      // Before {, $$ is one $ (an odd one left over opens a reference): $$${X} is $ and X's value,
      // $$$${ is a literal $${.
      expect(tokenOf('pa$$${SECRET}-0123456789', { SECRET: 'word' })).toBe('pa$word-0123456789');
      expect(tokenOf('$$$${X}-0123456789abcdef')).toBe('$${X}-0123456789abcdef');
      // Anywhere else $ and $$ stay as they are (passwords written before the escape existed).
      expect(tokenOf('pa$$w$rd-{x}-0123456789$')).toBe('pa$$w$rd-{x}-0123456789$');
      // The escape is not applied to substituted values, which are never read again.
      expect(tokenOf('${ADMIN_TOKEN}', { ADMIN_TOKEN: 'pa$${ss}word-0123456789' })).toBe(
        'pa$${ss}word-0123456789',
      );
    });
  });

  describe('what two entries cannot share', () => {
    it('metrics.port equal to server.port (or to PORT) is a config problem, not a bind failure at start', () => {
      const same = { ...valid(), server: { port: 3999 }, metrics: { port: 3999 } };
      expect(problems(same)).toEqual([
        'metrics.port: 3999 is also server.port: the metrics listener needs a port of its own (or leave metrics.port out and set metrics.token to serve /metrics on the main port)',
      ]);
      expect(problems({ ...valid(), metrics: { port: '${METRICS_PORT:-9464}' } }, { PORT: '9464' })).toEqual([
        expect.stringMatching(
          /^metrics\.port: 9464 is also PORT \(the environment\), which sets server\.port: /,
        ),
      ]);
      // Port 0 (any free port) twice is two ports; two distinct addresses may share a port number.
      expect(problems({ ...valid(), server: { port: 0 }, metrics: { port: 0 } })).toEqual([]);
      expect(
        problems({
          ...valid(),
          server: { port: 3999, host: '10.0.0.5' },
          metrics: { port: 3999, host: '127.0.0.1' },
        }),
      ).toEqual([]);
      expect(
        problems({
          ...valid(),
          server: { port: 3999, host: '0.0.0.0' },
          metrics: { port: 3999, host: '127.0.0.1' },
        }),
      ).toHaveLength(1);
    });

    it('config check says so (exit 1) instead of passing a config start cannot run', async () => {
      const { runCli } = await import('../src/cli/main.js');
      const dir = mkdtempSync(join(tmpdir(), 'chatbridge-wording-'));
      const file = join(dir, 'bridge.yaml');
      writeFileSync(
        file,
        'server: {port: 3999, host: 127.0.0.1}\nmetrics: {port: 3999}\nadmin: {token: abcdefghijklmnopqrst}\n',
      );
      const err: string[] = [];
      const code = await runCli(['config', 'check', '--config', file], {
        stdout: () => undefined,
        stderr: (line) => err.push(line),
      });
      expect(code).toBe(1);
      expect(err.join('\n')).toContain('metrics.port: 3999 is also server.port');
    });

    it('a duplicate agent e-mail (case ignored) is named: agent sync keys agents by e-mail', () => {
      const agents = [
        { email: 'oleg@shop.example', name: 'Oleg' },
        { email: 'anna@shop.example', name: 'Anna' },
        { email: 'Oleg@Shop.example', name: 'Oleg P.' },
      ];
      expect(problems({ ...valid(), agents })).toEqual([
        'agents[2].email: duplicate agent e-mail "oleg@shop.example" (also agents[0]; e-mails ignore case)',
      ]);
    });

    it('two channels with one token are named: the token is the credential of each webhook URL', () => {
      const token = 't'.repeat(20);
      expect(
        problems({
          ...valid(),
          channels: [
            { id: 'shop', vendor: 'jivochat', token },
            { id: 'app', vendor: 'jivochat', token: 'u'.repeat(20) },
            { id: 'site', vendor: 'jivochat', token },
          ],
        }),
      ).toEqual([
        'channels[2].token: the same token as channels[0]: each channel needs its own (it is the credential in its webhook URL)',
      ]);
    });
  });

  it('a vendor in filter.vendors that is no vendor is named (it filtered out every event)', () => {
    const destination = { ...valid().destinations[0], filter: { vendors: ['jivochat', 'jivo'] } };
    expect(problems({ ...valid(), destinations: [destination] })).toEqual([
      'destinations[0].filter.vendors[1]: unknown vendor "jivo" (known: jivochat, livetex, chatvisor)',
    ]);
  });

  it("an e-mail or URL written wrong says what to write and what the file holds, not zod's 'Invalid email address'", () => {
    const document = {
      ...valid(),
      agents: [{ email: 'anna-at-example.org', name: 'Anna' }],
      destinations: [
        ...valid().destinations,
        { id: 'amo', kind: 'amocrm', baseUrl: 'notaurl', token: 'x'.repeat(40) },
        { id: 'amo2', kind: 'amocrm', baseUrl: 'ftp://shop.amocrm.ru', token: 'x'.repeat(40) },
      ],
    };
    expect(problems(document)).toEqual([
      'agents[0].email: an e-mail address (name@example.org), got the text "anna-at-example.org"',
      'destinations[1].baseUrl: an http:// or https:// URL (https://…), got the text "notaurl"',
      'destinations[2].baseUrl: an http:// or https:// URL (https://…), got the text "ftp://shop.amocrm.ru"',
    ]);
  });
});
