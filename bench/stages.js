// `npm run build && node bench/stages.js [checkout]`: CPU per request of each step of the JivoChat
// chat_accepted intake (a new contact each time), in one process, without HTTP: parse, decode,
// observe (the contact engine and its Redis script calls), facts, render + JSON of the answer.
// STAGES_SCENARIO=finished: chat_finished with a 50-message transcript instead (a new contact
// each time; no facts, as its answer has none). `checkout`: another built checkout's dist
// (default: this one), so that two builds can be read with the same script.
// Where the saturation bench (bench/run.js) says "the bridge uses X ms per request", this says
// which step it goes to. observe runs one at a time and 50 at once (as the bench's connections);
// the other steps are synchronous or do no I/O, so one at a time. Median of 3 passes after a warm
// one. Knobs: STAGES_N (requests per pass, 4000), REDIS_URL (else a private redis-server),
// STAGES_DESTINATION=1 (a webhook destination configured, as a deployment has one: observe then
// also builds each webhook's outbound events and stages them in the outbox, which is emptied
// after each step; nothing is delivered, as the bridge's delivery is not started).
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const DIST = join(process.argv[2] ? resolve(process.argv[2]) : ROOT, 'dist');
const FINISHED = process.env.STAGES_SCENARIO === 'finished';
const DESTINATION = process.env.STAGES_DESTINATION === '1';
const { benchRedis } = await import('./lib/redis.js');
const { jivoChatAccepted, jivoChatFinished, personOf } = await import('./lib/payloads.js');
const { createRedisStore } = await import(`${DIST}/src/store/redis.js`);
const { createLogger } = await import(`${DIST}/src/logger.js`);
const { parseConfig } = await import(`${DIST}/src/config/load.js`);
const { defaultRegistry } = await import(`${DIST}/src/registry.js`);
const { createBridge } = await import(`${DIST}/src/bridge.js`);
const { parseIntakeRequest } = await import(`${DIST}/src/intake/pipeline.js`);

const redis = await benchRedis();
const logger = createLogger('silent');
const keyPrefix = `stages${randomBytes(3).toString('hex')}`;
const store = await createRedisStore({ url: redis.url, keyPrefix, logger });
/** STAGES_DESTINATION: the outbox is emptied after each step (it would hold every event). */
const { Redis } = DESTINATION ? await import('ioredis') : {};
const outboxClient = DESTINATION ? new Redis(redis.url) : null;
const emptyOutbox = async () => {
  if (outboxClient) await outboxClient.del(`${keyPrefix}:outbox`);
};
const registry = defaultRegistry();
const config = parseConfig(
  {
    admin: { token: 'x'.repeat(16) },
    server: { port: 0, host: '127.0.0.1' },
    log: { level: 'silent' },
    channels: [{ id: 'site', vendor: 'jivochat', token: 'site-webhook-token-0123456789' }],
    ...(DESTINATION
      ? {
          destinations: [
            {
              id: 'bench-crm',
              url: 'http://127.0.0.1:9/events',
              secret: 'whsec_YmVuY2gtZGVzdGluYXRpb24tc2VjcmV0LTAxMjM0NQ==',
            },
          ],
        }
      : {}),
  },
  registry,
  {},
);
const bridge = await createBridge({ config, registry, logger, store });
const channel = bridge.channels.get('site');
const route = channel.adapter.intake.find((candidate) => candidate.kind === 'webhook');
const state = channel.runtime.state;
const { contacts, facts } = bridge.context;

const N = Number(process.env.STAGES_N ?? 4000);
let person = 0;
const freshBodies = () =>
  Array.from({ length: N }, () => {
    const index = person++;
    const who = { ...personOf('new', index), chat: 10_000_000 + index };
    return Buffer.from(JSON.stringify(FINISHED ? jivoChatFinished(who) : jivoChatAccepted(who)));
  });

/** CPU ms per item of `step` over `items`, `concurrency` at a time. */
async function cpuPerItem(items, step, concurrency = 1) {
  const started = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const index = next++;
        await step(items[index], index);
      }
    }),
  );
  const used = process.cpuUsage(started);
  return (used.user + used.system) / 1000 / items.length;
}

const parse = (raw) => parseIntakeRequest(route, raw, 'application/json', new Date());
const decode = (request) => route.decode({ ...request, opened: undefined }, state);
const observeAll = async (decoded) => {
  let contact = null;
  for (const observation of decoded.observations) contact = (await contacts.observe(observation)).contact;
  return contact;
};
/** The answer's facts, as the pipeline asks for them: only for events whose answer shows them. */
const factsOf = (decoded, contact) =>
  decoded.facts
    ? facts.forContact(contact, {
        channelId: 'site',
        deadlineMs: 1000,
        max: decoded.facts.max,
        anchored: true,
      })
    : null;
const resultOf = (decoded, contact, answerFacts) => ({
  decoded,
  opened: undefined,
  contact,
  duplicate: false,
  facts: answerFacts,
  consoleLink: () => undefined,
});

const rows = {
  parse: [],
  decode: [],
  'observe, 1 at a time': [],
  'observe, 50 at once': [],
  facts: [],
  'render + JSON': [],
  'all steps, 1 at a time': [],
};
for (let pass = 0; pass < 4; pass++) {
  const bodies = freshBodies();
  const measured = {};
  measured.parse = await cpuPerItem(bodies, parse);
  const requests = bodies.map(parse);
  measured.decode = await cpuPerItem(requests, decode);
  const decoded = requests.map(decode);
  const half = Math.floor(N / 2);
  const found = new Array(N);
  measured['observe, 1 at a time'] = await cpuPerItem(decoded.slice(0, half), async (item, index) => {
    found[index] = await observeAll(item);
  });
  measured['observe, 50 at once'] = await cpuPerItem(
    decoded.slice(half),
    async (item, index) => {
      found[half + index] = await observeAll(item);
    },
    50,
  );
  await emptyOutbox();
  const answers = new Array(N);
  measured.facts = await cpuPerItem(found, async (contact, index) => {
    answers[index] = await factsOf(decoded[index], contact);
  });
  measured['render + JSON'] = await cpuPerItem(found, (contact, index) =>
    JSON.stringify(route.render(resultOf(decoded[index], contact, answers[index]), state).body),
  );
  // The same steps one request after another, as a server runs them (every step's code in turn).
  measured['all steps, 1 at a time'] = await cpuPerItem(freshBodies(), async (raw) => {
    const decoded = decode(parse(raw));
    const contact = await observeAll(decoded);
    const answerFacts = await factsOf(decoded, contact);
    JSON.stringify(route.render(resultOf(decoded, contact, answerFacts), state).body);
  });
  await emptyOutbox();
  if (pass > 0) for (const [name, value] of Object.entries(measured)) rows[name].push(value);
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
process.stdout.write(
  `JivoChat ${FINISHED ? 'chat_finished, 50 messages' : 'chat_accepted'} (new contact${DESTINATION ? ', one destination' : ''}), CPU ms per request by step, median of 3 passes of ${N}:\n`,
);
for (const [name, values] of Object.entries(rows))
  process.stdout.write(`  ${name.padEnd(24)} ${median(values).toFixed(3)}\n`);
outboxClient?.disconnect();
await bridge.close();
await redis.stop();
