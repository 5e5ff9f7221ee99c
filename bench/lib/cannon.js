// `node bench/lib/cannon.js '<json>'`: one autocannon load in a process of its own (bench/tail.js
// runs one per bridge at once, so that neither load generator's event loop delays the other's
// clock), printing one JSON line: req/s, and latency percentiles from every answer's own time in
// fractional ms (autocannon's histogram keeps whole ms). Options: url, path, scenario (known, new,
// finished), side (keeps new visitors apart between bridges), start (first request number),
// connections, duration (s), rate (requests/s in all; absent: as fast as answered).
import autocannon from 'autocannon';
import { jivoChatAccepted, jivoChatFinished, personOf } from './payloads.js';

const options = JSON.parse(process.argv[2]);
const KNOWN = 1000;
const bodies = {
  known: (n) => jivoChatAccepted({ ...personOf('known', n % KNOWN), chat: 20_000_000 + n }),
  new: (n) => jivoChatAccepted({ ...personOf('new', options.side * 10_000_000 + n), chat: n }),
  finished: (n) => jivoChatFinished({ ...personOf('known', n % KNOWN), chat: 30_000_000 + n, messages: 50 }),
};
const body = bodies[options.scenario];
let n = options.start;
const times = [];
const instance = autocannon({
  url: options.url,
  connections: options.connections,
  duration: options.duration,
  ...(options.rate ? { overallRate: options.rate } : {}),
  pipelining: 1,
  timeout: 10,
  requests: [
    {
      method: 'POST',
      path: options.path,
      headers: { 'content-type': 'application/json' },
      setupRequest: (request) => ({ ...request, body: JSON.stringify(body(n++)) }),
    },
  ],
});
instance.on('response', (_client, status, _bytes, ms) => {
  if (status >= 200 && status < 300) times.push(ms);
});
instance.on('done', (result) => {
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0;
  process.stdout.write(
    `${JSON.stringify({
      rps: times.length / options.duration,
      answered: times.length,
      sent: n - options.start,
      non2xx: result.non2xx,
      errors: result.errors,
      p50: at(0.5),
      p90: at(0.9),
      p99: at(0.99),
      p999: at(0.999),
      max: times.at(-1) ?? 0,
    })}\n`,
  );
});
