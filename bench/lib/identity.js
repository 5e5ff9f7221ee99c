import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { Redis } from 'ioredis';
import { personOf } from './payloads.js';

/**
 * Identity scale: load N contacts into Redis fast, in the engine's real key layout.
 *
 * Driving the engine for a million contacts takes too long for a bench run (each observation is
 * several round trips under locks), so a loader writes the same keys with pipelined commands.
 * It is only trusted after `verifyLoader` has shown, on a sample, that it writes byte-identical
 * keys and values to what the engine itself writes for the same observation (the record id is
 * the engine's random one, taken from its answer). The outbound contact.created event the engine
 * also appends is not written: the delivery worker drains the outbox, so it is not stored state.
 */

export const IDENTITY_CHANNEL = 'site';
export const IDENTITY_VENDOR = 'jivochat';
const AT = '2025-01-15T10:00:00.000Z';

/** What a chat with an identified visitor tells the engine about a person (no timeline). */
export function identityObservation(index) {
  const who = personOf('identity', index);
  return {
    channelId: IDENTITY_CHANNEL,
    vendor: IDENTITY_VENDOR,
    at: AT,
    idempotencyKey: `bench:identity:${index}`,
    identifiers: [
      { kind: 'person', value: who.person },
      { kind: 'email', value: who.email },
      { kind: 'phone', value: who.phone },
      { kind: 'visitor', value: String(who.visitor), channelId: IDENTITY_CHANNEL },
    ],
    names: [who.name],
  };
}

/**
 * How the engine writes a record id in keys and values (src/contacts/keys.ts, storedId): a
 * `c_<digits>` id as its digits (Redis keeps them as an integer), any other id as it is.
 */
const storedId = (id) => (/^c_[1-9][0-9]{0,18}$/.test(id) ? id.slice(2) : id);

/** A random record id like the engine's (src/contacts/record.ts, newRecordId), from 8 random bytes. */
function recordIdOf(bytes, offset) {
  const value = bytes.readBigUInt64LE(offset) >> 1n;
  return `c_${value < 10n ** 17n ? value + 10n ** 17n : value}`;
}

const dedupeKeyOf = (channelId, idempotencyKey) =>
  `dedupe:${createHash('sha256').update(channelId).update('\n').update(idempotencyKey).digest('base64url')}`;

/**
 * The keys the engine writes for `identityObservation(index)` creating record `recordId`, as
 * [key (without prefix), value, ttlMs | undefined]; after the sixth, name-index set members.
 * Record ids are in their stored form (storedId above) in keys and values alike. verifyLoader
 * checks it against the engine's own output, byte for byte.
 */
export function contactKeys(index, recordId, dedupeTtlMs) {
  const observation = identityObservation(index);
  const [person, email, phone, visitor] = observation.identifiers;
  // The engine's stored form (encodeRecord in src/contacts/record.ts): a value seen only when the
  // record was made (and not verified) is its bare string, e-mail and phone identifiers point at
  // the first entry of `e`/`p` ("@e", "@p"), a channel seen once has only its vendor, the id is
  // only in the key.
  const record = {
    c: AT,
    n: [observation.names[0]],
    e: [email.value],
    p: [phone.value],
    i: [[person.kind, person.value], '@e', '@p', [visitor.kind, visitor.value, visitor.channelId]],
    ch: { [IDENTITY_CHANNEL]: [IDENTITY_VENDOR] },
  };
  const id = storedId(recordId);

  // The name search index (src/contacts/timeline.ts nameWords, ASCII names): one set per word.
  const nameWords = [
    ...new Set(
      observation.names[0]
        .toLowerCase()
        .split(/[^a-z0-9]+/)
        .filter(Boolean),
    ),
  ];
  return [
    [`idx:person:*:${person.value}`, id],
    [`idx:email:*:${email.value}`, id],
    [`idx:phone:*:${phone.value}`, id],
    [`idx:visitor:${IDENTITY_CHANNEL}:${visitor.value}`, id],
    [`rec:${id}`, JSON.stringify(record)],
    [dedupeKeyOf(IDENTITY_CHANNEL, observation.idempotencyKey), id, dedupeTtlMs],
    ...nameWords.map((word) => [`sidx:name:${word}`, id, 'set']),
  ];
}

async function dump(client, prefix) {
  const out = new Map();
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      const type = await client.type(key);
      const ttl = await client.pttl(key);
      // Set members too (the name index holds record ids, written in their stored form).
      const value =
        type === 'string'
          ? await client.get(key)
          : type === 'set'
            ? `<set> ${(await client.smembers(key)).sort().join(' ')}`
            : `<${type}>`;
      out.set(key.slice(prefix.length + 1), { value, ttl: ttl > 0 });
    }
  } while (cursor !== '0');
  return out;
}

/**
 * Runs the real engine (from dist/) for `sample` contacts under a scratch prefix, the loader for
 * the same contacts under another, and compares every key, value and TTL presence.
 * Returns {sample, keysPerContact}; throws when anything differs.
 */
export async function verifyLoader({ redisUrl, dist, sample = 200 }) {
  const { createRedisStore } = await import(`${dist}/src/store/redis.js`);
  const { createContactEngine } = await import(`${dist}/src/contacts/engine.js`);
  const { createOutboxPublisher } = await import(`${dist}/src/events/outbox.js`);
  const { Metrics } = await import(`${dist}/src/metrics.js`);
  const { createLogger } = await import(`${dist}/src/logger.js`);
  const { configSchema } = await import(`${dist}/src/config/schema.js`);
  const identity = configSchema.parse({ admin: { token: 'x'.repeat(16) } }).identity;
  const logger = createLogger('silent');
  const tag = randomBytes(4).toString('hex');
  const enginePrefix = `benchverify-engine-${tag}`;
  const loaderPrefix = `benchverify-loader-${tag}`;
  const store = await createRedisStore({ url: redisUrl, keyPrefix: enginePrefix, logger });
  const client = new Redis(redisUrl);
  try {
    const engine = createContactEngine({
      store,
      identity,
      events: createOutboxPublisher(store),
      metrics: new Metrics({ defaultMetrics: false }),
      logger,
    });
    const engineIds = [];
    for (let index = 0; index < sample; index++) {
      const { contact, created } = await engine.observe(identityObservation(index));
      if (!created) throw new Error(`loader check: contact ${index} was not created by the engine`);
      engineIds.push(contact.id);
    }
    await loadContacts({
      redisUrl,
      prefix: loaderPrefix,
      count: sample,
      dedupeTtlMs: identity.dedupeTtlSeconds * 1000,
      idOf: (index) => engineIds[index],
    });
    const fromEngine = await dump(client, enginePrefix);
    const fromLoader = await dump(client, loaderPrefix);
    // The outbox is transient (drained by the delivery worker), see above.
    fromEngine.delete('outbox');
    // One key per installation (the event-id salt), not per contact.
    fromEngine.delete('installation:salt');
    const problems = [];
    for (const [key, written] of fromEngine) {
      const loaded = fromLoader.get(key);
      if (!loaded) problems.push(`missing ${key}`);
      else if (loaded.value !== written.value)
        problems.push(`value of ${key}:\n engine ${written.value}\n loader ${loaded.value}`);
      else if (loaded.ttl !== written.ttl) problems.push(`ttl of ${key}`);
    }
    for (const key of fromLoader.keys()) if (!fromEngine.has(key)) problems.push(`extra ${key}`);
    if (problems.length > 0) {
      throw new Error(
        `the loader does not write what the engine writes:\n${problems.slice(0, 5).join('\n')}`,
      );
    }
    return { sample, keysPerContact: fromEngine.size / sample };
  } finally {
    for (const prefix of [enginePrefix, loaderPrefix]) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await client.del(...keys);
      } while (cursor !== '0');
    }
    client.disconnect();
    await store.close();
  }
}

/**
 * Pipelined load of contacts [0, count) under `prefix`; record ids are random like the engine's.
 * `parts`: 'contact' (the record and its identifier index keys) and/or 'dedupe' (the idempotency
 * key the creating observation leaves behind), so that each can be measured on its own.
 *
 * Commands are written as raw RESP on one socket, a window of chunks ahead of the replies: the
 * client library's per-command overhead made this the slowest step of the bench otherwise.
 */
export async function loadContacts({
  redisUrl,
  prefix,
  count,
  parts = ['contact', 'dedupe'],
  dedupeTtlMs = 1,
  idOf,
  onProgress,
}) {
  const { hostname, port } = new URL(redisUrl);
  const socket = createConnection({ host: hostname, port: Number(port || 6379) });
  await once(socket, 'connect');
  const withContact = parts.includes('contact');
  const withDedupe = parts.includes('dedupe');
  const bulk = (text) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
  const set = (key, value) => `*3\r\n$3\r\nSET\r\n${bulk(`${prefix}:${key}`)}${bulk(value)}`;
  const sadd = (key, member) => `*3\r\n$4\r\nSADD\r\n${bulk(`${prefix}:${key}`)}${bulk(member)}`;
  const setPx = (key, value, ttl) =>
    `*5\r\n$3\r\nSET\r\n${bulk(`${prefix}:${key}`)}${bulk(value)}$2\r\nPX\r\n${bulk(String(ttl))}`;

  let sent = 0;
  let answered = 0;
  let failure = null;
  let waiter = null;
  let tail = '';
  socket.setEncoding('latin1');
  socket.on('data', (text) => {
    // Every reply to SET and SADD is one line: +OK, :1 or -ERR ...
    const lines = (tail + text).split('\r\n');
    tail = lines.pop();
    for (const line of lines) {
      if (line.startsWith('-') && !failure) failure = new Error(`Redis refused a loader command: ${line}`);
      answered++;
    }
    if (waiter) waiter();
  });
  socket.on('error', (error) => {
    failure = error;
    if (waiter) waiter();
  });
  const until = async (predicate) => {
    while (!predicate()) {
      if (failure) throw failure;
      await new Promise((resolve) => {
        waiter = resolve;
      });
      waiter = null;
    }
    if (failure) throw failure;
  };

  const chunk = 2000;
  const window = 100_000; // commands written ahead of their replies
  try {
    for (let start = 0; start < count; start += chunk) {
      const end = Math.min(count, start + chunk);
      const random = randomBytes(8 * (end - start));
      let text = '';
      for (let index = start; index < end; index++) {
        const keys = contactKeys(
          index,
          idOf ? idOf(index) : recordIdOf(random, (index - start) * 8),
          dedupeTtlMs,
        );
        if (withContact) {
          for (let k = 0; k < 5; k++) text += set(keys[k][0], keys[k][1]);
          sent += 5;
          for (let k = 6; k < keys.length; k++) text += sadd(keys[k][0], keys[k][1]);
          sent += keys.length - 6;
        }
        if (withDedupe) {
          text += setPx(keys[5][0], keys[5][1], keys[5][2]);
          sent += 1;
        }
      }
      if (!socket.write(text, 'utf8')) await once(socket, 'drain');
      await until(() => sent - answered <= window);
      if (onProgress && end % 200_000 === 0) onProgress(end);
    }
    await until(() => answered >= sent);
  } finally {
    socket.destroy();
  }
}

export async function usedMemory(redisUrl) {
  const client = new Redis(redisUrl);
  try {
    const info = await client.info('memory');
    return Number(/used_memory:(\d+)/.exec(info)[1]);
  } finally {
    client.disconnect();
  }
}
