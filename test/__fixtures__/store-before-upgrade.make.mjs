// Generates test/__fixtures__/store-before-upgrade.<sha>.json with an OLD build of chatbridge,
// run as the real binary (bin/chatbridge.js) on a private redis-server, then stopped as an
// operator would before an upgrade. test/upgrade.old-store.test.ts loads the keys and runs
// today's bridge on them.
//
// Usage (from this repository's root, with today's node_modules):
//   git worktree add --detach /tmp/old-<sha> <sha> && ln -s "$PWD/node_modules" /tmp/old-<sha>/
//   (cd /tmp/old-<sha> && npx tsc -p tsconfig.build.json)
//   node test/__fixtures__/store-before-upgrade.make.mjs /tmp/old-<sha> kill test/__fixtures__/store-before-upgrade.<sha>.json
// The second argument is how the old processes end: `term` (SIGTERM) or `kill` (kill -9).
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

const [, , oldDir, mode, out] = process.argv;
if (!oldDir || !['term', 'kill'].includes(mode) || !out) {
  console.error('usage: node store-before-upgrade.make.mjs <old worktree with dist/> term|kill <out.json>');
  process.exit(2);
}
const commit = execFileSync('git', ['-C', oldDir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
const commitDate = execFileSync('git', ['-C', oldDir, 'log', '-1', '--format=%cI'], { encoding: 'utf8' }).trim();

const PREFIX = 'upg';
const ADMIN = 'upgrade-admin-token-000000001';
const JIVO = 'upgrade-jivo-token-0000000001';
const LT = 'upgrade-livetex-token-000001';
const CV = 'upgrade-chatvisor-token-0001';
const CV_API = 'cv-api-token-0001';
const SECRET = `whsec_${Buffer.alloc(24, 9).toString('base64')}`;
const MASTER = Buffer.alloc(32, 7).toString('base64');
const BACKLOG = 40;

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Payloads: the old version's own vendor fixtures, one person each (identifiers unique per tag).
const fixture = (path) => JSON.parse(readFileSync(join(oldDir, path), 'utf8'));
const TAGS = { upg: 1, upglt: 2, upgbl: 3 };
const who = (tag, i) => ({
  person: `${tag}-p-${i}`,
  email: `${tag}.${i}@fault.example`,
  phone: `+7926${TAGS[tag]}${String(i).padStart(6, '0')}`,
  name: `Fault Person ${i}`,
  visitor: String(TAGS[tag] * 100_000 + i),
});
const jivoBody = (file, p, ids) => {
  const body = fixture(`adapters/jivochat/__fixtures__/${file}`);
  body.user_token = p.person;
  body.visitor = { ...body.visitor, name: p.name, email: p.email, phone: p.phone, number: p.visitor };
  return Object.assign(body, ids);
};
const chatAccepted = (p, chatId) => jivoBody('chat_accepted.json', p, { chat_id: chatId });
const chatFinished = (p, chatId) => jivoBody('chat_finished.json', p, { chat_id: chatId });
const dialogClosed = (p, dialogId) => {
  const body = fixture('adapters/livetex/__fixtures__/dialog_closed.web.json');
  body.Conversation.id = dialogId;
  body.discourser = {
    ...body.discourser,
    id: `lt-${p.visitor}`,
    name: p.name,
    personId: p.person,
    visitorToken: `vt-${p.visitor}`,
    contacts: [
      { type: 'email', value: p.email },
      { type: 'phone', value: p.phone },
    ],
  };
  return body;
};

async function call(base, method, path, body, headers = {}) {
  const response = await fetch(base + path, {
    method,
    redirect: 'manual',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  if (response.status >= 400) throw new Error(`${method} ${path}: ${response.status} ${text.slice(0, 300)}`);
  return { status: response.status, body: parsed, headers: response.headers };
}
const admin = (base, method, path, body) => call(base, method, path, body, { authorization: `Bearer ${ADMIN}` });

async function spawnOld(config, role) {
  const port = await freePort();
  const child = spawn(process.execPath, ['bin/chatbridge.js', 'start', '--config', config, '--role', role], {
    cwd: oldDir,
    env: { ...process.env, PORT: String(port), CHATBRIDGE_CONFIG: '', REDIS_URL: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (chunk) => {
    err += chunk;
  });
  const exited = once(child, 'exit');
  const url = `http://127.0.0.1:${port}`;
  for (let tries = 0; ; tries++) {
    if (child.exitCode !== null) throw new Error(`old bridge exited: ${err}`);
    if (await fetch(`${url}/readyz`).then((r) => r.ok, () => false)) break;
    if (tries > 300) throw new Error(`old bridge not ready: ${err}`);
    await sleep(100);
  }
  return {
    url,
    async end() {
      child.kill(mode === 'kill' ? 'SIGKILL' : 'SIGTERM');
      await exited;
    },
  };
}

const redisPort = await freePort();
const redisServer = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
  stdio: 'ignore',
});
// A failure below must not leave the server behind ('exit' handlers run synchronously: SIGKILL).
process.on('exit', () => redisServer.kill('SIGKILL'));
// Commands wait in ioredis's offline queue while the server starts.
const redis = new Redis(`redis://127.0.0.1:${redisPort}`);
redis.on('error', () => {});
await redis.ping();
const { startFakeChatvisor } = await import(join(oldDir, 'dist/adapters/chatvisor/test-support/fake-chatvisor.js'));
const cv = await startFakeChatvisor({ token: CV_API });
const customers = [
  { customerId: 'cv-c-1', email: 'upg.0@fault.example', firstname: 'Chat', lastname: 'Visor' },
  { customerId: 'cv-c-2', email: 'cv.only@fault.example', firstname: 'Only', lastname: 'Cv' },
];
for (const customer of customers) cv.addCustomer(customer);
// Nothing listens here: every delivery fails its first attempt and waits for a retry.
const receiverPort = await freePort();
const dir = mkdtempSync(join(tmpdir(), 'chatbridge-upgrade-fixture-'));
const config = join(dir, 'bridge.yaml');
writeFileSync(
  config,
  `server: { port: 3000, host: 127.0.0.1, shutdownTimeoutMs: 3000 }
metrics: { port: 0 }
store: { redis: "redis://127.0.0.1:${redisPort}", keyPrefix: "${PREFIX}" }
admin: { token: "${ADMIN}" }
secrets: { masterKey: "${MASTER}" }
log: { level: warn }
identity: { mergeOn: [person, email, phone], defaultCountry: RU }
intake: { ackAfterAppend: true }
channels:
  - { id: site, vendor: jivochat, token: "${JIVO}", personIdFrom: user_token }
  - { id: app, vendor: livetex, token: "${LT}" }
  - { id: cobrowse, vendor: chatvisor, token: "${CV}", apiUrl: "${cv.apiUrl}", apiToken: "${CV_API}", schedules: { agentSync: "", conversationPoll: "" } }
destinations:
  - { id: crm, url: "http://127.0.0.1:${receiverPort}/hook", secret: "${SECRET}", retrySchedule: [0s, 3s, 6s, 10s, 20s, 1m, 5m] }
`,
);

const site = `/webhooks/jivochat/site/${JIVO}`;
const old = await spawnOld(config, 'all');
const people = Array.from({ length: 6 }, (_, i) => who('upg', i));
people[3].email = 'ivan@xn--80a1acny.xn--p1ai'; // punycode: today's key is the Unicode form
people[4].phone = '+7 495 123-45-67 доб. 101'; // an extension: today search-only
people[5].name = 'Иванoв Пётр'; // a Latin o among Cyrillic letters
for (const [i, p] of people.entries()) await call(old.url, 'POST', site, chatAccepted(p, 5000 + i));
// Another person id with person 0's e-mail through LiveTex: merged into person 0's contact.
const livetexPerson = { ...who('upglt', 0), email: people[0].email };
await call(old.url, 'POST', `/webhooks/livetex/app/${LT}`, dialogClosed(livetexPerson, 9100));
await call(old.url, 'POST', `/webhooks/chatvisor/cobrowse/${CV}`, cv.conversationPayload('cv-c-1'));
await call(old.url, 'POST', `/webhooks/chatvisor/cobrowse/${CV}`, cv.conversationPayload('cv-c-2'));
// Persons 1 and 2 merged by a shared phone, unmerged by hand, then named together again: a conflict.
await call(old.url, 'POST', site, chatAccepted({ ...people[1], phone: people[2].phone }, 6001));
await sleep(1000);
const p1 = (await admin(old.url, 'GET', `/api/v1/contacts?identity=${encodeURIComponent(`person:${people[1].person}`)}`)).body
  .contacts[0];
await admin(old.url, 'POST', `/api/v1/contacts/${p1.id}/unmerge`, { identifier: { kind: 'person', value: people[2].person } });
await call(old.url, 'POST', site, chatAccepted({ ...people[2], email: people[1].email }, 6002));
const livetexKey = (await admin(old.url, 'POST', '/api/v1/channels/app/keys')).body;
// A console session signed in on the old version.
const signIn = await call(old.url, 'GET', '/console/sign-in');
const pre = /name="_pre" value="([^"]+)"/.exec(String(signIn.body))?.[1];
const signedIn = await fetch(`${old.url}/console/sign-in`, {
  method: 'POST',
  redirect: 'manual',
  headers: {
    'content-type': 'application/x-www-form-urlencoded',
    cookie: signIn.headers.getSetCookie().map((c) => c.split(';')[0]).join('; '),
  },
  body: new URLSearchParams({ _pre: pre ?? '', token: ADMIN, next: '/console' }).toString(),
});
const consoleCookie = signedIn.headers
  .getSetCookie()
  .map((c) => c.split(';')[0])
  .find((c) => c.startsWith('chatbridge_console='));
await sleep(1500);
const deliveries = (await admin(old.url, 'GET', '/api/v1/deliveries?limit=500')).body.deliveries;
const conflicts = (await admin(old.url, 'GET', '/api/v1/identity/conflicts')).body.conflicts;
const views = {};
for (const p of [...people, livetexPerson]) {
  views[p.person] = (await admin(old.url, 'GET', `/api/v1/contacts?identity=${encodeURIComponent(`person:${p.person}`)}`)).body.contacts[0];
}
await old.end();

// The backlog: a web-only instance acknowledges chat_finished events after the append; no worker.
const web = await spawnOld(config, 'web');
const backlog = [];
for (let i = 0; i < BACKLOG; i++) {
  const p = who('upgbl', i % 10);
  backlog.push({ person: p.person, chatId: 7000 + i });
  await call(web.url, 'POST', site, chatFinished(p, 7000 + i));
}
await web.end();
const deferred = await redis.llen(`${PREFIX}:intake:deferred`);

// Every key under the prefix, without it. Left out: BullMQ's event stream (a log nothing reads
// back) and the readiness probe's key.
const keys = [];
for (const full of (await redis.keys(`${PREFIX}:*`)).sort()) {
  const key = full.slice(PREFIX.length + 1);
  if (key.endsWith(':events') || key.startsWith('ready-probe')) continue;
  const type = await redis.type(full);
  const pttl = await redis.pttl(full);
  const entry = { key, type, ...(pttl > 0 ? { pttl } : {}) };
  if (type === 'string') entry.value = await redis.get(full);
  else if (type === 'hash') entry.fields = await redis.hgetall(full);
  else if (type === 'list') entry.values = await redis.lrange(full, 0, -1);
  else if (type === 'set') entry.members = (await redis.smembers(full)).sort();
  else if (type === 'zset') entry.scored = await redis.zrange(full, 0, -1, 'WITHSCORES');
  else throw new Error(`${full}: a ${type} key, not expected`);
  keys.push(entry);
}
const document = {
  about: `Keys as the bridge of commit ${commit} (${commitDate}) left them in Redis: its real binary received the webhooks below (JivoChat, LiveTex, Chatvisor) with its destination's receiver down, made a LiveTex key and a console session, was stopped (${mode === 'kill' ? 'kill -9' : 'SIGTERM'}); then a --role web instance of it acknowledged ${BACKLOG} chat_finished events after the append (intake.ackAfterAppend) and was stopped the same way, leaving them in the deferred list. Made by test/__fixtures__/store-before-upgrade.make.mjs.`,
  commit,
  mode,
  config: { admin: ADMIN, jivo: JIVO, livetex: LT, chatvisor: CV, chatvisorApiToken: CV_API, secret: SECRET, masterKey: MASTER },
  customers,
  people: people.map((p) => p.person),
  livetexPerson: livetexPerson.person,
  backlog,
  deferred,
  livetexKey,
  consoleCookie,
  deliveries,
  conflicts,
  views,
};
// One line per key: the file stays readable and its diffs small.
const head = JSON.stringify(document, null, 1).replace(/\n}$/, '');
writeFileSync(out, `${head},\n "keys": [\n${keys.map((entry) => `  ${JSON.stringify(entry)}`).join(',\n')}\n ]\n}\n`);
console.log(`${out}: ${keys.length} keys, ${deliveries.length} deliveries (${deliveries.filter((d) => d.state === 'pending').length} pending), ${deferred} deferred`);
redis.disconnect();
await cv.close();
redisServer.kill('SIGTERM');
await once(redisServer, 'exit');
