import {
  isDeliveriesUsageError,
  parseDeliveriesArgs,
  runDeliveriesRequest,
} from '../../src/cli/deliveries.js';
import type { Delivery } from '../../src/delivery/index.js';

/**
 * `deliveries list|replay …` on a Delivery the test built, without a config or a store of the
 * CLI's own: what the CLI's `deliveries` commands (src/cli/main.ts) run after parsing, with bad
 * usage said in one `chatbridge: ` line and exit 2 as there. The CLI's --help and its usage texts
 * are main.ts's (test/cli.test.ts); this harness has none.
 */
export async function runDeliveriesCommand(
  args: string[],
  delivery: Delivery,
  io: { stdout(line: string): void; stderr(line: string): void },
): Promise<number> {
  let request: ReturnType<typeof parseDeliveriesArgs>;
  try {
    request = parseDeliveriesArgs(args);
  } catch (error) {
    if (!isDeliveriesUsageError(error)) throw error;
    io.stderr(`chatbridge: ${(error as Error).message}`);
    return 2;
  }
  return runDeliveriesRequest(request, delivery, io);
}
