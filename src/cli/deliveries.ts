import type { Delivery } from '../delivery/index.js';

/** PLACEHOLDER until the outbound-events issue lands. */
export async function runDeliveriesCommand(
  _args: string[],
  _delivery: Delivery,
  io: { stdout(line: string): void; stderr(line: string): void },
): Promise<number> {
  io.stderr('deliveries: not available yet');
  return 1;
}
