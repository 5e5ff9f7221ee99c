import { parseArgs } from 'node:util';
import { listQuerySchema } from '../delivery/api.js';
import type { Delivery, DeliverySummary } from '../delivery/index.js';

/**
 * `chatbridge deliveries list [--state pending|failed|delivered] [--destination ID] [--limit N] [--json]`
 * `chatbridge deliveries replay --id ID`
 * `chatbridge deliveries replay --destination ID --all-failed`
 *
 * Results on stdout (one delivery per line; JSON lines with --json), diagnostics on stderr.
 * Exit 0 on success, 1 on failure (unknown delivery, store down ...), 2 on bad usage.
 */

const USAGE = `Usage:
  chatbridge deliveries list [--state pending|failed|delivered] [--destination ID] [--limit N] [--json]
  chatbridge deliveries replay --id ID
  chatbridge deliveries replay --destination ID --all-failed`;

interface Io {
  stdout(line: string): void;
  stderr(line: string): void;
}

class UsageError extends Error {}

function line(item: DeliverySummary): string {
  const error = item.lastError
    ? `  last error: ${item.lastError.status ?? 'network'} ${item.lastError.message} (${item.lastError.at})`
    : '';
  return `${item.id}  ${item.state}  ${item.destination}  ${item.eventType}  ${item.eventId}  attempts=${item.attempts}${error}`;
}

async function list(args: string[], delivery: Delivery, io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      state: { type: 'string' },
      destination: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  const query = listQuerySchema.safeParse({
    ...(values.state !== undefined ? { state: values.state } : {}),
    ...(values.destination !== undefined ? { destination: values.destination } : {}),
    ...(values.limit !== undefined ? { limit: values.limit } : {}),
  });
  if (!query.success) {
    const issue = query.error.issues[0];
    throw new UsageError(`--${String(issue?.path[0] ?? 'option')}: ${issue?.message ?? 'invalid'}`);
  }
  const found = await delivery.list(query.data);
  for (const item of found) io.stdout(values.json ? JSON.stringify(item) : line(item));
  io.stderr(`${found.length} deliver${found.length === 1 ? 'y' : 'ies'}`);
  return 0;
}

async function replay(args: string[], delivery: Delivery, io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      id: { type: 'string' },
      destination: { type: 'string' },
      'all-failed': { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.id !== undefined) {
    if (values.destination !== undefined || values['all-failed']) {
      throw new UsageError('give either --id ID or --destination ID --all-failed, not both');
    }
    const replayed = await delivery.replay(values.id);
    io.stdout(
      `replayed ${replayed.id} (${replayed.eventType} ${replayed.eventId} to ${replayed.destination})`,
    );
    return 0;
  }
  if (values.destination !== undefined && values['all-failed']) {
    const { replayed } = await delivery.replayFailed(values.destination);
    for (const id of replayed) io.stdout(id);
    io.stderr(
      `replayed ${replayed.length} failed deliver${replayed.length === 1 ? 'y' : 'ies'} to ${values.destination}`,
    );
    return 0;
  }
  throw new UsageError('replay needs --id ID, or --destination ID --all-failed');
}

export async function runDeliveriesCommand(args: string[], delivery: Delivery, io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) {
    io.stderr(USAGE);
    return 2;
  }
  if (sub === '--help' || sub === '-h' || rest.includes('--help') || rest.includes('-h')) {
    io.stdout(USAGE);
    return 0;
  }
  try {
    if (sub === 'list') return await list(rest, delivery, io);
    if (sub === 'replay') return await replay(rest, delivery, io);
    throw new UsageError(`unknown command 'deliveries ${sub}'`);
  } catch (error) {
    // parseArgs throws TypeErrors with a code for unknown or malformed options.
    const code = (error as { code?: unknown }).code;
    if (error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      io.stderr(`chatbridge deliveries: ${(error as Error).message}`);
      io.stderr(USAGE);
      return 2;
    }
    // Not found, pending already, store unavailable ...: one line, exit 1.
    io.stderr(`chatbridge deliveries: ${(error as Error).message}`);
    return 1;
  }
}
