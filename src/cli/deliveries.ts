import { parseArgs } from 'node:util';
import type { z } from 'zod';
import { cleanDisplayText } from '../contacts/normalize.js';
import { LIST_LIMIT_MAX, listQuerySchema } from '../delivery/api.js';
import { type Delivery, type DeliverySummary, describeBreaker } from '../delivery/index.js';
import { deliveryStates } from '../delivery/records.js';
import { ValidationError } from '../errors.js';

/**
 * `deliveries list [--state pending|delivered|failed] [--destination ID] [--limit N] [--before CURSOR] [--all] [--json]`
 * `deliveries replay --id ID`
 * `deliveries replay --destination ID --all-failed`
 *
 * The CLI (main.ts) runs them and says their usage and --help, naming itself as it was run.
 * Results on stdout (one delivery per line; JSON lines with --json), diagnostics on stderr.
 * Exit 0 on success, 1 on failure (unknown delivery, store down ...), 2 on bad usage.
 */

interface Io {
  stdout(line: string): void;
  stderr(line: string): void;
}

export class DeliveriesUsageError extends Error {}

function line(item: DeliverySummary): string {
  // The message quotes the receiver's answer. Recorded ones are cleaned (delivery/attempt.ts), but
  // records kept from before that still hold what the receiver sent: escapes that would reach
  // the operator's terminal as commands, line breaks that would split one delivery into lines.
  const message = cleanDisplayText(item.lastError?.message ?? '') ?? '';
  const error = item.lastError
    ? // No status: a network error or timeout (the message says which), or never attempted.
      `  last error: ${item.lastError.status !== null ? `${item.lastError.status} ` : ''}${message} (${item.lastError.at})`
    : '';
  return `${item.id}  ${item.state}  ${item.destination}  ${item.eventType}  ${item.eventId}  attempts=${item.attempts}${error}`;
}

/** What a deliveries command asks for, checked before any store is opened (bad usage: exit 2). */
export type DeliveriesRequest =
  | { command: 'list'; query: z.output<typeof listQuerySchema>; json: boolean; all: boolean }
  | { command: 'replay'; id: string }
  | { command: 'replay failed'; destination: string };

/**
 * Parses `list ...` or `replay ...`. Throws DeliveriesUsageError (or parseArgs' ERR_PARSE_ARGS_*
 * TypeError) on bad usage, so the CLI can say so before it connects anywhere.
 */
export function parseDeliveriesArgs(args: string[]): DeliveriesRequest {
  const [sub, ...rest] = args;
  if (sub === 'list') {
    const { values } = parseArgs({
      args: rest,
      options: {
        state: { type: 'string' },
        destination: { type: 'string' },
        limit: { type: 'string' },
        before: { type: 'string' },
        all: { type: 'boolean' },
        json: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    });
    const query = listQuerySchema.safeParse({
      ...(values.state !== undefined ? { state: values.state } : {}),
      ...(values.destination !== undefined ? { destination: values.destination } : {}),
      ...(values.limit !== undefined ? { limit: values.limit } : {}),
      ...(values.before !== undefined ? { before: values.before } : {}),
    });
    if (!query.success) {
      // zod's words ("Invalid input", "expected number, received NaN") name neither the allowed
      // values nor what was given.
      const issue = query.error.issues[0];
      const option = String(issue?.path[0] ?? 'option');
      if (option === 'state')
        throw new DeliveriesUsageError(
          `--state must be one of ${deliveryStates.join(', ')} (got '${values.state}')`,
        );
      if (option === 'limit')
        throw new DeliveriesUsageError(
          `--limit must be a whole number from 1 to ${LIST_LIMIT_MAX} (got '${values.limit}')`,
        );
      throw new DeliveriesUsageError(`--${option}: ${issue?.message ?? 'invalid'}`);
    }
    return { command: 'list', query: query.data, json: values.json === true, all: values.all === true };
  }
  if (sub === 'replay') {
    const { values } = parseArgs({
      args: rest,
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
        throw new DeliveriesUsageError('give either --id ID or --destination ID --all-failed, not both');
      }
      return { command: 'replay', id: values.id };
    }
    if (values.destination !== undefined && values['all-failed'])
      return { command: 'replay failed', destination: values.destination };
    throw new DeliveriesUsageError("'deliveries replay' needs --id ID, or --destination ID --all-failed");
  }
  throw new DeliveriesUsageError(`unknown command 'deliveries ${sub ?? ''}'`.trimEnd());
}

/** Is this what parseDeliveriesArgs throws on bad usage? */
export function isDeliveriesUsageError(error: unknown): boolean {
  // parseArgs throws TypeErrors with a code for unknown or malformed options.
  const code = (error as { code?: unknown }).code;
  return (
    error instanceof DeliveriesUsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
  );
}

/**
 * Ctrl-C (SIGINT) or SIGTERM asked the command to stop (src/cli/main.ts stopOnSignal): `signal`
 * aborts then, and `by` names the signal.
 */
export interface CommandStop {
  readonly signal: AbortSignal;
  readonly by: NodeJS.Signals | undefined;
}

/**
 * Runs a parsed request. Not found, pending already, store unavailable ...: one line, exit 1.
 * Asked to stop (`stop`), `list --all` stops between pages and `replay --all-failed` between
 * deliveries: what was done is printed, one line says how to go on, exit 1.
 */
export async function runDeliveriesRequest(
  request: DeliveriesRequest,
  delivery: Delivery,
  io: Io,
  stop?: CommandStop,
): Promise<number> {
  try {
    if (request.command === 'list') {
      // One page (--limit), or with --all every page after it, printed as each comes: the API's
      // nextCursor, so deliveries added meanwhile are neither skipped nor printed twice.
      let query = request.query;
      let count = 0;
      for (;;) {
        const page = await delivery.page(query);
        for (const item of page.deliveries) io.stdout(request.json ? JSON.stringify(item) : line(item));
        count += page.deliveries.length;
        if (page.nextCursor !== null && request.all) {
          if (stop?.signal.aborted) {
            io.stderr(
              `chatbridge: 'deliveries list' stopped by ${stop.by ?? 'a signal'} after ${count} deliver${count === 1 ? 'y' : 'ies'}; go on with --before ${page.nextCursor}`,
            );
            return 1;
          }
          query = { ...query, before: page.nextCursor };
          continue;
        }
        const more = page.nextCursor === null ? '' : `; more with --before ${page.nextCursor} (or --all)`;
        io.stderr(`${count} deliver${count === 1 ? 'y' : 'ies'}${more}`);
        // Why pending ones may sit with no attempt: a destination's open circuit breaker.
        // A store another version wrote may hold anything: cleaned for the terminal like the rest.
        for (const open of await delivery.paused(request.query.destination))
          io.stderr(cleanDisplayText(describeBreaker(open)) ?? '');
        return 0;
      }
    }
    if (request.command === 'replay') {
      const replayed = await delivery.replay(request.id);
      io.stdout(
        `replayed ${replayed.id} (${replayed.eventType} ${replayed.eventId} to ${replayed.destination})`,
      );
      return 0;
    }
    // Each id as it is replayed: stopped halfway, the ones done are on stdout already.
    const { replayed, left } = await delivery.replayFailed(request.destination, {
      onReplayed: (id) => io.stdout(id),
      ...(stop ? { signal: stop.signal } : {}),
    });
    if (left !== undefined) {
      io.stderr(
        `chatbridge: 'deliveries replay' stopped by ${stop?.by ?? 'a signal'}: replayed ${replayed.length} failed deliver${replayed.length === 1 ? 'y' : 'ies'} to ${request.destination}, ${left} not yet (still failed); run it again for the rest`,
      );
      return 1;
    }
    io.stderr(
      `replayed ${replayed.length} failed deliver${replayed.length === 1 ? 'y' : 'ies'} to ${request.destination}`,
    );
    return 0;
  } catch (error) {
    // A --before that no listing gave out (or one of another --state) is bad usage.
    if (error instanceof ValidationError && error.issues?.some((issue) => issue.path === 'before')) {
      io.stderr(
        'chatbridge: --before is not a cursor this list gave out (use the one it printed, with the same --state and --destination)',
      );
      return 2;
    }
    io.stderr(`chatbridge: ${(error as Error).message}`);
    return 1;
  }
}
