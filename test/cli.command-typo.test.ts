import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { capture } from './support/cli.js';

/**
 * A mistyped command (`chatbridge config chek`, `chatbridge confg check`, `chatbridge strat`)
 * said only "unknown command", while a mistyped config key or option says what it likely meant.
 */
describe('a mistyped command', () => {
  it('names the command it most likely meant (exit 2)', async () => {
    for (const [argv, said] of [
      [['config', 'chek'], "chatbridge: unknown command 'config chek' (did you mean 'config check'?)"],
      [['confg', 'check'], "chatbridge: unknown command 'confg' (did you mean 'config check'?)"],
      [['strat'], "chatbridge: unknown command 'strat' (did you mean 'start'?)"],
      [['delivery', 'list'], "chatbridge: unknown command 'delivery' (did you mean 'deliveries list'?)"],
      [['key'], "chatbridge: unknown command 'key' (did you mean 'keys'?)"],
      [
        ['sync', 'agent', '--channel', 'cv'],
        "chatbridge: unknown command 'sync agent' (did you mean 'sync agents'?)",
      ],
    ] as const) {
      const run = capture();
      expect(await runCli([...argv], run.io), argv.join(' ')).toBe(2);
      expect(run.err, argv.join(' ')).toEqual([said, "Run 'chatbridge --help' for usage."]);
    }
  });

  it('with nothing close, says only that it is unknown', async () => {
    const run = capture();
    expect(await runCli(['frobnicate'], run.io)).toBe(2);
    expect(run.err[0]).toBe("chatbridge: unknown command 'frobnicate'");
    // The group is right, its command close to none: not "did you mean 'config'".
    const group = capture();
    expect(await runCli(['config', 'bogus'], group.io)).toBe(2);
    expect(group.err[0]).toBe("chatbridge: unknown command 'config bogus'");
  });
});
