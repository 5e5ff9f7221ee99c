/**
 * The CLI's output captured line by line: pass `.io` to runCli and read `.out` and `.err`.
 * `stderrIsTTY` stands in for a terminal on stderr (the CLI colours and words some lines for one).
 */
export function capture(stderrIsTTY?: boolean) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: {
      stdout: (line: string) => out.push(line),
      stderr: (line: string) => err.push(line),
      ...(stderrIsTTY === undefined ? {} : { stderrIsTTY }),
    },
    out,
    err,
  };
}
