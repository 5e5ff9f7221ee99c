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

/**
 * A word as a POSIX shell takes it: as is when it has nothing the shell reads, else quoted. Every
 * value put in a command a text names (a config file, a destination id: any string) goes through
 * it, so the command works when pasted.
 */
export function shellWord(word: string): string {
  return /^[\w./@%+=:,-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * `--name VALUE` as a shell and then the CLI's parser take it: the value a shell word, after `=`
 * when it starts with `-` (node:util parseArgs refuses `--config -x.yaml` as a missing value).
 */
export function shellOption(name: string, value: string): string {
  return `--${name}${value.startsWith('-') ? '=' : ' '}${shellWord(value)}`;
}

/**
 * The command both ways in the one sentence every text uses, built by `tag` with each form
 * marked by `code`: String.raw and backticks for a plain text (cliCommand), the console's `html`
 * tag and `<code>` for a page, which escapes the forms as it escapes every value.
 */
export function bothWays<T, C>(
  command: string,
  tag: (strings: TemplateStringsArray, ...values: C[]) => T,
  code: (form: string) => C,
): T {
  return tag`${code(`chatbridge ${command}`)} (in a checkout: ${code(`${CHECKOUT_CLI} ${command}`)})`;
}

/** The command both ways, for a text: "`chatbridge X` (in a checkout: `node bin/chatbridge.js X`)". */
export function cliCommand(command: string): string {
  return bothWays(command, String.raw, (form) => `\`${form}\``);
}
