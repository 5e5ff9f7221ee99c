/**
 * How the bridge's own texts name a CLI command: log lines, the console, a config's problems.
 * They are written where nothing knows how the reader runs the CLI (an operator reading a log
 * or a console page may be anywhere; a bridge made by `createBridge` has no CLI at all), so they
 * name it both ways: `chatbridge` as the installed package's bin, and `node bin/chatbridge.js`
 * in a checkout, where `npm start` runs it and no `chatbridge` is on the PATH (told only
 * `chatbridge contacts reindex`, a newcomer there got "command not found"). The CLI's own lines
 * name it as it was run instead (programName in main.ts: `Run 'node bin/chatbridge.js --help'`).
 */
export const CHECKOUT_CLI = 'node bin/chatbridge.js';

/** The command both ways, for a text: "`chatbridge X` (in a checkout: `node bin/chatbridge.js X`)". */
export function cliCommand(command: string): string {
  return `\`chatbridge ${command}\` (in a checkout: \`${CHECKOUT_CLI} ${command}\`)`;
}
