// `node bench/lib/ladder-step.js <step> <config file> <checkout root> [<answer file>]`: one rung
// of bench/ladder.js (bench/lib/ladder-rungs.js says what each serves) in a process of its own,
// so that its CPU can be read from /proc, listening as bridge.listen() does (src/bridge.ts).
import { readFileSync } from 'node:fs';
import { ladderModules } from './ladder-rungs.js';

const [step, configFile, root, answerFile] = process.argv.slice(2);
const modules = await ladderModules(root);
const captured = answerFile ? JSON.parse(readFileSync(answerFile, 'utf8')) : null;
const { app, bridge, config, chainLength } = await modules.build(step, configFile, captured);
const server = app.listen(config.server.port, config.server.host);
server.requestTimeout = 30_000;
server.headersTimeout = 15_000;
server.keepAliveTimeout = 5_000;
server.once('listening', () => {
  process.stdout.write(`${step}: ${chainLength} chain middleware, listening on ${config.server.port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    bridge.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
