// `npm run build && node bench/pretenuring.js [processes=6]`: why `chatbridge start` turns V8's
// allocation-site pretenuring off (src/v8-tuning.ts). Each process parses 3,000 different JivoChat
// chat_finished payloads (50 messages each) with the adapter's envelope schema, four passes, and
// prints the last pass' µs per payload and its GC counts; half the processes run with
// `--no-allocation-site-pretenuring`. On Node 20 / V8 11.3 the default is bimodal from one start
// to the next (~25 µs or ~190 µs per payload for the same code and input: the slow processes have
// pretenured the parse's short-lived objects and run several mark-compacts), while with the flag
// every process is fast. The bridge sees the same in its request path, where objects alive across
// a Redis await look long-lived at the wrong moment: README "Benchmarks", seventh round.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

if (process.argv[2] === '--child') {
  const { constants, PerformanceObserver, performance } = await import('node:perf_hooks');
  const { jivoEnvelopeSchema } = await import(join(ROOT, 'dist', 'adapters', 'jivochat', 'schemas.js'));
  const { jivoChatFinished, personOf } = await import('./lib/payloads.js');
  const N = 3000;
  const payloads = Array.from({ length: N }, (_, index) =>
    JSON.parse(JSON.stringify(jivoChatFinished({ ...personOf('known', index), chat: index, messages: 50 }))),
  );
  const gcs = { minor: 0, major: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
      else if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
    }
  }).observe({ entryTypes: ['gc'] });
  let perPayload = 0;
  for (let pass = 0; pass < 4; pass++) {
    if (pass === 3) gcs.minor = 0; // scavenges: the last pass; mark-compacts: all four
    const started = performance.now();
    for (const payload of payloads) jivoEnvelopeSchema.safeParse(payload);
    perPayload = ((performance.now() - started) * 1000) / N;
  }
  await new Promise((resolve) => setTimeout(resolve, 10)); // let the observer report
  process.stdout.write(JSON.stringify({ perPayload, ...gcs }));
  process.exit(0);
}

const processes = Math.max(1, Number(process.argv[2] ?? 6));
const here = fileURLToPath(import.meta.url);
process.stdout.write(
  'JivoChat envelope parse, chat_finished with 50 messages: µs per payload in the last of 4 passes over 3,000 payloads (scavenges in that pass, mark-compacts in all four)\n',
);
for (const [label, flags] of [
  ['V8 default', []],
  ['--no-allocation-site-pretenuring', ['--no-allocation-site-pretenuring']],
]) {
  const runs = [];
  for (let index = 0; index < processes; index++) {
    const child = spawnSync(process.execPath, [...flags, here, '--child'], { encoding: 'utf8' });
    if (child.status !== 0) throw new Error(`child failed: ${child.stderr}`);
    const { perPayload, minor, major } = JSON.parse(child.stdout);
    runs.push(`${perPayload.toFixed(0)} µs (${minor} scavenges, ${major} mark-compacts)`);
  }
  process.stdout.write(`${label.padEnd(34)} ${runs.join(' · ')}\n`);
}
