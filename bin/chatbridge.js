#!/usr/bin/env node
// The CLI entry: runs the compiled TypeScript (npm run build; `npm start` runs it first).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write('chatbridge: not built yet; run `npm run build` (npm start does it for you)\n');
  process.exit(1);
}
const { runCli } = await import(entry);
const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// Everything is closed by now; if a stray handle keeps the loop alive, do not hang forever.
setTimeout(() => process.exit(code), 3000).unref();
