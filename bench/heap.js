// `npm run build && node bench/heap.js`: does the bridge's heap keep growing under new visitors?
// The soak (`npm run bench -- --soak`) reports RSS, which grows for minutes while V8 sizes its
// heap and the engine's remembered-state cache fills, and says little about a leak. This runs the
// bridge in this process (built as `chatbridge start` builds it), sends rounds of JivoChat
// chat_accepted webhooks from a child process, each from a new person (as the soak's 40 % of new
// visitors), and after each round collects garbage twice and prints the heap V8 still holds. A
// leak shows as heap that grows round after round; a bounded cache as heap that stops growing once
// it is full. Knobs: HEAP_ROUNDS (6), HEAP_N (webhooks per round, 10000), REDIS_URL (else a
// private redis-server).
import { execFile, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

if (typeof globalThis.gc !== 'function') {
  // Collecting on demand needs --expose-gc: run this file again with it.
  const again = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url)], {
    stdio: 'inherit',
  });
  process.exit(again.status ?? 1);
}

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const rounds = Number(process.env.HEAP_ROUNDS ?? 6);
const perRound = Number(process.env.HEAP_N ?? 10_000);
const { JIVO_TOKEN } = await import('./lib/bridge.js');
const { startInProcessBridge } = await import('./lib/in-process.js');
const bridge = await startInProcessBridge({ root: ROOT, name: 'heap' });
const { port } = bridge;

/** One round: `perRound` webhooks, a new person each (bench/alloc.js's load, a pool per round). */
const send = (round) =>
  new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [
        join(ROOT, 'bench', 'alloc.js'),
        '--client',
        String(port),
        JIVO_TOKEN,
        String(perRound),
        `heap${round}`,
        String(perRound),
      ],
      (error, _stdout, stderr) => (error ? reject(new Error(`load failed: ${stderr}`)) : resolve()),
    ),
  );

const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const heapAfterGc = () => {
  globalThis.gc();
  globalThis.gc();
  return process.memoryUsage();
};
const before = heapAfterGc();
console.log(`before load: heap used after GC ${mib(before.heapUsed)}, RSS ${mib(before.rss)}`);
const used = [];
for (let round = 1; round <= rounds; round++) {
  await send(round);
  const memory = heapAfterGc();
  used.push(memory.heapUsed);
  console.log(
    `after ${(round * perRound).toLocaleString('en')} new visitors: heap used after GC ${mib(memory.heapUsed)}, RSS ${mib(memory.rss)}`,
  );
}
await bridge.stop();
const half = Math.max(1, Math.floor(rounds / 2));
console.log(
  `heap used after GC, round ${half} → round ${rounds}: ${mib(used[half - 1])} → ${mib(used[rounds - 1])} ` +
    `(${used[rounds - 1] >= used[half - 1] ? '+' : '−'}${mib(Math.abs(used[rounds - 1] - used[half - 1]))})`,
);
process.exit(0);
