// Generates test/__fixtures__/contacts-before-renormalization.json with an OLD build of chatbridge.
// Usage: node make.mjs <old build dir (has dist/)> <redis url> <out file>
import { writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';

const [, , oldDir, redisUrl, out] = process.argv;
const { createBridge, parseConfig, defaultRegistry, createLogger } = await import(`${oldDir}/dist/src/index.js`);
const prefix = `test:fixture-gen:${Date.now()}`;
const TOKEN = 'old-jivo-token-0001';
const registry = defaultRegistry();
const config = parseConfig(
  {
    server: { port: 0, host: '127.0.0.1' },
    admin: { token: 'fixture-admin-token-0123456789' },
    store: { redis: redisUrl, keyPrefix: prefix },
    log: { level: 'silent' },
    channels: [{ id: 'site', vendor: 'jivochat', token: TOKEN, personIdFrom: 'user_token' }],
  },
  registry,
  {},
);
let clock = Date.parse('2026-11-20T10:00:00.000Z');
const now = () => new Date(clock);
const bridge = await createBridge({ config, registry, logger: createLogger('silent'), now, role: 'web' });
const server = await bridge.listen(0, '127.0.0.1');
const base = `http://127.0.0.1:${server.address().port}`;

const template = JSON.parse(readFileSync(`${oldDir}/adapters/jivochat/__fixtures__/chat_accepted.json`, 'utf8'));
const posted = [];
async function chat(chatId, visitor, userToken = null) {
  clock += 60_000;
  const body = {
    ...template,
    chat_id: chatId,
    user_token: userToken,
    visitor: { description: '', social: {}, chats_count: 1, ...visitor },
  };
  delete body.crm_hint;
  const response = await fetch(`${base}/webhooks/jivochat/site/${TOKEN}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (response.status !== 200) throw new Error(`${chatId}: ${response.status} ${await response.text()}`);
  posted.push({ at: new Date(clock).toISOString(), body });
}

// An IDN address given in punycode (as mail systems and CRMs hand it back).
await chat(5001, { name: 'Анна Смирнова', email: 'Anna@XN--80A1ACNY.XN--P1AI', number: '1001' });
// A phone with an extension: the old engine keyed it by the switchboard number alone.
await chat(5002, { name: 'Олег Петров', phone: '+7 495 123-45-67 доб. 101', number: '1002' });
// One address in both forms: two contacts for the old engine.
await chat(5003, { name: 'Иван Иванов', email: 'ivan@почта.рф', number: '1003' });
await chat(5004, { name: 'Иван И.', email: 'ivan@xn--80a1acny.xn--p1ai', number: '1004' });
// Both forms in one contact, on two records of its group.
await chat(5005, { name: 'Павел Сидоров', email: 'pavel@пример.рф', number: '1005' }, 'cust-pavel');
await chat(5006, { name: 'Павел Сидоров', email: 'pavel@xn--e1afmkfd.xn--p1ai', number: '1006' });
await chat(5007, { name: 'Павел Сидоров', number: '1006' }, 'cust-pavel');
// A contact nothing changes for.
await chat(5008, { name: 'Svetlana Orlova', email: 's.orlova@example.org', phone: '8 (905) 777-01-23', number: '1008' });
// The number seen with an extension and without one: its key stays.
await chat(5009, { name: 'Марина Ким', phone: '+7 812 555-00-11 доб. 7', number: '1009' });
await chat(5010, { name: 'Марина Ким', phone: '+7 812 555-00-11', number: '1009' });

const contacts = bridge.context.contacts;
const ids = {};
for (const [name, number] of [['anna', '1001'], ['oleg', '1002'], ['ivan', '1003'], ['ivanPunycode', '1004'], ['pavel', '1005'], ['pavelPunycode', '1006'], ['svetlana', '1008'], ['marina', '1009']]) {
  const found = await contacts.find({ identity: { kind: 'visitor', value: number, channelId: 'site' } });
  if (found.length !== 1) throw new Error(`${name}: ${found.length}`);
  ids[name] = found[0].id;
}
// pavelPunycode's record (merged into pavel's contact): the visitor index names the record.
const raw = new Redis(redisUrl);
ids.pavelPunycodeRecord = (await raw.get(`${prefix}:idx:visitor:site:1006`));
const views = {};
for (const [name, id] of Object.entries(ids)) views[name] = await contacts.get(id);
await bridge.close();

const keys = [];
let cursor = '0';
const names = [];
do {
  const [next, batch] = await raw.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
  cursor = next;
  names.push(...batch);
} while (cursor !== '0');
for (const full of names.sort()) {
  const key = full.slice(prefix.length + 1);
  const type = await raw.type(full);
  const ttl = (await raw.pttl(full)) > 0;
  const entry = { key, type };
  if (type === 'string') entry.value = await raw.get(full);
  else if (type === 'set') entry.members = (await raw.smembers(full)).sort();
  else if (type === 'zset') entry.members = await raw.zrange(full, 0, -1);
  else if (type === 'list') entry.values = await raw.lrange(full, 0, -1);
  else if (type === 'hash') entry.fields = await raw.hgetall(full);
  if (ttl) entry.ttl = true;
  keys.push(entry);
  await raw.del(full);
}
raw.disconnect();
writeFileSync(
  out,
  `${JSON.stringify(
    {
      about:
        'Keys as the bridge of commit a1cdb06 (before IDN e-mails took their Unicode form, 7655d60, and before a phone with an extension became search-only, 280f498) wrote them: its build ran with a clock starting at 2026-11-20T10:00Z and received the JivoChat webhooks below through its HTTP intake (channel site, personIdFrom user_token), then every key under its prefix was dumped. Views are what that bridge answered. Made by test/__fixtures__/contacts-before-renormalization.make.mjs.',
      ids,
      webhooks: posted,
      keys,
      views,
    },
    null,
    2,
  )}\n`,
);
console.log(`${keys.length} keys -> ${out}`);
